//! Several control replicas on one PostgreSQL (issue 17), or on one SQLite data dir
//! (`--shared-data-dir`, one host): they register and heartbeat, one leads and another takes
//! over when it dies, and what one replica is asked reaches agents and provisioner daemons
//! held by another at once (LISTEN/NOTIFY; the data dir's sockets). On SQLite without the flag,
//! one server: a second one on the same data dir refuses to start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::replica_rig::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn sqlite_serves_one_server() -> R {
    let s = Server::start(Backend::Sqlite)?;
    let o = Command::new(bin("outpost"))
        .arg("server")
        .arg("--data-dir")
        .arg(s.data())
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()?;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another outpost server is running on the data dir")
            && err.contains("--shared-data-dir")
            && err.contains("--postgres-url"),
        "{err}"
    );
    // Nor may a replica join it: the server alone did not say it shares its data dir.
    let o = Command::new(bin("outpost"))
        .arg("server")
        .arg("--data-dir")
        .arg(s.data())
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .arg("--shared-data-dir")
        .stdin(Stdio::null())
        .output()?;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("an outpost server without --shared-data-dir is running on the data dir"),
        "{err}"
    );
    // The first one serves on, untouched.
    assert_eq!(s.json(&["whoami"])?["username"], "admin");
    Ok(())
}

/// Replicas on one SQLite data dir (`--shared-data-dir`): a server started without the flag
/// may not join them; what one replica is asked reaches what another holds (the other
/// tests of this file run on both stores).
#[test]
fn shared_data_dir_replicas_refuse_a_lone_server() -> R {
    let a = first_replica(Backend::Sqlite, &[])?;
    let b = replica_of(&a, Backend::Sqlite, &["--provisioner-daemons", "0"])?;
    let o = Command::new(bin("outpost"))
        .arg("server")
        .arg("--data-dir")
        .arg(a.data())
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()?;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another outpost server is running on the data dir"),
        "{err}"
    );
    // Both replicas serve on, on one database: a workspace created through one is listed
    // by the other.
    let token = a.token()?;
    let o = on(&b.url, &token, &["create", "dev"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    a.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    let list = json_on(&b.url, &token, &["list"])?;
    assert_eq!(list[0]["name"], "dev", "{list:#}");
    Ok(())
}

fn replicas_register_and_the_leader_moves(pg: Backend) -> R {
    let mut a = first_replica(pg.clone(), &[])?;
    let b = replica_of(&a, pg, &[])?;
    let token = a.token()?;
    // Both listed (each heartbeats every second here), one of them leading: the first.
    let rows = eventually(|| {
        let list = json_on(&b.url, &token, &["replicas"])?;
        let rows = list.as_array().cloned().unwrap_or_default();
        let leaders = rows.iter().filter(|r| r["leader"] == true).count();
        Ok((rows.len() == 2 && leaders == 1).then_some(rows))
    })?;
    let leader: Vec<&Value> = rows.iter().filter(|r| r["leader"] == true).collect();
    assert_eq!(
        leader[0]["api_url"],
        a.url.as_str(),
        "the first replica leads"
    );

    // The leader dies: the other leads within a second or two, and the dead one is forgotten.
    a.kill();
    let t = Instant::now();
    let list = eventually(|| {
        let list = json_on(&b.url, &token, &["replicas"])?;
        let rows = list.as_array().cloned().unwrap_or_default();
        Ok(
            (rows.len() == 1 && rows[0]["leader"] == true && rows[0]["api_url"] == b.url.as_str())
                .then_some(list),
        )
    })?;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{:?}: {list:#}",
        t.elapsed()
    );
    assert!(b.log().contains("this replica leads"), "{}", b.log());
    Ok(())
}
crate::both_backends!(replicas_register_and_the_leader_moves);

/// What one replica is asked reaches what another holds, at once: three workspaces created
/// through replica B are built by replica A's one provisioner daemon, whose idle poll (10 s)
/// only the bus cuts short; a follower of a workspace's script output on B prints lines the
/// agent sent to A (B would otherwise look again only every 15 s).
fn events_cross_replicas(pg: Backend) -> R {
    let a = first_replica(pg.clone(), &["--provisioner-daemons", "1"])?;
    // B provisions nothing: every job is A's daemon's, every agent A's.
    let b = replica_of(&a, pg, &["--provisioner-daemons", "0"])?;
    let token = a.token()?;
    push_local_template(
        &a,
        "talky",
        "[[scripts]]\nname = \"hello\"\nscript = \"echo hello-from-$OUTPOST_WORKSPACE\"\n",
    )?;
    for n in ["one", "two", "three"] {
        // Let the daemon settle into a fresh long poll.
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let o = on(&b.url, &token, &["create", n, "-t", "talky"])?;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{n}: a create through the other replica took {:?}",
            t.elapsed()
        );
    }

    // Follow "one"'s script output on B; restart it through A: the new lines show on B.
    let mut follow = Command::new(bin("outpost"));
    follow
        .args(["logs", "one", "--follow"])
        .env("OUTPOST_URL", &b.url)
        .env("OUTPOST_TOKEN", &token)
        .env("OUTPOST_CONFIG_DIR", "/nonexistent-outpost-config")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = follow.spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The first start's line, already stored.
    let first = rx.recv_timeout(Duration::from_secs(10))?;
    assert!(first.contains("hello-from-one"), "{first}");
    a.ok(&["restart", "one"])?;
    a.wait_for("one", T, |w| w["agent"]["lifecycle"] == "ready")?;
    // The agent sent its lines before it said ready: B's follower has them within moments.
    let t = Instant::now();
    let second = rx.recv_timeout(Duration::from_secs(4));
    let _ = child.kill();
    let _ = child.wait();
    let second = second.map_err(|_| {
        anyhow::anyhow!(
            "the follower on the other replica printed nothing {:?} after the restart",
            t.elapsed()
        )
    })?;
    assert!(second.contains("hello-from-one"), "{second}");
    Ok(())
}
crate::both_backends!(events_cross_replicas);

