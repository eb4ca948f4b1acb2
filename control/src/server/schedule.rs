//! Schedule settings through the API: a template's schedule (admins), a user's quiet hours, a
//! workspace's autostart, autostop, extension and activation; and the schedule part of a
//! workspace's view. What the scheduler does with them is in `scheduler.rs`.

use super::error::ApiPath;
use axum::extract::State;
use axum::Json;
use outpost_api::*;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::schedule::{self, fmt_duration, fmt_time, TzCron};
use crate::store::{now_ms, UserRow, WorkspaceRow};

/// The quiet hours in force for `user`: theirs when the server allows custom ones.
pub(super) fn quiet_hours_of(state: &AppState, user: &UserRow) -> TzCron {
    user.quiet_hours
        .as_deref()
        .filter(|_| state.config.allow_custom_quiet_hours)
        .and_then(|s| TzCron::parse_quiet_hours(s).ok())
        .or_else(|| TzCron::parse_quiet_hours(&state.config.default_quiet_hours).ok())
        .unwrap_or_else(TzCron::utc_midnight)
}

fn quiet_view(state: &AppState, user: &UserRow) -> QuietHours {
    let q = quiet_hours_of(state, user);
    QuietHours {
        schedule: q.text.clone(),
        custom: user.quiet_hours.clone(),
        user_can_set: state.config.allow_custom_quiet_hours,
        timezone: q.zone.clone(),
        next_at: q.next_after(now_ms()),
    }
}

/// `GET /api/v1/users/me/quiet-hours`.
#[utoipa::path(
    get,
    path = "/api/v1/users/me/quiet-hours",
    tag = "schedules",
    summary = "One's quiet hours",
    responses((status = 200, description = "OK", body = QuietHours)),
)]
pub(super) async fn get_quiet_hours(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<QuietHours>> {
    Ok(Json(quiet_view(&state, &auth.user)))
}

/// `PUT /api/v1/users/me/quiet-hours`.
#[utoipa::path(
    put,
    path = "/api/v1/users/me/quiet-hours",
    tag = "schedules",
    summary = "Set one's quiet hours",
    request_body = SetQuietHours,
    responses((status = 200, description = "OK", body = QuietHours)),
)]
pub(super) async fn set_quiet_hours(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<SetQuietHours>,
) -> ApiResult<Json<QuietHours>> {
    let text = match req.schedule.as_deref() {
        Some(s) => Some(
            TzCron::parse_quiet_hours(s)
                .map_err(ApiError::bad_request)?
                .text,
        ),
        None => None,
    };
    state
        .store
        .set_quiet_hours(&auth.user.id, text.as_deref())
        .await?;
    auth.record(
        "user.quiet_hours",
        "ok",
        &format!("user:{}", auth.user.username),
        None,
        text.clone().unwrap_or_else(|| "default".into()),
    );
    let mut user = auth.user.clone();
    user.quiet_hours = text;
    recompute_required_stops(&state, None, Some(&user.id)).await?;
    Ok(Json(quiet_view(&state, &user)))
}

/// `PATCH /api/v1/templates/{name}/schedule` (admins).
#[utoipa::path(
    patch,
    path = "/api/v1/templates/{name}/schedule",
    tag = "schedules",
    summary = "Change a template's scheduling policy",
    request_body = TemplateScheduleUpdate,
    params(
        ("name" = String, Path, description = "A template's name"),
    ),
    responses((status = 200, description = "OK", body = TemplateSchedule)),
)]
pub(super) async fn edit_template_schedule(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<TemplateScheduleUpdate>,
) -> ApiResult<Json<TemplateSchedule>> {
    let target = format!("template:{name}");
    super::authz::require(
        &auth,
        super::authz::Right::ManageTemplates,
        "template.schedule",
        Some(&target),
    )?;
    let t = state.store.template_by_name(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no template {name:?}; see `outpost templates list`"
        ))
    })?;
    let current = schedule::template_schedule(t.schedule.as_deref());
    let new = schedule::apply_update(&current, &req).map_err(ApiError::bad_request)?;
    let json = serde_json::to_string(&new).map_err(ApiError::internal)?;
    state.store.set_template_schedule(&t.id, &json).await?;
    if new.autostop_requirement != current.autostop_requirement {
        recompute_required_stops(&state, Some(&t.id), None).await?;
    }
    auth.record("template.schedule", "ok", &target, None, json);
    Ok(Json(new))
}

async fn owned(state: &AppState, auth: &AuthUser, name: &str) -> ApiResult<WorkspaceRow> {
    super::workspaces::own_workspace(state, auth, name).await
}

