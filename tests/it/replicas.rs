//! Several control replicas on one PostgreSQL (issue 17): they register and heartbeat, one leads
//! and another takes over when it dies, and what one replica is asked reaches agents and
//! provisioner daemons held by another at once (LISTEN/NOTIFY). On SQLite, one server: a
//! second one on the same data dir refuses to start.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const T: Duration = Duration::from_secs(60);

/// `outpost ARGS` against the replica at `url`, as the first admin.
fn on(url: &str, token: &str, args: &[&str]) -> R<Output> {
    let mut c = Command::new(bin("outpost"));
    c.args(args)
        .env("OUTPOST_URL", url)
        .env("OUTPOST_TOKEN", token)
        .env("OUTPOST_CONFIG_DIR", "/nonexistent-outpost-config");
    run_with_stdin(c, "")
}

fn json_on(url: &str, token: &str, args: &[&str]) -> R<Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = on(url, token, &a)?;
    anyhow::ensure!(
        o.status.success(),
        "`outpost {}` on {url}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// A second replica of `a`'s database and secrets key.
fn replica_of(a: &Server, pg: Backend, extra: &[&str]) -> R<Server> {
    let key = a.data().join("secrets.key").display().to_string();
    let mut flags = vec!["--secrets-key-file", &key];
    flags.extend_from_slice(extra);
    Server::start_opts(
        pg,
        Opts {
            extra: &flags,
            joins_existing: true,
            ..Default::default()
        },
    )
}

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
            && err.contains("--postgres-url"),
        "{err}"
    );
    // The first one serves on, untouched.
    assert_eq!(s.json(&["whoami"])?["username"], "admin");
    Ok(())
}

#[test]
fn replicas_register_and_the_leader_moves() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let mut a = Server::start(pg.clone())?;
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

/// What one replica is asked reaches what another holds, at once: three workspaces created
/// through replica B are built by replica A's one provisioner daemon, whose idle poll (10 s)
/// only the bus cuts short; a follower of a workspace's script output on B prints lines the
/// agent sent to A (B would otherwise look again only every 15 s).
#[test]
fn events_cross_replicas() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let a = Server::start_with(pg.clone(), &["--provisioner-daemons", "1"])?;
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
