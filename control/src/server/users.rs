//! Users, API tokens, first-run setup and templates.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::{
    ct_eq, hash_password, random_secret, sha256_hex, verify_password, AuthUser, API_TOKEN_PREFIX,
};
use super::error::{store_or, ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{now_ms, TemplateRow, TemplateVersionRow, UserRow};
use crate::template;

const SETUP_TOKEN_KEY: &str = "setup_token_hash";
const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;
const MAX_TOKEN_LIFETIME_SECS: u64 = 365 * 24 * 3600;

/// Templates compiled into the binary, pushed on first start.
const BUILTIN_TEMPLATES: &[(&str, &[(&str, &str)])] = &[(
    "base",
    &[(
        "template.toml",
        include_str!("../../../templates/base/template.toml"),
    )],
)];

pub(super) async fn ensure_builtin_templates(state: &AppState) -> anyhow::Result<()> {
    for (name, files) in BUILTIN_TEMPLATES {
        if state.store.template_by_name(name).await?.is_some() {
            continue;
        }
        let files: BTreeMap<String, String> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        let manifest = template::parse(&files)
            .map_err(|e| anyhow::anyhow!("built-in template {name}: {e}"))?;
        let res = state
            .store
            .push_template_version(
                name,
                &manifest.description,
                &serde_json::to_string(&manifest)?,
                &serde_json::to_string(&files)?,
                true,
                None,
            )
            .await;
        match res {
            Ok(_) | Err(crate::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

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
    let (token, info) = issue_token(&state, &user, "cli", DEFAULT_TOKEN_LIFETIME_SECS).await?;
    Ok((
        StatusCode::CREATED,
        Json(LoginResponse {
            token,
            token_id: info.id,
            user: user_view(&user),
        }),
    ))
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
    let (token, info) = issue_token(&state, &user, "cli", DEFAULT_TOKEN_LIFETIME_SECS).await?;
    Ok(Json(LoginResponse {
        token,
        token_id: info.id,
        user: user_view(&user),
    }))
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

pub(super) async fn create_token(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    if auth.scoped {
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
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse { token, info }),
    ))
}

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

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state
        .store
        .revoke_token(&auth.user.id, &id)
        .await
        .map_err(|e| {
            store_or(e, || {
                ApiError::not_found(format!("no token {id:?}; see `outpost tokens list`"))
            })
        })?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}

// ---------------------------------------------------------------- templates

fn template_view(t: &TemplateRow) -> Template {
    Template {
        id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        active_version: t.active_version,
        active_version_id: t.active_version_id.clone(),
        created_at: t.created_at,
    }
}

pub(super) fn version_view(v: &TemplateVersionRow) -> ApiResult<TemplateVersion> {
    let manifest: TemplateManifest =
        serde_json::from_str(&v.manifest).map_err(ApiError::internal)?;
    let files: BTreeMap<String, String> =
        serde_json::from_str(&v.files).map_err(ApiError::internal)?;
    Ok(TemplateVersion {
        id: v.id.clone(),
        template_id: v.template_id.clone(),
        template_name: v.template_name.clone(),
        version: v.version,
        active: v.active,
        manifest,
        files: files.into_keys().collect(),
        created_at: v.created_at,
    })
}

pub(super) fn validate_template_name(name: &str) -> ApiResult<()> {
    if !crate::server::workspaces::is_dns_label(name) {
        return Err(ApiError::bad_request(format!(
            "invalid template name {name:?}: use 1-63 lowercase letters, digits and -, not starting or ending with -"
        )));
    }
    Ok(())
}

pub(super) async fn push_template(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<PushTemplateRequest>,
) -> ApiResult<(StatusCode, Json<TemplateVersion>)> {
    if !auth.user.admin {
        return Err(ApiError::forbidden("only admins can push templates"));
    }
    validate_template_name(&req.name)?;
    let manifest = template::parse(&req.files)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_template", e.to_string()))?;
    let row = state
        .store
        .push_template_version(
            &req.name,
            &manifest.description,
            &serde_json::to_string(&manifest).map_err(ApiError::internal)?,
            &serde_json::to_string(&req.files).map_err(ApiError::internal)?,
            req.activate,
            Some(&auth.user.id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(version_view(&row)?)))
}

pub(super) async fn list_templates(
    State(state): State<AppState>,
    _auth: AuthUser,
) -> ApiResult<Json<Vec<Template>>> {
    let rows = state.store.list_templates().await?;
    Ok(Json(rows.iter().map(template_view).collect()))
}

pub(super) async fn show_template(
    State(state): State<AppState>,
    _auth: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<TemplateDetail>> {
    let t = state.store.template_by_name(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no template {name:?}; see `outpost templates list`"
        ))
    })?;
    let versions = state
        .store
        .template_versions(&t.id)
        .await?
        .iter()
        .map(version_view)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(TemplateDetail {
        template: template_view(&t),
        versions,
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    action: Option<String>,
    outcome: Option<String>,
    workspace: Option<String>,
    since: Option<i64>,
    limit: Option<i64>,
}

/// Audit events, newest first (admins only). `workspace` takes a workspace id.
pub(super) async fn audit(
    State(state): State<AppState>,
    auth: AuthUser,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEventView>>> {
    if !auth.user.admin {
        return Err(ApiError::forbidden("only admins can read the audit log"));
    }
    let f = crate::store::AuditFilter {
        action: q.action,
        outcome: q.outcome,
        workspace_id: q.workspace,
        since: q.since,
        limit: q.limit.unwrap_or(100),
    };
    let rows = state.store.list_audit(&f).await?;
    Ok(Json(
        rows.into_iter()
            .map(|e| AuditEventView {
                id: e.id,
                created_at: e.created_at,
                action: e.action,
                outcome: e.outcome,
                actor: e.actor,
                workspace_id: e.workspace_id,
                agent_id: e.agent_id,
                remote_addr: e.remote_addr,
                details: e.details,
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------- git SSH key

/// The caller's git SSH key (made on first use); add the public key to your git host.
pub(super) async fn git_ssh_key(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<GitSshKey>> {
    let (_, public_key) = state
        .store
        .git_key(&auth.user.id, || {
            outpost_common::sshkey::new_ed25519(&format!("outpost-{}", auth.user.username))
        })
        .await?;
    Ok(Json(GitSshKey {
        public_key,
        private_key: None,
    }))
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

pub(super) async fn remove_ssh_key(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
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
    Ok(Json(serde_json::json!({ "removed": id })))
}
