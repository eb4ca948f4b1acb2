//! Workspaces kept apart from each other and from control, attacked from inside as their users
//! would: a shell in user A's workspace tries to read control's data dir, user B's home, B's
//! agent credentials and sockets, control's environment, and to signal B's agent or control.
//! Every attempt fails, and the test checks that nothing leaked or changed.
//!
//! The suite runs as root (CI does), so the local provisioner gives each workspace a Unix user
//! of its own; `--isolation none` is what a non-root server does, and says so.

use std::path::Path;
use std::time::Duration;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);
const PROVISIONER_KEY: &str = "provisioner-key-that-must-stay-in-control";

fn running(w: &serde_json::Value) -> bool {
    w["status"] == "running" && w["agent"]["status"] == "connected"
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// One attack: a shell line that prints `LEAK` if it got anywhere.
fn attack(what: &str, cmd: &str) -> String {
    format!("if ( {cmd} ) >/dev/null 2>&1; then echo \"LEAK: {what}\"; fi\n")
}

fn workspace_users_cannot_reach_each_other_or_control(backend: Backend) -> R {
    if !is_root() {
        eprintln!("SKIPPED (isolation): needs root for a Unix user per workspace");
        return Ok(());
    }
    let s = Server::start_opts(
        backend,
        Opts {
            env: &[
                ("OUTPOST_PROVISIONER_KEY", PROVISIONER_KEY),
                ("OUTPOST_TEST_CONTROL_SECRET", "control-env-secret"),
            ],
            ..Default::default()
        },
    )?;
    let a = Client::admin(&s)?;
    let b = Client::new_user(&s, "bob")?;
    a.ok(&["create", "a"])?;
    b.ok(&["create", "b"])?;
    let (wa, _) = s.wait_for("a", T, running)?;
    let wb = b.json(&["show", "b"])?;
    assert!(running(&wb), "{wb}");
    assert!(
        wa["isolation"]
            .as_str()
            .unwrap_or("")
            .starts_with("user ws-"),
        "each workspace runs as a user of its own: {}",
        wa["isolation"]
    );
    assert_ne!(wa["isolation"], wb["isolation"]);

    // B's things, as control knows them.
    let b_home = home_of(&wb);
    let b_run = b_home.parent().expect("workspace dir").join("run");
    let b_agent = agent_pid(&wb).expect("b's agent pid");
    b.sh(
        "b",
        "echo bob-secret > ~/secret.txt && chmod 644 ~/secret.txt",
    )?;
    let a_home = home_of(&wa);
    assert!(
        !a_home.starts_with(s.data()),
        "workspaces live outside the data dir"
    );
    let data = s.data();
    let control = s.pid().expect("control pid");

    // The data dir and what is in it are control's alone.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("stat").permissions())
            & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("ca.key")), 0o600);
    if data.join("outpost.db").exists() {
        assert_eq!(mode(&data.join("outpost.db")), 0o600);
    }
    assert_eq!(mode(&b_home), 0o700);

    let d = data.display();
    let mut script = String::new();
    // 1. control's data dir, by absolute path and by the old relative one.
    for f in [
        "ca.key",
        "ca.crt",
        "outpost.db",
        "setup-token",
        "server.json",
    ] {
        script += &attack(&format!("read {f}"), &format!("cat {d}/{f}"));
    }
    script += &attack("list the data dir", &format!("ls {d}"));
    script += &attack("read ~/../../../ca.key", "cat ~/../../../ca.key");
    script += &attack("read ~/../../../data/ca.key", "cat ~/../../../data/ca.key");
    // 2. B's home and B's processes' environment.
    let bh = b_home.display();
    script += &attack("read B's file", &format!("cat {bh}/secret.txt"));
    script += &attack("list B's home", &format!("ls {bh}"));
    script += &attack("write B's home", &format!("touch {bh}/pwned"));
    script += &attack("B's agent environ", &format!("cat /proc/{b_agent}/environ"));
    script += &attack("control's environ", &format!("cat /proc/{control}/environ"));
    script += &attack(
        "any readable environ with control's secrets",
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q -e control-env-secret -e provisioner-key-that-must -e OUTPOST_POSTGRES_URL",
    );
    // 3. B's CLI socket (hands out B's API token), git-agent socket, credentials.
    let br = b_run.display();
    script += &attack(
        "B's cli.sock",
        &format!("python3 -c 'import socket,sys; c=socket.socket(socket.AF_UNIX); c.connect(\"{br}/agent/cli.sock\"); sys.exit(0 if c.recv(100) else 1)'"),
    );
    script += &attack(
        "B's git-agent socket",
        &format!("SSH_AUTH_SOCK={br}/agent/git-agent.sock ssh-add -l"),
    );
    script += &attack(
        "B's credentials",
        &format!("cat {br}/agent/credentials.json"),
    );
    script += &attack("B's bootstrap bundle", &format!("cat {br}/bootstrap.json"));
    script += &attack("list B's run dir", &format!("ls {br}"));
    // 4. control's environment in this one.
    script += &attack(
        "control variables in the environment",
        "env | grep -q -e OUTPOST_POSTGRES_URL -e OUTPOST_PROVISIONER_KEY -e OUTPOST_TEST_CONTROL_SECRET -e provisioner-key-that-must",
    );
    // 5. signals to B's agent and to control.
    script += &attack("signal B's agent", &format!("kill -0 {b_agent}"));
    script += &attack("signal control", &format!("kill -0 {control}"));
    script += "echo attacks-done\n";
    let out = a.sh("a", &script)?;
    assert!(out.contains("attacks-done"), "the attack script ran: {out}");
    assert!(!out.contains("LEAK"), "from A's workspace:\n{out}");

    // The legitimate uses still work: A's own shell, home, CLI socket, agent environment.
    let own = a.sh(
        "a",
        "id -un; echo $HOME; touch ~/mine && ls ~/mine; outpost whoami; env | grep -c ^OUTPOST_WORKSPACE_ID=",
    )?;
    let lines: Vec<&str> = own.lines().collect();
    assert!(lines[0].starts_with("ws-"), "{own}");
    assert_eq!(lines[1], a_home.display().to_string());
    assert!(
        own.contains("admin"),
        "the CLI inside uses A's own socket: {own}"
    );

    // Nothing leaked or changed: B's file intact and still B's, B and control alive.
    assert_eq!(
        std::fs::read_to_string(b_home.join("secret.txt"))?,
        "bob-secret\n"
    );
    assert!(!b_home.join("pwned").exists());
    assert!(alive(b_agent), "B's agent lives");
    assert!(running(&b.json(&["show", "b"])?));
    assert_eq!(b.sh("b", "cat ~/secret.txt")?, "bob-secret\n");

    // Delete removes the workspace's user with its home.
    let user = wa["isolation"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    assert!(nix::unistd::User::from_name(&user)?.is_some());
    a.ok(&["delete", "a"])?;
    eventually(|| Ok(nix::unistd::User::from_name(&user)?.is_none().then_some(())))?;
    assert!(!a_home.exists());
    Ok(())
}
both_backends!(workspace_users_cannot_reach_each_other_or_control);

