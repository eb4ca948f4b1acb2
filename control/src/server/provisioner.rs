//! The provisioner side of the API: daemons acquire jobs (long poll), stream logs while renewing
//! their lease, and complete them. A lease that runs out means the daemon died: the job is
//! retried (up to 3 attempts) or failed, never left running.

use super::error::ApiPath;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use outpost_api::*;

use super::auth::{random_id, random_secret, sha256_hex, ProvisionerAuth, BOOTSTRAP_TOKEN_PREFIX};
use super::error::{store_or, ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{now_ms, StoreError};

const ACQUIRE_WAIT: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: i64 = 3;
const MAX_LOG_LINES: usize = 1000;
const MAX_LOG_LINE: usize = 8192;

#[utoipa::path(
    post,
    path = "/api/v1/provisioner/acquire",
    tag = "provisioner daemons",
    summary = "Take the next job a daemon's tags match (long poll; null when none came)",
    request_body = AcquireJobRequest,
    responses((status = 200, description = "OK", body = Option<ProvisionerJob>)),
)]
pub(super) async fn acquire(
    State(state): State<AppState>,
    p: ProvisionerAuth,
    ApiJson(req): ApiJson<AcquireJobRequest>,
) -> ApiResult<Json<Option<ProvisionerJob>>> {
    if req.daemon_id.is_empty() || req.daemon_id.len() > 128 {
        return Err(ApiError::bad_request("daemon_id: 1 to 128 characters"));
    }
    let tags = p.key.as_ref().map(|k| k.tags.clone()).unwrap_or_default();
    let version: String = req
        .version
        .as_deref()
        .unwrap_or("unknown")
        .chars()
        .take(64)
        .collect();
    state
        .store
        .daemon_seen(&req.daemon_id, Some(p.key_id()), &tags, &version)
        .await?;
    let scope = super::provisioner_keys::scope_of(p.key.as_ref());
    let deadline = tokio::time::Instant::now() + ACQUIRE_WAIT;
    let lease_ms = state.config.job_lease_secs as i64 * 1000;
    loop {
        let notified = state.jobs_changed.notified();
        if let Some(job_id) = state
            .store
            .acquire_job(&req.daemon_id, &req.provisioners, &scope, lease_ms)
            .await?
        {
            state.bump_progress();
            return Ok(Json(Some(job_payload(&state, &job_id).await?)));
        }
        if *state.shutdown.borrow() {
            return Ok(Json(None));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(Json(None));
        }
    }
}

/// A key speaks only for its own daemons (a daemon's id is the client's choice).
async fn own_daemon(state: &AppState, p: &ProvisionerAuth, daemon_id: &str) -> ApiResult<()> {
    match state.store.daemon_key(daemon_id).await? {
        Some(k) if k == p.key_id() => Ok(()),
        _ => Err(ApiError::forbidden(
            "this daemon id is not one of this provisioner key's daemons",
        )),
    }
}

