//! The agent's mTLS identity: kept on disk (0600) for a restarted agent process, made by
//! exchanging the one-time bootstrap token and a CSR (the key never leaves the agent).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use outpost_api::*;
use rand::Rng;

use outpost_common::clock::{backoff, now_ms, BACKOFF_BASE, BACKOFF_CAP};
use outpost_common::fs::write_private;
use outpost_common::tls;

/// The agent's mTLS identity and the CA pins it trusts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub workspace_id: String,
    pub agent_id: String,
    pub certificate_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub ca_pins: Vec<String>,
}

/// The HTTP client of the agent API. `local`: the source address of its connections (a
/// multi-homed host's, or one of the load generator's many loopback addresses); `None`: the
/// system's choice.
pub(crate) fn http(
    config: rustls::ClientConfig,
    timeout: Duration,
    local: Option<std::net::IpAddr>,
) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .local_address(local)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(2)
        .build()
        .context("building the HTTP client")
}

impl Credentials {
    fn path(dir: &Path) -> PathBuf {
        dir.join("credentials.json")
    }

    /// Stored credentials, if any (expired ones too: the caller decides).
    pub fn load(dir: &Path) -> Option<Credentials> {
        let bytes = std::fs::read(Self::path(dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the credentials atomically (temp file + rename), 0600 in a 0700 dir.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        write_private(&Self::path(dir), &serde_json::to_vec(self)?)
    }

    pub fn expired(&self) -> bool {
        self.expires_at <= now_ms()
    }

    /// When to renew: at about 2/3 of the certificate's life, jittered by ±5% of it.
    pub fn renew_at(&self) -> i64 {
        let life = (self.expires_at - self.issued_at).max(1);
        let jitter = rand::thread_rng().gen_range(-(life / 20)..=(life / 20));
        self.issued_at + life * 2 / 3 + jitter
    }
}

pub(crate) fn new_csr() -> anyhow::Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((key, csr))
}

/// Exchanges the one-time token for a certificate, once (no retries). The key is made here and
/// never leaves the agent.
pub async fn bootstrap_once(bundle: &BootstrapBundle) -> Result<Credentials, ClientError> {
    bootstrap_once_from(bundle, None).await
}

/// [`bootstrap_once`] from the source address `local`.
pub async fn bootstrap_once_from(
    bundle: &BootstrapBundle,
    local: Option<std::net::IpAddr>,
) -> Result<Credentials, ClientError> {
    let key_csr = new_csr().map_err(|e| ClientError::Decode {
        url: bundle.agent_url.clone(),
        message: e.to_string(),
    })?;
    bootstrap_with(bundle, &key_csr, local).await
}

/// One exchange with a given key. Retrying with the same key is safe: control lets the key that
/// spent a token spend it again for two minutes, in case its answer was lost.
async fn bootstrap_with(
    bundle: &BootstrapBundle,
    (key, csr): &(rcgen::KeyPair, String),
    local: Option<std::net::IpAddr>,
) -> Result<Credentials, ClientError> {
    let cfg = tls::client_config(&bundle.ca_pins, None).map_err(|e| ClientError::Decode {
        url: bundle.agent_url.clone(),
        message: e.to_string(),
    })?;
    let http = http(cfg, Duration::from_secs(30), local).map_err(|e| ClientError::Decode {
        url: bundle.agent_url.clone(),
        message: e.to_string(),
    })?;
    let client = Client::with_http(http, &bundle.agent_url, None);
    let req = BootstrapRequest {
        token: bundle.token.clone(),
        csr_pem: csr.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    let r: BootstrapResponse = client.post(agent_routes::BOOTSTRAP, &req).await?;
    Ok(Credentials {
        workspace_id: r.workspace_id,
        agent_id: r.agent_id,
        certificate_pem: r.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: r.ca_pem,
        issued_at: now_ms(),
        expires_at: r.expires_at,
        ca_pins: bundle.ca_pins.clone(),
    })
}

/// [`bootstrap_once`] with full-jitter backoff on transport and server errors. A refusal (4xx)
/// is final: the token is used, expired or wrong.
pub async fn bootstrap(bundle: &BootstrapBundle) -> anyhow::Result<Credentials> {
    // One key for every attempt: a retry after a lost answer is the same request again.
    let key_csr = new_csr()?;
    let mut attempt = 0;
    loop {
        match bootstrap_with(bundle, &key_csr, None).await {
            Ok(c) => return Ok(c),
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
