//! The CLI's day-two ergonomics (issue 18): errors that say what to do when the server is
//! unreachable or the token expired or was revoked, shell completions that a real bash uses,
//! `--version` with the git commit, and `NO_COLOR`.

use std::process::{Command, Stdio};

use crate::harness::*;

fn outpost_env(args: &[&str], env: &[(&str, &str)]) -> R<std::process::Output> {
    let dir = tempfile::tempdir()?;
    Ok(Command::new(bin("outpost"))
        .args(args)
        .env("OUTPOST_CONFIG_DIR", dir.path())
        .env_remove("OUTPOST_URL")
        .env_remove("OUTPOST_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()?)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// No server at the URL: one clear line of cause (not the same chain three times) and what to
/// check. A token that expired or was revoked: the server's advice with the real URL in it.
#[test]
fn errors_say_what_to_do() -> R {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let o = outpost_env(&["--url", &url, "--token", "x", "list"], &[])?;
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.matches("cannot reach").count(), 1, "{e}");
    assert_eq!(e.matches("Connection refused").count(), 1, "{e}");
    assert!(
        e.contains(&format!("Is the Outpost server running at {url}?")),
        "{e}"
    );
    assert!(e.contains("OUTPOST_URL"), "{e}");

    let s = Server::start(Backend::Sqlite)?;
    let short = s.json(&["tokens", "create", "short", "--lifetime", "1s"])?;
    let short = short["token"].as_str().unwrap_or_default().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = outpost_env(&["--url", &s.url, "--token", &short, "list"], &[])?;
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("your API token has expired"), "{e}");
    assert!(
        e.contains(&format!("run `outpost login {}` again", s.url)),
        "{e}"
    );

    let t = s.json(&["tokens", "create", "ci", "--lifetime", "1h"])?;
    let (tok, id) = (
        t["token"].as_str().unwrap_or_default().to_string(),
        t["info"]["id"].as_str().unwrap_or_default().to_string(),
    );
    s.ok(&["tokens", "revoke", &id])?;
    let o = outpost_env(&["--url", &s.url, "--token", &tok, "whoami"], &[])?;
    let e = stderr(&o);
    assert!(e.contains("your API token was revoked"), "{e}");
    assert!(e.contains(&format!("outpost login {}", s.url)), "{e}");
    Ok(())
}

/// `outpost completion bash` loaded into a real bash completes subcommands and flags;
/// zsh and fish scripts are produced for those shells.
#[test]
fn completions_work_in_bash() -> R {
    let o = outpost_env(&["completion", "bash"], &[])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("outpost.bash");
    std::fs::write(&script, &o.stdout)?;
    let complete = |words: &str, cword: usize| -> R<String> {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _outpost outpost \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()?;
        anyhow::ensure!(o.status.success(), "bash: {}", stderr(&o));
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let subs = complete("outpost cre", 1)?;
    assert!(subs.lines().any(|l| l == "create"), "{subs}");
    let flags = complete("outpost server --post", 2)?;
    assert!(flags.lines().any(|l| l == "--postgres-url"), "{flags}");
    let shells = complete("outpost completion ", 2)?;
    for sh in ["bash", "zsh", "fish"] {
        assert!(shells.lines().any(|l| l == sh), "{shells}");
    }
    let zsh = outpost_env(&["completion", "zsh"], &[])?;
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef outpost"));
    let fish = outpost_env(&["completion", "fish"], &[])?;
    assert!(String::from_utf8_lossy(&fish.stdout).contains("complete -c outpost"));
    let bad = outpost_env(&["completion", "tcsh"], &[])?;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("possible values"), "{}", stderr(&bad));
    Ok(())
}

/// `--version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() -> R {
    let o = outpost_env(&["--version"], &[])?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(v.starts_with("outpost "), "{v}");
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if rev.status.success() {
        let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
        assert!(
            v.ends_with(&format!("({rev})")),
            "{v} is not built from {rev}"
        );
    }
    Ok(())
}

