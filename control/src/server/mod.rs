//! `outpost server`: the HTTP API, the agent API (mTLS), the lease reaper and the embedded
//! provisioner daemons, in one process. Tests call [`run`] with listeners bound to port 0.

mod account;
mod agent;
mod agent_cache;
mod agent_listen;
mod apps_domain;
mod audit;
mod auth;
mod authz;
mod cluster;
mod cluster_local;
mod dial;
mod error;
mod events;
mod handoff;
mod health;
mod keys;
mod listen;
mod liveness;
mod logs;
mod lookup;
mod metrics;
pub mod oidc;
mod openapi;
mod peer;
mod poll_sweep;
mod provisioner;
mod provisioner_keys;
mod proxy;
mod ratelimit;
mod relay;
mod router;
pub use router::{FOLLOWS_PER_USER, TEMPLATE_BODY_LIMIT};
mod retention;
mod schedule;
pub mod scheduler;
mod splice;
mod teams;
mod templates;
mod tokens;
mod users;
mod web;
mod web_audit;
mod web_schedule;
mod web_settings;
mod web_templates;
mod web_workspace;
mod workspace_stats;
mod workspaces;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::ca::CaSet;
use crate::store::Store;

pub use auth::{random_secret, sha256_hex};
pub use error::{ApiError, ApiResult};
pub use retention::Retention;

/// Everything `outpost server` needs, parsed from flags, `OUTPOST_*` env and the config file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// `postgres://...`; SQLite in the data dir when absent.
    pub postgres_url: Option<String>,
    /// SQLite: other servers on this host serve the same data dir (`--shared-data-dir`).
    pub shared_data_dir: bool,
    /// The URL users and provisioners reach the API at (derived from the listener when absent).
    pub access_url: Option<String>,
    /// The URL agents reach the agent API at (derived from the listener when absent).
    pub agent_url: Option<String>,
    /// Extra names/IPs for the agent API certificate.
    pub agent_hosts: Vec<String>,
    pub provisioner_daemons: usize,
    /// Key for external provisioner daemons; a random one is used when absent.
    pub provisioner_key: Option<String>,
    pub workspaces_dir: Option<PathBuf>,
    /// Who `local` workspaces run as.
    pub isolation: crate::provisioner::local::Isolation,
    /// Without isolation, serve workspaces of more than one user anyway.
    pub allow_unisolated_users: bool,
    /// Apps on hosts of their own under this domain (`apps.example.com`, from
    /// `--apps-domain '*.apps.example.com'`).
    pub apps_domain: Option<String>,
    /// Where the key sealing secrets at rest comes from.
    pub secrets: crate::config::SecretsArgs,
    /// Honour `authenticated`/`public` share levels for path-based apps on the dashboard's own
    /// origin (where an app's scripts can act as its visitors).
    pub allow_path_app_sharing: bool,
    /// The agent API URL containers use (see `--docker-agent-url`).
    pub docker_agent_url: Option<String>,
    pub agent_binary: Option<PathBuf>,
    pub heartbeat_secs: u64,
    /// A web terminal session with no client attached ends after this long.
    pub terminal_idle_timeout_secs: u64,
    /// Hand a browser's plain TCP terminal connection to a local agent (`handoff.rs`).
    pub terminal_handoff: bool,
    /// An SSH connection to an agent that has not logged in after this long is closed.
    pub ssh_login_grace_secs: u64,
    /// The most connections one address may hold to the API at once.
    pub max_connections_per_source: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// How long and how many audit events and agent log lines are kept.
    pub retention: Retention,
    pub job_lease_secs: u64,
    pub bootstrap_token_ttl_secs: u64,
    pub agent_cert_lifetime_secs: u64,
    pub stop_grace_secs: u64,
    /// Tests only: a file holding a clock offset in milliseconds, re-read continuously.
    pub test_clock_file: Option<PathBuf>,
    /// Quiet hours of users who set none (checked `CRON_TZ=ZONE MIN HOUR * * *`).
    pub default_quiet_hours: String,
    /// Users may set their own quiet hours.
    pub allow_custom_quiet_hours: bool,
    /// How often the scheduler ticks.
    pub schedule_interval: Duration,
    /// On shutdown, how long open relays may finish.
    pub shutdown_grace: Duration,
    /// Where `/metrics` is served (nowhere when None).
    pub metrics_listen: Option<String>,
    /// Sign-in through an OpenID Connect provider (`--oidc-*`).
    pub oidc: Option<oidc::OidcConfig>,
    /// Owners may connect to other users' workspaces (audited).
    pub allow_owner_workspace_access: bool,
    /// Where other replicas reach this one's agent listener.
    pub replica_url: Option<String>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            data_dir,
            postgres_url: None,
            access_url: None,
            agent_url: None,
            agent_hosts: Vec::new(),
            provisioner_daemons: 2,
            provisioner_key: None,
            workspaces_dir: None,
            isolation: crate::provisioner::local::Isolation::detect(),
            allow_unisolated_users: false,
            apps_domain: None,
            secrets: crate::config::SecretsArgs {
                key: None,
                key_file: None,
            },
            allow_path_app_sharing: false,
            docker_agent_url: None,
            agent_binary: None,
            heartbeat_secs: 15,
            terminal_idle_timeout_secs: 300,
            terminal_handoff: true,
            ssh_login_grace_secs: 30,
            max_connections_per_source: 256,
            header_read_timeout_secs: 10,
            retention: Retention::default(),
            job_lease_secs: 15,
            bootstrap_token_ttl_secs: 15 * 60,
            agent_cert_lifetime_secs: 24 * 3600,
            stop_grace_secs: 10,
            test_clock_file: None,
            default_quiet_hours: crate::schedule::DEFAULT_QUIET_HOURS.into(),
            allow_custom_quiet_hours: true,
            schedule_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            metrics_listen: None,
            oidc: None,
            allow_owner_workspace_access: false,
            replica_url: None,
            shared_data_dir: false,
        }
    }
}

