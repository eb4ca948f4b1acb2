//! Web apps of one user opened by others. On the dashboard's own origin (path-based) an app's
//! scripts could act as their visitor, so there apps are the owner's only (unless the admin
//! opts into danger), sandboxed by CSP, and never see or set Outpost's cookies; on the apps
//! domain each app is an origin of its own, signed in through the dashboard, and shared as its
//! template says. Driven with real HTTP against the real server and a real app in a workspace.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);
const APPS_DOMAIN: &str = "apps.test";

/// An app that answers every request with the headers it received (as JSON), and tries to set
/// Outpost's session cookie beside one of its own.
const ECHO_APP: &str = r#"import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("set-cookie", "outpost_session=fixated; Path=/")
        self.send_header("set-cookie", "Outpost_App_Token=fixated; Path=/")
        self.send_header("set-cookie", "app_pref=dark; Path=/")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

struct Answer {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    csp: String,
    body: String,
}

/// GET `url` without following redirects, with `cookie` and `bearer`; `*.apps.test` resolves
/// to the server.
fn get(s: &Server, url: &str, cookie: Option<&str>, bearer: Option<&str>) -> R<Answer> {
    let addr: SocketAddr = s.url.trim_start_matches("http://").parse()?;
    let (url, cookie, bearer) = (
        url.to_string(),
        cookie.map(str::to_string),
        bearer.map(str::to_string),
    );
    rt().block_on(async move {
        let host = reqwest::Url::parse(&url)?
            .host_str()
            .unwrap_or_default()
            .to_string();
        let c = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, addr)
            .timeout(Duration::from_secs(20))
            .build()?;
        let mut rb = c.get(&url);
        if let Some(k) = cookie {
            rb = rb.header("cookie", k);
        }
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await?;
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (location, csp) = (h("location"), h("content-security-policy"));
        let set_cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        Ok(Answer {
            status: r.status().as_u16(),
            location,
            set_cookies,
            csp,
            body: r.text().await?,
        })
    })
}

/// A server with the echo app as `shared` (public) and `team` (authenticated) in admin's
/// workspace `w`, and bob; their CLI tokens.
fn setup(s: &Server) -> R<(String, String)> {
    let port = free_port()?;
    let dir = s.dir.path().join("apps-template");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("echo.py"), ECHO_APP)?;
    std::fs::write(
        dir.join("template.toml"),
        format!(
            r#"[provisioner]
type = "local"

[[apps]]
slug = "shared"
port = {port}
share = "public"

[[apps]]
slug = "team"
port = {port}
share = "authenticated"

[[scripts]]
name = "serve"
script = "nohup python3 $OUTPOST_TEMPLATE_DIR/echo.py {port} >/dev/null 2>&1 &"
"#
        ),
    )?;
    s.ok(&["templates", "push", &dir.display().to_string()])?;
    s.ok(&["create", "w", "-t", "apps-template"])?;
    s.wait_for("w", T, |w| {
        w["agent"]["stats"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["port"] == port))
    })?;
    let bob = Client::new_user(s, "bob")?;
    let bob_token = serde_json::from_str::<Value>(&std::fs::read_to_string(
        bob.config_dir.join("session.json"),
    )?)?["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((s.token()?, bob_token))
}

/// Path-based apps: the owner's only (share levels are not honoured on the dashboard's origin),
/// a sandboxing CSP on every answer, no Outpost cookie or Authorization forwarded, no
/// Set-Cookie for an Outpost cookie name passed back.
fn path_apps_are_owner_only_and_sandboxed(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let (admin, bob) = setup(&s)?;
    let app = format!("{}/@admin/w/apps/shared/", s.url);
    let a = get(
        &s,
        &app,
        Some(&format!("outpost_session={admin}; app_pref=light")),
        None,
    )?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.csp.starts_with("sandbox ") && !a.csp.contains("allow-same-origin"),
        "{}",
        a.csp
    );
    let seen: Value = serde_json::from_str(&a.body)?;
    assert_eq!(seen["cookie"], "app_pref=light", "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert_eq!(a.set_cookies, vec!["app_pref=dark; Path=/".to_string()]);
    let a = get(&s, &app, None, Some(&admin))?;
    assert!(
        !a.body.contains(&admin)
            && serde_json::from_str::<Value>(&a.body)?
                .get("authorization")
                .is_none()
    );
    // Another user, and anyone: the app is public in its template, yet not on this origin.
    for bob_app in ["shared", "team"] {
        let a = get(
            &s,
            &format!("{}/@admin/w/apps/{bob_app}/", s.url),
            None,
            Some(&bob),
        )?;
        assert_eq!(a.status, 404, "{bob_app}: {}", a.body);
    }
    let a = get(&s, &app, None, None)?;
    assert_eq!(a.status, 303);
    assert!(a.location.starts_with("/login?next="));
    Ok(())
}
both_backends!(path_apps_are_owner_only_and_sandboxed);

