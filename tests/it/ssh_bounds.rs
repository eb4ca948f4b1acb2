//! What an SSH connection to an agent may make the agent hold for it once logged in: the
//! workspace's owner forwarding into a port that never reads gets a bounded queue per channel,
//! not the agent's memory. (What a connection may hold before login: `abuse.rs`.)

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
    let key = s.dir.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    anyhow::ensure!(st.success());
    s.ok(&["keys", "add", &format!("{}.pub", key.display())])?;
    push_local_template(&s, "fwd", "[agent]\nssh_listen = \"127.0.0.1:0\"\n")?;
    s.ok(&["create", "f", "-t", "fwd"])?;
    let (w, _) = s.wait_for("f", T, |w| w["agent"]["ssh_addr"].is_string())?;
    let port = w["agent"]["ssh_addr"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or("0")
        .to_string();
    let pid = crate::procs::agent_pid(&w).expect("agent pid") as u32;
    // OpenSSH to the agent's direct listener as the owner (no host key to check against).
    let ssh = || {
        let mut c = std::process::Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-i"])
        .arg(&key)
        .args(["-p", &port]);
        c
    };

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