/// Log lines on a terminal are coloured, and not with `NO_COLOR` set.
#[test]
fn no_color_is_honoured() -> R {
    let port = free_port()?;
    // A daemon with no server to reach logs a warning on stderr, here a terminal (`script`).
    let run = |no_color: bool| -> R<String> {
        let dir = tempfile::tempdir()?;
        let cmd = format!(
            "{} {} provisioner start --url http://127.0.0.1:{port} --key k --workspaces-dir {} --isolation none",
            if no_color { "env NO_COLOR=1" } else { "env -u NO_COLOR" },
            bin("outpost").display(),
            dir.path().display()
        );
        let o = Command::new("timeout")
            .args(["3", "script", "-qfec", &cmd, "/dev/null"])
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let coloured = run(false)?;
    assert!(
        coloured.contains("WARN") || coloured.contains("ERROR"),
        "{coloured}"
    );
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = run(true)?;
    assert!(plain.contains("WARN") || plain.contains("ERROR"), "{plain}");
    assert!(!plain.contains("\x1b["), "colour with NO_COLOR: {plain:?}");
    Ok(())
}

/// `outpost server --config FILE`: a flag beats its OUTPOST_* variable, which beats the file,
/// which beats the default; `--print-config` says which won for each, secrets hidden; a bad
/// file is refused with the key it trips on; a real server runs with the file's settings.
#[test]
fn config_file_precedence() -> R {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("outpost.toml");
    std::fs::write(
        &file,
        "heartbeat-secs = 7\njob_lease_secs = 9\nstop-grace-secs = 11\naudit-retention = \"5d\"\n\
         log-json = true\nprovisioner-daemons = 3\nprovisioner-key = \"s3cret-key\"\n\
         postgres-url = \"postgres://u:pw-s3cret@127.0.0.1:1/x\"\n",
    )?;
    let f = file.display().to_string();
    let o = outpost_env(
        &[
            "server",
            "--config",
            &f,
            "--print-config",
            "--stop-grace-secs",
            "12",
        ],
        &[
            ("OUTPOST_JOB_LEASE_SECS", "8"),
            ("OUTPOST_STOP_GRACE_SECS", "13"),
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for line in [
        "heartbeat-secs = 7  # file",
        "job-lease-secs = 8  # environment",
        "stop-grace-secs = 12  # flag",
        "audit-retention = \"5d\"  # file",
        "log-json = true  # file",
        "provisioner-daemons = 3  # file",
        "provisioner-key = \"(hidden)\"  # file",
        "postgres-url = \"postgres://u:(hidden)@127.0.0.1:1/x\"  # file",
        "listen = \"127.0.0.1:7080\"  # default",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    assert!(!out.contains("s3cret"), "{out}");
    // The output is a config file itself.
    let parsed: toml::Table = out.parse()?;
    assert_eq!(parsed["heartbeat-secs"].as_integer(), Some(7));
    // OUTPOST_CONFIG names the file too.
    let o = outpost_env(&["server", "--print-config"], &[("OUTPOST_CONFIG", &f)])?;
    assert!(String::from_utf8_lossy(&o.stdout).contains("heartbeat-secs = 7  # file"));

    // Bad files change nothing and say why.
    for (text, want) in [
        ("nope = 1\n", "unknown setting `nope`"),
        ("heartbeat-secs = \"soon\"\n", "invalid value"),
        ("[server]\nlisten = \"x\"\n", "unknown setting `server`"),
        ("listen = { a = 1 }\n", "is a table"),
        ("log-json = 3\n", "is true or false"),
        ("heartbeat-secs = \n", "config file"),
    ] {
        std::fs::write(&file, text)?;
        let o = outpost_env(&["server", "--config", &f, "--print-config"], &[])?;
        assert!(!o.status.success(), "{text} was taken");
        assert!(stderr(&o).contains(want), "{text}: {}", stderr(&o));
    }
    let o = outpost_env(&["server", "--config", "/nonexistent/outpost.toml"], &[])?;
    assert!(
        stderr(&o).contains("/nonexistent/outpost.toml"),
        "{}",
        stderr(&o)
    );

    // A real server takes its settings from the file: no daemons of its own.
    std::fs::write(&file, "provisioner-daemons = 0\n")?;
    let s = Server::start_with(Backend::Sqlite, &["--config", &f])?;
    let (code, v) = http("GET", &format!("{}/readyz", s.url), None, None)?;
    assert_eq!(code, 503, "{v:#}");
    let detail = v["checks"]["provisioners"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("no provisioner daemon"), "{v:#}");
    Ok(())
}
