//! The agent's main loop: credentials (bootstrap or stored), long poll, heartbeats, renewal.
//!
//! The pieces ([`bootstrap`], [`Session`]) are public so the load benchmark drives thousands of
//! simulated agents with exactly this code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use outpost_api::*;
use rand::Rng;

use crate::stats::StatsCollector;
use outpost_common::clock::{backoff, now_ms, BACKOFF_BASE, BACKOFF_CAP};
use outpost_common::fs::write_private;
use outpost_common::tls;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub bundle: BootstrapBundle,
    /// Where the key, certificate and identity are kept (0600), for a restarted agent process.
    pub state_dir: PathBuf,
    /// The workspace home (for disk statistics).
    pub home: PathBuf,
}

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

/// How the agent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Control told it to stop.
    Stopped,
    /// Control refuses its credentials (revoked).
    Rejected,
    /// Its certificate expired before it could renew it.
    Expired,
}

fn http(config: rustls::ClientConfig, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
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

fn new_csr() -> anyhow::Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((key, csr))
}

/// Exchanges the one-time token for a certificate, once (no retries). The key is made here and
/// never leaves the agent.
pub async fn bootstrap_once(bundle: &BootstrapBundle) -> Result<Credentials, ClientError> {
    let key_csr = new_csr().map_err(|e| ClientError::Decode {
        url: bundle.agent_url.clone(),
        message: e.to_string(),
    })?;
    bootstrap_with(bundle, &key_csr).await
}

