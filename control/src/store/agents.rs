//! Agents: identities, bootstrap tokens, certificates, liveness, SSH reports, commands.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    pub workspace_id: String,
    pub build_id: String,
    pub created_at: i64,
    pub first_connected_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub lifecycle: String,
    pub version: Option<String>,
    pub cert_serial: Option<String>,
    pub cert_expires_at: Option<i64>,
    pub stats: Option<String>,
    pub revoked_at: Option<i64>,
    pub ssh_host_key: Option<String>,
    pub ssh_addr: Option<String>,
    /// The certificate before the current one, accepted until `prev_cert_until` (renewal's
    /// overlap); any older one is refused.
    pub prev_cert_serial: Option<String>,
    pub prev_cert_until: Option<i64>,
}

/// An agent revoked or renewed lately ([`Store::agents_changed_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChange {
    pub id: String,
    pub revoked: bool,
    pub cert_serial: Option<String>,
}

impl Store {
    // ------------------------------------------------------------ agents

    /// The agent of a start build, made on first acquisition of its job.
    pub async fn ensure_agent(&self, workspace_id: &str, build_id: &str) -> Result<String> {
        if let Some(r) = sqlx::query("SELECT id FROM agents WHERE build_id = $1")
            .bind(build_id)
            .fetch_optional(self.db())
            .await?
        {
            return Ok(r.try_get("id")?);
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO agents (id, workspace_id, build_id, created_at, lifecycle) VALUES ($1, $2, $3, $4, 'created')",
        )
        .bind(&id)
        .bind(workspace_id)
        .bind(build_id)
        .bind(now_ms())
        .execute(self.db())
        .await?;
        Ok(id)
    }

