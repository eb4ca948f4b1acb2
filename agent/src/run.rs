//! The agent's main loop: credentials (bootstrap or stored), long poll, heartbeats.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use outpost_api::*;
use rand::Rng;

use crate::tls;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub bundle: BootstrapBundle,
    /// Where the key, certificate and identity are kept (0600), for a restarted agent process.
    pub state_dir: PathBuf,
}

/// The agent's mTLS identity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub workspace_id: String,
    pub agent_id: String,
    pub certificate_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub expires_at: i64,
}

/// How the agent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Control told it to stop.
    Stopped,
    /// Control refuses its credentials (revoked or expired).
    Rejected,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Full-jitter exponential backoff: a random wait in [0, min(cap, base * 2^attempt)].
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let max = exp.min(cap);
    let ms = rand::thread_rng().gen_range(0..=max.as_millis() as u64);
    Duration::from_millis(ms.max(50))
}

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

fn http(config: rustls::ClientConfig, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Credentials {
    fn path(dir: &Path) -> PathBuf {
        dir.join("credentials.json")
    }

    pub fn load(dir: &Path) -> Option<Credentials> {
        let bytes = std::fs::read(Self::path(dir)).ok()?;
        let c: Credentials = serde_json::from_slice(&bytes).ok()?;
        (c.expires_at > now_ms() + 60_000).then_some(c)
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        write_private(&Self::path(dir), &serde_json::to_vec(self)?)
    }
}

/// Exchanges the one-time token for a certificate. The key is made here and never leaves.
pub async fn bootstrap(bundle: &BootstrapBundle) -> anyhow::Result<Credentials> {
    let key = rcgen::KeyPair::generate().context("generating the agent key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let cfg = tls::client_config(&bundle.ca_pins, None)?;
    let client = Client::with_http(http(cfg, Duration::from_secs(30))?, &bundle.agent_url, None);
    let req = BootstrapRequest {
        token: bundle.token.clone(),
        csr_pem: csr,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    let mut attempt = 0;
    loop {
        match client
            .post::<_, BootstrapResponse>("/agent/v1/bootstrap", &req)
            .await
        {
            Ok(r) => {
                return Ok(Credentials {
                    workspace_id: r.workspace_id,
                    agent_id: r.agent_id,
                    certificate_pem: r.certificate_pem,
                    key_pem: key.serialize_pem(),
                    ca_pem: r.ca_pem,
                    expires_at: r.expires_at,
                })
            }
            Err(e) if e.status().is_some_and(|s| s < 500) => {
                bail!(
                    "control refused the bootstrap token ({e}); a new start build issues a new one"
                )
            }
            Err(e) => {
                let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_CAP);
                tracing::warn!(error = %e, retry_in = ?wait, "bootstrap failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

fn read_stats(started: Instant, lifecycle: Option<AgentLifecycle>) -> HeartbeatRequest {
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let mut total = 0u64;
    let mut avail = 0u64;
    if let Ok(m) = std::fs::read_to_string("/proc/meminfo") {
        for line in m.lines() {
            let kb = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024
            };
            if line.starts_with("MemTotal:") {
                total = kb(line);
            } else if line.starts_with("MemAvailable:") {
                avail = kb(line);
            }
        }
    }
    HeartbeatRequest {
        lifecycle,
        uptime_secs: started.elapsed().as_secs(),
        load1,
        mem_used_bytes: total.saturating_sub(avail),
        mem_total_bytes: total,
    }
}

/// Runs the agent until control stops it or refuses its credentials.
pub async fn run(config: AgentConfig) -> anyhow::Result<Exit> {
    tls::install_provider();
    let started = Instant::now();
    let creds = match Credentials::load(&config.state_dir) {
        Some(c) => {
            tracing::info!(agent = %c.agent_id, "reusing stored credentials");
            c
        }
        None => {
            let c = bootstrap(&config.bundle).await?;
            c.save(&config.state_dir)?;
            tracing::info!(agent = %c.agent_id, workspace = %c.workspace_id, "bootstrapped");
            c
        }
    };
    let chain = format!("{}{}", creds.certificate_pem, creds.ca_pem);
    let mtls = tls::client_config(&config.bundle.ca_pins, Some((&chain, &creds.key_pem)))?;
    let client = Client::with_http(
        http(mtls, Duration::from_secs(40))?,
        &config.bundle.agent_url,
        None,
    );

    let hb_client = client.clone();
    let hb_every = Duration::from_secs(config.bundle.heartbeat_secs.max(1));
    let heartbeat = tokio::spawn(async move {
        let mut first = true;
        loop {
            let lifecycle = first.then_some(AgentLifecycle::Ready);
            let req = read_stats(started, lifecycle);
            match hb_client
                .post::<_, serde_json::Value>("/agent/v1/heartbeat", &req)
                .await
            {
                Ok(_) => first = false,
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            tokio::time::sleep(hb_every).await;
        }
    });

    let mut attempt = 0u32;
    let exit = loop {
        match client.get::<PollResponse>("/agent/v1/poll").await {
            Ok(resp) => {
                if attempt > 0 {
                    tracing::info!("reconnected to control");
                }
                attempt = 0;
                if resp.commands.contains(&AgentCommand::Stop) {
                    tracing::info!("control asked the agent to stop");
                    let req = read_stats(started, Some(AgentLifecycle::Off));
                    let _ = client
                        .post::<_, serde_json::Value>("/agent/v1/heartbeat", &req)
                        .await;
                    break Exit::Stopped;
                }
            }
            Err(e) if e.status() == Some(401) => {
                tracing::error!(
                    "control rejected the agent's credentials (revoked or expired); exiting"
                );
                break Exit::Rejected;
            }
            Err(e) => {
                let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_CAP);
                tracing::warn!(error = %e, retry_in = ?wait, "cannot reach control; retrying");
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    };
    heartbeat.abort();
    Ok(exit)
}
