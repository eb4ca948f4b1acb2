//! Workspace statistics over the last hour (the dashboard's sparklines): at most one sample a
//! minute per workspace, taken from its agent's heartbeats, pruned after an hour.

use super::*;

/// How long samples are kept.
pub const STATS_KEEP_MS: i64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StatsSampleRow {
    pub workspace_id: String,
    pub at: i64,
    pub cpu_percent: f64,
    pub cpu_cores: i64,
    pub mem_used_bytes: i64,
    pub mem_total_bytes: i64,
    pub home_disk_used_bytes: i64,
    pub home_disk_total_bytes: i64,
    pub load1: f64,
}

impl Store {
    /// Writes samples in one transaction (a sample already there for that millisecond stays).
    pub async fn add_stats_samples(&self, rows: &[StatsSampleRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO stats_samples (workspace_id, at, cpu_percent, cpu_cores, mem_used_bytes, \
                 mem_total_bytes, home_disk_used_bytes, home_disk_total_bytes, load1) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (workspace_id, at) DO NOTHING",
            )
            .bind(&r.workspace_id)
            .bind(r.at)
            .bind(r.cpu_percent)
            .bind(r.cpu_cores)
            .bind(r.mem_used_bytes)
            .bind(r.mem_total_bytes)
            .bind(r.home_disk_used_bytes)
            .bind(r.home_disk_total_bytes)
            .bind(r.load1)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A workspace's samples since `since` (ms), oldest first.
    pub async fn stats_samples(
        &self,
        workspace_id: &str,
        since: i64,
    ) -> Result<Vec<StatsSampleRow>> {
        Ok(sqlx::query_as::<_, StatsSampleRow>(
            "SELECT workspace_id, at, cpu_percent, cpu_cores, mem_used_bytes, mem_total_bytes, \
             home_disk_used_bytes, home_disk_total_bytes, load1 FROM stats_samples \
             WHERE workspace_id = $1 AND at >= $2 ORDER BY at LIMIT 1000",
        )
        .bind(workspace_id)
        .bind(since)
        .fetch_all(self.db())
        .await?)
    }

    /// Drops samples older than `before` (ms); how many went.
    pub async fn prune_stats_samples(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM stats_samples WHERE at < $1")
            .bind(before)
            .execute(self.db())
            .await?
            .rows_affected())
    }
}
