//! Command-line, environment (`OUTPOST_*`) and config-file settings, parsed in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "outpost",
    version = env!("OUTPOST_VERSION"),
    about = "Outpost: developer workspaces",
    propagate_version = true
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The Outpost server URL (default: the one saved by `outpost login`).
    #[arg(long, global = true, env = "OUTPOST_URL")]
    pub url: Option<String>,
    /// An API token (default: the one saved by `outpost login`).
    #[arg(long, global = true, env = "OUTPOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the CLI keeps its session (default: ~/.config/outpost).
    #[arg(long, global = true, env = "OUTPOST_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the server's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the control service (API, agent API, scheduler and embedded provisioners).
    Server(ServerArgs),
    /// Run a provisioner daemon that takes jobs from a server.
    #[command(subcommand)]
    Provisioner(ProvisionerCmd),
    /// Sign in to a server and save the session.
    Login(LoginArgs),
    /// Show who you are signed in as.
    Whoami,
    /// Print a shell completion script (`source <(outpost completion bash)`).
    Completion { shell: clap_complete::Shell },
    /// Manage users (admins only).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Push, list and show templates.
    #[command(subcommand)]
    Templates(TemplatesCmd),
    /// Create a workspace and wait until it is running.
    Create(CreateArgs),
    /// List your workspaces (`--all`: everyone's, for owners and auditors).
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        all: bool,
    },
    /// Show one workspace: status, health, build, agent, resources.
    Show { name: String },
    /// Start a stopped workspace.
    Start(ActionArgs),
    /// Stop a running workspace (its home is kept).
    Stop(ActionArgs),
    /// Stop and start a workspace.
    Restart(ActionArgs),
    /// Move a workspace to its template's active version.
    Update(ActionArgs),
    /// Delete a workspace and everything in it, including its home.
    Delete(ActionArgs),
    /// Cancel a workspace's pending or running build.
    Cancel { name: String },
    /// Autostart and autostop of a workspace: show, start, stop, extend.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Wake a dormant workspace so it can start again.
    Activate { name: String },
    /// Groups of users: budgets and who may use restricted templates (user admins).
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Organizations: each template, workspace and group belongs to one.
    #[command(subcommand)]
    Orgs(OrgsCmd),
    /// Your quota, and (owners) the per-user workspace limit.
    #[command(subcommand)]
    Quotas(QuotasCmd),
    /// The control replicas serving this database, and which one leads (owners, auditors).
    Replicas,
    /// External provisioner daemons and their keys (owners, template admins).
    #[command(subcommand)]
    Provisioners(crate::cli::provisioners::ProvisionersCmd),
    /// Show the build log of a workspace's latest build.
    Logs(LogsArgs),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Manage your SSH public keys (workspaces accept exactly these).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// SSH into a workspace (through control's relay), starting it if it is stopped.
    Ssh(SshArgs),
    /// Write a block into ~/.ssh/config so `ssh WS.outpost` (and VS Code, JetBrains, scp, rsync,
    /// git) reach your workspaces, with their real host keys in a known_hosts file.
    ConfigSsh(ConfigSshArgs),
    /// Forward local TCP ports to ports inside a workspace, through the relay.
    PortForward(PortForwardArgs),
    /// Print your git SSH public key (control holds the private half; workspaces use it for git).
    Publickey,
    /// Read the audit log (admins only).
    Audit(AuditArgs),
    /// Rotate the certificate authority agents trust (run on the server's data dir, then
    /// restart the server).
    #[command(subcommand)]
    Ca(CaCmd),
    /// The key that seals secrets at rest (git keys, CA keys): `outpost secrets rotate`.
    #[command(subcommand)]
    Secrets(SecretsCmd),
}

