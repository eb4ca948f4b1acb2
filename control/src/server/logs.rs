//! Log streams: a build's log and a workspace's agent (script) logs as NDJSON, optionally
//! followed. Followers are capped per user and wake on their own job's or workspace's topic
//! only, never on every change anywhere.

use super::error::{ApiPath, ApiQuery};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use outpost_api::*;

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::workspaces::own_build;
use super::AppState;

#[derive(serde::Deserialize)]
pub(super) struct LogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    after: i64,
}

/// A follower re-reads the store when its own topic changes, or after this long regardless.
const FOLLOW_RECHECK: Duration = Duration::from_secs(15);

/// The topic agent log lines of workspace `id` are announced on.
pub(super) fn agent_logs_topic(id: &str) -> String {
    format!("agent-logs:{id}")
}

/// One of the user's follow slots when `follow` is asked for (429 past the cap).
fn follow_slot(
    state: &AppState,
    auth: &AuthUser,
    follow: bool,
) -> ApiResult<Option<super::listen::Slot<String>>> {
    if !follow {
        return Ok(None);
    }
    state
        .follows
        .take(auth.user.id.clone())
        .map(Some)
        .ok_or_else(|| {
            ApiError::too_many_requests(
                format!(
                    "you follow {} log streams already; close one first",
                    super::FOLLOWS_PER_USER
                ),
                Duration::from_secs(5),
            )
        })
}

/// NDJSON log lines; with `follow=true` the response stays open until the job ends.
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}/logs",
    tag = "logs",
    summary = "A build's log, NDJSON of LogLine",
    params(
        ("id" = String, Path, description = "An id"),
        ("follow" = Option<bool>, Query, description = "Keep streaming new lines until the build ends"),
        ("after" = Option<i64>, Query, description = "Only lines with a larger id"),
    ),
    responses((status = 200, description = "One JSON LogLine per line", content_type = "application/x-ndjson", body = LogLine)),
)]
pub(super) async fn build_logs(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let b = own_build(&state, &auth, &id).await?;
    let job_id = b.job_id.clone();
    let slot = follow_slot(&state, &auth, q.follow)?;
    let progress = state.subscribe(&format!("job:{job_id}"));
    let stream = futures_util::stream::unfold(
        (state, job_id, q.after, progress, false, slot),
        move |(state, job_id, mut after, mut progress, done, slot)| async move {
            if done {
                return None;
            }
            loop {
                progress.mark_unchanged();
                tracing::debug!(job = %job_id, "build log follower reads the store");
                // Read the job's status before its logs so no line written before the end is missed.
                let finished = match state.store.job(&job_id).await {
                    Ok(Some(j)) => JobStatus::parse(&j.status).is_none_or(JobStatus::is_final),
                    _ => true,
                };
                let rows = state
                    .store
                    .logs_after(&job_id, after)
                    .await
                    .unwrap_or_default();
                if let Some(last) = rows.last() {
                    after = last.id;
                    let out = ndjson(rows.iter());
                    let more = rows.len() >= 1000;
                    let end = !q.follow || (finished && !more);
                    return Some((
                        Ok::<_, Infallible>(Bytes::from(out)),
                        (state, job_id, after, progress, end, slot),
                    ));
                }
                if !q.follow || finished || *state.shutdown.borrow() {
                    return None;
                }
                // Woken by this job's own changes; the timeout only covers a missed wake-up.
                let _ = tokio::time::timeout(FOLLOW_RECHECK, progress.changed()).await;
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentLogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    source: Option<String>,
}

/// The workspace's agent logs (script output), NDJSON, in order; `follow=true` keeps streaming
/// new lines until the client leaves.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{name}/agent-logs",
    tag = "logs",
    summary = "The agent's script output, NDJSON of LogLine",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
        ("follow" = Option<bool>, Query, description = "Keep streaming new lines"),
        ("after" = Option<i64>, Query, description = "Only lines with a larger id"),
        ("source" = Option<String>, Query, description = "Only this script's lines (startup, personalize, dotfiles, ...)"),
    ),
    responses((status = 200, description = "One JSON LogLine per line", content_type = "application/x-ndjson", body = LogLine)),
)]
pub(super) async fn agent_logs(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<AgentLogsQuery>,
) -> ApiResult<Response> {
    let w =
        super::workspaces::find_workspace(&state, &auth, &name, super::workspaces::Access::Read)
            .await?;
    let slot = follow_slot(&state, &auth, q.follow)?;
    let progress = state.subscribe(&agent_logs_topic(&w.id));
    let ws = w.id.clone();
    let stream = futures_util::stream::unfold(
        (state, ws, q.after, progress, q.source, q.follow, slot),
        |(state, ws, mut after, mut progress, source, follow, slot)| async move {
            loop {
                progress.mark_unchanged();
                tracing::debug!(workspace = %ws, "agent log follower reads the store");
                let rows = state
                    .store
                    .agent_logs_after(&ws, source.as_deref(), after)
                    .await
                    .unwrap_or_default();
                if let Some((last, _)) = rows.last() {
                    after = last.id;
                    let out = ndjson(rows.iter().map(|(r, _)| r));
                    return Some((
                        Ok::<_, Infallible>(Bytes::from(out)),
                        (state, ws, after, progress, source, follow, slot),
                    ));
                }
                if !follow || *state.shutdown.borrow() {
                    return None;
                }
                let _ = tokio::time::timeout(FOLLOW_RECHECK, progress.changed()).await;
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

/// Log rows as NDJSON `LogLine`s.
fn ndjson<'a>(rows: impl Iterator<Item = &'a crate::store::LogRow>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        let line = LogLine {
            id: r.id,
            created_at: r.created_at,
            stage: r.stage.clone(),
            level: r.level.clone(),
            output: r.output.clone(),
        };
        if let Ok(mut v) = serde_json::to_vec(&line) {
            v.push(b'\n');
            out.extend_from_slice(&v);
        }
    }
    out
}
