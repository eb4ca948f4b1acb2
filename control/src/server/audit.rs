//! Audit events: queued on a bounded channel (a flood of rejected requests cannot pile up
//! unbounded writes) and written in batches. Events carry ids and reasons, never secrets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use outpost_api::AuditEventView;
use tokio::sync::mpsc;

use super::auth::AuthUser;
use super::error::ApiResult;
use super::AppState;

use crate::store::{now_ms, AuditEvent, Store};

pub struct Audit {
    tx: mpsc::Sender<AuditEvent>,
    pub dropped: AtomicU64,
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
            dropped: AtomicU64::new(0),
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// Records an event; it is also logged. When the queue is full the event is counted as
    /// dropped (and still logged).
    pub fn record(
        &self,
        action: &str,
        outcome: &str,
        actor: &str,
        workspace_id: Option<&str>,
        agent_id: Option<&str>,
        remote_addr: Option<String>,
        details: impl Into<String>,
    ) {
        let details = details.into();
        tracing::info!(target: "audit", action, outcome, actor, workspace = workspace_id, agent = agent_id, remote = remote_addr.as_deref(), details = %details);
        let e = AuditEvent {
            id: 0,
            created_at: now_ms(),
            action: action.to_string(),
            outcome: outcome.to_string(),
            actor: actor.to_string(),
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

// ---------------------------------------------------------------- `GET /api/v1/audit`

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
    super::authz::require(&auth, super::authz::Right::ReadAudit)?;
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