/// Where the key sealing secrets at rest comes from.
#[derive(Args, Debug, Clone)]
pub struct SecretsArgs {
    /// The key-encryption key sealing git keys and CA keys at rest, as base64 of 32 bytes
    /// (from a secret manager; several, comma-separated, during a rotation). Wins over the file.
    #[arg(
        long = "secrets-key",
        env = "OUTPOST_SECRETS_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub key: Option<String>,
    /// The file holding that key (made on first start, 0600). Keep it out of database backups.
    /// Default: DATA_DIR/secrets.key.
    #[arg(long = "secrets-key-file", env = "OUTPOST_SECRETS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl SecretsArgs {
    pub fn keyring(&self, data_dir: &std::path::Path) -> anyhow::Result<crate::secrets::Keyring> {
        let file = self
            .key_file
            .clone()
            .unwrap_or_else(|| crate::secrets::Keyring::default_file(data_dir));
        crate::secrets::Keyring::load(self.key.as_deref(), &file)
    }
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Make a new secrets key and re-seal every secret with it (git keys in the store, CA keys
    /// in the data dir). Stop the server first; start it again afterwards. With
    /// OUTPOST_SECRETS_KEY, pass the new key in OUTPOST_NEW_SECRETS_KEY and set
    /// OUTPOST_SECRETS_KEY to it afterwards.
    Rotate {
        #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
        data_dir: PathBuf,
        #[arg(long, env = "OUTPOST_POSTGRES_URL")]
        postgres_url: Option<String>,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
}

#[derive(Args, Debug)]
pub struct SshArgs {
    /// The workspace (`dev` or `dev.outpost`).
    pub workspace: String,
    /// Bridge standard input/output to the workspace's SSH server (for ProxyCommand).
    #[arg(long)]
    pub stdio: bool,
    /// With --stdio, under OpenSSH's `ProxyUseFdpass yes`: open the relay, hand ssh the
    /// connection itself and exit, so no process copies the bytes (http:// servers only).
    #[arg(long, requires = "stdio")]
    pub fdpass: bool,
    /// Do not start a stopped workspace or wait for it.
    #[arg(long)]
    pub no_start: bool,
    /// Do not wait for startup scripts that block login.
    #[arg(long)]
    pub no_wait: bool,
    /// A command to run instead of a shell.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConfigSshArgs {
    /// The SSH config file to edit.
    #[arg(long)]
    pub ssh_config: Option<PathBuf>,
    /// Host suffix: workspaces are reached as NAME.SUFFIX.
    #[arg(long, default_value = "outpost")]
    pub suffix: String,
    /// Remove Outpost's block instead.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Args, Debug)]
pub struct PortForwardArgs {
    pub workspace: String,
    /// LOCAL:REMOTE (repeatable).
    #[arg(long = "tcp", required = true)]
    pub tcp: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add a public key (a .pub file, or - for standard input).
    Add {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    /// Remove a key by id or fingerprint.
    Remove {
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// An action (user.login, template.push, token.create, key.add, workspace.build,
    /// agent.bootstrap, ...) or a prefix ending in `.` (user.).
    #[arg(long)]
    pub action: Option<String>,
    /// Who acted: a username, or `agent`, `control`, `scheduler`.
    #[arg(long)]
    pub actor: Option<String>,
    /// What was acted on (user:bob, template:base, workspace:alice/dev, token:ID,
    /// key:FINGERPRINT), or a prefix ending in `:` or `/` (user:, workspace:alice/).
    #[arg(long)]
    pub target: Option<String>,
    /// ok, rejected, refused (not allowed), issued, revoked, ...
    #[arg(long)]
    pub outcome: Option<String>,
    /// One of your workspaces by name, or any workspace by id.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only events from then on: a duration ago (1h, 7d), a time (2025-01-31T12:00:00Z) or ms
    /// since 1970.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before then: a duration ago or a time, like --since.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many events, newest first (default: 100; with --format ndjson, all).
    #[arg(long)]
    pub limit: Option<u64>,
    /// table (default; JSON with --json), json, or ndjson: one event per line, streamed.
    #[arg(long, value_enum)]
    pub format: Option<AuditFormat>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    Json,
    Ndjson,
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Stage a new CA: agents learn its pin through their heartbeats; new bundles carry both.
    Rotate {
        #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
        data_dir: PathBuf,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Sign with the staged CA from now on; the old one stays trusted until `retire`.
    Promote {
        #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
        data_dir: PathBuf,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Stop trusting the previous CA (after agents have renewed onto the new one).
    Retire {
        #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
        data_dir: PathBuf,
    },
}

/// A flag given twice takes its last value (wrappers and scripts can override defaults).
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub action: Option<crate::backup::ServerAction>,
    /// A TOML file of these settings, one key per flag; flags and OUTPOST_* variables win.
    #[arg(long, env = "OUTPOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the settings in effect (as a config file, with where each came from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Where Outpost keeps its SQLite database, CA and workspaces.
    #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
    pub data_dir: PathBuf,
    /// Use PostgreSQL instead of the embedded SQLite.
    #[arg(long, env = "OUTPOST_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Serve the data dir's SQLite database as one of several replicas on this host (one
    /// per `outpost server` process, each with listen addresses of its own): one process may
    /// hold only as many connections as the open-file limit allows. Every server on the data
    /// dir must be started with it. With --postgres-url, servers are always replicas.
    #[arg(long, env = "OUTPOST_SHARED_DATA_DIR")]
    pub shared_data_dir: bool,
    /// API and dashboard listen address.
    #[arg(long, env = "OUTPOST_LISTEN", default_value = "127.0.0.1:7080")]
    pub listen: String,
    /// Serve Prometheus metrics at /metrics on this address (off unless set).
    #[arg(long, env = "OUTPOST_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Agent API (mTLS) listen address.
    #[arg(long, env = "OUTPOST_AGENT_LISTEN", default_value = "127.0.0.1:7443")]
    pub agent_listen: String,
    /// The URL users reach this server at (default: from --listen).
    #[arg(long, env = "OUTPOST_ACCESS_URL")]
    pub access_url: Option<String>,
    /// The URL agents reach the agent API at (default: from --agent-listen).
    #[arg(long, env = "OUTPOST_AGENT_URL")]
    pub agent_url: Option<String>,
    /// Provisioner daemons to run inside the server.
    #[arg(long, env = "OUTPOST_PROVISIONER_DAEMONS", default_value_t = 2)]
    pub provisioner_daemons: usize,
    /// Key that external provisioner daemons present (random when absent).
    #[arg(long, env = "OUTPOST_PROVISIONER_KEY", hide_env_values = true)]
    pub provisioner_key: Option<String>,
    /// The outpost-agent binary the provisioners start (default: next to `outpost`).
    #[arg(long, env = "OUTPOST_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,
    /// Where `local` workspaces live (default: DATA_DIR-workspaces, beside the data dir).
    #[arg(long, env = "OUTPOST_WORKSPACES_DIR")]
    pub workspaces_dir: Option<PathBuf>,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// Serve workspaces of several users even though `local` workspaces run as the server's
    /// own Unix user (not root), so each can read the others' homes and secrets.
    #[arg(long, env = "OUTPOST_ALLOW_UNISOLATED_USERS")]
    pub allow_unisolated_users: bool,
    /// Serve apps on hosts of their own: `*.apps.example.com` (a wildcard DNS name pointing
    /// at this server, same scheme and port as the access URL). There, each app is its own
    /// origin and the templates' share levels apply.
    #[arg(long, env = "OUTPOST_APPS_DOMAIN")]
    pub apps_domain: Option<String>,
    /// Let path-based apps (`/@OWNER/WS/apps/SLUG/`, on the dashboard's own origin) be shared
    /// with other users. Dangerous: such an app's scripts run with its visitors' sessions.
    /// Without it they are the owner's only; share through --apps-domain instead.
    #[arg(long, env = "OUTPOST_DANGEROUS_ALLOW_PATH_APP_SHARING")]
    pub dangerous_allow_path_app_sharing: bool,
    /// Where the other replicas on this database reach this one's agent listener (replica to
    /// replica streams), like `https://10.0.0.5:7443`. Default: the agent listener's own address
    /// (`--agent-url` may name a balancer in front of several replicas, so it is not used).
    #[arg(long, env = "OUTPOST_REPLICA_URL")]
    pub replica_url: Option<String>,
    /// Let users with the owner role into other users' workspaces (SSH, terminals, ports and
    /// apps, naming them OWNER/NAME); every such connection is audited (`workspace.connect`).
    /// Without it, owners manage anyone's workspace but only its owner gets in.
    #[arg(long, env = "OUTPOST_ALLOW_OWNER_WORKSPACE_ACCESS")]
    pub allow_owner_workspace_access: bool,
    /// Seconds between agent heartbeats.
    #[arg(long, env = "OUTPOST_HEARTBEAT_SECS", default_value_t = 15)]
    pub heartbeat_secs: u64,
    /// Seconds a web terminal session lives with no browser attached.
    #[arg(
        long,
        env = "OUTPOST_TERMINAL_IDLE_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub terminal_idle_timeout_secs: u64,
    /// Never hand a browser's terminal connection to a local workspace's agent: keep control
    /// between them (the agent's TLS dial-back). By default, on a plain HTTP listener, control
    /// passes the upgraded connection to the agent over a Unix socket in the workspaces dir, so
    /// keystrokes skip a hop.
    #[arg(long, env = "OUTPOST_NO_TERMINAL_HANDOFF")]
    pub no_terminal_handoff: bool,
    /// Seconds an SSH connection to a workspace may take to log in before it is closed.
    #[arg(long, env = "OUTPOST_SSH_LOGIN_GRACE_SECS", default_value_t = 30)]
    pub ssh_login_grace_secs: u64,
    /// The most connections one address may hold open to the API and dashboard at once (TLS
    /// handshakes in progress to the agent API: four times this, where a connection past the
    /// cap waits up to 5 s for its turn).
    #[arg(
        long,
        env = "OUTPOST_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 256
    )]
    pub max_connections_per_source: usize,
    /// Seconds a client may take to send a request's headers (slow senders are cut off).
    #[arg(long, env = "OUTPOST_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Audit events older than this are deleted (e.g. 90d, 12h).
    #[arg(long, env = "OUTPOST_AUDIT_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    pub audit_retention: std::time::Duration,
    /// At most this many audit events are kept (the oldest go first).
    #[arg(long, env = "OUTPOST_AUDIT_MAX_EVENTS", default_value_t = 1_000_000)]
    pub audit_max_events: i64,
    /// Agent log lines (script output) older than this are deleted.
    #[arg(long, env = "OUTPOST_AGENT_LOG_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub agent_log_retention: std::time::Duration,
    /// At most this many agent log lines are kept, over all workspaces (the oldest go first).
    #[arg(long, env = "OUTPOST_AGENT_LOG_MAX_LINES", default_value_t = 1_000_000)]
    pub agent_log_max_lines: i64,
    /// How often audit events and agent logs are pruned.
    #[arg(long, env = "OUTPOST_RETENTION_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retention_interval: std::time::Duration,
    /// Seconds a provisioner job's lease lasts without renewal.
    #[arg(long, env = "OUTPOST_JOB_LEASE_SECS", default_value_t = 15)]
    pub job_lease_secs: u64,
    /// Seconds an agent gets to exit by itself on stop before it is signalled.
    #[arg(long, env = "OUTPOST_STOP_GRACE_SECS", default_value_t = 10)]
    pub stop_grace_secs: u64,
    /// Lifetime of agent client certificates, in seconds (agents renew at about 2/3 of it).
    #[arg(
        long,
        env = "OUTPOST_AGENT_CERT_LIFETIME_SECS",
        default_value_t = 86400
    )]
    pub agent_cert_lifetime_secs: u64,
    /// Tests only: a file holding a clock offset in milliseconds.
    #[arg(long, hide = true)]
    pub test_clock_file: Option<PathBuf>,
    /// When the autostop requirement stops workspaces of users who set no quiet hours:
    /// `CRON_TZ=ZONE MINUTE HOUR * * *`.
    #[arg(
        long,
        env = "OUTPOST_DEFAULT_QUIET_HOURS_SCHEDULE",
        default_value = "CRON_TZ=UTC 0 0 * * *"
    )]
    pub default_quiet_hours_schedule: String,
    /// Let users choose their own quiet hours (when false they see the default, and custom ones
    /// are ignored).
    #[arg(long, env = "OUTPOST_ALLOW_CUSTOM_QUIET_HOURS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_custom_quiet_hours: bool,
    /// How often the scheduler looks for workspaces to stop, start, mark dormant or delete.
    #[arg(long, env = "OUTPOST_SCHEDULE_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub schedule_interval: std::time::Duration,
    /// On SIGTERM, how long open SSH and port relays may finish before the process exits.
    #[arg(long, env = "OUTPOST_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Seconds a bootstrap token stays valid.
    #[arg(long, env = "OUTPOST_BOOTSTRAP_TOKEN_TTL_SECS", default_value_t = 900)]
    pub bootstrap_token_ttl_secs: u64,
    /// Sign-in through this OpenID Connect provider: its issuer URL (discovery from
    /// ISSUER/.well-known/openid-configuration). Register ACCESS_URL/oidc/callback there.
    #[arg(long, env = "OUTPOST_OIDC_ISSUER_URL", requires = "oidc_client_id")]
    pub oidc_issuer_url: Option<String>,
    /// The client id registered at the provider.
    #[arg(long, env = "OUTPOST_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// The client's secret (none: a public client, PKCE only).
    #[arg(long, env = "OUTPOST_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// The scopes asked for (`openid` is always).
    #[arg(
        long,
        env = "OUTPOST_OIDC_SCOPES",
        default_value = "openid profile email"
    )]
    pub oidc_scopes: String,
    /// The claim listing the user's groups (set as the default organization's `oidc` groups).
    #[arg(long, env = "OUTPOST_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// The claim a new user's name comes from (else the email's local part).
    #[arg(
        long,
        env = "OUTPOST_OIDC_USERNAME_CLAIM",
        default_value = "preferred_username"
    )]
    pub oidc_username_claim: String,
    /// Create users on their first sign-in through the provider.
    #[arg(long, env = "OUTPOST_OIDC_ALLOW_SIGNUPS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub oidc_allow_signups: bool,
    /// Log as JSON lines.
    #[arg(long, env = "OUTPOST_LOG_JSON")]
    pub log_json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ProvisionerCmd {
    /// Take and run jobs from the server at --url.
    Start {
        /// The server's provisioner key (`outpost server --provisioner-key`).
        #[arg(long, env = "OUTPOST_PROVISIONER_KEY", hide_env_values = true)]
        key: String,
        /// Where local workspaces live.
        #[arg(long, env = "OUTPOST_WORKSPACES_DIR")]
        workspaces_dir: PathBuf,
        #[arg(long, env = "OUTPOST_AGENT_BINARY")]
        agent_binary: Option<PathBuf>,
        #[command(flatten)]
        isolation: IsolationArgs,
    },
}

