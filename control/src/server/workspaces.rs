//! Workspaces and builds: create, list, show, start/stop/restart/update/delete, cancel (log
//! streams are in `logs.rs`).

use super::error::{ApiPath, ApiQuery};
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiResult};
pub(super) use super::lookup::{find_workspace, own_build, own_workspace, Access};
use super::AppState;
use crate::store::{now_ms, AgentRow, BuildRow, WorkspaceRow};
use crate::template;

/// DNS label rules: 1-63 of a-z, 0-9 and -, not starting or ending with -.
pub fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn build_view(b: &BuildRow) -> ApiResult<Build> {
    Ok(Build {
        id: b.id.clone(),
        workspace_id: b.workspace_id.clone(),
        number: b.number,
        transition: Transition::parse(&b.transition)
            .ok_or_else(|| ApiError::internal(format!("bad transition {}", b.transition)))?,
        template_version_id: b.template_version_id.clone(),
        template_version: b.template_version,
        status: job_status(b)?,
        job_id: b.job_id.clone(),
        error: b.job_error.clone(),
        then_start: b.then_start,
        reason: b.reason.clone(),
        initiator: b.initiator.clone(),
        created_at: b.created_at,
        started_at: b.started_at,
        completed_at: b.completed_at,
    })
}

fn job_status(b: &BuildRow) -> ApiResult<JobStatus> {
    JobStatus::parse(&b.job_status)
        .ok_or_else(|| ApiError::internal(format!("bad job status {}", b.job_status)))
}

fn lifecycle(s: &str) -> AgentLifecycle {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .unwrap_or(AgentLifecycle::Created)
}

/// The user-visible status: the latest build's transition and job status, and for a start build
/// whether its agent has polled yet (DESIGN.md "Workspace lifecycle").
pub fn derive_status(build: &Build, agent: Option<&AgentRow>) -> WorkspaceStatus {
    use JobStatus as J;
    use WorkspaceStatus as W;
    match (build.transition, build.status) {
        (_, J::Pending) => W::Pending,
        (_, J::Failed) => W::Failed,
        (_, J::Canceling) => W::Canceling,
        (_, J::Canceled) => W::Canceled,
        (Transition::Start, J::Running) => W::Starting,
        (Transition::Stop, J::Running) => W::Stopping,
        (Transition::Delete, J::Running) => W::Deleting,
        (Transition::Start, J::Succeeded) => {
            let connected = agent
                .filter(|a| a.build_id == build.id)
                .is_some_and(|a| a.first_connected_at.is_some());
            if connected {
                W::Running
            } else {
                W::Starting
            }
        }
        (Transition::Stop, J::Succeeded) => W::Stopped,
        (Transition::Delete, J::Succeeded) => W::Deleted,
    }
}

fn agent_view(
    state: &AppState,
    a: &AgentRow,
    build: &Build,
    manifest: &TemplateManifest,
    now: i64,
) -> AgentInfo {
    let hb = state.config.heartbeat_secs as i64 * 1000;
    // The newest sighting may still be in memory, not yet flushed to the store.
    let last_seen = match (a.last_seen_at, state.liveness.last_seen(&a.id)) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let status = if a.revoked_at.is_some() {
        AgentStatus::Disconnected
    } else {
        match (a.first_connected_at, last_seen) {
            // Alive, but no relay tunnel here: it went down, or control restarted since the
            // agent connected. SSH and terminals wait for it to come back (a fresh agent opens
            // its tunnel right after its first poll and reads as connected meanwhile).
            (Some(first), Some(seen))
                if now - seen <= 3 * hb
                    && !state.tunnels.is_up(&a.id)
                    && (first < state.started_at || state.tunnels.was_lost(&a.id)) =>
            {
                AgentStatus::Reconnecting
            }
            (Some(_), Some(seen)) if now - seen <= 3 * hb => AgentStatus::Connected,
            (Some(_), _) => AgentStatus::Disconnected,
            (None, _) => {
                // The connection timeout counts from when the provisioner finished.
                let since = build.completed_at.unwrap_or(a.created_at);
                if build.status == JobStatus::Succeeded
                    && now - since > manifest.agent.connection_timeout_secs as i64 * 1000
                {
                    AgentStatus::Timeout
                } else {
                    AgentStatus::Connecting
                }
            }
        }
    };
    AgentInfo {
        id: a.id.clone(),
        status,
        cert_expires_at: a.cert_expires_at,
        ssh_host_key: a.ssh_host_key.clone(),
        ssh_addr: a.ssh_addr.clone(),
        stats: a
            .stats
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok()),
        lifecycle: lifecycle(&a.lifecycle),
        first_connected_at: a.first_connected_at,
        last_seen_at: last_seen,
        version: a.version.clone(),
    }
}

