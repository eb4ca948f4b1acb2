//! The audit log (issue 16): every state change is an event with its actor, target, source
//! address and outcome (one of each, made through the CLI, found again); a member's refused
//! template push is recorded as `refused`; `outpost audit` narrows by actor, target, outcome
//! and time; `--format ndjson` streams the same events one per line; the API pages with
//! `before_id` and answers bad filters with a 400; auditors read the log and members get a 403.
//! In a real browser: the `/audit` page for an owner (events, filtered by actor) and its 403
//! page for a member.

use serde_json::{json, Value};

use crate::both_backends;
use crate::browser::Browser;
use crate::clients::Client;
use crate::harness::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn events(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// The one event with `action` and `target` (waiting for the batched writer).
fn find(s: &Server, action: &str, target: &str) -> R<Value> {
    eventually(|| {
        let all = s.json(&["audit", "--action", action, "--target", target])?;
        Ok(events(&all).into_iter().next())
    })
}

fn session_token(c: &Client) -> R<String> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(c.config_dir.join("session.json"))?)?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

fn every_state_change_is_audited(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let started = now_ms();

    // One of each state change, by the first owner (`admin`).
    push_local_template(&s, "audited", "")?;
    let tok = s.json(&["tokens", "create", "ci", "--lifetime", "1h"])?;
    let token_id = tok["info"]["id"].as_str().unwrap_or_default().to_string();
    s.ok(&["tokens", "revoke", &token_id])?;
    let key = s.dir.path().join("audit_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    anyhow::ensure!(st.success(), "ssh-keygen");
    let added = s.json(&["keys", "add", &format!("{}.pub", key.display())])?;
    let fp = added["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    s.ok(&["keys", "remove", added["id"].as_str().unwrap_or_default()])?;
    let bob = Client::new_user(&s, "bob")?;
    s.ok(&["users", "roles", "bob", "--set", "auditor"])?;
    s.ok(&["create", "dev"])?;
    s.ok(&["stop", "dev"])?;
    s.ok(&["templates", "edit", "audited", "--activity-bump", "2h"])?;

    let checks: [(&str, String, &str); 10] = [
        ("template.push", "template:audited".into(), "admin"),
        ("token.create", format!("token:{token_id}"), "admin"),
        ("token.revoke", format!("token:{token_id}"), "admin"),
        ("key.add", format!("key:{fp}"), "admin"),
        ("key.remove", format!("key:{fp}"), "admin"),
        ("user.create", "user:bob".into(), "admin"),
        ("user.roles", "user:bob".into(), "admin"),
        ("workspace.create", "workspace:admin/dev".into(), "admin"),
        ("template.schedule", "template:audited".into(), "admin"),
        ("user.login", "user:bob".into(), "bob"),
    ];
    for (action, target, actor) in &checks {
        let e = find(&s, action, target)?;
        assert_eq!(e["actor"], *actor, "{action}: {e:#}");
        assert_eq!(e["outcome"], "ok", "{action}: {e:#}");
        assert_eq!(e["remote_addr"], "127.0.0.1", "{action}: {e:#}");
        assert!(e["created_at"].as_i64().unwrap_or(0) >= started, "{e:#}");
    }
    // The stop is a build of the workspace, saying what it did.
    let builds = eventually(|| {
        let b = s.json(&[
            "audit",
            "--action",
            "workspace.build",
            "--target",
            "workspace:admin/dev",
        ])?;
        Ok(events(&b)
            .iter()
            .any(|e| {
                e["details"]
                    .as_str()
                    .unwrap_or("")
                    .contains("admin/dev: stop")
            })
            .then_some(b))
    })?;
    assert!(events(&builds)
        .iter()
        .all(|e| e["actor"] == "admin" && e["remote_addr"] == "127.0.0.1" && e["outcome"] == "ok"));

    // A member's template push is refused, and that is recorded; nothing was pushed.
    let carol = Client::new_user(&s, "carol")?;
    let dir = s.dir.path().join("audited");
    let o = run_with_stdin(
        carol.command(&[
            "templates",
            "push",
            dir.to_str().unwrap_or_default(),
            "--name",
            "sneaky",
        ]),
        "",
    )?;
    assert!(!o.status.success());
    let refused = find(&s, "template.push", "template:sneaky")?;
    assert_eq!(refused["actor"], "carol", "{refused:#}");
    assert_eq!(refused["outcome"], "refused", "{refused:#}");
    assert_eq!(refused["remote_addr"], "127.0.0.1", "{refused:#}");
    assert!(s.cli(&["templates", "show", "sneaky"])?.status.code() != Some(0));

    // Filters narrow the list (of what happened until now).
    let t0 = (now_ms() + 1).to_string();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let all = events(&s.json(&["audit", "--until", &t0, "--limit", "1000"])?);
    let by_carol = events(&s.json(&["audit", "--actor", "carol"])?);
    assert!(!by_carol.is_empty() && by_carol.len() < all.len());
    assert!(
        by_carol.iter().all(|e| e["actor"] == "carol"),
        "{by_carol:?}"
    );
    let on_bob = events(&s.json(&["audit", "--target", "user:bob"])?);
    assert!(on_bob.len() >= 3 && on_bob.len() < all.len(), "{on_bob:?}");
    assert!(on_bob.iter().all(|e| e["target"] == "user:bob"));
    let on_users = events(&s.json(&["audit", "--target", "user:"])?);
    assert!(on_users.len() > on_bob.len() && on_users.len() < all.len());
    assert!(on_users
        .iter()
        .all(|e| e["target"].as_str().unwrap_or("").starts_with("user:")));
    let refusals = events(&s.json(&["audit", "--outcome", "refused"])?);
    assert!(!refusals.is_empty() && refusals.len() < all.len());
    assert!(refusals.iter().all(|e| e["outcome"] == "refused"));
    let cut = refused["created_at"].as_i64().unwrap_or_default();
    let recent = events(&s.json(&[
        "audit",
        "--since",
        &cut.to_string(),
        "--until",
        &t0,
        "--limit",
        "1000",
    ])?);
    assert!(!recent.is_empty() && recent.len() < all.len());
    assert!(recent
        .iter()
        .all(|e| e["created_at"].as_i64().unwrap_or(0) >= cut));
    let older = events(&s.json(&["audit", "--until", &cut.to_string(), "--limit", "1000"])?);
    assert_eq!(older.len() + recent.len(), all.len());

    // NDJSON: every matching event, one JSON object per line, the same as the JSON output.
    let until = (now_ms() + 1).to_string();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let json_all = events(&s.json(&["audit", "--until", &until, "--limit", "100000"])?);
    let nd = s.ok(&["audit", "--format", "ndjson", "--until", &until])?;
    let lines: Vec<Value> = nd
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), json_all.len());
    assert_eq!(lines, json_all);
    let nd_carol = s.ok(&["audit", "--format", "ndjson", "--actor", "carol"])?;
    assert_eq!(nd_carol.lines().count(), by_carol.len());

    // The API pages newest first with `before_id`, and a bad filter is a 400 naming it.
    let admin = s.token()?;
    let q = format!("{}/api/v1/audit?until={t0}", s.url);
    let (code, first) = http("GET", &format!("{q}&limit=3"), Some(&admin), None)?;
    assert_eq!(code, 200);
    let second = first[1]["id"].as_i64().unwrap_or_default();
    let (_, next) = http(
        "GET",
        &format!("{q}&limit=2&before_id={second}"),
        Some(&admin),
        None,
    )?;
    assert_eq!(next[0]["id"], first[2]["id"], "{next:#}");
    assert_eq!(next[0]["id"], all[2]["id"], "{next:#}");
    for (q, word) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("since=yesterday", "since"),
        ("until=-5", "until"),
        ("outcome=OK%21", "outcome"),
        ("actor=a%20b", "actor"),
        ("colour=blue", "colour"),
        ("since=10&until=5", "since"),
    ] {
        let (code, body) = http(
            "GET",
            &format!("{}/api/v1/audit?{q}", s.url),
            Some(&admin),
            None,
        )?;
        assert_eq!(code, 400, "{q}: {body}");
        assert!(body.to_string().contains(word), "{q}: {body}");
    }
    let o = s.cli(&["audit", "--since", "last tuesday"])?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--since"));

    // An auditor reads the log; a member gets a 403 (and that refusal is recorded too).
    assert!(!events(&bob.json(&["audit", "--actor", "carol"])?).is_empty());
    let (code, body) = http(
        "GET",
        &format!("{}/api/v1/audit", s.url),
        Some(&session_token(&carol)?),
        None,
    )?;
    assert_eq!(code, 403, "{body}");
    let read = find(&s, "audit.read", "")?;
    assert_eq!(read["actor"], "carol");
    assert_eq!(read["outcome"], "refused");
    Ok(())
}
both_backends!(every_state_change_is_audited);