/// One exchange with a given key. Retrying with the same key is safe: control lets the key that
/// spent a token spend it again for two minutes, in case its answer was lost.
async fn bootstrap_with(
    bundle: &BootstrapBundle,
    (key, csr): &(rcgen::KeyPair, String),
) -> Result<Credentials, ClientError> {
    let cfg = tls::client_config(&bundle.ca_pins, None).map_err(|e| ClientError::Decode {
        url: bundle.agent_url.clone(),
        message: e.to_string(),
    })?;
    let http = http(cfg, Duration::from_secs(30)).map_err(|e| ClientError::Decode {
        url: bundle.agent_url.clone(),
        message: e.to_string(),
    })?;
    let client = Client::with_http(http, &bundle.agent_url, None);
    let req = BootstrapRequest {
        token: bundle.token.clone(),
        csr_pem: csr.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    let r: BootstrapResponse = client.post("/agent/v1/bootstrap", &req).await?;
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
        match bootstrap_with(bundle, &key_csr).await {
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

/// An authenticated (mTLS) connection to the agent API. Cheap to clone; [`Session::swap`]
/// replaces the identity or pins for every clone.
#[derive(Clone)]
pub struct Session {
    url: String,
    inner: Arc<Mutex<(Credentials, Client)>>,
}

impl Session {
    pub fn new(agent_url: &str, creds: Credentials) -> anyhow::Result<Session> {
        let client = Self::client_for(agent_url, &creds)?;
        Ok(Session {
            url: agent_url.to_string(),
            inner: Arc::new(Mutex::new((creds, client))),
        })
    }

    fn client_for(url: &str, creds: &Credentials) -> anyhow::Result<Client> {
        let chain = format!("{}{}", creds.certificate_pem, creds.ca_pem);
        let cfg = tls::client_config(&creds.ca_pins, Some((&chain, &creds.key_pem)))?;
        Ok(Client::with_http(
            http(cfg, Duration::from_secs(40))?,
            url,
            None,
        ))
    }

    fn client(&self) -> Client {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    pub fn credentials(&self) -> Credentials {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Uses new credentials from now on.
    pub fn swap(&self, creds: Credentials) -> anyhow::Result<()> {
        let client = Self::client_for(&self.url, &creds)?;
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = (creds, client);
        Ok(())
    }

    /// Long poll: returns commands, or none after control's hold (~25 s).
    pub async fn poll(&self) -> Result<PollResponse, ClientError> {
        self.client().get("/agent/v1/poll").await
    }

    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.client().post("/agent/v1/heartbeat", req).await
    }

    pub async fn client_post_logs(
        &self,
        req: &AgentLogsRequest,
    ) -> Result<AgentLogsResponse, ClientError> {
        self.client().post("/agent/v1/logs", req).await
    }

    pub async fn manifest(&self) -> Result<AgentManifest, ClientError> {
        self.client().get("/agent/v1/manifest").await
    }

    /// A new key and certificate for the same identity. Returns the new credentials (not yet
    /// swapped in).
    pub async fn renew(&self) -> anyhow::Result<Credentials> {
        let (key, csr) = new_csr()?;
        let r: RenewResponse = self
            .client()
            .post("/agent/v1/renew", &RenewRequest { csr_pem: csr })
            .await?;
        let mut c = self.credentials();
        c.certificate_pem = r.certificate_pem;
        c.ca_pem = r.ca_pem;
        c.key_pem = key.serialize_pem();
        c.issued_at = now_ms();
        c.expires_at = r.expires_at;
        Ok(c)
    }
}

/// Runs the agent until control stops it, refuses its credentials, or they expire.
pub async fn run(config: AgentConfig) -> anyhow::Result<Exit> {
    tls::install_provider();
    let creds = match Credentials::load(&config.state_dir) {
        Some(c) if !c.expired() => {
            tracing::info!(agent = %c.agent_id, "reusing stored credentials");
            c
        }
        Some(c) => {
            tracing::error!(agent = %c.agent_id, expired_at = c.expires_at, "the agent's certificate expired and cannot be renewed; restart the workspace to issue a new bootstrap token");
            return Ok(Exit::Expired);
        }
        None => {
            let c = bootstrap(&config.bundle).await?;
            c.save(&config.state_dir)?;
            tracing::info!(agent = %c.agent_id, workspace = %c.workspace_id, expires_at = c.expires_at, "bootstrapped");
            c
        }
    };
    let session = Session::new(&config.bundle.agent_url, creds)?;
    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::channel::<Exit>(4);
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(true);
    let ssh = tokio::spawn(ssh_loop(session.clone(), config.clone(), gate_rx));
    let scripts = std::sync::Arc::new(crate::scripts::Scripts {
        login_gate: gate_tx,
        lifecycle: std::sync::Arc::new(crate::scripts::Lifecycle::default()),
        sink: crate::scripts::start_shipper(session.clone()),
        cached: std::sync::Mutex::new(None),
    });
    let start = tokio::spawn(start_scripts(
        session.clone(),
        config.clone(),
        scripts.clone(),
    ));

    let hb = tokio::spawn(heartbeat_loop(
        session.clone(),
        config.clone(),
        scripts.lifecycle.clone(),
    ));
    let renew = tokio::spawn(renew_loop(
        session.clone(),
        config.state_dir.clone(),
        exit_tx.clone(),
    ));
    let poll = tokio::spawn(poll_loop(
        session.clone(),
        config.clone(),
        exit_tx,
        scripts.clone(),
    ));
    let exit = exit_rx.recv().await.unwrap_or(Exit::Stopped);
    start.abort();
    hb.abort();
    renew.abort();
    poll.abort();
    ssh.abort();
    Ok(exit)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The login shell of the user running the agent.
fn login_shell() -> String {
    #[allow(unsafe_code)]
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid) && !f[6].is_empty() {
                return f[6].to_string();
            }
        }
    }
    std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())
}

/// Starts the SSH server when the workspace's template asks for a direct listen address, reports
/// its host key, and keeps the accepted keys in step with the owner's keys at control.
/// Stop: shutting_down, the stop scripts (within their timeouts), then off (or why not).
async fn shutdown(session: &Session, config: &AgentConfig, scripts: &crate::scripts::Scripts) {
    scripts.lifecycle.set(AgentLifecycle::ShuttingDown);
    crate::scripts::report_shutdown(session, AgentLifecycle::ShuttingDown).await;
    // The agent is revoked as the stop is queued: it runs the scripts it learned at start.
    let cached = scripts.cached.lock().map(|c| c.clone()).unwrap_or_default();
    let end = match cached {
        Some((list, env)) if list.iter().any(|s| s.run_on_stop) => {
            match crate::scripts::run_all(
                &list,
                false,
                &config.home,
                &config.state_dir,
                &env,
                &scripts.sink,
            )
            .await
            {
                crate::scripts::Outcome::Ok => AgentLifecycle::Off,
                crate::scripts::Outcome::Failed(_) => AgentLifecycle::ShutdownError,
                crate::scripts::Outcome::TimedOut(_) => AgentLifecycle::ShutdownTimeout,
            }
        }
        _ => AgentLifecycle::Off,
    };
    let mut stats = StatsCollector::new(config.home.clone());
    let req = HeartbeatRequest {
        lifecycle: Some(end),
        stats: stats.collect(SessionCounts::default()),
    };
    let _ = session.heartbeat(&req).await;
    // Give the log shipper a moment to send the last lines, then say how the stop ended.
    tokio::time::sleep(Duration::from_millis(300)).await;
    crate::scripts::report_shutdown(session, end).await;
}

/// The manifest, retried with backoff until control answers.
async fn fetch_manifest(session: &Session) -> AgentManifest {
    let mut attempt = 0u32;
    loop {
        match session.manifest().await {
            Ok(m) => return m,
            Err(e) => {
                tracing::debug!(error = %e, "fetching the manifest");
                tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// PATH for sessions and scripts: the agent's own directory first (the `outpost` CLI ships next
/// to `outpost-agent`), then the agent's PATH.
pub fn session_path() -> String {
    let base = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    match std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.display().to_string()))
    {
        Some(dir) => format!("{dir}:{base}"),
        None => base,
    }
}

/// Where the `outpost` CLI inside the workspace gets a short-lived credential (under run/).
fn cli_sock(config: &AgentConfig) -> std::path::PathBuf {
    config.state_dir.join("cli.sock")
}

/// Serves the CLI socket: each connection gets `{url, token, expires_at}` (a fresh workspace
/// credential from control, reused until 5 minutes before it expires).
async fn serve_cli_credentials(session: Session, config: AgentConfig) {
    let path = cli_sock(&config);
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve CLI credentials");
            return;
        }
    };
    let _ = std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let cache: std::sync::Arc<tokio::sync::Mutex<Option<WorkspaceCredential>>> = Default::default();
    while let Ok((mut sock, _)) = listener.accept().await {
        let (session, cache) = (session.clone(), cache.clone());
        tokio::spawn(async move {
            let mut c = cache.lock().await;
            let fresh = c
                .as_ref()
                .is_some_and(|k| k.expires_at - now_ms() > 5 * 60_000);
            if !fresh {
                match session
                    .client()
                    .post::<_, WorkspaceCredential>("/agent/v1/user-token", &serde_json::json!({}))
                    .await
                {
                    Ok(k) => *c = Some(k),
                    Err(e) => tracing::warn!(error = %e, "workspace credential"),
                }
            }
            if let Some(k) = c.as_ref() {
                if let Ok(mut line) = serde_json::to_vec(k) {
                    line.push(b'\n');
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut sock, &line).await;
                }
            }
        });
    }
}