/// Without root (here: `--isolation none`), workspaces run as control's user: the server says
/// so, `show` says `isolation: none`, and a second user's workspace is refused unless the admin
/// allows it.
fn without_isolation_one_user_only(backend: Backend) -> R {
    let s = Server::start_with(backend.clone(), &["--isolation", "none"])?;
    assert!(
        s.log().contains("no isolation"),
        "the server says so at start: {}",
        s.log()
    );
    let a = Client::admin(&s)?;
    a.ok(&["create", "a"])?;
    let (w, _) = s.wait_for("a", T, running)?;
    assert_eq!(w["isolation"], "none");
    let shown = a.ok(&["show", "a"])?;
    assert!(shown.contains("Isolation  none"), "{shown}");
    // The agent still starts from a cleared environment.
    let env = a.sh("a", "env")?;
    assert!(!env.contains("OUTPOST_POSTGRES_URL") && !env.contains("OUTPOST_PROVISIONER_KEY"));

    let b = Client::new_user(&s, "bob")?;
    let before = s.db_snapshot()?;
    let o = run_with_stdin(b.command(&["create", "b"]), "")?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("without isolation") && err.contains("--allow-unisolated-users"),
        "a clear refusal that says what to do: {err}"
    );
    assert_eq!(s.db_snapshot()?, before, "a refused create changes nothing");
    drop(s);

    let s = Server::start_with(
        fresh(&backend),
        &["--isolation", "none", "--allow-unisolated-users"],
    )?;
    let a = Client::admin(&s)?;
    a.ok(&["create", "a"])?;
    let b = Client::new_user(&s, "bob")?;
    b.ok(&["create", "b"])?;
    assert!(running(&b.json(&["show", "b"])?));
    Ok(())
}
both_backends!(without_isolation_one_user_only);

