//! The proxy to web apps inside workspaces, over the relay, WebSocket upgrades passed through.
//!
//! Path-based: `/@OWNER/WS/apps/SLUG/...` and `/@OWNER/WS/ports/PORT/...` on the dashboard's
//! own origin. An app there could read a visitor's CSRF token and act as them, so path-based
//! apps are the owner's only unless the admin passed `--dangerous-allow-path-app-sharing`, and
//! every response carries a sandboxing CSP (the page runs in an opaque origin).
//!
//! Subdomain (`--apps-domain '*.apps.example.com'`, `apps_domain.rs`): each app and port on a
//! host of its own, where sharing is safe; the template's share level applies there.
//!
//! In both: Outpost's cookies and any Authorization header never reach the app, and a
//! `Set-Cookie` for one of Outpost's cookie names never reaches the browser.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use hyper_util::rt::TokioIo;

use super::auth;
use super::authz::{can, Right};
use super::error::ApiError;
use super::AppState;
use outpost_api::ShareLevel;

/// Hop-by-hop headers (RFC 9110 7.6.1), not forwarded; upgrades are re-added when asked for.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn not_found() -> Response {
    ApiError::not_found("no such app, or you may not open it").into_response()
}

pub(super) async fn proxy(
    state: AppState,
    req: Request,
    owner: String,
    ws: String,
    tail: String,
) -> Response {
    match proxy_inner(state, req, owner, ws, tail).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The sandbox path-app pages run in: scripts, forms, popups and downloads work, but the page
/// has an opaque origin, so it cannot read the dashboard's pages, cookies or storage.
const PATH_APP_CSP: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-downloads allow-modals";

async fn proxy_inner(
    state: AppState,
    req: Request,
    owner: String,
    ws: String,
    tail: String,
) -> Result<Response, ApiError> {
    // tail: /apps/SLUG[/rest] or /ports/PORT[/rest]
    let mut seg = tail[1..].splitn(3, '/');
    let kind = seg.next().unwrap_or("");
    let key = seg.next().unwrap_or("").to_string();
    let rest = seg.next();
    let prefix = format!("/@{owner}/{ws}/{kind}/{key}");
    let (parts, body) = req.into_parts();
    // `/@o/w/apps/x` -> `/@o/w/apps/x/`, so the app's relative links resolve.
    let Some(rest) = rest else {
        let q = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return Ok(Redirect::permanent(&format!("{prefix}/{q}")).into_response());
    };
    // A WebSocket to an app: only from a page of the same origin (whole origin compared).
    if parts.headers.contains_key(header::UPGRADE)
        && !super::web::websocket_origin_ok(&state, &parts.headers)
    {
        return Err(ApiError::forbidden(
            "this WebSocket may only be opened from the app's own pages",
        ));
    }
    let caller = auth::authenticate(&parts, &state).await.ok().flatten();
    let Some(owner_row) = state.store.user_by_username(&owner).await? else {
        return Ok(not_found());
    };
    let Some(w) = state.store.workspace_by_name(&owner_row.id, &ws).await? else {
        return Ok(not_found());
    };
    let mut is_owner = caller
        .as_ref()
        .is_some_and(|(u, _)| u.user.id == owner_row.id && !u.scoped());
    // Someone who can see every workspace: an owner gets in as the workspace's owner would
    // when the server allows it (audited), and is told why not when it does not.
    let reach = super::lookup::Reach::Proxy(kind, &key);
    let elevated = caller
        .as_ref()
        .map(|(u, _)| u)
        .filter(|u| !is_owner && !u.scoped() && can(u, Right::ReadAllWorkspaces));
    if let Some(u) = elevated {
        if state.config.allow_owner_workspace_access && can(u, Right::ConnectAllWorkspaces) {
            super::lookup::may_connect(&state, u, &owner, &w, reach)?;
            is_owner = true;
        }
    }
    let caller_id = caller.as_ref().map(|(u, _)| u.user.id.clone());
    let Some(port) = target(&state, &w, kind, &key, is_owner, caller.is_some(), true).await? else {
        if let Some(u) = elevated.filter(|_| !is_owner) {
            super::lookup::may_connect(&state, u, &owner, &w, reach)?;
        }
        return Ok(login_or_404(caller.is_none(), &parts));
    };
    let path_q = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    forward(
        &state,
        Forward {
            parts,
            body,
            w: &w,
            port,
            path_q,
            prefix: &prefix,
            caller_id,
            sandbox: true,
        },
    )
    .await
}

/// The port a request for app `key` (or port `key`) of `w` goes to, or None when the caller
/// may not open it. On the dashboard's origin (`path_based`) sharing beyond the owner needs
/// the admin's `--dangerous-allow-path-app-sharing`.
pub(super) async fn target(
    state: &AppState,
    w: &crate::store::WorkspaceRow,
    kind: &str,
    key: &str,
    is_owner: bool,
    signed_in: bool,
    path_based: bool,
) -> Result<Option<u16>, ApiError> {
    match kind {
        "ports" => Ok(key.parse::<u16>().ok().filter(|_| is_owner)),
        "apps" => {
            let manifest = super::workspaces::build_manifest(state, &w.latest_build_id).await?;
            let Some(app) = manifest.apps.iter().find(|a| a.slug == key) else {
                return Ok(None);
            };
            let share = if path_based && !state.config.allow_path_app_sharing {
                ShareLevel::Owner
            } else {
                app.share
            };
            let allowed = match share {
                ShareLevel::Owner => is_owner,
                ShareLevel::Authenticated => signed_in,
                ShareLevel::Public => true,
            };
            Ok(app.port.filter(|_| allowed))
        }
        _ => Ok(None),
    }
}

/// One request on its way to an app.
pub(super) struct Forward<'a> {
    pub parts: axum::http::request::Parts,
    pub body: Body,
    pub w: &'a crate::store::WorkspaceRow,
    pub port: u16,
    /// The path and query the app sees.
    pub path_q: String,
    /// Where the app is mounted on our side ("" on its own host).
    pub prefix: &'a str,
    /// Who is visiting (their suspension ends a WebSocket).
    pub caller_id: Option<String>,
    /// Send the sandboxing CSP (path-based apps).
    pub sandbox: bool,
}

