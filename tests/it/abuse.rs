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

/// An admin suspends a user: their open SSH session through the relay and their web terminal
/// end at once, their tokens stop working, their workspace stops, they cannot sign in;
/// reinstated, they can.
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
    // And a web terminal: its WebSocket, upgraded, with a shell printing a prompt.
    let token: Value =
        serde_json::from_slice(&std::fs::read(bob.config_dir.join("session.json"))?)?;
    let addr = s.url.trim_start_matches("http://").trim_end_matches('/');
    let mut terminal = std::net::TcpStream::connect(addr)?;
    terminal.write_all(
        format!(
            "GET /api/v1/workspaces/dev/pty?session=held HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            token["token"].as_str().unwrap_or_default()
        )
        .as_bytes(),
    )?;
    terminal.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = [0u8; 12];
    terminal.read_exact(&mut head)?;
    assert_eq!(&head, b"HTTP/1.1 101");
    // Still open a second later (it is not closed for some other reason).
    assert!(!closed_within(&mut terminal, Duration::from_secs(1)));

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
    assert!(
        closed_within(&mut terminal, Duration::from_secs(5)),
        "the web terminal outlived the suspension"
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

/// Idle bytes from `addr` on `c` until it is closed (true) or `wait` passes (false).
pub(crate) fn closed_within(c: &mut std::net::TcpStream, wait: Duration) -> bool {
    let _ = c.set_read_timeout(Some(wait));
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// A TCP connection to `url` from `source` (a loopback address).
fn connect_from(url: &str, source: &str) -> R<std::net::TcpStream> {
    let target: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .parse()?;
    let src: std::net::SocketAddr = format!("{source}:0").parse()?;
    let tcp = rt().block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(src)?;
        sock.connect(target).await
    })?;
    let std = tcp.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}

/// Slow and numerous connections: a client that never finishes its headers is cut off after
/// the header timeout; one address holding its quota of connections gets no more, on the API
/// and on the agent API's handshakes, while other addresses and the workspace's agent are
/// served; an SSH connection that does not log in is closed after the login grace; one agent
/// cannot hold many polls, flood heartbeats or mint credentials without end.
fn listeners_have_limits(backend: Backend) -> R {
    let s = Server::start_with(
        backend,
        &[
            "--max-connections-per-source",
            "8",
            "--header-read-timeout-secs",
            "2",
            "--ssh-login-grace-secs",
            "2",
        ],
    )?;
    let admin = Client::admin(&s)?;
    admin.ok(&["create", "w"])?;
    let (w, _) = s.wait_for("w", T, |w| {
        w["status"] == "running" && w["agent"]["status"] == "connected"
    })?;

    // Eight slow senders from one address: the ninth connection is closed at once.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut c = connect_from(&s.url, "127.0.0.2")?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
        slow.push(c);
    }
    let mut ninth = connect_from(&s.url, "127.0.0.2")?;
    assert!(
        closed_within(&mut ninth, Duration::from_secs(2)),
        "a ninth connection was kept"
    );
    // Others are served meanwhile.
    let t = Instant::now();
    let (code, _) = http("GET", &format!("{}/healthz", s.url), None, None)?;
    assert_eq!(code, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    // The slow senders are cut off at the header deadline, and the address may connect again.
    for c in &mut slow {
        assert!(
            closed_within(c, Duration::from_secs(6)),
            "a slow sender was kept"
        );
    }
    let mut again = connect_from(&s.url, "127.0.0.2")?;
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    again.read_to_string(&mut reply)?;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // The agent API: handshakes in progress from one address get four times the quota (32
    // here); the next waits a few seconds for a turn, then is closed; the workspace's agent
    // (another address) stays connected.
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(connect_from(&s.agent_url, "127.0.0.3")?);
    }
    // (Let the server take those in first: it accepts in its own order.)
    std::thread::sleep(Duration::from_millis(500));
    let mut next = connect_from(&s.agent_url, "127.0.0.3")?;
    let t = Instant::now();
    assert!(closed_within(&mut next, Duration::from_secs(9)));
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(s.workspace("w")?["agent"]["status"], "connected");
    drop(held);
    // A slow sender on the agent API, past its TLS handshake: cut off at the header deadline.
    let bundle_pins: Vec<String> = serde_json::from_str::<Value>(&std::fs::read_to_string(
        resource_path(&w, "run")
            .expect("run dir")
            .join("agent/bundle.json"),
    )?)?["ca_pins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let agent_addr = s.agent_url.trim_start_matches("https://").to_string();
    let cut_off = rt().block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cfg = outpost_common::tls::client_config(&bundle_pins, None)?;
        let tcp = tokio::net::TcpStream::connect(&agent_addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET /agent/v1/poll HTTP/1.1\r\nHost: x\r\n")
            .await?;
        let t = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return anyhow::Ok(Some(t.elapsed())),
                Ok(Ok(_)) => continue,
                Err(_) => return anyhow::Ok(None),
            }
        }
    })?;
    assert!(
        cut_off.is_some_and(|d| d < Duration::from_secs(6)),
        "agent API slow sender: {cut_off:?}"
    );

    // SSH through the relay that never logs in: closed after the grace.
    let token = s.token()?;
    let mut relay = std::net::TcpStream::connect(s.url.trim_start_matches("http://"))?;
    relay.write_all(
        format!("GET /api/v1/workspaces/w/relay/ssh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: outpost-relay\r\n\r\n").as_bytes(),
    )?;
    relay.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = [0u8; 12];
    relay.read_exact(&mut head)?;
    assert_eq!(&head, b"HTTP/1.1 101");
    let t = Instant::now();
    assert!(closed_within(&mut relay, Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(admin.sh("w", "echo logged-in")?.trim(), "logged-in");

    // One agent's credential (readable in its workspace): polls, heartbeats, mints are capped.
    let AgentCreds { bundle, chain, key } = agent_creds(&w)?;
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(
            agent_call(
                &bundle,
                "/agent/v1/heartbeat",
                Some(json!({"lifecycle": null, "stats": {}})),
                Some((&chain, &key)),
            )?
            .0,
        );
    }
    assert!(codes.contains(&429), "heartbeats: {codes:?}");
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(
            agent_call(
                &bundle,
                "/agent/v1/user-token",
                Some(json!({})),
                Some((&chain, &key)),
            )?
            .0,
        );
    }
    assert!(
        codes.iter().filter(|c| **c == 200).count() <= 5,
        "mints: {codes:?}"
    );
    assert!(codes.contains(&429), "mints: {codes:?}");
    // Polls: the agent holds one; two more at once, and one of them is refused.
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let (b, c, k) = (bundle.clone(), chain.clone(), key.clone());
            std::thread::spawn(move || agent_call(&b, "/agent/v1/poll", None, Some((&c, &k))))
        })
        .collect();
    let codes: Vec<u16> = polls
        .into_iter()
        .filter_map(|h| h.join().ok().and_then(|r| r.ok()).map(|r| r.0))
        .collect();
    assert!(codes.contains(&429), "polls: {codes:?}");
    // The workspace's own agent is still served.
    s.wait_for("w", T, |w| w["agent"]["status"] == "connected")?;
    assert_eq!(admin.sh("w", "echo still")?.trim(), "still");
    Ok(())
}
both_backends!(listeners_have_limits);

