//! The `outpost` command: dispatches to the server, the provisioner daemon or a user command.
//! User commands live by group: `workspaces.rs`, `users.rs` (sign-in, users, tokens, keys,
//! audit), `templates.rs`; `ctx.rs` holds the signed-in context and output helpers; the SSH
//! commands are in `crate::sshcli`.

mod ctx;
pub(crate) mod provisioners;
mod schedule;
mod secrets;
mod teams;
mod templates;
mod users;
mod workspaces;

use std::time::Duration;

use anyhow::{bail, Context};
use outpost_api::*;

pub(crate) use ctx::Ctx;

use crate::config::*;

/// Entry point of the `outpost` binary.
pub fn main() -> std::process::ExitCode {
    let cli = crate::config_file::parse();
    let server_url = cli
        .url
        .clone()
        .or_else(|| ctx::saved_url(cli.config_dir.as_deref()));
    outpost_common::tls::install_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e, server_url.as_deref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error as the user sees it: the context, the API's or transport's own words once (not
/// repeated by every layer of its sources), and what to do next where we know it.
fn report(e: &anyhow::Error, server_url: Option<&str>) -> String {
    use outpost_api::ClientError;
    let mut parts: Vec<String> = Vec::new();
    let mut hint = None;
    for cause in e.chain() {
        if let Some(ce) = cause.downcast_ref::<ClientError>() {
            match ce {
                ClientError::Transport { url, .. } => {
                    let base = url.split("/api/").next().unwrap_or(url);
                    parts.push(ce.to_string());
                    hint = Some(format!(
                        "Is the Outpost server running at {base}? Check --url or OUTPOST_URL (`outpost login URL` saves another), then try again."
                    ));
                }
                ClientError::Api { .. } => {
                    // The server's advice names `outpost login URL`: fill in the URL in use.
                    let msg = ce.to_string();
                    parts.push(match server_url {
                        Some(u) => msg.replace("outpost login URL", &format!("outpost login {u}")),
                        None => msg,
                    });
                }
                ClientError::Decode { .. } => parts.push(ce.to_string()),
            }
            break;
        }
        parts.push(cause.to_string());
    }
    let mut out = parts.join(": ");
    if let Some(h) = hint {
        out.push('\n');
        out.push_str(&h);
    }
    out
}

fn init_logs(json: bool) {
    outpost_common::logs::init(json);
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut term) = signal(SignalKind::terminate()) {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(mut args) => match args.action.take() {
            Some(action) => {
                let r = crate::backup::run(action).await?;
                if cli.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{}", r.message);
                }
                Ok(())
            }
            None => server(args).await,
        },
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "outpost", &mut std::io::stdout());
            Ok(())
        }
        Command::Ca(cmd) => {
            let msg = match &cmd {
                CaCmd::Rotate { data_dir, secrets } => format!(
                    "staged a new CA (pin {}); restart the server: agents learn the pin from their heartbeats. Then run `outpost ca promote`.",
                    crate::ca::rotate(data_dir, &secrets.keyring(data_dir)?)?
                ),
                CaCmd::Promote { data_dir, secrets } => format!(
                    "the new CA (pin {}) signs from now on; the old one stays trusted. Restart the server; once agents have renewed, run `outpost ca retire`.",
                    crate::ca::promote(data_dir, &secrets.keyring(data_dir)?)?
                ),
                CaCmd::Retire { data_dir } => {
                    crate::ca::retire(data_dir)?;
                    "the previous CA is no longer trusted; restart the server.".to_string()
                }
            };
            let what = match cmd {
                CaCmd::Rotate { .. } => "rotate",
                CaCmd::Promote { .. } => "promote",
                CaCmd::Retire { .. } => "retire",
            };
            if cli.json {
                println!("{}", serde_json::json!({ "done": what, "message": msg }));
            } else {
                println!("{msg}");
            }
            Ok(())
        }
        Command::Secrets(SecretsCmd::Rotate {
            data_dir,
            postgres_url,
            secrets,
        }) => {
            let r = secrets::rotate(&data_dir, postgres_url.as_deref(), &secrets).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", r.message);
            }
            Ok(())
        }
        Command::Provisioner(ProvisionerCmd::Start {
            key,
            workspaces_dir,
            agent_binary,
            isolation,
        }) => {
            init_logs(false);
            outpost_common::tls::install_provider();
            let url = cli
                .url
                .context("pass --url (or OUTPOST_URL): the server to take jobs from")?;
            let daemon = crate::provisioner::Daemon {
                client: Client::new(&url, Some(key)),
                id: format!("external-{}-{}", hostname(), std::process::id()),
                local: std::sync::Arc::new(crate::provisioner::local::LocalProvisioner {
                    root: workspaces_dir,
                    agent_binary: agent_binary.clone(),
                    stop_grace: Duration::from_secs(10),
                    isolation: isolation.local_isolation()?,
                    setup_lock: Default::default(),
                }),
                docker: std::sync::Arc::new(crate::provisioner::docker::DockerProvisioner::new(
                    agent_binary,
                    isolation.docker_agent_url.clone(),
                    Duration::from_secs(10),
                )),
            };
            daemon.local.prepare_root()?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(true);
            });
            daemon.run(rx).await;
            Ok(())
        }
        command => {
            let ctx = Ctx::new(cli.json, cli.url, cli.token, cli.config_dir)?;
            user_command(&ctx, command).await
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// Binds `addr`, trying again for up to 5 s while it is in use: a server restarted at once
/// after a crash can find its port still held for a moment (a child it was forking when it died
/// holds the socket until its exec). Another server really on the port still fails, 5 s later.
async fn bind_retrying(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_logs(args.log_json);
    outpost_common::tls::install_provider();
    let api = bind_retrying(&args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another server running? use --listen)",
            args.listen
        )
    })?;
    let agent = bind_retrying(&args.agent_listen).await.with_context(|| {
        format!(
            "cannot listen on {} (use --agent-listen)",
            args.agent_listen
        )
    })?;
    let data_dir = if args.data_dir.is_absolute() {
        args.data_dir.clone()
    } else {
        std::env::current_dir()?.join(&args.data_dir)
    };
    let mut config = crate::server::ServerConfig::new(data_dir);
    config.postgres_url = args.postgres_url;
    config.shared_data_dir = args.shared_data_dir;
    config.access_url = args.access_url;
    config.agent_url = args.agent_url;
    config.provisioner_daemons = args.provisioner_daemons;
    config.provisioner_key = args.provisioner_key;
    config.agent_binary = args.agent_binary;
    config.workspaces_dir = args.workspaces_dir;
    config.isolation = args.isolation.local_isolation()?;
    config.allow_unisolated_users = args.allow_unisolated_users;
    config.secrets = args.secrets.clone();
    config.ssh_login_grace_secs = args.ssh_login_grace_secs;
    config.max_connections_per_source = args.max_connections_per_source.max(1);
    config.header_read_timeout_secs = args.header_read_timeout_secs.max(1);
    config.retention = crate::server::Retention {
        audit_age: args.audit_retention,
        audit_max: args.audit_max_events.max(1),
        agent_log_age: args.agent_log_retention,
        agent_log_max: args.agent_log_max_lines.max(1),
        every: args
            .retention_interval
            .max(std::time::Duration::from_secs(1)),
    };
    config.apps_domain = match args.apps_domain.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => {
            let d = d
                .trim_start_matches("*.")
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if d.is_empty() || d.contains(['/', ':', '*']) {
                bail!("--apps-domain takes a wildcard name like '*.apps.example.com'");
            }
            Some(d)
        }
    };
    config.allow_path_app_sharing = args.dangerous_allow_path_app_sharing;
    config.allow_owner_workspace_access = args.allow_owner_workspace_access;
    config.terminal_handoff = !args.no_terminal_handoff;
    config.replica_url = args.replica_url.filter(|u| !u.trim().is_empty());
    config.docker_agent_url = args.isolation.docker_agent_url;
    config.heartbeat_secs = args.heartbeat_secs.max(1);
    config.terminal_idle_timeout_secs = args.terminal_idle_timeout_secs.max(1);
    config.job_lease_secs = args.job_lease_secs.max(1);
    config.stop_grace_secs = args.stop_grace_secs;
    config.bootstrap_token_ttl_secs = args.bootstrap_token_ttl_secs.max(1);
    config.agent_cert_lifetime_secs = args.agent_cert_lifetime_secs.max(2);
    config.test_clock_file = args.test_clock_file;
    config.oidc = match (args.oidc_issuer_url, args.oidc_client_id) {
        (Some(issuer), Some(client_id)) if !issuer.trim().is_empty() => {
            Some(crate::server::oidc::OidcConfig {
                issuer: issuer.trim().to_string(),
                client_id,
                client_secret: args.oidc_client_secret.filter(|s| !s.is_empty()),
                scopes: args.oidc_scopes,
                groups_claim: args.oidc_groups_claim,
                username_claim: args.oidc_username_claim,
                allow_signups: args.oidc_allow_signups,
            })
        }
        (Some(_), None) => bail!("--oidc-issuer-url needs --oidc-client-id"),
        _ => None,
    };
    config.default_quiet_hours =
        crate::schedule::TzCron::parse_quiet_hours(&args.default_quiet_hours_schedule)
            .map_err(|e| anyhow::anyhow!("--default-quiet-hours-schedule: {e}"))?
            .text;
    config.allow_custom_quiet_hours = args.allow_custom_quiet_hours;
    if args.schedule_interval < std::time::Duration::from_millis(100) {
        bail!("--schedule-interval must be at least 100ms");
    }
    config.schedule_interval = args.schedule_interval;
    config.shutdown_grace = args.shutdown_grace;
    config.metrics_listen = args.metrics_listen.clone();
    crate::server::run(
        crate::server::Listeners { api, agent },
        config,
        shutdown_signal(),
    )
    .await
}

