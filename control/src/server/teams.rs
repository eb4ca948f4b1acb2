//! Organizations, groups, templates restricted to groups, and quotas: the routes, who may use
//! a template, and the quota check made before a workspace is created or started.

use super::error::ApiPath;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::AuthUser;
use super::authz::{can, require, Right};
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{GroupRow, TemplateRow, UserRow};

const QUOTA_KEY: &str = "quota.workspaces_per_user";

fn group_view(g: &GroupRow) -> Group {
    Group {
        id: g.id.clone(),
        name: g.name.clone(),
        organization: g.organization.clone(),
        quota_budget: g.quota_budget,
        source: g.source.clone(),
        members: g.members.clone(),
    }
}

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    if !super::workspaces::is_dns_label(name) {
        return Err(ApiError::bad_request(format!(
            "invalid {what} name {name:?}: use 1-63 lowercase letters, digits and -"
        )));
    }
    Ok(())
}

fn check_budget(b: Option<i64>) -> ApiResult<()> {
    if b.is_some_and(|b| !(0..=1_000_000_000).contains(&b)) {
        return Err(ApiError::bad_request(
            "a quota budget is between 0 and 1000000000 cost units (or none)",
        ));
    }
    Ok(())
}

async fn org_id(state: &AppState, name: Option<&str>) -> ApiResult<String> {
    let name = name.unwrap_or("default");
    state.store.organization_id(name).await?.ok_or_else(|| {
        ApiError::not_found(format!("no organization {name:?}; see `outpost orgs list`"))
    })
}

async fn group(state: &AppState, name: &str) -> ApiResult<GroupRow> {
    // `ORG/NAME`, or a group of the default organization.
    let (org, name) = name.split_once('/').unwrap_or(("default", name));
    let org = org_id(state, Some(org)).await?;
    state
        .store
        .group_by_name(&org, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no group {name:?}; see `outpost groups list`")))
}

async fn user(state: &AppState, username: &str) -> ApiResult<UserRow> {
    state
        .store
        .user_by_username(username)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no user {username:?}; see `outpost users list`"))
        })
}

fn audit(_state: &AppState, auth: &AuthUser, action: &str, target: &str, details: String) {
    auth.record(action, "ok", target, None, details);
}

/// `GET /api/v1/groups` (those who may list users).
#[utoipa::path(
    get,
    path = "/api/v1/groups",
    tag = "groups",
    summary = "Groups",
    responses((status = 200, description = "OK", body = Vec<Group>)),
)]
pub(super) async fn list_groups(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<Group>>> {
    require(&auth, Right::ReadUsers, "group.list", None)?;
    Ok(Json(
        state
            .store
            .list_groups()
            .await?
            .iter()
            .map(group_view)
            .collect(),
    ))
}

/// `POST /api/v1/groups` (user admins).
#[utoipa::path(
    post,
    path = "/api/v1/groups",
    tag = "groups",
    summary = "Create a group",
    request_body = CreateGroupRequest,
    responses((status = 201, description = "OK", body = Group)),
)]
pub(super) async fn create_group(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    require(
        &auth,
        Right::ManageUsers,
        "group.create",
        Some(&format!("group:{}", req.name)),
    )?;
    check_name("group", &req.name)?;
    check_budget(req.quota_budget)?;
    let org = org_id(&state, req.organization.as_deref()).await?;
    state
        .store
        .create_group(&org, &req.name, req.quota_budget, "local")
        .await?;
    audit(
        &state,
        &auth,
        "group.create",
        &format!("group:{}", req.name),
        format!("{} (budget {:?})", req.name, req.quota_budget),
    );
    let g = state
        .store
        .group_by_name(&org, &req.name)
        .await?
        .ok_or_else(|| ApiError::internal("group vanished"))?;
    Ok((StatusCode::CREATED, Json(group_view(&g))))
}

