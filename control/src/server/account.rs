//! A user's account beyond sign-in: deleting a user (with their workspaces), changing a
//! password, and the account's dotfiles repository (`/api/v1/users/...`).

use super::error::ApiPath;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::Json;
use outpost_api::*;

use super::auth::{hash_password, AuthUser};
use super::authz::{require, Right};
use super::error::{ApiError, ApiJson, ApiResult};
use super::users::{live_user, user_view, validate_password};
use super::workspaces::{queue, workspace_view, Queued};
use super::AppState;
use crate::store::{UserRow, WorkspaceRow};

/// `DELETE /api/v1/users/{username}` (user admins; an owner only by an owner; never yourself,
/// never the last owner). At once: the row is renamed `deleted-ID` and marked deleted (so the
/// name is free and nobody signs in as them), every token is revoked and their live relays,
/// terminals and app connections end; then every workspace of theirs gets a delete build (a
/// build in progress is canceled first), which removes its home as any delete does.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{username}",
    tag = "users",
    summary = "Delete a user and, through builds, their workspaces",
    params(
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = UserDeletion)),
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<UserDeletion>> {
    require(
        &auth,
        Right::ManageUsers,
        "user.delete",
        Some(&format!("user:{username}")),
    )?;
    let user = live_user(&state, &username).await?;
    let owner = user.roles.contains(&Role::Owner);
    if owner {
        require(
            &auth,
            Right::GrantOwner,
            "user.delete",
            Some(&format!("user:{username}")),
        )?;
    }
    if user.id == auth.user.id {
        return Err(ApiError::bad_request(
            "you cannot delete yourself; have another admin do it",
        ));
    }
    if owner {
        let others = state
            .store
            .list_users()
            .await?
            .iter()
            .filter(|u| {
                u.id != user.id && u.roles.contains(&Role::Owner) && u.suspended_at.is_none()
            })
            .count();
        if others == 0 {
            return Err(ApiError::conflict(format!(
                "{username} is the last owner: make someone else an owner first"
            )));
        }
    }
    let now = crate::store::now_ms();
    if !state.store.mark_user_deleted(&user.id, now).await? {
        return Err(ApiError::not_found(format!("no user {username:?}")));
    }
    state.cut_user(&user.id);
    let reason = format!("owner {username} deleted by {}", auth.user.username);
    let workspaces = state.store.list_workspaces(Some(&user.id)).await?;
    for w in &workspaces {
        delete_workspace(&state, w, &auth.user, &reason).await?;
    }
    state.audit.record(
        "user.delete",
        "ok",
        &auth.user.username,
        Some(&format!("user:{username}")),
        None,
        None,
        None,
        format!(
            "{username}: tokens revoked, {} workspace(s) deleting",
            workspaces.len()
        ),
    );
    let user = state
        .store
        .user_by_username(&format!("deleted-{}", user.id))
        .await?
        .ok_or_else(|| ApiError::internal("deleted user vanished"))?;
    Ok(Json(deletion_view(&state, &user, &username).await?))
}

/// `GET /api/v1/users/{username}/deletion` (user admins), `username` being the `deleted-ID`
/// name a deletion answered with: the workspaces still being deleted.
#[utoipa::path(
    get,
    path = "/api/v1/users/{username}/deletion",
    tag = "users",
    summary = "How a user's deletion is going",
    params(
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = UserDeletion)),
)]
pub(super) async fn deletion(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<UserDeletion>> {
    require(
        &auth,
        Right::ManageUsers,
        "user.deletion",
        Some(&format!("user:{username}")),
    )?;
    let user = state
        .store
        .user_by_username(&username)
        .await?
        .filter(|u| u.deleted_at.is_some())
        .ok_or_else(|| ApiError::not_found(format!("no deleted user {username:?}")))?;
    Ok(Json(deletion_view(&state, &user, "").await?))
}

async fn deletion_view(state: &AppState, user: &UserRow, former: &str) -> ApiResult<UserDeletion> {
    let mut workspaces = Vec::new();
    for w in state.store.list_workspaces(Some(&user.id)).await? {
        let v = workspace_view(state, &w).await?;
        workspaces.push(DeletingWorkspace {
            name: v.name,
            status: v.status,
            deleting: v.latest_build.transition == Transition::Delete,
            error: v.latest_build.error,
        });
    }
    Ok(UserDeletion {
        user: user_view(user),
        former_username: former.to_string(),
        workspaces,
    })
}

/// Queues a delete build for a deleted user's workspace. A build in progress is canceled
/// first and the delete queued once it ends (a task that waits for it).
async fn delete_workspace(
    state: &AppState,
    w: &WorkspaceRow,
    actor: &UserRow,
    reason: &str,
) -> ApiResult<()> {
    if queue_delete(state, w, actor).await? {
        return Ok(());
    }
    if let Some(b) = state.store.build(&w.latest_build_id).await? {
        if state.store.cancel_job(&b.job_id).await? {
            state
                .store
                .append_log(&b.job_id, "cancel", "warn", reason)
                .await?;
            state.touch(&format!("job:{}", b.job_id));
            state.bump_progress();
        }
    }
    state.revoke_workspace_agents(&w.id, reason).await?;
    let (state, id, actor) = (state.clone(), w.id.clone(), actor.clone());
    tokio::spawn(async move {
        // A canceled build ends within its provisioner's lease at the latest.
        for _ in 0..1200 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(Some(w)) = state.store.workspace_by_id(&id).await else {
                return;
            };
            if w.deleted {
                return;
            }
            match queue_delete(&state, &w, &actor).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(workspace = %id, "deleting a deleted user's workspace: {}", e.message);
                    return;
                }
            }
        }
        tracing::warn!(workspace = %id, "a deleted user's workspace kept building; delete it by hand");
    });
    Ok(())
}

