//! `outpost ssh`, `outpost config-ssh` and `outpost port-forward`: everything rides on control's
//! relay (`/api/v1/workspaces/NAME/relay/...`), authorised by the user's API token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use outpost_api::*;

use crate::cli::Ctx;
use crate::config::{ConfigSshArgs, PortForwardArgs, SshArgs};

const BEGIN: &str = "# ------------START-OUTPOST------------";
const END: &str = "# ------------END-OUTPOST------------";

fn workspace_name(s: &str) -> &str {
    s.split('.').next().unwrap_or(s)
}

/// Waits until the workspace is running, starting it first when it is stopped.
async fn ensure_running(client: &Client, name: &str, start: bool) -> anyhow::Result<Workspace> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut started = false;
    loop {
        let w = client.workspace(name).await?;
        match w.status {
            WorkspaceStatus::Running
                if w.agent.as_ref().is_some_and(|a| a.ssh_host_key.is_some()) =>
            {
                return Ok(w)
            }
            WorkspaceStatus::Stopped | WorkspaceStatus::Failed | WorkspaceStatus::Canceled
                if start && !started =>
            {
                eprintln!("Starting workspace {name}...");
                let _: Build = client
                    .post(
                        &format!("/api/v1/workspaces/{name}/builds"),
                        &BuildRequest {
                            action: WorkspaceAction::Start,
                            parameters: Default::default(),
                        },
                    )
                    .await?;
                started = true;
            }
            WorkspaceStatus::Stopped
            | WorkspaceStatus::Failed
            | WorkspaceStatus::Canceled
            | WorkspaceStatus::Deleted
                if !start || started && w.status != WorkspaceStatus::Stopped =>
            {
                bail!(
                    "workspace {name} is {}; start it with `outpost start {name}`",
                    w.status
                )
            }
            _ if !start => bail!("workspace {name} is {}; wait for it or start it", w.status),
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "workspace {name} did not become reachable in 5 minutes; see `outpost show {name}`"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn known_hosts_path(ctx: &Ctx) -> PathBuf {
    ctx.config_dir.join("known_hosts")
}

/// Rewrites the known_hosts file with the host keys of all the user's running workspaces.
async fn write_known_hosts(ctx: &Ctx, client: &Client, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut out = String::new();
    for w in client.workspaces().await? {
        if let Some(k) = w.agent.as_ref().and_then(|a| a.ssh_host_key.clone()) {
            out.push_str(&format!("{}.{suffix} {k}\n", w.name));
        }
    }
    let path = known_hosts_path(ctx);
    std::fs::create_dir_all(&ctx.config_dir)?;
    std::fs::write(&path, out)?;
    Ok(path)
}

const RELAY_BUF: usize = 1 << 20;

/// Opens the relay on a plain TCP connection (the HTTP upgrade by hand), then passes the socket
/// to ssh over stdout (`ProxyUseFdpass`): ssh then talks to control directly.
fn fdpass(client: &outpost_api::Client, name: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let hostport = client
        .base()
        .strip_prefix("http://")
        .map(|r| r.split('/').next().unwrap_or(r))
        .context("--fdpass needs an http:// server (a TLS session cannot be handed over); run `outpost config-ssh` again")?;
    let mut tcp = std::net::TcpStream::connect(hostport)
        .with_context(|| format!("connecting to {hostport}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    write!(
        tcp,
        "GET /api/v1/workspaces/{name}/relay/ssh HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {}\r\nConnection: upgrade\r\nUpgrade: outpost-relay\r\n\r\n",
        client.token().unwrap_or("")
    )?;
    // The response head, a byte at a time: whatever follows it is ssh's.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            tcp.read(&mut byte)? == 1 && head.len() < 16 * 1024,
            "control closed the relay connection before answering"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
    if status != "101" {
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len.min(64 * 1024)];
        let _ = tcp.read_exact(&mut body);
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("control refused the relay (HTTP {status}): {msg}");
    }
    tcp.set_read_timeout(None)?;
    crate::sys::send_fd(&std::io::stdout(), tcp.as_raw_fd())
        .context("passing the connection to ssh (is `ProxyUseFdpass yes` set?)")?;
    Ok(())
}

/// Stdin as a non-blocking pipe with a 1 MiB buffer, when it is a pipe (as under ProxyCommand).
fn stdin_pipe() -> Option<tokio::net::unix::pipe::Receiver> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    crate::sys::grow_pipe(&fd, RELAY_BUF as i32);
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()
}

/// Stdout as a non-blocking pipe with a 1 MiB buffer, when it is a pipe.
fn stdout_pipe() -> Option<tokio::net::unix::pipe::Sender> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    crate::sys::grow_pipe(&fd, RELAY_BUF as i32);
    tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok()
}