/// The template manifest a build was made from.
pub(super) async fn build_manifest(
    state: &AppState,
    build_id: &str,
) -> ApiResult<TemplateManifest> {
    let b = state
        .store
        .build(build_id)
        .await?
        .ok_or_else(|| ApiError::internal("build vanished"))?;
    manifest_of(state, &b).await
}

async fn manifest_of(state: &AppState, b: &BuildRow) -> ApiResult<TemplateManifest> {
    let version = state
        .store
        .template_version(&b.template_version_id)
        .await?
        .ok_or_else(|| ApiError::internal("template version vanished"))?;
    serde_json::from_str(&version.manifest).map_err(ApiError::internal)
}

pub(super) async fn workspace_view(state: &AppState, w: &WorkspaceRow) -> ApiResult<Workspace> {
    let b = state
        .store
        .build(&w.latest_build_id)
        .await?
        .ok_or_else(|| ApiError::internal("latest build vanished"))?;
    let build = build_view(&b)?;
    let manifest = manifest_of(state, &b).await?;
    let agent_row = match &w.latest_agent_id {
        Some(id) => state.store.agent(id).await?,
        None => None,
    };
    let status = derive_status(&build, agent_row.as_ref());
    let now = now_ms();
    let agent = agent_row
        .as_ref()
        .map(|a| agent_view(state, a, &build, &manifest, now));
    let mut reasons = Vec::new();
    if matches!(status, WorkspaceStatus::Running | WorkspaceStatus::Starting) {
        if let Some(a) = &agent {
            let expired = a.cert_expires_at.is_some_and(|t| t <= now);
            match a.status {
                AgentStatus::Timeout => reasons.push(format!(
                    "the agent did not connect within {}s of the build finishing (template connection_timeout)",
                    manifest.agent.connection_timeout_secs
                )),
                AgentStatus::Disconnected if !expired => reasons.push(format!(
                    "the agent disconnected: last heard from {}s ago (heartbeats are every {}s); is the workspace's agent process running and can it reach control?",
                    a.last_seen_at.map(|t| (now - t) / 1000).unwrap_or(0),
                    state.config.heartbeat_secs
                )),
                _ => {}
            }
            if expired {
                reasons.push(
                    "the agent's certificate expired before it was renewed, so control refuses it; restart the workspace to issue a new bootstrap token".into(),
                );
            }
            match a.lifecycle {
                AgentLifecycle::StartError => reasons.push("a startup script failed".into()),
                AgentLifecycle::StartTimeout => reasons.push("a startup script timed out".into()),
                _ => {}
            }
        }
    }
    if status == WorkspaceStatus::Failed {
        reasons.push(format!(
            "the last build failed: {}",
            build.error.clone().unwrap_or_default()
        ));
    }
    // Resources: those of the latest successful build (stop keeps the persistent ones).
    let resources: Vec<Resource> = state
        .store
        .resources(&b.id)
        .await?
        .into_iter()
        .map(|r| Resource {
            name: r.name,
            kind: r.kind,
            persistent: r.persistent,
            details: serde_json::from_str(&r.details).unwrap_or_default(),
        })
        .collect();
    let health_of = |slug: &str| {
        agent
            .as_ref()
            .and_then(|a| a.stats.as_ref())
            .and_then(|s| s.apps.iter().find(|x| x.slug == slug))
            .map(|x| x.health)
    };
    let apps = manifest
        .apps
        .iter()
        .map(|a| WorkspaceApp {
            slug: a.slug.clone(),
            display_name: a.display_name.clone(),
            url: a.url.clone().unwrap_or_else(|| {
                super::apps_domain::app_url(state, &w.owner_name, &w.name, &a.slug)
                    .unwrap_or_else(|| format!("/@{}/{}/apps/{}/", w.owner_name, w.name, a.slug))
            }),
            share: a.share,
            health: health_of(&a.slug).unwrap_or(if a.healthcheck.is_some() {
                AppHealth::Initializing
            } else {
                AppHealth::Disabled
            }),
        })
        .collect();
    let isolation = resources
        .iter()
        .find_map(|r| r.details.get("isolation").cloned());
    let schedule = super::schedule::workspace_schedule(w, status, build.completed_at);
    Ok(Workspace {
        schedule,
        apps,
        isolation,
        id: w.id.clone(),
        name: w.name.clone(),
        owner: w.owner_name.clone(),
        template: w.template_name.clone(),
        template_version: build.template_version,
        outdated: w.active_version_id.as_deref() != Some(build.template_version_id.as_str()),
        status,
        health: Health {
            healthy: reasons.is_empty(),
            reasons,
        },
        parameters: serde_json::from_str(&w.parameters).unwrap_or_default(),
        latest_build: build,
        agent,
        resources,
        created_at: w.created_at,
    })
}

