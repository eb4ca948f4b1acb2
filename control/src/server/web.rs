//! The dashboard: server-rendered pages with a little JS (`control/web/app.js`) that drives the
//! JSON API with the session cookie and the page's CSRF token, the web terminal's WebSocket, and
//! the `/@OWNER/WS/...` paths (workspace page, terminal page, app and port proxy).

use super::error::{ApiPath, ApiQuery};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::auth::{self, AuthUser, SESSION_COOKIE};
use super::error::{ApiError, ApiResult};
use super::AppState;

const LOGIN_CSRF_COOKIE: &str = "outpost_login_csrf";
/// Browser sessions last a week.
const SESSION_SECS: u64 = 7 * 24 * 3600;

const XTERM_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xterm.js"));
const XTERM_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xterm.css"));
const FIT_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/addon-fit.js"));
const WEB_LINKS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/addon-web-links.js"));
const TERMINAL_JS: &str = include_str!("../../web/terminal.js");
const WORKSPACE_JS: &str = include_str!("../../web/workspace.js");
const TEMPLATES_JS: &str = include_str!("../../web/templates.js");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// `/assets/NAME`: the embedded scripts and styles.
pub(super) async fn asset(ApiPath(name): ApiPath<String>) -> Response {
    let (body, kind): (&[u8], &str) = match name.as_str() {
        "xterm.js" => (XTERM_JS, "text/javascript"),
        "xterm.css" => (XTERM_CSS, "text/css"),
        "addon-fit.js" => (FIT_JS, "text/javascript"),
        "addon-web-links.js" => (WEB_LINKS_JS, "text/javascript"),
        "terminal.js" => (TERMINAL_JS.as_bytes(), "text/javascript"),
        "workspace.js" => (WORKSPACE_JS.as_bytes(), "text/javascript"),
        "templates.js" => (TEMPLATES_JS.as_bytes(), "text/javascript"),
        "app.js" => (APP_JS.as_bytes(), "text/javascript"),
        "app.css" => (APP_CSS.as_bytes(), "text/css"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Security headers for every page: no framing, no sniffing, scripts only from here.
pub(super) fn page(
    title: &str,
    page: &str,
    data: &[(&str, &str)],
    csrf: &str,
    user: Option<&AuthUser>,
    body: &str,
) -> Response {
    let mut attrs: String = data
        .iter()
        .map(|(k, v)| format!(" data-{k}=\"{}\"", esc(v)))
        .collect();
    if let Some(u) = user {
        attrs.push_str(&format!(" data-user=\"{}\"", esc(&u.user.username)));
    }
    let nav = match user {
        None => String::new(),
        Some(u) => format!(
            "<nav><a href=\"/\">Workspaces</a> <a href=\"/new\">New workspace</a> <a href=\"/templates\" id=\"nav-templates\">Templates</a> <a href=\"/settings/schedule\" id=\"nav-schedule\">Schedule</a> <a href=\"/settings\" id=\"nav-settings\">Settings</a>{} <span class=\"who\">{}</span> <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"signout\">Sign out</button></form></nav>",
            if super::authz::can(u, super::authz::Right::ReadAudit) {
                " <a href=\"/audit\" id=\"nav-audit\">Audit</a>"
            } else {
                ""
            },
            esc(&u.user.username),
            esc(csrf)
        ),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · Outpost</title><meta name=\"csrf-token\" content=\"{}\"><link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body data-page=\"{page}\"{attrs}><header><a class=\"brand\" href=\"/\">Outpost</a>{nav}</header><main>{body}</main><script src=\"/assets/app.js\"></script></body></html>",
        esc(title),
        esc(csrf),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ],
        html,
    )
        .into_response()
}

/// The signed-in browser user and the page's CSRF token, or a redirect to the sign-in page.
pub(super) async fn browser_user(
    parts: &axum::http::request::Parts,
    state: &AppState,
) -> Result<(AuthUser, String), Response> {
    match auth::authenticate(parts, state).await {
        Ok(Some((user, Some(session)))) => Ok((user, auth::csrf_token(&session))),
        // API tokens are for the API; a page needs the cookie (and its CSRF token).
        _ => {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Err(Redirect::to(&format!("/login?next={}", pct(next))).into_response())
        }
    }
}

/// Percent-encodes everything but unreserved characters.
pub use outpost_api::percent_encode as pct;

/// `; Secure` when the browser reached us over TLS: the access URL is https, or the
/// TLS-terminating proxy in front says so (`X-Forwarded-Proto: https`, `Forwarded: proto=https`).
pub(super) fn secure_flag(state: &AppState, headers: &HeaderMap) -> &'static str {
    let header_says_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        })
        || headers
            .get("forwarded")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split([';', ','])
                    .any(|kv| kv.trim().eq_ignore_ascii_case("proto=https"))
            });
    if state.access_url.starts_with("https://") || header_says_https {
        "; Secure"
    } else {
        ""
    }
}

