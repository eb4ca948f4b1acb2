//! API tokens (`/api/v1/tokens`).

use super::error::ApiPath;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::{random_secret, sha256_hex, AuthUser, API_TOKEN_PREFIX};
use super::error::{store_or, ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{now_ms, UserRow};

pub(super) const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;
const MAX_TOKEN_LIFETIME_SECS: u64 = 365 * 24 * 3600;

pub(super) async fn issue_token(
    state: &AppState,
    user: &UserRow,
    name: &str,
    lifetime_secs: u64,
) -> ApiResult<(String, TokenInfo)> {
    let id_secret = random_secret();
    let row = state
        .store
        .create_token(
            &user.id,
            name,
            &sha256_hex(&id_secret),
            now_ms() + (lifetime_secs as i64) * 1000,
        )
        .await?;
    let token = format!("{API_TOKEN_PREFIX}_{}_{id_secret}", row.id);
    Ok((
        token,
        TokenInfo {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: None,
        },
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    summary = "Create an API token (the secret is shown once)",
    request_body = CreateTokenRequest,
    responses((status = 201, description = "OK", body = CreateTokenResponse)),
)]
pub(super) async fn create_token(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    if auth.scoped() {
        return Err(ApiError::forbidden(
            "a workspace credential cannot create tokens; run `outpost login` for a full session",
        ));
    }
    if req.name.is_empty() || req.name.len() > 64 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "token names are 1-64 printable characters",
        ));
    }
    let lifetime = req.lifetime_secs.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
    if lifetime == 0 || lifetime > MAX_TOKEN_LIFETIME_SECS {
        return Err(ApiError::bad_request(format!(
            "lifetime_secs must be between 1 and {MAX_TOKEN_LIFETIME_SECS}"
        )));
    }
    let (token, info) = issue_token(&state, &auth.user, &req.name, lifetime).await?;
    auth.record(
        "token.create",
        "ok",
        &format!("token:{}", info.id),
        None,
        format!("{:?} for {} s", req.name, lifetime),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse { token, info }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    summary = "One's API tokens",
    responses((status = 200, description = "OK", body = Vec<TokenInfo>)),
)]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let rows = state.store.list_tokens(&auth.user.id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TokenInfo {
                id: r.id,
                name: r.name,
                created_at: r.created_at,
                expires_at: r.expires_at,
                last_used_at: r.last_used_at,
            })
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    summary = "Revoke an API token",
    params(
        ("id" = String, Path, description = "An id"),
    ),
    responses((status = 200, description = "OK", body = outpost_api::Revoked)),
)]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<outpost_api::Revoked>> {
    state
        .store
        .revoke_token(&auth.user.id, &id)
        .await
        .map_err(|e| {
            store_or(e, || {
                ApiError::not_found(format!("no token {id:?}; see `outpost tokens list`"))
            })
        })?;
    auth.record("token.revoke", "ok", &format!("token:{id}"), None, "");
    Ok(Json(outpost_api::Revoked { revoked: id }))
}
