//! Templates (`/api/v1/templates`): pushes (each an immutable version), listing, showing, and
//! the built-in templates pushed on first start.

use super::error::ApiPath;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{TemplateRow, TemplateVersionRow};
use crate::template;

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
                &outpost_api::canonical_tags(&manifest.provisioner_settings.tags),
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

pub(super) async fn template_view(state: &AppState, t: &TemplateRow) -> ApiResult<Template> {
    let (_, organization) = state.store.template_organization(&t.id).await?;
    let groups = state
        .store
        .template_groups(&t.id)
        .await?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    Ok(Template {
        id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        active_version: t.active_version,
        active_version_id: t.active_version_id.clone(),
        created_at: t.created_at,
        schedule: crate::schedule::template_schedule(t.schedule.as_deref()),
        organization,
        groups,
    })
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
        created_by: v.created_by.clone(),
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

#[utoipa::path(
    post,
    path = "/api/v1/templates/push",
    tag = "templates",
    summary = "Push a template version (made active unless asked not to)",
    request_body = PushTemplateRequest,
    responses((status = 201, description = "OK", body = TemplateVersion)),
)]
pub(super) async fn push_template(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<PushTemplateRequest>,
) -> ApiResult<(StatusCode, Json<TemplateVersion>)> {
    let target = format!(
        "template:{}",
        req.name.chars().take(100).collect::<String>()
    );
    super::authz::require(
        &auth,
        super::authz::Right::ManageTemplates,
        "template.push",
        Some(&target),
    )?;
    validate_template_name(&req.name)?;
    let existing = state.store.template_by_name(&req.name).await?;
    let org = match (&existing, req.organization.as_deref()) {
        (None, Some(o)) => Some(state.store.organization_id(o).await?.ok_or_else(|| {
            ApiError::not_found(format!("no organization {o:?}; see `outpost orgs list`"))
        })?),
        _ => None,
    };
    let manifest = template::parse(&req.files).map_err(|e| {
        auth.record(
            "template.push",
            "rejected",
            &target,
            None,
            "invalid template",
        );
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_template", e.to_string())
    })?;
    let row = state
        .store
        .push_template_version(
            &req.name,
            &manifest.description,
            &serde_json::to_string(&manifest).map_err(ApiError::internal)?,
            &serde_json::to_string(&req.files).map_err(ApiError::internal)?,
            &outpost_api::canonical_tags(&manifest.provisioner_settings.tags),
            req.activate,
            Some(&auth.user.id),
        )
        .await?;
    if let Some(org) = org {
        state
            .store
            .set_template_organization(&row.template_id, &org)
            .await?;
    }
    auth.record(
        "template.push",
        "ok",
        &target,
        None,
        format!(
            "version {} ({} files){}",
            row.id,
            req.files.len(),
            if req.activate { ", activated" } else { "" }
        ),
    );
    Ok((StatusCode::CREATED, Json(version_view(&row)?)))
}

#[utoipa::path(
    get,
    path = "/api/v1/templates",
    tag = "templates",
    summary = "Templates one may use",
    responses((status = 200, description = "OK", body = Vec<Template>)),
)]
pub(super) async fn list_templates(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<Template>>> {
    let mut out = Vec::new();
    for t in state.store.list_templates().await? {
        if super::teams::may_use(&state, &auth, &t).await? {
            out.push(template_view(&state, &t).await?);
        }
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v1/templates/{name}",
    tag = "templates",
    summary = "A template with its versions",
    params(
        ("name" = String, Path, description = "A template's name"),
    ),
    responses((status = 200, description = "OK", body = TemplateDetail)),
)]
pub(super) async fn show_template(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TemplateDetail>> {
    let nf = || {
        ApiError::not_found(format!(
            "no template {name:?}; see `outpost templates list`"
        ))
    };
    let t = state.store.template_by_name(&name).await?.ok_or_else(nf)?;
    if !super::teams::may_use(&state, &auth, &t).await? {
        return Err(nf());
    }
    let versions = state
        .store
        .template_versions(&t.id)
        .await?
        .iter()
        .map(version_view)
        .collect::<ApiResult<Vec<_>>>()?;
    let everyone = super::authz::can(&auth, super::authz::Right::ReadAllWorkspaces);
    let outdated_workspaces = state
        .store
        .outdated_workspaces(&t.id)
        .await?
        .into_iter()
        .filter(|(owner, _, _)| everyone || *owner == auth.user.username)
        .map(|(owner, name, version)| OutdatedWorkspace {
            owner,
            name,
            version,
        })
        .collect();
    Ok(Json(TemplateDetail {
        template: template_view(&state, &t).await?,
        versions,
        outdated_workspaces,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/templates/{name}/versions/{version}/activate",
    tag = "templates",
    summary = "Make a version (an older one, to roll back) the template's active version",
    params(
        ("name" = String, Path, description = "A template's name"),
        ("version" = i64, Path, description = "The version number"),
    ),
    responses((status = 200, description = "OK", body = TemplateVersion)),
)]
pub(super) async fn activate_version(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> ApiResult<Json<TemplateVersion>> {
    let target = format!("template:{}", name.chars().take(100).collect::<String>());
    super::authz::require(
        &auth,
        super::authz::Right::ManageTemplates,
        "template.activate",
        Some(&target),
    )?;
    let t = state.store.template_by_name(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no template {name:?}; see `outpost templates list`"
        ))
    })?;
    let v = state
        .store
        .activate_template_version(&t.id, version)
        .await
        .map_err(|e| {
            super::error::store_or(e, || {
                ApiError::not_found(format!(
                    "template {name:?} has no version {version}; see `outpost templates show {name}`"
                ))
            })
        })?;
    auth.record(
        "template.activate",
        "ok",
        &target,
        None,
        format!("version {version} ({}) is active", v.id),
    );
    Ok(Json(version_view(&v)?))
}