/// `DELETE /api/v1/groups/{name}` (user admins).
#[utoipa::path(
    delete,
    path = "/api/v1/groups/{name}",
    tag = "groups",
    summary = "Delete a group",
    params(
        ("name" = String, Path, description = "A group's name"),
    ),
    responses((status = 200, description = "OK", body = Group)),
)]
pub(super) async fn delete_group(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Group>> {
    require(
        &auth,
        Right::ManageUsers,
        "group.delete",
        Some(&format!("group:{name}")),
    )?;
    let g = group(&state, &name).await?;
    state.store.delete_group(&g.id).await?;
    audit(
        &state,
        &auth,
        "group.delete",
        &format!("group:{}", g.name),
        String::new(),
    );
    Ok(Json(group_view(&g)))
}

/// `PUT /api/v1/groups/{name}/budget` (user admins).
#[utoipa::path(
    put,
    path = "/api/v1/groups/{name}/budget",
    tag = "groups",
    summary = "Set a group's quota budget",
    request_body = SetBudgetRequest,
    params(
        ("name" = String, Path, description = "A group's name"),
    ),
    responses((status = 200, description = "OK", body = Group)),
)]
pub(super) async fn set_budget(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SetBudgetRequest>,
) -> ApiResult<Json<Group>> {
    require(
        &auth,
        Right::ManageUsers,
        "group.budget",
        Some(&format!("group:{name}")),
    )?;
    check_budget(req.quota_budget)?;
    let mut g = group(&state, &name).await?;
    state
        .store
        .set_group_budget(&g.id, req.quota_budget)
        .await?;
    audit(
        &state,
        &auth,
        "group.budget",
        &format!("group:{}", g.name),
        format!("{}: {:?}", g.name, req.quota_budget),
    );
    g.quota_budget = req.quota_budget;
    Ok(Json(group_view(&g)))
}

/// `POST /api/v1/groups/{name}/members` and `DELETE .../members/{username}` (user admins).
#[utoipa::path(
    post,
    path = "/api/v1/groups/{name}/members",
    tag = "groups",
    summary = "Add a member to a group",
    request_body = MemberRequest,
    params(
        ("name" = String, Path, description = "A group's name"),
    ),
    responses((status = 200, description = "OK", body = Group)),
)]
pub(super) async fn add_member(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<MemberRequest>,
) -> ApiResult<Json<Group>> {
    membership(state, auth, name, req.username, true).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/groups/{name}/members/{username}",
    tag = "groups",
    summary = "Remove a member from a group",
    params(
        ("name" = String, Path, description = "A group's name"),
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = Group)),
)]
pub(super) async fn remove_member(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath((name, username)): ApiPath<(String, String)>,
) -> ApiResult<Json<Group>> {
    membership(state, auth, name, username, false).await
}

async fn membership(
    state: AppState,
    auth: AuthUser,
    name: String,
    username: String,
    member: bool,
) -> ApiResult<Json<Group>> {
    require(
        &auth,
        Right::ManageUsers,
        "group.member",
        Some(&format!("group:{name}")),
    )?;
    let g = group(&state, &name).await?;
    let u = user(&state, &username).await?;
    state.store.set_group_member(&g.id, &u.id, member).await?;
    audit(
        &state,
        &auth,
        if member { "group.add" } else { "group.remove" },
        &format!("group:{}", g.name),
        format!("{}: {}", g.name, u.username),
    );
    let g = group(&state, &name).await?;
    Ok(Json(group_view(&g)))
}

/// `PUT /api/v1/templates/{name}/groups` (template admins): only these groups' members may see
/// and use it (none: everyone in its organization).
#[utoipa::path(
    put,
    path = "/api/v1/templates/{name}/groups",
    tag = "templates",
    summary = "Which groups may use a template",
    request_body = SetTemplateGroupsRequest,
    params(
        ("name" = String, Path, description = "A template's name"),
    ),
    responses((status = 200, description = "OK", body = Template)),
)]
pub(super) async fn set_template_groups(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SetTemplateGroupsRequest>,
) -> ApiResult<Json<Template>> {
    require(
        &auth,
        Right::ManageTemplates,
        "template.groups",
        Some(&format!("template:{name}")),
    )?;
    let t = state.store.template_by_name(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no template {name:?}; see `outpost templates list`"
        ))
    })?;
    let mut ids = Vec::new();
    for g in &req.groups {
        let row = state
            .store
            .group_by_name(&t.organization_id, g)
            .await?
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no group {g:?} in the template's organization; see `outpost groups list`"
                ))
            })?;
        ids.push(row.id);
    }
    state.store.set_template_groups(&t.id, &ids).await?;
    audit(
        &state,
        &auth,
        "template.groups",
        &format!("template:{name}"),
        format!("{name}: {:?}", req.groups),
    );
    Ok(Json(super::templates::template_view(&state, &t).await?))
}

