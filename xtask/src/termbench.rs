//! `cargo xtask bench terminal`: keystroke round trips through the web terminal (a WebSocket to
//! control, the relay, the agent's reconnecting PTY running `cat` in raw mode), beside the same
//! over `ssh -tt` to Debian's sshd, in one command. One byte is sent, and the clock stops when
//! `cat` has sent it back.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{machine, pct, write_results};
use crate::sshbench::{setup, BENCH_USER};
use crate::termhops::{tcp_echo, timed, Keyboard, PipeCat, Pipes, PtyCat};

/// `stty raw -echo` first: every byte goes straight to `cat` and only `cat` answers.
pub(crate) const CAT: &str = "stty raw -echo; echo READY; exec cat";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut n = 5000usize;
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
    let bin = crate::root().join("target/release");
    if cfg!(debug_assertions) {
        // The keystroke clients run in this process, and a debug build's WebSocket client
        // would add its own unoptimized framing to every web keystroke (a browser's is
        // optimized): the release build of this same bench runs them.
        let st = Command::new(bin.join("xtask"))
            .args(["bench", "terminal", "--keystrokes", &n.to_string()])
            .status()
            .context("running the release build of the bench")?;
        if !st.success() {
            bail!("bench terminal failed");
        }
        return Ok(());
    }
    run(&bin, n)
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
    let stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    wait_for(&mut stdout, b"READY")?;
    let ssh = Pipes::new(stdin, stdout, "ssh");

    // 2. The web terminal: a WebSocket through control and the relay.
    let ws_url = format!(
        "{}/api/v1/workspaces/dev/pty?session=bench&cols=80&rows=24&command={}",
        rig.server.url.replacen("http", "ws", 1),
        outpost_api::percent_encode(CAT)
    );
    let web = WebTerm::connect(&ws_url, &rig.token)?;
    // Which way control sent it, and so how many TCP hops a keystroke crosses beyond the PTY.
    let (path, tcp_hops) = if rig.metric("outpost_relay_pty_paths_total{path=\"handoff\"}")? >= 1.0
    {
        (
            "the agent, which control handed the WebSocket's connection itself (hand-off: bench -> agent)",
            1.0,
        )
    } else if rig.metric("outpost_relay_pty_paths_total{path=\"dial\"}")? >= 1.0 {
        ("control -> the agent's own TLS connection (dial-back)", 2.0)
    } else {
        (
            "control -> a stream on the agent's HTTP/2 tunnel (the dial-back failed)",
            2.0,
        )
    };
    let hops = if tcp_hops == 1.0 {
        "one TCP round trip"
    } else {
        "two TCP round trips"
    };

    // 3. The hops, each on its own (termhops.rs): a PTY with `cat`, a pipe to `cat`, a loopback
    // TCP echo.
    let mut parts: Vec<Box<dyn Keyboard>> = vec![
        Box::new(ssh),
        Box::new(web),
        Box::new(PtyCat::start()?),
        Box::new(PipeCat::start()?),
        Box::new(tcp_echo()?),
    ];
    const SSH: usize = 0;
    const WEB: usize = 1;
    const PTY: usize = 2;
    const PIPE: usize = 3;
    const TCP: usize = 4;

    // Everything stays open and takes turns, round by round (each part first in turn), so that
    // what the machine is doing at one moment (which vCPU each process landed on, the other
    // VM's load) falls on every part alike: a block of 1,000 keystrokes is a tenth of a second.
    for p in parts.iter_mut() {
        timed(p.as_mut(), WARM_UP, 0)?;
    }
    let per = n.div_ceil(ROUNDS);
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); parts.len()];
    let mut rounds = Vec::new();
    for r in 0..ROUNDS {
        let mut p50 = vec![0.0; parts.len()];
        for j in 0..parts.len() {
            let i = (j + r) % parts.len();
            let mut v = timed(parts[i].as_mut(), per, WARM_UP)?;
            p50[i] = pct(&mut v, 0.5);
            all[i].extend(v);
        }
        rounds.push((p50[WEB], p50[SSH]));
    }
    drop(parts);
    let _ = child.kill();
    let _ = child.wait();
    // (web p50, ssh p50) of each round, by their ratio.
    rounds.sort_by(|x, y| (x.0 / x.1).total_cmp(&(y.0 / y.1)));
    let ratios: Vec<f64> = rounds.iter().map(|(w, s)| w / s).collect();
    eprintln!("web/ssh p50 by round, sorted: {ratios:.3?}");
    let (median_round, worst_round) = (rounds[rounds.len() / 2], rounds[rounds.len() - 1]);

    // 4. The TCP relay to an echo in the workspace, against the same echo reached directly.
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
    let relay = rig
        .rt
        .block_on(crate::termhops::relay(&api, "dev", &ssh_into_ws, n))?;
    let (mut echo, mut relayed) = (relay.direct_ms, relay.relay_ms);
    let (e50, r50) = (pct(&mut echo, 0.5), pct(&mut relayed, 0.5));

    let p50 = |i: usize, all: &mut Vec<Vec<f64>>| pct(&mut all[i], 0.5);
    let (s50, w50) = (p50(SSH, &mut all), p50(WEB, &mut all));
    let (s99, w99) = (pct(&mut all[SSH], 0.99), pct(&mut all[WEB], 0.99));
    let (pty50, pipe50, tcp50) = (p50(PTY, &mut all), p50(PIPE, &mut all), p50(TCP, &mut all));
    eprintln!("ssh -tt to sshd: p50 {s50:.3} ms, p99 {s99:.3} ms");
    eprintln!("web terminal: p50 {w50:.3} ms, p99 {w99:.3} ms");
    eprintln!("pty+cat {pty50:.3} ms, pipe to cat {pipe50:.3} ms, tcp echo {tcp50:.3} ms (p50)");
    let title = format!(
        "bench terminal, {}\n\nMachine: {}. {n} keystrokes on each path after {WARM_UP} warm-up ones, one at a time, from a release build of the bench: one byte to `cat` (tty in raw mode, no echo), the clock stops when cat's copy arrives. Web terminal: a blocking WebSocket client with an API token (as the ssh side's blocking pipe reads) -> {path} -> the agent's reconnecting PTY. Anchor: OpenSSH's `ssh -tt` to Debian's sshd on 127.0.0.1, its stdin and stdout pipes to the bench, same run. The hops, timed in the same rounds: a PTY with `cat` written and read by the bench (what both paths share); a pipe to `cat`; a loopback TCP connection to an echo thread. Every part stays open and they take turns in {ROUNDS} rounds of {per} (each first in turn); p50s are over all rounds, the round rows give one round's own p50s. A keystroke crosses the PTY on both paths, then a pipe and a TCP hop on sshd's (bench -> ssh -> sshd), {hops} on the web terminal's: the split rows take those out, leaving what the programs themselves add. Last, an echo server in the workspace reached directly and through control's TCP relay (control -> the agent's mTLS HTTP/2 tunnel -> agent).",
        crate::bench::date(),
        machine()
    );
    let sshd = "ssh -tt to sshd (same run)";
    let hops_row = format!("split: the hops of the web terminal's path beyond the PTY ({hops})");
    let adds_row =
        format!("split: what control and the agent add (web terminal minus the PTY and {hops})");
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
        (
            "keystroke p50, web terminal, the median round",
            us(median_round.0),
            "µs",
            "ssh -tt to sshd (same round)",
            Some(us(median_round.1)),
        ),
        (
            "keystroke p50, web terminal, the worst round",
            us(worst_round.0),
            "µs",
            "ssh -tt to sshd (same round)",
            Some(us(worst_round.1)),
        ),
        ("round trip p50, PTY + cat alone", us(pty50), "µs", "-", None),
        ("round trip p50, a pipe to cat", us(pipe50), "µs", "-", None),
        (
            "round trip p50, loopback TCP to an echo thread",
            us(tcp50),
            "µs",
            "-",
            None,
        ),
        (
            "split: the hops of sshd's path beyond the PTY (a pipe and a TCP round trip)",
            us(pipe50 + tcp50),
            "µs",
            "-",
            None,
        ),
        (
            &hops_row,
            us(tcp_hops * tcp50),
            "µs",
            "sshd's hops (same run)",
            Some(us(pipe50 + tcp50)),
        ),
        (
            "split: what the ssh client and sshd add (ssh -tt minus the PTY, the pipe and the TCP round trips)",
            us(s50 - pty50 - pipe50 - tcp50),
            "µs",
            "-",
            None,
        ),
        (
            &adds_row,
            us(w50 - pty50 - tcp_hops * tcp50),
            "µs",
            "what the ssh client and sshd add (same run)",
            Some(us(s50 - pty50 - pipe50 - tcp50)),
        ),
        (
            "round trip p50, an echo in the workspace (Python), direct",
            us(e50),
            "µs",
            "-",
            None,
        ),
        (
            "round trip p50, the same echo through control's TCP relay",
            us(r50),
            "µs",
            "the echo direct (same run)",
            Some(us(e50)),
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

/// How many keystrokes each part gets before the clock runs, and in how many rounds the timed
/// ones are taken.
const WARM_UP: usize = 50;
const ROUNDS: usize = 10;

/// The web terminal from a blocking WebSocket client on this thread (as the ssh side reads
/// its pipe: no runtime and no thread between the socket and the clock). Its reads are 8 KiB:
/// tungstenite zero-fills its whole read buffer (128 KiB by default) before each read, which a
/// browser's WebSocket does not.
struct WebTerm {
    ws: tokio_tungstenite::tungstenite::WebSocket<std::net::TcpStream>,
}

impl WebTerm {
    /// Connects with an API token and waits for the terminal's `READY`.
    fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
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
        Ok(WebTerm { ws })
    }
}

impl Drop for WebTerm {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
    }
}

impl Keyboard for WebTerm {
    fn key(&mut self, b: u8) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(vec![0u8, b].into()))?;
        loop {
            match self.ws.read()? {
                Message::Binary(m) if m.contains(&b) => return Ok(()),
                Message::Close(_) => bail!("the terminal closed"),
                _ => {}
            }
        }
    }
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
