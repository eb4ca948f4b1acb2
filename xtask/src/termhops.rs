//! Per-hop timing for `cargo xtask bench terminal`: the parts a keystroke crosses, each timed
//! on its own in the same run (and, but for the relay, in the same rounds as the keystrokes),
//! so each path's total can be split into its hops and what its programs add.
//!
//! - a PTY running `cat` in raw mode, written and read by this process: the floor both the web
//!   terminal and `ssh -tt` share (sshd writes to a PTY too);
//! - a pipe to `cat`: one pipe hop, as between the bench and the ssh client;
//! - a loopback TCP connection to an echo thread: one TCP hop, as between the bench and control,
//!   control and the agent, or the ssh client and sshd;
//! - an echo server inside the workspace, reached directly and through control's TCP relay
//!   (`/relay/tcp/{port}`: the client's upgraded connection -> control -> the agent's mTLS
//!   HTTP/2 tunnel -> the agent -> the echo).

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::sshbench::Kill;

/// One thing a keystroke can be sent through: `key` writes one byte and returns once its echo
/// (`cat`'s copy, or an echo server's) is back.
pub(crate) trait Keyboard {
    fn key(&mut self, b: u8) -> anyhow::Result<()>;
}

/// `n` timed keystrokes, each in ms; `from` picks the letters.
pub(crate) fn timed(k: &mut dyn Keyboard, n: usize, from: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for i in from..from + n {
        let t = Instant::now();
        k.key(b'a' + (i % 26) as u8)?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(v)
}

/// A blocking writer and reader: the ssh client's stdin and stdout, a PTY's master, a pipe
/// pair, a TCP stream.
pub(crate) struct Pipes<W, R> {
    wr: W,
    rd: R,
    what: &'static str,
    buf: Vec<u8>,
}

impl<W: Write, R: Read> Pipes<W, R> {
    pub(crate) fn new(wr: W, rd: R, what: &'static str) -> Self {
        Pipes {
            wr,
            rd,
            what,
            buf: vec![0u8; 4096],
        }
    }
}

impl<W: Write, R: Read> Keyboard for Pipes<W, R> {
    fn key(&mut self, b: u8) -> anyhow::Result<()> {
        self.wr.write_all(&[b])?;
        self.wr.flush()?;
        loop {
            let k = self.rd.read(&mut self.buf)?;
            if k == 0 {
                bail!("{} closed", self.what);
            }
            if self.buf[..k].contains(&b) {
                return Ok(());
            }
        }
    }
}

/// `cat` on a PTY of this process's own, in raw mode without echo, as the terminals' shells are.
pub(crate) struct PtyCat {
    io: Pipes<Box<dyn Write + Send>, Box<dyn Read + Send>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
}

impl PtyCat {
    pub(crate) fn start() -> anyhow::Result<Self> {
        use portable_pty::{native_pty_system, CommandBuilder, PtySize};
        let pair = native_pty_system().openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })?;
        let mut cmd = CommandBuilder::new("sh");
        cmd.args(["-c", crate::termbench::CAT]);
        let child = pair.slave.spawn_command(cmd)?;
        drop(pair.slave);
        let mut rd = pair.master.try_clone_reader()?;
        let wr = pair.master.take_writer()?;
        crate::termbench::wait_for(&mut rd, b"READY")?;
        Ok(PtyCat {
            io: Pipes::new(wr, rd, "cat on a PTY"),
            child,
        })
    }
}

impl Keyboard for PtyCat {
    fn key(&mut self, b: u8) -> anyhow::Result<()> {
        self.io.key(b)
    }
}

impl Drop for PtyCat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cat` with a pipe for its stdin and one for its stdout.
pub(crate) struct PipeCat {
    io: Pipes<ChildStdin, ChildStdout>,
    _child: Kill,
}

impl PipeCat {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let mut child: Child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting cat")?;
        let wr = child.stdin.take().context("cat's stdin")?;
        let rd = child.stdout.take().context("cat's stdout")?;
        Ok(PipeCat {
            io: Pipes::new(wr, rd, "cat on pipes"),
            _child: Kill(child),
        })
    }
}

impl Keyboard for PipeCat {
    fn key(&mut self, b: u8) -> anyhow::Result<()> {
        self.io.key(b)
    }
}

/// A loopback TCP connection to an echo on a thread of its own (blocking reads and writes, as
/// `cat` does on its pipes).
pub(crate) fn tcp_echo() -> anyhow::Result<Pipes<std::net::TcpStream, std::net::TcpStream>> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else { return };
        let _ = c.set_nodelay(true);
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let c = std::net::TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(Pipes::new(c.try_clone()?, c, "the TCP echo"))
}

/// Round trips in ms of one byte each, after 50 warm-up ones, to an echo server in the
/// workspace: directly, and through control's TCP relay.
pub struct Relay {
    pub direct_ms: Vec<f64>,
    pub relay_ms: Vec<f64>,
}

/// Times `n` one-byte round trips each way. `api`: a client of control with a token that may
/// reach workspace `ws`.
pub async fn relay(
    api: &outpost_api::Client,
    ws: &str,
    ssh_into_ws: &[String],
    n: usize,
) -> anyhow::Result<Relay> {
    // The echo runs inside the workspace (control relays only to ports the workspace's own
    // processes listen on), started over the agent's SSH; the bench reaches it both directly
    // and through the relay, so the echo's own time is in both.
    let (_echo, port) = start_echo(ssh_into_ws)?;
    let mut direct = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    direct.set_nodelay(true)?;
    let direct_ms = round_trips(&mut direct, n).await?;
    let mut relayed = api
        .relay(&format!("/api/v1/workspaces/{ws}/relay/tcp/{port}"))
        .await
        .context("opening the TCP relay to the echo server")?;
    let relay_ms = round_trips(&mut relayed, n).await?;
    Ok(Relay {
        direct_ms,
        relay_ms,
    })
}

/// A TCP echo server in the workspace (Python, over `ssh_into_ws`): the SSH session, which
/// ends it when killed, and the port it listens on.
fn start_echo(ssh_into_ws: &[String]) -> anyhow::Result<(Kill, u16)> {
    use std::io::BufRead;
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
    let kill = Kill(child);
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