/// Replicas share one CA, and a client that reaches replica B for a workspace whose agent's
/// tunnel is on replica A is carried through A: SSH, a port forward and a terminal.
fn streams_cross_replicas(pg: Backend) -> R {
    let a = first_replica(pg.clone(), &[])?;
    let b = replica_of(&a, pg, &["--provisioner-daemons", "0"])?;
    assert_eq!(
        std::fs::read_to_string(a.data().join("ca.crt"))?,
        std::fs::read_to_string(b.data().join("ca.crt"))?,
        "one CA for both replicas"
    );
    let admin = crate::clients::Client::admin(&a)?;
    a.ok(&["create", "dev"])?;
    a.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;

    // SSH through B.
    let o = admin
        .ssh_command("dev", "echo through-b; id -un")
        .env("OUTPOST_URL", &b.url)
        .stdin(Stdio::null())
        .output()?;
    assert!(
        o.status.success(),
        "ssh through replica B: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("through-b\n"));
    assert!(b.log().contains("connected to a replica"), "{}", b.log());
    assert!(a.log().contains("a replica connected"), "{}", a.log());

    // A port forward through B to a server in the workspace.
    let web = free_port()?;
    admin.sh(
        "dev",
        &format!("nohup python3 -m http.server {web} --bind 127.0.0.1 >/dev/null 2>&1 &"),
    )?;
    let page = fetch_through_forward(&admin.config_dir, &b.url, "dev", web)?;
    assert!(page.contains("Directory listing"));
    admin.sh("dev", &format!("pkill -f 'http[.]server {web}' || true"))?;

    // A terminal through B: the WebSocket opens, a command typed there is echoed back.
    let mut t = terminal(&b.url, &a.token()?, "via-b")?;
    type_and_wait(&mut t, "echo pty-through-$((40+2))", "pty-through-42")?;

    // On one SQLite data dir the replicas' bus is Unix sockets in it: the workspace's user
    // (its own Unix user, where tests run as root) can neither list them nor send one an event,
    // nor open the file their writes take turns on.
    let bus = a.data().join("bus");
    if bus.exists() && nix::unistd::Uid::effective().is_root() {
        let socks: Vec<_> = std::fs::read_dir(&bus)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert_eq!(socks.len(), 2, "one socket per replica: {socks:?}");
        let mut script = format!(
            "if ls {} >/dev/null 2>&1; then echo 'LEAK: listed the bus'; fi\n",
            bus.display()
        );
        for s in &socks {
            script += &format!(
                "if python3 -c 'import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b\"x\\n\", \"{}\")' >/dev/null 2>&1; then echo 'LEAK: sent to {}'; fi\n",
                s.display(),
                s.display()
            );
        }
        // Nor open the replicas' write turns or their turnstile to hold them (a workspace
        // stalling every write): a flock needs only a read-only open, so none may open them.
        for name in ["write.lock", "write.queue"] {
            let turns = a.data().join(name);
            assert!(
                turns.exists(),
                "the replicas' write turns: {}",
                turns.display()
            );
            script += &format!(
                "if python3 -c 'open(\"{}\")' >/dev/null 2>&1; then echo 'LEAK: opened {name}'; fi\n",
                turns.display()
            );
        }
        let out = admin.sh("dev", &script)?;
        assert!(!out.contains("LEAK"), "{out}");
    }
    Ok(())
}
crate::both_backends!(streams_cross_replicas);

/// kill -9 the replica holding the agents' tunnels: behind one address, the agents reconnect to
/// the other within their backoff; SSH works again through it; no build is lost or run twice;
/// an open terminal session, reattached through the survivor, is the same shell.
#[test]
fn agents_move_when_their_replica_dies() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let lb = Balancer::start(false)?;
    let agent_url = format!("https://127.0.0.1:{}", lb.port);
    let mut a = Server::start_with(pg.clone(), &["--agent-url", &agent_url])?;
    let b = replica_of(
        &a,
        pg,
        &["--provisioner-daemons", "0", "--agent-url", &agent_url],
    )?;
    let addr = |s: &Server| s.agent_listen.clone();
    lb.set(&[&addr(&a), &addr(&b)]);
    let admin = crate::clients::Client::admin(&a)?;
    let token = a.token()?;
    let names = ["dev", "w2", "w3"];
    for n in names {
        a.ok(&["create", n])?;
    }
    for n in names {
        a.wait_for(n, T, |w| w["agent"]["status"] == "connected")?;
    }
    // A shell with some state, through B (its tunnel is on A).
    let mut t = terminal(&b.url, &token, "kept")?;
    type_and_wait(&mut t, "export HELD=still-$((6*7))", "export HELD")?;
    drop(t);

    a.kill();
    let t0 = Instant::now();
    for n in names {
        let o = eventually(|| {
            let o = admin
                .ssh_command(n, "echo alive")
                .env("OUTPOST_URL", &b.url)
                .stdin(Stdio::null())
                .output()?;
            Ok(o.status.success().then_some(o))
        })?;
        assert_eq!(String::from_utf8_lossy(&o.stdout), "alive\n", "{n}");
    }
    eprintln!("agents back through the survivor after {:?}", t0.elapsed());
    // The same terminal session, reattached through B: the same shell.
    let mut t = terminal(&b.url, &token, "kept")?;
    type_and_wait(&mut t, "echo $HELD", "still-42")?;
    // Every build ran once and succeeded.
    let rows = b.db_rows("SELECT status, attempts FROM provisioner_jobs")?;
    assert_eq!(rows.len(), names.len());
    assert!(
        rows.iter().all(|r| r[0] == "succeeded" && r[1] == "1"),
        "{rows:?}"
    );
    Ok(())
}

