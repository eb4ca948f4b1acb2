//! Backups (issue 18): `outpost server backup` while the server runs; the data dir (and for
//! PostgreSQL the database, through the documented pg_dump/pg_restore) lost; `outpost server
//! restore` into the empty data dir; the same server address again: the running workspace's
//! agent reconnects and SSH works, the old token and workspaces are there. A restore without the
//! secrets key, into a non-empty dir, or of a file that is not a backup changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

fn sh(c: &mut Command) -> R {
    let o = c.output()?;
    anyhow::ensure!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

fn backup_and_restore(backend: Backend) -> R {
    let mut s = Server::start(backend.clone())?;
    let admin = crate::clients::Client::admin(&s)?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    s.ok(&["create", "kept"])?;
    s.ok(&["stop", "kept"])?;
    let data = s.data().display().to_string();
    let saved_key = s.dir.path().join("secrets.key.saved");
    std::fs::copy(s.data().join("secrets.key"), &saved_key)?;

    // Online: the server and its agent keep running.
    let out = s.dir.path().join("outpost-backup.tar");
    let out_s = out.display().to_string();
    let mut args = vec!["--json", "server", "backup", &out_s, "--data-dir", &data];
    let pg_url = match &backend {
        Backend::Postgres(u) => Some(u.clone()),
        Backend::Sqlite => None,
    };
    if let Some(u) = &pg_url {
        args.extend_from_slice(&["--postgres-url", u]);
    }
    let r: serde_json::Value = serde_json::from_str(&s.ok(&args)?)?;
    let files: Vec<&str> = r["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        files.contains(&"ca.crt") && files.contains(&"ca.key"),
        "{r:#}"
    );
    assert_eq!(files.contains(&"outpost.db"), pg_url.is_none(), "{r:#}");
    assert!(!files.contains(&"secrets.key"), "{r:#}");
    let msg = r["message"].as_str().unwrap_or("");
    assert!(msg.contains("secrets key is not in it"), "{msg}");
    if pg_url.is_some() {
        assert!(msg.contains("pg_dump"), "{msg}");
    }
    assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o600);
    let dump = s.dir.path().join("db.dump");
    if let Some(u) = &pg_url {
        sh(Command::new("pg_dump")
            .args(["-Fc", "-f"])
            .arg(&dump)
            .arg(u))?;
    }
    let token = s.token()?;

    // The disaster: the server, its data dir and its database are gone.
    s.kill();
    std::fs::remove_dir_all(s.data())?;
    if let Some(u) = &pg_url {
        let (base, name) = u.rsplit_once('/').unwrap_or((u, ""));
        let admin_url = format!("{base}/test");
        sh(Command::new("psql").args([
            "-X",
            "-q",
            &admin_url,
            "-c",
            &format!("DROP DATABASE {name}"),
        ]))?;
        sh(Command::new("psql").args([
            "-X",
            "-q",
            &admin_url,
            "-c",
            &format!("CREATE DATABASE {name}"),
        ]))?;
        sh(Command::new("pg_restore")
            .args(["--no-owner", "-d", u])
            .arg(&dump))?;
    }

    // Without the secrets key the CA does not open: refused, nothing left behind.
    let o = s.cli(&["server", "restore", &out_s, "--data-dir", &data])?;
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(e.contains("does not open with this secrets key"), "{e}");
    assert!(!s.data().exists(), "a failed restore left {data} behind");

    let key = saved_key.display().to_string();
    let msg = s.ok(&[
        "server",
        "restore",
        &out_s,
        "--data-dir",
        &data,
        "--secrets-key-file",
        &key,
    ])?;
    assert!(msg.contains("restored"), "{msg}");
    assert_eq!(
        std::fs::metadata(s.data())?.permissions().mode() & 0o777,
        0o700
    );
    // The operator puts the key back where the server looks for it, and starts it.
    std::fs::copy(&saved_key, s.data().join("secrets.key"))?;
    s.restart()?;
    assert_eq!(s.token()?, token);
    let list = s.json(&["list"])?;
    let names: Vec<&str> = list
        .as_array()
        .map(|a| a.iter().filter_map(|w| w["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"dev") && names.contains(&"kept"),
        "{list:#}"
    );
    assert_eq!(s.status("kept")?, "stopped");
    // The agent, which never stopped, is back with the restored server: SSH works through it.
    let o = eventually(|| {
        let o = admin.ssh("dev", "echo back")?;
        Ok(o.status.success().then_some(o))
    })?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "back\n");

    // A restore into a data dir in use, or of something that is not a backup, is refused.
    let o = s.cli(&["server", "restore", &out_s, "--data-dir", &data])?;
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not empty"));
    let junk = s.dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar file at all, just bytes")?;
    let elsewhere = s.dir.path().join("elsewhere").display().to_string();
    let o = s.cli(&[
        "server",
        "restore",
        &junk.display().to_string(),
        "--data-dir",
        &elsewhere,
    ])?;
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        e.contains("not an Outpost backup") || e.contains("damaged"),
        "{e}"
    );
    assert!(!std::path::Path::new(&elsewhere).exists());

    // With --with-secrets-key the file alone restores (into a fresh dir, no key given).
    let full = s.dir.path().join("full.tar").display().to_string();
    let mut args = vec![
        "server",
        "backup",
        &full,
        "--data-dir",
        &data,
        "--with-secrets-key",
    ];
    if let Some(u) = &pg_url {
        args.extend_from_slice(&["--postgres-url", u]);
    }
    s.ok(&args)?;
    let fresh = s.dir.path().join("fresh").display().to_string();
    s.ok(&["server", "restore", &full, "--data-dir", &fresh])?;
    assert_eq!(
        std::fs::read(std::path::Path::new(&fresh).join("secrets.key"))?,
        std::fs::read(&saved_key)?
    );
    Ok(())
}
both_backends!(backup_and_restore);