async fn job_payload(state: &AppState, job_id: &str) -> ApiResult<ProvisionerJob> {
    let job = state.store.job(job_id).await?.ok_or(StoreError::NotFound)?;
    let b = state
        .store
        .build(&job.build_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let w = state
        .store
        .workspace_by_id(&b.workspace_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let v = state
        .store
        .template_version(&b.template_version_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let manifest: TemplateManifest =
        serde_json::from_str(&v.manifest).map_err(ApiError::internal)?;
    let transition =
        Transition::parse(&b.transition).ok_or_else(|| ApiError::internal("bad transition"))?;
    let bootstrap = if transition == Transition::Start {
        let agent_id = state.store.ensure_agent(&w.id, &b.id).await?;
        // Only this build's agent may live: older identities are revoked.
        for old in state.store.revoke_agents_except(&w.id, &agent_id).await? {
            state.forget_agent(&old);
            state.audit.record(
                "agent.revoke",
                "revoked",
                "control",
                Some(&format!("agent:{old}")),
                Some(&w.id),
                Some(&old),
                None,
                "replaced by a new start build",
            );
        }
        let token_id = random_id();
        let secret = random_secret();
        state
            .store
            .create_bootstrap_token(
                &token_id,
                &sha256_hex(&secret),
                &w.id,
                &agent_id,
                now_ms() + state.config.bootstrap_token_ttl_secs as i64 * 1000,
            )
            .await?;
        Some(BootstrapBundle {
            agent_url: state.agent_url.clone(),
            token: format!("{BOOTSTRAP_TOKEN_PREFIX}_{token_id}_{secret}"),
            ca_pins: state.ca.pins(),
            heartbeat_secs: state.config.heartbeat_secs,
            env: manifest.agent.env.clone(),
        })
    } else {
        None
    };
    Ok(ProvisionerJob {
        job_id: job.id,
        build_id: b.id,
        transition,
        workspace_id: w.id,
        workspace_name: w.name,
        owner: w.owner_name,
        template: w.template_name,
        parameters: serde_json::from_str(&w.parameters).unwrap_or_default(),
        manifest,
        bootstrap,
        state: serde_json::from_str(&w.provisioner_state).unwrap_or(serde_json::Value::Null),
        lease_secs: state.config.job_lease_secs,
        files: serde_json::from_str(&v.files).map_err(ApiError::internal)?,
    })
}

fn not_held() -> ApiError {
    ApiError::conflict("this daemon does not hold that job any more")
}

#[utoipa::path(
    post,
    path = "/api/v1/provisioner/jobs/{id}/update",
    tag = "provisioner daemons",
    summary = "Report a job's progress and logs; learn whether it was canceled",
    request_body = JobUpdateRequest,
    params(
        ("id" = String, Path, description = "An id"),
    ),
    responses((status = 200, description = "OK", body = JobUpdateResponse)),
)]
pub(super) async fn update(
    State(state): State<AppState>,
    p: ProvisionerAuth,
    ApiPath(job_id): ApiPath<String>,
    ApiJson(req): ApiJson<JobUpdateRequest>,
) -> ApiResult<Json<JobUpdateResponse>> {
    own_daemon(&state, &p, &req.daemon_id).await?;
    if req.logs.len() > MAX_LOG_LINES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_LOG_LINES} log lines per update"
        )));
    }
    let logs: Vec<(String, String, String)> = req
        .logs
        .into_iter()
        .map(|l| {
            let mut out = l.output;
            if out.len() > MAX_LOG_LINE {
                let mut cut = MAX_LOG_LINE;
                while !out.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.truncate(cut);
            }
            (l.stage, l.level, out)
        })
        .collect();
    let lease_ms = state.config.job_lease_secs as i64 * 1000;
    let job = state
        .store
        .job_update(&job_id, &req.daemon_id, lease_ms, &logs)
        .await
        .map_err(|e| store_or(e, not_held))?;
    state.touch(&format!("job:{job_id}"));
    state.bump_progress();
    Ok(Json(JobUpdateResponse {
        canceled: job.cancel_requested,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/provisioner/jobs/{id}/complete",
    tag = "provisioner daemons",
    summary = "Finish a job",
    request_body = CompleteJobRequest,
    params(
        ("id" = String, Path, description = "An id"),
    ),
    responses((status = 200, description = "OK", body = JobStatusAnswer)),
)]
pub(super) async fn complete(
    State(state): State<AppState>,
    p: ProvisionerAuth,
    ApiPath(job_id): ApiPath<String>,
    ApiJson(req): ApiJson<CompleteJobRequest>,
) -> ApiResult<Json<JobStatusAnswer>> {
    own_daemon(&state, &p, &req.daemon_id).await?;
    let (status, error, resources, st) = match &req.outcome {
        JobOutcome::Succeeded { resources, state } => {
            let res: Vec<(String, String, bool, String)> = resources
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.kind.clone(),
                        r.persistent,
                        serde_json::to_string(&r.details).unwrap_or_else(|_| "{}".into()),
                    )
                })
                .collect();
            (
                "succeeded",
                None,
                res,
                Some(serde_json::to_string(state).map_err(ApiError::internal)?),
            )
        }
        JobOutcome::Failed { error } => ("failed", Some(error.as_str()), Vec::new(), None),
        JobOutcome::Canceled => ("canceled", None, Vec::new(), None),
    };
    let job = state
        .store
        .complete_job(
            &job_id,
            &req.daemon_id,
            status,
            error,
            &resources,
            st.as_deref(),
        )
        .await
        .map_err(|e| store_or(e, not_held))?;
    state.touch(&format!("job:{job_id}"));
    after_job_end(&state, &job.build_id, status).await?;
    let status = JobStatus::parse(status).ok_or_else(|| ApiError::internal(status))?;
    Ok(Json(JobStatusAnswer { status }))
}

