//! Relayed SSH by dial-back (issue 17's relay speed): control asks the agent, inside its mTLS
//! tunnel, to dial a plain TCP connection to the agent listener with a one-time token, and
//! splices the client's connection to it. Shown here: SSH goes that way (metrics), every byte
//! arrives both ways, a shell inside another workspace cannot get onto the agent listener with
//! forged, guessed or malformed preambles nor disturb an open session, and where the agent
//! cannot reach the replica that asked, SSH still works through the tunnel.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;
use crate::metrics::{scrape, value};

const T: Duration = Duration::from_secs(60);
const PATHS: &str = "outpost_relay_ssh_paths_total";

fn connected(w: &serde_json::Value) -> bool {
    w["status"] == "running" && w["agent"]["status"] == "connected"
}

fn paths(port: u16) -> R<(f64, f64)> {
    let m = scrape(port)?;
    Ok((
        value(&m, PATHS, &[("path", "dial")]).unwrap_or(0.0),
        value(&m, PATHS, &[("path", "tunnel")]).unwrap_or(0.0),
    ))
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
    let mport = free_port()?;
    let s = Server::start_with(
        backend,
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
    )?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    admin.ok(&["create", "a"])?;
    bob.ok(&["create", "b"])?;
    s.wait_for("a", T, connected)?;
    eventually(|| Ok(connected(&bob.json(&["show", "b"])?).then_some(())))?;

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
    Ok(())
}
