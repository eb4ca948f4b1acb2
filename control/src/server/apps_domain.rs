//! Apps on hosts of their own (`--apps-domain '*.apps.example.com'`): `SLUG--WS--OWNER` (or
//! `PORT--WS--OWNER`, the owner only) under the apps domain, on the access URL's scheme and
//! port. Each host is its own origin, so an app's scripts can read nothing of the dashboard or
//! of another app, and sharing (`authenticated`, `public`) is safe.
//!
//! Signing in on an app host: a visitor without the host's cookie goes to
//! `/api/v1/apps/auth` on the dashboard's origin, which (signed in there) mints a token good for
//! that one host and sends them to `/.outpost/callback` on it; that sets the host-only, HttpOnly
//! cookie `outpost_app_token` and returns to the page they asked for.

use super::error::ApiQuery;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use super::auth;
use super::error::ApiError;
use super::proxy::{forward, not_found, target, Forward};
use super::AppState;

/// The app host's cookie (host-only: no Domain attribute).
const APP_COOKIE: &str = "outpost_app_token";
/// How long an app host's sign-in lasts.
const APP_TOKEN_SECS: u64 = 8 * 3600;
const CALLBACK: &str = "/.outpost/callback";

/// `SLUG--WS--OWNER` split; None unless all three parts are there.
fn parse_label(label: &str) -> Option<(&str, &str, &str)> {
    let mut it = label.rsplitn(3, "--");
    let owner = it.next()?;
    let ws = it.next()?;
    let key = it.next()?;
    (!owner.is_empty() && !ws.is_empty() && !key.is_empty()).then_some((key, ws, owner))
}

