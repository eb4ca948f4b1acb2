//! The agent's main loop: credentials (stored, or bootstrapped), then the long poll, heartbeats,
//! renewal, scripts, SSH and the relay tunnel, all sharing one [`crate::state::Agent`].
//! (`credentials` and `session` are public so the load benchmark drives thousands of simulated
//! agents with exactly this code.)

use outpost_common::LockExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use outpost_api::*;

use crate::credentials::{bootstrap, Credentials};
use crate::session::ControlSession;
use crate::state::Agent;
use crate::stats::StatsCollector;
use crate::user::login_shell;
use outpost_common::clock::{backoff, now_ms, BACKOFF_BASE, BACKOFF_CAP};
use outpost_common::tls;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub bundle: BootstrapBundle,
    /// The file the bundle came from: deleted once its token is spent.
    pub bootstrap_file: Option<PathBuf>,
    /// Where the key, certificate and identity are kept (0600), for a restarted agent process.
    pub state_dir: PathBuf,
    /// The workspace home (for disk statistics).
    pub home: PathBuf,
    /// Whose listening sockets are the workspace's ports (set by the provisioner).
    pub port_owners: crate::procs::PortOwners,
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

/// Where the agent keeps its bundle without the token, for its own restarts.
pub fn kept_bundle_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("bundle.json")
}

/// The token is spent: keep the rest of the bundle in the state dir (0600) and delete the file
/// it came from, so nothing in the workspace can read the token afterwards.
fn consume_bundle(config: &AgentConfig) {
    let mut kept = config.bundle.clone();
    kept.token = String::new();
    if let Err(e) = serde_json::to_vec(&kept)
        .map_err(anyhow::Error::from)
        .and_then(|b| outpost_common::fs::write_private(&kept_bundle_path(&config.state_dir), &b))
    {
        tracing::warn!(error = %e, "could not keep the bootstrap bundle");
        return;
    }
    if let Some(f) = &config.bootstrap_file {
        if let Err(e) = std::fs::remove_file(f) {
            tracing::warn!(error = %e, file = %f.display(), "could not delete the spent bootstrap bundle");
        }
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
            consume_bundle(&config);
            tracing::info!(agent = %c.agent_id, workspace = %c.workspace_id, expires_at = c.expires_at, "bootstrapped");
            c
        }
    };
    let session = ControlSession::new(&config.bundle.agent_url, creds)?;
    let agent = Arc::new(Agent::default());
    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::channel::<Exit>(4);
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(true);
    let ssh = tokio::spawn(ssh_loop(
        session.clone(),
        config.clone(),
        gate_rx,
        agent.clone(),
    ));
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
        scripts.clone(),
        agent.clone(),
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
        agent,
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

/// Starts the SSH server when the workspace's template asks for a direct listen address, reports
/// its host key, and keeps the accepted keys in step with the owner's keys at control.
/// Stop: shutting_down, the stop scripts (within their timeouts), then off (or why not).
async fn shutdown(
    session: &ControlSession,
    config: &AgentConfig,
    scripts: &crate::scripts::Scripts,
) {
    scripts.lifecycle.set(AgentLifecycle::ShuttingDown);
    crate::scripts::report_shutdown(session, AgentLifecycle::ShuttingDown).await;
    // The agent is revoked as the stop is queued: it runs the scripts it learned at start.
    let cached = scripts.cached.locked().clone();
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
    // The last lines reach control, then say how the stop ended.
    scripts.sink.flush(Duration::from_secs(2)).await;
    crate::scripts::report_shutdown(session, end).await;
}

