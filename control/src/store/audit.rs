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
    /// What the event acted on (`user:bob`, `template:base`, `workspace:alice/dev`, ...).
    pub target: Option<String>,
    pub workspace_id: Option<String>,
    pub agent_id: Option<String>,
    pub remote_addr: Option<String>,
    pub details: String,
}

/// Which events to list; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// An action, or a prefix ending in `.`.
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub actor: Option<String>,
    /// A target, or a prefix ending in `:` or `/` (`user:`, `workspace:alice/`).
    pub target: Option<String>,
    pub workspace_id: Option<String>,
    /// From this time (ms), inclusive.
    pub since: Option<i64>,
    /// Before this time (ms), exclusive.
    pub until: Option<i64>,
    /// Only events with a smaller id (paging newest first).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// `s` as a LIKE prefix pattern (escaped with `\`) when it ends in one of `ends`, else `""`.
fn like_prefix(s: &str, ends: &[char]) -> String {
    if !s.ends_with(ends) {
        return String::new();
    }
    let mut p = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (created_at, action, outcome, actor, workspace_id, agent_id, remote_addr, details, target) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(e.created_at)
            .bind(&e.action)
            .bind(&e.outcome)
            .bind(&e.actor)
            .bind(e.workspace_id.clone())
            .bind(e.agent_id.clone())
            .bind(e.remote_addr.clone())
            .bind(&e.details)
            .bind(e.target.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Newest first. Filters are exact matches; `action` also matches a prefix ending in `.`,
    /// `target` one ending in `:` or `/`.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        // Each filter is `($n = '' OR col = $n)` so one statement serves every combination.
        let action = f.action.clone().unwrap_or_default();
        let target = f.target.clone().unwrap_or_default();
        let rows = sqlx::query(
            "SELECT * FROM audit_events \
             WHERE ($1 = '' OR action = $1 OR ($2 <> '' AND action LIKE $2 ESCAPE '\\')) \
               AND ($3 = '' OR outcome = $3) AND ($4 = '' OR workspace_id = $4) \
               AND created_at >= $5 AND created_at < $6 AND id < $7 \
               AND ($8 = '' OR actor = $8) \
               AND ($9 = '' OR target = $9 OR ($10 <> '' AND target LIKE $10 ESCAPE '\\')) \
             ORDER BY id DESC LIMIT $11",
        )
        .bind(&action)
        .bind(like_prefix(&action, &['.']))
        .bind(f.outcome.clone().unwrap_or_default())
        .bind(f.workspace_id.clone().unwrap_or_default())
        .bind(f.since.unwrap_or(0))
        .bind(f.until.unwrap_or(i64::MAX))
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(f.actor.clone().unwrap_or_default())
        .bind(&target)
        .bind(like_prefix(&target, &[':', '/']))
        .bind(f.limit.clamp(1, 10_000))
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    action: r.try_get("action")?,
                    outcome: r.try_get("outcome")?,
                    actor: r.try_get("actor")?,
                    target: r.try_get("target")?,
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
