//! Template scripts: lifecycle (ready, start_error, start_timeout), logs in order, background
//! children, shutdown scripts, and the per-agent log cap.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(40);

use crate::harness::push_local_template as push;

fn start_scripts_lifecycle_and_logs(backend: Backend) -> R {
    let s = Server::start(backend)?;
    push(&s, "good", "[[scripts]]\nname = \"setup\"\nscript = \"for i in 1 2 3 4 5; do echo line-$i; done; echo to-stderr >&2; (sleep 60 &) ; echo $OUTPOST_WORKSPACE $OUTPOST_SCRIPT_NAME\"\ntimeout = \"30s\"\n")?;
    push(
        &s,
        "bad",
        "[[scripts]]\nname = \"broken\"\nscript = \"echo about to fail; exit 3\"\n",
    )?;
    push(
        &s,
        "slow",
        "[[scripts]]\nname = \"forever\"\nscript = \"echo started; sleep 120\"\ntimeout = \"1s\"\n",
    )?;

    // ok -> ready; the background child does not hold anything up; logs in order.
    s.ok(&["create", "ok", "-t", "good"])?;
    let (w, _) = s.wait_for("ok", T, |w| w["agent"]["lifecycle"] == "ready")?;
    assert_eq!(w["health"]["healthy"], true);
    let (logs, _) = {
        let mut text = String::new();
        for _ in 0..100 {
            text = s.ok(&["logs", "ok", "--source", "setup"])?;
            if text.contains("ok setup") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (text, ())
    };
    let lines: Vec<&str> = logs.lines().collect();
    let stdout: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("[setup] line-"))
        .collect();
    assert_eq!(
        stdout,
        vec![
            "[setup] line-1",
            "[setup] line-2",
            "[setup] line-3",
            "[setup] line-4",
            "[setup] line-5"
        ],
        "{logs}"
    );
    assert!(
        logs.contains("[setup] to-stderr") && logs.contains("[setup] ok setup"),
        "{logs}"
    );
    let json = s.ok(&["--json", "logs", "ok"])?;
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or("{}"))?;
    assert!(
        first["created_at"].as_i64().unwrap_or(0) > 0,
        "timestamped: {first}"
    );

    // failing -> start_error, unhealthy with the reason.
    s.ok(&["create", "ko", "-t", "bad"])?;
    let (w, _) = s.wait_for("ko", T, |w| w["agent"]["lifecycle"] == "start_error")?;
    assert_eq!(w["health"]["healthy"], false);
    assert!(w["health"]["reasons"]
        .to_string()
        .contains("startup script failed"));
    assert!(s
        .ok(&["logs", "ko"])?
        .contains("exited with exit status: 3"));

    // too slow -> start_timeout; its process group is killed.
    s.ok(&["create", "late", "-t", "slow"])?;
    let (w, _) = s.wait_for("late", T, |w| w["agent"]["lifecycle"] == "start_timeout")?;
    assert!(w["health"]["reasons"].to_string().contains("timed out"));
    std::thread::sleep(Duration::from_millis(300));
    let id = w["id"].as_str().unwrap_or_default().to_string();
    assert!(
        !commands_of_workspace(&id)
            .iter()
            .any(|c| c.contains("sleep 120")),
        "the timed-out script's sleep was killed: {:?}",
        commands_of_workspace(&id)
    );

    // --follow streams new lines as they come.
    let mut follow = Command::new(bin("outpost"))
        .args(["logs", "ok", "--follow"])
        .env("OUTPOST_CONFIG_DIR", s.config_dir())
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["restart", "ok"])?;
    let mut out = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.matches("line-5").count() >= 2 {
                break;
            }
        }
        text
    });
    let deadline = std::time::Instant::now() + T;
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    assert!(
        text.matches("line-5").count() >= 2,
        "the second start's lines streamed: {text}"
    );

    // The setup script's `(sleep 60 &)` left its session; the restart ended the first run's
    // copy (one is left, from the second start), and a stop ends them all.
    let id = s.workspace("ok")?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sleeps = || {
        commands_of_workspace(&id)
            .iter()
            .filter(|c| c.contains("sleep 60"))
            .count()
    };
    eventually(|| Ok((sleeps() == 1).then_some(())))?;
    s.ok(&["stop", "ok"])?;
    assert!(
        commands_of_workspace(&id).is_empty(),
        "a stopped workspace runs nothing: {:?}",
        commands_of_workspace(&id)
    );
    Ok(())
}
both_backends!(start_scripts_lifecycle_and_logs);

