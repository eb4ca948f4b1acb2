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

/// The user behind the request's API token.
pub struct AuthUser {
    pub user: UserRow,
    /// A workspace credential (minted for the CLI inside a workspace): the user's own
    /// operations only, never admin rights or new tokens.
    pub scoped: bool,
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
                state.audit.record(
                    "web.csrf",
                    "rejected",
                    &user.user.username,
                    None,
                    None,
                    None,
                    format!("{} {}", parts.method, parts.uri.path()),
                );
                return Err(ApiError::forbidden(
                    "this request lacks the page's CSRF token; reload the page and try again",
                ));
            }
        }
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
    let user = token_user(token, state).await?;
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
        let scoped = row.scope.is_some();
        let mut user = user;
        if scoped {
            user.admin = false;
        }
        Ok(AuthUser { user, scoped })
    }
}

/// A provisioner daemon holding the server's provisioner key.
pub struct ProvisionerAuth;

impl FromRequestParts<AppState> for ProvisionerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(k) if ct_eq(&sha256_hex(k), &state.provisioner_key_hash) => Ok(ProvisionerAuth),
            _ => Err(ApiError::unauthorized("invalid provisioner key")),
        }
    }
}
