//! Secrets and who is calling: API tokens, passwords, provisioner keys, agent identities.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::store::{now_ms, UserRow};

pub const API_TOKEN_PREFIX: &str = "opt";
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "obt";

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 256 random bits, base64url.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// 64 random bits, hex: the public half of a token.
pub fn random_id() -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Splits `PREFIX_ID_SECRET`.
pub fn split_token<'a>(token: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    if id.is_empty() || id.len() > 64 || secret.len() < 16 || secret.len() > 128 {
        return None;
    }
    Some((id, secret))
}

/// Equality that does not stop at the first differing byte.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The client's IP address (the TCP peer the API listener accepted).
pub fn peer_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The user behind the request's API token.
pub struct AuthUser {
    pub user: UserRow,
    /// A workspace credential (minted for the CLI inside a workspace): the id of the one
    /// workspace it may act on. Such a caller reaches only [`SCOPED_ROUTES`], for that
    /// workspace alone, and never with admin rights.
    pub workspace_scope: Option<String>,
    /// The id of the API token (or browser session) this request came with.
    pub token_id: String,
    /// The client's address (the TCP peer's IP), for the audit log.
    pub remote: Option<String>,
    /// Where [`AuthUser::record`] sends events.
    audit: super::audit::Audit,
}

impl AuthUser {
    /// Audits something this caller did to `target`, with their name and address.
    pub fn record(
        &self,
        action: &str,
        outcome: &str,
        target: &str,
        workspace_id: Option<&str>,
        details: impl Into<String>,
    ) {
        self.audit.record(
            action,
            outcome,
            &self.user.username,
            Some(target).filter(|t| !t.is_empty()),
            workspace_id,
            None,
            self.remote.clone(),
            details,
        );
    }

    pub fn scoped(&self) -> bool {
        self.workspace_scope.is_some()
    }

    /// Whether this caller may act on workspace `id` at all (a scoped credential: only its own).
    pub fn may_touch(&self, workspace_id: &str) -> bool {
        self.workspace_scope
            .as_deref()
            .is_none_or(|w| w == workspace_id)
    }
}

/// What a workspace credential may call (method, route): its own workspace's view, logs and
/// builds, its own stop/restart (checked in the handler), who it acts for. Nothing about keys,
/// tokens, users, templates, audit, relays or other workspaces.
pub const SCOPED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/users/me"),
    ("GET", "/api/v1/workspaces"),
    ("GET", "/api/v1/workspaces/{name}"),
    ("POST", "/api/v1/workspaces/{name}/builds"),
    ("GET", "/api/v1/workspaces/{name}/agent-logs"),
    ("GET", "/api/v1/builds/{id}"),
    ("GET", "/api/v1/builds/{id}/logs"),
];

/// A workspace credential's request: refused unless the route is in [`SCOPED_ROUTES`] and any
/// `{name}` in it is the credential's own workspace.
async fn check_scope(parts: &mut Parts, state: &AppState, auth: &AuthUser) -> Result<(), ApiError> {
    let Some(scope) = auth.workspace_scope.as_deref() else {
        return Ok(());
    };
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let refused = || {
        auth.record(
            "token.scope",
            "rejected",
            &format!("workspace-id:{scope}"),
            Some(scope),
            format!("{method} {path}"),
        );
        ApiError::forbidden(
            "a workspace credential only reaches its own workspace (show, logs, stop, restart); run `outpost login` for a full session",
        )
    };
    if !SCOPED_ROUTES
        .iter()
        .any(|(m, r)| *m == method && *r == route)
    {
        return Err(refused());
    }
    if route.contains("{name}") {
        let axum::extract::Path(params) = axum::extract::Path::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(|_| refused())?;
        let name = params.get("name").map(String::as_str).unwrap_or("");
        let w = state.store.workspace_by_name(&auth.user.id, name).await?;
        if w.is_none_or(|w| w.id != scope) {
            return Err(refused());
        }
    }
    Ok(())
}

/// The browser's session cookie: an API token (`outpost_session`), HttpOnly, SameSite=Lax.
pub const SESSION_COOKIE: &str = "outpost_session";
/// The header a page's scripts send with every state change made with the session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session cookie's token in `headers`, if one is sent.
pub fn cookie_session(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == SESSION_COOKIE && !v.is_empty())
        .map(|(_, v)| v)
}

/// The CSRF token of a browser session: derived from the session's secret, so only a page that
/// was served to the session's holder knows it.
pub fn csrf_token(session_token: &str) -> String {
    sha256_hex(&format!("outpost-csrf:{session_token}"))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (user, session) = authenticate(parts, state).await?.ok_or_else(|| {
            ApiError::unauthorized(
                "sign in first: run `outpost login URL` (or send `Authorization: Bearer TOKEN`)",
            )
        })?;
        // State changes made with the ambient cookie must carry the page's CSRF token.
        if let Some(session) = session {
            let safe = matches!(
                parts.method,
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !safe && !ct_eq(sent, &csrf_token(&session)) {
                user.record(
                    "web.csrf",
                    "rejected",
                    &format!("user:{}", user.user.username),
                    None,
                    format!("{} {}", parts.method, parts.uri.path()),
                );
                return Err(ApiError::forbidden(
                    "this request lacks the page's CSRF token; reload the page and try again",
                ));
            }
        }
        check_scope(parts, state, &user).await?;
        Ok(user)
    }
}

