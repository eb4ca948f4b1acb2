//! Relayed SSH and web terminals by dial-back (issue 17's relay speed, issue 19's keystrokes):
//! control asks the agent, inside its mTLS tunnel, to dial a connection of its own to the agent
//! listener with a one-time token (plain TCP that control splices for SSH; TLS with the
//! agent's certificate for a terminal). Shown here: both go that way (metrics), every byte
//! arrives both ways, a shell inside another workspace cannot get onto the agent listener with
//! forged, guessed or malformed preambles or TLS dial-backs nor disturb an open session, and
//! where the agent cannot reach the replica that asked, both still work through the tunnel.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;
use crate::metrics::{scrape, value};

const T: Duration = Duration::from_secs(60);
const PATHS: &str = "outpost_relay_ssh_paths_total";
const PTY_PATHS: &str = "outpost_relay_pty_paths_total";

pub(crate) fn connected(w: &serde_json::Value) -> bool {
    w["status"] == "running" && w["agent"]["status"] == "connected"
}

fn paths(port: u16) -> R<(f64, f64)> {
    let m = scrape(port)?;
    Ok((
        value(&m, PATHS, &[("path", "dial")]).unwrap_or(0.0),
        value(&m, PATHS, &[("path", "tunnel")]).unwrap_or(0.0),
    ))
}

/// Web terminals by (dial, tunnel).
fn pty_paths(port: u16) -> R<(f64, f64)> {
    let m = scrape(port)?;
    Ok((
        value(&m, PTY_PATHS, &[("path", "dial")]).unwrap_or(0.0),
        value(&m, PTY_PATHS, &[("path", "tunnel")]).unwrap_or(0.0),
    ))
}

/// A client's saved API token.
pub(crate) fn token_of(c: &Client) -> R<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.config_dir.join("session.json"))?)?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

/// `cat` in the workspace: `data` up, and back down, through one SSH connection (`ssh` is
/// `Client::ssh_command(WS, "cat")`, perhaps aimed at another replica).
fn echo_through(mut ssh: std::process::Command, ws: &str, data: &[u8]) -> R<Vec<u8>> {
    let mut child = ssh
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let send = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&send);
    });
    let mut back = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut back)?;
    let _ = writer.join();
    let st = child.wait()?;
    anyhow::ensure!(st.success(), "ssh {ws} cat: {st}");
    Ok(back)
}

/// A server with metrics on `mport` (and `extra` flags), the admin's workspace `a` and Bob's
/// `b`, both connected.
pub(crate) fn two_workspaces(backend: Backend, extra: &[&str]) -> R<(Server, u16, Client, Client)> {
    let mport = free_port()?;
    let metrics = format!("127.0.0.1:{mport}");
    let mut flags = vec!["--metrics-listen", metrics.as_str()];
    flags.extend_from_slice(extra);
    let s = Server::start_with(backend, &flags)?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    admin.ok(&["create", "a"])?;
    bob.ok(&["create", "b"])?;
    s.wait_for("a", T, connected)?;
    eventually(|| Ok(connected(&bob.json(&["show", "b"])?).then_some(())))?;
    Ok((s, mport, admin, bob))
}

/// On an open terminal: 290 kB of output, then a paste far bigger than the PTY's input queue,
/// in one message, arriving whole (the agent writes while there is room and waits for the
/// program to read the rest).
pub(crate) fn bulk_both_ways(t: &mut std::net::TcpStream) -> R {
    use crate::replica_rig::{send_input, type_and_wait, wait_for};
    type_and_wait(t, "seq 1 50000 | sed s/^/n/", "n50000\r\n")?;
    type_and_wait(
        t,
        "stty -icanon -echo; echo rea''dy; head -c 300000 | wc -c",
        "ready",
    )?;
    send_input(t, &vec![b'x'; 300_000])?;
    wait_for(t, "300000")?;
    type_and_wait(t, "stty sane; echo sa''ne", "sane")
}

/// Probes of the agent listener from inside a workspace: each prints how many bytes control
/// answered (an acknowledged dial-back would answer one).
const PROBES: &str = r#"
import os, socket, sys
port = int(sys.argv[1])
def probe(payload, close_write=True):
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        c.sendall(payload)
        if close_write:
            c.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # control closed it first
    got = b""
    while True:
        try:
            b = c.recv(4096)
        except OSError:
            break
        if not b:
            break
        got += b
    c.close()
    return len(got)