pub struct Listeners {
    pub api: TcpListener,
    pub agent: TcpListener,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub ca: CaSet,
    /// Seals and opens secrets at rest (the users' git keys).
    pub secrets: crate::secrets::Keyring,
    pub audit: audit::Audit,
    pub liveness: liveness::Liveness,
    pub tunnels: relay::Tunnels,
    /// SSH dial-backs awaited (shared with the agent listener).
    pub dials: Arc<dial::Dials>,
    /// This replica's socket for handing terminals to agents on this machine.
    pub handoff: handoff::Handoff,
    pub config: ServerConfig,
    pub agent_url: String,
    /// Where users (and the CLI inside workspaces) reach the API.
    pub access_url: String,
    pub provisioner_key_hash: String,
    /// A pending provisioner job was queued.
    pub jobs_changed: Notify,
    /// Bumped whenever a job's logs or status change; log followers wait on it.
    pub progress: watch::Sender<u64>,
    /// Per-agent wake-ups for held long polls.
    agent_wakers: Mutex<HashMap<String, Arc<Notify>>>,
    pub shutdown: watch::Receiver<bool>,
    /// When this process started (ms): agents that connected before it must reopen their tunnel.
    pub started_at: i64,
    /// Sign-in lockouts and the password-hashing cap.
    pub login_guard: ratelimit::LoginGuard,
    /// Per-agent caps on held polls, heartbeats and credential mints.
    pub agent_limits: ratelimit::AgentLimits,
    /// Prometheus metrics (`/metrics` on `--metrics-listen`).
    pub metrics: metrics::Metrics,
    /// SSH and port relays open now (a shutdown waits for them, up to its grace).
    pub open_relays: std::sync::atomic::AtomicUsize,
    /// Agent rows recent polls and heartbeats read from the store.
    pub agent_cache: agent_cache::AgentCache,
    /// Which agents may have commands waiting, read once a second for all of them.
    pub poll_sweep: poll_sweep::PollSweep,
    /// Log streams each user may follow at once.
    pub follows: listen::Slots<String>,
    /// Per topic (`job:ID`, `agent-logs:WORKSPACE_ID`), a counter bumped when it changes: log
    /// followers wait on their own topic, not on every change anywhere.
    topics: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per user, a flag that ends their live connections (relays, terminals, app WebSockets)
    /// when set: a suspension.
    user_cuts: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// The OpenID Connect provider's client, when one is configured.
    pub oidc: Option<oidc::Oidc>,
    /// This replica among the others on one PostgreSQL: its id, the bus, whether it leads.
    pub cluster: cluster::Cluster,
    /// Connections to other replicas, for streams to agents whose tunnels they hold.
    pub peers: peer::Peers,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Resolves once the shutdown flag is set (the watch `Ref` is dropped, so the future is `Send`).
pub async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// What `run` writes to `DATA_DIR/server.json` so scripts and tests can find the listeners.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub api_url: String,
    pub agent_url: String,
    /// Where the agent listener is bound (the agent URL may name a balancer in front).
    #[serde(default)]
    pub agent_listen: String,
    pub pid: u32,
}

