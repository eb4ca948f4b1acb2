//! Provisioner keys for external daemons (`outpost provisioners keys ...`): each scoped to an
//! organization and/or some templates and carrying tags. A daemon takes only jobs of templates
//! in its key's scope whose `[provisioner] tags` it carries (a subset of its key's tags);
//! untagged templates go to untagged keys and the server's own daemons. Revoking a key refuses
//! its daemons at once and lets go of the jobs they hold (the reaper retries them elsewhere).

use super::error::ApiPath;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::*;

use super::auth::{random_secret, sha256_hex, AuthUser};
use super::authz::{can, require, Right};
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{JobScope, ProvisionerKeyRow};

/// Daemons seen within this long are listed.
const SEEN_MS: i64 = 60_000;

fn parse_tags(canonical: &str) -> BTreeMap<String, String> {
    canonical
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a daemon with `key` may take (`None`: the server's own key).
pub(super) fn scope_of(key: Option<&ProvisionerKeyRow>) -> JobScope {
    let Some(key) = key else {
        return JobScope {
            tag_sets: vec![String::new()],
            ..Default::default()
        };
    };
    let lines: Vec<&str> = key.tags.lines().filter(|l| !l.is_empty()).collect();
    // Every subset of the key's tags (at most 2^6), each in canonical (sorted) order.
    let tag_sets = (0u32..(1 << lines.len()))
        .map(|mask| {
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    JobScope {
        tag_sets,
        organization_id: key.organization_id.clone(),
        templates: key.templates.clone(),
    }
}

/// The key as the API shows it; `orgs` are (id, name) pairs, read once per answer.
fn view(k: ProvisionerKeyRow, orgs: &[(String, String)], secret: Option<String>) -> ProvisionerKey {
    let organization = k
        .organization_id
        .as_ref()
        .and_then(|id| orgs.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone()));
    ProvisionerKey {
        id: k.id,
        name: k.name,
        tags: parse_tags(&k.tags),
        organization,
        templates: k.templates,
        created_at: k.created_at,
        revoked_at: k.revoked_at,
        key: secret,
    }
}

/// `POST /api/v1/provisioner-keys`: the secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/provisioner-keys",
    tag = "provisioners",
    summary = "Create a provisioner key (the secret is shown once)",
    request_body = CreateProvisionerKey,
    responses((status = 201, description = "OK", body = ProvisionerKey)),
)]
pub(super) async fn create_key(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateProvisionerKey>,
) -> ApiResult<(StatusCode, Json<ProvisionerKey>)> {
    let target = format!(
        "provisioner_key:{}",
        req.name.chars().take(64).collect::<String>()
    );
    require(
        &auth,
        Right::ManageProvisioners,
        "provisioner_key.create",
        Some(&target),
    )?;
    if !valid_tag_part(&req.name) {
        return Err(ApiError::bad_request(
            "a key's name is 1-64 of A-Z a-z 0-9 _ . -",
        ));
    }
    if let Some((k, v)) = req
        .tags
        .iter()
        .find(|(k, v)| !valid_tag_part(k) || !valid_tag_part(v))
    {
        return Err(ApiError::bad_request(format!(
            "tag {k:?}={v:?}: a tag's key and value are 1-64 of A-Z a-z 0-9 _ . -"
        )));
    }
    if req.tags.len() > MAX_PROVISIONER_TAGS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PROVISIONER_TAGS} tags"
        )));
    }
    let organization_id = match &req.organization {
        Some(org) => Some(state.store.organization_id(org).await?.ok_or_else(|| {
            ApiError::bad_request(format!("no organization {org:?}; see `outpost orgs list`"))
        })?),
        None => None,
    };
    for t in &req.templates {
        if state.store.template_by_name(t).await?.is_none() {
            return Err(ApiError::bad_request(format!(
                "no template {t:?}; see `outpost templates list`"
            )));
        }
    }
    let secret = format!("opk_{}", random_secret());
    let row = state
        .store
        .create_provisioner_key(
            &req.name,
            &sha256_hex(&secret),
            &canonical_tags(&req.tags),
            organization_id.as_deref(),
            &req.templates,
        )
        .await?;
    auth.record(
        "provisioner_key.create",
        "ok",
        &target,
        None,
        format!(
            "tags {:?}, organization {:?}, templates {:?}",
            req.tags, req.organization, req.templates
        ),
    );
    let orgs = state.store.list_organizations().await?;
    Ok((StatusCode::CREATED, Json(view(row, &orgs, Some(secret)))))
}

/// `GET /api/v1/provisioner-keys`.
#[utoipa::path(
    get,
    path = "/api/v1/provisioner-keys",
    tag = "provisioners",
    summary = "Provisioner keys",
    responses((status = 200, description = "OK", body = Vec<ProvisionerKey>)),
)]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<ProvisionerKey>>> {
    require(
        &auth,
        Right::ManageProvisioners,
        "provisioner_key.list",
        None,
    )?;
    let orgs = state.store.list_organizations().await?;
    let keys = state.store.provisioner_keys().await?;
    Ok(Json(
        keys.into_iter().map(|k| view(k, &orgs, None)).collect(),
    ))
}

/// `DELETE /api/v1/provisioner-keys/{name}`: revoked at once; its daemons' jobs are let go.
#[utoipa::path(
    delete,
    path = "/api/v1/provisioner-keys/{name}",
    tag = "provisioners",
    summary = "Revoke a provisioner key",
    params(
        ("name" = String, Path, description = "A provisioner key's name"),
    ),
    responses((status = 200, description = "OK", body = ProvisionerKey)),
)]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ProvisionerKey>> {
    let target = format!("provisioner_key:{name}");
    require(
        &auth,
        Right::ManageProvisioners,
        "provisioner_key.revoke",
        Some(&target),
    )?;
    let (row, jobs) = state
        .store
        .revoke_provisioner_key(&name)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::not_found(format!(
                "no live provisioner key {name:?}; see `outpost provisioners keys list`"
            )),
            e => e.into(),
        })?;
    auth.record(
        "provisioner_key.revoke",
        "ok",
        &target,
        None,
        format!("{jobs} job(s) it held let go"),
    );
    state.job_queued();
    let orgs = state.store.list_organizations().await?;
    Ok(Json(view(row, &orgs, None)))
}

/// `GET /api/v1/provisioners`: daemons seen in the last minute.
#[utoipa::path(
    get,
    path = "/api/v1/provisioners",
    tag = "provisioners",
    summary = "Provisioner daemons seen recently",
    responses((status = 200, description = "OK", body = Vec<ProvisionerDaemon>)),
)]
pub(super) async fn list_daemons(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<Vec<ProvisionerDaemon>>> {
    if !can(&auth, Right::ReadAudit) {
        require(&auth, Right::ManageProvisioners, "provisioner.list", None)?;
    }
    let rows = state.store.daemons(SEEN_MS).await?;
    Ok(Json(
        rows.into_iter()
            .map(|d| ProvisionerDaemon {
                id: d.id,
                key: d.key_name.unwrap_or_else(|| "built-in".into()),
                tags: parse_tags(&d.tags),
                version: d.version,
                last_seen_at: d.last_seen_at,
                current_job: d.current_job,
            })
            .collect(),
    ))
}
