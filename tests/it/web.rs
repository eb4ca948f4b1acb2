//! The dashboard in a real browser (Debian's chromium through chromedriver): sign in, create a
//! workspace from the form, the web terminal (typing, resize, `top` across a reload, two tabs on
//! one session, the idle timeout), apps and ports through the proxy with share levels, another
//! user kept out, and CSRF. Screenshots of the main pages land in `target/screenshots/`.

use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::browser::Browser;
use crate::harness::*;

/// A WebSocket echo server with Python's standard library only (what Jupyter's kernels and
/// code-server need from the proxy: the upgrade passed through).
const WS_ECHO: &str = r#"import base64, hashlib, socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return
        data += chunk
    key = [l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    f = c.makefile("rb")
    while True:
        h = f.read(2)
        if len(h) < 2:
            return
        op, n = h[0] & 15, h[1] & 127
        if n == 126:
            n = int.from_bytes(f.read(2), "big")
        elif n == 127:
            n = int.from_bytes(f.read(8), "big")
        mask = f.read(4) if h[1] & 128 else bytes(4)
        p = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8:
            return
        if op == 1:
            out = b"echo:" + p
            c.sendall(bytes([0x81, len(out)]) + out)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Types into the terminal (xterm.js's hidden textarea takes the keys).
fn term_type(b: &Browser, text: &str) -> R {
    b.type_into(".xterm-helper-textarea", text)
}

fn screen(b: &Browser) -> R<String> {
    Ok(b.exec(
        "return window.outpostScreen ? window.outpostScreen() : '';",
        json!([]),
    )?
    .as_str()
    .unwrap_or_default()
    .to_string())
}

fn wait_screen(b: &Browser, needle: &str) -> R<String> {
    b.wait_js(
        &format!(
            "window.outpostScreen && window.outpostScreen().includes({}) && window.outpostScreen()",
            json!(needle)
        ),
        30,
    )
    .map(|v| v.as_str().unwrap_or_default().to_string())
}

fn dashboard_terminal_and_apps(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    // Apps on hosts of their own under *.apps.localhost (Chromium resolves it to loopback).
    let mut s = Server::start_with(
        backend,
        &[
            "--terminal-idle-timeout-secs",
            "6",
            "--apps-domain",
            "*.apps.localhost",
        ],
    )?;
    let port = s.url.rsplit(':').next().unwrap_or_default().to_string();
    let app_host = |slug: &str| format!("http://{slug}--dev--admin.apps.localhost:{port}");
    let (owner_port, public_port, dead_port) = (free_port()?, free_port()?, free_port()?);
    let dir = s.dir.path().join("web-template");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        format!(
            r#"description = "A workspace with two web apps"
[provisioner]
type = "local"

[[parameters]]
name = "greeting"
type = "string"
default = "hi"

[[apps]]
slug = "files"
display_name = "Files"
port = {owner_port}
share = "owner"
healthcheck = {{ url = "http://127.0.0.1:{owner_port}/", interval = "1s", threshold = 3 }}

[[apps]]
slug = "shared"
display_name = "Shared files"
port = {public_port}
share = "public"

[[apps]]
slug = "team"
display_name = "Team files"
port = {public_port}
share = "authenticated"

[[apps]]
slug = "broken"
port = {dead_port}
healthcheck = {{ url = "http://127.0.0.1:{dead_port}/", interval = "1s", threshold = 2 }}

[[scripts]]
name = "serve"
script = """
echo "$OUTPOST_WORKSPACE" > marker-$OUTPOST_WORKSPACE.txt
echo "serving the home on two ports"
nohup python3 -m http.server {owner_port} --bind 127.0.0.1 >/dev/null 2>&1 &
nohup python3 -m http.server {public_port} --bind 127.0.0.1 >/dev/null 2>&1 &
"""
"#
        ),
    )?;
    s.ok(&["templates", "push", dir.to_str().unwrap_or_default()])?;
    s.cli_stdin(
        &["users", "create", "bob", "--password-stdin"],
        "bob-password\n",
    )?;
    let url = s.url.clone();

    // Sign in with the password: the cookie is HttpOnly (scripts cannot read it).
    b.sign_in(&url, "admin", "admin-password")?;
    assert_eq!(b.exec("return document.cookie;", json!([]))?, "");
    b.screenshot("workspaces")?;

    // A wrong password says so and sets no session.
    // (Checked with a plain HTTP client below, to keep this browser signed in.)

    // Create a workspace from the form.
    b.goto(&format!("{url}/new"))?;
    b.wait_js(
        "document.querySelector('#template option[value=\"web-template\"]')",
        30,
    )?;
    b.exec(
        "const s = document.getElementById('template'); s.value = 'web-template'; s.dispatchEvent(new Event('change'));",
        json!([]),
    )?;
    b.wait_js("document.querySelector('[data-param=\"greeting\"]')", 30)?;
    b.type_into("#ws-name", "dev")?;
    b.screenshot("new-workspace")?;
    b.click("#create-button")?;
    b.wait_js("location.pathname === '/@admin/dev'", 30)?;
    b.wait_js(
        "document.getElementById('status').textContent === 'running'",
        60,
    )?;
    let w = s.workspace("dev")?;
    assert_eq!(w["parameters"]["greeting"], "hi");
    assert_eq!(w["template"], "web-template");
    // The build log streamed into the page; the app turns healthy; the ports are listed.
    b.wait_js(
        "document.getElementById('build-log').textContent.includes('[')",
        30,
    )?;
    b.wait_js(
        "document.querySelector('#apps [data-app=\"files\"] .healthy')",
        60,
    )?;
    b.wait_js(
        &format!("document.querySelector('#ports [data-port=\"{owner_port}\"] a')"),
        60,
    )?;
    b.wait_js(
        "document.getElementById('lifecycle').textContent === 'ready'",
        30,
    )?;
    // The scripts' output streams into the page.
    b.wait_js(
        "document.getElementById('agent-log').textContent.includes('serve: serving the home on two ports')",
        30,
    )?;
    // Only the workspace's own listeners: the public app's port, not the host's (or the agent's).
    b.wait_js(
        &format!("document.querySelector('#ports [data-port=\"{public_port}\"]')"),
        30,
    )?;
    let listed = b.exec(
        "return [...document.querySelectorAll('#ports [data-port]')].map(e => Number(e.dataset.port));",
        json!([]),
    )?;
    let mut listed: Vec<u64> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    listed.sort();
    let mut want = vec![owner_port as u64, public_port as u64];
    want.sort();
    assert_eq!(listed, want);
    // Health: checked apps turn healthy or (after `threshold` failures) unhealthy; unchecked
    // ones are disabled.
    let (w, _) = s.wait_for("dev", Duration::from_secs(30), |w| {
        w["apps"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["slug"] == "broken" && x["health"] == "unhealthy")
        })
    })?;
    let health: Vec<(String, String)> = w["apps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["slug"].as_str().unwrap_or("").to_string(),
                        x["health"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<(String, String)> = [
        ("files", "healthy"),
        ("shared", "disabled"),
        ("team", "disabled"),
        ("broken", "unhealthy"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(health, want);
    b.screenshot("workspace")?;

    // The terminal: type a command and see its output.
    b.goto(&format!("{url}/@admin/dev/terminal"))?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    let term_url = b.url()?;
    assert!(term_url.contains("session="), "{term_url}");
    term_type(&b, "echo hello-$((6*7))\n")?;
    wait_screen(&b, "hello-42")?;
    // It counts as a pty session in the agent's stats.
    s.wait_for("dev", Duration::from_secs(20), |w| {
        w["agent"]["stats"]["sessions"]["pty"].as_u64() >= Some(1)
    })?;
    b.screenshot("terminal")?;

    // Resize: the PTY follows the browser window.
    let size = |b: &Browser| -> R<(u64, u64)> {
        let v = b.exec(
            "return [window.outpostTerminal.rows, window.outpostTerminal.cols];",
            json!([]),
        )?;
        Ok((v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0)))
    };
    let before = size(&b)?;
    term_type(&b, "clear; stty size\n")?;
    wait_screen(&b, &format!("{} {}", before.0, before.1))?;
    b.set_size(900, 600)?;
    b.wait_js(&format!("window.outpostTerminal.cols !== {}", before.1), 20)?;
    let after = size(&b)?;
    assert_ne!(before, after);
    term_type(&b, "clear; stty size\n")?;
    wait_screen(&b, &format!("{} {}", after.0, after.1))?;

    // top, then a reload: the same screen comes back (repainted from the agent's model).
    term_type(&b, "top -d 60\n")?;
    let first = wait_screen(&b, "load average")?;
    wait_screen(&b, "PID")?;
    std::thread::sleep(Duration::from_millis(500));
    let before_reload = screen(&b)?;
    b.refresh()?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    let again = wait_screen(&b, "PID")?;
    assert!(again.contains("load average"), "{again}");
    let row_of = |s: &str, needle: &str| s.lines().position(|l| l.contains(needle));
    assert_eq!(
        row_of(&again, "PID"),
        row_of(&before_reload, "PID"),
        "{before_reload}\n---\n{again}"
    );
    assert_eq!(row_of(&again, "load average"), Some(0), "{again}");
    assert!(first.lines().count() == again.lines().count());
    // top's header rows are the same text (it refreshes every 60 s).
    assert_eq!(
        before_reload.lines().nth(1),
        again.lines().nth(1),
        "{before_reload}\n---\n{again}"
    );
    b.screenshot("terminal-top-after-reload")?;

    // Control restarts (kill -9): the page reconnects by itself, to the same session and screen.
    s.restart()?;
    b.wait_js("document.body.dataset.connected === ''", 20)?;
    b.wait_js("document.body.dataset.connected === '1'", 60)?;
    let after_restart = wait_screen(&b, "PID")?;
    assert_eq!(
        row_of(&after_restart, "PID"),
        row_of(&before_reload, "PID"),
        "{after_restart}"
    );

    // A second tab on the same session sees the same screen and its input.
    let (first_tab, second_tab) = b.new_tab()?;
    b.goto(&term_url)?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    wait_screen(&b, "PID")?;
    term_type(&b, "q")?;
    term_type(&b, "echo two-$((1+1))-tabs\n")?;
    wait_screen(&b, "two-2-tabs")?;
    b.switch_to(&first_tab)?;
    wait_screen(&b, "two-2-tabs")?;
    b.switch_to(&second_tab)?;
    b.close_tab()?;
    b.switch_to(&first_tab)?;

    // Apps: the owner opens the owner-level app through its link; a port link works too.
    b.goto(&format!("{url}/@admin/dev"))?;
    let href = b
        .wait_js(
            "document.querySelector('#apps [data-app=\"files\"] a')?.getAttribute('href')",
            30,
        )?
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(href, format!("{}/", app_host("files")));
    // Clicking the link opens the app in a new tab, on its own host: signed in through the
    // dashboard (the app host gets a cookie of its own).
    let page_tab = b.current_tab()?;
    b.click("#apps [data-app=\"files\"] a")?;
    let app_tab = b.wait_new_tab(&page_tab)?;
    b.switch_to(&app_tab)?;
    b.wait_js("document.body.innerText.includes('marker-dev.txt')", 30)?;
    assert_eq!(b.url()?, format!("{}/", app_host("files")));
    // The app's scripts run in another origin: the dashboard's API answers them without the
    // session (nothing to read, nothing to act as).
    let probe = b.exec_async(&format!(
        "try {{ const r = await fetch('{url}/api/v1/users/me', {{credentials: 'include'}}); return 'status ' + r.status; }} catch (e) {{ return 'blocked'; }}"
    ))?;
    assert!(
        probe == "blocked" || probe == "status 401",
        "an app read the dashboard: {probe}"
    );
    b.screenshot("app")?;
    b.close_tab()?;
    b.switch_to(&page_tab)?;
    b.goto(&format!(
        "{url}/@admin/dev/ports/{owner_port}/marker-dev.txt"
    ))?;
    b.wait_js("document.body.innerText.trim() === 'dev'", 30)?;

    // A WebSocket app started from the terminal: listed as a port, and the upgrade is passed
    // through the proxy.
    let ws_port = free_port()?;
    std::fs::write(home_of(&s.workspace("dev")?).join("ws_echo.py"), WS_ECHO)?;
    b.goto(&term_url)?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    term_type(
        &b,
        &format!("(nohup python3 ws_echo.py {ws_port} >/dev/null 2>&1 &)\n"),
    )?;
    s.wait_for("dev", Duration::from_secs(30), |w| {
        w["agent"]["stats"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["port"] == ws_port))
    })?;
    b.goto(&format!("{url}/@admin/dev"))?;
    let echo = b.exec_async(&format!(
        "return await new Promise((res) => {{ const ws = new WebSocket(`ws://${{location.host}}/@admin/dev/ports/{ws_port}/`); ws.onopen = () => ws.send('ping'); ws.onmessage = (e) => {{ res(e.data); ws.close(); }}; ws.onerror = () => res('error'); }});"
    ))?;
    assert_eq!(echo, "echo:ping");

    // A terminal session can run a command instead of the login shell, but a link alone never
    // runs it: the page shows the command and waits for a click.
    let pwned = home_of(&s.workspace("dev")?).join("pwned-by-link");
    b.goto(&format!(
        "{url}/@admin/dev/terminal?session=cmd-1&command=touch%20pwned-by-link%3B%20echo%20from-a-command%3B%20sleep%2030"
    ))?;
    b.wait_find("#command-confirm")?;
    let shown = b.text("#command-text")?;
    assert_eq!(shown, "touch pwned-by-link; echo from-a-command; sleep 30");
    // The same request straight at the WebSocket (what a hostile page on our origin or a
    // script could try): refused without the page's CSRF token, even from our own origin.
    let raw = b.exec_async(
        "return await new Promise((res) => { const ws = new WebSocket(`ws://${location.host}/api/v1/workspaces/dev/pty?session=cmd-2&command=touch%20pwned-by-link`); ws.onopen = () => res('open'); ws.onerror = () => res('refused'); });",
    )?;
    assert_eq!(raw, "refused");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!pwned.exists(), "a link ran a command without a click");
    b.click("#command-run")?;
    wait_screen(&b, "from-a-command")?;
    assert!(pwned.exists());

    // The shell's pid, for the idle-timeout check at the end.
    b.goto(&term_url)?;
    b.wait_js("document.body.dataset.connected === '1'", 30)?;
    term_type(&b, "echo shell-pid-$$-end\n")?;
    let text = b
        .wait_js(
            "/shell-pid-[0-9]+-end/.test(window.outpostScreen()) && window.outpostScreen()",
            30,
        )?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pid: i32 = text
        .split("shell-pid-")
        .filter_map(|t| t.split("-end").next())
        .filter_map(|t| t.parse().ok())
        .last()
        .unwrap_or(0);
    assert!(pid > 0 && alive(pid), "{text}");

    // Another user: no terminal, no owner-level app, but the public one.
    b.goto("about:blank")?;
    b.delete_cookies()?;
    b.sign_in(&url, "bob", "bob-password")?;
    b.goto(&format!("{url}/@admin/dev/terminal"))?;
    let body = b.text("body")?;
    assert!(body.contains("no workspace"), "{body}");
    let ws_result = b.exec_async(
        "return await new Promise((res) => { const ws = new WebSocket(`ws://${location.host}/api/v1/workspaces/dev/pty?session=steal`); ws.onopen = () => res('open'); ws.onerror = () => res('refused'); });",
    )?;
    assert_eq!(ws_result, "refused");
    let (code, _) = http("GET", &format!("{url}/@admin/dev/apps/files/"), None, None)?;
    assert_eq!(
        code, 200,
        "an anonymous client is sent to sign in (redirect followed)"
    );
    b.goto(&format!("{url}/@admin/dev/apps/files/"))?;
    let body = b.text("body")?;
    assert!(
        body.contains("no such app") && !body.contains("marker"),
        "{body}"
    );
    b.goto(&format!("{url}/@admin/dev/ports/{owner_port}/"))?;
    assert!(!b.text("body")?.contains("marker"));
    // Shared apps are not shared on the dashboard's own origin (an app there could act as its
    // visitors), only on their own hosts.
    b.goto(&format!("{url}/@admin/dev/apps/shared/"))?;
    let body = b.text("body")?;
    assert!(
        body.contains("no such app") && !body.contains("marker"),
        "{body}"
    );
    b.goto(&format!("{}/", app_host("shared")))?;
    b.wait_js("document.body.innerText.includes('marker-dev.txt')", 30)?;
    // An app for signed-in users: bob may (signed in through the dashboard), an anonymous
    // client is sent to sign in.
    b.goto(&format!("{}/", app_host("team")))?;
    b.wait_js("document.body.innerText.includes('marker-dev.txt')", 30)?;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let anon = rt().block_on(
        no_redirects
            .get(format!("{url}/@admin/dev/apps/team/"))
            .send(),
    )?;
    assert_eq!(anon.status().as_u16(), 303);
    assert!(anon
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| l.starts_with("/login?next=")));
    let anon = rt().block_on(
        no_redirects
            .get(format!("{url}/@admin/dev/apps/shared/"))
            .send(),
    )?;
    assert_eq!(
        anon.status().as_u16(),
        303,
        "not shared on the dashboard's origin"
    );

    // CSRF: a state change with the session cookie but without the page's token is refused
    // and changes nothing; with it, it goes through.
    b.goto(&format!("{url}/"))?;
    b.wait_js("document.body.dataset.page === 'home'", 30)?;
    let before = s.db_snapshot()?;
    let forged = b.exec_async(
        "const r = await fetch('/api/v1/workspaces', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({name: 'forged', template: 'base'})}); return r.status + ' ' + (await r.text());",
    )?;
    let forged = forged.as_str().unwrap_or_default().to_string();
    assert!(forged.starts_with("403"), "{forged}");
    assert!(forged.contains("CSRF"), "{forged}");
    let forged_logout = b.exec_async(
        "const r = await fetch('/logout', {method: 'POST', body: new URLSearchParams({csrf: 'wrong'})}); return r.status;",
    )?;
    assert_eq!(forged_logout, 403);
    assert_eq!(s.db_snapshot()?, before);
    let tokens = s.ok(&["audit", "--action", "web.csrf"])?;
    assert!(tokens.contains("rejected"), "{tokens}");
    let with_token = b.exec_async(
        "const t = document.querySelector('meta[name=\"csrf-token\"]').content; const r = await fetch('/api/v1/users/me', {headers: {'X-CSRF-Token': t}}); return (await r.json()).username;",
    )?;
    assert_eq!(with_token, "bob");

    // Sign out revokes the session.
    b.click("#signout")?;
    b.wait_js("location.pathname === '/login'", 30)?;
    b.goto(&format!("{url}/"))?;
    b.wait_js("location.pathname === '/login'", 30)?;

    // Nobody is attached to admin's terminal session any more: it ends after the idle timeout.
    eventually(|| Ok((!alive(pid)).then_some(())))?;

    // The workspace page's buttons: stop, start, and delete (after the confirmation).
    b.sign_in(&url, "admin", "admin-password")?;
    b.goto(&format!("{url}/@admin/dev"))?;
    b.wait_js(
        "document.getElementById('status').textContent === 'running'",
        30,
    )?;
    b.click("button[data-action=stop]")?;
    b.wait_js(
        "document.getElementById('status').textContent === 'stopped'",
        60,
    )?;
    b.click("button[data-action=start]")?;
    b.wait_js(
        "document.getElementById('status').textContent === 'running'",
        60,
    )?;
    let before = s.workspace("dev")?["latest_build"]["number"]
        .as_i64()
        .unwrap_or(0);
    b.click("button[data-action=restart]")?;
    s.wait_for("dev", Duration::from_secs(60), |w| {
        w["latest_build"]["number"].as_i64().unwrap_or(0) > before && w["status"] == "running"
    })?;
    b.wait_js(
        "document.getElementById('status').textContent === 'running'",
        60,
    )?;
    b.click("button[data-action=delete]")?;
    b.accept_alert()?;
    b.wait_js("location.pathname === '/'", 60)?;
    b.wait_js("document.querySelector('#workspaces td.muted')", 60)?;
    assert!(b.text("#workspaces")?.contains("No workspaces yet"));
    // The web servers started inside the workspace go with the server (Server's drop, by pid).
    Ok(())
}
both_backends!(dashboard_terminal_and_apps);

