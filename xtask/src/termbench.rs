//! `cargo xtask bench terminal`: keystroke round trips through the web terminal (a WebSocket to
//! control, the relay, the agent's reconnecting PTY running `cat` in raw mode), beside the same
//! over `ssh -tt` to Debian's sshd, in one command. One byte is sent, and the clock stops when
//! `cat` has sent it back.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{machine, pct, write_results};
use crate::sshbench::{setup, BENCH_USER};

/// `stty raw -echo` first: every byte goes straight to `cat` and only `cat` answers.
pub(crate) const CAT: &str = "stty raw -echo; echo READY; exec cat";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut n = 1000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keystrokes" => n = it.next().context("--keystrokes N")?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        bail!("Debian's sshd is the anchor: install it with `apt-get install openssh-server`");
    }
    crate::cargo(&["build", "--release", "--bins"])?;
    run(&crate::root().join("target/release"), n)
}

fn run(bin: &Path, n: usize) -> anyhow::Result<()> {
    let rig = setup(bin, "terminal")?;

    // 1. sshd: `ssh -tt` with pipes for stdin/stdout.
    let mut child = Command::new("ssh")
        .args(["-tt", "-F", "/dev/null"])
        .args(SSH_OPTS)
        .arg("-i")
        .arg(&rig.key)
        .args(["-p", &rig.sshd_port.to_string()])
        .arg(format!("{BENCH_USER}@127.0.0.1"))
        .arg(CAT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    wait_for(&mut stdout, b"READY")?;
    let ssh_ms = keystrokes(&mut stdin, &mut stdout, n, "ssh")?;
    let _ = child.kill();
    let _ = child.wait();

    // 2. The web terminal: a WebSocket through control and the relay.
    let ws_url = format!(
        "{}/api/v1/workspaces/dev/pty?session=bench&cols=80&rows=24&command={}",
        rig.server.url.replacen("http", "ws", 1),
        outpost_api::percent_encode(CAT)
    );
    let web_ms = web_keystrokes(&ws_url, &rig.token, n)?;
    let path = if rig.metric("outpost_relay_pty_paths_total{path=\"dial\"}")? >= 1.0 {
        "the agent's own TLS connection (dial-back)"
    } else {
        "a stream on the agent's HTTP/2 tunnel (the dial-back failed)"
    };

    // 3. Each part on its own (xtask/src/termhops.rs).
    let api = outpost_api::Client::new(&rig.server.url, Some(rig.token.clone()));
    let mut ssh_into_ws: Vec<String> = vec!["ssh".into(), "-F".into()];
    ssh_into_ws.push(rig.ssh_config.display().to_string());
    ssh_into_ws.extend(SSH_OPTS.iter().map(|o| o.to_string()));
    ssh_into_ws.extend([
        "-i".into(),
        rig.key.display().to_string(),
        "-p".into(),
        rig.agent_port.to_string(),
        "dev@127.0.0.1".into(),
    ]);
    let hops = rig
        .rt
        .block_on(crate::termhops::measure(&api, "dev", &ssh_into_ws, n))?;
    let (mut pty, mut tcp, mut relay) = (hops.pty_ms, hops.tcp_ms, hops.relay_ms);
    let (p50, t50, r50) = (pct(&mut pty, 0.5), pct(&mut tcp, 0.5), pct(&mut relay, 0.5));

    let (mut s, mut w) = (ssh_ms, web_ms);
    let (s50, s99, w50, w99) = (
        pct(&mut s, 0.5),
        pct(&mut s, 0.99),
        pct(&mut w, 0.5),
        pct(&mut w, 0.99),
    );
    eprintln!("ssh -tt to sshd: p50 {s50:.3} ms, p99 {s99:.3} ms");
    eprintln!("web terminal: p50 {w50:.3} ms, p99 {w99:.3} ms");
    eprintln!("pty+cat {p50:.3} ms, tcp echo {t50:.3} ms, relay to the echo {r50:.3} ms (p50)");
    let title = format!(
        "bench terminal, {}\n\nMachine: {}. {n} keystrokes after 50 warm-up ones, one at a time: one byte to `cat` (tty in raw mode, no echo), the clock stops when cat's copy arrives. Web terminal: a blocking WebSocket client with an API token (as the ssh side's blocking pipe reads) -> control -> {path} -> the agent's reconnecting PTY. Anchor: OpenSSH's `ssh -tt` to Debian's sshd on 127.0.0.1, same run. The parts, timed alone in the same run (p50s): a PTY with `cat` written and read by the bench (what both paths share); one loopback TCP round trip to an echo server; the same echo through control's TCP relay (client -> control -> the agent's mTLS HTTP/2 tunnel -> agent -> echo: the web terminal's path without the WebSocket and the PTY). The split rows subtract them: each keystroke path without the PTY's own time, side by side; and the relay over a direct round trip to the same echo, which is control's hop and the tunnel.",
        crate::bench::date(),
        machine()
    );
    let sshd = "ssh -tt to sshd (same run)";
    let us = |ms: f64| ms * 1000.0;
    let rows = vec![
        ("keystroke p50, ssh -tt to sshd", us(s50), "µs", "-", None),
        ("keystroke p99, ssh -tt to sshd", us(s99), "µs", "-", None),
        (
            "keystroke p50, web terminal",
            us(w50),
            "µs",
            sshd,
            Some(us(s50)),
        ),
        (
            "keystroke p99, web terminal",
            us(w99),
            "µs",
            sshd,
            Some(us(s99)),
        ),
        ("round trip p50, PTY + cat alone", us(p50), "µs", "-", None),
        ("round trip p50, loopback TCP echo", us(t50), "µs", "-", None),
        (
            "round trip p50, the TCP relay to that echo (control + tunnel + agent)",
            us(r50),
            "µs",
            "loopback TCP echo (same run)",
            Some(us(t50)),
        ),
        (
            "split: sshd's path (ssh -tt minus PTY + cat: the ssh client, sshd)",
            us(s50 - p50),
            "µs",
            "-",
            None,
        ),
        (
            "split: the web terminal's path (web terminal minus PTY + cat: WebSocket, control, agent)",
            us(w50 - p50),
            "µs",
            "sshd's path (same run)",
            Some(us(s50 - p50)),
        ),
        (
            "split: control's hop and the tunnel (the TCP relay minus a direct round trip to the same echo)",
            us(r50 - t50),
            "µs",
            "-",
            None,
        ),
        (
            "keystroke p50, web terminal vs the 2 ms bar",
            us(w50),
            "µs",
            "bar: 2 ms (issue 6)",
            Some(2000.0),
        ),
    ];
    write_results("terminal", &title, &rows)
}

/// The OpenSSH client options of every connection the bench makes (no agent, no prompts, no
/// host key kept).
const SSH_OPTS: &[&str] = &[
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
];

/// `n` one-byte round trips (after 50 warm-up ones) through a blocking writer and reader: a
/// byte is written, the clock stops when it comes back. Returns each in ms.
pub(crate) fn keystrokes(
    wr: &mut impl Write,
    rd: &mut impl Read,
    n: usize,
    what: &str,
) -> anyhow::Result<Vec<f64>> {
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
                bail!("{what} closed");
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

/// The web terminal's keystrokes, from a blocking WebSocket client on this thread (as the
/// ssh side reads its pipe: no runtime and no thread between the socket and the clock). Its
/// reads are 8 KiB: tungstenite zero-fills its whole read buffer (128 KiB by default) before
/// each read, which a browser's WebSocket does not.
fn web_keystrokes(url: &str, token: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let authority = url
        .split_once("://")
        .and_then(|(_, r)| r.split('/').next())
        .context("the WebSocket URL")?;
    let tcp = std::net::TcpStream::connect(authority)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tungstenite::client::client_with_config(req, tcp, Some(config))
        .map_err(|e| anyhow::anyhow!("the terminal WebSocket: {e}"))?;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("READY") {
        match ws.read()? {
            Message::Binary(b) => seen.extend_from_slice(&b),
            Message::Close(_) => bail!("the terminal did not start"),
            _ => {}
        }
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..(n + 50) {
        let b = b'a' + (i % 26) as u8;
        let t = Instant::now();
        ws.send(Message::Binary(vec![0u8, b].into()))?;
        loop {
            match ws.read()? {
                Message::Binary(m) if m.contains(&b) => break,
                Message::Close(_) => bail!("the terminal closed"),
                _ => {}
            }
        }
        if i >= 50 {
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = ws.close(None);
    Ok(v)
}

pub(crate) fn wait_for(r: &mut impl Read, needle: &[u8]) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.windows(needle.len()).any(|w| w == needle) {
        if Instant::now() > deadline {
            bail!("no {:?} from ssh", String::from_utf8_lossy(needle));
        }
        let k = r.read(&mut buf)?;
        if k == 0 {
            bail!("ssh closed: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..k]);
    }
    Ok(())
}