/// The leader dies while a daemon holds a job and never renews it: the other replica takes
/// the lease reaper (and the leader's lock) and the job is given back within a lease period.
#[test]
fn the_reaper_moves_with_the_leader() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let key = "a-provisioner-key-for-the-test-0123456789";
    let flags = ["--provisioner-daemons", "0", "--provisioner-key", key];
    let mut a = Server::start_with(pg.clone(), &flags)?;
    let b = replica_of(&a, pg, &flags)?;
    a.ok(&["create", "dev", "--no-wait"])?;
    // A daemon takes the job and hangs (the test, speaking the daemon API).
    let (code, job) = post_json(
        &format!("{}/api/v1/provisioner/acquire", a.url),
        Some(key),
        &serde_json::json!({"daemon_id": "hung", "provisioners": ["local"]}),
    )?;
    assert_eq!(code, 200, "{job}");
    let job_id = job["job_id"].as_str().unwrap_or_default().to_string();
    let leader = |s: &Server| -> R<bool> {
        let l = json_on(&s.url, &a.token()?, &["replicas"])?;
        Ok(l.as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["api_url"] == s.url.as_str() && r["leader"] == true)
        }))
    };
    eventually(|| Ok(leader(&a)?.then_some(())))?;
    let token = a.token()?;
    a.kill();
    let t0 = Instant::now();
    // The job's lease (3 s here) runs out; B, leading now, gives it back.
    let state = eventually(|| {
        let rows = b.db_rows(&format!(
            "SELECT status, attempts FROM provisioner_jobs WHERE id = '{job_id}'"
        ))?;
        Ok(rows.first().filter(|r| r[0] == "pending").cloned())
    })?;
    let took = t0.elapsed();
    assert_eq!(state[1], "1", "{state:?}");
    assert!(
        took < Duration::from_secs(3 + 4),
        "the job came back after {took:?}"
    );
    let l = json_on(&b.url, &token, &["replicas"])?;
    assert!(l.to_string().contains("\"leader\":true"), "{l:#}");
    Ok(())
}