/// The app label of a request's `Host` when it is under the apps domain.
pub(super) fn label_of(state: &AppState, headers: &axum::http::HeaderMap) -> Option<String> {
    let domain = state.config.apps_domain.as_deref()?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let label = name
        .to_ascii_lowercase()
        .strip_suffix(&format!(".{domain}"))?
        .to_string();
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

/// The URL of app (or port) `key` of `owner`'s workspace `ws` on the apps domain.
pub fn app_url(state: &super::Inner, owner: &str, ws: &str, key: &str) -> Option<String> {
    let domain = state.config.apps_domain.as_deref()?;
    let (scheme, rest) = state.access_url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let port = match authority.rsplit_once(':') {
        Some((_, p)) if p.bytes().all(|b| b.is_ascii_digit()) => format!(":{p}"),
        _ => String::new(),
    };
    Some(format!("{scheme}://{key}--{ws}--{owner}.{domain}{port}/"))
}

fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Every request to a host under the apps domain.
pub(super) async fn serve(state: AppState, req: Request, label: String) -> Response {
    match serve_inner(state, req, label).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(state: AppState, req: Request, label: String) -> Result<Response, ApiError> {
    let Some((key, ws, owner)) = parse_label(&label) else {
        return Ok(not_found());
    };
    let (parts, body) = req.into_parts();
    if parts.uri.path() == CALLBACK {
        return Ok(callback(&state, &parts, &label).await);
    }
    if parts.headers.contains_key(header::UPGRADE)
        && !super::web::websocket_origin_ok(&state, &parts.headers)
    {
        return Err(ApiError::forbidden(
            "this WebSocket may only be opened from the app's own pages",
        ));
    }
    let Some(owner_row) = state.store.user_by_username(owner).await? else {
        return Ok(not_found());
    };
    let Some(w) = state.store.workspace_by_name(&owner_row.id, ws).await? else {
        return Ok(not_found());
    };
    let visitor = match cookie_value(&parts.headers, APP_COOKIE) {
        Some(t) => auth::app_token_user(t, &state, &label).await,
        None => None,
    };
    let is_owner = visitor.as_ref().is_some_and(|u| u.id == owner_row.id);
    let kind = if key.bytes().all(|b| b.is_ascii_digit()) {
        "ports"
    } else {
        "apps"
    };
    let Some(port) = target(&state, &w, kind, key, is_owner, visitor.is_some(), false).await?
    else {
        if visitor.is_none() && parts.method == axum::http::Method::GET {
            // Sign in on the dashboard's origin, then come back with this host's cookie.
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            return Ok(Redirect::to(&format!(
                "{}/api/v1/apps/auth?host={}&next={}",
                state.access_url,
                super::web::pct(&label),
                super::web::pct(next)
            ))
            .into_response());
        }
        return Ok(not_found());
    };
    let path_q = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    forward(
        &state,
        Forward {
            parts,
            body,
            w: &w,
            port,
            path_q,
            prefix: "",
            caller_id: visitor.map(|u| u.id),
            sandbox: false,
        },
    )
    .await
}

#[derive(serde::Deserialize)]
pub(super) struct AuthQuery {
    host: String,
    #[serde(default)]
    next: Option<String>,
}

/// `GET /api/v1/apps/auth?host=LABEL&next=PATH` on the dashboard's origin: the signed-in
/// browser gets a token for that one app host, handed over through its callback.
#[utoipa::path(
    get,
    path = "/api/v1/apps/auth",
    tag = "apps",
    summary = "Sign a browser in to one app host (redirects)",
    params(
        ("host" = String, Query, description = "The app host's first label"),
        ("next" = Option<String>, Query, description = "The path to land on"),
    ),
    responses((status = 303, description = "On to the app host's callback, or to sign in")),
)]
pub(super) async fn auth_start(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuthQuery>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let user = match auth::authenticate(&parts, &state).await {
        Ok(Some((u, Some(_)))) if !u.scoped() => u.user,
        _ => {
            let here = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            return Redirect::to(&format!("/login?next={}", super::web::pct(here))).into_response();
        }
    };
    let label = q.host.to_ascii_lowercase();
    let Some((key, ws, owner)) = parse_label(&label) else {
        return not_found();
    };
    let allowed = async {
        let owner_row = state.store.user_by_username(owner).await.ok()??;
        let w = state
            .store
            .workspace_by_name(&owner_row.id, ws)
            .await
            .ok()??;
        let kind = if key.bytes().all(|b| b.is_ascii_digit()) {
            "ports"
        } else {
            "apps"
        };
        target(&state, &w, kind, key, owner_row.id == user.id, true, false)
            .await
            .ok()?
    }
    .await;
    let Some(app_url) = allowed.and_then(|_| app_url(&state, owner, ws, key)) else {
        return not_found();
    };
    let token =
        match super::tokens::issue_token(&state, &user, &format!("app {label}"), APP_TOKEN_SECS)
            .await
        {
            Ok((t, info)) => match state
                .store
                .scope_token(&info.id, &format!("app:{label}"))
                .await
            {
                Ok(()) => t,
                Err(e) => return ApiError::from(e).into_response(),
            },
            Err(e) => return e.into_response(),
        };
    let next = super::web::safe_next(q.next.as_deref());
    Redirect::to(&format!(
        "{}{}?token={}&next={}",
        app_url.trim_end_matches('/'),
        CALLBACK,
        super::web::pct(&token),
        super::web::pct(&next)
    ))
    .into_response()
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `/.outpost/callback` on an app host: keeps the token (if it is this host's) as the host's
/// cookie and goes back to the page.
async fn callback(state: &AppState, parts: &axum::http::request::Parts, label: &str) -> Response {
    let Some(q) = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded_query(q).ok())
    else {
        return ApiError::bad_request("expected ?token=&next=").into_response();
    };
    if auth::app_token_user(&q.token, state, label).await.is_none() {
        return ApiError::unauthorized("this sign-in link is not for this app, or it expired")
            .into_response();
    }
    let next = super::web::safe_next(q.next.as_deref());
    let mut r = Redirect::to(&next).into_response();
    let secure = if state.access_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{APP_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={APP_TOKEN_SECS}{secure}",
        q.token
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    // The token was in the URL: no page of the app sees it in a Referer.
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn serde_urlencoded_query(q: &str) -> Result<CallbackQuery, ()> {
    axum::extract::Query::<CallbackQuery>::try_from_uri(
        &format!("/?{q}")
            .parse::<axum::http::Uri>()
            .map_err(|_| ())?,
    )
    .map(|Query(c)| c)
    .map_err(|_| ())
}

/// Sends requests for app hosts to [`serve`], everything else on.
pub(super) async fn route_app_hosts(
    State(state): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match label_of(&state, req.headers()) {
        Some(label) => serve(state, req, label).await,
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_label;

    #[test]
    fn labels_name_app_workspace_and_owner() {
        assert_eq!(
            parse_label("code--dev--alice"),
            Some(("code", "dev", "alice"))
        );
        assert_eq!(
            parse_label("8080--my-ws--bob"),
            Some(("8080", "my-ws", "bob"))
        );
        assert_eq!(parse_label("a--b--c--d"), Some(("a--b", "c", "d")));
        assert_eq!(parse_label("dev--alice"), None);
        assert_eq!(parse_label("--dev--alice"), None);
    }
}
