//! Path-based proxy to web apps inside workspaces: `/@OWNER/WS/apps/SLUG/...` (the template's
//! share level decides who may open it) and `/@OWNER/WS/ports/PORT/...` (the owner only), over
//! the relay, WebSocket upgrades passed through. The dashboard's session cookie and any
//! Authorization header never reach the app.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use hyper_util::rt::TokioIo;

use super::auth;
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

fn not_found() -> Response {
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
    let is_owner = caller
        .as_ref()
        .is_some_and(|(u, _)| u.user.id == owner_row.id && !u.scoped());
    let caller_id = caller.as_ref().map(|(u, _)| u.user.id.clone());
    let port = match kind {
        "ports" => {
            let Ok(port) = key.parse::<u16>() else {
                return Ok(not_found());
            };
            if !is_owner {
                return Ok(login_or_404(caller.is_none(), &parts));
            }
            port
        }
        "apps" => {
            let manifest = super::workspaces::build_manifest(&state, &w.latest_build_id).await?;
            let Some(app) = manifest.apps.iter().find(|a| a.slug == key) else {
                return Ok(not_found());
            };
            let allowed = match app.share {
                ShareLevel::Owner => is_owner,
                ShareLevel::Authenticated => caller.is_some(),
                ShareLevel::Public => true,
            };
            if !allowed {
                return Ok(login_or_404(caller.is_none(), &parts));
            }
            // A stopped workspace: the relay answers 409 saying so.
            let Some(port) = app.port else {
                return Ok(not_found());
            };
            port
        }
        _ => return Ok(not_found()),
    };
    let io = super::relay::open_io(&state, &w, &outpost_api::relay::stream::tcp(port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "upstream", e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let path_q = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
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
        .filter(|c| !c.is_empty() && !c.starts_with("outpost_"))
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
    up = up
        .header(
            "x-forwarded-proto",
            if state.access_url.starts_with("https") {
                "https"
            } else {
                "http"
            },
        )
        .header("x-forwarded-prefix", prefix.as_str());
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
    // A redirect to the app's root stays under the proxy prefix.
    if let Some(loc) = rparts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        if loc.starts_with('/') && !loc.starts_with("//") {
            if let Ok(v) = HeaderValue::from_str(&format!("{prefix}{loc}")) {
                rparts.headers.insert(header::LOCATION, v);
            }
        }
    }
    Ok(Response::from_parts(rparts, Body::new(rbody)))
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