fn url_for(addr: SocketAddr, scheme: &str) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Where `local` workspaces live: `--workspaces-dir`, else beside the data dir (never inside
/// it: workspace users must not get near control's files): `DATA_DIR-workspaces`, or, with a
/// Unix user per workspace (root), `/var/lib/outpost-workspaces/NAME-HASH` (the data dir's
/// name and a hash of its path), which every workspace user may pass through wherever the data
/// dir is. A data dir from before that holds `workspaces/` keeps using it, so no home goes
/// missing.
fn workspaces_dir(config: &ServerConfig) -> PathBuf {
    if let Some(d) = &config.workspaces_dir {
        return d.clone();
    }
    let legacy = config.data_dir.join("workspaces");
    if legacy.is_dir() {
        tracing::warn!(dir = %legacy.display(), "workspaces are inside the data dir; stop the server, move them and pass --workspaces-dir");
        return legacy;
    }
    let name = config
        .data_dir
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "outpost".into());
    if config.isolation == crate::provisioner::local::Isolation::User {
        let hash = sha256_hex(&config.data_dir.display().to_string());
        return PathBuf::from("/var/lib/outpost-workspaces").join(format!("{name}-{}", &hash[..8]));
    }
    let mut dir = config.data_dir.as_os_str().to_os_string();
    dir.push("-workspaces");
    PathBuf::from(dir)
}

fn announce_isolation(config: &ServerConfig, root: &std::path::Path) {
    use crate::provisioner::local::Isolation;
    match config.isolation {
        Isolation::User => {
            tracing::info!(workspaces = %root.display(), "local workspaces run as a Unix user each")
        }
        Isolation::None => {
            let me = nix::unistd::User::from_uid(nix::unistd::Uid::current())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| "this user".into());
            eprintln!(
                "\nNote: local workspaces run as {me}, the server's own user, with no isolation between them (run the server as root for a Unix user per workspace).{}\n",
                if config.allow_unisolated_users {
                    " --allow-unisolated-users: several users' workspaces are served anyway."
                } else {
                    " Only one user may have local workspaces (--allow-unisolated-users lifts that)."
                }
            );
            tracing::warn!(user = %me, workspaces = %root.display(), "isolation: none");
        }
    }
}

