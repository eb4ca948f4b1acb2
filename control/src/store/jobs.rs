//! Provisioner jobs: acquisition (SKIP LOCKED on PostgreSQL), leases, logs, completion.

use super::*;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub build_id: String,
    pub status: String,
    pub daemon_id: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub error: Option<String>,
}

impl JobRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(JobRow {
            id: r.try_get("id")?,
            build_id: r.try_get("build_id")?,
            status: r.try_get("status")?,
            daemon_id: r.try_get("daemon_id")?,
            attempts: r.try_get("attempts")?,
            cancel_requested: flag(r, "cancel_requested")?,
            error: r.try_get("error")?,
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub id: i64,
    pub created_at: i64,
    pub stage: String,
    pub level: String,
    pub output: String,
}

impl Store {
    // ------------------------------------------------------------ provisioner jobs

    /// Takes the oldest pending job for one of `provisioners`, leasing it to `daemon_id`.
    pub async fn acquire_job(
        &self,
        daemon_id: &str,
        provisioners: &[String],
        scope: &super::JobScope,
        lease_ms: i64,
    ) -> Result<Option<String>> {
        let now = now_ms();
        // Provisioner names are validated identifiers, so they can be inlined as literals.
        let list = provisioners
            .iter()
            .filter(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(",");
        if list.is_empty() {
            return Ok(None);
        }
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE OF j SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // Only jobs whose template version's tags the daemon carries, within its key's scope.
        let scope = scope.sql();
        let sql = format!(
            "UPDATE provisioner_jobs SET status = 'running', daemon_id = $1, lease_expires_at = $2, \
                 started_at = $3, attempts = attempts + 1 \
             WHERE id = (SELECT j.id FROM provisioner_jobs j \
                         WHERE j.status = 'pending' AND j.provisioner IN ({list}){scope} \
                         ORDER BY j.created_at LIMIT 1{lock}) AND status = 'pending' \
             RETURNING id"
        );
        let row = sqlx::query(&sql)
            .bind(daemon_id)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query("SELECT * FROM provisioner_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| JobRow::from_row(&r)).transpose()
    }

    /// Extends the lease of a job held by `daemon_id` and appends logs. Returns the job
    /// (NotFound when the daemon does not hold it any more).
    pub async fn job_update(
        &self,
        job_id: &str,
        daemon_id: &str,
        lease_ms: i64,
        logs: &[(String, String, String)],
    ) -> Result<JobRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET lease_expires_at = $1 \
             WHERE id = $2 AND daemon_id = $3 AND status IN ('running', 'canceling')",
        )
        .bind(now + lease_ms)
        .bind(job_id)
        .bind(daemon_id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        for (stage, level, output) in logs {
            sqlx::query(
                "INSERT INTO build_logs (job_id, created_at, stage, level, output) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job_id)
            .bind(now)
            .bind(stage)
            .bind(level)
            .bind(output)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query("SELECT * FROM provisioner_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        JobRow::from_row(&row)
    }

    pub async fn append_log(
        &self,
        job_id: &str,
        stage: &str,
        level: &str,
        output: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO build_logs (job_id, created_at, stage, level, output) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job_id)
        .bind(now_ms())
        .bind(stage)
        .bind(level)
        .bind(output)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Finishes a job held by `daemon_id`. On success records resources and provisioner state.
    pub async fn complete_job(
        &self,
        job_id: &str,
        daemon_id: &str,
        status: &str,
        error: Option<&str>,
        resources: &[(String, String, bool, String)],
        state_json: Option<&str>,
    ) -> Result<JobRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = $1, error = $2, completed_at = $3, lease_expires_at = NULL \
             WHERE id = $4 AND daemon_id = $5 AND status IN ('running', 'canceling')",
        )
        .bind(status)
        .bind(error.map(str::to_string))
        .bind(now)
        .bind(job_id)
        .bind(daemon_id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(
            "SELECT b.id AS build_id, b.workspace_id AS workspace_id FROM provisioner_jobs j \
             JOIN workspace_builds b ON b.id = j.build_id WHERE j.id = $1",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        let build_id: String = row.try_get("build_id")?;
        let workspace_id: String = row.try_get("workspace_id")?;
        if status == "succeeded" {
            for (name, kind, persistent, details) in resources {
                sqlx::query(
                    "INSERT INTO workspace_resources (id, build_id, workspace_id, name, kind, persistent, details) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(new_id())
                .bind(&build_id)
                .bind(&workspace_id)
                .bind(name)
                .bind(kind)
                .bind(b(*persistent))
                .bind(details)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(s) = state_json {
                sqlx::query("UPDATE workspaces SET provisioner_state = $1 WHERE id = $2")
                    .bind(s)
                    .bind(&workspace_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let job = sqlx::query("SELECT * FROM provisioner_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        JobRow::from_row(&job)
    }

    /// Marks a workspace deleted (after its delete build succeeded); its name becomes free.
    pub async fn mark_workspace_deleted(&self, workspace_id: &str) -> Result<()> {
        sqlx::query("UPDATE workspaces SET deleted = 1 WHERE id = $1")
            .bind(workspace_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Jobs whose lease ran out: their daemon died. Returns (job id, attempts, status).
    pub async fn expired_jobs(&self, now: i64) -> Result<Vec<(String, i64, String)>> {
        let rows = sqlx::query(
            "SELECT id, attempts, status FROM provisioner_jobs \
             WHERE status IN ('running', 'canceling') AND lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("attempts")?,
                    r.try_get("status")?,
                ))
            })
            .collect()
    }

    /// Puts an expired job back in the queue (only if still expired: one reaper wins).
    pub async fn requeue_expired(&self, job_id: &str, now: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = 'pending', daemon_id = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND status = 'running' AND lease_expires_at < $2",
        )
        .bind(job_id)
        .bind(now)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Ends an expired job for good.
    pub async fn fail_expired(
        &self,
        job_id: &str,
        now: i64,
        status: &str,
        error: &str,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = $1, error = $2, completed_at = $3, lease_expires_at = NULL \
             WHERE id = $4 AND status IN ('running', 'canceling') AND lease_expires_at < $3",
        )
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(job_id)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn logs_after(&self, job_id: &str, after: i64) -> Result<Vec<LogRow>> {
        let rows = sqlx::query(
            "SELECT * FROM build_logs WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT 1000",
        )
        .bind(job_id)
        .bind(after)
        .fetch_all(self.db())
        .await?;
        Ok(rows
            .iter()
            .map(LogRow::from_row)
            .collect::<sqlx::Result<_>>()?)
    }
}
