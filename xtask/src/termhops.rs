//! Per-hop timing for `cargo xtask bench terminal`: the parts a keystroke crosses, each timed
//! on its own in the same run, so the web terminal's total can be split into them.
//!
//! - a PTY running `cat` in raw mode, written and read by this process: the floor both the web
//!   terminal and `ssh -tt` share (sshd writes to a PTY too);
//! - one loopback TCP round trip to an echo server: the floor of one network hop;
//! - the same echo reached through control's TCP relay (`/relay/tcp/{port}`: the client's
//!   upgraded connection -> control -> the agent's mTLS HTTP/2 tunnel -> the agent -> the echo),
//!   which is the web terminal's path without the WebSocket framing and the PTY.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Round trips in ms of one byte each, after 50 warm-up ones.
pub struct Hops {
    pub pty_ms: Vec<f64>,
    pub tcp_ms: Vec<f64>,
    pub relay_ms: Vec<f64>,
}

/// Times `n` one-byte round trips through each part. `api`: a client of control with a token
/// that may reach workspace `ws`.
pub async fn measure(
    api: &outpost_api::Client,
    ws: &str,
    ssh_into_ws: &[String],
    n: usize,
) -> anyhow::Result<Hops> {
    let pty_ms = tokio::task::spawn_blocking(move || pty_round_trips(n)).await??;
    // The echo runs inside the workspace (control relays only to ports the workspace's own
    // processes listen on), started over the agent's SSH; the bench reaches it both directly
    // and through the relay, so the echo's own time is in both.
    let (_echo, port) = start_echo(ssh_into_ws)?;
    let mut direct = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    direct.set_nodelay(true)?;
    let tcp_ms = round_trips(&mut direct, n).await?;
    let mut relayed = api
        .relay(&format!("/api/v1/workspaces/{ws}/relay/tcp/{port}"))
        .await
        .context("opening the TCP relay to the echo server")?;
    let relay_ms = round_trips(&mut relayed, n).await?;
    Ok(Hops {
        pty_ms,
        tcp_ms,
        relay_ms,
    })
}

/// A TCP echo server in the workspace (Python, over `ssh_into_ws`): the SSH session, which
/// ends it when killed, and the port it listens on.
fn start_echo(ssh_into_ws: &[String]) -> anyhow::Result<(crate::sshbench::Kill, u16)> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    const ECHO: &str = r#"
import socket, threading
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    let (prog, args) = ssh_into_ws.split_first().context("no ssh command")?;
    let mut child = Command::new(prog)
        .args(args)
        .args(["python3", "-u", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(ECHO.as_bytes())?;
    drop(stdin);
    let stdout = child.stdout.take().context("stdout")?;
    let kill = crate::sshbench::Kill(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .parse()
        .with_context(|| format!("the echo server in the workspace said {line:?}"))?;
    Ok((kill, port))
}

async fn round_trips<S>(s: &mut S, n: usize) -> anyhow::Result<Vec<f64>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut v = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    for i in 0..(n + 50) {
        let b = b'a' + (i % 26) as u8;
        let t = Instant::now();
        s.write_all(&[b]).await?;
        s.flush().await?;
        loop {
            let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
            if k == 0 {
                bail!("the echo closed");
            }
            if buf[..k].contains(&b) {
                break;
            }
        }
        if i >= 50 {
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(v)
}

/// `cat` on a PTY of this process's own, in raw mode without echo, as the terminals' shells are.
fn pty_round_trips(n: usize) -> anyhow::Result<Vec<f64>> {
    use portable_pty::{native_pty_system, CommandBuilder, PtySize};
    let pair = native_pty_system().openpty(PtySize {
        rows: 24,
        cols: 80,
        pixel_width: 0,
        pixel_height: 0,
    })?;
    let mut cmd = CommandBuilder::new("sh");
    cmd.args(["-c", crate::termbench::CAT]);
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let mut rd = pair.master.try_clone_reader()?;
    let mut wr = pair.master.take_writer()?;
    crate::termbench::wait_for(&mut rd, b"READY")?;
    let v = crate::termbench::keystrokes(&mut wr, &mut rd, n, "cat");
    let _ = child.kill();
    let _ = child.wait();
    v
}