/// `PUT /api/v1/workspaces/{name}/autostart`.
#[utoipa::path(
    put,
    path = "/api/v1/workspaces/{name}/autostart",
    tag = "schedules",
    summary = "Set a workspace's autostart",
    request_body = SetAutostart,
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Workspace)),
)]
pub(super) async fn set_autostart(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SetAutostart>,
) -> ApiResult<Json<Workspace>> {
    let w = owned(&state, &auth, &name).await?;
    let t = schedule::template_schedule(w.template_schedule.as_deref());
    let (text, next) = match req.schedule.as_deref() {
        Some(s) => {
            let c = schedule::check_autostart(s, &t).map_err(ApiError::bad_request)?;
            let next = c.next_after(now_ms());
            (Some(c.text), next)
        }
        None => (None, None),
    };
    state
        .store
        .set_autostart(&w.id, text.as_deref(), next)
        .await?;
    audit_change(&auth, &w, "autostart", text.as_deref().unwrap_or("off"));
    view(&state, &w.id).await
}

/// `PUT /api/v1/workspaces/{name}/autostop`.
#[utoipa::path(
    put,
    path = "/api/v1/workspaces/{name}/autostop",
    tag = "schedules",
    summary = "Set a workspace's autostop",
    request_body = SetAutostop,
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Workspace)),
)]
pub(super) async fn set_autostop(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SetAutostop>,
) -> ApiResult<Json<Workspace>> {
    let w = owned(&state, &auth, &name).await?;
    let t = schedule::template_schedule(w.template_schedule.as_deref());
    if !t.allow_user_autostop {
        return Err(ApiError::bad_request(
            "this template does not let users set their autostop; it stops workspaces after its default",
        ));
    }
    if let Some(v) = req.autostop_ms {
        if !(0..=366 * 86_400_000).contains(&v) {
            return Err(ApiError::bad_request(
                "autostop must be between 0 (never) and 366 days",
            ));
        }
    }
    state.store.set_autostop(&w.id, req.autostop_ms).await?;
    audit_change(
        &auth,
        &w,
        "autostop",
        &req.autostop_ms
            .map(|v| format!("{v} ms"))
            .unwrap_or_else(|| "template default".into()),
    );
    view(&state, &w.id).await
}

/// `POST /api/v1/workspaces/{name}/extend`: the deadline becomes now + the duration (within
/// the autostop requirement's next stop).
#[utoipa::path(
    post,
    path = "/api/v1/workspaces/{name}/extend",
    tag = "schedules",
    summary = "Move a running workspace's stop deadline",
    request_body = ExtendRequest,
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Workspace)),
)]
pub(super) async fn extend(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ExtendRequest>,
) -> ApiResult<Json<Workspace>> {
    let w = owned(&state, &auth, &name).await?;
    if !(60_000..=366 * 86_400_000).contains(&req.duration_ms) {
        return Err(ApiError::bad_request(
            "extend by at least a minute and at most 366 days",
        ));
    }
    if w.times.deadline.is_none() {
        return Err(ApiError::conflict(format!(
            "workspace {name:?} has no deadline to extend: it is not running, or it has no autostop"
        )));
    }
    let target = now_ms() + req.duration_ms;
    if let Some(max) = w.times.max_deadline {
        if target > max {
            return Err(ApiError::bad_request(format!(
                "the template's autostop requirement stops this workspace at {} (your quiet hours); extend by at most {}",
                fmt_time(max),
                fmt_duration(max - now_ms())
            )));
        }
    }
    if !state.store.set_deadline(&w.id, target).await? {
        return Err(ApiError::conflict(format!(
            "workspace {name:?} stopped meanwhile"
        )));
    }
    audit_change(&auth, &w, "deadline", &fmt_time(target));
    view(&state, &w.id).await
}