    /// Stores a bootstrap token (hash only) and drops the workspace's older unused tokens.
    pub async fn create_bootstrap_token(
        &self,
        token_id: &str,
        secret_hash: &str,
        workspace_id: &str,
        agent_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM bootstrap_tokens WHERE workspace_id = $1 AND used_at IS NULL")
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO bootstrap_tokens (id, secret_hash, workspace_id, agent_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_id)
        .bind(secret_hash)
        .bind(workspace_id)
        .bind(agent_id)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Consumes a bootstrap token atomically: of concurrent redemptions exactly one gets the
    /// (workspace id, agent id); a used, expired, unknown or wrong-secret token gets None.
    /// Spends a bootstrap token for the key `key_hash`. The same key may spend it again for
    /// [`BOOTSTRAP_RETRY_MS`] after the first use: an agent whose answer was lost (control died
    /// mid-request) retries with its key and gets a certificate for that key; any other key is
    /// refused.
    pub async fn consume_bootstrap_token(
        &self,
        token_id: &str,
        secret_hash: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "UPDATE bootstrap_tokens SET used_at = COALESCE(used_at, $1), used_key = $4 \
             WHERE id = $2 AND secret_hash = $3 AND expires_at > $1 \
             AND (used_at IS NULL OR (used_key = $4 AND used_at > $5)) \
             RETURNING workspace_id, agent_id",
        )
        .bind(now)
        .bind(token_id)
        .bind(secret_hash)
        .bind(key_hash)
        .bind(now - BOOTSTRAP_RETRY_MS)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| Ok((r.try_get("workspace_id")?, r.try_get("agent_id")?)))
            .transpose()
    }

    pub async fn bootstrap_token_secret_hash(&self, token_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret_hash FROM bootstrap_tokens WHERE id = $1")
            .bind(token_id)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| r.try_get("secret_hash")).transpose()?)
    }

    pub async fn set_agent_certificate(
        &self,
        agent_id: &str,
        serial: &str,
        expires_at: i64,
        version: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET cert_serial = $1, cert_expires_at = $2, version = $3, lifecycle = 'starting' WHERE id = $4",
        )
        .bind(serial)
        .bind(expires_at)
        .bind(version.map(str::to_string))
        .bind(agent_id)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Records a renewed certificate (same identity) unless the agent was revoked meanwhile; the
    /// one it replaces stays valid until `overlap_until`.
    pub async fn renew_agent_certificate(
        &self,
        agent_id: &str,
        serial: &str,
        expires_at: i64,
        overlap_until: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE agents SET prev_cert_serial = cert_serial, prev_cert_until = $1, cert_serial = $2, cert_expires_at = $3 WHERE id = $4 AND revoked_at IS NULL",
        )
        .bind(overlap_until)
        .bind(serial)
        .bind(expires_at)
        .bind(agent_id)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn agent(&self, agent_id: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query("SELECT * FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| AgentRow::from_row(&r)).transpose()?)
    }

    /// Records that the agent was seen; the first time also sets `first_connected_at`.
    pub async fn agent_seen(&self, agent_id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET last_seen_at = $1, first_connected_at = COALESCE(first_connected_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(agent_id)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Writes a batch of liveness updates (last seen, lifecycle, stats) in one statement (a
    /// round trip for the batch, not one per agent: at 50,000 agents the replicas flushed
    /// about 5,000 single-row updates a second). `last_seen_at` only moves forward.
    pub async fn agent_liveness_batch(
        &self,
        batch: &[(String, i64, Option<String>, Option<String>)],
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // VALUES names its columns column1.. in both dialects; UPDATE .. FROM is in both
        // (SQLite since 3.33).
        let rows: Vec<String> = (0..batch.len())
            .map(|i| {
                let b = i * 4;
                format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
            })
            .collect();
        let sql = format!(
            "UPDATE agents SET \
                last_seen_at = CASE WHEN agents.last_seen_at IS NULL OR agents.last_seen_at < v.column2 \
                    THEN v.column2 ELSE agents.last_seen_at END, \
                first_connected_at = COALESCE(agents.first_connected_at, v.column2), \
                lifecycle = COALESCE(v.column3, agents.lifecycle), \
                stats = COALESCE(v.column4, agents.stats) \
             FROM (VALUES {}) AS v \
             WHERE agents.id = v.column1 AND agents.revoked_at IS NULL",
            rows.join(", ")
        );
        // Not kept prepared: its text changes with the batch's size, and each size kept would
        // push another query out of the connection's statement cache.
        let mut q = sqlx::query(&sql).persistent(false);
        for (id, seen, lifecycle, stats) in batch {
            q = q
                .bind(id.clone())
                .bind(*seen)
                .bind(lifecycle.clone())
                .bind(stats.clone());
        }
        q.execute(self.db()).await?;
        Ok(())
    }

    pub async fn agent_heartbeat(
        &self,
        agent_id: &str,
        now: i64,
        lifecycle: Option<&str>,
        stats_json: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET last_seen_at = $1, first_connected_at = COALESCE(first_connected_at, $1), \
                lifecycle = COALESCE($2, lifecycle), stats = $3 WHERE id = $4",
        )
        .bind(now)
        .bind(lifecycle.map(str::to_string))
        .bind(stats_json)
        .bind(agent_id)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// What the agent reports of its SSH server: host key and listen address.
    pub async fn set_agent_ssh(
        &self,
        agent_id: &str,
        host_key: &str,
        addr: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE agents SET ssh_host_key = $1, ssh_addr = $2 WHERE id = $3 AND revoked_at IS NULL")
            .bind(host_key)
            .bind(addr.map(str::to_string))
            .bind(agent_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Revokes every agent identity of a workspace (stop, delete).
    pub async fn revoke_agents(&self, workspace_id: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE agents SET revoked_at = $1, lifecycle = 'off' WHERE workspace_id = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(workspace_id)
        .fetch_all(self.db())
        .await?;
        sqlx::query("DELETE FROM bootstrap_tokens WHERE workspace_id = $1 AND used_at IS NULL")
            .bind(workspace_id)
            .execute(self.db())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Sets the lifecycle directly (a stopping, revoked agent reporting how its stop ended).
    pub async fn set_agent_lifecycle(&self, agent_id: &str, lifecycle: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET lifecycle = $1 WHERE id = $2")
            .bind(lifecycle)
            .bind(agent_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Revokes the workspace's agents other than `keep` (a new start build replaces them).
    pub async fn revoke_agents_except(
        &self,
        workspace_id: &str,
        keep: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE agents SET revoked_at = $1, lifecycle = 'off' WHERE workspace_id = $2 AND id <> $3 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now_ms())
        .bind(workspace_id)
        .bind(keep)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The live agents of a workspace (not revoked).
    pub async fn live_agents(&self, workspace_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT id FROM agents WHERE workspace_id = $1 AND revoked_at IS NULL")
                .bind(workspace_id)
                .fetch_all(self.db())
                .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn enqueue_command(&self, agent_id: &str, kind: &str) -> Result<()> {
        sqlx::query("INSERT INTO agent_commands (agent_id, kind, created_at) VALUES ($1, $2, $3)")
            .bind(agent_id)
            .bind(kind)
            .bind(now_ms())
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// The agents with a command not yet delivered, at most `limit` of them.
    pub async fn agents_with_commands(&self, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT agent_id FROM agent_commands WHERE delivered_at IS NULL LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("agent_id")?)).collect()
    }

    /// The agents revoked at or after `since` (ms), or renewed then (their previous
    /// certificate is honoured until `since` or later), at most `limit` of them.
    pub async fn agents_changed_since(&self, since: i64, limit: i64) -> Result<Vec<AgentChange>> {
        let rows = sqlx::query(
            "SELECT id, revoked_at, cert_serial FROM agents \
             WHERE revoked_at >= $1 OR prev_cert_until >= $1 LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AgentChange {
                    id: r.try_get("id")?,
                    revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                    cert_serial: r.try_get("cert_serial")?,
                })
            })
            .collect()
    }

    /// Takes the agent's undelivered commands, marking them delivered.
    pub async fn take_commands(&self, agent_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE agent_commands SET delivered_at = $1 WHERE agent_id = $2 AND delivered_at IS NULL RETURNING id, kind",
        )
        .bind(now_ms())
        .bind(agent_id)
        .fetch_all(self.db())
        .await?;
        let mut cmds: Vec<(i64, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("kind")?)))
            .collect::<Result<_>>()?;
        cmds.sort();
        Ok(cmds.into_iter().map(|(_, k)| k).collect())
    }
}