/// Whether the caller may see and use template `t`: template admins, owners and auditors see
/// all; others, templates of their organizations open to them (no groups, or one of theirs).
pub(super) async fn may_use(state: &AppState, auth: &AuthUser, t: &TemplateRow) -> ApiResult<bool> {
    if can(auth, Right::ManageTemplates) || can(auth, Right::ReadAllWorkspaces) {
        return Ok(true);
    }
    if !state
        .store
        .organizations_of(&auth.user.id)
        .await?
        .contains(&t.organization_id)
    {
        return Ok(false);
    }
    let only = state.store.template_groups(&t.id).await?;
    if only.is_empty() {
        return Ok(true);
    }
    let mine = state.store.groups_of(&auth.user.id).await?;
    Ok(only.iter().any(|(id, _)| mine.iter().any(|g| &g.id == id)))
}

// ------------------------------------------------------------ organizations

/// `GET /api/v1/organizations`: all for those who may list users, else one's own.
#[utoipa::path(
    get,
    path = "/api/v1/organizations",
    tag = "organizations",
    summary = "Organizations",
    responses((status = 200, description = "OK", body = Vec<Organization>)),
)]
pub(super) async fn list_orgs(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<Organization>>> {
    let mine = state.store.organizations_of(&auth.user.id).await?;
    let all = can(&auth, Right::ReadUsers);
    let mut out = Vec::new();
    for (id, name) in state.store.list_organizations().await? {
        if all || mine.contains(&id) {
            let members = state.store.organization_members(&id).await?;
            out.push(Organization { id, name, members });
        }
    }
    Ok(Json(out))
}

/// `POST /api/v1/organizations` (owners).
#[utoipa::path(
    post,
    path = "/api/v1/organizations",
    tag = "organizations",
    summary = "Create an organization",
    request_body = CreateOrganizationRequest,
    responses((status = 201, description = "OK", body = Organization)),
)]
pub(super) async fn create_org(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateOrganizationRequest>,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    require(
        &auth,
        Right::GrantOwner,
        "organization.create",
        Some(&format!("organization:{}", req.name)),
    )?;
    check_name("organization", &req.name)?;
    let id = state.store.create_organization(&req.name).await?;
    audit(
        &state,
        &auth,
        "organization.create",
        &format!("organization:{}", req.name),
        String::new(),
    );
    Ok((
        StatusCode::CREATED,
        Json(Organization {
            id,
            name: req.name,
            members: Vec::new(),
        }),
    ))
}

/// `POST /api/v1/organizations/{name}/members`, `DELETE .../members/{username}` (user admins).
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{name}/members",
    tag = "organizations",
    summary = "Add a member to an organization",
    request_body = MemberRequest,
    params(
        ("name" = String, Path, description = "An organization's name"),
    ),
    responses((status = 200, description = "OK", body = Organization)),
)]
pub(super) async fn add_org_member(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<MemberRequest>,
) -> ApiResult<Json<Organization>> {
    org_membership(state, auth, name, req.username, true).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/organizations/{name}/members/{username}",
    tag = "organizations",
    summary = "Remove a member from an organization",
    params(
        ("name" = String, Path, description = "An organization's name"),
        ("username" = String, Path, description = "A user's name"),
    ),
    responses((status = 200, description = "OK", body = Organization)),
)]
pub(super) async fn remove_org_member(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath((name, username)): ApiPath<(String, String)>,
) -> ApiResult<Json<Organization>> {
    org_membership(state, auth, name, username, false).await
}

async fn org_membership(
    state: AppState,
    auth: AuthUser,
    name: String,
    username: String,
    member: bool,
) -> ApiResult<Json<Organization>> {
    require(
        &auth,
        Right::ManageUsers,
        "organization.member",
        Some(&format!("organization:{name}")),
    )?;
    let id = org_id(&state, Some(&name)).await?;
    let u = user(&state, &username).await?;
    state
        .store
        .set_organization_member(&id, &u.id, member)
        .await?;
    audit(
        &state,
        &auth,
        if member {
            "organization.add"
        } else {
            "organization.remove"
        },
        &format!("organization:{name}"),
        format!("{name}: {}", u.username),
    );
    let members = state.store.organization_members(&id).await?;
    Ok(Json(Organization { id, name, members }))
}

// ------------------------------------------------------------ quotas

async fn workspaces_limit(state: &AppState) -> ApiResult<Option<i64>> {
    Ok(state
        .store
        .setting(QUOTA_KEY)
        .await?
        .and_then(|v| v.parse::<i64>().ok()))
}