fn wrong_password_and_bad_login_forms(backend: Backend) -> R {
    outpost_common::tls::install_provider();
    let s = Server::start(backend)?;
    let url = s.url.clone();
    // A form without the sign-in page's CSRF cookie is sent back to sign in, without a session.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = rt().block_on(
        client
            .post(format!("{url}/login"))
            .form(&[
                ("username", "admin"),
                ("password", "admin-password"),
                ("csrf", "x"),
            ])
            .send(),
    )?;
    assert_eq!(resp.status().as_u16(), 303);
    assert!(resp
        .headers()
        .get("set-cookie")
        .is_none_or(|c| !c.to_str().unwrap_or("").contains("outpost_session=opt")));
    // With the cookie but a wrong password: an error, no session.
    let resp = rt().block_on(
        client
            .post(format!("{url}/login"))
            .header("cookie", "outpost_login_csrf=abc")
            .form(&[("username", "admin"), ("password", "nope"), ("csrf", "abc")])
            .send(),
    )?;
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(loc.contains("Wrong"), "{loc}");
    // Right password: an HttpOnly, SameSite session cookie.
    let resp = rt().block_on(
        client
            .post(format!("{url}/login"))
            .header("cookie", "outpost_login_csrf=abc")
            .form(&[
                ("username", "admin"),
                ("password", "admin-password"),
                ("csrf", "abc"),
                ("next", "//evil.example/"),
            ])
            .send(),
    )?;
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/")
    );
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("outpost_session="))
        .unwrap_or("")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // Pages need a session; the API answers 401 to a request with neither token nor cookie.
    let resp = rt().block_on(client.get(format!("{url}/new")).send())?;
    assert_eq!(resp.status().as_u16(), 303);
    let (code, _) = http("GET", &format!("{url}/api/v1/workspaces"), None, None)?;
    assert_eq!(code, 401);
    // A terminal WebSocket from another origin is refused.
    let session = cookie.split(';').next().unwrap_or("").to_string();
    let resp = rt().block_on(
        client
            .get(format!("{url}/api/v1/workspaces/dev/pty?session=x"))
            .header("cookie", &session)
            .header("origin", "http://evil.example")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send(),
    )?;
    assert_eq!(resp.status().as_u16(), 403);

    // Malformed paths and requests get clear errors, never a crash.
    let token = s.token()?;
    for (path, want) in [
        ("/assets/nope.js", 404),
        ("/@admin", 404),
        ("/@admin/", 404),
        ("/@nobody/dev/apps/x/", 404),
        ("/@admin/dev/ports/99999/", 404),
        ("/@admin/dev/ports/abc/", 404),
        ("/@admin/dev/elsewhere", 404),
        ("/api/v1/workspaces/dev/pty", 400),
        ("/api/v1/workspaces/dev/pty?session=x&cols=huge", 400),
    ] {
        let (code, _) = http("GET", &format!("{url}{path}"), Some(&token), None)?;
        assert_eq!(code, want, "{path}");
    }
    let (code, body) = http(
        "GET",
        &format!("{url}/api/v1/workspaces/none/pty?session=x"),
        Some(&token),
        None,
    )?;
    assert!(code == 400 || code == 404, "{code} {body}");
    assert!(s.log().lines().all(|l| !l.contains("panicked")));
    Ok(())
}
both_backends!(wrong_password_and_bad_login_forms);