/// Parameter values reach the workspace's environment and scripts; the template's files arrive
/// read-only, and `script = "./scripts/x.sh"` runs one of them.
fn templates_drive_the_workspace(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let a = Client::admin(&s)?;
    let t = s.dir.path().join("tpl");
    std::fs::create_dir_all(t.join("scripts"))?;
    std::fs::write(
        t.join("template.toml"),
        r#"[provisioner]
type = "local"

[[parameters]]
name = "greeting"
type = "string"
default = "hello"
[parameters.validation]
regex = "^[a-z]+$"

[[scripts]]
name = "setup"
script = "./scripts/setup.sh"
blocks_login = true
"#,
    )?;
    std::fs::write(
        t.join("scripts/setup.sh"),
        "#!/bin/sh\necho \"$OUTPOST_PARAM_GREETING from $0\" > ~/setup-ran.txt\n",
    )?;
    std::fs::write(t.join("config.txt"), "shipped with the template\n")?;
    a.ok(&["templates", "push", t.to_str().unwrap_or_default()])?;
    a.ok(&["create", "ws", "-t", "tpl", "-p", "greeting=bonjour"])?;
    s.wait_for("ws", T, running)?;
    let out = a.sh(
        "ws",
        "echo $OUTPOST_PARAM_GREETING; cat \"$OUTPOST_TEMPLATE_DIR/config.txt\"; cat ~/setup-ran.txt; \
         if echo x >> \"$OUTPOST_TEMPLATE_DIR/config.txt\" 2>/dev/null; then echo WRITABLE; fi; \
         if rm -rf \"$OUTPOST_TEMPLATE_DIR/scripts\" 2>/dev/null; then echo REMOVABLE; fi",
    )?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bonjour", "{out}");
    assert_eq!(lines[1], "shipped with the template");
    assert!(
        lines[2].starts_with("bonjour from /") && lines[2].ends_with("/scripts/setup.sh"),
        "{out}"
    );
    assert!(
        !out.contains("WRITABLE") && !out.contains("REMOVABLE"),
        "read-only: {out}"
    );

    // A value that fails validation never reaches a build.
    let builds = s.db_rows("SELECT count(*) FROM workspace_builds")?;
    let o = run_with_stdin(a.command(&["restart", "ws", "-p", "greeting=NOT OK"]), "")?;
    assert!(!o.status.success());
    assert_eq!(s.db_rows("SELECT count(*) FROM workspace_builds")?, builds);

    // A new value rebuilds with it.
    a.ok(&["restart", "ws", "-p", "greeting=salut"])?;
    s.wait_for("ws", T, running)?;
    assert_eq!(
        a.sh("ws", "echo $OUTPOST_PARAM_GREETING; cat ~/setup-ran.txt")?
            .lines()
            .next(),
        Some("salut")
    );

    // A script naming a file the template lacks is refused at push, with the field.
    std::fs::remove_file(t.join("scripts/setup.sh"))?;
    let o = run_with_stdin(
        a.command(&["templates", "push", t.to_str().unwrap_or_default()]),
        "",
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("scripts[0].script") && err.contains("not among the template's files"),
        "{err}"
    );
    Ok(())
}
both_backends!(templates_drive_the_workspace);

/// An agent binary workspace users cannot reach (under a 0700 directory, as in root's
/// ~/.cargo/bin) is copied into the workspaces dir, root's and read-only, and runs from there.
fn agent_binary_out_of_reach_is_copied(backend: Backend) -> R {
    if !is_root() {
        eprintln!("SKIPPED (isolation): needs root for a Unix user per workspace");
        return Ok(());
    }
    let private = tempfile::tempdir()?;
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let bin_path = private.path().join("outpost-agent");
    std::fs::copy(bin("outpost-agent"), &bin_path)?;
    let s = Server::start_with(
        backend,
        &["--agent-binary", bin_path.to_str().unwrap_or("")],
    )?;
    s.ok(&["create", "a"])?;
    let (w, _) = s.wait_for("a", T, running)?;
    let pid = agent_pid(&w).expect("agent pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let copy = s.workspaces().join(".agent/outpost-agent");
    assert_eq!(exe, copy, "the agent runs from the copy");
    let md = std::fs::metadata(&copy)?;
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (md.uid(), md.mode() & 0o777),
        (0, 0o755),
        "root's, not writable by others"
    );
    Ok(())
}
both_backends!(agent_binary_out_of_reach_is_copied);