fn shutdown_scripts_and_log_cap(backend: Backend) -> R {
    let s = Server::start(backend)?;
    push(&s, "stopper", "[[scripts]]\nname = \"save\"\nscript = \"echo saving at stop; date +%s > $HOME/saved-at-stop\"\nrun_on_start = false\nrun_on_stop = true\ntimeout = \"3s\"\n")?;
    push(&s, "noisy", "[[scripts]]\nname = \"flood\"\nscript = \"head -c 100000000 /dev/zero | tr '\\\\0' 'x' | fold -w 100\"\n")?;

    // A shutdown script runs before the agent exits; what it writes stays in the home.
    s.ok(&["create", "st", "-t", "stopper"])?;
    let (w, _) = s.wait_for("st", T, |w| w["agent"]["lifecycle"] == "ready")?;
    let home = home_of(&w);
    assert!(!home.join("saved-at-stop").exists());
    s.ok(&["stop", "st"])?;
    assert!(
        home.join("saved-at-stop").exists(),
        "the shutdown script ran"
    );
    // Its output reaches control although the agent was revoked as the stop was queued.
    eventually(|| {
        Ok(s.ok(&["logs", "st", "--source", "save"])?
            .contains("saving at stop")
            .then_some(()))
    })?;
    assert_eq!(s.workspace("st")?["agent"]["lifecycle"], "off");
    s.ok(&["start", "st"])?;
    assert!(home.join("saved-at-stop").exists(), "and its file persists");

    // How a stop ended is reported: shutdown_error, shutdown_timeout.
    push(&s, "stopfail", "[[scripts]]\nname = \"bye\"\nscript = \"exit 7\"\nrun_on_start = false\nrun_on_stop = true\n")?;
    push(&s, "stopslow", "[[scripts]]\nname = \"bye\"\nscript = \"sleep 30\"\nrun_on_start = false\nrun_on_stop = true\ntimeout = \"1s\"\n")?;
    for (name, tpl, want) in [
        ("sf", "stopfail", "shutdown_error"),
        ("ss", "stopslow", "shutdown_timeout"),
    ] {
        s.ok(&["create", name, "-t", tpl])?;
        s.wait_for(name, T, |w| w["agent"]["lifecycle"] == "ready")?;
        s.ok(&["stop", name])?;
        s.wait_for(name, T, |w| w["agent"]["lifecycle"] == want)?;
    }

    // 100 MB of output: the store keeps at most the cap (plus a marker), the agent stays fine.
    s.ok(&["create", "loud", "-t", "noisy"])?;
    s.wait_for("loud", Duration::from_secs(120), |w| {
        w["agent"]["lifecycle"] == "ready"
    })?;
    // The last batches may still be on their way: wait for the overflow marker.
    eventually(|| {
        Ok(s.ok(&["logs", "loud"])?
            .contains("log limit of 1048576 bytes reached")
            .then_some(()))
    })?;
    let rows = s.db_rows(
        "SELECT COALESCE(SUM(LENGTH(output) + LENGTH(source)), 0), COUNT(*) FROM agent_logs",
    )?;
    let bytes: i64 = rows[0][0].parse().unwrap_or(i64::MAX);
    assert!(bytes <= (1 << 20) + 200, "stored {bytes} bytes");
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    s.wait_for("loud", T, |w| {
        w["agent"]["status"] == "connected" && w["agent"]["last_seen_at"].as_i64().unwrap_or(0) > t
    })?;
    Ok(())
}
both_backends!(shutdown_scripts_and_log_cap);