/// The manifest, retried with backoff until control answers.
async fn fetch_manifest(session: &ControlSession) -> AgentManifest {
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

/// Where the `outpost` CLI inside the workspace gets a short-lived credential (under run/).
fn cli_sock(config: &AgentConfig) -> std::path::PathBuf {
    config.state_dir.join("cli.sock")
}

/// Serves the CLI socket: each connection gets `{url, token, expires_at}` (a fresh workspace
/// credential from control, reused until 5 minutes before it expires).
async fn serve_cli_credentials(session: ControlSession, config: AgentConfig) {
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
                match session.user_token().await {
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

async fn start_git_agent(session: &ControlSession, config: &AgentConfig) {
    let key = match session.git_ssh_key().await {
        Ok(k) => k.public_key,
        Err(e) => {
            tracing::warn!(error = %e, "no git SSH key from control; git over SSH will use the user's own keys");
            return;
        }
    };
    let s = session.clone();
    let signer: crate::ssh::GitSigner = std::sync::Arc::new(move |data: Vec<u8>| {
        let s = s.clone();
        Box::pin(async move {
            s.git_sign(&data)
                .await
                .map_err(|e| tracing::warn!(error = %e, "git key signature"))
                .ok()
        })
    });
    if let Err(e) = crate::ssh::serve_git_agent(git_agent_sock(config), key, signer).await {
        tracing::warn!(error = %e, "git ssh-agent");
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
    // Set by the provisioner on the agent itself: where the template's files were delivered.
    if let Ok(dir) = std::env::var(outpost_api::TEMPLATE_DIR_ENV) {
        env.push((outpost_api::TEMPLATE_DIR_ENV.into(), dir));
    }
    env
}

/// Runs the start scripts: lifecycle starting -> ready | start_error | start_timeout.
async fn start_scripts(
    session: ControlSession,
    config: AgentConfig,
    scripts: std::sync::Arc<crate::scripts::Scripts>,
) {
    let manifest = fetch_manifest(&session).await;
    start_git_agent(&session, &config).await;
    tokio::spawn(serve_cli_credentials(session.clone(), config.clone()));
    {
        let mut c = scripts.cached.locked();
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
    // The start's lines reach control before it is told the start is over: `outpost logs`
    // after `ready` shows them all.
    scripts.sink.flush(Duration::from_secs(2)).await;
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

async fn ssh_loop(
    session: ControlSession,
    config: AgentConfig,
    gate: tokio::sync::watch::Receiver<bool>,
    agent: Arc<Agent>,
) {
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
        authorized: std::sync::RwLock::new(Default::default()),
        relay_authorized: std::sync::RwLock::new(Default::default()),
        agent: agent.clone(),
        home: config.home.clone(),
        shell: login_shell(),
        user: std::env::var("USER").unwrap_or_else(|_| manifest.owner.clone()),
        env,
        login_gate: gate,
        login_grace: Duration::from_secs(manifest.ssh_login_grace_secs.max(1)),
    });
    shared.set_authorized(&manifest.authorized_keys, &manifest.relay_keys);
    let ssh_config = std::sync::Arc::new(crate::ssh::config(key));
    if let Some(l) = listener {
        tokio::spawn(crate::ssh::serve(l, ssh_config.clone(), shared.clone()));
        tracing::info!(?addr, "SSH server listening");
    }
    let _health: Vec<AbortOnDrop> = crate::apps::start_health_checks(&manifest.apps, &agent)
        .into_iter()
        .map(AbortOnDrop)
        .collect();
    let pty = crate::terminal::PtyHub::new(
        shared.clone(),
        Duration::from_secs(manifest.terminal_idle_timeout_secs.max(1)),
    );
    let ctx = std::sync::Arc::new(crate::tunnel::SshCtx {
        config: ssh_config,
        shared: shared.clone(),
        pty,
        port_owners: config.port_owners,
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
            reported = session.report_ssh(&report).await.is_ok();
        }
        // On schedule, or at once when control says the owner's keys changed.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = agent.keys_changed.notified() => {}
        }
        if let Ok(m) = session.manifest().await {
            shared.set_authorized(&m.authorized_keys, &m.relay_keys);
        }
    }
}

async fn poll_loop(
    session: ControlSession,
    config: AgentConfig,
    exit: tokio::sync::mpsc::Sender<Exit>,
    scripts: std::sync::Arc<crate::scripts::Scripts>,
    agent: Arc<Agent>,
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
                    agent.keys_changed.notify_one();
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

/// When the next heartbeat goes, `failures` beats in a row having failed. On schedule: the
/// interval give or take a tenth, at random, counted from when the last one was *sent* (not
/// from its answer; after a failure, from the failure, so a slow one does not shorten the wait). Counting from the answer, every agent whose heartbeat waited out a stall
/// of control's would beat again together one interval later, and again after that (at 50,000
/// agents a one-second stall became a burst of thousands every 15 s); the jitter spreads
/// agents that started together. While control cannot be reached the beats spread out (up to
/// 4 intervals, jittered).
pub fn next_beat(every: Duration, failures: u32) -> Duration {
    use rand::Rng;
    match failures {
        0 => every.mul_f64(rand::thread_rng().gen_range(0.9..=1.1)),
        n => every.max(backoff(n - 1, every, every * 4)),
    }
}

/// What [`next_beat`] counts from: the last beat's send when it went through, else now.
pub fn beat_from(sent: tokio::time::Instant, failures: u32) -> tokio::time::Instant {
    match failures {
        0 => sent,
        _ => tokio::time::Instant::now(),
    }
}

async fn heartbeat_loop(
    session: ControlSession,
    config: AgentConfig,
    scripts: Arc<crate::scripts::Scripts>,
    agent: Arc<Agent>,
) {
    let lifecycle = &scripts.lifecycle;
    let every = Duration::from_secs(config.bundle.heartbeat_secs.max(1));
    let mut stats = StatsCollector::new(config.home.clone());
    let mut failures = 0u32;
    loop {
        let pending = lifecycle.pending();
        let mut st = stats.collect(agent.sessions());
        (st.rx_bytes, st.tx_bytes) = agent.bytes();
        st.scripts = scripts.sink.script_counts();
        st.home_dir = config.home.display().to_string();
        let owners = config.port_owners;
        st.ports = tokio::task::spawn_blocking(move || crate::apps::listening_ports(owners))
            .await
            .unwrap_or_default();
        st.apps = agent.app_statuses();
        let req = HeartbeatRequest {
            lifecycle: pending,
            stats: st,
        };
        let sent = tokio::time::Instant::now();
        match session.heartbeat(&req).await {
            Ok(resp) => {
                failures = 0;
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
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                failures = failures.saturating_add(1);
            }
        }
        // Next beat on schedule, or at once when the lifecycle changes. While control cannot
        // be reached the beats spread out (up to 4 intervals, jittered): every agent of a
        // restarted control dialing it on the same schedule would be a storm of handshakes.
        tokio::select! {
            _ = tokio::time::sleep_until(beat_from(sent, failures) + next_beat(every, failures)) => {}
            _ = lifecycle.changed.notified() => {}
        }
    }
}

async fn renew_loop(
    session: ControlSession,
    state_dir: PathBuf,
    exit: tokio::sync::mpsc::Sender<Exit>,
) {
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
    fn a_beat_counts_from_its_send_unless_it_failed() {
        let sent = tokio::time::Instant::now() - Duration::from_secs(10);
        assert_eq!(beat_from(sent, 0), sent);
        assert!(beat_from(sent, 1) >= sent + Duration::from_secs(10));
    }

    #[test]
    fn heartbeats_are_jittered_and_spread_out_while_they_fail() {
        let every = Duration::from_secs(15);
        let waits: Vec<Duration> = (0..400).map(|_| next_beat(every, 0)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= every.mul_f64(0.9) && *w <= every.mul_f64(1.1)));
        assert!(
            waits.iter().any(|w| *w < every.mul_f64(0.97))
                && waits.iter().any(|w| *w > every.mul_f64(1.03)),
            "on schedule, the beats are jittered both ways: {waits:?}"
        );
        let waits: Vec<Duration> = (0..400).map(|_| next_beat(every, 5)).collect();
        assert!(waits.iter().all(|w| *w >= every && *w <= every * 4));
        assert!(
            waits.iter().any(|w| *w > every * 2),
            "spread past two intervals"
        );
        assert!(waits.iter().any(|w| *w < every * 3), "not all at the cap");
    }

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