/// An agent's direct SSH listener (`[agent] ssh_listen`): one address may hold 128 connections
/// that have not logged in, the next is closed at once while another address is served; a
/// connection that sends its banner and never logs in is closed after the login grace; and all
/// addresses together may hold 512, so four addresses at their quota leave a fifth none until
/// the grace frees them.
fn direct_ssh_listener_has_limits(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--ssh-login-grace-secs", "2"])?;
    push_local_template(&s, "direct", "[agent]\nssh_listen = \"127.0.0.1:0\"\n")?;
    s.ok(&["create", "d", "-t", "direct"])?;
    let (w, _) = s.wait_for("d", T, |w| w["agent"]["ssh_addr"].is_string())?;
    let addr = format!(
        "http://{}",
        w["agent"]["ssh_addr"].as_str().unwrap_or_default()
    );
    let mut held = Vec::new();
    for _ in 0..128 {
        held.push(connect_from(&addr, "127.0.0.2")?);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect_from(&addr, "127.0.0.2")?;
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)),
        "a 129th connection was kept"
    );
    // Another address: the server's banner, then closed after the grace (no login).
    let mut other = connect_from(&addr, "127.0.0.3")?;
    other.write_all(b"SSH-2.0-OpenSSH_9.2\r\n")?;
    let t = Instant::now();
    assert!(closed_within(&mut other, Duration::from_secs(10)));
    assert!(
        t.elapsed() >= Duration::from_millis(1500) && t.elapsed() < Duration::from_secs(8),
        "{:?}",
        t.elapsed()
    );
    // The held ones are closed after the grace too, and the address may connect again.
    for c in &mut held {
        assert!(closed_within(c, Duration::from_secs(8)));
    }
    let mut again = connect_from(&addr, "127.0.0.2")?;
    again.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut banner = [0u8; 8];
    again.read_exact(&mut banner)?;
    assert_eq!(&banner, b"SSH-2.0-");
    drop(again);

    // Many addresses: 4 x 128 connections not logged in fill the listener; a fifth address's
    // connection is closed at once (well inside the 2 s grace), then served once they are cut.
    std::thread::sleep(Duration::from_millis(300));
    let mut flood = Vec::new();
    for source in ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        for _ in 0..128 {
            flood.push(connect_from(&addr, source)?);
        }
    }
    let t = Instant::now();
    let mut fifth = connect_from(&addr, "127.0.0.8")?;
    assert!(
        closed_within(&mut fifth, Duration::from_secs(1)) && t.elapsed() < Duration::from_secs(1),
        "a connection past 512 not logged in was kept ({:?})",
        t.elapsed()
    );
    for c in &mut flood {
        assert!(
            closed_within(c, Duration::from_secs(8)),
            "cut after the grace"
        );
    }
    let mut served = connect_from(&addr, "127.0.0.8")?;
    served.set_read_timeout(Some(Duration::from_secs(5)))?;
    served.read_exact(&mut banner)?;
    assert_eq!(&banner, b"SSH-2.0-");
    Ok(())
}
both_backends!(direct_ssh_listener_has_limits);