magic = b"OUTPOST-DIAL/1 "
answers = []
# Guessed tokens, well formed: 200 of them.
for _ in range(200):
    answers.append(probe(magic + os.urandom(32).hex().encode() + b"\n", close_write=False))
# Malformed: upper case, short, no newline, a flood of the first byte.
answers.append(probe(magic + os.urandom(32).hex().upper().encode() + b"\n"))
answers.append(probe(magic + b"abc\n"))
answers.append(probe(magic + os.urandom(32).hex().encode() + b"X"))
answers.append(probe(b"O" * 100000))
# A preamble followed by an SSH client's greeting, as if the token were right.
answers.append(probe(magic + os.urandom(32).hex().encode() + b"\nSSH-2.0-OpenSSH_9.2\r\n", close_write=False))
print("answered", sum(answers), "of", len(answers))
"#;

fn ssh_by_dial_back_attacked_from_inside(backend: Backend) -> R {
    let (s, mport, admin, bob) = two_workspaces(backend, &[])?;

    // SSH goes by dial-back; 3 MB of random bytes up and back, unchanged.
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let back = echo_through(bob.ssh_command("b", "cat"), "b", &data)?;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "every byte arrives unchanged, both ways");
    assert_eq!(bob.sh("b", "echo hello")?, "hello\n");
    let (dial, tunnel) = paths(mport)?;
    assert!(dial >= 2.0, "SSH went by dial-back: {dial}");
    assert_eq!(tunnel, 0.0, "and never through the tunnel");

    // Bob keeps a session open while a shell in the admin's workspace attacks the listener.
    let mut held = bob
        .ssh_command("b", "echo open; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = held.stdout.take().expect("stdout");
    let mut first = [0u8; 5];
    out.read_exact(&mut first)?;
    assert_eq!(&first, b"open\n");

    let port = s
        .agent_listen
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("agent listener port");
    // In the workspace's own home (/tmp is shared with the other tests' workspaces).
    admin.sh("a", &format!("cat > ~/probes.py <<'EOF'\n{PROBES}\nEOF"))?;
    let answer = admin.sh("a", &format!("python3 ~/probes.py {port}"))?;
    assert_eq!(
        answer.trim(),
        "answered 0 of 205",
        "control answers no forged dial-back"
    );

    // Nothing was disturbed: Bob's session is still open, new sessions work on both sides,
    // the agents and control are fine, and no dial went astray into the tunnel.
    assert!(held.try_wait()?.is_none(), "bob's open session survived");
    assert_eq!(bob.sh("b", "echo again")?, "again\n");
    assert_eq!(admin.sh("a", "echo mine")?, "mine\n");
    assert!(connected(&bob.json(&["show", "b"])?));
    let (dial2, tunnel2) = paths(mport)?;
    assert!(dial2 >= dial + 3.0, "{dial} -> {dial2}");
    assert_eq!(tunnel2, 0.0);
    assert!(
        s.log()
            .contains("a dial-back with an unknown or used token"),
        "control noticed"
    );
    let _ = held.kill();
    let _ = held.wait();
    Ok(())
}
both_backends!(ssh_by_dial_back_attacked_from_inside);

/// TLS dial-backs from inside a workspace with guessed tokens: each prints how many bytes
/// control answered and whether a handshake finished (a delivered dial-back would finish one).
const TLS_PROBES: &str = r#"
import os, socket, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
magic = b"OUTPOST-DIAL/1 "
done = 0
for _ in range(100):
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(magic + os.urandom(32).hex().encode() + b"\n")
    try:
        t = ctx.wrap_socket(c, server_hostname="localhost")
        done += 1
        t.close()
    except (ssl.SSLError, OSError):
        c.close()
print("handshakes", done, "of 100")
"#;

