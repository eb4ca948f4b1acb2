//! First-run setup, sign-in and users (`/api/v1/setup`, `/api/v1/login`, `/api/v1/users`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::{ct_eq, hash_password, random_secret, sha256_hex, verify_password, AuthUser};
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::UserRow;

const SETUP_TOKEN_KEY: &str = "setup_token_hash";

/// With no users yet, mints a one-time setup token and tells the admin how to use it.
pub(super) async fn announce_setup(state: &AppState, access_url: &str) -> anyhow::Result<()> {
    let path = state.config.data_dir.join("setup-token");
    if state.store.count_users().await? > 0 {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    // Hex, so it never starts with `-` on a command line.
    let token = sha256_hex(&random_secret());
    state
        .store
        .set_setting(SETUP_TOKEN_KEY, &sha256_hex(&token))
        .await?;
    crate::ca::write_private(&path, token.as_bytes())?;
    eprintln!(
        "\nOutpost has no users yet. Create the first admin with:\n\n    outpost login {access_url} --first-user --setup-token {token}\n\n(the token is also in {}; it works once)\n",
        path.display()
    );
    Ok(())
}

pub(super) fn user_view(u: &UserRow) -> User {
    User {
        id: u.id.clone(),
        username: u.username.clone(),
        admin: u.admin,
        created_at: u.created_at,
    }
}

fn validate_username(name: &str) -> ApiResult<()> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid username {name:?}: use 1-32 lowercase letters, digits, - and _, starting with a letter"
        )))
    }
}

fn validate_password(p: &str) -> ApiResult<()> {
    if p.len() < 8 || p.len() > 256 {
        return Err(ApiError::bad_request(
            "passwords must be 8 to 256 characters long",
        ));
    }
    Ok(())
}

pub(super) async fn setup(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SetupRequest>,
) -> ApiResult<(StatusCode, Json<LoginResponse>)> {
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let Some(hash) = state.store.setting(SETUP_TOKEN_KEY).await? else {
        return Err(ApiError::conflict(
            "setup is done: the first user exists; sign in with `outpost login URL`",
        ));
    };
    if !ct_eq(&hash, &sha256_hex(&req.setup_token)) {
        return Err(ApiError::unauthorized(
            "wrong setup token: use the one `outpost server` printed (also in DATA_DIR/setup-token)",
        ));
    }
    let pw = hash_password(&req.password)?;
    let user = state
        .store
        .create_user(&req.username, &pw, true, true)
        .await?;
    state.store.delete_setting(SETUP_TOKEN_KEY).await?;
    let _ = std::fs::remove_file(state.config.data_dir.join("setup-token"));
    Ok((StatusCode::CREATED, Json(signed_in(&state, &user).await?)))
}

/// A signed-in user's answer: a new CLI token (the default lifetime) and who they are.
async fn signed_in(state: &AppState, user: &UserRow) -> ApiResult<LoginResponse> {
    let (token, info) = super::tokens::issue_token(
        state,
        user,
        "cli",
        super::tokens::DEFAULT_TOKEN_LIFETIME_SECS,
    )
    .await?;
    Ok(LoginResponse {
        token,
        token_id: info.id,
        user: user_view(user),
    })
}

pub(super) async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let bad = || {
        state.audit.record(
            "user.login",
            "rejected",
            &req.username,
            None,
            None,
            None,
            "wrong username or password",
        );
        ApiError::unauthorized("wrong username or password")
    };
    let Some(user) = state.store.user_by_username(&req.username).await? else {
        return Err(bad());
    };
    if !verify_password(&req.password, &user.password_hash) {
        return Err(bad());
    }
    state
        .audit
        .record("user.login", "ok", &user.username, None, None, None, "");
    Ok(Json(signed_in(&state, &user).await?))
}

pub(super) async fn create_user(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    if !auth.user.admin {
        return Err(ApiError::forbidden("only admins can create users"));
    }
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let pw = hash_password(&req.password)?;
    let user = state
        .store
        .create_user(&req.username, &pw, req.admin, false)
        .await?;
    Ok((StatusCode::CREATED, Json(user_view(&user))))
}

pub(super) async fn me(auth: AuthUser) -> Json<User> {
    Json(user_view(&auth.user))
}