/// A blocking start script holds SSH sessions back (with a message) until it finishes;
/// `OUTPOST_NO_WAIT=1` (what `outpost ssh --no-wait` sends) proceeds at once. `~/personalize`
/// runs after the start scripts on every start.
fn blocking_login_and_personalize(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let key = s.dir.path().join("id_ed25519");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    s.ok(&["keys", "add", &format!("{}.pub", key.display())])?;
    push(&s, "blocky", "[agent]\nssh_listen = \"127.0.0.1:0\"\n[[scripts]]\nname = \"slow-setup\"\nscript = \"sleep 6; echo done > $HOME/ready-marker\"\nblocks_login = true\ntimeout = \"60s\"\n")?;
    s.ok(&["create", "b", "-t", "blocky"])?;
    let (w, _) = s.wait_for("b", T, |w| w["agent"]["ssh_addr"].is_string())?;
    let home = home_of(&w);
    let port = w["agent"]["ssh_addr"]
        .as_str()
        .unwrap_or_default()
        .rsplit(':')
        .next()
        .unwrap_or("0")
        .to_string();
    let ssh = |extra: &[&str]| -> R<std::process::Output> {
        Ok(Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
            ])
            .arg(&key)
            .args(["-p", &port])
            .args(extra)
            .args([
                "b@127.0.0.1",
                "cat ~/ready-marker 2>/dev/null || echo not-yet",
            ])
            .stdin(Stdio::null())
            .output()?)
    };
    // `outpost ssh --no-wait` (through the relay) proceeds at once.
    let agent = SshAgent::start(s.dir.path(), &key)?;
    let sock = agent.sock.clone();
    let o = Command::new(bin("outpost"))
        .args([
            "ssh",
            "b",
            "--no-wait",
            "--",
            "cat ~/ready-marker 2>/dev/null || echo not-yet",
        ])
        .env("OUTPOST_CONFIG_DIR", s.config_dir())
        .env("SSH_AUTH_SOCK", &sock)
        .stdin(Stdio::null())
        .output()?;
    drop(agent);
    assert_eq!(
        out_of(&o),
        "not-yet\n",
        "outpost ssh --no-wait: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let no_wait = ssh(&["-o", "SetEnv=OUTPOST_NO_WAIT=1"])?;
    assert_eq!(out_of(&no_wait), "not-yet\n", "--no-wait proceeds at once");
    let waited = ssh(&[])?;
    assert_eq!(
        out_of(&waited),
        "done\n",
        "the session waited for the blocking script"
    );
    assert!(
        String::from_utf8_lossy(&waited.stderr).contains("block login"),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );

    // ~/personalize runs on every start; its failure is shown but not fatal.
    std::fs::write(
        home.join("personalize"),
        "#!/bin/sh\necho personalized >> $HOME/personalize.log\nexit 1\n",
    )?;
    std::fs::set_permissions(
        home.join("personalize"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    s.ok(&["restart", "b"])?;
    s.wait_for("b", T, |w| w["agent"]["lifecycle"] == "ready")?;
    s.ok(&["restart", "b"])?;
    s.wait_for("b", T, |w| {
        w["agent"]["lifecycle"] == "ready" && w["health"]["healthy"] == true
    })?;
    eventually(|| {
        Ok((std::fs::read_to_string(home.join("personalize.log"))
            .unwrap_or_default()
            .lines()
            .count()
            == 2)
            .then_some(()))
    })?;
    eventually(|| {
        Ok(s.ok(&["logs", "b", "--source", "personalize"])?
            .contains("~/personalize failed")
            .then_some(()))
    })?;
    Ok(())
}
both_backends!(blocking_login_and_personalize);

fn out_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Dotfiles from a local bare repository (a file URL): with an install script it runs; without
/// one the dotfiles are linked into the home and what they replace is kept as `.bak`.
/// `outpost-agent dotfiles URL` does the same by hand.
fn dotfiles_install_and_link(backend: Backend) -> R {
    let s = Server::start(backend)?;
    // The dotfiles repositories live on a git host (workspace users may not open another
    // user's repository by path).
    let daemon = GitDaemon::start(s.dir.path())?;
    let make_repo = |name: &str, files: &[(&str, &str, bool)]| -> R<String> {
        let work = s.dir.path().join(format!("{name}-work"));
        let bare = s.dir.path().join(format!("{name}.git"));
        std::fs::create_dir_all(&work)?;
        git(&["init", "-q"], &work)?;
        for (path, body, exec) in files {
            std::fs::write(work.join(path), body)?;
            if *exec {
                std::fs::set_permissions(
                    work.join(path),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
            }
        }
        git(&["add", "-A"], &work)?;
        git(&["commit", "-qm", "dots"], &work)?;
        git(
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap_or_default(),
                bare.to_str().unwrap_or_default(),
            ],
            s.dir.path(),
        )?;
        Ok(daemon.url(&format!("{name}.git")))
    };
    let with_install = make_repo(
        "inst",
        &[(
            "install.sh",
            "#!/bin/sh\necho installed > \"$HOME/installed-by-dotfiles\"\n",
            true,
        )],
    )?;
    let plain = make_repo(
        "plain",
        &[
            (".vimrc", "set number\n", false),
            (".gitconfig", "[user]\n", false),
        ],
    )?;

    s.ok(&[
        "create",
        "d1",
        "-p",
        &format!("dotfiles_uri={with_install}"),
    ])?;
    let (w, _) = s.wait_for("d1", T, |w| w["agent"]["lifecycle"] == "ready")?;
    let home = home_of(&w);
    eventually(|| Ok(home.join("installed-by-dotfiles").exists().then_some(())))?;
    // The agent sends its log lines in batches: the file can appear before the line does.
    eventually(|| {
        Ok(s.ok(&["logs", "d1", "--source", "dotfiles"])?
            .contains("running install.sh")
            .then_some(()))
    })?;

    // Without an install script: links, and a .bak of the file replaced.
    s.ok(&["stop", "d1"])?;
    std::fs::write(home.join(".vimrc"), "old settings\n")?;
    s.json(&[
        "start",
        "d1",
        "-p",
        &format!("dotfiles_uri={plain}"),
        "--no-wait",
    ])?;
    s.wait_for("d1", T, |w| w["status"] == "running")?;
    let h = home.clone();
    eventually(|| Ok(h.join(".gitconfig").is_symlink().then_some(())))?;
    assert!(home.join(".vimrc").is_symlink());
    assert_eq!(
        std::fs::read_to_string(home.join(".vimrc"))?,
        "set number\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".vimrc.bak"))?,
        "old settings\n"
    );

    // By hand.
    let by_hand = s.dir.path().join("hand-home");
    std::fs::create_dir_all(&by_hand)?;
    let o = Command::new(bin("outpost-agent"))
        .args(["dotfiles", &plain])
        .env("HOME", &by_hand)
        .output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(by_hand.join(".vimrc").is_symlink());
    Ok(())
}
both_backends!(dotfiles_install_and_link);

/// A cron script (with a seconds field) runs on its schedule, starting after the start scripts.
fn cron_scripts(backend: Backend) -> R {
    let s = Server::start(backend)?;
    push(&s, "cronny", "[[scripts]]\nname = \"first\"\nscript = \"sleep 2; date +%s%N > $HOME/start-done\"\n[[scripts]]\nname = \"tick\"\nscript = \"date +%s%N >> $HOME/ticks\"\ncron = \"*/1 * * * * *\"\n")?;
    s.ok(&["create", "c", "-t", "cronny"])?;
    let (w, _) = s.wait_for("c", T, |w| w["agent"]["lifecycle"] == "ready")?;
    let home = home_of(&w);
    let h = home.clone();
    eventually(|| {
        Ok((std::fs::read_to_string(h.join("ticks"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 3)
            .then_some(()))
    })?;
    let started: u128 = std::fs::read_to_string(home.join("start-done"))?
        .trim()
        .parse()?;
    let ticks: Vec<u128> = std::fs::read_to_string(home.join("ticks"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        ticks[0] >= started,
        "the first tick came after the start scripts"
    );
    assert!(
        ticks.windows(2).all(|p| p[1] - p[0] >= 500_000_000),
        "about a second apart: {ticks:?}"
    );
    // A bad schedule is refused at push time, with the field.
    let dir = s.dir.path().join("badcron");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("template.toml"), "[provisioner]\ntype = \"local\"\n[[scripts]]\nname = \"x\"\nscript = \"true\"\ncron = \"* * *\"\n")?;
    let o = s.cli(&["templates", "push", dir.to_str().unwrap_or_default()])?;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("scripts[0].cron"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}
both_backends!(cron_scripts);

/// git over SSH with the user's git key held by control: inside the workspace `GIT_SSH_COMMAND`
/// points at the agent's in-memory ssh-agent; a loopback sshd that trusts only that key serves
/// the repository. Without the agent the same clone is refused. No secret lands in the home.
fn git_over_ssh_with_the_control_held_key(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let public = s.ok(&["publickey"])?;
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert_eq!(s.ok(&["publickey"])?, public, "the same key every time");

    // A loopback sshd trusting only that key, serving a bare repository.
    let dir = s.dir.path().to_path_buf();
    std::fs::write(dir.join("authorized_keys"), &public)?;
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("hostkey"))
        .status()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n",
            d = dir.display()
        ),
    )?;
    std::fs::create_dir_all("/run/sshd")?;
    let mut sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stderr(Stdio::null())
        .spawn()?;
    let work = dir.join("src");
    std::fs::create_dir_all(&work)?;
    git(&["init", "-q"], &work)?;
    std::fs::write(work.join("README"), "from the git host\n")?;
    git(&["add", "README"], &work)?;
    git(&["commit", "-qm", "one"], &work)?;
    git(
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap_or_default(),
            dir.join("remote.git").to_str().unwrap_or_default(),
        ],
        &dir,
    )?;

    let url = format!("ssh://root@127.0.0.1:{port}{}/remote.git", dir.display());
    let opts = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes";
    push(
        &s,
        "gitty",
        &format!(
            "[[scripts]]\nname = \"clone\"\nscript = \"GIT_SSH_COMMAND=\\\"$GIT_SSH_COMMAND {opts}\\\" git clone -q {url} $HOME/with-agent; GIT_SSH_COMMAND=\\\"ssh {opts} -o IdentityAgent=none\\\" git clone -q {url} $HOME/without-agent 2>$HOME/without.err || echo refused > $HOME/without-agent.status\"\ntimeout = \"60s\"\n"
        ),
    )?;
    s.ok(&["create", "g", "-t", "gitty"])?;
    let (w, _) = s.wait_for("g", T, |w| {
        w["agent"]["lifecycle"] == "ready" || w["agent"]["lifecycle"] == "start_error"
    })?;
    let home = home_of(&w);
    let logs = s.ok(&["logs", "g"])?;
    let _ = sshd.kill();
    let _ = sshd.wait();
    assert_eq!(
        std::fs::read_to_string(home.join("with-agent/README")).unwrap_or_default(),
        "from the git host\n",
        "{logs}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("without-agent.status"))?,
        "refused\n",
        "sshd trusts only the git key"
    );
    // The git key is nowhere in the persistent home: the only private key there is the
    // workspace's own SSH host key (kept there on purpose, issue 4).
    let o = Command::new("grep")
        .args(["-rl", "OPENSSH PRIVATE KEY"])
        .arg(&home)
        .output()?;
    let found: Vec<String> = out_of(&o).lines().map(String::from).collect();
    assert_eq!(
        found,
        vec![home
            .join(".outpost/ssh_host_ed25519_key")
            .display()
            .to_string()],
        "private keys in the home"
    );
    Ok(())
}
both_backends!(git_over_ssh_with_the_control_held_key);

/// Inside a workspace the `outpost` CLI works without logging in: the agent hands it a
/// short-lived credential scoped to the workspace's owner (no admin rights, no new tokens), and
/// nothing is written into the home.
fn cli_inside_a_workspace_without_login(backend: Backend) -> R {
    let s = Server::start(backend)?;
    push(
        &s,
        "inside",
        "[[scripts]]\nname = \"use-cli\"\nscript = \"outpost --json whoami > $HOME/whoami.json; outpost --json list > $HOME/list.json; outpost tokens create x 2> $HOME/tokens.err; echo $? > $HOME/tokens.rc\"\ntimeout = \"60s\"\n",
    )?;
    s.ok(&["create", "w", "-t", "inside"])?;
    let (w, _) = s.wait_for("w", T, |w| w["agent"]["lifecycle"] == "ready")?;
    let home = home_of(&w);
    let me: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("whoami.json"))?)?;
    assert_eq!(me["username"], "admin");
    assert_eq!(
        me["admin"], false,
        "a workspace credential carries no admin rights"
    );
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("list.json"))?)?;
    assert_eq!(list[0]["name"], "w");
    assert_ne!(std::fs::read_to_string(home.join("tokens.rc"))?.trim(), "0");
    assert!(std::fs::read_to_string(home.join("tokens.err"))?
        .contains("only reaches its own workspace"));
    assert!(
        !home.join(".config/outpost/session.json").exists(),
        "no credential written into the home"
    );
    let rows =
        s.db_rows("SELECT scope, expires_at - created_at FROM api_tokens WHERE scope IS NOT NULL")?;
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r[0].starts_with("workspace:") && r[1] == "3600000"),
        "{rows:?}"
    );
    Ok(())
}
both_backends!(cli_inside_a_workspace_without_login);