/// Queues the delete build when the workspace's latest build is over; false when it is not.
async fn queue_delete(state: &AppState, w: &WorkspaceRow, actor: &UserRow) -> ApiResult<bool> {
    let view = workspace_view(state, w).await?;
    let latest = &view.latest_build;
    if !latest.status.is_final() {
        return Ok(false);
    }
    let version = state
        .store
        .template_version(&latest.template_version_id)
        .await?
        .ok_or_else(|| ApiError::internal("template version vanished"))?;
    let manifest: TemplateManifest =
        serde_json::from_str(&version.manifest).map_err(ApiError::internal)?;
    let b = queue(
        state,
        w,
        Queued {
            after: latest.number,
            transition: "delete",
            version_id: &latest.template_version_id,
            then_start: false,
            actor: Some(actor),
            provisioner: &manifest.provisioner,
            params: None,
            reason: "initiator",
        },
    )
    .await?;
    state.audit.record(
        "workspace.build",
        "queued",
        &actor.username,
        Some(&format!("workspace:{}/{}", w.owner_name, w.name)),
        Some(&w.id),
        None,
        None,
        format!(
            "{}/{}: delete (build #{}, its owner was deleted)",
            w.owner_name, w.name, b.number
        ),
    );
    Ok(true)
}

/// A password change takes effect at once: every token of the user but `keep` (the caller's
/// own, when it is their own password) is revoked and their live connections end.
async fn set_password(
    state: &AppState,
    user: &UserRow,
    new: &str,
    keep: Option<&str>,
) -> ApiResult<()> {
    let hash = hash_password(new)?;
    state.store.set_password(&user.id, &hash, keep).await?;
    state.cut_user(&user.id);
    Ok(())
}

/// `PUT /api/v1/users/me/password`: your own, with your current password (sign-in lockouts
/// apply to wrong ones). Your other sessions and tokens end; this one stays.
#[utoipa::path(
    put,
    path = "/api/v1/users/me/password",
    tag = "users",
    summary = "Change one's own password",
    request_body = ChangePasswordRequest,
    responses((status = 200, description = "OK", body = User)),
)]
pub(super) async fn change_own_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    auth: AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Json<User>> {
    if auth.scoped() {
        return Err(ApiError::forbidden(
            "a workspace credential cannot change passwords; run `outpost login` for a full session",
        ));
    }
    validate_password(&req.new_password)?;
    let current = req
        .current_password
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("give your current password (`current_password`)"))?;
    let name = auth.user.username.as_str();
    state.login_guard.check(peer.ip(), name)?;
    let ok = state
        .login_guard
        .verify(current, Some(&auth.user.password_hash))
        .await?;
    if !ok {
        state.login_guard.failed(peer.ip(), name);
        state.audit.record(
            "user.password",
            "rejected",
            name,
            Some(&format!("user:{name}")),
            None,
            None,
            Some(peer.ip().to_string()),
            "wrong current password",
        );
        return Err(ApiError::forbidden("your current password is wrong"));
    }
    state.login_guard.succeeded(name);
    set_password(&state, &auth.user, &req.new_password, Some(&auth.token_id)).await?;
    state.audit.record(
        "user.password",
        "ok",
        name,
        Some(&format!("user:{name}")),
        None,
        None,
        Some(peer.ip().to_string()),
        "own password; other sessions and tokens revoked",
    );
    Ok(Json(user_view(&auth.user)))
}

