//! The audit log.

use super::*;

/// One audit event. No secrets: token ids at most, never token material.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub created_at: i64,
    pub action: String,
    pub outcome: String,
    pub actor: String,
    pub workspace_id: Option<String>,
    pub agent_id: Option<String>,
    pub remote_addr: Option<String>,
    pub details: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub workspace_id: Option<String>,
    pub since: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (created_at, action, outcome, actor, workspace_id, agent_id, remote_addr, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(e.created_at)
            .bind(&e.action)
            .bind(&e.outcome)
            .bind(&e.actor)
            .bind(e.workspace_id.clone())
            .bind(e.agent_id.clone())
            .bind(e.remote_addr.clone())
            .bind(&e.details)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Newest first. Filters are exact matches; `action` also matches a prefix ending in `.`.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        // Each filter is `($n = '' OR col = $n)` so one statement serves every combination.
        let action = f.action.clone().unwrap_or_default();
        let action_prefix = format!("{action}%");
        let rows = sqlx::query(
            "SELECT * FROM audit_events \
             WHERE ($1 = '' OR action = $1 OR (action LIKE $2 AND $1 LIKE '%.')) \
               AND ($3 = '' OR outcome = $3) AND ($4 = '' OR workspace_id = $4) AND created_at >= $5 \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(action)
        .bind(action_prefix)
        .bind(f.outcome.clone().unwrap_or_default())
        .bind(f.workspace_id.clone().unwrap_or_default())
        .bind(f.since.unwrap_or(0))
        .bind(f.limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    action: r.try_get("action")?,
                    outcome: r.try_get("outcome")?,
                    actor: r.try_get("actor")?,
                    workspace_id: r.try_get("workspace_id")?,
                    agent_id: r.try_get("agent_id")?,
                    remote_addr: r.try_get("remote_addr")?,
                    details: r.try_get("details")?,
                })
            })
            .collect()
    }

    /// Retention: deletes audit events older than `before` (ms), then all but the newest
    /// `keep` (at least one kept). How many went.
    pub async fn prune_audit(&self, before: i64, keep: i64) -> Result<u64> {
        prune(&self.pool, "audit_events", before, keep).await
    }
}

/// Deletes rows of `table` (one of ours, with `id` and `created_at`) older than `before`, then
/// beyond the newest `keep`.
pub(super) async fn prune(
    pool: &sqlx::AnyPool,
    table: &'static str,
    before: i64,
    keep: i64,
) -> Result<u64> {
    let by_age = sqlx::query(&format!("DELETE FROM {table} WHERE created_at < $1"))
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
    let by_size = sqlx::query(&format!(
        "DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET $1)"
    ))
    .bind(keep.max(1))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(by_age + by_size)
}
