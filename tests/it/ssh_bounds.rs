//! What an SSH connection to an agent may make the agent hold for it once logged in: the
//! workspace's owner forwarding into a port that never reads gets a bounded queue per channel,
//! not the agent's memory. (What a connection may hold before login: `abuse.rs`.) And what the
//! agent's batching of a transfer in full flow (`agent/src/ssh/tcp.rs`) must not hold back: the
//! tail of a transfer, and what comes after it.

use std::io::Write;
use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

/// The workspace's owner forwards (`ssh -L`) into a port that accepts and never reads, on four
/// SSH connections at once, writing until nothing more is taken: what the agent holds for
/// them stays bounded (each channel's queue, 64 packets), instead of each connection parking
/// tens of MiB in the agent while the target does not read.
fn forwards_into_a_port_that_never_reads_are_bounded(backend: Backend) -> R {
    let s = Server::start_with(backend, &[])?;
    let owner = Direct::open(&s, "f")?;
    let (pid, ssh) = (owner.pid, || owner.ssh());

    // The target: accepts, holds every connection, reads nothing.
    let hole = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hole_port = hole.local_addr()?.port();
    std::thread::spawn(move || {
        let held: Vec<_> = hole.incoming().take(4).flatten().collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let before = rss_kib(pid);
    let mut forwards = Vec::new();
    let mut pushers = Vec::new();
    for _ in 0..4 {
        let lport = free_port()?;
        let fwd = ssh()
            .args(["-N", "-L"])
            .arg(format!("{lport}:127.0.0.1:{hole_port}"))
            .arg("dev@127.0.0.1")
            .spawn()?;
        forwards.push(fwd);
        pushers.push(std::thread::spawn(move || -> R<u64> {
            let mut c = eventually(|| Ok(std::net::TcpStream::connect(("127.0.0.1", lport)).ok()))?;
            c.set_write_timeout(Some(Duration::from_secs(3)))?;
            let chunk = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            // Until a write waits 3 s (nothing taken any more), at most 512 MiB.
            while sent < 512 << 20 {
                match c.write(&chunk) {
                    Ok(n) => sent += n as u64,
                    Err(_) => break,
                }
            }
            Ok(sent)
        }));
    }
    let mut sent = Vec::new();
    for p in pushers {
        sent.push(p.join().map_err(|_| anyhow::anyhow!("pusher panicked"))??);
    }
    let after = rss_kib(pid);
    for mut f in forwards {
        let _ = f.kill();
        let _ = f.wait();
    }
    // Each connection's bytes fill the kernel's socket buffers on the way, then the agent's
    // channel queue; with a queue of 1,024 packets each connection parked 32 MiB in the agent.
    assert!(
        sent.iter().all(|n| (4 << 20..512 << 20).contains(n)),
        "every forward took some data and then stopped taking it: {sent:?}"
    );
    assert!(
        after < before + 48 * 1024,
        "the agent grew from {before} to {after} KiB holding {sent:?} bytes for a target that reads nothing"
    );
    // The agent still serves.
    let o = ssh().args(["dev@127.0.0.1", "echo alive"]).output()?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alive\n");
    Ok(())
}
both_backends!(forwards_into_a_port_that_never_reads_are_bounded);

/// The workspace's owner, on the agent's direct SSH listener with OpenSSH.
struct Direct {
    key: std::path::PathBuf,
    port: String,
    pid: u32,
    /// The CLI's config, for `ssh` through control's relay.
    cli: std::path::PathBuf,
}

impl Direct {
    /// Creates workspace `name` with a direct listener and gives its owner a key for it.
    fn open(s: &Server, name: &str) -> R<Direct> {
        let key = s.dir.path().join(format!("id_{name}"));
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()?;
        anyhow::ensure!(st.success());
        s.ok(&["keys", "add", &format!("{}.pub", key.display())])?;
        push_local_template(s, name, "[agent]\nssh_listen = \"127.0.0.1:0\"\n")?;
        s.ok(&["create", name, "-t", name])?;
        let (w, _) = s.wait_for(name, T, |w| w["agent"]["ssh_addr"].is_string())?;
        let port = w["agent"]["ssh_addr"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .unwrap_or("0")
            .to_string();
        let pid = crate::procs::agent_pid(&w).expect("agent pid") as u32;
        Ok(Direct {
            key,
            port,
            pid,
            cli: s.config_dir(),
        })
    }

    /// `ssh` to the direct listener as the owner (no host key to check against); the
    /// destination is `dev@127.0.0.1`.
    fn ssh(&self) -> std::process::Command {
        let mut c = self.ssh_options();
        c.args(["-p", &self.port]);
        c
    }

    /// `ssh` through control's relay (`outpost ssh --stdio` as the ProxyCommand; control
    /// splices the connection into the agent's dial-back); the destination is the workspace.
    fn relay_ssh(&self) -> std::process::Command {
        let mut c = self.ssh_options();
        c.arg("-o")
            .arg(format!(
                "ProxyCommand={} ssh --stdio %h",
                bin("outpost").display()
            ))
            .env("OUTPOST_CONFIG_DIR", &self.cli);
        c
    }

    fn ssh_options(&self) -> std::process::Command {
        let mut c = std::process::Command::new("ssh");
        c.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&self.key);
        c
    }
}

/// Through an `-L` forward, messages of a few MiB (a transfer in full flow: the agent raises its
/// socket's low-water mark) alternate with messages of a few bytes, each answered before the
/// next is sent, so the client has nothing more to send while a tail smaller than the mark waits
/// in the agent's socket. Every answer must come, and promptly: a tail left until more data
/// arrives would stall here for good (checked: without the agent's pause this test times out).
/// Uploads of sizes around the agent's marks through `wc -c` must count every byte.
fn a_transfers_tail_and_what_follows_it_are_not_held_back(backend: Backend) -> R {
    let s = Server::start_with(backend, &[])?;
    let owner = Direct::open(&s, "t")?;

    let mut through_relay = owner.relay_ssh();
    through_relay.arg("t");
    let mut direct = owner.ssh();
    direct.arg("dev@127.0.0.1");
    for (path, ssh) in [("direct", direct), ("relay", through_relay)] {
        exchange_through_a_forward(ssh).map_err(|e| anyhow::anyhow!("{path}: {e:#}"))?;
    }

    for size in [(1usize << 20) + 1, (256 << 10) - 1, 5 << 20] {
        let mut up = owner
            .ssh()
            .args(["dev@127.0.0.1", "wc -c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut stdin = up.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&vec![7u8; size]));
        let o = up.wait_with_output()?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), size.to_string());
    }
    Ok(())
}
both_backends!(a_transfers_tail_and_what_follows_it_are_not_held_back);

/// Messages of a few MiB and of a few bytes, each answered before the next, through
/// `ssh ... -N -L` (`ssh` names its destination) to a target in the test.
fn exchange_through_a_forward(mut ssh: std::process::Command) -> R {
    use std::io::Read;
    // The target: reads a length, then that many bytes, and answers with the count it read.
    let target = std::net::TcpListener::bind("127.0.0.1:0")?;
    let target_port = target.local_addr()?.port();
    std::thread::spawn(move || -> R {
        let (mut c, _) = target.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let mut len = [0u8; 8];
            c.read_exact(&mut len)?;
            let mut left = u64::from_be_bytes(len);
            let mut got = 0u64;
            while left > 0 {
                let n = c.read(&mut buf[..left.min(1 << 20) as usize])?;
                anyhow::ensure!(n > 0, "the forward ended mid-message");
                left -= n as u64;
                got += n as u64;
            }
            c.write_all(&got.to_be_bytes())?;
        }
    });
    let lport = free_port()?;
    let mut fwd = ssh
        .args(["-N", "-L"])
        .arg(format!("{lport}:127.0.0.1:{target_port}"))
        .spawn()?;
    let result = (|| -> R {
        let mut c = eventually(|| Ok(std::net::TcpStream::connect(("127.0.0.1", lport)).ok()))?;
        c.set_read_timeout(Some(Duration::from_secs(20)))?;
        for size in [
            4u64 << 20,
            10,
            (3 << 20) + 12_345,
            1,
            256 << 10,
            (8 << 20) + 7,
            100,
            64 << 10,
            2,
        ] {
            let mut msg = size.to_be_bytes().to_vec();
            msg.resize(8 + size as usize, 0x5a);
            c.write_all(&msg)?;
            let mut got = [0u8; 8];
            c.read_exact(&mut got).map_err(|e| {
                anyhow::anyhow!("no answer to a message of {size} bytes through -L: {e}")
            })?;
            assert_eq!(u64::from_be_bytes(got), size);
        }
        Ok(())
    })();
    let _ = fwd.kill();
    let _ = fwd.wait();
    result
}