/// The caller, from `Authorization: Bearer` or else the session cookie (then with the cookie's
/// token, for CSRF checks); `None` when neither is sent. A token that is sent but not valid is
/// an error.
pub async fn authenticate(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<(AuthUser, Option<String>)>, ApiError> {
    let (token, from_cookie) = match bearer(parts) {
        Some(t) => (t, false),
        None => match cookie(parts, SESSION_COOKIE) {
            Some(t) if !t.is_empty() => (t, true),
            _ => return Ok(None),
        },
    };
    let mut user = token_user(token, state).await?;
    user.remote = peer_ip(parts);
    Ok(Some((user, from_cookie.then(|| token.to_string()))))
}

async fn token_user(token: &str, state: &AppState) -> Result<AuthUser, ApiError> {
    {
        let invalid =
            || ApiError::unauthorized("your API token is not valid; run `outpost login URL` again");
        let (id, secret) = split_token(token, API_TOKEN_PREFIX).ok_or_else(invalid)?;
        let (row, user) = state.store.token_with_user(id).await?.ok_or_else(invalid)?;
        if !ct_eq(&row.secret_hash, &sha256_hex(secret)) {
            return Err(invalid());
        }
        if user.suspended_at.is_some() {
            return Err(ApiError::unauthorized(
                "your account is suspended; ask an admin to reinstate it",
            ));
        }
        if user.deleted_at.is_some() {
            return Err(invalid());
        }
        if row.revoked_at.is_some() {
            return Err(ApiError::unauthorized(
                "your API token was revoked; run `outpost login URL` again",
            ));
        }
        let now = now_ms();
        if row.expires_at <= now {
            return Err(ApiError::unauthorized(
                "your API token has expired; run `outpost login URL` again",
            ));
        }
        if row.last_used_at.is_none_or(|t| now - t > 60_000) {
            state.store.touch_token(id, now).await?;
        }
        let workspace_scope = match row.scope.as_deref() {
            None => None,
            Some(s) => Some(
                s.strip_prefix("workspace:")
                    .filter(|id| !id.is_empty())
                    .ok_or_else(invalid)?
                    .to_string(),
            ),
        };
        let mut user = user;
        if workspace_scope.is_some() {
            user.admin = false;
            user.roles.clear();
        }
        Ok(AuthUser {
            user,
            workspace_scope,
            token_id: id.to_string(),
            remote: None,
            audit: state.audit.clone(),
        })
    }
}

/// The user behind an app-host cookie's token: valid, unexpired, unrevoked, its user not
/// suspended, and minted for exactly this app host (`app:LABEL`). Such a token is good for
/// nothing else: the API refuses any scope but a workspace's.
pub async fn app_token_user(token: &str, state: &AppState, label: &str) -> Option<UserRow> {
    let (id, secret) = split_token(token, API_TOKEN_PREFIX)?;
    let (row, user) = state.store.token_with_user(id).await.ok()??;
    let ok = ct_eq(&row.secret_hash, &sha256_hex(secret))
        && row.revoked_at.is_none()
        && row.expires_at > now_ms()
        && user.suspended_at.is_none()
        && user.deleted_at.is_none()
        && row.scope.as_deref() == Some(&format!("app:{label}"));
    ok.then_some(user)
}

/// A provisioner daemon holding the server's provisioner key.
/// A provisioner daemon: with the server's own key (`key: None`: untagged, unscoped), or with
/// a provisioner key an admin made (its tags and scope decide which jobs it may take).
pub struct ProvisionerAuth {
    pub key: Option<crate::store::ProvisionerKeyRow>,
}

impl FromRequestParts<AppState> for ProvisionerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::unauthorized("invalid provisioner key (revoked, or never made: see `outpost provisioners keys list`)")
        };
        let Some(k) = bearer(parts) else {
            return Err(invalid());
        };
        let hash = sha256_hex(k);
        if ct_eq(&hash, &state.provisioner_key_hash) {
            return Ok(ProvisionerAuth { key: None });
        }
        match state.store.provisioner_key_by_hash(&hash).await? {
            Some(key) => Ok(ProvisionerAuth { key: Some(key) }),
            None => Err(invalid()),
        }
    }
}

impl ProvisionerAuth {
    /// The key's id as daemons are recorded with it (`""`: the server's own).
    pub fn key_id(&self) -> &str {
        self.key.as_ref().map_or("", |k| k.id.as_str())
    }
}
