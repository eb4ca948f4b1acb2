//! Owners and someone else's workspace (issue 16). With `--allow-owner-workspace-access` an
//! owner gets into it as `OWNER/NAME` (SSH through the relay, TCP forwards, the terminal), each
//! connection audited, while the direct listener still takes only the workspace owner's keys and
//! auditors and members stay out. On the dashboard, without the flag: owners and auditors see
//! everyone's workspaces, an owner stops a member's workspace from its page, an auditor only
//! looks, and neither opens its terminal.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::browser::Browser;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

fn token_of(c: &Client) -> R<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(c.config_dir.join("session.json"))?)?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

/// An upgrade request on the API with `token`: the status, and the connection (past the head).
fn upgrade(s: &Server, path: &str, token: &str, kind: &str) -> R<(u16, std::net::TcpStream)> {
    let addr = s.url.trim_start_matches("http://").trim_end_matches('/');
    let mut c = std::net::TcpStream::connect(addr)?;
    let extra = if kind == "websocket" {
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    } else {
        ""
    };
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: {kind}\r\n{extra}\r\n")
            .as_bytes(),
    )?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Read the head byte by byte, so what follows it stays in the stream.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if c.read(&mut b)? == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, c))
}

/// Waits for a `workspace.connect` audit event matching `pred` (events are written in
/// batches).
fn connect_event(s: &Server, pred: impl Fn(&Value) -> bool) -> R {
    let mut last = Value::Null;
    let found = eventually(|| {
        last = s.json(&["audit", "--action", "workspace.connect"])?;
        Ok(last
            .as_array()
            .is_some_and(|a| a.iter().any(&pred))
            .then_some(()))
    });
    found.map_err(|e| anyhow::anyhow!("{e}: {last:#}"))
}