/// `%XX` decoded once (invalid escapes kept as they are), for checks only.
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Only same-origin paths are followed after sign-in: `/` then printable ASCII, never a second
/// `/` or a `\` up front (a scheme-relative URL), nothing a browser strips or rewrites before
/// parsing (tabs, newlines, other control characters, backslashes, spaces, non-ASCII), and the
/// same again once percent-decoded. Anything else goes to `/`.
pub(super) fn safe_next(next: Option<&str>) -> String {
    fn plain(n: &str) -> bool {
        n.len() <= 2048
            && n.starts_with('/')
            && !n[1..].starts_with(['/', '\\'])
            && n.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\')
    }
    fn decoded_ok(d: &str) -> bool {
        d.starts_with('/')
            && !d[1..].starts_with(['/', '\\'])
            && !d.chars().any(|c| c.is_control() || c == '\\')
    }
    match next {
        Some(n) if plain(n) && decoded_ok(&percent_decode(n)) => n.to_string(),
        _ => "/".to_string(),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
    error: Option<String>,
}

/// `GET /login`: the sign-in form (with a double-submit CSRF cookie).
pub(super) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<NextQuery>,
) -> Response {
    let csrf = auth::random_secret();
    let error = q
        .error
        .as_deref()
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/login\" class=\"card\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{}\"><label>Username <input name=\"username\" id=\"username\" autocomplete=\"username\" required></label><label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label><button id=\"signin\">Sign in</button></form>{}",
        esc(&safe_next(q.next.as_deref())),
        if state.oidc.is_some() {
            format!(
                "<p class=\"card\"><a class=\"button\" id=\"sso\" href=\"/oidc/login?next={}\">Sign in with SSO</a></p>",
                esc(&pct(&safe_next(q.next.as_deref())))
            )
        } else {
            String::new()
        }
    );
    let mut r = page("Sign in", "login", &[], "", None, &body);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        secure_flag(&state, &headers)
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: password -> session cookie.
pub(super) async fn login_submit(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.headers = headers;
    let cookie_csrf = auth::cookie(&parts, LOGIN_CSRF_COOKIE).unwrap_or("");
    let next = safe_next(f.next.as_deref());
    let back = |msg: &str| {
        Redirect::to(&format!("/login?next={}&error={}", pct(&next), pct(msg))).into_response()
    };
    if cookie_csrf.is_empty() || !auth::ct_eq(cookie_csrf, &f.csrf) {
        return back("Your sign-in form expired; try again.");
    }
    let user =
        match super::users::check_password(&state, peer, &f.username, &f.password, "(web)").await {
            Ok(u) => u,
            Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
                return back("Wrong username or password.")
            }
            Err(e) => return back(&e.message),
        };
    let mut r = start_session(&state, &parts.headers, &user, &next).await;
    if let Ok(v) = HeaderValue::from_str(&format!("{LOGIN_CSRF_COOKIE}=; Path=/login; Max-Age=0")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A signed-in browser (a password or single sign-on): a new session token in the session
/// cookie, and off to `next` (already checked by [`safe_next`]).
pub(super) async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    user: &crate::store::UserRow,
    next: &str,
) -> Response {
    let token = match super::tokens::issue_token(state, user, "browser session", SESSION_SECS).await
    {
        Ok((t, _)) => t,
        Err(e) => return e.into_response(),
    };
    let mut r = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECS}{}",
        secure_flag(state, headers)
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
pub(super) struct LogoutForm {
    csrf: String,
}

