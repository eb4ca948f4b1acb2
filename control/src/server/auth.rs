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

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "sign in first: run `outpost login URL` (or send `Authorization: Bearer TOKEN`)",
            )
        })?;
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
