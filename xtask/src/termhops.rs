//! Per-hop timing for `cargo xtask bench terminal`: the parts a keystroke crosses, each timed
//! on its own in the same run, so the web terminal's total can be split into them.
//!
//! - a PTY running `cat` in raw mode, written and read by this process: the floor both the web
//!   terminal and `ssh -tt` share (sshd writes to a PTY too);
//! - one loopback TCP round trip to an echo server: the floor of one network hop;
//! - the same echo reached through control's TCP relay (`/relay/tcp/{port}`: the client's
//!   upgraded connection -> control -> the agent's mTLS HTTP/2 tunnel -> the agent -> the echo),
//!   which is the web terminal's path without the WebSocket framing and the PTY.

use std::io::{Read, Write};
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
pub async fn measure(api: &outpost_api::Client, ws: &str, n: usize) -> anyhow::Result<Hops> {
    let pty_ms = tokio::task::spawn_blocking(move || pty_round_trips(n)).await??;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = echo.local_addr()?.port();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut direct = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    direct.set_nodelay(true)?;
    let tcp_ms = round_trips(&mut direct, n).await?;
    let mut relayed = api
        .relay(&format!("/api/v1/workspaces/{ws}/relay/tcp/{port}"))
        .await
        .context("opening the TCP relay to the echo server")?;
    let relay_ms = round_trips(&mut relayed, n).await?;
    server.abort();
    Ok(Hops {
        pty_ms,
        tcp_ms,
        relay_ms,
    })
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
    let mut v = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for i in 0..(n + 50) {
        let b = b'a' + (i % 26) as u8;
        let t = Instant::now();
        wr.write_all(&[b])?;
        wr.flush()?;
        loop {
            let k = rd.read(&mut buf)?;
            if k == 0 {
                bail!("cat closed");
            }
            if buf[..k].contains(&b) {
                break;
            }
        }
        if i >= 50 {
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(v)
}