/// `POST /api/v1/workspaces/{name}/activate`: a dormant workspace may start again.
#[utoipa::path(
    post,
    path = "/api/v1/workspaces/{name}/activate",
    tag = "schedules",
    summary = "Bring a dormant workspace back",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Workspace)),
)]
pub(super) async fn activate(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Workspace>> {
    let w = owned(&state, &auth, &name).await?;
    if !state.store.activate(&w.id, now_ms()).await? {
        return Err(ApiError::conflict(format!(
            "workspace {name:?} is not dormant"
        )));
    }
    auth.record(
        "workspace.activate",
        "ok",
        &super::audit::workspace_target(&w.owner_name, &w.name),
        Some(&w.id),
        format!("{} activated by {}", w.name, auth.user.username),
    );
    view(&state, &w.id).await
}

fn audit_change(auth: &AuthUser, w: &WorkspaceRow, what: &str, value: &str) {
    auth.record(
        &format!("workspace.{what}"),
        "ok",
        &super::audit::workspace_target(&w.owner_name, &w.name),
        Some(&w.id),
        format!("{}: {what} {value}", w.name),
    );
}

async fn view(state: &AppState, id: &str) -> ApiResult<Json<Workspace>> {
    let w = state
        .store
        .workspace_by_id(id)
        .await?
        .ok_or_else(|| ApiError::internal("workspace vanished"))?;
    Ok(Json(super::workspaces::workspace_view(state, &w).await?))
}

/// The schedule part of a workspace's view.
pub(super) fn workspace_schedule(
    w: &WorkspaceRow,
    status: WorkspaceStatus,
    failed_at: Option<i64>,
) -> WorkspaceSchedule {
    let t = schedule::template_schedule(w.template_schedule.as_deref());
    let times = schedule::WorkspaceTimes {
        running: matches!(status, WorkspaceStatus::Running | WorkspaceStatus::Starting),
        stopped: status == WorkspaceStatus::Stopped,
        failed_at: failed_at.filter(|_| status == WorkspaceStatus::Failed),
        deadline: w.times.deadline,
        max_deadline: w.times.max_deadline,
        next_autostart_at: w.times.next_start_at.filter(|_| t.allow_user_autostart),
        last_used_at: w.times.last_used_at,
        dormant_at: w.times.dormant_at,
    };
    WorkspaceSchedule {
        autostart: w.times.autostart.clone(),
        autostop_ms: w.times.autostop_ms,
        effective_autostop_ms: schedule::effective_autostop(&t, w.times.autostop_ms),
        deadline: w.times.deadline,
        max_deadline: w.times.max_deadline,
        next_autostart_at: times.next_autostart_at,
        last_used_at: w.times.last_used_at,
        dormant_at: w.times.dormant_at,
        deleting_at: w
            .times
            .dormant_at
            .filter(|_| t.dormancy_auto_deletion_ms > 0)
            .map(|d| d + t.dormancy_auto_deletion_ms),
        next: schedule::next_action(&t, &times),
    }
}

/// The autostop requirement or someone's quiet hours changed: running workspaces (of the
/// template, or of the user) stop at their new required time. A deadline that was the old
/// required stop becomes the autostop's (from now) or the new required stop.
async fn recompute_required_stops(
    state: &AppState,
    template_id: Option<&str>,
    owner_id: Option<&str>,
) -> ApiResult<()> {
    let now = now_ms();
    let mut owners: std::collections::HashMap<String, Option<UserRow>> = Default::default();
    let rows = state.store.running_of(template_id, owner_id).await?;
    let templates: std::collections::HashMap<String, TemplateSchedule> = state
        .store
        .template_schedules()
        .await?
        .into_iter()
        .map(|(id, _, s)| (id, schedule::template_schedule(s.as_deref())))
        .collect();
    for w in rows {
        if !owners.contains_key(&w.owner_name) {
            let u = state.store.user_by_username(&w.owner_name).await?;
            owners.insert(w.owner_name.clone(), u);
        }
        let Some(Some(owner)) = owners.get(&w.owner_name) else {
            continue;
        };
        let t = templates.get(&w.template_id).cloned().unwrap_or_default();
        let quiet = quiet_hours_of(state, owner);
        let max = schedule::next_required_stop(&quiet, t.autostop_requirement, now);
        let own = state
            .store
            .workspace_by_id(&w.id)
            .await?
            .and_then(|x| x.times.autostop_ms);
        let autostop = schedule::effective_autostop(&t, own);
        // The deadline activity and autostop set, if it was not the old required stop.
        let free = w
            .deadline
            .filter(|d| Some(*d) != w.max_deadline)
            .or_else(|| (autostop > 0).then(|| now + autostop));
        let deadline = match (free, max) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        };
        state
            .store
            .set_deadlines(&w.id, w.build_number, deadline, max)
            .await?;
    }
    Ok(())
}

/// A start build succeeded: the workspace's deadline and the autostop requirement's stop.
pub(super) async fn on_started(
    state: &AppState,
    workspace_id: &str,
    build_number: i64,
) -> ApiResult<()> {
    let Some(w) = state.store.workspace_by_id(workspace_id).await? else {
        return Ok(());
    };
    let Some(owner) = state.store.user_by_username(&w.owner_name).await? else {
        return Ok(());
    };
    let t = schedule::template_schedule(w.template_schedule.as_deref());
    let now = now_ms();
    let quiet = quiet_hours_of(state, &owner);
    let max = schedule::next_required_stop(&quiet, t.autostop_requirement, now);
    let (deadline, max) = schedule::deadlines_at_start(
        now,
        schedule::effective_autostop(&t, w.times.autostop_ms),
        max,
    );
    state
        .store
        .set_deadlines(workspace_id, build_number, deadline, max)
        .await?;
    Ok(())
}