/// Sends the request to the app over the relay and its answer back.
pub(super) async fn forward(state: &AppState, f: Forward<'_>) -> Result<Response, ApiError> {
    let Forward {
        parts,
        body,
        w,
        port,
        path_q,
        prefix,
        caller_id,
        sandbox,
    } = f;
    let io = super::relay::open_io(state, w, &outpost_api::relay::stream::tcp(port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "upstream", e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let mut up = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(path_q);
    let wants_upgrade = parts.headers.contains_key(header::UPGRADE);
    for (k, v) in parts.headers.iter() {
        let name = k.as_str();
        if HOP.contains(&name) || k == header::AUTHORIZATION || k == header::COOKIE {
            continue;
        }
        up = up.header(k, v);
    }
    // Cookies the app set for itself pass; Outpost's own never do.
    let cookies: Vec<String> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty() && !is_outpost_cookie(c))
        .collect();
    if !cookies.is_empty() {
        up = up.header(header::COOKIE, cookies.join("; "));
    }
    if wants_upgrade {
        if let Some(u) = parts.headers.get(header::UPGRADE) {
            up = up
                .header(header::UPGRADE, u)
                .header(header::CONNECTION, "upgrade");
        }
    }
    up = up.header(
        "x-forwarded-proto",
        if state.access_url.starts_with("https") {
            "https"
        } else {
            "http"
        },
    );
    if !prefix.is_empty() {
        up = up.header("x-forwarded-prefix", prefix);
    }
    if let Some(h) = parts.headers.get(header::HOST) {
        up = up.header("x-forwarded-host", h);
    }
    let mut parts = parts;
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let upstream = up.body(body).map_err(ApiError::internal)?;
    let mut resp = sender.send_request(upstream).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            format!("the app did not answer: {e}"),
        )
    })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::bad_request("the app switched protocols unasked"));
        };
        let app_upgrade = hyper::upgrade::on(&mut resp);
        let (rparts, _) = resp.into_parts();
        // A suspension of the visitor (or of the workspace's owner) ends it at once.
        let visitor_cut = caller_id.map(|id| state.user_cut(&id));
        let owner_cut = state.user_cut(&w.owner_id);
        tokio::spawn(async move {
            let (Ok(client), Ok(app)) = (client_upgrade.await, app_upgrade.await) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut app = TokioIo::new(app);
            let visitor_cut = async move {
                match visitor_cut {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut app) => {}
                _ = visitor_cut => {}
                _ = owner_cut => {}
            }
        });
        let mut r = Response::from_parts(rparts, Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        return Ok(r);
    }
    let (mut rparts, rbody) = resp.into_parts();
    for h in HOP {
        rparts.headers.remove(*h);
    }
    // The app may set cookies of its own, never one of ours (a session fixation).
    let kept: Vec<HeaderValue> = rparts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !v.to_str().is_ok_and(is_outpost_cookie) && v.to_str().is_ok())
        .cloned()
        .collect();
    rparts.headers.remove(header::SET_COOKIE);
    for v in kept {
        rparts.headers.append(header::SET_COOKIE, v);
    }
    if sandbox {
        rparts.headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PATH_APP_CSP),
        );
    }
    // A redirect to the app's root stays under the proxy prefix.
    if let Some(loc) = rparts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        if !prefix.is_empty() && loc.starts_with('/') && !loc.starts_with("//") {
            if let Ok(v) = HeaderValue::from_str(&format!("{prefix}{loc}")) {
                rparts.headers.insert(header::LOCATION, v);
            }
        }
    }
    Ok(Response::from_parts(rparts, Body::new(rbody)))
}

/// `name=...` (a Cookie pair or a Set-Cookie value) for one of Outpost's own cookies: any
/// name starting `outpost_` (case and surrounding spaces ignored, as browsers do).
fn is_outpost_cookie(c: &str) -> bool {
    c.split(['=', ';'])
        .next()
        .is_some_and(|n| n.trim().to_ascii_lowercase().starts_with("outpost_"))
}

/// Anonymous browsers are sent to sign in; signed-in users who may not open it get a 404.
fn login_or_404(anonymous: bool, parts: &axum::http::request::Parts) -> Response {
    if anonymous && parts.method == axum::http::Method::GET {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        return Redirect::to(&format!("/login?next={}", super::web::pct(next))).into_response();
    }
    not_found()
}