fn terminal_by_dial_back_attacked_from_inside(backend: Backend) -> R {
    use crate::replica_rig::{terminal_to, type_and_wait};
    // Not handed off (handoff.rs shows that): the agent's TLS connection to control.
    let (s, mport, admin, bob) = two_workspaces(backend, &["--no-terminal-handoff"])?;
    let token = token_of(&bob)?;

    // Bob's terminal goes by dial-back: a command, then 290 kB of output, whole.
    let mut t = terminal_to(&s.url, &token, "b", "t1")?;
    type_and_wait(&mut t, "export KEPT=dial-$((6*7))", "export KEPT")?;
    bulk_both_ways(&mut t)?;
    assert_eq!(
        pty_paths(mport)?,
        (1.0, 0.0),
        "by dial-back, not the tunnel"
    );
    // The session outlives its connection; a second attach is a second dial-back.
    drop(t);
    let mut t = terminal_to(&s.url, &token, "b", "t1")?;
    type_and_wait(&mut t, "echo $KEPT", "dial-42")?;
    assert_eq!(pty_paths(mport)?, (2.0, 0.0));

    // A shell in the admin's workspace tries TLS dial-backs with guessed tokens.
    let port = s
        .agent_listen
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("agent listener port");
    admin.sh(
        "a",
        &format!("cat > ~/tls_probes.py <<'EOF'\n{TLS_PROBES}\nEOF"),
    )?;
    let answer = admin.sh("a", &format!("python3 ~/tls_probes.py {port}"))?;
    assert_eq!(answer.trim(), "handshakes 0 of 100", "no guessed dial-back");

    // Bob's open terminal did not notice; the admin's own terminal works too.
    type_and_wait(&mut t, "echo still-$((1+2))", "still-3")?;
    let mut mine = terminal_to(&s.url, &s.token()?, "a", "m1")?;
    type_and_wait(&mut mine, "echo mine-$((2+2))", "mine-4")?;
    assert_eq!(pty_paths(mport)?, (3.0, 0.0));
    assert!(
        s.log()
            .contains("a dial-back with an unknown or used token"),
        "control noticed"
    );
    Ok(())
}
both_backends!(terminal_by_dial_back_attacked_from_inside);

/// Replicas: a client on replica B, the agent's tunnel on A. B's own address reached by the
/// agent: dial-back to B. C names an address the agent cannot reach (`--replica-url`) and the
/// agent's URL leads to A, which does not know C's token: SSH through C uses the tunnel.
#[test]
fn dial_back_across_replicas_and_falling_back_to_the_tunnel() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let a = Server::start(pg.clone())?;
    let (mb, mc) = (free_port()?, free_port()?);
    let mb_addr = format!("127.0.0.1:{mb}");
    let mc_addr = format!("127.0.0.1:{mc}");
    let b = crate::replica_rig::replica_of(
        &a,
        pg.clone(),
        &["--provisioner-daemons", "0", "--metrics-listen", &mb_addr],
    )?;
    let c = crate::replica_rig::replica_of(
        &a,
        pg,
        &[
            "--provisioner-daemons",
            "0",
            "--metrics-listen",
            &mc_addr,
            "--replica-url",
            "https://127.0.0.1:1",
        ],
    )?;
    let admin = Client::admin(&a)?;
    a.ok(&["create", "dev"])?;
    a.wait_for("dev", T, connected)?;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    for (replica, port, path) in [(&b, mb, "dial"), (&c, mc, "tunnel")] {
        let mut cmd = admin.ssh_command("dev", "cat");
        cmd.env("OUTPOST_URL", &replica.url);
        let back = echo_through(cmd, "dev", &data)?;
        assert!(back == data, "every byte through {}", replica.url);
        let (dial, tunnel) = paths(port)?;
        let (want, other) = if path == "dial" {
            (dial, tunnel)
        } else {
            (tunnel, dial)
        };
        assert_eq!((want, other), (1.0, 0.0), "through {}: {path}", replica.url);
    }
    assert!(c.log().contains("SSH dial-back failed; using the tunnel"));
    // A web terminal the same way: by dial-back through B, through the tunnel through C.
    let token = a.token()?;
    for (replica, port, want) in [(&b, mb, (1.0, 0.0)), (&c, mc, (0.0, 1.0))] {
        let mut t = crate::replica_rig::terminal(&replica.url, &token, "across")?;
        crate::replica_rig::type_and_wait(&mut t, "echo across-$((3*3))", "across-9")?;
        assert_eq!(pty_paths(port)?, want, "a terminal through {}", replica.url);
    }
    assert!(c
        .log()
        .contains("terminal dial-back failed; using the tunnel"));
    Ok(())
}