async fn copy_then_shutdown<R, W>(rd: R, mut wr: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut rd = tokio::io::BufReader::with_capacity(RELAY_BUF, rd);
    let _ = tokio::io::copy_buf(&mut rd, &mut wr).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
}

pub(crate) async fn ssh(ctx: &Ctx, a: SshArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let name = workspace_name(&a.workspace).to_string();
    if a.stdio {
        // ProxyCommand: bridge stdin/stdout with the relayed SSH stream.
        ensure_running(&client, &name, !a.no_start).await?;
        if a.fdpass {
            return fdpass(&client, &name);
        }
        let stream = client
            .relay(&format!("/api/v1/workspaces/{name}/relay/ssh"))
            .await?;
        let (rd, wr) = tokio::io::split(stream);
        let up = tokio::spawn(async move {
            // ssh's pipes are read and written directly (non-blocking, through tokio), not
            // through tokio's blocking stdin/stdout threads.
            match stdin_pipe() {
                Some(pipe) => copy_then_shutdown(pipe, wr).await,
                None => copy_then_shutdown(tokio::io::stdin(), wr).await,
            }
        });
        match stdout_pipe() {
            Some(pipe) => copy_then_shutdown(rd, pipe).await,
            None => copy_then_shutdown(rd, tokio::io::stdout()).await,
        }
        up.abort();
        return Ok(());
    }
    ensure_running(&client, &name, !a.no_start).await?;
    let kh = write_known_hosts(ctx, &client, "outpost").await?;
    let exe = std::env::current_exe().context("finding the outpost binary")?;
    let proxy = format!(
        "{} --config-dir {} ssh --stdio --no-start %n",
        shell_quote(&exe.display().to_string()),
        shell_quote(&ctx.config_dir.display().to_string())
    );
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-o")
        .arg("StrictHostKeyChecking=yes")
        .args(if a.no_wait {
            vec!["-o", "SetEnv=OUTPOST_NO_WAIT=1"]
        } else {
            vec![]
        })
        .arg(format!("{name}@{name}.outpost"));
    if !a.command.is_empty() {
        cmd.arg("--").args(&a.command);
    }
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    bail!("cannot run ssh (install OpenSSH's client): {err}")
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub(crate) async fn config_ssh(ctx: &Ctx, a: ConfigSshArgs) -> anyhow::Result<()> {
    let path = match a.ssh_config {
        Some(p) => p,
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --ssh-config")?)
                .join(".ssh/config")
        }
    };
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let without = remove_block(&existing);
    if a.remove {
        write_config(&path, &without)?;
        return ctx.print(&serde_json::json!({"removed": path}), || {
            println!("removed Outpost's block from {}", path.display())
        });
    }
    let client = ctx.client()?;
    let kh = write_known_hosts(ctx, &client, &a.suffix).await?;
    let exe = std::env::current_exe().context("finding the outpost binary")?;
    // Over plain HTTP the CLI hands ssh the relay connection and leaves the data path.
    let fdpass = if client.base().starts_with("http://") {
        " --fdpass"
    } else {
        ""
    };
    let use_fdpass = if fdpass.is_empty() {
        ""
    } else {
        "  ProxyUseFdpass yes\n"
    };
    let block = format!(
        "{BEGIN}\n# Written by `outpost config-ssh`; `outpost config-ssh --remove` takes it out.\nHost *.{suffix}\n  ProxyCommand {exe} --config-dir {cfg} ssh --stdio{fdpass} %h\n{use_fdpass}  UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n  ConnectTimeout 0\n  ServerAliveInterval 30\n{identity}{END}\n",
        identity = outpost_identity()
            .map(|k| format!("  IdentityFile {}\n", k.display()))
            .unwrap_or_default(),
        suffix = a.suffix,
        exe = shell_quote(&exe.display().to_string()),
        cfg = shell_quote(&ctx.config_dir.display().to_string()),
        kh = kh.display(),
    );
    let mut content = without.trim_end().to_string();
    if !content.is_empty() {
        content.push_str("\n\n");
    }
    content.push_str(&block);
    write_config(&path, &content)?;
    let names: Vec<String> = client
        .workspaces()
        .await?
        .into_iter()
        .map(|w| format!("{}.{}", w.name, a.suffix))
        .collect();
    ctx.print(
        &serde_json::json!({"config": path, "known_hosts": kh, "hosts": names}),
        || {
            println!(
                "wrote {} (hosts: {}); try `ssh {}`",
                path.display(),
                names.join(", "),
                names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("NAME.{}", a.suffix))
            );
        },
    )
}