/// Three replicas, 20 workspaces whose agents are spread over them (a rotating balancer in front
/// of the agent listeners): SSH through each replica reaches every workspace, a port forward and
/// a terminal through each reach a workspace whose tunnel another holds, and a stop asked of one
/// replica reaches an agent held by another at once (the agent stops by itself, before the
/// provisioner's 5 s grace would run out).
#[test]
fn three_replicas_reach_every_workspace() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let lb = Balancer::start(true)?;
    let agent_url = format!("https://127.0.0.1:{}", lb.port);
    let a = Server::start_with(pg.clone(), &["--agent-url", &agent_url])?;
    let no_daemons = ["--provisioner-daemons", "0", "--agent-url", &agent_url];
    let b = replica_of(&a, pg.clone(), &no_daemons)?;
    let c = replica_of(&a, pg, &no_daemons)?;
    lb.set(&[&a.agent_listen, &b.agent_listen, &c.agent_listen]);
    let admin = crate::clients::Client::admin(&a)?;
    let token = a.token()?;
    let names: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    for n in &names {
        a.ok(&["create", n, "--no-wait"])?;
    }
    for n in &names {
        a.wait_for(n, T, |w| w["agent"]["status"] == "connected")?;
    }
    // Every tunnel is up, and they are spread over the three.
    let holders = eventually(|| {
        let rows = a.db_rows(
            "SELECT tunnel_replica FROM agents WHERE revoked_at IS NULL AND tunnel_replica IS NOT NULL",
        )?;
        Ok((rows.len() == names.len()).then_some(rows))
    })?;
    let distinct: std::collections::BTreeSet<&String> = holders.iter().map(|r| &r[0]).collect();
    assert_eq!(distinct.len(), 3, "{holders:?}");

    // SSH: every workspace through every replica (8 at a time).
    let replicas = [&a, &b, &c];
    let jobs: Vec<(String, String)> = replicas
        .iter()
        .flat_map(|r| names.iter().map(|n| (r.url.clone(), n.clone())))
        .collect();
    for chunk in jobs.chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|(url, n)| {
                let cmd = admin
                    .ssh_command(n, &format!("echo at-{n}"))
                    .env("OUTPOST_URL", url)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn();
                (url.clone(), n.clone(), cmd)
            })
            .collect();
        for (url, n, child) in handles {
            let o = child?.wait_with_output()?;
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                format!("at-{n}\n"),
                "ssh {n} through {url}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    // A terminal and a port forward through each replica, to w0.
    let web = free_port()?;
    admin.sh(
        "w0",
        &format!("nohup python3 -m http.server {web} --bind 127.0.0.1 >/dev/null 2>&1 &"),
    )?;
    for r in replicas {
        let mut t = terminal_to(&r.url, &token, "w0", "each")?;
        type_and_wait(&mut t, "echo term-$((1+1))", "term-2")?;
        fetch_through_forward(&admin.config_dir, &r.url, "w0", web)?;
    }
    admin.sh("w0", &format!("pkill -f 'http[.]server {web}' || true"))?;

    // A stop asked of A for a workspace whose tunnel C holds.
    let c_id = json_on(&c.url, &token, &["replicas"])?
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["api_url"] == c.url.as_str()).cloned())
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let on_c = a.db_rows(&format!(
        "SELECT w.name FROM agents g JOIN workspaces w ON w.id = g.workspace_id WHERE g.revoked_at IS NULL AND g.tunnel_replica = '{c_id}' ORDER BY w.name"
    ))?;
    let target = on_c
        .iter()
        .map(|r| r[0].clone())
        .find(|n| n != "w0")
        .ok_or_else(|| anyhow::anyhow!("no workspace on C: {on_c:?}"))?;
    let t0 = Instant::now();
    let o = on(&a.url, &token, &["stop", &target])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "stopping {target} (agent on C) through A took {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// PostgreSQL restarted under load: both replicas serve again without a restart of their own
