//! Audit events: queued on a bounded channel (a flood of rejected requests cannot pile up
//! unbounded writes) and written in batches. Events carry ids and reasons, never secrets.

use super::error::ApiQuery;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use outpost_api::AuditEventView;
use tokio::sync::mpsc;

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::AppState;

use crate::store::{now_ms, AuditEvent, AuditFilter, Store};

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<AuditEvent>,
    pub dropped: Arc<AtomicU64>,
}

impl Audit {
    pub fn start(store: Store) -> Audit {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(8192);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                if let Err(e) = store.insert_audit(&batch).await {
                    tracing::warn!(error = %e, n = batch.len(), "writing audit events failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Audit {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// Records an event; it is also logged. When the queue is full the event is counted as
    /// dropped (and still logged). `target` is what the event acted on (`user:bob`,
    /// `template:base`, `workspace:alice/dev`, `token:ID`, `key:FINGERPRINT`, ...).
    pub fn record(
        &self,
        action: &str,
        outcome: &str,
        actor: &str,
        target: Option<&str>,
        workspace_id: Option<&str>,
        agent_id: Option<&str>,
        remote_addr: Option<String>,
        details: impl Into<String>,
    ) {
        let details = details.into();
        tracing::info!(target: "audit", action, outcome, actor, object = target, workspace = workspace_id, agent = agent_id, remote = remote_addr.as_deref(), details = %details);
        let e = AuditEvent {
            id: 0,
            created_at: now_ms(),
            action: action.to_string(),
            outcome: outcome.to_string(),
            actor: actor.to_string(),
            target: target.map(str::to_string),
            workspace_id: workspace_id.map(str::to_string),
            agent_id: agent_id.map(str::to_string),
            remote_addr,
            details,
        };
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The target naming a workspace: `workspace:OWNER/NAME`.
pub fn workspace_target(owner: &str, name: &str) -> String {
    format!("workspace:{owner}/{name}")
}

// ---------------------------------------------------------------- `GET /api/v1/audit`

/// The most events one page returns.
pub const MAX_PAGE: i64 = 1000;

/// The filters of `GET /api/v1/audit` (and the dashboard's audit page), checked: a bad value
/// is a 400 that names it.
pub(super) fn parse_filter(q: &[(String, String)]) -> ApiResult<AuditFilter> {
    let mut f = AuditFilter {
        limit: 100,
        ..Default::default()
    };
    let word = |k: &str, v: &str, max: usize| -> ApiResult<Option<String>> {
        if v.is_empty() {
            return Ok(None);
        }
        if v.len() > max || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ApiError::bad_request(format!(
                "{k} {v:?}: at most {max} printable characters without spaces"
            )));
        }
        Ok(Some(v.to_string()))
    };
    let time = |k: &str, v: &str| -> ApiResult<Option<i64>> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<i64>()
            .ok()
            .filter(|t| *t >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{k} {v:?}: give a time in milliseconds since 1970 (e.g. {})",
                    now_ms()
                ))
            })
    };
    for (k, v) in q {
        let v = v.trim();
        match k.as_str() {
            "action" => f.action = word(k, v, 100)?,
            "actor" => f.actor = word(k, v, 200)?,
            "target" => f.target = word(k, v, 400)?,
            "workspace" => f.workspace_id = word(k, v, 100)?,
            "outcome" => {
                f.outcome = word(k, v, 32)?;
                if f
                    .outcome
                    .as_deref()
                    .is_some_and(|o| !o.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                {
                    return Err(ApiError::bad_request(format!(
                        "outcome {v:?}: one word like ok, rejected, refused, issued, revoked"
                    )));
                }
            }
            "since" => f.since = time(k, v)?,
            "until" => f.until = time(k, v)?,
            "before_id" => f.before_id = time(k, v)?,
            "limit" => {
                f.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit {v:?}: give a number from 1 to {MAX_PAGE}"
                        ))
                    })?
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown filter {k:?}: use action, actor, target, outcome, workspace, since, until, before_id, limit"
                )))
            }
        }
    }
    if let (Some(a), Some(b)) = (f.since, f.until) {
        if a >= b {
            return Err(ApiError::bad_request("since must be before until"));
        }
    }
    Ok(f)
}

/// `GET /api/v1/audit`: events newest first (owners and auditors), filtered by `action` (or a
/// prefix ending in `.`), `actor`, `target` (or a prefix ending in `:` or `/`), `outcome`,
/// `workspace` (an id), `since`/`until` (ms), `before_id` (the next page) and `limit`.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    summary = "Audit events, newest first",
    params(
        ("action" = Option<String>, Query, description = "An action, or a prefix ending in `.`"),
        ("actor" = Option<String>, Query, description = "Who acted"),
        ("target" = Option<String>, Query, description = "What was acted on, or a prefix ending in `:` or `/`"),
        ("outcome" = Option<String>, Query, description = "success, failure, denied, ..."),
        ("workspace" = Option<String>, Query, description = "A workspace id"),
        ("since" = Option<i64>, Query, description = "From this time (ms since the epoch)"),
        ("until" = Option<i64>, Query, description = "Until this time (ms since the epoch)"),
        ("before_id" = Option<i64>, Query, description = "The next page: events older than this id"),
        ("limit" = Option<i64>, Query, description = "At most this many events"),
    ),
    responses((status = 200, description = "OK", body = Vec<AuditEventView>)),
)]
pub(super) async fn audit(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(q): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<Vec<AuditEventView>>> {
    super::authz::require(&auth, super::authz::Right::ReadAudit, "audit.read", None)?;
    let f = parse_filter(&q)?;
    let rows = state.store.list_audit(&f).await?;
    Ok(Json(
        rows.into_iter()
            .map(|e| AuditEventView {
                id: e.id,
                created_at: e.created_at,
                action: e.action,
                outcome: e.outcome,
                actor: e.actor,
                target: e.target,
                workspace_id: e.workspace_id,
                agent_id: e.agent_id,
                remote_addr: e.remote_addr,
                details: e.details,
            })
            .collect(),
    ))
}