/// How provisioners keep workspaces apart (server and provisioner daemons).
#[derive(Args, Debug, Clone)]
pub struct IsolationArgs {
    /// `user`: each local workspace runs as a Unix user of its own (needs root); `none`: as
    /// this process's user. Default: `user` when run as root, else `none`.
    #[arg(long = "isolation", env = "OUTPOST_ISOLATION", value_parser = ["user", "none"])]
    pub local: Option<String>,
    /// The agent API URL containers use (default: the agent URL with its host replaced by
    /// host.docker.internal, the Docker host's gateway; control must listen there).
    #[arg(long, env = "OUTPOST_DOCKER_AGENT_URL")]
    pub docker_agent_url: Option<String>,
}

impl IsolationArgs {
    /// The local isolation to use, or why it cannot be had.
    pub fn local_isolation(&self) -> anyhow::Result<crate::provisioner::local::Isolation> {
        use crate::provisioner::local::Isolation;
        match self.local.as_deref() {
            None => Ok(Isolation::detect()),
            Some(s) => {
                let want = Isolation::parse(s).unwrap_or(Isolation::None);
                if want == Isolation::User && Isolation::detect() != Isolation::User {
                    anyhow::bail!("--isolation user needs root (it makes a Unix user per workspace); run as root or use --isolation none");
                }
                Ok(want)
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The server URL, e.g. http://127.0.0.1:7080
    pub server: String,
    #[arg(long)]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Create the first admin (needs the setup token the server printed).
    #[arg(long)]
    pub first_user: bool,
    #[arg(long, env = "OUTPOST_SETUP_TOKEN", hide_env_values = true)]
    pub setup_token: Option<String>,
    /// Upload this SSH public key (a .pub file) so workspaces accept it.
    #[arg(long, conflicts_with = "create_ssh_key")]
    pub ssh_key: Option<PathBuf>,
    /// Make an SSH key for Outpost (~/.ssh/outpost_ed25519, if missing) and upload it.
    #[arg(long)]
    pub create_ssh_key: bool,
}

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// Create a user.
    Create {
        username: String,
        /// Make the user an owner (every right).
        #[arg(long)]
        admin: bool,
        /// A role: owner, user-admin, template-admin, auditor (repeatable; none: a member).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Suspend a user at once: their tokens and browser sessions are revoked, their SSH
    /// relays, terminals and app connections end, their workspaces stop.
    Suspend { username: String },
    /// Let a suspended user sign in again (their workspaces stay stopped until started).
    Unsuspend { username: String },
    /// Delete a user: their sessions, tokens and connections end at once and every workspace of
    /// theirs is deleted (homes included); the username is free at once. Waits for the
    /// workspaces' deletes.
    Delete {
        username: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Return once the deletes are queued.
        #[arg(long)]
        no_wait: bool,
    },
    /// Change your password (asks for the current one), or with NAME another user's (user
    /// admins). Every other session and token of the user ends.
    Password {
        username: Option<String>,
        /// Read the passwords from standard input: your current and the new one on two lines
        /// (with NAME: the new one only).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show or set your account's dotfiles repository, which every template with a
    /// `dotfiles_uri` parameter uses when you give none.
    Dotfiles {
        /// A git URL (https://, ssh://, git://, file://) or HOST:PATH; none shows the current.
        uri: Option<String>,
        /// Have none.
        #[arg(long, conflicts_with = "uri")]
        clear: bool,
    },
    /// List users with their roles (owners, user and template admins, auditors).
    List,
    /// Show a user's roles, or set them: `--set template-admin,auditor`, `--set member`.
    Roles {
        username: String,
        #[arg(long, value_name = "ROLES")]
        set: Option<String>,
    },
    /// Show or set your quiet hours, when the autostop requirement may stop your workspaces:
    /// `outpost users quiet-hours 'CRON_TZ=America/Chicago 30 2 * * *'`.
    QuietHours {
        /// `CRON_TZ=ZONE MINUTE HOUR * * *`; none shows the current one.
        schedule: Option<String>,
        /// Go back to the server's default.
        #[arg(long, conflicts_with = "schedule")]
        reset: bool,
    },
}

pub use crate::config_templates::{TemplateEditArgs, TemplatesCmd};

#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    List,
    /// Make a group (`ORG/NAME` for another organization than `default`).
    Create {
        name: String,
        /// Cost units the members may have running together.
        #[arg(long)]
        budget: Option<i64>,
        #[arg(long = "org")]
        organization: Option<String>,
    },
    Delete {
        name: String,
    },
    /// Add users to a group.
    Add {
        name: String,
        users: Vec<String>,
    },
    /// Remove users from a group.
    Remove {
        name: String,
        users: Vec<String>,
    },
    /// Set (or, with `none`, clear) a group's quota budget.
    Budget {
        name: String,
        budget: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum OrgsCmd {
    List,
    /// Make an organization (owners).
    Create {
        name: String,
    },
    Add {
        name: String,
        users: Vec<String>,
    },
    Remove {
        name: String,
        users: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuotasCmd {
    /// Your workspaces and cost units against your limits.
    Show,
    /// The most workspaces one user may have (`none`: no limit); owners.
    Set {
        #[arg(long, value_name = "N|none")]
        workspaces_per_user: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Show a workspace's autostart, autostop, deadline and the next automatic action.
    Show { name: String },
    /// Set when the workspace starts by itself: a cron with a time zone
    /// (`'CRON_TZ=Europe/Berlin 30 8 * * 1-5'`), or `manual` for never.
    Start { name: String, schedule: String },
    /// Set how long the workspace runs without activity before it stops (`8h`), `manual` for
    /// never, or `default` for the template's.
    Stop { name: String, duration: String },
    /// Keep a running workspace up until now + DURATION (`2h`).
    Extend { name: String, duration: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long, short, default_value = "base")]
    pub template: String,
    /// A parameter value, NAME=VALUE (repeatable).
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Return once the build is queued.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct ActionArgs {
    pub name: String,
    /// A parameter value, NAME=VALUE (repeatable; start, restart and update).
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Return once the build is queued.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub name: String,
    /// Keep streaming (agent logs: until interrupted; build log: until the build ends).
    #[arg(long, short)]
    pub follow: bool,
    /// Only this script's output.
    #[arg(long)]
    pub source: Option<String>,
    /// The latest build's log instead of the agent's (scripts') logs.
    #[arg(long)]
    pub build: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    Create {
        name: String,
        /// e.g. 30d, 12h
        #[arg(long)]
        lifetime: Option<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate names, conflicts with `--version`, ...), which
    /// otherwise only fire when that subcommand is first parsed.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