/// (the pool reconnects, the bus listens again, a leader is chosen again), an open SSH session
/// lives on, and what one replica is asked still reaches the other's daemon at once.
#[test]
fn replicas_ride_out_a_database_restart() -> R {
    let Some(pg) = PrivatePg::start()? else {
        return Ok(());
    };
    let backend = Backend::Postgres(pg.url());
    let a = Server::start(backend.clone())?;
    let b = replica_of(&a, backend, &["--provisioner-daemons", "0"])?;
    let (a_pid, b_pid) = (a.pid(), b.pid());
    let admin = crate::clients::Client::admin(&a)?;
    let token = a.token()?;
    a.ok(&["create", "dev"])?;
    let mut session = admin
        .ssh_command("dev", "echo open; sleep 60")
        .env("OUTPOST_URL", &b.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut first = [0u8; 5];
    std::io::Read::read_exact(
        session
            .stdout
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?,
        &mut first,
    )?;
    assert_eq!(&first, b"open\n");
    // Load: both replicas asked over and over while the database goes away and comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [a.url.clone(), b.url.clone()]
        .into_iter()
        .map(|url| {
            let (stop, token) = (stop.clone(), token.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = on(&url, &token, &["list"]);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    pg.ctl(&["restart"])?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        assert!(l.join().unwrap_or(0) > 0);
    }
    // Both serve again, the same processes.
    for s in [&a, &b] {
        eventually(|| {
            Ok(on(&s.url, &token, &["list"])?
                .status
                .success()
                .then_some(()))
        })?;
    }
    assert_eq!((a.pid(), b.pid()), (a_pid, b_pid));
    // One leader again, both listed.
    eventually(|| {
        let l = json_on(&b.url, &token, &["replicas"])?;
        let rows = l.as_array().cloned().unwrap_or_default();
        let leaders = rows.iter().filter(|r| r["leader"] == true).count();
        Ok((rows.len() == 2 && leaders == 1).then_some(()))
    })?;
    // The bus works again: a create through B is built by A's daemons without waiting out
    // their poll.
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let o = on(&b.url, &token, &["create", "two"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "a create through B after the restart took {:?}",
        t0.elapsed()
    );
    // The SSH session opened before the restart is still there; new ones work.
    assert!(session.try_wait()?.is_none(), "the open session ended");
    let _ = session.kill();
    let _ = session.wait();
    let o = admin
        .ssh_command("dev", "echo again")
        .env("OUTPOST_URL", &b.url)
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "again\n");
    Ok(())
}

/// The replica tunnel takes only a replica's certificate: the agent's own (which its workspace
/// holds, in the run dir) or none is refused before anything is upgraded.
fn agents_cannot_act_as_replicas(backend: Backend) -> R {
    use crate::agent_api::{agent_call, agent_creds};
    let s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    let (w, _) = s.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    let c = agent_creds(&w)?;
    let (code, body) = agent_call(
        &c.bundle,
        "/replica/v1/tunnel",
        None,
        Some((&c.chain, &c.key)),
    )?;
    assert_eq!(code, 401, "{body}");
    let (code, body) = agent_call(&c.bundle, "/replica/v1/tunnel", None, None)?;
    assert_eq!(code, 401, "{body}");
    Ok(())
}
crate::both_backends!(agents_cannot_act_as_replicas);