/// `GET /api/v1/quotas`: the settings; `PUT` (owners) changes them.
#[utoipa::path(
    get,
    path = "/api/v1/quotas",
    tag = "quotas",
    summary = "The quota settings",
    responses((status = 200, description = "OK", body = QuotaSettings)),
)]
pub(super) async fn get_quotas(
    State(state): State<AppState>,
    _auth: AuthUser,
) -> ApiResult<Json<QuotaSettings>> {
    Ok(Json(QuotaSettings {
        workspaces_per_user: workspaces_limit(&state).await?,
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/quotas",
    tag = "quotas",
    summary = "Change the quota settings",
    request_body = QuotaSettings,
    responses((status = 200, description = "OK", body = QuotaSettings)),
)]
pub(super) async fn set_quotas(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<QuotaSettings>,
) -> ApiResult<Json<QuotaSettings>> {
    require(&auth, Right::GrantOwner, "quota.settings", Some("quota"))?;
    match req.workspaces_per_user {
        Some(n) if !(0..=100_000).contains(&n) => {
            return Err(ApiError::bad_request(
                "workspaces per user is between 0 and 100000 (or none for no limit)",
            ))
        }
        Some(n) => state.store.set_setting(QUOTA_KEY, &n.to_string()).await?,
        None => state.store.delete_setting(QUOTA_KEY).await?,
    }
    audit(
        &state,
        &auth,
        "quota.settings",
        "quota",
        format!("workspaces per user {:?}", req.workspaces_per_user),
    );
    Ok(Json(req))
}

/// `GET /api/v1/quotas/me`.
#[utoipa::path(
    get,
    path = "/api/v1/quotas/me",
    tag = "quotas",
    summary = "One's usage against one's quota",
    responses((status = 200, description = "OK", body = QuotaUsage)),
)]
pub(super) async fn my_usage(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<QuotaUsage>> {
    Ok(Json(usage(&state, &auth.user, None, true).await?))
}

fn cost_of(manifest: &str) -> i64 {
    serde_json::from_str::<TemplateManifest>(manifest)
        .map(|m| m.cost)
        .unwrap_or(0)
}

/// The user's usage; with `full` false, only what a limit or budget in force needs (a create
/// or start with no quota set reads none of the user's workspaces).
async fn usage(
    state: &AppState,
    u: &UserRow,
    except: Option<&str>,
    full: bool,
) -> ApiResult<QuotaUsage> {
    let workspaces_limit = workspaces_limit(state).await?;
    let budgets: Vec<i64> = state
        .store
        .groups_of(&u.id)
        .await?
        .iter()
        .filter_map(|g| g.quota_budget)
        .collect();
    let budget = (!budgets.is_empty()).then(|| budgets.iter().sum());
    let workspaces = if full || workspaces_limit.is_some() {
        state.store.workspace_count(&u.id).await?
    } else {
        0
    };
    let cost_in_use = if full || budget.is_some() {
        state
            .store
            .running_manifests(&u.id)
            .await?
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .map(|(_, m)| cost_of(m))
            .sum()
    } else {
        0
    };
    Ok(QuotaUsage {
        workspaces,
        workspaces_limit,
        cost_in_use,
        budget,
    })
}

/// Refuses a new workspace past the per-user limit, or a start whose cost would take the user
/// past their groups' budget (`workspace_id`: the one starting, not counted as running).
pub(super) async fn check(
    state: &AppState,
    u: &UserRow,
    new_workspace: bool,
    workspace_id: Option<&str>,
    cost: i64,
    what: &str,
) -> ApiResult<()> {
    let q = usage(state, u, workspace_id, false).await?;
    let refusal = if new_workspace && q.workspaces_limit.is_some_and(|l| q.workspaces >= l) {
        Some(format!(
            "{what} would be your workspace number {} and the limit is {} per user: delete one first (`outpost delete NAME`) or ask an owner",
            q.workspaces + 1,
            q.workspaces_limit.unwrap_or(0)
        ))
    } else {
        match q.budget {
            Some(b) if q.cost_in_use + cost > b => Some(format!(
                "{what} costs {cost} quota units; your running workspaces use {} of your groups' budget of {b}, so {} would be over it: stop a workspace or ask a user admin for a bigger budget",
                q.cost_in_use,
                q.cost_in_use + cost
            )),
            _ => None,
        }
    };
    if let Some(msg) = refusal {
        state.audit.record(
            "workspace.quota",
            "refused",
            &u.username,
            Some(&format!("user:{}", u.username)),
            workspace_id,
            None,
            None,
            msg.clone(),
        );
        return Err(ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", msg));
    }
    Ok(())
}