/// `POST /logout`: revokes the session's token and clears the cookie.
pub(super) async fn logout(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let session = match auth::authenticate(&parts, &state).await {
        Ok(Some((u, Some(s)))) => Some((u, s)),
        _ => None,
    };
    if let Some((user, session)) = session {
        let req = Request::from_parts(parts.clone(), body);
        let Ok(Form(f)) = Form::<LogoutForm>::from_request(req, &state).await else {
            return ApiError::bad_request("expected a form with the page's CSRF token")
                .into_response();
        };
        if !auth::ct_eq(&f.csrf, &auth::csrf_token(&session)) {
            return ApiError::forbidden(
                "this request lacks the page's CSRF token; reload the page",
            )
            .into_response();
        }
        if let Some((id, _)) = auth::split_token(&session, auth::API_TOKEN_PREFIX) {
            let _ = state.store.revoke_token(&user.user.id, id).await;
        }
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Max-Age=0"))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /`: the user's workspaces, refreshed live by app.js.
pub(super) async fn home(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut body = "<h1>Workspaces</h1><p><a class=\"button\" id=\"new-workspace\" href=\"/new\">New workspace</a></p><table id=\"workspaces\"><thead><tr><th>Name</th><th>Status</th><th>Health</th><th>Template</th><th>Agent</th><th>Last used</th></tr></thead><tbody><tr><td colspan=\"6\">Loading…</td></tr></tbody></table>".to_string();
    // Owners and auditors see everyone's workspaces too.
    let all = super::authz::can(&user, super::authz::Right::ReadAllWorkspaces);
    if all {
        body.push_str("<h2>Everyone's workspaces</h2><table id=\"all-workspaces\"><thead><tr><th>Owner</th><th>Name</th><th>Status</th><th>Health</th><th>Template</th><th>Agent</th><th>Last used</th></tr></thead><tbody><tr><td colspan=\"7\">Loading…</td></tr></tbody></table>");
    }
    page(
        "Workspaces",
        "home",
        &[
            ("owner", &user.user.username),
            ("all", if all { "1" } else { "" }),
        ],
        &csrf,
        Some(&user),
        &body,
    )
}

/// `GET /new`: create a workspace from a template and its parameters.
pub(super) async fn new_page(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = "<h1>New workspace</h1><form id=\"create\" class=\"card\"><label>Name <input id=\"ws-name\" name=\"name\" required pattern=\"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\" placeholder=\"dev\"></label><label>Template <select id=\"template\" name=\"template\"></select></label><p id=\"template-description\" class=\"muted\"></p><fieldset id=\"params\"><legend>Parameters</legend></fieldset><button id=\"create-button\">Create workspace</button><p class=\"error\" id=\"error\"></p></form>";
    page(
        "New workspace",
        "new",
        &[("owner", &user.user.username)],
        &csrf,
        Some(&user),
        body,
    )
}

/// `/@OWNER/WS[/...]`: the workspace page, its terminal, and its apps and ports.
pub(super) async fn at_path(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/@") else {
        return ApiError::not_found("no such route; see /api/v1").into_response();
    };
    let mut it = rest.splitn(3, '/');
    let owner = it.next().unwrap_or("").to_string();
    let ws = it.next().unwrap_or("").to_string();
    let tail = it.next().map(|t| format!("/{t}"));
    if owner.is_empty() || ws.is_empty() {
        return ApiError::not_found("no such page").into_response();
    }
    match tail.as_deref() {
        None | Some("/") => super::web_workspace::workspace_page(state, req, owner, ws).await,
        Some("/terminal") => terminal_page(state, req, owner, ws).await,
        Some(t) if t.starts_with("/apps/") || t.starts_with("/ports/") => {
            super::proxy::proxy(state, req, owner, ws, t.to_string()).await
        }
        _ => ApiError::not_found("no such page").into_response(),
    }
}

/// The signed-in user and workspace `OWNER/WS` of a page: their own, or (owners and auditors)
/// anyone's; or the answer to give.
pub(super) async fn page_workspace(
    state: &AppState,
    req: Request,
    owner: &str,
    ws: &str,
) -> Result<(AuthUser, String, crate::store::WorkspaceRow), Response> {
    let (parts, _) = req.into_parts();
    let (user, csrf) = browser_user(&parts, state).await?;
    let name = format!("{owner}/{ws}");
    match super::lookup::find_workspace(state, &user, &name, super::lookup::Access::Read).await {
        Ok(w) => Ok((user, csrf, w)),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Err(not_yours()),
        Err(e) => Err(e.into_response()),
    }
}

fn not_yours() -> Response {
    ApiError::not_found("you have no workspace by that name").into_response()
}

async fn terminal_page(state: AppState, req: Request, owner: String, ws: String) -> Response {
    let (user, csrf, w) = match page_workspace(&state, req, &owner, &ws).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) =
        super::lookup::may_connect(&state, &user, &owner, &w, super::lookup::Reach::Terminal)
    {
        return e.into_response();
    }
    let reference = if w.owner_id == user.user.id {
        ws.clone()
    } else {
        format!("{owner}/{ws}")
    };
    let body = concat!(
        "<link rel=\"stylesheet\" href=\"/assets/xterm.css\">",
        "<div class=\"term-bar\"><span id=\"term-status\" class=\"term-state\" role=\"status\" aria-live=\"polite\">connecting…</span>",
        "<span class=\"term-tools\"><span id=\"copied\" class=\"muted\" role=\"status\" aria-live=\"polite\"></span> ",
        "<button type=\"button\" id=\"font-smaller\">A−<span class=\"sr-only\"> smaller text</span></button> ",
        "<span id=\"font-size\" title=\"Text size\">14px</span> ",
        "<button type=\"button\" id=\"font-larger\">A+<span class=\"sr-only\"> larger text</span></button></span></div>",
        "<div id=\"terminal\" role=\"region\" aria-label=\"Terminal\"></div>",
        "<script src=\"/assets/xterm.js\"></script><script src=\"/assets/addon-fit.js\"></script>",
        "<script src=\"/assets/addon-web-links.js\"></script><script src=\"/assets/terminal.js\"></script>",
    );
    page(
        &format!("{ws} terminal"),
        "terminal",
        &[("owner", &owner), ("workspace", &ws), ("ref", &reference)],
        &csrf,
        Some(&user),
        body,
    )
}