fn remove_block(s: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in s.lines() {
        if line.trim() == BEGIN {
            inside = true;
            continue;
        }
        if line.trim() == END {
            inside = false;
            continue;
        }
        if !inside {
            out.push(line);
        }
    }
    let mut r = out.join("\n").trim_end().to_string();
    if !r.is_empty() {
        r.push('\n');
    }
    r
}

fn write_config(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("outpost-tmp");
    std::fs::write(&tmp, content)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) async fn port_forward(ctx: &Ctx, a: PortForwardArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let name = workspace_name(&a.workspace).to_string();
    ensure_running(&client, &name, true).await?;
    let mut tasks = Vec::new();
    for spec in &a.tcp {
        let (l, r) = spec
            .split_once(':')
            .context("--tcp takes LOCAL:REMOTE, e.g. 8080:3000")?;
        let local: u16 = l.parse().context("the local port must be a number")?;
        let remote: u16 = r.parse().context("the remote port must be a number")?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| {
                format!("cannot listen on 127.0.0.1:{local}; pick another local port")
            })?;
        let bound = listener.local_addr()?;
        eprintln!("Forwarding {bound} -> {name}:{remote}");
        let (client, name) = (client.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (client, name) = (client.clone(), name.clone());
                tokio::spawn(async move {
                    match client
                        .relay(&format!("/api/v1/workspaces/{name}/relay/tcp/{remote}"))
                        .await
                    {
                        Ok(mut up) => {
                            let _ = tcp.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut tcp,
                                &mut up,
                                256 * 1024,
                                256 * 1024,
                            )
                            .await;
                        }
                        Err(e) => eprintln!("forward to {name}:{remote} failed: {e}"),
                    }
                });
            }
        }));
    }
    if !ctx.json {
        eprintln!("Press Ctrl-C to stop.");
    }
    tokio::signal::ctrl_c().await?;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// `~/.ssh/outpost_ed25519` (made with ssh-keygen when missing); returns the public key's path.
pub(crate) fn create_ssh_key() -> anyhow::Result<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let dir = home.join(".ssh");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("outpost_ed25519");
    if !key.exists() {
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "outpost", "-f"])
            .arg(&key)
            .status()
            .context("running ssh-keygen (install OpenSSH's client)")?;
        if !st.success() {
            bail!("ssh-keygen failed");
        }
        eprintln!("Made an SSH key: {}", key.display());
    }
    Ok(key.with_extension("pub"))
}

/// The key `--create-ssh-key` makes, when it exists.
fn outpost_identity() -> Option<PathBuf> {
    let k = PathBuf::from(std::env::var_os("HOME")?).join(".ssh/outpost_ed25519");
    k.exists().then_some(k)
}