/// The `/audit` page: an owner sees events and filters them by actor; a member gets the 403
/// page and no nav link.
fn audit_page(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start(backend)?;
    let url = s.url.clone();
    Client::new_user(&s, "carol")?;
    s.ok(&["tokens", "create", "ci"])?;
    eventually(|| {
        Ok((!events(&s.json(&["audit", "--actor", "carol"])?).is_empty()).then_some(()))
    })?;

    b.delete_cookies()?;
    b.sign_in(&url, "admin", "admin-password")?;
    b.click("#nav-audit")?;
    b.wait_js(
        "document.body.dataset.page === 'audit' && document.querySelectorAll('#audit tbody tr').length > 2",
        30,
    )?;
    let actors = b.exec(
        "return [...document.querySelectorAll('#audit tbody tr')].map(r => r.dataset.actor);",
        json!([]),
    )?;
    let actors: Vec<String> = serde_json::from_value(actors)?;
    assert!(
        actors.iter().any(|a| a == "admin") && actors.iter().any(|a| a == "carol"),
        "{actors:?}"
    );
    b.screenshot("audit")?;
    b.type_into("#filter-actor", "carol")?;
    b.click("#audit-apply")?;
    b.wait_js(
        "(() => { const rows = [...document.querySelectorAll('#audit tbody tr')]; return rows.length > 0 && rows.every(r => r.dataset.actor === 'carol'); })()",
        30,
    )?;
    assert!(b.url()?.ends_with("/audit?actor=carol"), "{}", b.url()?);
    b.screenshot("audit-filtered")?;

    b.delete_cookies()?;
    b.sign_in(&url, "carol", "carol-password-1")?;
    let link = b.exec("return !!document.getElementById('nav-audit');", json!([]))?;
    assert_eq!(link, json!(false));
    b.goto(&format!("{url}/audit"))?;
    b.wait_js("document.body.dataset.page === 'refused'", 30)?;
    let text = b.text("#error")?;
    assert!(text.contains("owners and auditors"), "{text}");
    Ok(())
}
both_backends!(audit_page);
