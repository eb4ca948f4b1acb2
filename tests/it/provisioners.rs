//! External provisioner daemons with scoped, tagged keys (issue 17): real `outpost provisioner
//! start` processes with their own workspaces dirs and no database access race for 100 jobs;
//! each job runs once, on a daemon whose key carries the template's tags; a daemon whose tags
//! match no template never gets a job; a revoked key is refused at once and the job its daemon
//! held is run by another.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `outpost provisioner start` with `key`, its own workspaces dir; agents are `/bin/true` (the
/// jobs are what is tested, not the workspaces).
pub fn daemon(s: &Server, key: &str, dir: &str) -> R<Daemon> {
    let wdir = s.dir.path().join(dir);
    std::fs::create_dir_all(&wdir)?;
    let log = std::fs::File::create(s.dir.path().join(format!("{dir}.log")))?;
    Ok(Daemon(
        Command::new(bin("outpost"))
            .args(["provisioner", "start", "--url", &s.url, "--key", key])
            .arg("--workspaces-dir")
            .arg(&wdir)
            .args(["--agent-binary", "/bin/true"])
            .env_remove("OUTPOST_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    ))
}

pub fn make_key(s: &Server, name: &str, tags: &[&str]) -> R<String> {
    let mut args = vec!["provisioners", "keys", "create", name];
    for t in tags {
        args.extend_from_slice(&["--tag", t]);
    }
    let k = s.json(&args)?;
    Ok(k["key"].as_str().unwrap_or_default().to_string())
}

fn daemon_of(list: &Value, key: &str) -> String {
    list.as_array()
        .and_then(|a| a.iter().find(|d| d["key"] == key))
        .map(|d| d["id"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn tagged_daemons_take_only_their_jobs(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--provisioner-daemons", "0"])?;
    push_local_template(&s, "prod", "tags = { env = \"prod\" }\n")?;
    push_local_template(&s, "dev", "tags = { env = \"dev\" }\n")?;
    let k_prod = make_key(&s, "k-prod", &["env=prod", "region=eu"])?;
    let k_dev = make_key(&s, "k-dev", &["env=dev"])?;
    let k_none = make_key(&s, "k-none", &["region=us"])?;
    let keys = s.json(&["provisioners", "keys", "list"])?;
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(3),
        "the secrets are not listed: {keys:#}"
    );
    assert!(!keys.to_string().contains("opk_"), "{keys:#}");

    let _p = daemon(&s, &k_prod, "d-prod")?;
    let mut dev = Some(daemon(&s, &k_dev, "d-dev")?);
    let _n = daemon(&s, &k_none, "d-none")?;
    let list = eventually(|| {
        let l = s.json(&["provisioners", "list"])?;
        Ok((l.as_array().map(Vec::len) == Some(3)).then_some(l))
    })?;
    let (prod_id, dev_id, none_id) = (
        daemon_of(&list, "k-prod"),
        daemon_of(&list, "k-dev"),
        daemon_of(&list, "k-none"),
    );
    let prod_row = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["key"] == "k-prod"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(prod_row["tags"], json!({"env": "prod", "region": "eu"}));

    // 100 jobs, alternating templates, queued as fast as the CLI goes.
    for i in 0..50 {
        s.ok(&["create", &format!("p{i}"), "-t", "prod", "--no-wait"])?;
        s.ok(&["create", &format!("d{i}"), "-t", "dev", "--no-wait"])?;
    }
    let done = || -> R<Vec<Vec<String>>> {
        s.db_rows(
            "SELECT w.name, j.daemon_id, j.attempts, j.status FROM provisioner_jobs j \
             JOIN workspace_builds b ON b.id = j.build_id JOIN workspaces w ON w.id = b.workspace_id \
             ORDER BY w.name",
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = done()?;
        if rows.len() == 100 && rows.iter().all(|r| r[3] == "succeeded") {
            break rows;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "jobs not done: {:?}",
            rows.iter()
                .filter(|r| r[3] != "succeeded")
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in &rows {
        let want = if r[0].starts_with('p') {
            &prod_id
        } else {
            &dev_id
        };
        assert_eq!(&r[1], want, "{r:?}: run by the wrong daemon");
        assert_eq!(r[2], "1", "{r:?}: run more than once");
        assert_ne!(r[1], none_id);
    }

    // A daemon that hangs with a job (the test, speaking the daemon API with k-dev), then its
    // key is revoked: refused at once, and the job goes to another dev daemon.
    drop(dev.take());
    s.ok(&["create", "late", "-t", "dev", "--no-wait"])?;
    let acquire = |key: &str, id: &str| {
        post_json(
            &format!("{}/api/v1/provisioner/acquire", s.url),
            Some(key),
            &json!({"daemon_id": id, "provisioners": ["local"]}),
        )
    };
    let (code, job) = acquire(&k_dev, "hung-1")?;
    assert_eq!(code, 200, "{job}");
    let job_id = job["job_id"].as_str().unwrap_or_default().to_string();
    assert!(!job_id.is_empty(), "{job}");
    s.ok(&["provisioners", "keys", "revoke", "k-dev"])?;
    let (code, _) = acquire(&k_dev, "hung-1")?;
    assert_eq!(code, 401, "a revoked key");
    let (code, _) = post_json(
        &format!("{}/api/v1/provisioner/jobs/{job_id}/complete", s.url),
        Some(&k_dev),
        &json!({"daemon_id": "hung-1", "outcome": {"kind": "succeeded", "resources": [], "state": null}}),
    )?;
    assert_eq!(code, 401, "a revoked key completing its job");
    // Another key's daemon may not speak for hung-1 either.
    let (code, _) = post_json(
        &format!("{}/api/v1/provisioner/jobs/{job_id}/complete", s.url),
        Some(&k_prod),
        &json!({"daemon_id": "hung-1", "outcome": {"kind": "failed", "error": "x"}}),
    )?;
    assert_eq!(code, 403, "another key's daemon id");
    let k_dev2 = make_key(&s, "k-dev2", &["env=dev"])?;
    let _dev2 = daemon(&s, &k_dev2, "d-dev2")?;
    // (Its agent is /bin/true: the job succeeding is the end of it.)
    let late = eventually(|| {
        let rows = s.db_rows(&format!(
            "SELECT attempts, status, daemon_id FROM provisioner_jobs WHERE id = '{job_id}'"
        ))?;
        Ok((rows.first().is_some_and(|r| r[1] == "succeeded")).then_some(rows))
    })?;
    assert_eq!(late[0][0], "2", "{late:?}");
    assert_eq!(late[0][1], "succeeded", "{late:?}");
    assert_ne!(late[0][2], "hung-1");
    eventually(|| {
        let audit = s.json(&["audit", "--action", "provisioner_key.revoke"])?;
        Ok(audit
            .to_string()
            .contains("1 job(s) it held let go")
            .then_some(()))
    })?;
    Ok(())
}
both_backends!(tagged_daemons_take_only_their_jobs);

/// Bad keys and tags: a clear error, nothing made.
fn bad_keys_are_refused(backend: Backend) -> R {
    let s = Server::start(backend)?;
    for (args, want) in [
        (vec!["--tag", "env"], "KEY=VALUE"),
        (vec!["--tag", "e nv=x"], "a tag's key and value"),
        (vec!["--template", "nope"], "no template"),
        (vec!["--org", "nope"], "no organization"),
    ] {
        let mut a = vec!["provisioners", "keys", "create", "k"];
        a.extend_from_slice(&args);
        let o = s.cli(&a)?;
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(s.json(&["provisioners", "keys", "list"])?, json!([]));
    // A template with a bad tag is refused at push.
    let dir = s.dir.path().join("badtag");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\ntags = { \"e nv\" = \"x\" }\n",
    )?;
    let o = s.cli(&["templates", "push", &dir.display().to_string()])?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("provisioner.tags"));
    Ok(())
}
both_backends!(bad_keys_are_refused);