#[derive(serde::Deserialize)]
pub(super) struct PtyQuery {
    session: String,
    #[serde(default = "cols")]
    cols: u16,
    #[serde(default = "rows")]
    rows: u16,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    csrf: Option<String>,
}

fn cols() -> u16 {
    80
}
fn rows() -> u16 {
    24
}

/// `GET /api/v1/workspaces/{name}/pty?session=ID&cols=&rows=[&command=]` (WebSocket): a
/// reconnecting terminal session in the workspace. Browser -> server: binary messages
/// `[0, input bytes...]` or `[1, cols u16 BE, rows u16 BE]` (text messages are input);
/// server -> browser: binary terminal output.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{name}/pty",
    tag = "relay",
    summary = "Upgrade to a WebSocket terminal in the workspace",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
        ("session" = String, Query, description = "The terminal session: a new id starts one, a known id reconnects"),
        ("command" = Option<String>, Query, description = "Run this instead of the login shell"),
        ("csrf" = Option<String>, Query, description = "With a session cookie and a command: the page's CSRF token"),
        ("rows" = Option<u16>, Query, description = "Terminal rows"),
        ("cols" = Option<u16>, Query, description = "Terminal columns"),
    ),
    responses((status = 101, description = "Switching protocols")),
)]
pub(super) async fn pty(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PtyQuery>,
    headers: HeaderMap,
    // Taken before the WebSocket extractor takes it: a hand-off answers the upgrade itself.
    super::handoff::PlainUpgrade(upgrade): super::handoff::PlainUpgrade,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| {
        ApiError::bad_request(format!(
            "this is a WebSocket endpoint: {} (open it from the workspace page, or with a WebSocket client)",
            e.body_text()
        ))
    })?;
    // Cross-site WebSocket hijacking: a browser always says where the page came from.
    if !websocket_origin_ok(&state, &headers) {
        return Err(ApiError::forbidden(
            "this terminal can only be opened from Outpost's own pages",
        ));
    }
    // A command session runs what the URL says: only Outpost's own page may ask, with its
    // CSRF token (a link alone never runs anything; the page asks first).
    if q.command.is_some() && auth::cookie_session(&headers).is_some() {
        let ok = q.csrf.as_deref().is_some_and(|c| {
            auth::cookie_session(&headers).is_some_and(|s| auth::ct_eq(c, &auth::csrf_token(s)))
        });
        if !ok {
            return Err(ApiError::forbidden(
                "a terminal command needs the page's CSRF token: open it from the workspace page and confirm it",
            ));
        }
    }
    let w = super::lookup::connect_workspace(&state, &auth, &name, super::lookup::Reach::Terminal)
        .await?;
    let mut query = format!("id={}&cols={}&rows={}", pct(&q.session), q.cols, q.rows);
    if let Some(c) = &q.command {
        query.push_str(&format!("&command={}", pct(c)));
    }
    let agent = super::relay::ready_agent(&state, &w).await?;
    let cut = state.user_cut(&auth.user.id);
    // tungstenite zero-fills its whole read buffer (128 KiB by default) before every read,
    // a keystroke's included: 8 KiB reads keep that cost off each keystroke (a paste still
    // arrives whole, over several reads).
    let ws = ws.max_message_size(1 << 20).read_buffer_size(8 * 1024);
    // An agent on this machine takes a plain TCP connection over itself (handoff.rs); else
    // the agent's own TLS connection where it can dial one (dial.rs); else a tunnel stream.
    let handoff = match &upgrade {
        Some(_) if state.tunnels.is_up(&agent) => super::handoff::agent_uid(&state, &w.id).await,
        _ => None,
    };
    match super::dial::pty(&state, &agent, &query, handoff).await {
        Some(super::dial::Dialed::Handoff(conn)) => {
            let answer = super::handoff::switching(&headers);
            if let (Some(upgrade), Some(answer)) = (upgrade, answer) {
                state.metrics.relay_pty_path("handoff");
                drop(ws);
                tokio::spawn(super::handoff::pass(
                    upgrade,
                    conn,
                    cut,
                    state.shutdown.clone(),
                ));
                return Ok(answer);
            }
        }
        Some(super::dial::Dialed::Tls(tls)) => {
            state.metrics.relay_pty_path("dial");
            return Ok(ws.on_upgrade(move |socket| async move {
                tokio::select! {
                    _ = bridge_direct(socket, tls) => {}
                    _ = cut => {}
                }
            }));
        }
        Some(super::dial::Dialed::Plain(_)) | None => {}
    }
    state.metrics.relay_pty_path("tunnel");
    let path = format!("{}?{query}", outpost_api::relay::stream::PTY);
    let (tx, down) = super::relay::open_agent(&state, &agent, &path).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        tokio::select! {
            _ = bridge(socket, tx, down) => {}
            _ = cut => {}
        }
    }))
}