/// Without isolation (control not root) every `local` workspace runs as one Unix user and can
/// read every other: one person's machine. A second user's local workspace is refused unless
/// the admin started the server with `--allow-unisolated-users`.
async fn refuse_unisolated_second_user(
    state: &AppState,
    manifest: &TemplateManifest,
    user_id: &str,
) -> ApiResult<()> {
    use crate::provisioner::local::Isolation;
    if manifest.provisioner != "local"
        || state.config.isolation != Isolation::None
        || state.config.allow_unisolated_users
    {
        return Ok(());
    }
    let others = state
        .store
        .list_workspaces(None)
        .await?
        .into_iter()
        .find(|w| w.owner_id != user_id);
    if let Some(w) = others {
        return Err(ApiError::conflict(format!(
            "this server runs local workspaces without isolation (it is not root), so they could read each other's files, and {} already has workspaces here: run the server as root for a Unix user per workspace, use a docker template, or have the admin pass --allow-unisolated-users",
            w.owner_name
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces",
    tag = "workspaces",
    summary = "Create a workspace (its first build starts it)",
    request_body = CreateWorkspaceRequest,
    responses((status = 201, description = "OK", body = Workspace)),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateWorkspaceRequest>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    if !is_dns_label(&req.name) {
        return Err(ApiError::bad_request(format!(
            "invalid workspace name {:?}: use 1-63 lowercase letters, digits and -, not starting or ending with -",
            req.name
        )));
    }
    let nf = || {
        ApiError::not_found(format!(
            "no template {:?}; see `outpost templates list`",
            req.template
        ))
    };
    let t = state
        .store
        .template_by_name(&req.template)
        .await?
        .ok_or_else(nf)?;
    if !super::teams::may_use(&state, &auth, &t).await? {
        return Err(nf());
    }
    let version_id = t.active_version_id.clone().ok_or_else(|| {
        ApiError::conflict(format!("template {:?} has no active version", t.name))
    })?;
    let version = state
        .store
        .template_version(&version_id)
        .await?
        .ok_or_else(|| ApiError::internal("active version vanished"))?;
    let manifest: TemplateManifest =
        serde_json::from_str(&version.manifest).map_err(ApiError::internal)?;
    let given = super::account::with_account_dotfiles(&manifest, &auth.user, &req.parameters, None);
    let params = template::resolve_parameters(&manifest, &given, None)
        .map_err(|e| account_hint(e, &given, &req.parameters))?;
    refuse_unisolated_second_user(&state, &manifest, &auth.user.id).await?;
    super::teams::check(
        &state,
        &auth.user,
        true,
        None,
        manifest.cost,
        &format!("workspace {:?}", req.name),
    )
    .await?;
    let id = state
        .store
        .create_workspace(
            &auth.user.id,
            &req.name,
            &t.id,
            &version_id,
            &manifest.provisioner,
            &serde_json::to_string(&params).map_err(ApiError::internal)?,
        )
        .await?;
    state.job_queued();
    let w = state
        .store
        .workspace_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::internal("workspace vanished"))?;
    auth.record(
        "workspace.create",
        "ok",
        &super::audit::workspace_target(&w.owner_name, &w.name),
        Some(&w.id),
        format!("template {} version {}", t.name, version.version),
    );
    Ok((StatusCode::CREATED, Json(workspace_view(&state, &w).await?)))
}

/// A parameter error, saying so when a value came from the account's dotfiles setting.
fn account_hint(
    e: String,
    used: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> ApiError {
    if used.len() != given.len() {
        ApiError::bad_request(format!(
            "{e} (your account's dotfiles repository: change it with `outpost users dotfiles`, or give -p dotfiles_uri=...)"
        ))
    } else {
        ApiError::bad_request(e)
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    /// Everyone's workspaces (owners and auditors).
    #[serde(default)]
    all: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/workspaces",
    tag = "workspaces",
    summary = "One's workspaces (or everyone's)",
    params(
        ("all" = Option<bool>, Query, description = "Everyone's workspaces (owners and auditors)"),
    ),
    responses((status = 200, description = "OK", body = Vec<Workspace>)),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Workspace>>> {
    let rows = if q.all {
        super::authz::require(
            &auth,
            super::authz::Right::ReadAllWorkspaces,
            "workspace.list_all",
            None,
        )?;
        state.store.list_workspaces(None).await?
    } else {
        state.store.list_workspaces(Some(&auth.user.id)).await?
    };
    let mut out = Vec::with_capacity(rows.len());
    for w in rows.iter().filter(|w| auth.may_touch(&w.id)) {
        out.push(workspace_view(&state, w).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{name}",
    tag = "workspaces",
    summary = "A workspace; NAME or OWNER/NAME (URL-encoded)",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Workspace)),
)]
pub(super) async fn show(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Workspace>> {
    let w = find_workspace(&state, &auth, &name, Access::Read).await?;
    Ok(Json(workspace_view(&state, &w).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces/{name}/builds",
    tag = "workspaces",
    summary = "Start, stop, restart, update or delete a workspace",
    request_body = BuildRequest,
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 201, description = "OK", body = Build)),
)]
pub(super) async fn build(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<BuildRequest>,
) -> ApiResult<(StatusCode, Json<Build>)> {
    use WorkspaceAction as A;
    use WorkspaceStatus as W;
    let w = own_workspace(&state, &auth, &name).await?;
    if auth.scoped() && !matches!(req.action, A::Stop | A::Restart) {
        return Err(ApiError::forbidden(
            "a workspace credential may only stop or restart its own workspace; run `outpost login` for a full session",
        ));
    }
    let view = workspace_view(&state, &w).await?;
    let status = view.status;
    let latest = &view.latest_build;
    if !latest.status.is_final() {
        return Err(ApiError::conflict(format!(
            "workspace {name:?} is {status}: wait for its build to finish or cancel it (`outpost cancel {name}`)"
        )));
    }
    let is_up = matches!(status, W::Running | W::Starting);
    let is_down = matches!(status, W::Stopped | W::Failed | W::Canceled);
    // (transition, then_start, use the template's active version)
    let (transition, then_start, to_active) = match req.action {
        A::Start if is_down => ("start", false, false),
        A::Stop if is_up || matches!(status, W::Failed | W::Canceled) => ("stop", false, false),
        A::Restart if is_up || status == W::Failed => ("stop", true, false),
        A::Update if is_up => ("stop", true, true),
        A::Update if is_down => ("start", false, true),
        A::Delete if is_up || is_down => ("delete", false, false),
        _ => {
            return Err(ApiError::conflict(format!(
                "cannot {} workspace {name:?}: it is {status}",
                serde_json::to_value(req.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )))
        }
    };
    if transition == "start" || then_start {
        if let Some(since) = w.times.dormant_at {
            return Err(ApiError::conflict(format!(
                "workspace {name:?} is dormant (unused until {}): activate it first with `outpost activate {name}`",
                crate::schedule::fmt_time(since)
            )));
        }
    }
    let version_id = if to_active {
        w.active_version_id
            .clone()
            .ok_or_else(|| ApiError::conflict("the template has no active version"))?
    } else {
        latest.template_version_id.clone()
    };
    let version = state
        .store
        .template_version(&version_id)
        .await?
        .ok_or_else(|| ApiError::internal("template version vanished"))?;
    let manifest: TemplateManifest =
        serde_json::from_str(&version.manifest).map_err(ApiError::internal)?;
    if transition == "start" || then_start {
        // The quota is the workspace owner's, whoever starts it.
        let owner = state
            .store
            .user_by_username(&w.owner_name)
            .await?
            .ok_or_else(|| ApiError::internal("owner vanished"))?;
        super::teams::check(
            &state,
            &owner,
            false,
            Some(&w.id),
            manifest.cost,
            &format!("starting {name:?}"),
        )
        .await?;
    }
    let params_json = if transition == "start" || then_start {
        let previous: BTreeMap<String, String> = view.parameters.clone();
        let given = if w.owner_id == auth.user.id {
            super::account::with_account_dotfiles(
                &manifest,
                &auth.user,
                &req.parameters,
                Some(&previous),
            )
        } else {
            req.parameters.clone()
        };
        let p = template::resolve_parameters(&manifest, &given, Some(&previous))
            .map_err(|e| account_hint(e, &given, &req.parameters))?;
        Some(serde_json::to_string(&p).map_err(ApiError::internal)?)
    } else if !req.parameters.is_empty() {
        return Err(ApiError::bad_request(
            "parameters can only be given with start, restart or update",
        ));
    } else {
        None
    };
    let b = queue(
        &state,
        &w,
        Queued {
            after: latest.number,
            transition,
            version_id: &version_id,
            then_start,
            actor: Some(&auth.user),
            provisioner: &manifest.provisioner,
            params: params_json.as_deref(),
            reason: "initiator",
        },
    )
    .await?;
    auth.record(
        "workspace.build",
        "ok",
        &super::audit::workspace_target(&w.owner_name, &w.name),
        Some(&w.id),
        format!(
            "{}/{}: {} (build #{}, {transition})",
            w.owner_name,
            w.name,
            serde_json::to_value(req.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            b.number
        ),
    );
    Ok((StatusCode::CREATED, Json(build_view(&b)?)))
}

/// A build to queue after build number `after`.
pub(super) struct Queued<'a> {
    pub after: i64,
    pub transition: &'a str,
    pub version_id: &'a str,
    pub then_start: bool,
    /// The person asking; `None` for the scheduler.
    pub actor: Option<&'a crate::store::UserRow>,
    pub provisioner: &'a str,
    pub params: Option<&'a str>,
    /// `initiator`, or the scheduler's reason.
    pub reason: &'a str,
}

/// Queues a build; for a stop or delete, tells the agent to shut down and revokes it at once.
pub(super) async fn queue(
    state: &AppState,
    w: &WorkspaceRow,
    q: Queued<'_>,
) -> ApiResult<BuildRow> {
    let workspace_id = w.id.as_str();
    let build_id = state
        .store
        .queue_build(
            workspace_id,
            q.after,
            q.transition,
            q.version_id,
            q.then_start,
            q.actor.map(|a| a.id.as_str()),
            q.provisioner,
            q.params,
            q.reason,
        )
        .await?;
    if q.transition != "start" {
        // Tell the agent to shut down, then revoke it at once: it may still collect that stop
        // order, nothing else. The provisioner cleans up whatever remains.
        for agent_id in state.store.live_agents(workspace_id).await? {
            state.store.enqueue_command(&agent_id, "stop").await?;
        }
        let by = match q.actor {
            Some(a) => format!("requested by {}", a.username),
            None => format!("by the scheduler ({})", q.reason),
        };
        state
            .revoke_workspace_agents(workspace_id, &format!("{} {by}", q.transition))
            .await?;
    }
    state.job_queued();
    state.bump_progress();
    state
        .store
        .build(&build_id)
        .await?
        .ok_or_else(|| ApiError::internal("build vanished"))
}

/// Stops a workspace that is up (a suspended owner's, say); its agents are revoked whatever
/// its state, so nothing of it keeps talking to control. True when a stop was queued.
pub(super) async fn stop_now(
    state: &AppState,
    w: &WorkspaceRow,
    actor: &crate::store::UserRow,
    reason: &str,
) -> ApiResult<bool> {
    let view = workspace_view(state, w).await?;
    let latest = &view.latest_build;
    let up = matches!(
        view.status,
        WorkspaceStatus::Running | WorkspaceStatus::Starting
    );
    if !up || !latest.status.is_final() {
        state.revoke_workspace_agents(&w.id, reason).await?;
        return Ok(false);
    }
    let provisioner = match state
        .store
        .template_version(&latest.template_version_id)
        .await?
    {
        Some(v) => {
            serde_json::from_str::<TemplateManifest>(&v.manifest)
                .map_err(ApiError::internal)?
                .provisioner
        }
        None => return Err(ApiError::internal("template version vanished")),
    };
    queue(
        state,
        w,
        Queued {
            after: latest.number,
            transition: "stop",
            version_id: &latest.template_version_id,
            then_start: false,
            actor: Some(actor),
            provisioner: &provisioner,
            params: None,
            reason: "initiator",
        },
    )
    .await?;
    Ok(true)
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces/{name}/cancel",
    tag = "workspaces",
    summary = "Cancel the workspace's running build",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Build)),
)]
pub(super) async fn cancel(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Build>> {
    let w = own_workspace(&state, &auth, &name).await?;
    let b = state
        .store
        .build(&w.latest_build_id)
        .await?
        .ok_or_else(|| ApiError::internal("build vanished"))?;
    let st = job_status(&b)?;
    if !matches!(st, JobStatus::Pending | JobStatus::Running)
        || !state.store.cancel_job(&b.job_id).await?
    {
        return Err(ApiError::conflict(format!(
            "workspace {name:?} has no pending or running build to cancel (its build is {})",
            st.as_str()
        )));
    }
    state
        .store
        .append_log(&b.job_id, "cancel", "warn", "build canceled by user")
        .await?;
    auth.record(
        "workspace.cancel",
        "ok",
        &super::audit::workspace_target(&w.owner_name, &w.name),
        Some(&w.id),
        format!("build #{} ({})", b.number, b.transition),
    );
    state.touch(&format!("job:{}", b.job_id));
    state.bump_progress();
    let b = state
        .store
        .build(&b.id)
        .await?
        .ok_or_else(|| ApiError::internal("build vanished"))?;
    Ok(Json(build_view(&b)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}",
    tag = "workspaces",
    summary = "A build",
    params(
        ("id" = String, Path, description = "An id"),
    ),
    responses((status = 200, description = "OK", body = Build)),
)]
pub(super) async fn get_build(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Build>> {
    let b = own_build(&state, &auth, &id).await?;
    Ok(Json(build_view(&b)?))
}