/// The in-memory ssh-agent holding the owner's git key (under run/, never in the home).
fn git_agent_sock(config: &AgentConfig) -> std::path::PathBuf {
    config.state_dir.join("git-agent.sock")
}

async fn start_git_agent(session: &Session, config: &AgentConfig) {
    let key: Result<GitSshKey, _> = session.client().get("/agent/v1/gitsshkey").await;
    let Some(pem) = key.ok().and_then(|k| k.private_key) else {
        tracing::warn!("no git SSH key from control; git over SSH will use the user's own keys");
        return;
    };
    match russh::keys::PrivateKey::from_openssh(&pem) {
        Ok(k) => {
            if let Err(e) = crate::ssh::serve_git_agent(git_agent_sock(config), k).await {
                tracing::warn!(error = %e, "git ssh-agent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "the git SSH key from control does not parse"),
    }
}

fn script_env(manifest: &AgentManifest, config: &AgentConfig) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = manifest.env.clone().into_iter().collect();
    let sock = git_agent_sock(config);
    env.push((
        "GIT_SSH_COMMAND".into(),
        format!("ssh -o IdentityAgent={}", sock.display()),
    ));
    env.push(("OUTPOST_GIT_AGENT_SOCK".into(), sock.display().to_string()));
    env.push((
        "OUTPOST_AGENT_SOCKET".into(),
        cli_sock(config).display().to_string(),
    ));
    env.push(("OUTPOST_WORKSPACE".into(), manifest.workspace_name.clone()));
    env.push(("OUTPOST_WORKSPACE_ID".into(), manifest.workspace_id.clone()));
    env.push(("OUTPOST_WORKSPACE_OWNER".into(), manifest.owner.clone()));
    env.push(("OUTPOST_AGENT_NAME".into(), "main".into()));
    env
}

/// Runs the start scripts: lifecycle starting -> ready | start_error | start_timeout.
async fn start_scripts(
    session: Session,
    config: AgentConfig,
    scripts: std::sync::Arc<crate::scripts::Scripts>,
) {
    let manifest = fetch_manifest(&session).await;
    start_git_agent(&session, &config).await;
    tokio::spawn(serve_cli_credentials(session.clone(), config.clone()));
    if let Ok(mut c) = scripts.cached.lock() {
        *c = Some((manifest.scripts.clone(), script_env(&manifest, &config)));
    }
    let lifecycle = &scripts.lifecycle;
    lifecycle.set(AgentLifecycle::Starting);
    if manifest
        .scripts
        .iter()
        .any(|s| s.run_on_start && s.blocks_login)
    {
        let _ = scripts.login_gate.send(false);
    }
    let outcome = crate::scripts::run_all(
        &manifest.scripts,
        true,
        &config.home,
        &config.state_dir,
        &script_env(&manifest, &config),
        &scripts.sink,
    )
    .await;
    let _ = scripts.login_gate.send(true);
    if let Some(uri) = manifest.dotfiles_uri.clone() {
        let home = config.home.clone();
        let lines = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            let res = crate::dotfiles::apply(&uri, &home, &mut |l| lines.push(l));
            if let Err(e) = res {
                lines.push(format!("[outpost] dotfiles failed: {e:#}"));
            }
            lines
        })
        .await
        .unwrap_or_default();
        for l in lines {
            scripts.sink.line("dotfiles", "info", l).await;
        }
    }
    run_personalize(&config, &manifest, &scripts.sink).await;
    // Scheduled scripts start once the start scripts have finished.
    for s in manifest.scripts.iter().filter(|s| s.cron.is_some()) {
        let (s, config, sink, env) = (
            s.clone(),
            config.clone(),
            scripts.sink.clone(),
            script_env(&manifest, &config),
        );
        tokio::spawn(async move { cron_loop(s, config, sink, env).await });
    }
    lifecycle.set(match outcome {
        crate::scripts::Outcome::Ok => AgentLifecycle::Ready,
        crate::scripts::Outcome::Failed(name) => {
            tracing::warn!(script = %name, "a start script failed");
            AgentLifecycle::StartError
        }
        crate::scripts::Outcome::TimedOut(name) => {
            tracing::warn!(script = %name, "a start script timed out");
            AgentLifecycle::StartTimeout
        }
    });
}

