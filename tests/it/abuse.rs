//! Abuse of control's public edges: password guessing and floods at sign-in, a suspended user's
//! live sessions, hostile sign-in redirects, cross-origin WebSockets, cookies over TLS. Each
//! scenario sends the abuse to the real server and shows it fails while others are still served.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

/// `POST /api/v1/login` from `source` (a loopback address): status, `Retry-After`, body.
fn login_from(
    s: &Server,
    source: &str,
    user: &str,
    password: &str,
) -> R<(u16, Option<String>, Value)> {
    let url = format!("{}/api/v1/login", s.url);
    let source: IpAddr = source.parse()?;
    let body = json!({ "username": user, "password": password });
    rt().block_on(async move {
        let c = reqwest::Client::builder()
            .local_address(source)
            .timeout(Duration::from_secs(30))
            .build()?;
        let r = c.post(&url).json(&body).send().await?;
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, retry, v))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Guessing one user's password locks that user out (exponential, with Retry-After) without
/// locking out others; guessing many names from one address locks that address out, not the
/// others; unknown names cost what known ones do; over-long names are refused before they are
/// looked up or logged; a flood of sign-ins queues on the hashing cap while the API answers.
fn sign_in_guessing_is_locked_out(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let _bob = Client::new_user(&s, "bob")?;
    let _carol = Client::new_user(&s, "carol")?;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (code, retry, _) = login_from(&s, "127.0.0.1", "admin", "not-the-password")?;
        codes.push((code, retry));
    }
    assert!(codes[..5].iter().all(|(c, _)| *c == 401), "{codes:?}");
    assert_eq!(codes[5].0, 429, "{codes:?}");
    assert!(codes[5]
        .1
        .as_deref()
        .is_some_and(|r| r.parse::<u64>().is_ok_and(|n| n >= 1)));
    // Locked: even the right password waits; the answer says for how long.
    let (code, _, body) = login_from(&s, "127.0.0.1", "admin", "admin-password")?;
    assert_eq!(code, 429, "{body}");
    assert!(body.to_string().contains("try again in"), "{body}");
    // Another user from the same address is served.
    let (code, _, _) = login_from(&s, "127.0.0.1", "bob", "bob-password-1")?;
    assert_eq!(code, 200);

    // An unknown name costs what a known one with a wrong password does (no user oracle).
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let t = Instant::now();
        login_from(&s, "127.0.0.3", "carol", "wrong-wrong")?;
        known.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        login_from(&s, "127.0.0.4", &format!("nobody-{i}"), "wrong-wrong")?;
        unknown.push(t.elapsed().as_secs_f64());
    }
    let ratio = median(unknown) / median(known);
    assert!(
        (0.33..3.0).contains(&ratio),
        "unknown/known sign-in time ratio {ratio:.2}"
    );

    // Many names from one address: that address is locked out, others are not.
    let mut last = 0;
    for i in 0..25 {
        last = login_from(&s, "127.0.0.5", &format!("guess-{i}"), "x-password")?.0;
    }
    assert_eq!(last, 429);
    assert_eq!(
        login_from(&s, "127.0.0.5", "bob", "bob-password-1")?.0,
        429,
        "the guessing address waits"
    );
    assert_eq!(login_from(&s, "127.0.0.6", "bob", "bob-password-1")?.0, 200);

    // An over-long or unprintable name is refused as it is and never written anywhere.
    let long = "a".repeat(10_000);
    assert_eq!(login_from(&s, "127.0.0.7", &long, "x-password")?.0, 401);
    assert_eq!(
        login_from(&s, "127.0.0.7", "eve\n2026 admin login ok", "x")?.0,
        401
    );
    let audit = eventually(|| {
        let a = s.json(&["audit", "--action", "user.login", "--limit", "500"])?;
        Ok(a.to_string().contains("(invalid username)").then_some(a))
    })?;
    let text = audit.to_string();
    assert!(
        !text.contains(&long[..100]) && !text.contains("eve\\n"),
        "{text}"
    );
    assert!(text.contains("rate_limited"), "lockouts are audited");

    // A flood of 60 concurrent sign-ins: hashed a few at a time, the API stays responsive.
    let url = s.url.clone();
    let flood = std::thread::spawn(move || -> R<Vec<u16>> {
        rt().block_on(async move {
            let c = reqwest::Client::new();
            let mut tasks = Vec::new();
            for i in 0..60 {
                let c = c.clone();
                let url = format!("{url}/api/v1/login");
                tasks.push(tokio::spawn(async move {
                    c.post(&url)
                        .json(&json!({"username": format!("flood-{i}"), "password": "xxxxxxxx"}))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or(0));
            }
            Ok(out)
        })
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (code, _) = http(
        "GET",
        &format!("{}/api/v1/users/me", s.url),
        Some(&s.token()?),
        None,
    )?;
    assert_eq!(code, 200);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the API answered in {:?} during the flood",
        t.elapsed()
    );
    let codes = flood
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread"))??;
    assert!(
        codes.iter().all(|c| [401, 429, 503].contains(c)),
        "{codes:?}"
    );
    Ok(())
}
both_backends!(sign_in_guessing_is_locked_out);

/// An admin suspends a user: their open SSH session through the relay ends at once, their
/// tokens stop working, their workspace stops, they cannot sign in; reinstated, they can.
fn suspended_users_are_cut_off(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let bob = Client::new_user(&s, "bob")?;
    bob.ok(&["create", "dev"])?;
    bob.json(&["show", "dev"])?;
    s.ok(&["create", "mine"])?;
    // A long SSH session through the relay.
    let proxy = format!("{} ssh --stdio %h", bin("outpost").display());
    let mut session = std::process::Command::new("ssh")
        .args([
            "-o",
            &format!("ProxyCommand={proxy}"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-i",
        ])
        .arg(&bob.key)
        .arg("bob@dev")
        .arg("echo connected; sleep 120")
        .env("OUTPOST_CONFIG_DIR", &bob.config_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut first = [0u8; 10];
    session
        .stdout
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?
        .read_exact(&mut first)?;
    assert_eq!(&first, b"connected\n");

    let suspended = s.json(&["users", "suspend", "bob"])?;
    assert_eq!(suspended["suspended"], true);
    let t = Instant::now();
    let deadline = t + Duration::from_secs(15);
    while session.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        session.try_wait()?.is_some(),
        "the SSH session outlived the suspension"
    );
    let _ = session.kill();
    let o = run_with_stdin(bob.command(&["list"]), "")?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("suspended"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // bob's workspace is stopped (bob cannot look: read the store).
    eventually(|| {
        let rows = s.db_rows(
            "SELECT j.status FROM workspace_builds b JOIN provisioner_jobs j ON j.build_id = b.id JOIN workspaces w ON w.id = b.workspace_id JOIN users u ON u.id = w.owner_id WHERE u.username = 'bob' AND b.transition = 'stop'",
        )?;
        Ok(rows.iter().any(|r| r[0] == "succeeded").then_some(()))
    })?;
    let (code, _) = post_json(
        &format!("{}/api/v1/login", s.url),
        None,
        &json!({"username": "bob", "password": "bob-password-1"}),
    )?;
    assert_eq!(code, 403);
    // Only bob: the admin's workspace runs on.
    assert_eq!(s.workspace("mine")?["status"], "running");
    // Non-admins cannot suspend, and nobody suspends themselves.
    assert!(
        !run_with_stdin(bob.command(&["users", "suspend", "admin"]), "")?
            .status
            .success()
    );
    assert!(s.cli(&["users", "suspend", "admin"])?.status.code() != Some(0));

    s.json(&["users", "unsuspend", "bob"])?;
    let (code, _) = post_json(
        &format!("{}/api/v1/login", s.url),
        None,
        &json!({"username": "bob", "password": "bob-password-1"}),
    )?;
    assert_eq!(code, 200);
    Ok(())
}
both_backends!(suspended_users_are_cut_off);

/// Raw HTTP/1.1 on a fresh connection: the status code and the head.
fn raw(url: &str, request: &str) -> R<(u16, String)> {
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(request.replace("HOST", addr).as_bytes())?;
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, head))
}

/// The sign-in form's CSRF cookie and value, then a POST with `next`: the redirect's target
/// and the session cookie's attributes.
fn sign_in_with_next(s: &Server, next: &str, extra_headers: &str) -> R<(String, String)> {
    let (_, head) = raw(
        &s.url,
        "GET /login HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n",
    )?;
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .to_string();
    let csrf = cookie.split_once('=').map(|(_, v)| v).unwrap_or("");
    let form = format!(
        "username=admin&password=admin-password&csrf={csrf}&next={}",
        outpost_api::percent_encode(next)
    );
    let (code, head) = raw(
        &s.url,
        &format!("POST /login HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra_headers}\r\n{form}", form.len()),
    )?;
    anyhow::ensure!(code == 303 || code == 302 || code == 307, "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or("")
        .trim()
        .to_string();
    let session = head
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with("outpost_session="))
        .unwrap_or("")
        .to_string();
    Ok((location, session))
}

/// Sign-in redirects stay on our origin whatever a browser would strip or normalise; the
/// session cookie is Secure when the request came over TLS (a proxy in front says so);
/// WebSockets to the terminal and to apps are refused from any other origin, compared whole.
fn web_edges_hold(backend: Backend) -> R {
    let s = Server::start(backend)?;
    for hostile in [
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "https://evil.example/",
    ] {
        let (location, _) = sign_in_with_next(&s, hostile, "")?;
        assert_eq!(location, "/", "next={hostile:?}");
    }
    let (location, session) = sign_in_with_next(&s, "/@admin/dev?x=1", "")?;
    assert_eq!(location, "/@admin/dev?x=1");
    assert!(
        session.contains("HttpOnly") && !session.contains("Secure"),
        "{session}"
    );
    let (_, session) = sign_in_with_next(&s, "/", "X-Forwarded-Proto: https\r\n")?;
    assert!(session.contains("; Secure"), "{session}");

    // The terminal's WebSocket with the session cookie.
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    let cookie = session.split(';').next().unwrap_or("").to_string();
    let ws = |path: &str, origin: Option<&str>| -> R<u16> {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        Ok(raw(
            &s.url,
            &format!("GET {path} HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n{origin}\r\n"),
        )?
        .0)
    };
    let pty = "/api/v1/workspaces/dev/pty?session=origin-test";
    // A prefix of our origin, our host as a subdomain of another, another scheme: refused.
    let prefix = &s.url[..s.url.len() - 1];
    for bad in [
        prefix.to_string(),
        format!("{}.evil.example", s.url),
        "http://evil.example".to_string(),
        "null".to_string(),
    ] {
        assert_eq!(ws(pty, Some(&bad))?, 403, "Origin: {bad}");
    }
    assert_eq!(ws(pty, None)?, 403, "a cookie without an Origin");
    assert_eq!(ws(pty, Some(&s.url))?, 101);
    // An app's WebSocket through the proxy: the same rule.
    let port_path = "/@admin/dev/ports/9/";
    assert_eq!(ws(port_path, Some(prefix))?, 403);
    Ok(())
}
both_backends!(web_edges_hold);
