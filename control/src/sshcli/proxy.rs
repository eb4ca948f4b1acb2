//! `outpost ssh --stdio HOST`: OpenSSH's ProxyCommand. It waits until the workspace is
//! reachable (starting it when asked, riding out a control restart or the agent reconnecting its
//! tunnel), writes the workspace's current host key to known_hosts, then either bridges
//! stdin/stdout with the relayed stream or, under `ProxyUseFdpass`, hands ssh the relay socket.

use std::time::Duration;

use anyhow::{bail, Context};
use outpost_api::*;

/// How long a short outage (control restarting, the agent's tunnel coming back) is waited out.
pub(crate) const OUTAGE_WAIT: Duration = Duration::from_secs(120);

/// Retries for what heals by itself, with one line on stderr per reason, until a deadline.
pub(crate) struct Patience {
    deadline: tokio::time::Instant,
    said: Option<String>,
}

impl Patience {
    pub(crate) fn new(within: Duration) -> Self {
        Patience {
            deadline: tokio::time::Instant::now() + within,
            said: None,
        }
    }

    /// Pauses before the next try, or fails with `err` once the deadline has passed.
    pub(crate) async fn pause(
        &mut self,
        why: &str,
        err: impl std::fmt::Display,
    ) -> anyhow::Result<()> {
        if tokio::time::Instant::now() >= self.deadline {
            bail!("{err}; gave up waiting after {}s", OUTAGE_WAIT.as_secs());
        }
        if self.said.as_deref() != Some(why) {
            eprintln!(
                "outpost: {why}; waiting up to {}s (Ctrl-C to give up)",
                OUTAGE_WAIT.as_secs()
            );
            self.said = Some(why.to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
}

/// Errors that a control restart or a reconnecting agent cause, and that go away by themselves.
fn passing(e: &ClientError) -> Option<&'static str> {
    match e {
        ClientError::Transport { .. } => Some("control is not answering (restarting?)"),
        ClientError::Api {
            status: 502..=504, ..
        } => Some("the workspace's agent is reconnecting to control"),
        _ => None,
    }
}

/// Waits until the workspace is running with a known host key, starting it first when it is
/// stopped and `start` is set; rides out control being briefly unreachable.
pub(crate) async fn ensure_running(
    client: &Client,
    name: &str,
    start: bool,
    patience: &mut Patience,
) -> anyhow::Result<Workspace> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut started = false;
    loop {
        let w = match client.workspace(name).await {
            Ok(w) => w,
            Err(e) => match passing(&e) {
                Some(why) => {
                    patience.pause(why, &e).await?;
                    continue;
                }
                None => return Err(e.into()),
            },
        };
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
                        &format!(
                            "/api/v1/workspaces/{}/builds",
                            outpost_api::percent_encode(name)
                        ),
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
            WorkspaceStatus::Running if !start => bail!(
                "workspace {name} is running but its agent has not connected yet; try again in a moment (without --no-start, `outpost ssh` waits)"
            ),
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

/// The ProxyCommand's whole job. `host` is what ssh was asked for (`dev.outpost`): its
/// known_hosts entry is brought up to date before ssh reads the file.
pub(crate) async fn run(
    client: &Client,
    host: &str,
    name: &str,
    start: bool,
    fdpass: bool,
    known_hosts: &std::path::Path,
) -> anyhow::Result<()> {
    let mut patience = Patience::new(OUTAGE_WAIT);
    loop {
        let w = ensure_running(client, name, start, &mut patience).await?;
        if let Some(key) = w.agent.as_ref().and_then(|a| a.ssh_host_key.as_deref()) {
            super::known_hosts::set(known_hosts, host, key)?;
        }
        let opened = if fdpass {
            open_raw(client, name).map(Opened::Raw)
        } else {
            client
                .relay(&format!(
                    "/api/v1/workspaces/{}/relay/ssh",
                    outpost_api::percent_encode(name)
                ))
                .await
                .map(Opened::Http)
                .map_err(|e| match passing(&e) {
                    Some(why) => Refused::Passing(why, e.to_string()),
                    None => Refused::Final(e.into()),
                })
        };
        match opened {
            Ok(Opened::Raw(tcp)) => return hand_over(tcp),
            Ok(Opened::Http(stream)) => {
                bridge(stream).await;
                return Ok(());
            }
            Err(Refused::Passing(why, msg)) => patience.pause(why, msg).await?,
            Err(Refused::Final(e)) => return Err(e),
        }
    }
}

enum Opened {
    Raw(std::net::TcpStream),
    Http(reqwest::Upgraded),
}

enum Refused {
    /// Worth another try soon (control down, tunnel not back yet).
    Passing(&'static str, String),
    Final(anyhow::Error),
}

/// Opens the relay on a plain TCP connection (the HTTP upgrade by hand), for `hand_over`.
fn open_raw(client: &Client, name: &str) -> Result<std::net::TcpStream, Refused> {
    use std::io::{Read, Write};
    let final_ = |e: anyhow::Error| Refused::Final(e);
    let hostport = client
        .base()
        .strip_prefix("http://")
        .map(|r| r.split('/').next().unwrap_or(r))
        .context("--fdpass needs an http:// server (a TLS session cannot be handed over); run `outpost config-ssh` again")
        .map_err(final_)?;
    let mut tcp = std::net::TcpStream::connect(hostport).map_err(|e| {
        Refused::Passing(
            "control is not answering (restarting?)",
            format!("connecting to {hostport}: {e}"),
        )
    })?;
    let io = |e: std::io::Error| {
        Refused::Passing("control is not answering (restarting?)", e.to_string())
    };
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    write!(
        tcp,
        "GET /api/v1/workspaces/{}/relay/ssh HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {}\r\nConnection: upgrade\r\nUpgrade: {}\r\n\r\n",
        outpost_api::percent_encode(name),
        client.token().unwrap_or(""),
        outpost_api::relay::UPGRADE_RELAY
    )
    .map_err(io)?;
    // The response head, a byte at a time: whatever follows it is ssh's.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).map_err(io)?;
        if n != 1 || head.len() >= 16 * 1024 {
            return Err(Refused::Passing(
                "control is not answering (restarting?)",
                "control closed the relay connection before answering".into(),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
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
        let msg = format!("control refused the relay (HTTP {status}): {msg}");
        return Err(if (502..=504).contains(&status) {
            Refused::Passing("the workspace's agent is reconnecting to control", msg)
        } else {
            Refused::Final(anyhow::anyhow!(msg))
        });
    }
    tcp.set_read_timeout(None).map_err(io)?;
    Ok(tcp)
}

/// Passes the relay socket to ssh over stdout (`ProxyUseFdpass`): ssh then talks to control
/// directly and no process of ours stays in the data path.
fn hand_over(tcp: std::net::TcpStream) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    // One byte with the descriptor, as OpenSSH's `ProxyUseFdpass` expects from its ProxyCommand.
    outpost_common::fdpass::send_with_fd(&std::io::stdout(), &[0], tcp.as_fd())
        .map(|_| ())
        .context("passing the connection to ssh (is `ProxyUseFdpass yes` set?)")
}

const RELAY_BUF: usize = 1 << 20;

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

/// Bridges stdin/stdout with the relayed SSH stream. ssh's pipes are read and written directly
/// (non-blocking, through tokio), not through tokio's blocking stdin/stdout threads.
async fn bridge(stream: reqwest::Upgraded) {
    let (rd, wr) = tokio::io::split(stream);
    let up = tokio::spawn(async move {
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
}