async fn cron_loop(
    s: ScriptSpec,
    config: AgentConfig,
    sink: crate::scripts::LogSink,
    env: Vec<(String, String)>,
) {
    let Some(schedule) = s
        .cron
        .as_deref()
        .and_then(|c| outpost_common::cron::Schedule::parse(c).ok())
    else {
        return;
    };
    let once = ScriptSpec {
        run_on_start: true,
        ..s.clone()
    };
    loop {
        let now = (now_ms() / 1000) as u64;
        let Some(next) = schedule.next_after(now) else {
            return;
        };
        let wait_ms = (next * 1000).saturating_sub(now_ms() as u64);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let _ = crate::scripts::run_all(
            std::slice::from_ref(&once),
            true,
            &config.home,
            &config.state_dir,
            &env,
            &sink,
        )
        .await;
    }
}

/// `~/personalize`, if present and executable, after the start scripts on every start. Its
/// failure is logged, not fatal.
async fn run_personalize(
    config: &AgentConfig,
    manifest: &AgentManifest,
    sink: &crate::scripts::LogSink,
) {
    use std::os::unix::fs::PermissionsExt;
    let path = config.home.join("personalize");
    let executable = std::fs::metadata(&path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !executable {
        return;
    }
    let spec = ScriptSpec {
        name: "personalize".into(),
        script: format!("'{}'", path.display().to_string().replace('\'', "'\\''")),
        run_on_start: true,
        run_on_stop: false,
        timeout_secs: 0,
        blocks_login: false,
        cron: None,
    };
    if !matches!(
        crate::scripts::run_all(
            &[spec],
            true,
            &config.home,
            &config.state_dir,
            &script_env(manifest, config),
            sink
        )
        .await,
        crate::scripts::Outcome::Ok
    ) {
        sink.line(
            "personalize",
            "warn",
            "[outpost] ~/personalize failed; the workspace is up anyway".into(),
        )
        .await;
    }
}

async fn ssh_loop(session: Session, config: AgentConfig, gate: tokio::sync::watch::Receiver<bool>) {
    let manifest = fetch_manifest(&session).await;
    let key = match crate::ssh::host_key(&config.home.join(".outpost")) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot make or read the SSH host key; SSH is off");
            return;
        }
    };
    let host_key = key.public_key().to_openssh().unwrap_or_default();
    // The direct listener is optional (`[agent] ssh_listen`); the relay is always there.
    let listener = match &manifest.ssh_listen {
        Some(listen) => match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, %listen, "cannot listen for SSH directly");
                None
            }
        },
        None => None,
    };
    let addr = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    let env = script_env(&manifest, &config);
    let shared = std::sync::Arc::new(crate::ssh::SshShared {
        authorized: std::sync::RwLock::new(Vec::new()),
        home: config.home.clone(),
        shell: login_shell(),
        user: std::env::var("USER").unwrap_or_else(|_| manifest.owner.clone()),
        env,
        login_gate: gate,
    });
    shared.set_authorized(&manifest.authorized_keys);
    let ssh_config = std::sync::Arc::new(crate::ssh::config(key));
    if let Some(l) = listener {
        tokio::spawn(crate::ssh::serve(l, ssh_config.clone(), shared.clone()));
        tracing::info!(?addr, "SSH server listening");
    }
    let _health: Vec<AbortOnDrop> = crate::apps::start_health_checks(&manifest.apps)
        .into_iter()
        .map(AbortOnDrop)
        .collect();
    let pty = crate::pty::PtyHub::new(
        shared.clone(),
        Duration::from_secs(manifest.terminal_idle_timeout_secs.max(1)),
    );
    let ctx = std::sync::Arc::new(crate::tunnel::SshCtx {
        config: ssh_config,
        shared: shared.clone(),
        pty,
    });
    let _tunnel = AbortOnDrop(tokio::spawn(crate::tunnel::tunnel_loop(
        session.clone(),
        config.bundle.agent_url.clone(),
        ctx,
    )));
    let report = SshReport {
        host_key,
        listen: addr,
    };
    let mut reported = false;
    let every = Duration::from_secs(config.bundle.heartbeat_secs.clamp(1, 15));
    loop {
        if !reported {
            reported = session
                .client()
                .post::<_, serde_json::Value>("/agent/v1/ssh", &report)
                .await
                .is_ok();
        }
        // On schedule, or at once when control says the owner's keys changed.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = KEYS_CHANGED.notified() => {}
        }
        if let Ok(m) = session.manifest().await {
            shared.set_authorized(&m.authorized_keys);
        }
    }
}

