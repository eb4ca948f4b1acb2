//! First-run setup, sign-in and users (`/api/v1/setup`, `/api/v1/login`, `/api/v1/users`).

use super::error::ApiPath;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::{ct_eq, hash_password, random_secret, sha256_hex, AuthUser};
use super::authz::{require, Right};
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
    // The token itself only ever goes to a terminal: logs (a service's journal, `docker logs`)
    // are shipped and kept, so there the command reads the 0600 file instead.
    let arg = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        token
    } else {
        format!("\"$(cat {})\"", path.display())
    };
    eprintln!(
        "\nOutpost has no users yet. Create the first admin with:\n\n    outpost login {access_url} --first-user --setup-token {arg}\n\n(the token is in {}, readable by the server's user only; it works once)\n",
        path.display()
    );
    Ok(())
}

/// The user named `username`, not deleted; 404 otherwise.
pub(super) async fn live_user(state: &AppState, username: &str) -> ApiResult<UserRow> {
    state
        .store
        .user_by_username(username)
        .await?
        .filter(|u| u.deleted_at.is_none())
        .ok_or_else(|| {
            ApiError::not_found(format!("no user {username:?}; see `outpost users list`"))
        })
}

pub(super) fn user_view(u: &UserRow) -> User {
    User {
        id: u.id.clone(),
        username: u.username.clone(),
        admin: u.admin,
        roles: u.roles.clone(),
        created_at: u.created_at,
        suspended: u.suspended_at.is_some(),
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

pub(super) fn validate_password(p: &str) -> ApiResult<()> {
    if p.len() < 8 || p.len() > 256 {
        return Err(ApiError::bad_request(
            "passwords must be 8 to 256 characters long",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/setup",
    tag = "users",
    summary = "Create the first owner (once, on a new server)",
    request_body = SetupRequest,
    responses((status = 201, description = "OK", body = LoginResponse)),
)]
pub(super) async fn setup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    state.audit.record(
        "user.setup",
        "ok",
        &user.username,
        Some(&format!("user:{}", user.username)),
        None,
        None,
        Some(peer.ip().to_string()),
        "the first user (owner)",
    );
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

#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "users",
    summary = "Exchange a username and password for an API token",
    request_body = LoginRequest,
    responses((status = 200, description = "OK", body = LoginResponse)),
)]
pub(super) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let user = check_password(&state, peer, &req.username, &req.password, "").await?;
    Ok(Json(signed_in(&state, &user).await?))
}

/// A password sign-in (API or web, `how` says which in the audit log): lockouts by source and
/// username first, then the password checked on the hashing pool (an unknown name costs the
/// same), then the account's suspension.
pub(super) async fn check_password(
    state: &AppState,
    peer: SocketAddr,
    username: &str,
    password: &str,
    how: &str,
) -> ApiResult<UserRow> {
    let wrong = || ApiError::unauthorized("wrong username or password");
    let Some(name) = super::ratelimit::plausible_username(username) else {
        state.audit.record(
            "user.login",
            "rejected",
            "(invalid username)",
            None,
            None,
            None,
            Some(peer.ip().to_string()),
            format!("an over-long or unprintable username {how}")
                .trim_end()
                .to_string(),
        );
        return Err(wrong());
    };
    if let Err(e) = state.login_guard.check(peer.ip(), name) {
        state.audit.record(
            "user.login",
            "rate_limited",
            name,
            Some(&format!("user:{name}")),
            None,
            None,
            Some(peer.ip().to_string()),
            how,
        );
        return Err(e);
    }
    // A deleted user's row is renamed `deleted-ID`: nobody signs in as it.
    let user = state
        .store
        .user_by_username(name)
        .await?
        .filter(|u| u.deleted_at.is_none());
    let ok = state
        .login_guard
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    let Some(user) = user.filter(|_| ok) else {
        state.login_guard.failed(peer.ip(), name);
        state.audit.record(
            "user.login",
            "rejected",
            name,
            Some(&format!("user:{name}")),
            None,
            None,
            Some(peer.ip().to_string()),
            format!("wrong username or password {how}")
                .trim_end()
                .to_string(),
        );
        return Err(wrong());
    };
    state.login_guard.succeeded(name);
    if user.suspended_at.is_some() {
        state.audit.record(
            "user.login",
            "rejected",
            name,
            Some(&format!("user:{name}")),
            None,
            None,
            Some(peer.ip().to_string()),
            format!("suspended {how}").trim_end().to_string(),
        );
        return Err(ApiError::forbidden(
            "your account is suspended; ask an admin to reinstate it",
        ));
    }
    state.audit.record(
        "user.login",
        "ok",
        &user.username,
        Some(&format!("user:{}", user.username)),
        None,
        None,
        Some(peer.ip().to_string()),
        how,
    );
    Ok(user)
}

/// `POST /api/v1/users/{username}/suspend` (admins): every token of the user is revoked, their
/// relays, terminals and app WebSockets end at once, their workspaces stop.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/suspend",
    tag = "users",
    summary = "Suspend a user (their workspaces stop, their tokens stop working)",
    params(
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = User)),
)]
pub(super) async fn suspend(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<User>> {
    let target = format!("user:{username}");
    require(&auth, Right::ManageUsers, "user.suspend", Some(&target))?;
    let user = live_user(&state, &username).await?;
    if user.admin {
        require(&auth, Right::GrantOwner, "user.suspend", Some(&target))?;
    }
    if user.id == auth.user.id {
        return Err(ApiError::bad_request(
            "you cannot suspend yourself; have another admin do it",
        ));
    }
    let now = crate::store::now_ms();
    state.store.set_suspended(&user.id, Some(now)).await?;
    state.cut_user(&user.id);
    let mut stopped = 0;
    for w in state.store.list_workspaces(Some(&user.id)).await? {
        let reason = format!(
            "owner {} suspended by {}",
            user.username, auth.user.username
        );
        if super::workspaces::stop_now(&state, &w, &auth.user, &reason).await? {
            stopped += 1;
        }
    }
    auth.record(
        "user.suspend",
        "ok",
        &target,
        None,
        format!(
            "{}: tokens revoked, {stopped} workspace(s) stopping",
            user.username
        ),
    );
    let mut view = user_view(&user);
    view.suspended = true;
    Ok(Json(view))
}

/// `POST /api/v1/users/{username}/unsuspend` (admins): the user may sign in again (their old
/// tokens stay revoked; their workspaces stay stopped until they start them).
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/unsuspend",
    tag = "users",
    summary = "Lift a suspension",
    params(
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = User)),
)]
pub(super) async fn unsuspend(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<User>> {
    let target = format!("user:{username}");
    require(&auth, Right::ManageUsers, "user.unsuspend", Some(&target))?;
    let user = live_user(&state, &username).await?;
    state.store.set_suspended(&user.id, None).await?;
    auth.record("user.unsuspend", "ok", &target, None, "");
    let mut view = user_view(&user);
    view.suspended = false;
    Ok(Json(view))
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    summary = "Create a user",
    request_body = CreateUserRequest,
    responses((status = 201, description = "OK", body = User)),
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let target = format!("user:{}", req.username.chars().take(64).collect::<String>());
    require(&auth, Right::ManageUsers, "user.create", Some(&target))?;
    let mut roles = req.roles.clone();
    if req.admin {
        roles.push(Role::Owner);
    }
    if roles.contains(&Role::Owner) {
        require(&auth, Right::GrantOwner, "user.create", Some(&target))?;
    }
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let pw = hash_password(&req.password)?;
    let mut user = state
        .store
        .create_user(&req.username, &pw, roles.contains(&Role::Owner), false)
        .await?;
    if !roles.is_empty() {
        state.store.set_roles(&user.id, &roles).await?;
        roles.sort();
        roles.dedup();
        user.roles = roles;
    }
    auth.record(
        "user.create",
        "ok",
        &target,
        None,
        format!("roles: {}", roles_list(&user.roles)),
    );
    Ok((StatusCode::CREATED, Json(user_view(&user))))
}

fn roles_list(roles: &[Role]) -> String {
    if roles.is_empty() {
        "member".into()
    } else {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `GET /api/v1/users` (owners, user and template admins, auditors).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    summary = "List users",
    responses((status = 200, description = "OK", body = Vec<User>)),
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<User>>> {
    require(&auth, Right::ReadUsers, "user.list", None)?;
    let users = state.store.list_users().await?;
    Ok(Json(users.iter().map(user_view).collect()))
}

/// `PUT /api/v1/users/{username}/roles`: a user's roles from now on. `owner` is granted and
/// taken by owners only; the last owner keeps theirs.
#[utoipa::path(
    put,
    path = "/api/v1/users/{username}/roles",
    tag = "users",
    summary = "Set a user's roles",
    request_body = SetRolesRequest,
    params(
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = User)),
)]
pub(super) async fn set_roles(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<SetRolesRequest>,
) -> ApiResult<Json<User>> {
    let target = format!("user:{username}");
    require(&auth, Right::ManageUsers, "user.roles", Some(&target))?;
    let user = live_user(&state, &username).await?;
    let mut roles = req.roles.clone();
    roles.sort();
    roles.dedup();
    let owner_before = user.roles.contains(&Role::Owner);
    let owner_after = roles.contains(&Role::Owner);
    if owner_before != owner_after {
        require(&auth, Right::GrantOwner, "user.roles", Some(&target))?;
    }
    if owner_before && !owner_after {
        let owners = state
            .store
            .list_users()
            .await?
            .iter()
            .filter(|u| u.roles.contains(&Role::Owner) && u.suspended_at.is_none())
            .count();
        if owners <= 1 {
            return Err(ApiError::conflict(format!(
                "{username} is the last owner: make someone else an owner first"
            )));
        }
    }
    state.store.set_roles(&user.id, &roles).await?;
    auth.record(
        "user.roles",
        "ok",
        &target,
        None,
        format!("{} -> {}", roles_list(&user.roles), roles_list(&roles)),
    );
    let mut user = user;
    user.admin = owner_after;
    user.roles = roles;
    Ok(Json(user_view(&user)))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "users",
    summary = "The signed-in user",
    responses((status = 200, description = "OK", body = User)),
)]
pub(super) async fn me(auth: AuthUser) -> Json<User> {
    Json(user_view(&auth.user))
}
