//! The `outpost` command: dispatches to the server, the provisioner daemon or a user command.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use outpost_api::*;

use crate::config::*;

/// Entry point of the `outpost` binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
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
        Command::Server(args) => server(args).await,
        Command::Ca(cmd) => {
            let (what, dir) = match &cmd {
                CaCmd::Rotate { data_dir } => ("rotate", data_dir),
                CaCmd::Promote { data_dir } => ("promote", data_dir),
                CaCmd::Retire { data_dir } => ("retire", data_dir),
            };
            let msg = match what {
                "rotate" => format!(
                    "staged a new CA (pin {}); restart the server: agents learn the pin from their heartbeats. Then run `outpost ca promote`.",
                    crate::ca::rotate(dir)?
                ),
                "promote" => format!(
                    "the new CA (pin {}) signs from now on; the old one stays trusted. Restart the server; once agents have renewed, run `outpost ca retire`.",
                    crate::ca::promote(dir)?
                ),
                _ => {
                    crate::ca::retire(dir)?;
                    "the previous CA is no longer trusted; restart the server.".to_string()
                }
            };
            if cli.json {
                println!("{}", serde_json::json!({ "done": what, "message": msg }));
            } else {
                println!("{msg}");
            }
            Ok(())
        }
        Command::Provisioner(ProvisionerCmd::Start {
            key,
            workspaces_dir,
            agent_binary,
        }) => {
            init_logs(false);
            outpost_common::tls::install_provider();
            let url = cli
                .url
                .context("pass --url (or OUTPOST_URL): the server to take jobs from")?;
            let daemon = crate::provisioner::Daemon {
                client: Client::new(&url, Some(key)),
                id: format!("external-{}-{}", hostname(), std::process::id()),
                local: crate::provisioner::local::LocalProvisioner {
                    root: workspaces_dir,
                    agent_binary,
                    stop_grace: Duration::from_secs(10),
                },
            };
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

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_logs(args.log_json);
    outpost_common::tls::install_provider();
    let api = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running? use --listen)",
                args.listen
            )
        })?;
    let agent = tokio::net::TcpListener::bind(&args.agent_listen)
        .await
        .with_context(|| {
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
    config.access_url = args.access_url;
    config.agent_url = args.agent_url;
    config.provisioner_daemons = args.provisioner_daemons;
    config.provisioner_key = args.provisioner_key;
    config.agent_binary = args.agent_binary;
    config.heartbeat_secs = args.heartbeat_secs.max(1);
    config.terminal_idle_timeout_secs = args.terminal_idle_timeout_secs.max(1);
    config.job_lease_secs = args.job_lease_secs.max(1);
    config.stop_grace_secs = args.stop_grace_secs;
    config.bootstrap_token_ttl_secs = args.bootstrap_token_ttl_secs.max(1);
    config.agent_cert_lifetime_secs = args.agent_cert_lifetime_secs.max(2);
    config.test_clock_file = args.test_clock_file;
    crate::server::run(
        crate::server::Listeners { api, agent },
        config,
        shutdown_signal(),
    )
    .await
}

// -------------------------------------------------------------------- user commands

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Session {
    url: String,
    token: String,
}

pub(crate) struct Ctx {
    pub(crate) json: bool,
    pub(crate) config_dir: PathBuf,
    url: Option<String>,
    token: Option<String>,
}

impl Ctx {
    fn new(
        json: bool,
        url: Option<String>,
        token: Option<String>,
        dir: Option<PathBuf>,
    ) -> anyhow::Result<Ctx> {
        let config_dir = match dir {
            Some(d) => d,
            None => {
                let home =
                    std::env::var_os("HOME").context("HOME is not set; pass --config-dir")?;
                PathBuf::from(home).join(".config").join("outpost")
            }
        };
        let mut saved: Option<Session> = std::fs::read(config_dir.join("session.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        // Inside a workspace, without a session of its own: the agent hands out a short-lived,
        // workspace-scoped credential (nothing is written to disk).
        if saved.is_none() && (url.is_none() || token.is_none()) {
            if let Some(sock) = std::env::var_os("OUTPOST_AGENT_SOCKET") {
                saved = workspace_credential(std::path::Path::new(&sock));
            }
        }
        Ok(Ctx {
            json,
            url: url.or_else(|| saved.as_ref().map(|s| s.url.clone())),
            token: token.or_else(|| saved.map(|s| s.token)),
            config_dir,
        })
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let url = self.url.as_deref().context(
            "not signed in: run `outpost login URL` first (or set OUTPOST_URL and OUTPOST_TOKEN)",
        )?;
        Ok(Client::new(url, self.token.clone()))
    }

    fn save(&self, session: &Session) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.config_dir)?;
        crate::ca::write_private(
            &self.config_dir.join("session.json"),
            &serde_json::to_vec_pretty(session)?,
        )
    }

    pub(crate) fn print<T: serde::Serialize>(
        &self,
        v: &T,
        human: impl FnOnce(),
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            human();
        }
        Ok(())
    }
}