/// With the admin's `--dangerous-allow-path-app-sharing`, path-based sharing works as the
/// template says (and is still sandboxed).
fn dangerous_path_sharing_is_explicit(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--dangerous-allow-path-app-sharing"])?;
    let (_, bob) = setup(&s)?;
    let a = get(
        &s,
        &format!("{}/@admin/w/apps/team/", s.url),
        None,
        Some(&bob),
    )?;
    assert_eq!(a.status, 200);
    assert!(a.csp.starts_with("sandbox "));
    let a = get(&s, &format!("{}/@admin/w/apps/shared/", s.url), None, None)?;
    assert_eq!(a.status, 200);
    Ok(())
}
both_backends!(dangerous_path_sharing_is_explicit);

/// On the apps domain: a public app for anyone; an authenticated one through the dashboard's
/// sign-in, with a token good for that host only, kept in a host-only HttpOnly cookie that the
/// app never sees; the dashboard lists the app's own host.
fn apps_domain_shares_safely(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--apps-domain", &format!("*.{APPS_DOMAIN}")])?;
    let (_, bob) = setup(&s)?;
    let port = s.url.rsplit(':').next().unwrap_or_default().to_string();
    let host = |label: &str| format!("http://{label}.{APPS_DOMAIN}:{port}");
    let w = s.workspace("w")?;
    let listed: Vec<&str> = w["apps"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["url"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        listed.contains(&format!("{}/", host("shared--w--admin")).as_str()),
        "{listed:?}"
    );

    // Public: anyone, no sandbox needed (its own origin).
    let a = get(&s, &format!("{}/x", host("shared--w--admin")), None, None)?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.csp.is_empty());
    // Authenticated: an anonymous visitor goes to the dashboard to sign in.
    let team = host("team--w--admin");
    let a = get(&s, &format!("{team}/page?q=1"), None, None)?;
    assert_eq!(a.status, 303);
    assert!(
        a.location
            .starts_with(&format!("{}/api/v1/apps/auth?host=team--w--admin", s.url)),
        "{}",
        a.location
    );
    // bob, signed in on the dashboard: a token for that host, through its callback.
    let a = get(
        &s,
        &a.location,
        Some(&format!("outpost_session={bob}")),
        None,
    )?;
    assert_eq!(a.status, 303, "{}", a.body);
    assert!(
        a.location
            .starts_with(&format!("{team}/.outpost/callback?token=")),
        "{}",
        a.location
    );
    let app_token = a
        .location
        .split("token=")
        .nth(1)
        .and_then(|t| t.split('&').next())
        .unwrap_or_default()
        .to_string();
    let cb = get(&s, &a.location, None, None)?;
    assert_eq!(cb.status, 303);
    assert_eq!(cb.location, "/page?q=1");
    let cookie = cb
        .set_cookies
        .iter()
        .find(|c| c.starts_with("outpost_app_token="))
        .cloned()
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly") && !cookie.to_ascii_lowercase().contains("domain="),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or_default().to_string();
    let a = get(
        &s,
        &format!("{team}/page?q=1"),
        Some(&format!("{pair}; app_pref=x")),
        None,
    )?;
    assert_eq!(a.status, 200, "{}", a.body);
    let seen: Value = serde_json::from_str(&a.body)?;
    assert_eq!(
        seen["cookie"], "app_pref=x",
        "the app never sees Outpost's cookie"
    );
    assert_eq!(a.set_cookies, vec!["app_pref=dark; Path=/".to_string()]);

    // That token is good for that host only: not another app's, not a port, not the API.
    let other = get(
        &s,
        &format!("{}/", host("8080--w--admin")),
        Some(&pair),
        None,
    )?;
    assert_ne!(other.status, 200);
    let forged = get(
        &s,
        &format!(
            "{}/.outpost/callback?token={app_token}&next=/",
            host("shared--w--admin")
        ),
        None,
        None,
    )?;
    assert_eq!(forged.status, 401);
    let (code, _) = http(
        "GET",
        &format!("{}/api/v1/users/me", s.url),
        Some(&app_token),
        None,
    )?;
    assert_eq!(code, 401);
    // bob may not open admin's ports on the apps domain either.
    let a = get(
        &s,
        &format!("{}/api/v1/apps/auth?host=8080--w--admin&next=/", s.url),
        Some(&format!("outpost_session={bob}")),
        None,
    )?;
    assert_eq!(a.status, 404);
    Ok(())
}
both_backends!(apps_domain_shares_safely);