fn owners_get_in_when_the_server_allows(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--allow-owner-workspace-access"])?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    let aud = Client::new_user(&s, "aud")?;
    let mem = Client::new_user(&s, "mem")?;
    admin.ok(&["users", "roles", "aud", "--set", "auditor"])?;
    let dir = s.dir.path().join("direct");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\n[agent]\nssh_listen = \"127.0.0.1:0\"\n",
    )?;
    s.ok(&["templates", "push", &dir.display().to_string()])?;
    bob.ok(&["create", "dev", "-t", "direct"])?;
    let (w, _) = s.wait_for("bob/dev", T, |w| w["agent"]["ssh_addr"].is_string())?;
    let ssh_addr = w["agent"]["ssh_addr"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The owner, through the relay: the same account and home as bob's own session.
    let theirs = bob.sh("dev", "id -un; echo $HOME")?;
    let mine = admin.sh("bob/dev", "id -un; echo $HOME")?;
    assert_eq!(mine, theirs);
    connect_event(&s, |e| {
        e["actor"] == "admin"
            && e["outcome"] == "ok"
            && e["target"] == "workspace:bob/dev"
            && e["details"] == "ssh"
    })?;
    // The direct listener takes bob's key, never the owner's.
    let (host, port) = ssh_addr.rsplit_once(':').unwrap_or_default();
    let direct = |c: &Client| -> R<std::process::Output> {
        Ok(std::process::Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-p",
                port,
                "-i",
            ])
            .arg(&c.key)
            .arg(format!("x@{host}"))
            .arg("echo direct")
            .stdin(std::process::Stdio::null())
            .output()?)
    };
    assert_eq!(String::from_utf8_lossy(&direct(&bob)?.stdout), "direct\n");
    let o = direct(&admin)?;
    assert!(
        !o.status.success(),
        "the owner's key on the direct listener"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A TCP stream to a server bob runs, and a terminal, as `outpost port-forward` and the
    // dashboard ask for them.
    let web = free_port()?;
    bob.sh(
        "dev",
        &format!("nohup python3 -m http.server {web} --bind 127.0.0.1 >/dev/null 2>&1 &"),
    )?;
    let admin_token = s.token()?;
    let mut tcp = eventually(|| {
        let (code, tcp) = upgrade(
            &s,
            &format!("/api/v1/workspaces/bob%2Fdev/relay/tcp/{web}"),
            &admin_token,
            "outpost-relay",
        )?;
        Ok((code == 101).then_some(tcp))
    })?;
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut status = [0u8; 12];
    tcp.read_exact(&mut status)?;
    assert_eq!(&status, b"HTTP/1.0 200");
    drop(tcp);
    bob.sh("dev", &format!("pkill -f 'http[.]server {web}' || true"))?;
    let (code, _term) = upgrade(
        &s,
        "/api/v1/workspaces/bob%2Fdev/pty?session=owner",
        &admin_token,
        "websocket",
    )?;
    assert_eq!(code, 101);
    for kind in [format!("tcp:{web}"), "terminal".to_string()] {
        connect_event(&s, |e| {
            e["actor"] == "admin" && e["outcome"] == "ok" && e["details"] == kind.as_str()
        })?;
    }

    // An auditor sees the workspace but does not get in (403, audited); a member does not
    // even see it (404); neither changes anything.
    let before = s.db_snapshot()?;
    let (code, _) = upgrade(
        &s,
        "/api/v1/workspaces/bob%2Fdev/relay/ssh",
        &token_of(&aud)?,
        "outpost-relay",
    )?;
    assert_eq!(code, 403);
    let o = aud.ssh("bob/dev", "true")?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("connect to other users' workspaces"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for path in [
        "/api/v1/workspaces/bob%2Fdev/relay/ssh",
        "/api/v1/workspaces/bob%2Fdev/pty?session=m",
    ] {
        let kind = if path.contains("pty") {
            "websocket"
        } else {
            "outpost-relay"
        };
        assert_eq!(upgrade(&s, path, &token_of(&mem)?, kind)?.0, 404, "{path}");
    }
    assert!(!mem.ssh("bob/dev", "true")?.status.success());
    assert_eq!(s.db_snapshot()?, before);
    connect_event(&s, |e| e["actor"] == "aud" && e["outcome"] == "refused")?;
    Ok(())
}
both_backends!(owners_get_in_when_the_server_allows);

/// In the browser, without the flag: the owner sees bob's workspace among everyone's, opens its
/// page, stops it (the build is audited as the owner's) and is refused its terminal with the
/// reason; an auditor sees the page with no actions; a member gets 404.
fn dashboard_for_everyone_s_workspaces(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    Client::new_user(&s, "aud")?;
    Client::new_user(&s, "mem")?;
    admin.ok(&["users", "roles", "aud", "--set", "auditor"])?;
    bob.ok(&["create", "dev"])?;
    let url = s.url.clone();

    b.sign_in(&url, "admin", "admin-password")?;
    b.wait_js(
        "document.querySelector('#all-workspaces tr[data-ref=\"bob/dev\"] a')",
        30,
    )?;
    b.click("#all-workspaces tr[data-ref=\"bob/dev\"] a")?;
    b.wait_js(
        "document.body.dataset.page === 'workspace' && document.body.dataset.ready === '1' && document.getElementById('status').textContent === 'running'",
        60,
    )?;
    assert_eq!(b.url()?, format!("{url}/@bob/dev"));
    let visible = b.exec(
        "return [...document.querySelectorAll('button[data-action]')].filter((x) => !x.hidden).map((x) => x.dataset.action);",
        json!([]),
    )?;
    assert_eq!(
        visible,
        json!(["stop", "restart", "delete"]),
        "the owner acts (on a running, current workspace)"
    );
    assert_eq!(
        b.exec(
            "return document.getElementById('open-terminal').hidden;",
            json!([])
        )?,
        json!(true),
        "no terminal for someone else's workspace"
    );
    b.screenshot("owner-on-bobs-workspace")?;
    b.click("button[data-action=stop]")?;
    b.wait_js("document.body.dataset.acted === 'stop'", 30)?;
    s.wait_for("bob/dev", T, |w| w["status"] == "stopped")?;
    eventually(|| {
        let builds = s.json(&["audit", "--action", "workspace.build", "--actor", "admin"])?;
        Ok(builds.to_string().contains("bob/dev: stop").then_some(()))
    })?;
    // The terminal page, asked for directly: refused, saying why and what would allow it.
    b.goto(&format!("{url}/@bob/dev/terminal"))?;
    let text = b.exec("return document.body.textContent;", json!([]))?;
    assert!(
        text.to_string().contains("--allow-owner-workspace-access"),
        "{text}"
    );

    // The auditor: everyone's workspaces, the page with nothing to press.
    b.delete_cookies()?;
    b.sign_in(&url, "aud", "aud-password-1")?;
    b.wait_js(
        "document.querySelector('#all-workspaces tr[data-ref=\"bob/dev\"]')",
        30,
    )?;
    b.goto(&format!("{url}/@bob/dev"))?;
    b.wait_js(
        "document.body.dataset.ready === '1' && document.getElementById('status').textContent === 'stopped'",
        60,
    )?;
    let visible = b.exec(
        "return [...document.querySelectorAll('button[data-action], #schedule form, #open-terminal')].filter((x) => !x.hidden).length;",
        json!([]),
    )?;
    assert_eq!(visible, json!(0), "an auditor only looks");

    // A member: no such page; and no table of everyone's workspaces.
    b.delete_cookies()?;
    b.sign_in(&url, "mem", "mem-password-1")?;
    assert!(b.find("#all-workspaces").is_err());
    b.goto(&format!("{url}/@bob/dev"))?;
    let text = b.exec("return document.body.textContent;", json!([]))?;
    assert!(
        text.to_string().contains("no workspace by that name"),
        "{text}"
    );
    Ok(())
}
both_backends!(dashboard_for_everyone_s_workspaces);