fn workspace_credential(sock: &std::path::Path) -> Option<Session> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let c: WorkspaceCredential = serde_json::from_str(buf.trim()).ok()?;
    Some(Session {
        url: c.url,
        token: c.token,
    })
}

fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("parameter {p:?} must be NAME=VALUE"))
        })
        .collect()
}

fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(rpassword::prompt_password(prompt)?)
}

fn read_line(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn ago(ms: i64) -> String {
    let now = crate::store::now_ms();
    let s = ((now - ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn health_str(w: &Workspace) -> String {
    if w.health.healthy {
        "healthy".into()
    } else {
        format!("unhealthy: {}", w.health.reasons.join("; "))
    }
}

fn print_table(rows: Vec<Vec<String>>) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

async fn user_command(ctx: &Ctx, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => login(ctx, args).await,
        Command::Whoami => {
            let me = ctx.client()?.me().await?;
            ctx.print(&me, || {
                println!(
                    "{} ({}) at {}",
                    me.username,
                    if me.admin { "admin" } else { "member" },
                    ctx.url.clone().unwrap_or_default()
                )
            })
        }
        Command::Users(UsersCmd::Create {
            username,
            admin,
            password_stdin,
        }) => {
            let password = read_password(password_stdin, "Password for the new user: ")?;
            let u: User = ctx
                .client()?
                .post(
                    "/api/v1/users",
                    &CreateUserRequest {
                        username,
                        password,
                        admin,
                    },
                )
                .await?;
            ctx.print(&u, || println!("created user {}", u.username))
        }
        Command::Templates(cmd) => templates(ctx, cmd).await,
        Command::Create(args) => {
            let client = ctx.client()?;
            let req = CreateWorkspaceRequest {
                name: args.name.clone(),
                template: args.template,
                parameters: parse_params(&args.params)?,
            };
            let ws: Workspace = client.post("/api/v1/workspaces", &req).await?;
            if !ctx.json {
                eprintln!(
                    "Creating workspace {} from template {} (v{})",
                    ws.name, ws.template, ws.template_version
                );
            }
            finish(ctx, &client, &args.name, &ws.latest_build, args.no_wait).await
        }
        Command::List => {
            let list = ctx.client()?.workspaces().await?;
            ctx.print(&list, || {
                if list.is_empty() {
                    println!(
                        "No workspaces yet: create one with `outpost create NAME --template base`."
                    );
                    return;
                }
                let mut rows = vec![[
                    "NAME",
                    "STATUS",
                    "HEALTH",
                    "TEMPLATE",
                    "AGENT",
                    "LAST BUILD",
                ]
                .map(String::from)
                .to_vec()];
                for w in &list {
                    rows.push(vec![
                        w.name.clone(),
                        w.status.to_string(),
                        if w.health.healthy {
                            "healthy".into()
                        } else {
                            "unhealthy".into()
                        },
                        format!(
                            "{} v{}{}",
                            w.template,
                            w.template_version,
                            if w.outdated { " (outdated)" } else { "" }
                        ),
                        w.agent
                            .as_ref()
                            .map(|a| format!("{:?}", a.status).to_lowercase())
                            .unwrap_or_else(|| "-".into()),
                        format!(
                            "#{} {} {}",
                            w.latest_build.number,
                            w.latest_build.transition.as_str(),
                            ago(w.latest_build.created_at)
                        ),
                    ]);
                }
                print_table(rows);
            })
        }
        Command::Show { name } => {
            let w = ctx.client()?.workspace(&name).await?;
            ctx.print(&w, || show(&w))
        }
        Command::Start(a) => action(ctx, a, WorkspaceAction::Start).await,
        Command::Stop(a) => action(ctx, a, WorkspaceAction::Stop).await,
        Command::Restart(a) => action(ctx, a, WorkspaceAction::Restart).await,
        Command::Update(a) => action(ctx, a, WorkspaceAction::Update).await,
        Command::Delete(a) => action(ctx, a, WorkspaceAction::Delete).await,
        Command::Cancel { name } => {
            let b: Build = ctx
                .client()?
                .post(
                    &format!("/api/v1/workspaces/{name}/cancel"),
                    &serde_json::json!({}),
                )
                .await?;
            ctx.print(&b, || {
                println!("build #{} is {}", b.number, b.status.as_str())
            })
        }
        Command::Logs(args) => {
            crate::provisioner::sys::default_sigpipe();
            let client = ctx.client()?;
            if !args.build {
                let json = ctx.json;
                client
                    .agent_logs(&args.name, args.source.as_deref(), args.follow, |l| {
                        print_log(json, &l)
                    })
                    .await?;
                return Ok(());
            }
            let w = client.workspace(&args.name).await?;
            if args.follow {
                let json = ctx.json;
                client
                    .follow_build_logs(&w.latest_build.id, |l| print_log(json, &l))
                    .await?;
            } else {
                let lines: Vec<LogLine> = fetch_logs(&client, &w.latest_build.id).await?;
                for l in &lines {
                    print_log(ctx.json, l);
                }
            }
            Ok(())
        }
        Command::Tokens(cmd) => tokens(ctx, cmd).await,
        Command::Audit(a) => audit(ctx, a).await,
        Command::Publickey => {
            let k: GitSshKey = ctx.client()?.get("/api/v1/users/me/gitsshkey").await?;
            ctx.print(&k, || {
                println!("{}", k.public_key);
                eprintln!(
                    "Add this key to your git host; git inside your workspaces signs with it."
                );
            })
        }
        Command::Keys(k) => keys(ctx, k).await,
        Command::Ssh(a) => crate::sshcli::ssh(ctx, a).await,
        Command::ConfigSsh(a) => crate::sshcli::config_ssh(ctx, a).await,
        Command::PortForward(a) => crate::sshcli::port_forward(ctx, a).await,
        Command::Server(_) | Command::Provisioner(_) | Command::Ca(_) => unreachable_command(),
    }
}

fn unreachable_command() -> anyhow::Result<()> {
    bail!("this command is handled elsewhere")
}

async fn fetch_logs(client: &Client, build_id: &str) -> anyhow::Result<Vec<LogLine>> {
    let mut out = Vec::new();
    client
        .follow_build_logs_once(build_id, |l| out.push(l))
        .await?;
    Ok(out)
}

fn print_log(json: bool, l: &LogLine) {
    if json {
        if let Ok(s) = serde_json::to_string(l) {
            println!("{s}");
        }
    } else {
        println!("[{}] {}", l.stage, l.output);
    }
}

fn show(w: &Workspace) {
    println!("Workspace  {} (owner {})", w.name, w.owner);
    println!("Status     {}", w.status);
    println!("Health     {}", health_str(w));
    println!(
        "Template   {} v{}{}",
        w.template,
        w.template_version,
        if w.outdated {
            " (outdated: `outpost update` moves it to the active version)"
        } else {
            ""
        }
    );
    let b = &w.latest_build;
    println!(
        "Build      #{} {} {}{}",
        b.number,
        b.transition.as_str(),
        b.status.as_str(),
        b.error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    match &w.agent {
        Some(a) => {
            println!(
                "Agent      {} ({:?}, lifecycle {:?}{})",
                a.id,
                a.status,
                a.lifecycle,
                a.last_seen_at
                    .map(|t| format!(", seen {}", ago(t)))
                    .unwrap_or_default()
            );
            if let Some(t) = a.cert_expires_at {
                let left = (t - crate::store::now_ms()) / 1000;
                if left > 0 {
                    println!(
                        "Identity   certificate expires in {}m{}s",
                        left / 60,
                        left % 60
                    );
                } else {
                    println!("Identity   certificate expired {}s ago", -left);
                }
            }
            if let Some(st) = &a.stats {
                println!(
                    "Stats      cpu {:.0}% of {} cores, load {:.2}, mem {} / {} MiB, home disk {} / {} GiB, agent up {}s",
                    st.cpu_percent,
                    st.cpu_cores,
                    st.load1,
                    st.mem_used_bytes >> 20,
                    st.mem_total_bytes >> 20,
                    st.home_disk_used_bytes >> 30,
                    st.home_disk_total_bytes >> 30,
                    st.agent_uptime_secs
                );
            }
        }
        None => println!("Agent      -"),
    }
    for (k, v) in &w.parameters {
        println!("Parameter  {k} = {v:?}");
    }
    for r in &w.resources {
        let details: Vec<String> = r.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "Resource   {} ({}, {}) {}",
            r.name,
            r.kind,
            if r.persistent {
                "persistent"
            } else {
                "ephemeral"
            },
            details.join(" ")
        );
    }
}

async fn action(ctx: &Ctx, a: ActionArgs, act: WorkspaceAction) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let req = BuildRequest {
        action: act,
        parameters: parse_params(&a.params)?,
    };
    let b: Build = client
        .post(&format!("/api/v1/workspaces/{}/builds", a.name), &req)
        .await?;
    finish(ctx, &client, &a.name, &b, a.no_wait).await
}

/// Follows the build (and the start build a restart or update queues after its stop) while
/// streaming logs, then waits for the agent when the workspace is starting. Fails when the
/// workspace ends failed or canceled.
async fn finish(
    ctx: &Ctx,
    client: &Client,
    name: &str,
    first: &Build,
    no_wait: bool,
) -> anyhow::Result<()> {
    if no_wait {
        return ctx.print(first, || {
            println!(
                "queued build #{} ({})",
                first.number,
                first.transition.as_str()
            )
        });
    }
    let json = ctx.json;
    let mut build = first.clone();
    let spinner = Spinner::new(!json && std::io::stderr().is_terminal());
    // Each build's log is streamed once: the loop below comes back here while it waits for the
    // agent, and following the same build again would print its lines again.
    let mut followed: Option<String> = None;
    let ws = loop {
        if followed.as_deref() != Some(build.id.as_str()) {
            client
                .follow_build_logs(&build.id, |l| {
                    if !json {
                        spinner.clear();
                        eprintln!("[{}] {}", l.stage, l.output);
                    }
                })
                .await?;
            followed = Some(build.id.clone());
        }
        let w = match client.workspace(name).await {
            Ok(w) => w,
            Err(e) if e.status() == Some(404) && build.transition == Transition::Delete => {
                if !json {
                    spinner.clear();
                    eprintln!("Workspace {name} deleted.");
                } else {
                    println!("{}", serde_json::json!({"name": name, "status": "deleted"}));
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if w.latest_build.id != build.id {
            build = w.latest_build.clone();
            continue;
        }
        match w.status {
            WorkspaceStatus::Stopped if build.then_start => {
                // The follow-up start build is being queued.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            WorkspaceStatus::Starting if w.latest_build.status == JobStatus::Succeeded => {
                let agent_status = w.agent.as_ref().map(|a| a.status);
                if agent_status == Some(AgentStatus::Timeout) {
                    break w;
                }
                spinner.tick("waiting for the agent to connect");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            WorkspaceStatus::Pending
            | WorkspaceStatus::Starting
            | WorkspaceStatus::Stopping
            | WorkspaceStatus::Deleting
            | WorkspaceStatus::Canceling => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break w,
        }
    };
    spinner.clear();
    ctx.print(&ws, || {
        eprintln!(
            "Workspace {} is {} ({})",
            ws.name,
            ws.status,
            health_str(&ws)
        );
        if ws.status == WorkspaceStatus::Running {
            if let Some(home) = ws
                .resources
                .iter()
                .find(|r| r.name == "home")
                .and_then(|r| r.details.get("path"))
            {
                eprintln!("Its home directory is {home}");
            }
        }
    })?;
    match ws.status {
        WorkspaceStatus::Failed => bail!(
            "the build failed: {}; see `outpost logs {name}`",
            ws.latest_build.error.clone().unwrap_or_default()
        ),
        WorkspaceStatus::Canceled => bail!("the build was canceled"),
        WorkspaceStatus::Starting => bail!("the agent did not connect; see `outpost show {name}`"),
        _ => Ok(()),
    }
}

/// A one-line spinner on stderr (only on a terminal).
struct Spinner {
    on: bool,
    frame: std::cell::Cell<usize>,
}

impl Spinner {
    fn new(on: bool) -> Self {
        Spinner {
            on,
            frame: std::cell::Cell::new(0),
        }
    }
    fn tick(&self, msg: &str) {
        if !self.on {
            return;
        }
        const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
        let i = self.frame.get();
        self.frame.set(i + 1);
        eprint!("\r{} {msg}\x1b[K", FRAMES[i % 4]);
    }
    fn clear(&self) {
        if self.on && self.frame.get() > 0 {
            eprint!("\r\x1b[K");
        }
    }
}

async fn login(ctx: &Ctx, args: LoginArgs) -> anyhow::Result<()> {
    let url = args.server.trim_end_matches('/').to_string();
    let client = Client::new(&url, None);
    let username = match args.username {
        Some(u) => u,
        None => read_line("Username: ")?,
    };
    let resp: LoginResponse = if args.first_user {
        let setup_token = match args.setup_token {
            Some(t) => t,
            None => read_line("Setup token (printed by `outpost server`): ")?,
        };
        let password = read_password(args.password_stdin, "Choose a password: ")?;
        client
            .post(
                "/api/v1/setup",
                &SetupRequest {
                    setup_token,
                    username,
                    password,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        let password = read_password(args.password_stdin, "Password: ")?;
        client
            .post("/api/v1/login", &LoginRequest { username, password })
            .await?
    };
    ctx.save(&Session {
        url: url.clone(),
        token: resp.token.clone(),
    })?;
    let key_file = if args.create_ssh_key {
        Some(crate::sshcli::create_ssh_key()?)
    } else {
        args.ssh_key
    };
    if let Some(pubkey) = key_file {
        let authed = Client::new(&url, Some(resp.token.clone()));
        let line = std::fs::read_to_string(&pubkey)
            .with_context(|| format!("reading {}", pubkey.display()))?;
        let line = line.lines().next().unwrap_or_default().to_string();
        let name = line
            .split_whitespace()
            .nth(2)
            .unwrap_or("outpost")
            .to_string();
        match authed
            .post::<_, SshKey>(
                "/api/v1/users/me/keys",
                &AddSshKeyRequest {
                    name,
                    public_key: line,
                },
            )
            .await
        {
            Ok(k) => eprintln!("Uploaded SSH key {} ({})", k.fingerprint, pubkey.display()),
            Err(e) if e.status() == Some(409) => {
                eprintln!("SSH key {} is already uploaded", pubkey.display())
            }
            Err(e) => return Err(e.into()),
        }
    }
    ctx.print(&resp.user, || {
        println!(
            "Signed in to {url} as {}. Next: `outpost create dev --template base`",
            resp.user.username
        )
    })
}

async fn templates(ctx: &Ctx, cmd: TemplatesCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TemplatesCmd::Push {
            dir,
            name,
            no_activate,
        } => {
            let name = match name {
                Some(n) => n,
                None => dir
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .context("cannot tell the template's name from the directory: pass --name")?,
            };
            let files = read_template_dir(&dir)?;
            let v: TemplateVersion = client
                .post(
                    "/api/v1/templates/push",
                    &PushTemplateRequest {
                        name,
                        files,
                        activate: !no_activate,
                    },
                )
                .await?;
            ctx.print(&v, || {
                println!(
                    "pushed {} v{}{} ({} files)",
                    v.template_name,
                    v.version,
                    if v.active { ", now active" } else { "" },
                    v.files.len()
                )
            })
        }
        TemplatesCmd::List => {
            let list: Vec<Template> = client.get("/api/v1/templates").await?;
            ctx.print(&list, || {
                let mut rows = vec![["NAME", "ACTIVE", "DESCRIPTION"].map(String::from).to_vec()];
                for t in &list {
                    rows.push(vec![
                        t.name.clone(),
                        t.active_version
                            .map(|v| format!("v{v}"))
                            .unwrap_or_else(|| "-".into()),
                        t.description.clone(),
                    ]);
                }
                print_table(rows);
            })
        }
        TemplatesCmd::Show { name } => {
            let d: TemplateDetail = client.get(&format!("/api/v1/templates/{name}")).await?;
            ctx.print(&d, || {
                println!("Template  {}: {}", d.template.name, d.template.description);
                for v in &d.versions {
                    println!(
                        "  v{}{}  provisioner={}  parameters: {}",
                        v.version,
                        if v.active { " (active)" } else { "" },
                        v.manifest.provisioner,
                        v.manifest
                            .parameters
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            })
        }
    }
}

/// Reads a template directory (UTF-8 files, at most 8 MiB in all, no symlinks out of it).
fn read_template_dir(dir: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for e in entries {
            let e = e?;
            let path = e.path();
            let ft = e.file_type()?;
            let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            if rel.starts_with('.') || rel.contains("/.") {
                continue;
            }
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let content = std::fs::read_to_string(&path).with_context(|| {
                    format!("{}: template files must be UTF-8 text", path.display())
                })?;
                total += content.len();
                if total > crate::server::TEMPLATE_BODY_LIMIT / 2 {
                    bail!(
                        "the template directory is larger than {} bytes",
                        crate::server::TEMPLATE_BODY_LIMIT / 2
                    );
                }
                files.insert(rel, content);
            }
        }
    }
    if !files.contains_key(crate::template::MANIFEST_FILE) {
        bail!("{} has no template.toml", dir.display());
    }
    Ok(files)
}

async fn tokens(ctx: &Ctx, cmd: TokensCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TokensCmd::Create { name, lifetime } => {
            let lifetime_secs = lifetime
                .map(|l| humantime::parse_duration(&l).map(|d| d.as_secs()))
                .transpose()
                .context("--lifetime takes a duration like 30d or 12h")?;
            let r: CreateTokenResponse = client
                .post(
                    "/api/v1/tokens",
                    &CreateTokenRequest {
                        name,
                        lifetime_secs,
                    },
                )
                .await?;
            ctx.print(&r, || {
                println!("{}", r.token);
                eprintln!(
                    "token {} ({}); it is shown only once",
                    r.info.id, r.info.name
                );
            })
        }
        TokensCmd::List => {
            let list: Vec<TokenInfo> = client.get("/api/v1/tokens").await?;
            ctx.print(&list, || {
                let mut rows = vec![["ID", "NAME", "CREATED", "EXPIRES", "LAST USED"]
                    .map(String::from)
                    .to_vec()];
                let now = crate::store::now_ms();
                for t in &list {
                    rows.push(vec![
                        t.id.clone(),
                        t.name.clone(),
                        ago(t.created_at),
                        format!("in {}d", (t.expires_at - now).max(0) / 86_400_000),
                        t.last_used_at.map(ago).unwrap_or_else(|| "never".into()),
                    ]);
                }
                print_table(rows);
            })
        }
        TokensCmd::Revoke { id } => {
            let v: serde_json::Value = client.delete(&format!("/api/v1/tokens/{id}")).await?;
            ctx.print(&v, || println!("revoked token {id}"))
        }
    }
}

async fn audit(ctx: &Ctx, a: AuditArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut q: Vec<(String, String)> = vec![("limit".into(), a.limit.to_string())];
    if let Some(x) = a.action {
        q.push(("action".into(), x));
    }
    if let Some(x) = a.outcome {
        q.push(("outcome".into(), x));
    }
    if let Some(w) = a.workspace {
        // A name of one of your workspaces, or an id.
        let id = match client.workspace(&w).await {
            Ok(ws) => ws.id,
            Err(_) => w,
        };
        q.push(("workspace".into(), id));
    }
    if let Some(s) = a.since {
        let d = humantime::parse_duration(&s).context("--since takes a duration like 1h or 30m")?;
        q.push((
            "since".into(),
            (crate::store::now_ms() - d.as_millis() as i64).to_string(),
        ));
    }
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace('%', "%25")
                    .replace('&', "%26")
                    .replace('+', "%2B")
                    .replace(' ', "%20")
            )
        })
        .collect();
    let events: Vec<AuditEventView> = client
        .get(&format!("/api/v1/audit?{}", qs.join("&")))
        .await?;
    ctx.print(&events, || {
        let mut rows = vec![[
            "WHEN",
            "ACTION",
            "OUTCOME",
            "ACTOR",
            "WORKSPACE",
            "AGENT",
            "DETAILS",
        ]
        .map(String::from)
        .to_vec()];
        for e in &events {
            rows.push(vec![
                ago(e.created_at),
                e.action.clone(),
                e.outcome.clone(),
                e.actor.clone(),
                e.workspace_id
                    .clone()
                    .unwrap_or_else(|| "-".into())
                    .chars()
                    .take(8)
                    .collect(),
                e.agent_id
                    .clone()
                    .unwrap_or_else(|| "-".into())
                    .chars()
                    .take(8)
                    .collect(),
                e.details.clone(),
            ]);
        }
        print_table(rows);
    })
}

async fn keys(ctx: &Ctx, cmd: KeysCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        KeysCmd::Add { file, name } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .context("the key file is empty")?;
            let name = name
                .or_else(|| line.split_whitespace().nth(2).map(str::to_string))
                .unwrap_or_else(|| "key".into());
            let k: SshKey = client
                .post(
                    "/api/v1/users/me/keys",
                    &AddSshKeyRequest {
                        name,
                        public_key: line.to_string(),
                    },
                )
                .await?;
            ctx.print(&k, || println!("added {} ({})", k.fingerprint, k.name))?;
            crate::sshcli::refresh_after_key_change(ctx).await;
            Ok(())
        }
        KeysCmd::List => {
            let list: Vec<SshKey> = client.get("/api/v1/users/me/keys").await?;
            ctx.print(&list, || {
                let mut rows = vec![["ID", "NAME", "FINGERPRINT", "ADDED"]
                    .map(String::from)
                    .to_vec()];
                for k in &list {
                    rows.push(vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.fingerprint.clone(),
                        ago(k.created_at),
                    ]);
                }
                print_table(rows);
            })
        }
        KeysCmd::Remove { id } => {
            let v: serde_json::Value = client
                .delete(&format!("/api/v1/users/me/keys/{id}"))
                .await?;
            ctx.print(&v, || println!("removed {id}"))?;
            crate::sshcli::refresh_after_key_change(ctx).await;
            Ok(())
        }
    }
}
