//! A workspace's whole life through the CLI, and what survives each step.

use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

fn is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |w| w["status"] == status
}

/// Statuses a workspace may pass through, in order, for one action.
fn assert_path(seen: &[String], allowed: &[&str], end: &str) {
    assert_eq!(seen.last().map(String::as_str), Some(end), "seen {seen:?}");
    let mut pos = 0;
    for s in seen {
        let i = allowed[pos..]
            .iter()
            .position(|a| a == s)
            .unwrap_or_else(|| {
                panic!("status {s} unexpected or out of order in {seen:?} (allowed {allowed:?})")
            });
        pos += i;
    }
}

fn run_dir_empty(w: &Value) -> bool {
    let home = home_of(w);
    let run = home.parent().expect("workspace dir").join("run");
    !run.exists()
        || std::fs::read_dir(&run)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
}

fn lifecycle(backend: Backend) -> R {
    let s = Server::start(backend)?;

    // create: the CLI streams the build log and returns once the agent has connected.
    let out = s.cli(&["create", "dev", "--template", "base"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[provision] home (persistent)"),
        "build log streamed: {stderr}"
    );
    assert!(stderr.contains("Workspace dev is running"), "{stderr}");
    let w = s.workspace("dev")?;
    assert_eq!(w["status"], "running");
    assert_eq!(w["health"]["healthy"], true);
    assert_eq!(w["agent"]["status"], "connected");
    let home = home_of(&w);
    let pid1 = agent_pid(&w).expect("agent pid");
    assert!(alive(pid1));
    std::fs::write(home.join("notes.txt"), "keep me")?;

    // stop: observed statuses, the agent exits, run/ is gone, home stays.
    let b = s.json(&["stop", "dev", "--no-wait"])?;
    assert!(
        b["status"] == "pending" || b["status"] == "running",
        "a queued build is pending (or already taken by a daemon): {b}"
    );
    let (w, seen) = s.wait_for("dev", T, is("stopped"))?;
    assert_path(&seen, &["pending", "stopping", "stopped"], "stopped");
    assert!(!alive(pid1), "the agent exited on stop");
    assert!(run_dir_empty(&w), "run/ is empty after stop");
    assert_eq!(std::fs::read_to_string(home.join("notes.txt"))?, "keep me");
    let kinds: Vec<(String, bool)> = w["resources"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["persistent"] == true,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("home".to_string(), true)],
        "a stopped workspace keeps only its home"
    );

    // an illegal transition answers 409 and names the current status.
    let out = s.cli(&["stop", "dev"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is stopped"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // start
    let b = s.json(&["start", "dev", "--no-wait"])?;
    assert_eq!(b["transition"], "start");
    let (w, seen) = s.wait_for("dev", T, is("running"))?;
    assert_path(
        &seen,
        &["stopped", "pending", "starting", "running"],
        "running",
    );
    let pid2 = agent_pid(&w).expect("agent pid");
    assert_ne!(pid1, pid2);
    assert_eq!(std::fs::read_to_string(home.join("notes.txt"))?, "keep me");

    // restart = stop then start, one command
    let b = s.json(&["restart", "dev", "--no-wait"])?;
    assert_eq!(b["transition"], "stop");
    assert_eq!(b["then_start"], true);
    let (w, seen) = s.wait_for("dev", T, |w| {
        w["status"] == "running"
            && w["latest_build"]["transition"] == "start"
            && w["latest_build"]["number"].as_i64() > b["number"].as_i64()
    })?;
    assert_path(
        &seen,
        &[
            "running", "pending", "stopping", "stopped", "pending", "starting", "running",
        ],
        "running",
    );
    assert!(!alive(pid2));
    assert_eq!(std::fs::read_to_string(home.join("notes.txt"))?, "keep me");
    let pid3 = agent_pid(&w).expect("agent pid");

    // update to a new template version
    let tdir = s.dir.path().join("tpl");
    std::fs::create_dir_all(&tdir)?;
    std::fs::write(
        tdir.join("template.toml"),
        "description = \"base, second version\"\n[provisioner]\ntype = \"local\"\n[agent]\nenv = { STAGE = \"two\" }\n[[parameters]]\nname = \"dotfiles_uri\"\ntype = \"string\"\ndefault = \"\"\n",
    )?;
    let v = s.json(&[
        "templates",
        "push",
        tdir.to_str().unwrap_or_default(),
        "--name",
        "base",
    ])?;
    assert_eq!(v["version"], 2);
    assert_eq!(s.workspace("dev")?["outdated"], true);
    let out = s.cli(&["update", "dev"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = s.workspace("dev")?;
    assert_eq!(w["status"], "running");
    assert_eq!(w["template_version"], 2);
    assert_eq!(w["outdated"], false);
    assert!(!alive(pid3));
    assert_eq!(std::fs::read_to_string(home.join("notes.txt"))?, "keep me");

    // list shows it; delete removes everything.
    let list = s.json(&["list"])?;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let pid4 = agent_pid(&w).expect("agent pid");
    let b = s.json(&["delete", "dev", "--no-wait"])?;
    assert_eq!(b["transition"], "delete");
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = s.cli(&["show", "dev"])?;
        if !out.status.success() {
            assert!(String::from_utf8_lossy(&out.stderr).contains("no workspace named"));
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "delete did not finish"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!alive(pid4));
    assert!(!home.exists(), "home is gone after delete");
    assert!(
        !home.parent().map(|p| p.exists()).unwrap_or(false),
        "the workspace dir is gone"
    );
    assert_eq!(s.json(&["list"])?.as_array().map(Vec::len), Some(0));
    // The name is free again.
    s.ok(&["create", "dev"])?;
    Ok(())
}
both_backends!(lifecycle);

/// A pending build can be canceled; the workspace shows canceled and can be started again.
fn cancel_pending(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--provisioner-daemons", "0"])?;
    let w = s.json(&["create", "idle", "--no-wait"])?;
    assert_eq!(w["status"], "pending");
    let b = s.json(&["cancel", "idle"])?;
    assert_eq!(b["status"], "canceled");
    assert_eq!(s.status("idle")?, "canceled");
    let out = s.cli(&["cancel", "idle"])?;
    assert!(!out.status.success(), "nothing left to cancel");
    let b = s.json(&["start", "idle", "--no-wait"])?;
    assert_eq!(b["status"], "pending");
    Ok(())
}
both_backends!(cancel_pending);

/// `templates push|list|show`, and tokens create/list/revoke through the CLI.
fn templates_and_tokens(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let list = s.json(&["templates", "list"])?;
    assert_eq!(list[0]["name"], "base");
    let dir = s.dir.path().join("py");
    std::fs::create_dir_all(dir.join("scripts"))?;
    std::fs::write(dir.join("template.toml"), "[provisioner]\ntype = \"local\"\n[[parameters]]\nname = \"cpus\"\ntype = \"number\"\ndefault = 2\nmutable = false\n[parameters.validation]\nmin = 1\nmax = 8\n")?;
    std::fs::write(dir.join("scripts/setup.sh"), "echo hi\n")?;
    let v = s.json(&["templates", "push", dir.to_str().unwrap_or_default()])?;
    assert_eq!(v["template_name"], "py");
    assert_eq!(
        v["files"],
        serde_json::json!(["scripts/setup.sh", "template.toml"])
    );
    let shown = s.json(&["templates", "show", "py"])?;
    assert_eq!(
        shown["versions"][0]["manifest"]["parameters"][0]["name"],
        "cpus"
    );
    // An immutable parameter cannot change on a later build.
    s.ok(&["create", "a", "-t", "py", "-p", "cpus=4"])?;
    s.ok(&["stop", "a"])?;
    let out = s.cli(&["start", "a", "-p", "cpus=5"])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("immutable"));

    let t = s.json(&["tokens", "create", "ci", "--lifetime", "1h"])?;
    let token = t["token"].as_str().unwrap_or_default().to_string();
    let (st, me) = http(
        "GET",
        &format!("{}/api/v1/users/me", s.url),
        Some(&token),
        None,
    )?;
    assert_eq!((st, me["username"].as_str()), (200, Some("admin")));
    let ids: Vec<String> = s
        .json(&["tokens", "list"])?
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|t| t["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(ids.contains(&t["info"]["id"].as_str().unwrap_or("").to_string()));
    s.ok(&[
        "tokens",
        "revoke",
        t["info"]["id"].as_str().unwrap_or_default(),
    ])?;
    let (st, body) = http(
        "GET",
        &format!("{}/api/v1/users/me", s.url),
        Some(&token),
        None,
    )?;
    assert_eq!(st, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("revoked"));
    Ok(())
}
both_backends!(templates_and_tokens);

/// A running build can be canceled: it goes canceling -> canceled, and the workspace recovers.
fn cancel_running(backend: Backend) -> R {
    let s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    let w = s.workspace("dev")?;
    let pid = agent_pid(&w).expect("agent pid");
    // A frozen agent keeps the stop build waiting out its grace period.
    signal(pid, libc::SIGSTOP);
    s.json(&["stop", "dev", "--no-wait"])?;
    s.wait_for("dev", T, |w| w["latest_build"]["status"] == "running")?;
    let b = s.json(&["cancel", "dev"])?;
    assert_eq!(b["status"], "canceling");
    let (w, seen) = s.wait_for("dev", T, is("canceled"))?;
    assert_path(&seen, &["canceling", "canceled"], "canceled");
    assert_eq!(w["latest_build"]["status"], "canceled");
    signal(pid, libc::SIGCONT);
    // From canceled the workspace can be stopped for real.
    s.ok(&["stop", "dev"])?;
    assert_eq!(s.status("dev")?, "stopped");
    assert!(!alive(pid));
    let me = s.json(&["whoami"])?;
    assert_eq!(me["username"], "admin");
    Ok(())
}
both_backends!(cancel_running);
