//! `outpost ssh`, `config-ssh` and plain OpenSSH as a new user meets them: the CLI and ssh run as
//! a real Unix account whose passwd home is the test's, so OpenSSH reads that account's
//! `~/.ssh/config`, default keys and ssh-agent, exactly as on a user's laptop.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::account::*;
use crate::both_backends;
use crate::harness::*;

const PASSWORD: &str = "user-password";

/// A server, and a real account signed in to it as an Outpost user of the same name.
struct Setup {
    s: Server,
    acct: Account,
}

impl Setup {
    fn start(backend: Backend, extra: &[&str], login: &[&str]) -> R<Option<Setup>> {
        let Some(acct) = Account::create()? else {
            return Ok(None);
        };
        let s = Server::start_with(backend, extra)?;
        let o = s.cli_stdin(
            &["users", "create", &acct.name, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        )?;
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut args = vec![
            "login",
            &s.url,
            "--username",
            &acct.name,
            "--password-stdin",
        ];
        args.extend_from_slice(login);
        let o = acct.run(acct.outpost(&args), &format!("{PASSWORD}\n"))?;
        anyhow::ensure!(
            o.status.success(),
            "login: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(Some(Setup { s, acct }))
    }

    fn outpost(&self, args: &[&str]) -> R<String> {
        self.acct.ok(self.acct.outpost(args))
    }

    /// `ssh ARGS` as the account, with nothing but its own config (BatchMode: never a prompt).
    fn ssh(&self, args: &[&str], agent: Option<&AccountAgent>) -> R<Output> {
        let mut c = self.acct.cmd("ssh");
        c.args(["-o", "BatchMode=yes"]).args(args);
        if let Some(a) = agent {
            c.env("SSH_AUTH_SOCK", &a.sock);
        }
        self.acct.run(c, "")
    }

    /// `outpost ssh ARGS` as the account.
    fn outpost_ssh(&self, args: &[&str], agent: Option<&AccountAgent>) -> R<Output> {
        let mut a = vec!["ssh"];
        a.extend_from_slice(args);
        let mut c = self.acct.outpost(&a);
        if let Some(ag) = agent {
            c.env("SSH_AUTH_SOCK", &ag.sock);
        }
        self.acct.run(c, "")
    }

    /// `count` keys Outpost does not know, loaded in an ssh-agent of the account's together
    /// with `extra`: more than the server's authentication attempts.
    fn agent_with_other_keys(&self, count: usize, extra: &[&Path]) -> R<AccountAgent> {
        let mut keys = Vec::new();
        for i in 0..count {
            keys.push(self.acct.keygen(&format!("other{i}"))?);
        }
        let mut all: Vec<&Path> = keys.iter().map(|k| k.as_path()).collect();
        all.extend_from_slice(extra);
        let agent = self.acct.ssh_agent(&all)?;
        // Other keys as files are not what is tested here: only the agent holds them.
        for k in &keys {
            std::fs::remove_file(k)?;
            std::fs::remove_file(k.with_extension("pub"))?;
        }
        Ok(agent)
    }

    fn known_host(&self, host: &str) -> R<Option<String>> {
        let text = std::fs::read_to_string(self.acct.home().join(".config/outpost/known_hosts"))?;
        Ok(text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .map(str::to_string))
    }
}

fn expect(o: &Output, code: i32, stdout: &str) {
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
        (Some(code), stdout),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Break 1: `outpost ssh` offers the key that `login --create-ssh-key` made (not one of
/// OpenSSH's default names), with no ssh config at all, also beside an ssh-agent holding more
/// unknown keys than the server allows attempts. And: `create` prints each build log line once.
fn break1_outpost_ssh_offers_the_login_key(backend: Backend) -> R {
    let Some(t) = Setup::start(backend, &[], &["--create-ssh-key"])? else {
        return Ok(());
    };
    let home = t.acct.home();
    assert!(home.join(".ssh/outpost_ed25519").is_file());
    // Logging in again does not upload the key twice.
    let o = t.acct.run(
        t.acct.outpost(&[
            "login",
            &t.s.url,
            "--username",
            &t.acct.name,
            "--password-stdin",
            "--create-ssh-key",
        ]),
        &format!("{PASSWORD}\n"),
    )?;
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already uploaded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // `outpost create` streams the provisioner's log, each line once.
    let o = t
        .acct
        .run(t.acct.outpost(&["create", "dev", "--template", "base"]), "")?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let shown: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    let log = t.outpost(&["logs", "dev", "--build"])?;
    let logged: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!logged.is_empty(), "the build logged nothing");
    assert_eq!(shown, logged, "create's stderr:\n{err}");

    // Break 1: the key login made is offered by `outpost ssh` (no ssh config at all yet).
    assert!(!home.join(".ssh/config").exists());
    expect(
        &t.outpost_ssh(&["dev", "--", "echo in-1"], None)?,
        0,
        "in-1\n",
    );
    // An ssh-agent holding more unknown keys than the server allows attempts.
    let agent = t.agent_with_other_keys(12, &[])?;
    expect(
        &t.outpost_ssh(&["dev", "--", "echo in-2"], Some(&agent))?,
        0,
        "in-2\n",
    );

    Ok(())
}
both_backends!(break1_outpost_ssh_offers_the_login_key);

/// Break 2: `outpost ssh` works beside config-ssh's block (`ProxyUseFdpass yes`) in the user's
/// ~/.ssh/config; plain ssh too, with and without an ssh-agent full of other keys, and for a
/// user whose own config says `IdentitiesOnly yes` for every host.
fn break2_outpost_ssh_beside_the_config_ssh_block(backend: Backend) -> R {
    let Some(t) = Setup::start(backend, &[], &["--create-ssh-key"])? else {
        return Ok(());
    };
    let home = t.acct.home();
    t.outpost(&["create", "dev", "--template", "base"])?;
    let agent = t.agent_with_other_keys(12, &[])?;
    // Break 2: with config-ssh's block (ProxyUseFdpass) in the user's ~/.ssh/config.
    t.outpost(&["config-ssh"])?;
    let cfg = std::fs::read_to_string(home.join(".ssh/config"))?;
    assert!(
        cfg.contains("ProxyUseFdpass yes") && cfg.contains("IdentitiesOnly yes"),
        "{cfg}"
    );
    expect(
        &t.outpost_ssh(&["dev", "--", "echo in-3; exit 3"], None)?,
        3,
        "in-3\n",
    );
    expect(&t.ssh(&["dev.outpost", "echo plain"], None)?, 0, "plain\n");
    expect(
        &t.ssh(&["dev.outpost", "echo agent"], Some(&agent))?,
        0,
        "agent\n",
    );

    // A user whose own config says IdentitiesOnly for every host (before Outpost's block).
    std::fs::write(
        home.join(".ssh/config"),
        format!("Host *\n  IdentitiesOnly yes\n  ServerAliveInterval 60\n\n{cfg}"),
    )?;
    expect(
        &t.ssh(&["dev.outpost", "echo only"], Some(&agent))?,
        0,
        "only\n",
    );
    expect(
        &t.outpost_ssh(&["dev", "--", "echo only2"], Some(&agent))?,
        0,
        "only2\n",
    );

    Ok(())
}
both_backends!(break2_outpost_ssh_beside_the_config_ssh_block);

/// Break 3: plain ssh to a workspace made after config-ssh, and to one deleted and made again
/// under the same name (a new host key), with strict host-key checking and no warning; a key
/// that is not control's is still refused.
fn break3_workspaces_made_after_config_ssh(backend: Backend) -> R {
    let Some(t) = Setup::start(backend, &[], &["--create-ssh-key"])? else {
        return Ok(());
    };
    let home = t.acct.home();
    t.outpost(&["create", "dev", "--template", "base"])?;
    t.outpost(&["config-ssh"])?;
    // Break 3: a workspace made after config-ssh is reachable with strict checking.
    t.outpost(&["create", "dev2", "--template", "base"])?;
    expect(
        &t.ssh(&["dev2.outpost", "echo second"], None)?,
        0,
        "second\n",
    );
    let first_key = t.known_host("dev2.outpost")?.unwrap_or_default();
    assert!(first_key.contains("ssh-ed25519"), "{first_key}");
    // Deleted and made again: a new host key replaces the stale one, no MITM warning.
    t.outpost(&["delete", "dev2"])?;
    t.outpost(&["create", "dev2", "--template", "base"])?;
    let o = t.ssh(&["dev2.outpost", "echo again"], None)?;
    expect(&o, 0, "again\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("WARNING") && !err.contains("IDENTIFICATION"),
        "{err}"
    );
    let second_key = t.known_host("dev2.outpost")?.unwrap_or_default();
    assert_ne!(first_key, second_key, "the host key should have changed");

    // Strict checking is still on: a host key that is not control's is refused. (HostKeyAlias
    // makes ssh check the agent's real key against another, wrong, entry.)
    let kh = home.join(".config/outpost/known_hosts");
    let mut text = std::fs::read_to_string(&kh)?;
    text.push_str("elsewhere.outpost ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGrZ0NDr5XrXUF7Bpc1LyRo2bU0IeOcWVUi9qcPNwtU\n");
    std::fs::write(&kh, text)?;
    let o = t.ssh(
        &[
            "-o",
            "HostKeyAlias=elsewhere.outpost",
            "dev.outpost",
            "true",
        ],
        None,
    )?;
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HOST IDENTIFICATION HAS CHANGED"));
    let o = t.ssh(
        &["-o", "HostKeyAlias=unknown.outpost", "dev.outpost", "true"],
        None,
    )?;
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Host key verification failed"));
    Ok(())
}
both_backends!(break3_workspaces_made_after_config_ssh);

/// A user who already had `~/.ssh/id_ed25519` and uploaded it; then one whose only uploaded key
/// lives in an ssh-agent (no file): `outpost ssh` and plain ssh offer it by its public half.
fn existing_keys_and_agent_only_keys(backend: Backend) -> R {
    let Some(t) = Setup::start(backend, &[], &[])? else {
        return Ok(());
    };
    let id = t.acct.keygen("id_ed25519")?;
    t.outpost(&["keys", "add", &format!("{}.pub", id.display())])?;
    t.outpost(&["create", "dev", "--template", "base"])?;
    expect(&t.outpost_ssh(&["dev", "--", "echo id"], None)?, 0, "id\n");
    let agent = t.agent_with_other_keys(12, &[])?;
    expect(
        &t.outpost_ssh(&["dev", "--", "echo id2"], Some(&agent))?,
        0,
        "id2\n",
    );
    t.outpost(&["config-ssh"])?;
    expect(
        &t.ssh(&["dev.outpost", "echo id3"], Some(&agent))?,
        0,
        "id3\n",
    );
    drop(agent);

    // A key uploaded after config-ssh and the old one removed: `keys add`/`remove` rewrite the
    // block, so plain ssh offers the new key without config-ssh again.
    let listed: serde_json::Value = serde_json::from_str(&t.outpost(&["--json", "keys", "list"])?)?;
    let old_id = listed[0]["id"].as_str().unwrap_or_default().to_string();
    let second = t.acct.keygen("laptop2")?;
    t.outpost(&["keys", "add", &format!("{}.pub", second.display())])?;
    t.outpost(&["keys", "remove", &old_id])?;
    let cfg = std::fs::read_to_string(t.acct.home().join(".ssh/config"))?;
    assert!(
        cfg.contains("laptop2") && !cfg.contains("id_ed25519"),
        "{cfg}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = t.ssh(&["dev.outpost", "echo id4"], None)?;
        if o.status.success() {
            expect(&o, 0, "id4\n");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "new key refused: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Only an ssh-agent holds the uploaded key: the private file is gone.
    let hw = t.acct.keygen("hardware")?;
    let listed: serde_json::Value = serde_json::from_str(&t.outpost(&["--json", "keys", "list"])?)?;
    for k in listed.as_array().into_iter().flatten() {
        t.outpost(&["keys", "remove", k["id"].as_str().unwrap_or_default()])?;
    }
    t.outpost(&["keys", "add", &format!("{}.pub", hw.display())])?;
    let agent = t.agent_with_other_keys(8, &[&hw])?;
    std::fs::remove_file(&hw)?;
    std::fs::remove_file(hw.with_extension("pub"))?;
    // The agent picks up key changes at once; a moment for the refresh to land.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = t.outpost_ssh(&["dev", "--", "echo hw"], Some(&agent))?;
        if o.status.success() {
            expect(&o, 0, "hw\n");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "agent-only key refused: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t.outpost(&["config-ssh"])?;
    expect(
        &t.ssh(&["dev.outpost", "echo hw2"], Some(&agent))?,
        0,
        "hw2\n",
    );
    // Without any uploaded key at hand, the CLI says what to do.
    let o = t.outpost_ssh(&["dev", "--", "true"], None)?;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("outpost keys add"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}
both_backends!(existing_keys_and_agent_only_keys);

/// Plain OpenSSH tools through config-ssh, as the account with an ssh-agent full of other keys:
/// scp both ways, an sftp batch, rsync and git over `dev.outpost`.
fn tools_through_config_ssh(backend: Backend) -> R {
    let Some(t) = Setup::start(backend, &[], &["--create-ssh-key"])? else {
        return Ok(());
    };
    t.outpost(&["create", "dev", "--template", "base"])?;
    t.outpost(&["config-ssh"])?;
    // Every tool runs beside an ssh-agent holding more unknown keys than attempts allowed.
    let agent = t.agent_with_other_keys(12, &[])?;
    let ws_home = t.ssh(&["dev.outpost", "pwd"], None)?;
    let ws_home = std::path::PathBuf::from(String::from_utf8_lossy(&ws_home.stdout).trim());
    assert!(ws_home.is_dir(), "{}", ws_home.display());
    let blob: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    t.acct.write("blob.bin", "")?;
    std::fs::write(t.acct.home().join("blob.bin"), &blob)?;
    let run = |prog: &str, args: &[&str]| -> R {
        let mut c = t.acct.cmd(prog);
        c.args(args).env("SSH_AUTH_SOCK", &agent.sock);
        t.acct.ok(c).map(|_| ())
    };
    run("scp", &["-q", "blob.bin", "dev.outpost:up.bin"])?;
    assert_eq!(std::fs::read(ws_home.join("up.bin"))?, blob);
    run("scp", &["-q", "dev.outpost:up.bin", "down.bin"])?;
    assert_eq!(std::fs::read(t.acct.home().join("down.bin"))?, blob);
    t.acct.write(
        "batch",
        "mkdir d\nput blob.bin d/x\nrename d/x d/y\nget d/y got.bin\nls -l d\n",
    )?;
    run("sftp", &["-q", "-b", "batch", "dev.outpost"])?;
    assert_eq!(std::fs::read(t.acct.home().join("got.bin"))?, blob);
    for i in 0..6 {
        t.acct
            .write(&format!("tree/sub{}/f{i}", i % 2), &format!("file {i}\n"))?;
    }
    run("rsync", &["-a", "--checksum", "tree/", "dev.outpost:tree/"])?;
    assert_eq!(
        std::fs::read_to_string(ws_home.join("tree/sub1/f5"))?,
        "file 5\n"
    );
    git(&["init", "-q", "--bare", "repo.git"], &ws_home)?;
    give_to_home_owner(&ws_home.join("repo.git"), &ws_home)?;
    let acct_git = |args: &[&str], dir: &str| -> R {
        let mut c = t.acct.cmd("git");
        c.args(GIT_IDENTITY)
            .args(args)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .current_dir(t.acct.home().join(dir));
        t.acct.ok(c).map(|_| ())
    };
    t.acct.write("wc/README", "hello from git\n")?;
    acct_git(&["init", "-q"], "wc")?;
    acct_git(&["add", "README"], "wc")?;
    acct_git(&["commit", "-qm", "first"], "wc")?;
    acct_git(&["push", "-q", "dev.outpost:repo.git", "HEAD:main"], "wc")?;
    acct_git(
        &[
            "clone",
            "-q",
            "-b",
            "main",
            "dev.outpost:repo.git",
            "cloned",
        ],
        ".",
    )?;
    assert_eq!(
        std::fs::read_to_string(t.acct.home().join("cloned/README"))?,
        "hello from git\n"
    );
    Ok(())
}
both_backends!(tools_through_config_ssh);

/// Control is killed and restarted during a loop of `ssh WS.outpost true`: every session that
/// starts while control is down, or before the agent's tunnel is back, waits for it (saying so
/// on stderr) instead of failing; meanwhile the agent reads `reconnecting`.
fn ssh_rides_out_a_control_restart(backend: Backend) -> R {
    // Heartbeats every 5 s: the agent counts as alive for 15 s while its tunnel is down.
    let Some(mut t) = Setup::start(backend, &["--heartbeat-secs", "5"], &["--create-ssh-key"])?
    else {
        return Ok(());
    };
    t.outpost(&["create", "dev", "--template", "base"])?;
    t.outpost(&["config-ssh"])?;
    let show = |t: &Setup| -> R<serde_json::Value> {
        Ok(serde_json::from_str(
            &t.outpost(&["--json", "show", "dev"])?,
        )?)
    };
    let agent_pid = agent_pid(&show(&t)?).ok_or_else(|| anyhow::anyhow!("no agent pid"))?;

    // The loop runs on its own thread; it holds `gate` for each session, so the kill below
    // falls between two sessions (a session in flight when control dies is lost with it).
    let gate = std::sync::Arc::new(std::sync::Mutex::new(()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (acct_uid, acct_gid, home, name) =
        (t.acct.uid, t.acct.gid, t.acct.home(), t.acct.name.clone());
    let looper = {
        let (gate, stop, done) = (gate.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || -> Vec<(i32, String)> {
            use std::os::unix::process::CommandExt;
            let mut failures = Vec::new();
            let mut waited = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Let the main thread take the gate between two sessions.
                std::thread::sleep(Duration::from_millis(20));
                let _held = gate.lock().unwrap_or_else(|p| p.into_inner());
                let o = Command::new("ssh")
                    .args(["-o", "BatchMode=yes", "dev.outpost", "true"])
                    .env_clear()
                    .env("HOME", &home)
                    .env("USER", &name)
                    .env("PATH", "/usr/bin:/bin")
                    .current_dir(&home)
                    .uid(acct_uid)
                    .gid(acct_gid)
                    .stdin(std::process::Stdio::null())
                    .output();
                match o {
                    Ok(o) if o.status.success() => {
                        let err = String::from_utf8_lossy(&o.stderr).into_owned();
                        if err.contains("waiting up to") {
                            waited.push((0, err));
                        }
                    }
                    Ok(o) => failures.push((
                        o.status.code().unwrap_or(-1),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )),
                    Err(e) => failures.push((-1, e.to_string())),
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            failures.extend(waited.into_iter().map(|(_, e)| (0, e)));
            failures
        })
    };
    let wait_done = |n: usize| -> R {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while done.load(std::sync::atomic::Ordering::SeqCst) < n {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the ssh loop stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    wait_done(5)?;
    {
        let _between = gate.lock().unwrap_or_else(|p| p.into_inner());
        t.s.kill();
        // Keep the agent from reconnecting until control's view of it has been read.
        signal(agent_pid, libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = done.load(std::sync::atomic::Ordering::SeqCst);
    t.s.restart()?;
    let w = show(&t)?;
    signal(agent_pid, libc::SIGCONT);
    assert_eq!(w["status"], "running", "{w:#}");
    assert_eq!(w["agent"]["status"], "reconnecting", "{w:#}");
    wait_done(before + 5)?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let results = looper
        .join()
        .map_err(|_| anyhow::anyhow!("the ssh loop panicked"))?;
    let failures: Vec<_> = results.iter().filter(|(c, _)| *c != 0).collect();
    assert!(failures.is_empty(), "sessions failed: {failures:#?}");
    let waits: Vec<_> = results.iter().filter(|(c, _)| *c == 0).collect();
    assert!(
        !waits.is_empty(),
        "no session had to wait (the outage was not seen)"
    );
    // One line on stderr per reason waited for, nothing else.
    for (_, err) in &waits {
        let lines: Vec<&str> = err.lines().collect();
        let reasons: std::collections::HashSet<&str> = lines.iter().copied().collect();
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("outpost: ") && l.contains("waiting up to"))
                && reasons.len() == lines.len(),
            "{err}"
        );
    }
    let w = show(&t)?;
    assert_eq!(w["agent"]["status"], "connected", "{w:#}");
    Ok(())
}
both_backends!(ssh_rides_out_a_control_restart);

/// Through control's relay, as the account: `outpost config-ssh` keeps the user's own config and
/// is idempotent and removable; plain `ssh dev.outpost`; `outpost ssh` starts a stopped
/// workspace (key in an ssh-agent); `outpost port-forward`; another user's token cannot reach
/// the workspace; the tunnel is back after a control restart.
fn relay_config_ssh_and_port_forward(backend: Backend) -> R {
    let Some(mut t) = Setup::start(backend, &[], &[])? else {
        return Ok(());
    };
    let key = t.acct.keygen("id_ed25519")?;
    t.outpost(&["keys", "add", &format!("{}.pub", key.display())])?;
    t.outpost(&["create", "dev", "--template", "base"])?;
    // An existing config is kept; the block is idempotent and removable.
    t.acct
        .write(".ssh/config", "Host other\n  User someone\n")?;
    t.outpost(&["config-ssh"])?;
    t.outpost(&["config-ssh"])?;
    let cfg = t.acct.home().join(".ssh/config");
    let text = std::fs::read_to_string(&cfg)?;
    assert_eq!(text.matches("START-OUTPOST").count(), 1, "{text}");
    assert!(text.starts_with("Host other\n"), "{text}");
    // Over plain HTTP the CLI hands the relay connection to ssh (no process in the data path).
    assert!(
        text.contains("ProxyUseFdpass yes") && text.contains("ssh --stdio --fdpass %h"),
        "{text}"
    );
    expect(
        &t.ssh(&["dev.outpost", "echo through the relay; exit 9"], None)?,
        9,
        "through the relay\n",
    );

    // `outpost ssh` with an ssh-agent holding the key (its file gone); it starts the workspace.
    t.outpost(&["stop", "dev"])?;
    let agent = t.acct.ssh_agent(&[&key])?;
    std::fs::remove_file(&key)?;
    expect(
        &t.outpost_ssh(&["dev", "--", "echo started-and-in; exit 5"], Some(&agent))?,
        5,
        "started-and-in\n",
    );
    let status = |t: &Setup| -> R<String> {
        let w: serde_json::Value = serde_json::from_str(&t.outpost(&["--json", "show", "dev"])?)?;
        Ok(w["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status(&t)?, "running");

    // port-forward to a server inside the workspace.
    let free = || -> R<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (lport, rport) = (free()?, free()?);
    let o = t.ssh(
        &[
            "dev.outpost",
            &format!("cd ~ && echo forwarded > page.txt && (nohup python3 -m http.server {rport} --bind 127.0.0.1 >/dev/null 2>&1 & echo $! > web.pid)"),
        ],
        Some(&agent),
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut pf = t
        .acct
        .outpost(&["port-forward", "dev", "--tcp", &format!("{lport}:{rport}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut body = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(o) = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{lport}/page.txt")])
            .output()
        {
            if o.status.success() {
                body = String::from_utf8_lossy(&o.stdout).into_owned();
                break;
            }
        }
    }
    let _ = pf.kill();
    let _ = pf.wait();
    // The web server the test started inside the workspace, by its pid.
    let _ = t.ssh(&["dev.outpost", "kill $(cat ~/web.pid)"], Some(&agent))?;
    assert_eq!(body, "forwarded\n");

    // Another user cannot reach the workspace through the relay.
    t.s.cli_stdin(
        &["users", "create", "bob", "--password-stdin"],
        "bob-password\n",
    )?;
    let (_, login) = post_json(
        &format!("{}/api/v1/login", t.s.url),
        None,
        &serde_json::json!({"username": "bob", "password": "bob-password"}),
    )?;
    let bob = login["token"].as_str().unwrap_or_default().to_string();
    for path in ["relay/ssh", "relay/tcp/22"] {
        let (st, v) = http(
            "GET",
            &format!("{}/api/v1/workspaces/dev/{path}", t.s.url),
            Some(&bob),
            None,
        )?;
        assert_eq!(st, 404, "{path}: {v}");
    }
    let (st, _) = http(
        "GET",
        &format!("{}/api/v1/workspaces/dev/relay/ssh", t.s.url),
        None,
        None,
    )?;
    assert_eq!(st, 401);

    // After control is killed and restarted, ssh just works (the proxy waits for the tunnel).
    t.s.kill();
    t.s.restart()?;
    expect(
        &t.ssh(&["dev.outpost", "echo back"], Some(&agent))?,
        0,
        "back\n",
    );
    t.outpost(&["config-ssh", "--remove"])?;
    assert_eq!(
        std::fs::read_to_string(&cfg)?,
        "Host other\n  User someone\n"
    );
    Ok(())
}
both_backends!(relay_config_ssh_and_port_forward);
