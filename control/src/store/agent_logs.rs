//! Agent logs: script output shipped by agents, capped per agent.

use super::*;

impl Store {
    // ------------------------------------------------------------ agent logs

    /// Appends an agent's log lines within its byte cap. Lines past the cap are dropped and one
    /// overflow marker is written. Returns whether the agent is over its cap.
    pub async fn append_agent_logs(
        &self,
        agent_id: &str,
        workspace_id: &str,
        lines: &[(String, String, String, i64)],
        cap: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT logs_bytes, logs_overflowed FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_one(&mut *tx)
            .await?;
        let mut used: i64 = row.try_get("logs_bytes")?;
        let mut over = row.try_get::<i64, _>("logs_overflowed")? != 0;
        for (source, level, output, at) in lines {
            if over {
                break;
            }
            let n = (source.len() + output.len()) as i64;
            if used + n > cap {
                over = true;
                sqlx::query(
                    "INSERT INTO agent_logs (agent_id, workspace_id, source, level, output, created_at) VALUES ($1, $2, $3, 'warn', $4, $5)",
                )
                .bind(agent_id)
                .bind(workspace_id)
                .bind(source)
                .bind(format!("[outpost] log limit of {cap} bytes reached; further output is dropped"))
                .bind(*at)
                .execute(&mut *tx)
                .await?;
                break;
            }
            used += n;
            sqlx::query(
                "INSERT INTO agent_logs (agent_id, workspace_id, source, level, output, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(agent_id)
            .bind(workspace_id)
            .bind(source)
            .bind(level)
            .bind(output)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE agents SET logs_bytes = $1, logs_overflowed = $2 WHERE id = $3")
            .bind(used)
            .bind(i64::from(over))
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(over)
    }

    /// A workspace's agent log lines after `after`, optionally of one source.
    pub async fn agent_logs_after(
        &self,
        workspace_id: &str,
        source: Option<&str>,
        after: i64,
    ) -> Result<Vec<(LogRow, String)>> {
        let rows = sqlx::query(
            "SELECT id, created_at, source AS stage, level, output, source FROM agent_logs \
             WHERE workspace_id = $1 AND id > $2 AND ($3 = '' OR source = $3) ORDER BY id LIMIT 1000",
        )
        .bind(workspace_id)
        .bind(after)
        .bind(source.unwrap_or_default())
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| Ok((LogRow::from_row(r)?, r.try_get("source")?)))
            .collect()
    }

    /// Retention: agent log lines older than `before` (ms), then all but the newest `keep`.
    pub async fn prune_agent_logs(&self, before: i64, keep: i64) -> Result<u64> {
        super::audit::prune(&self.pool, "agent_logs", before, keep).await
    }
}
