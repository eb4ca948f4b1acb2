use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The Outpost workspace agent.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The bootstrap bundle (JSON) from control; or set OUTPOST_BOOTSTRAP to its contents.
    #[arg(long, env = "OUTPOST_BOOTSTRAP_FILE")]
    bootstrap_file: Option<PathBuf>,
    /// Where the agent keeps its key and certificate (required to run the agent).
    #[arg(long, env = "OUTPOST_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, env = "OUTPOST_LOG_JSON")]
    log_json: bool,
    /// Whose listening sockets are the workspace's ports (the relay reaches only those):
    /// `uid`, any process of the agent's user (a workspace with a user or container of its
    /// own), or `tree`, only processes below the agent (a workspace sharing its user).
    #[arg(long, env = "OUTPOST_AGENT_PORT_OWNERS", default_value = "uid")]
    port_owners: outpost_agent::procs::PortOwners,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Apply a dotfiles repository to your home (clone or pull, then its install script, or
    /// link its dotfiles keeping `.bak` copies): what workspaces do on start with `dotfiles_uri`.
    Dotfiles {
        /// A git URL.
        uri: String,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Sharing its user with others, the workspace's processes are those below the agent: the
    // process the provisioner started stays above them all as their subreaper.
    if args.command.is_none()
        && args.port_owners == outpost_agent::procs::PortOwners::Tree
        && !outpost_agent::reaper::is_worker()
    {
        return outpost_agent::reaper::supervise();
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(agent_main(args)),
        Err(e) => {
            eprintln!("outpost-agent: cannot start the runtime: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn agent_main(args: Args) -> std::process::ExitCode {
    outpost_agent::keep_freed_heap();
    if let Some(Command::Dotfiles { uri }) = &args.command {
        let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
            eprintln!("outpost-agent: HOME is not set");
            return std::process::ExitCode::from(2);
        };
        return match outpost_agent::dotfiles::apply(uri, &home, &mut |l| eprintln!("{l}")) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpost-agent: applying the dotfiles: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    outpost_common::logs::init(args.log_json);
    match real_main(args).await {
        Ok(outpost_agent::Exit::Stopped) => std::process::ExitCode::SUCCESS,
        Ok(outpost_agent::Exit::Rejected) => std::process::ExitCode::from(3),
        Ok(outpost_agent::Exit::Expired) => std::process::ExitCode::from(4),
        Err(e) => {
            eprintln!("outpost-agent: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<outpost_agent::Exit> {
    let state_dir = args
        .state_dir
        .context("pass --state-dir (or OUTPOST_AGENT_STATE_DIR): where the agent keeps its key")?;
    // The bundle file is deleted once its token is spent; a restarted agent finds the rest of
    // it (never the token) in its state dir.
    let kept = outpost_agent::run::kept_bundle_path(&state_dir);
    let raw = match (&args.bootstrap_file, std::env::var("OUTPOST_BOOTSTRAP")) {
        (Some(p), _) if !p.exists() && kept.exists() => {
            std::fs::read_to_string(&kept).with_context(|| format!("reading {}", kept.display()))?
        }
        (Some(p), _) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the bootstrap bundle {}", p.display()))?,
        (None, Ok(v)) => v,
        (None, Err(_)) => {
            anyhow::bail!("no bootstrap bundle: pass --bootstrap-file or set OUTPOST_BOOTSTRAP")
        }
    };
    let bundle: outpost_api::BootstrapBundle =
        serde_json::from_str(&raw).context("the bootstrap bundle is not valid JSON")?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let config = outpost_agent::AgentConfig {
        bootstrap_file: args.bootstrap_file.clone(),
        bundle,
        state_dir,
        home,
        port_owners: args.port_owners,
    };
    tokio::select! {
        r = outpost_agent::run(config) => r,
        _ = terminate() => {
            tracing::info!("terminated by signal");
            Ok(outpost_agent::Exit::Stopped)
        }
    }
}

async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            tokio::select! {
                _ = s.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
