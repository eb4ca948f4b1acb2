//! Web terminals by hand-off (issue 19's keystrokes): for a local workspace and a browser on
//! plain HTTP, control passes the upgraded connection itself to the agent over its Unix socket
//! (`WORKSPACES/.handoff/api-PORT.sock`), so keystrokes skip control. Shown here: terminals go
//! that way (metrics), every byte arrives both ways (a paste bigger than the PTY's queue, 290
//! kB of output, what the browser sent in the same packet as its upgrade request), sessions
//! outlive their connections; a shell in another user's workspace cannot list or replace the
//! socket, and gets neither a byte nor a descriptor from it with guessed, malformed or flooding
//! preambles, while the open sessions go on; a suspension cuts a handed-off terminal at once,
//! and so does control's death (kill -9), after which the session comes back whole.

use std::io::Write;
use std::time::Duration;

use crate::abuse::closed_within;
use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;
use crate::metrics::{scrape, value};
use crate::relay_dial::{bulk_both_ways, connected, token_of, two_workspaces};
use crate::replica_rig::{terminal_to, type_and_wait, wait_for};

const T: Duration = Duration::from_secs(60);
const PTY_PATHS: &str = "outpost_relay_pty_paths_total";

/// Web terminals by (handoff, dial, tunnel).
fn pty_paths(port: u16) -> R<(f64, f64, f64)> {
    let m = scrape(port)?;
    let v = |p| value(&m, PTY_PATHS, &[("path", p)]).unwrap_or(0.0);
    Ok((v("handoff"), v("dial"), v("tunnel")))
}

/// Probes of the hand-off socket from inside a workspace: what a listing and a file made beside
/// it did, then how many bytes and descriptors control answered in all (a hand-off answers
/// five bytes and one descriptor).
const PROBES: &str = r#"
import os, socket, sys
path = sys.argv[1]
d = os.path.dirname(path)
try:
    os.listdir(d)
    print("listed")
except PermissionError:
    print("list denied")
try:
    open(os.path.join(d, "evil.sock"), "w").close()
    print("created")
except PermissionError:
    print("create denied")
def probe(payload, close_write=True):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect(path)
    try:
        c.sendall(payload)
        if close_write:
            c.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # control closed it first
    got, fds = 0, 0
    while True:
        try:
            data, anc, _, _ = c.recvmsg(4096, socket.CMSG_SPACE(16))
        except OSError:
            break
        for level, kind, body in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += len(body) // 4
        if not data:
            break
        got += len(data)
    c.close()
    return got, fds
magic = b"OUTPOST-DIAL/1 "
answers = []
for _ in range(200):
    answers.append(probe(magic + os.urandom(32).hex().encode() + b"\n", close_write=False))
answers.append(probe(magic + os.urandom(32).hex().upper().encode() + b"\n"))
answers.append(probe(magic + b"abc\n"))
answers.append(probe(b"O" * 100000))
answers.append(probe(b"GET / HTTP/1.1\r\n\r\n"))
# Many at once that never send their preamble: control caps them and closes the rest.
idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(150)]
for c in idle:
    c.connect(path)
print("answered", sum(a[0] for a in answers), "bytes", sum(a[1] for a in answers), "fds of", len(answers))
for c in idle:
    c.close()
"#;

fn terminal_handoff_attacked_from_inside(backend: Backend) -> R {
    let (s, mport, admin, bob) = two_workspaces(backend, &[])?;
    let token = token_of(&bob)?;

    // Bob's terminal is handed off: a command, 290 kB of output, a paste bigger than the PTY's
    // input queue, whole.
    let mut t = terminal_to(&s.url, &token, "b", "t1")?;
    type_and_wait(&mut t, "export KEPT=hand-$((6*7))", "export KEPT")?;
    bulk_both_ways(&mut t)?;
    assert_eq!(pty_paths(mport)?, (1.0, 0.0, 0.0), "handed off");
    // The session outlives its connection; a second attach is a second hand-off.
    drop(t);
    let mut t = terminal_to(&s.url, &token, "b", "t1")?;
    type_and_wait(&mut t, "echo $KEPT", "hand-42")?;
    assert_eq!(pty_paths(mport)?, (2.0, 0.0, 0.0));

    // A shell in the admin's workspace (another Unix user, when control is root) at the socket.
    let sock = s
        .workspaces()
        .join(".handoff")
        .read_dir()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .ok_or_else(|| anyhow::anyhow!("no hand-off socket"))?;
    admin.sh("a", &format!("cat > ~/probes.py <<'EOF'\n{PROBES}\nEOF"))?;
    let answer = admin.sh("a", &format!("python3 ~/probes.py {}", sock.display()))?;
    let lines: Vec<&str> = answer.lines().collect();
    if nix::unistd::Uid::effective().is_root() {
        assert_eq!(lines[..2], ["list denied", "create denied"], "{answer}");
    }
    assert_eq!(lines.last().copied(), Some("answered 0 bytes 0 fds of 204"));
    assert!(s
        .log()
        .contains("hand-off socket: an unknown or used token"));

    // Bob's open terminal did not notice; the admin's own terminal is handed off too.
    type_and_wait(&mut t, "echo still-$((1+2))", "still-3")?;
    let mut mine = terminal_to(&s.url, &s.token()?, "a", "m1")?;
    type_and_wait(&mut mine, "echo mine-$((2+2))", "mine-4")?;
    assert_eq!(pty_paths(mport)?, (3.0, 0.0, 0.0));
    Ok(())
}
both_backends!(terminal_handoff_attacked_from_inside);