/// What follows the end of a build: stop and delete revoke the agent; delete frees the name;
/// restart and update queue their start build.
async fn after_job_end(state: &AppState, build_id: &str, status: &str) -> ApiResult<()> {
    let b = state
        .store
        .build(build_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    state
        .metrics
        .build_ended(&b.transition, status, b.created_at);
    if status == "succeeded" && b.transition == "start" {
        super::schedule::on_started(state, &b.workspace_id, b.number).await?;
    }
    if status == "succeeded" && b.transition != "start" {
        state
            .revoke_workspace_agents(
                &b.workspace_id,
                &format!("{} build succeeded", b.transition),
            )
            .await?;
        if b.transition == "delete" {
            state.store.mark_workspace_deleted(&b.workspace_id).await?;
        }
        if b.then_start && b.transition == "stop" {
            state
                .store
                .queue_build(
                    &b.workspace_id,
                    b.number,
                    "start",
                    &b.template_version_id,
                    false,
                    None,
                    &b.provisioner,
                    None,
                    &b.reason,
                )
                .await?;
            state.job_queued();
        }
    }
    state.bump_progress();
    Ok(())
}

/// Background loop: jobs whose daemon stopped renewing the lease are retried or failed.
pub(super) async fn reap_expired_leases(state: AppState) {
    let period = Duration::from_millis((state.config.job_lease_secs * 1000 / 3).max(200));
    loop {
        tokio::time::sleep(period).await;
        // One replica reaps: the leader.
        if !state.cluster.is_leader() {
            continue;
        }
        if let Err(e) = reap_once(&state).await {
            tracing::warn!(error = %e, "lease reaper");
        }
    }
}

async fn reap_once(state: &AppState) -> Result<(), StoreError> {
    let now = now_ms();
    for (job_id, attempts, status) in state.store.expired_jobs(now).await? {
        let job = state.store.job(&job_id).await?;
        let build_id = job.map(|j| j.build_id).unwrap_or_default();
        if status == "canceling" {
            if state
                .store
                .fail_expired(
                    &job_id,
                    now,
                    "canceled",
                    "the provisioner stopped responding while canceling",
                )
                .await?
            {
                tracing::warn!(job = %job_id, "lease expired while canceling: canceled");
            }
        } else if attempts < MAX_ATTEMPTS {
            if state.store.requeue_expired(&job_id, now).await? {
                state
                    .store
                    .append_log(
                        &job_id,
                        "provisioner",
                        "warn",
                        "the provisioner stopped responding; retrying the build",
                    )
                    .await?;
                tracing::warn!(job = %job_id, attempts, "lease expired: requeued");
                state.job_queued();
            }
        } else if state
            .store
            .fail_expired(&job_id, now, "failed", "the provisioner stopped responding")
            .await?
        {
            tracing::warn!(job = %job_id, "lease expired: failed");
            let _ = after_job_end(state, &build_id, "failed").await;
        }
        state.touch(&format!("job:{job_id}"));
        state.bump_progress();
    }
    Ok(())
}