/// `PUT /api/v1/users/{username}/password` (user admins; an owner's only by an owner): every
/// session and token of theirs ends.
#[utoipa::path(
    put,
    path = "/api/v1/users/{username}/password",
    tag = "users",
    summary = "Set another user's password",
    request_body = ChangePasswordRequest,
    params(
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = User)),
)]
pub(super) async fn change_password(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Json<User>> {
    require(
        &auth,
        Right::ManageUsers,
        "user.password",
        Some(&format!("user:{username}")),
    )?;
    let user = live_user(&state, &username).await?;
    if user.roles.contains(&Role::Owner) {
        require(
            &auth,
            Right::GrantOwner,
            "user.password",
            Some(&format!("user:{username}")),
        )?;
    }
    if user.id == auth.user.id {
        return Err(ApiError::bad_request(
            "change your own password with `outpost users password` (it asks for the current one)",
        ));
    }
    validate_password(&req.new_password)?;
    set_password(&state, &user, &req.new_password, None).await?;
    state.audit.record(
        "user.password",
        "ok",
        &auth.user.username,
        Some(&format!("user:{username}")),
        None,
        None,
        None,
        format!("{username}: set by an admin; their sessions and tokens revoked"),
    );
    Ok(Json(user_view(&user)))
}

/// What an account's dotfiles repository may be: a git URL (`https://`, `http://`, `ssh://`,
/// `git://`, `file://`) or scp-like `[USER@]HOST:PATH`, as long as a parameter value may be,
/// with no spaces or control characters, never starting with `-` (git would read an option).
/// Each template's own rules for `dotfiles_uri` apply too, when a workspace uses it.
pub(super) fn validate_dotfiles_uri(uri: &str) -> ApiResult<()> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "invalid dotfiles repository {uri:?}: {why}"
        )))
    };
    if uri.is_empty() || uri.len() > 4096 {
        return bad("use 1 to 4096 characters");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it has spaces or control characters");
    }
    if uri.starts_with('-') {
        return bad("it starts with -");
    }
    const SCHEMES: [&str; 5] = ["https://", "http://", "ssh://", "git://", "file://"];
    let url = SCHEMES.iter().any(|s| {
        uri.len() > s.len()
            && uri
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
    });
    let scp = !uri.contains("://")
        && uri.split_once(':').is_some_and(|(host, path)| {
            !host.is_empty() && !host.contains('/') && !path.is_empty()
        });
    if !url && !scp {
        return bad("use a git URL (https://, ssh://, git://, file://) or HOST:PATH");
    }
    Ok(())
}

/// `GET /api/v1/users/me/dotfiles`.
#[utoipa::path(
    get,
    path = "/api/v1/users/me/dotfiles",
    tag = "users",
    summary = "One's dotfiles repository",
    responses((status = 200, description = "OK", body = DotfilesSetting)),
)]
pub(super) async fn get_dotfiles(auth: AuthUser) -> Json<DotfilesSetting> {
    Json(DotfilesSetting {
        dotfiles_uri: auth.user.dotfiles_uri.clone(),
    })
}

/// `PUT /api/v1/users/me/dotfiles`: set (or, with none or an empty one, clear) the account's
/// dotfiles repository.
#[utoipa::path(
    put,
    path = "/api/v1/users/me/dotfiles",
    tag = "users",
    summary = "Set one's dotfiles repository",
    request_body = DotfilesSetting,
    responses((status = 200, description = "OK", body = DotfilesSetting)),
)]
pub(super) async fn set_dotfiles(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<DotfilesSetting>,
) -> ApiResult<Json<DotfilesSetting>> {
    let uri = req
        .dotfiles_uri
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    if let Some(u) = uri {
        validate_dotfiles_uri(u)?;
    }
    state.store.set_dotfiles(&auth.user.id, uri).await?;
    state.audit.record(
        "user.dotfiles",
        "ok",
        &auth.user.username,
        Some(&format!("user:{}", auth.user.username)),
        None,
        None,
        None,
        uri.unwrap_or("(cleared)"),
    );
    Ok(Json(DotfilesSetting {
        dotfiles_uri: uri.map(str::to_string),
    }))
}

/// The parameters a user gives a build of a template with a `dotfiles_uri` parameter: when they
/// give none, the account's repository fills it in (at creation, and at a start when the
/// workspace's value is empty).
pub(super) fn with_account_dotfiles(
    manifest: &TemplateManifest,
    user: &UserRow,
    given: &std::collections::BTreeMap<String, String>,
    previous: Option<&std::collections::BTreeMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    const NAME: &str = "dotfiles_uri";
    let mut out = given.clone();
    let Some(uri) = user.dotfiles_uri.as_deref().filter(|u| !u.is_empty()) else {
        return out;
    };
    let has = manifest.parameters.iter().any(|p| p.name == NAME);
    let prev_empty = previous.is_none_or(|p| p.get(NAME).is_none_or(|v| v.is_empty()));
    if has && !given.contains_key(NAME) && prev_empty {
        out.insert(NAME.to_string(), uri.to_string());
    }
    out
}