/// The origin (`scheme://host[:port]`) of a URL, without its path.
fn origin_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).map(|i| scheme.len() + 3 + i);
            &url[..end.unwrap_or(url.len())]
        }
        None => url,
    }
}

/// A WebSocket upgrade's `Origin` is one of ours, compared whole (never as a prefix): the
/// access URL's origin or the origin of the `Host` the browser sent. A browser always sends an
/// Origin; a request riding the session cookie without one is refused. API clients (a bearer
/// token, no cookie) may omit it.
pub(super) fn websocket_origin_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return auth::cookie_session(headers).is_none();
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin == origin_of(&state.access_url)
        || (!host.is_empty()
            && (origin == format!("http://{host}") || origin == format!("https://{host}")))
}

/// WebSocket messages <-> the relay stream's frames, with no byte pipe in between.
async fn bridge(socket: WebSocket, tx: super::relay::FrameSender, mut down: hyper::body::Incoming) {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::BodyExt;
    use outpost_api::relay::pty as relay_pty;
    let (mut sink, mut stream) = socket.split();
    let up = async {
        while let Some(Ok(msg)) = stream.next().await {
            let (kind, payload): (u8, &[u8]) = match &msg {
                Message::Binary(b) if !b.is_empty() => (b[0], &b[1..]),
                Message::Text(t) => (relay_pty::KIND_INPUT, t.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            let frame = relay_pty::encode(kind, payload);
            if tx
                .send(Ok(hyper::body::Frame::data(bytes::Bytes::from(frame))))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let down = async {
        while let Some(Ok(f)) = down.frame().await {
            let Ok(data) = f.into_data() else { continue };
            if sink.send(Message::Binary(data)).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// WebSocket messages <-> the agent's dialed TLS connection, in this one task: a keystroke is
/// read from the WebSocket and written to the agent, the terminal's output read from the agent
/// and written to the WebSocket, with no channel or other task in between.
async fn bridge_direct<S>(mut socket: WebSocket, mut agent: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use outpost_api::relay::pty as relay_pty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let (kind, payload): (u8, &[u8]) = match &msg {
                    Some(Ok(Message::Binary(b))) if !b.is_empty() => (b[0], &b[1..]),
                    Some(Ok(Message::Text(t))) => (relay_pty::KIND_INPUT, t.as_bytes()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let frame = relay_pty::encode(kind, payload);
                if agent.write_all(&frame).await.is_err() || agent.flush().await.is_err() {
                    break;
                }
            }
            n = agent.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                    Ok(n) => n,
                };
                let out = bytes::Bytes::copy_from_slice(&buf[..n]);
                if socket.send(Message::Binary(out)).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = agent.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn sign_in_only_returns_to_our_own_paths() {
        for ok in [
            "/",
            "/@admin/dev",
            "/@admin/dev/terminal?session=a%20b",
            "/new?x=1#y",
        ] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5Cevil.example",
            "/%09/evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            " /x",
            "/ é",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