async fn user_command(ctx: &Ctx, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => users::login(ctx, args).await,
        Command::Whoami => users::whoami(ctx).await,
        Command::Users(UsersCmd::Create {
            username,
            admin,
            roles,
            password_stdin,
        }) => {
            let roles = users::parse_roles(&roles.join(","))?;
            users::create_user(ctx, username, admin, roles, password_stdin).await
        }
        Command::Users(UsersCmd::List) => users::list_users(ctx).await,
        Command::Users(UsersCmd::Roles { username, set }) => {
            users::roles(ctx, &username, set.as_deref()).await
        }
        Command::Users(UsersCmd::Suspend { username }) => {
            users::suspend(ctx, &username, true).await
        }
        Command::Users(UsersCmd::Unsuspend { username }) => {
            users::suspend(ctx, &username, false).await
        }
        Command::Users(UsersCmd::Delete {
            username,
            yes,
            no_wait,
        }) => users::delete_user(ctx, &username, yes, no_wait).await,
        Command::Users(UsersCmd::Password {
            username,
            password_stdin,
        }) => users::password(ctx, username.as_deref(), password_stdin).await,
        Command::Users(UsersCmd::Dotfiles { uri, clear }) => users::dotfiles(ctx, uri, clear).await,
        Command::Users(UsersCmd::QuietHours { schedule, reset }) => {
            schedule::quiet_hours(ctx, schedule, reset).await
        }
        Command::Templates(TemplatesCmd::Edit(a)) => schedule::edit_template(ctx, a).await,
        Command::Templates(cmd) => templates::templates(ctx, cmd).await,
        Command::Schedule(cmd) => schedule::schedule(ctx, cmd).await,
        Command::Activate { name } => schedule::activate(ctx, &name).await,
        Command::Groups(cmd) => teams::groups(ctx, cmd).await,
        Command::Orgs(cmd) => teams::orgs(ctx, cmd).await,
        Command::Quotas(cmd) => teams::quotas(ctx, cmd).await,
        Command::Replicas => teams::replicas(ctx).await,
        Command::Provisioners(cmd) => provisioners::run(ctx, cmd).await,
        Command::Create(args) => workspaces::create(ctx, args).await,
        Command::List { all } => workspaces::list(ctx, all).await,
        Command::Show { name } => workspaces::show(ctx, &name).await,
        Command::Start(a) => workspaces::action(ctx, a, WorkspaceAction::Start).await,
        Command::Stop(a) => workspaces::action(ctx, a, WorkspaceAction::Stop).await,
        Command::Restart(a) => workspaces::action(ctx, a, WorkspaceAction::Restart).await,
        Command::Update(a) => workspaces::action(ctx, a, WorkspaceAction::Update).await,
        Command::Delete(a) => workspaces::action(ctx, a, WorkspaceAction::Delete).await,
        Command::Cancel { name } => workspaces::cancel(ctx, &name).await,
        Command::Logs(args) => workspaces::logs(ctx, args).await,
        Command::Tokens(cmd) => users::tokens(ctx, cmd).await,
        Command::Audit(a) => users::audit(ctx, a).await,
        Command::Publickey => users::publickey(ctx).await,
        Command::Keys(k) => users::keys(ctx, k).await,
        Command::Ssh(a) => crate::sshcli::ssh(ctx, a).await,
        Command::ConfigSsh(a) => crate::sshcli::config_ssh(ctx, a).await,
        Command::PortForward(a) => crate::sshcli::port_forward(ctx, a).await,
        Command::Server(_)
        | Command::Provisioner(_)
        | Command::Ca(_)
        | Command::Secrets(_)
        | Command::Completion { .. } => unreachable_command(),
    }
}

fn unreachable_command() -> anyhow::Result<()> {
    bail!("this command is handled elsewhere")
}
