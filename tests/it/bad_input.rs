//! Bad input gets the right status and a clear message, and changes nothing in the store.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

fn bad_input(backend: Backend) -> R {
    // PostgreSQL's text cannot hold a NUL and refuses it; SQLite stores it and finds nothing.
    let nul_needle = match backend {
        Backend::Postgres(_) => "cannot store (a NUL",
        Backend::Sqlite => "no template",
    };
    let s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    let tok = s.token()?;
    let api = |p: &str| format!("{}/api/v1{p}", s.url);

    // A second user with a workspace of their own, and their token.
    s.cli_stdin(
        &["users", "create", "bob", "--password-stdin"],
        "bob-password\n",
    )
    .and_then(|o| {
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Ok(())
    })?;
    let (st, login) = post_json(
        &api("/login"),
        None,
        &json!({"username": "bob", "password": "bob-password"}),
    )?;
    assert_eq!(st, 200);
    let bob = login["token"].as_str().unwrap_or_default().to_string();
    let (st, _) = post_json(
        &api("/workspaces"),
        Some(&bob),
        &json!({"name": "bobs", "template": "base"}),
    )?;
    assert_eq!(st, 201);
    s.wait_for("dev", Duration::from_secs(60), |w| w["status"] == "running")?;
    // Let bob's build settle too so nothing changes under the snapshot.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, w) = http("GET", &api("/workspaces/bobs"), Some(&bob), None)?;
        if w["status"] == "running" {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "bob's workspace did not start: {w}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // An expired token: lifetime 1 s.
    let (st, t) = post_json(
        &api("/tokens"),
        Some(&tok),
        &json!({"name": "short", "lifetime_secs": 1}),
    )?;
    assert_eq!(st, 201);
    let expired = t["token"].as_str().unwrap_or_default().to_string();
    // A revoked token.
    let (_, t) = post_json(&api("/tokens"), Some(&tok), &json!({"name": "gone"}))?;
    let revoked = t["token"].as_str().unwrap_or_default().to_string();
    let (st, _) = http(
        "DELETE",
        &api(&format!(
            "/tokens/{}",
            t["info"]["id"].as_str().unwrap_or("")
        )),
        Some(&tok),
        None,
    )?;
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_millis(1100));

    let before = s.db_snapshot()?;
    let big = vec![b'a'; 2 << 20];
    let huge_template = json!({"name": "big", "files": {"template.toml": "x".repeat(9 << 20)}});
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<(&'a str, Vec<u8>)>,
        u16,
        &'a str,
    );
    let j = |v: Value| Some(("application/json", v.to_string().into_bytes()));
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "POST",
            "/workspaces",
            Some(&tok),
            Some(("application/json", b"{\"name\": ".to_vec())),
            400,
            "invalid request body",
        ),
        (
            "not JSON",
            "POST",
            "/workspaces",
            Some(&tok),
            Some(("text/plain", b"name=x".to_vec())),
            415,
            "Content-Type: application/json",
        ),
        (
            "unknown field",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "x", "template": "base", "color": "red"})),
            400,
            "unknown field `color`",
        ),
        (
            "missing field",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "x"})),
            400,
            "missing field `template`",
        ),
        (
            "oversized body",
            "POST",
            "/workspaces",
            Some(&tok),
            Some(("application/json", big.clone())),
            413,
            "too large",
        ),
        (
            "oversized template",
            "POST",
            "/templates/push",
            Some(&tok),
            j(huge_template),
            413,
            "too large",
        ),
        (
            "invalid name",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "Bad_Name", "template": "base"})),
            400,
            "invalid workspace name",
        ),
        (
            "name too long",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "a".repeat(64), "template": "base"})),
            400,
            "invalid workspace name",
        ),
        (
            "leading dash",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "-x", "template": "base"})),
            400,
            "invalid workspace name",
        ),
        (
            "duplicate name",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "dev", "template": "base"})),
            409,
            "already have a workspace named",
        ),
        (
            "unknown template",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "x", "template": "nope"})),
            404,
            "no template \"nope\"",
        ),
        (
            "unknown parameter",
            "POST",
            "/workspaces",
            Some(&tok),
            j(json!({"name": "x", "template": "base", "parameters": {"cpu": "2"}})),
            400,
            "unknown parameter",
        ),
        (
            "template.toml error",
            "POST",
            "/templates/push",
            Some(&tok),
            j(
                json!({"name": "t", "files": {"template.toml": "[provisioner]\ntype = \"local\"\n[[parameters]]\nname = \"n\"\ntype = \"number\"\ndefault = \"x\"\n"}}),
            ),
            400,
            "template.toml:6: field `parameters[0].default`",
        ),
        (
            "template.toml syntax",
            "POST",
            "/templates/push",
            Some(&tok),
            j(json!({"name": "t", "files": {"template.toml": "[provisioner\n"}})),
            400,
            "template.toml:1",
        ),
        (
            "template without manifest",
            "POST",
            "/templates/push",
            Some(&tok),
            j(json!({"name": "t", "files": {"a.sh": "x"}})),
            400,
            "needs a template.toml",
        ),
        (
            "template path escape",
            "POST",
            "/templates/push",
            Some(&tok),
            j(
                json!({"name": "t", "files": {"template.toml": "[provisioner]\ntype = \"local\"\n", "../evil": "x"}}),
            ),
            400,
            "relative",
        ),
        (
            "illegal transition",
            "POST",
            "/workspaces/dev/builds",
            Some(&tok),
            j(json!({"action": "start"})),
            409,
            "it is running",
        ),
        (
            "unknown action",
            "POST",
            "/workspaces/dev/builds",
            Some(&tok),
            j(json!({"action": "explode"})),
            400,
            "unknown variant",
        ),
        (
            "nothing to cancel",
            "POST",
            "/workspaces/dev/cancel",
            Some(&tok),
            None,
            409,
            "no pending or running build",
        ),
        (
            "missing token",
            "GET",
            "/workspaces",
            None,
            None,
            401,
            "outpost login",
        ),
        (
            "wrong token",
            "GET",
            "/workspaces",
            Some("opt_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
            401,
            "not valid",
        ),
        (
            "garbage token",
            "GET",
            "/workspaces",
            Some("hello"),
            None,
            401,
            "not valid",
        ),
        (
            "expired token",
            "GET",
            "/workspaces",
            Some(&expired),
            None,
            401,
            "expired",
        ),
        (
            "revoked token",
            "GET",
            "/workspaces",
            Some(&revoked),
            None,
            401,
            "revoked",
        ),
        (
            "another user's workspace",
            "GET",
            "/workspaces/bobs",
            Some(&tok),
            None,
            404,
            "no workspace named",
        ),
        (
            "another user's workspace, stop",
            "POST",
            "/workspaces/bobs/builds",
            Some(&tok),
            j(json!({"action": "stop"})),
            404,
            "no workspace named",
        ),
        (
            "another user's workspace, delete",
            "POST",
            "/workspaces/bobs/builds",
            Some(&tok),
            j(json!({"action": "delete"})),
            404,
            "no workspace named",
        ),
        (
            "member pushes a template",
            "POST",
            "/templates/push",
            Some(&bob),
            j(
                json!({"name": "t", "files": {"template.toml": "[provisioner]\ntype = \"local\"\n"}}),
            ),
            403,
            "you may not change templates: that takes the role owner or template-admin",
        ),
        (
            "member creates a user",
            "POST",
            "/users",
            Some(&bob),
            j(json!({"username": "eve", "password": "12345678"})),
            403,
            "you may not manage users: that takes the role owner or user-admin",
        ),
        (
            "short password",
            "POST",
            "/users",
            Some(&tok),
            j(json!({"username": "eve", "password": "1"})),
            400,
            "8 to 256",
        ),
        (
            "wrong password",
            "POST",
            "/login",
            None,
            j(json!({"username": "admin", "password": "nope-nope"})),
            401,
            "wrong username or password",
        ),
        (
            "setup again",
            "POST",
            "/setup",
            None,
            j(json!({"setup_token": "x", "username": "z", "password": "12345678"})),
            409,
            "setup is done",
        ),
        (
            "unknown route",
            "GET",
            "/nope",
            Some(&tok),
            None,
            404,
            "no such route",
        ),
        (
            "unknown build",
            "GET",
            "/builds/nope",
            Some(&tok),
            None,
            404,
            "no build",
        ),
        (
            "bad token lifetime",
            "POST",
            "/tokens",
            Some(&tok),
            j(json!({"name": "x", "lifetime_secs": 0})),
            400,
            "lifetime_secs",
        ),
        (
            "a NUL in a name the store looks up",
            "POST",
            "/provisioner-keys",
            Some(&tok),
            j(json!({"name": "k", "templates": ["a\u{0}b"]})),
            400,
            nul_needle,
        ),
    ];
    for (what, method, path, token, body, status, needle) in cases {
        let (st, v) = http(
            method,
            &api(path),
            token,
            body.as_ref().map(|(ct, b)| (*ct, b.as_slice())),
        )?;
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(st, status, "{what}: got {st} {v}");
        assert!(
            v["error"]["code"].is_string(),
            "{what}: error body has a code: {v}"
        );
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} should mention {needle:?}"
        );
    }
    // The CLI shows such errors plainly, with a non-zero exit code.
    let out = s.cli(&["create", "Bad_Name"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid workspace name"));
    let tdir = s.dir.path().join("broken");
    std::fs::create_dir_all(&tdir)?;
    std::fs::write(
        tdir.join("template.toml"),
        "[provisioner]\ntype = \"kubernetes\"\n",
    )?;
    let out = s.cli(&["templates", "push", tdir.to_str().unwrap_or_default()])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("template.toml:2: field `provisioner.type`: unknown provisioner"),
        "{err}"
    );

    let after = s.db_snapshot()?;
    assert_eq!(before, after, "rejected requests changed the store");
    // Nothing panicked.
    assert!(!s.log().contains("panicked"), "{}", s.log());
    Ok(())
}
both_backends!(bad_input);
