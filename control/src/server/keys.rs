//! SSH keys (`/api/v1/users/me/keys`) and the control-held git key (`/api/v1/users/me/gitsshkey`).

use super::error::ApiPath;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::AuthUser;
use super::error::{store_or, ApiError, ApiJson, ApiResult};
use super::AppState;

// ---------------------------------------------------------------- git SSH key

/// The caller's git SSH key (made on first use); add the public key to your git host.
#[utoipa::path(
    get,
    path = "/api/v1/users/me/gitsshkey",
    tag = "keys",
    summary = "One's Git SSH public key (the private half lives in workspaces)",
    responses((status = 200, description = "OK", body = GitSshKey)),
)]
pub(super) async fn git_ssh_key(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<GitSshKey>> {
    let (_, public_key) =
        git_key_by(&state, &auth.user.id, &auth.user.username, Some(&auth)).await?;
    Ok(Json(GitSshKey {
        public_key,
        private_key: None,
    }))
}

/// A user's git key as stored (the private half sealed) and its public half; made on first use
/// (audited as `gitkey.create`, by `auth` when the user asked for it).
pub(super) async fn git_key(
    state: &AppState,
    user_id: &str,
    username: &str,
) -> ApiResult<(String, String)> {
    git_key_by(state, user_id, username, None).await
}

async fn git_key_by(
    state: &AppState,
    user_id: &str,
    username: &str,
    auth: Option<&AuthUser>,
) -> ApiResult<(String, String)> {
    let keys = &state.secrets;
    let made = std::sync::atomic::AtomicBool::new(false);
    let (private, public) = state
        .store
        .git_key(user_id, || {
            made.store(true, std::sync::atomic::Ordering::Relaxed);
            outpost_common::sshkey::new_ed25519(&format!("outpost-{username}"))
                .map(|(private, public)| (keys.seal(private.as_bytes()), public))
        })
        .await?;
    if made.load(std::sync::atomic::Ordering::Relaxed) {
        let target = match outpost_common::sshkey::parse_public_key(&public) {
            Ok(k) => format!("key:{}", k.fingerprint),
            Err(_) => format!("gitkey:{username}"),
        };
        let details = format!("the git key of {username}");
        match auth {
            Some(a) => a.record("gitkey.create", "ok", &target, None, details),
            None => state.audit.record(
                "gitkey.create",
                "ok",
                "control",
                Some(&target),
                None,
                None,
                None,
                details,
            ),
        }
    }
    Ok((private, public))
}

// ---------------------------------------------------------------- SSH keys

fn key_view(r: crate::store::SshKeyRow) -> SshKey {
    SshKey {
        id: r.id,
        name: r.name,
        public_key: r.public_key,
        fingerprint: r.fingerprint,
        created_at: r.created_at,
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/users/me/keys",
    tag = "keys",
    summary = "Add an SSH public key",
    request_body = AddSshKeyRequest,
    responses((status = 201, description = "OK", body = SshKey)),
)]
pub(super) async fn add_ssh_key(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<AddSshKeyRequest>,
) -> ApiResult<(StatusCode, Json<SshKey>)> {
    if req.name.is_empty() || req.name.len() > 64 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "key names are 1-64 printable characters",
        ));
    }
    let parsed = outpost_common::sshkey::parse_public_key(&req.public_key)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (key, fp) = (parsed.canonical, parsed.fingerprint);
    let row = state
        .store
        .add_ssh_key(&auth.user.id, &req.name, &key, &fp)
        .await?;
    keys_changed(&state, &auth.user.id).await;
    auth.record(
        "key.add",
        "ok",
        &format!("key:{}", row.fingerprint),
        None,
        format!("{:?}", row.name),
    );
    Ok((StatusCode::CREATED, Json(key_view(row))))
}

/// Tells the user's running agents at once (through their held polls) to fetch the new keys:
/// a key added or removed works, or stops working, right away.
async fn keys_changed(state: &AppState, user_id: &str) {
    let Ok(workspaces) = state.store.list_workspaces(Some(user_id)).await else {
        return;
    };
    for w in workspaces {
        for agent in state.store.live_agents(&w.id).await.unwrap_or_default() {
            if state
                .store
                .enqueue_command(&agent, "refresh_keys")
                .await
                .is_ok()
            {
                state.wake_agent(&agent);
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users/me/keys",
    tag = "keys",
    summary = "One's SSH public keys",
    responses((status = 200, description = "OK", body = Vec<SshKey>)),
)]
pub(super) async fn list_ssh_keys(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<SshKey>>> {
    Ok(Json(
        state
            .store
            .ssh_keys(&auth.user.id)
            .await?
            .into_iter()
            .map(key_view)
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/me/keys/{id}",
    tag = "keys",
    summary = "Remove an SSH public key",
    params(
        ("id" = String, Path, description = "An id"),
    ),
    responses((status = 200, description = "OK", body = outpost_api::Removed)),
)]
pub(super) async fn remove_ssh_key(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<outpost_api::Removed>> {
    let known = state.store.ssh_keys(&auth.user.id).await?;
    let key = known.iter().find(|k| k.id == id);
    state
        .store
        .remove_ssh_key(&auth.user.id, &id)
        .await
        .map_err(|e| {
            store_or(e, || {
                ApiError::not_found(format!("no key {id:?}; see `outpost keys list`"))
            })
        })?;
    keys_changed(&state, &auth.user.id).await;
    auth.record(
        "key.remove",
        "ok",
        &key.map_or_else(
            || format!("key-id:{id}"),
            |k| format!("key:{}", k.fingerprint),
        ),
        None,
        key.map(|k| format!("{:?}", k.name)).unwrap_or_default(),
    );
    Ok(Json(outpost_api::Removed { removed: id }))
}