/// Runs the control service until `shutdown` resolves.
pub async fn run(
    listeners: Listeners,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // Only control reads its data dir: the database, the CA key, the setup token.
    std::fs::set_permissions(
        &config.data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("making {} private", config.data_dir.display()))?;
    // SQLite serves one server, or replicas that all say --shared-data-dir: any other mix stops
    // here. Replicas start one at a time (migrations, the CA, the built-in templates).
    let shared_data_dir = config.postgres_url.is_none() && config.shared_data_dir;
    let (_data_dir_lock, start_turn) = match config.postgres_url {
        Some(_) => (None, None),
        None => (
            Some(cluster_local::lock_data_dir(
                &config.data_dir,
                shared_data_dir,
            )?),
            match shared_data_dir {
                true => Some(cluster_local::start_turn(&config.data_dir).await?),
                false => None,
            },
        ),
    };
    let db_url = match &config.postgres_url {
        Some(u) => u.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("outpost.db").display()
        ),
    };
    let store = Store::connect(&db_url)
        .await
        .with_context(|| match &config.postgres_url {
            Some(_) => "connecting to PostgreSQL (check --postgres-url)".to_string(),
            None => format!("opening SQLite in {}", config.data_dir.display()),
        })?;
    // Replicas on this data dir write in turns (store/write_turn.rs).
    let store = match shared_data_dir {
        true => store
            .take_write_turns(&config.data_dir)
            .with_context(|| format!("opening the write turns in {}", config.data_dir.display()))?,
        false => store,
    };
    for f in ["outpost.db", "outpost.db-wal", "outpost.db-shm"] {
        let p = config.data_dir.join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
    }
    let secrets = config.secrets.keyring(&config.data_dir)?;
    if store.dialect() == crate::store::Dialect::Postgres {
        // Replicas share one CA (agents and replicas present its certificates to any of them).
        CaSet::load(&config.data_dir, &secrets)?;
        crate::ca_share::sync(&store, &config.data_dir)
            .await
            .context("sharing the CA with the other replicas")?;
    }
    let ca = CaSet::load(&config.data_dir, &secrets).context(
        "loading the CA (every replica on one database needs the same secrets key: --secrets-key-file)",
    )?;
    let resealed = crate::secrets::reseal_store(&store, &secrets).await?;
    if resealed > 0 {
        tracing::info!(
            count = resealed,
            "sealed git keys stored before sealing (or under an older key)"
        );
    }
    if let Some(f) = config.test_clock_file.clone() {
        tracing::warn!(file = %f.display(), "the clock follows a test offset file");
        read_clock_offset(&f);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                read_clock_offset(&f);
            }
        });
    }

    let api_addr = listeners.api.local_addr()?;
    let agent_addr = listeners.agent.local_addr()?;
    let access_url = config
        .access_url
        .clone()
        .unwrap_or_else(|| url_for(api_addr, "http"));
    let agent_url = config
        .agent_url
        .clone()
        .unwrap_or_else(|| url_for(agent_addr, "https"));

    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        crate::provisioner::docker::HOST_GATEWAY_NAME.to_string(),
    ];
    if let Some(h) = config.docker_agent_url.as_deref().and_then(host_of) {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts.extend(config.agent_hosts.iter().cloned());
    if let Some(h) = host_of(&agent_url) {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let mut tls = ca.agent_server_config(&hosts)?;
    // Session tickets under keys from the secrets key: a reconnecting agent resumes, on this
    // replica after a restart or on another one (`tls_tickets.rs`). Two tickets per handshake
    // (rustls' default; a client uses each once): an agent's heartbeat and poll, failing
    // together, dial two connections at once, and both resume.
    tls.ticketer = Arc::new(secrets.ticket_keys());
    tls.send_tls13_tickets = 2;
    let tls = Arc::new(tls);

    let provisioner_key = config.provisioner_key.clone().unwrap_or_else(random_secret);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let store_dialect = store.dialect();
    let metrics = metrics::Metrics::new(store.query_times().clone());
    let state = AppState(Arc::new(Inner {
        audit: audit::Audit::start(store.clone()),
        liveness: liveness::Liveness::default(),
        tunnels: relay::Tunnels::default(),
        dials: Arc::default(),
        handoff: Default::default(),
        store,
        ca,
        secrets,
        config: config.clone(),
        agent_url: agent_url.clone(),
        access_url: access_url.clone(),
        provisioner_key_hash: sha256_hex(&provisioner_key),
        jobs_changed: Notify::new(),
        progress: watch::channel(0).0,
        agent_wakers: Mutex::new(HashMap::new()),
        shutdown: shutdown_rx.clone(),
        started_at: crate::store::now_ms(),
        login_guard: ratelimit::LoginGuard::new().map_err(|e| anyhow::anyhow!(e.message))?,
        user_cuts: Mutex::new(HashMap::new()),
        agent_limits: ratelimit::AgentLimits::default(),
        agent_cache: Default::default(),
        poll_sweep: Default::default(),
        open_relays: Default::default(),
        metrics,
        follows: listen::Slots::new(FOLLOWS_PER_USER),
        topics: Mutex::new(HashMap::new()),
        oidc: config.oidc.clone().map(oidc::Oidc::new).transpose()?,
        cluster: cluster::Cluster::new(
            store_dialect,
            shared_data_dir.then(|| config.data_dir.clone()),
        ),
        peers: peer::Peers::default(),
    }));
    if state.oidc.is_some() {
        // Discovery now, to say early when the provider is unreachable or misconfigured; a
        // sign-in retries it (the server starts either way).
        let s = state.clone();
        tokio::spawn(async move {
            if let Some(o) = s.oidc.as_ref() {
                match o.provider_ready().await {
                    Ok(()) => tracing::info!(issuer = %o.config.issuer, "OIDC provider discovered"),
                    Err(e) => tracing::error!(
                        "OIDC discovery failed: {e}; sign-in through the provider retries it"
                    ),
                }
            }
        });
    }

    templates::ensure_builtin_templates(&state).await?;
    users::announce_setup(&state, &access_url).await?;

    let info = ServerInfo {
        api_url: access_url.clone(),
        agent_url: agent_url.clone(),
        agent_listen: agent_addr.to_string(),
        pid: std::process::id(),
    };
    std::fs::write(
        config.data_dir.join("server.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    tracing::info!(api = %access_url, agent_api = %agent_url, "outpost server listening");

    let api = router::api_router(state.clone());
    metrics::start(&state, shutdown_rx.clone()).await?;
    let api_task = tokio::spawn(listen::serve_http(
        listeners.api,
        api,
        listen::SourceSlots::new(config.max_connections_per_source),
        Duration::from_secs(config.header_read_timeout_secs),
        shutdown_rx.clone(),
    ));
    let agent_task = tokio::spawn(agent_listen::serve_tls(
        listeners.agent,
        tls,
        agent::router(state.clone()),
        state.clone(),
        (
            // Agents of one host (local workspaces) share an address and reconnect together
            // after a restart: handshakes in progress get four times the API's quota.
            listen::WaitingSlots::new(config.max_connections_per_source.saturating_mul(4)),
            Duration::from_secs(config.header_read_timeout_secs),
        ),
        shutdown_rx.clone(),
    ));
    let replica_url = config
        .replica_url
        .clone()
        .unwrap_or_else(|| url_for(agent_addr, "https"));
    // With replicas an agent's URL may lead to any of them: dial-backs name this one first.
    let shared_store = state.cluster.shared();
    state
        .dials
        .set_own_address(shared_store.then_some(replica_url.as_str()));
    let replica = cluster::start(
        &state,
        crate::store::ReplicaRow {
            id: state.cluster.id.clone(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            api_url: access_url.clone(),
            agent_url: agent_url.clone(),
            replica_url,
            version: env!("CARGO_PKG_VERSION").to_string(),
            leader: false,
            started_at: state.started_at,
            heartbeat_at: state.started_at,
        },
    )?;
    drop(start_turn);
    let reaper = tokio::spawn(provisioner::reap_expired_leases(state.clone()));
    let pruner = tokio::spawn(retention::run(state.clone()));
    let scheduler = tokio::spawn(scheduler::run(state.clone()));
    let flush_every = Duration::from_millis((config.heartbeat_secs * 1000 / 2).clamp(200, 2000));
    let flusher = tokio::spawn(liveness::Liveness::run(state.clone(), flush_every));
    let sweeper = tokio::spawn(poll_sweep::run(state.clone()));

    let mut daemons = Vec::new();
    let local = Arc::new(crate::provisioner::local::LocalProvisioner {
        root: workspaces_dir(&config),
        agent_binary: config.agent_binary.clone(),
        stop_grace: Duration::from_secs(config.stop_grace_secs),
        isolation: config.isolation,
        setup_lock: Default::default(),
    });
    local.prepare_root()?;
    announce_isolation(&config, &local.root);
    if config.terminal_handoff {
        if let Err(e) = handoff::start(&state, &local.root, api_addr.port(), shutdown_rx.clone()) {
            tracing::warn!("web terminals are not handed to local agents: {e:#}");
        }
    }
    let docker = Arc::new(crate::provisioner::docker::DockerProvisioner::new(
        config.agent_binary.clone(),
        config.docker_agent_url.clone(),
        Duration::from_secs(config.stop_grace_secs),
    ));
    for i in 0..config.provisioner_daemons {
        let daemon = crate::provisioner::Daemon {
            client: outpost_api::Client::new(&access_url, Some(provisioner_key.clone())),
            id: format!("embedded-{}-{i}", std::process::id()),
            local: local.clone(),
            docker: docker.clone(),
        };
        daemons.push(tokio::spawn(daemon.run(shutdown_rx.clone())));
    }

    shutdown.await;
    let open = state.open_relays.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        open_relays = open,
        grace = ?config_grace(&state),
        "shutting down: no new connections or builds; open relays may finish within the grace"
    );
    let _ = shutdown_tx.send(true);
    state.jobs_changed.notify_waiters();
    for d in daemons {
        let _ = tokio::time::timeout(Duration::from_secs(30), d).await;
    }
    for t in replica {
        t.abort();
    }
    cluster::forget(&state).await;
    reaper.abort();
    pruner.abort();
    scheduler.abort();
    flusher.abort();
    sweeper.abort();
    state.liveness.flush(&state.store).await;
    scheduler::flush_activity(&state).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    // Relays (SSH, port forwards) in flight get their grace; the agent listener (their
    // tunnels) stays until they end.
    let grace = tokio::time::Instant::now() + config_grace(&state);
    while state.open_relays.load(std::sync::atomic::Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = state.open_relays.load(std::sync::atomic::Ordering::Relaxed);
    if left > 0 {
        tracing::info!(
            open_relays = left,
            "grace over: closing the relays still open"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
    Ok(())
}

fn config_grace(state: &AppState) -> Duration {
    state.config.shutdown_grace
}

fn read_clock_offset(f: &std::path::Path) {
    if let Some(v) = std::fs::read_to_string(f)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        crate::store::set_clock_offset_ms(v);
    }
}

/// The host of `scheme://host:port/...` (without brackets for IPv6).
pub(crate) fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
            .to_string()
    };
    (!host.is_empty()).then_some(host)
}