/// Control said the owner's SSH keys changed.
static KEYS_CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

async fn poll_loop(
    session: Session,
    config: AgentConfig,
    exit: tokio::sync::mpsc::Sender<Exit>,
    scripts: std::sync::Arc<crate::scripts::Scripts>,
) {
    let mut attempt = 0u32;
    loop {
        match session.poll().await {
            Ok(resp) => {
                if attempt > 0 {
                    tracing::info!("reconnected to control");
                }
                attempt = 0;
                if resp.commands.contains(&AgentCommand::RefreshKeys) {
                    KEYS_CHANGED.notify_one();
                }
                if resp.commands.contains(&AgentCommand::Stop) {
                    tracing::info!("control asked the agent to stop");
                    shutdown(&session, &config, &scripts).await;
                    let _ = exit.send(Exit::Stopped).await;
                    return;
                }
            }
            Err(e) if e.status() == Some(401) => {
                if session.credentials().expired() {
                    tracing::error!("the agent's certificate expired before it could be renewed; restart the workspace to issue a new bootstrap token");
                    let _ = exit.send(Exit::Expired).await;
                } else {
                    tracing::error!("control revoked the agent's credentials; exiting");
                    let _ = exit.send(Exit::Rejected).await;
                }
                return;
            }
            Err(e) => {
                if session.credentials().expired() {
                    tracing::error!(error = %e, "the agent's certificate expired and control refuses it; restart the workspace to issue a new bootstrap token");
                    let _ = exit.send(Exit::Expired).await;
                    return;
                }
                let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_CAP);
                tracing::warn!(error = %e, retry_in = ?wait, "cannot reach control; retrying");
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn heartbeat_loop(
    session: Session,
    config: AgentConfig,
    lifecycle: std::sync::Arc<crate::scripts::Lifecycle>,
) {
    let every = Duration::from_secs(config.bundle.heartbeat_secs.max(1));
    let mut stats = StatsCollector::new(config.home.clone());
    loop {
        let pending = lifecycle.pending();
        let mut st = stats.collect(crate::ssh::COUNTERS.sessions());
        st.rx_bytes = crate::ssh::COUNTERS
            .rx
            .load(std::sync::atomic::Ordering::Relaxed);
        st.tx_bytes = crate::ssh::COUNTERS
            .tx
            .load(std::sync::atomic::Ordering::Relaxed);
        let ws = session.credentials().workspace_id;
        st.ports = tokio::task::spawn_blocking(move || crate::apps::listening_ports(&ws))
            .await
            .unwrap_or_default();
        st.apps = crate::apps::statuses();
        let req = HeartbeatRequest {
            lifecycle: pending,
            stats: st,
        };
        match session.heartbeat(&req).await {
            Ok(resp) => {
                if let Some(l) = pending {
                    lifecycle.reported(l);
                }
                let mut creds = session.credentials();
                if !resp.ca_pins.is_empty() && resp.ca_pins != creds.ca_pins {
                    tracing::info!(pins = ?resp.ca_pins, "control's CA set changed; trusting the new pins");
                    creds.ca_pins = resp.ca_pins;
                    if let Err(e) = creds
                        .save(&config.state_dir)
                        .and_then(|_| session.swap(creds))
                    {
                        tracing::warn!(error = %e, "could not store the new pins");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
        // Next beat on schedule, or at once when the lifecycle changes.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = lifecycle.changed.notified() => {}
        }
    }
}

async fn renew_loop(session: Session, state_dir: PathBuf, exit: tokio::sync::mpsc::Sender<Exit>) {
    let mut attempt = 0u32;
    loop {
        let creds = session.credentials();
        let wait_ms = (creds.renew_at() - now_ms()).max(0) as u64;
        if attempt == 0 {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        if session.credentials().expired() {
            tracing::error!("the agent's certificate expired before it could be renewed; restart the workspace to issue a new bootstrap token");
            let _ = exit.send(Exit::Expired).await;
            return;
        }
        match session.renew().await {
            Ok(new) => {
                if let Err(e) = new.save(&state_dir) {
                    tracing::warn!(error = %e, "could not store the renewed certificate");
                }
                if let Err(e) = session.swap(new.clone()) {
                    tracing::warn!(error = %e, "could not use the renewed certificate");
                } else {
                    tracing::info!(expires_at = new.expires_at, "renewed the agent certificate");
                }
                attempt = 0;
            }
            Err(e) => {
                // Back off, but never past the certificate's expiry.
                let left = (session.credentials().expires_at - now_ms()).max(1000) as u64;
                let wait = backoff(
                    attempt,
                    BACKOFF_BASE,
                    BACKOFF_CAP.min(Duration::from_millis(left / 4)),
                );
                tracing::warn!(error = %e, retry_in = ?wait, "certificate renewal failed; retrying");
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_capped() {
        for attempt in 0..20 {
            let max = BACKOFF_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(BACKOFF_CAP);
            let samples: Vec<Duration> = (0..200)
                .map(|_| backoff(attempt, BACKOFF_BASE, BACKOFF_CAP))
                .collect();
            assert!(samples
                .iter()
                .all(|d| *d <= max.max(Duration::from_millis(50))));
            // Spread over the whole range (no stampede at the cap).
            if attempt >= 6 {
                assert!(
                    samples.iter().any(|d| *d < max / 2) && samples.iter().any(|d| *d > max / 2)
                );
            }
        }
    }

    #[test]
    fn renewal_at_two_thirds() {
        let c = Credentials {
            workspace_id: String::new(),
            agent_id: String::new(),
            certificate_pem: String::new(),
            key_pem: String::new(),
            ca_pem: String::new(),
            issued_at: 0,
            expires_at: 300_000,
            ca_pins: vec![],
        };
        for _ in 0..100 {
            let at = c.renew_at();
            assert!((185_000..=215_000).contains(&at), "{at}");
        }
    }
}