/// What a client sends in the same packet as its upgrade request reaches the shell (control
/// read it already and passes it along); a suspension cuts a handed-off terminal at once.
fn terminal_handoff_leftover_and_cut(backend: Backend) -> R {
    let mport = free_port()?;
    let s = Server::start_with(
        backend,
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
    )?;
    let bob = Client::new_user(&s, "bob")?;
    bob.ok(&["create", "b"])?;
    eventually(|| Ok(connected(&bob.json(&["show", "b"])?).then_some(())))?;
    let token = token_of(&bob)?;
    // A session whose shell is up, so that input is not lost to a shell still starting.
    let mut t = terminal_to(&s.url, &token, "b", "early")?;
    type_and_wait(&mut t, "echo up-$((1+1))", "up-2")?;
    drop(t);

    let addr = s.url.trim_start_matches("http://").trim_end_matches('/');
    let mut c = std::net::TcpStream::connect(addr)?;
    let mut first = format!(
        "GET /api/v1/workspaces/b/pty?session=early HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    // A masked binary frame: input kind 0, then the command.
    let input = b"\x00echo left-$((20+3))\r";
    first.extend_from_slice(&[0x82, 0x80 | input.len() as u8, 1, 2, 3, 4]);
    first.extend(
        input
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
    );
    c.write_all(&first)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    wait_for(&mut c, "left-23")?;
    assert_eq!(pty_paths(mport)?, (2.0, 0.0, 0.0), "both handed off");

    assert!(!closed_within(&mut c, Duration::from_secs(1)), "still open");
    let suspended = s.json(&["users", "suspend", "bob"])?;
    assert_eq!(suspended["suspended"], true);
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "the handed-off terminal outlived the suspension"
    );
    assert!(s.log().contains("a handed-off terminal cut"));
    Ok(())
}
both_backends!(terminal_handoff_leftover_and_cut);

/// Control shut down, then killed: the handed-off connections end both times (control shuts
/// them down itself when it can; the agent ends them when control's end of the Unix connection
/// is gone), so no terminal outlives control's checks; the session itself lives on in the agent
/// and, control back, comes back whole.
#[test]
fn terminal_handoff_ends_with_control() -> R {
    let mport = free_port()?;
    let mut s = Server::start_with(
        Backend::Sqlite,
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
    )?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, connected)?;
    let token = s.token()?;
    // A graceful shutdown ends it (control shuts the connection down itself).
    let mut t = terminal_to(&s.url, &token, "dev", "k1")?;
    type_and_wait(&mut t, "export KEPT=kill-$((5*5))", "export KEPT")?;
    assert_eq!(pty_paths(mport)?.0, 1.0, "handed off");
    s.terminate(Duration::from_secs(30))?;
    assert!(
        closed_within(&mut t, Duration::from_secs(5)),
        "the terminal outlived control's shutdown"
    );
    s.start_again()?;
    let mut t = eventually(|| {
        let Ok(mut t) = terminal_to(&s.url, &token, "dev", "k1") else {
            return Ok(None);
        };
        Ok(type_and_wait(&mut t, "echo $KEPT", "kill-25")
            .ok()
            .map(|_| t))
    })?;
    type_and_wait(&mut t, "echo again-$((2*3))", "again-6")?;
    // Killed outright: the agent ends it when control's end of the Unix connection goes.
    s.kill();
    assert!(
        closed_within(&mut t, Duration::from_secs(5)),
        "the terminal outlived control"
    );
    s.restart()?;
    let token = s.token()?;
    eventually(|| {
        let Ok(mut t) = terminal_to(&s.url, &token, "dev", "k1") else {
            return Ok(None);
        };
        Ok(type_and_wait(&mut t, "echo $KEPT", "kill-25").ok())
    })?;
    Ok(())
}
