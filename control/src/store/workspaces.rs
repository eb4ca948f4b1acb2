//! Workspaces and their builds (each build queues a provisioner job).

use super::*;

pub(super) const BUILD_SELECT: &str =
    "SELECT b.id, b.workspace_id, b.number, b.transition, b.template_version_id, b.then_start, b.created_at, b.reason, \
            (SELECT iu.username FROM users iu WHERE iu.id = b.initiator_id) AS initiator_name, \
            v.version AS template_version, j.id AS job_id, j.status AS job_status, j.error AS job_error, \
            j.started_at AS job_started_at, j.completed_at AS job_completed_at, j.provisioner AS provisioner \
     FROM workspace_builds b JOIN provisioner_jobs j ON j.build_id = b.id \
     JOIN template_versions v ON v.id = b.template_version_id";

#[derive(Debug, Clone)]
pub struct BuildRow {
    pub id: String,
    pub workspace_id: String,
    pub number: i64,
    pub transition: String,
    pub template_version_id: String,
    pub template_version: i64,
    pub then_start: bool,
    /// `initiator` (a person) or the scheduler's reason.
    pub reason: String,
    pub initiator: Option<String>,
    pub created_at: i64,
    pub job_id: String,
    pub job_status: String,
    pub job_error: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub provisioner: String,
}

impl BuildRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(BuildRow {
            id: r.try_get("id")?,
            workspace_id: r.try_get("workspace_id")?,
            number: r.try_get("number")?,
            transition: r.try_get("transition")?,
            template_version_id: r.try_get("template_version_id")?,
            template_version: r.try_get("template_version")?,
            then_start: flag(r, "then_start")?,
            reason: r
                .try_get::<Option<String>, _>("reason")?
                .unwrap_or_else(|| "initiator".into()),
            initiator: r.try_get("initiator_name")?,
            created_at: r.try_get("created_at")?,
            job_id: r.try_get("job_id")?,
            job_status: r.try_get("job_status")?,
            job_error: r.try_get("job_error")?,
            started_at: r.try_get("job_started_at")?,
            completed_at: r.try_get("job_completed_at")?,
            provisioner: r.try_get("provisioner")?,
        })
    }
}

/// A workspace with its owner, template and the ids of its latest build and newest agent.
pub(super) const WORKSPACE_SELECT: &str =
    "SELECT w.id, w.owner_id, w.name, w.template_id, w.parameters, w.provisioner_state, w.deleted, w.created_at, \
            w.autostart, w.autostop_ms, w.next_start_at, w.deadline, w.max_deadline, w.last_used_at, w.dormant_at, \
            u.username AS owner_name, t.name AS template_name, t.active_version_id AS active_version_id, t.schedule AS template_schedule, \
            (SELECT b.id FROM workspace_builds b WHERE b.workspace_id = w.id ORDER BY b.number DESC LIMIT 1) AS latest_build_id, \
            (SELECT a.id FROM agents a WHERE a.workspace_id = w.id ORDER BY a.created_at DESC LIMIT 1) AS latest_agent_id \
     FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id";

#[derive(Debug, Clone)]
pub struct WorkspaceRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub name: String,
    pub template_id: String,
    pub template_name: String,
    pub active_version_id: Option<String>,
    pub parameters: String,
    pub provisioner_state: String,
    pub deleted: bool,
    pub created_at: i64,
    pub latest_build_id: String,
    pub latest_agent_id: Option<String>,
    /// The template's schedule settings (JSON; `NULL`: the defaults).
    pub template_schedule: Option<String>,
    pub times: ScheduleTimes,
}

/// A workspace's schedule columns.
#[derive(Debug, Clone, Default)]
pub struct ScheduleTimes {
    pub autostart: Option<String>,
    pub autostop_ms: Option<i64>,
    pub next_start_at: Option<i64>,
    pub deadline: Option<i64>,
    pub max_deadline: Option<i64>,
    pub last_used_at: Option<i64>,
    pub dormant_at: Option<i64>,
}

impl WorkspaceRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        let latest: Option<String> = r.try_get("latest_build_id")?;
        Ok(WorkspaceRow {
            id: r.try_get("id")?,
            owner_id: r.try_get("owner_id")?,
            owner_name: r.try_get("owner_name")?,
            name: r.try_get("name")?,
            template_id: r.try_get("template_id")?,
            template_name: r.try_get("template_name")?,
            active_version_id: r.try_get("active_version_id")?,
            parameters: r.try_get("parameters")?,
            provisioner_state: r.try_get("provisioner_state")?,
            deleted: flag(r, "deleted")?,
            created_at: r.try_get("created_at")?,
            latest_build_id: latest
                .ok_or_else(|| StoreError::Corrupt("workspace without a build".into()))?,
            latest_agent_id: r.try_get("latest_agent_id")?,
            template_schedule: r.try_get("template_schedule")?,
            times: ScheduleTimes {
                autostart: r.try_get("autostart")?,
                autostop_ms: r.try_get("autostop_ms")?,
                next_start_at: r.try_get("next_start_at")?,
                deadline: r.try_get("deadline")?,
                max_deadline: r.try_get("max_deadline")?,
                last_used_at: r.try_get("last_used_at")?,
                dormant_at: r.try_get("dormant_at")?,
            },
        })
    }
}

#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub name: String,
    pub kind: String,
    pub persistent: bool,
    pub details: String,
}

impl ResourceRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(ResourceRow {
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            persistent: flag(r, "persistent")?,
            details: r.try_get("details")?,
        })
    }
}

impl Store {
    // ------------------------------------------------------------ workspaces and builds

    /// Creates a workspace and its first (start) build and job, atomically.
    pub async fn create_workspace(
        &self,
        owner_id: &str,
        name: &str,
        template_id: &str,
        version_id: &str,
        provisioner: &str,
        parameters_json: &str,
    ) -> Result<String> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workspaces (id, owner_id, name, template_id, parameters, provisioner_state, deleted, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, 'null', 0, $6, $6)",
        )
        .bind(&id)
        .bind(owner_id)
        .bind(name)
        .bind(template_id)
        .bind(parameters_json)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_to_conflict(e, &format!("you already have a workspace named {name:?}")))?;
        insert_build(
            &mut tx,
            &id,
            1,
            "start",
            version_id,
            false,
            Some(owner_id),
            provisioner,
            "initiator",
            now,
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("a new workspace already had a build".into()))?;
        tx.commit().await?;
        Ok(id)
    }

    /// Queues a new build unless one is pending or running (Conflict), atomically.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_build(
        &self,
        workspace_id: &str,
        expected_latest: i64,
        transition: &str,
        version_id: &str,
        then_start: bool,
        initiator: Option<&str>,
        provisioner: &str,
        parameters_json: Option<&str>,
        reason: &str,
    ) -> Result<String> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        if let Some(p) = parameters_json {
            sqlx::query("UPDATE workspaces SET parameters = $1 WHERE id = $2")
                .bind(p)
                .bind(workspace_id)
                .execute(&mut *tx)
                .await?;
        }
        // The unique (workspace_id, number) constraint refuses a concurrent second build.
        let build_id = insert_build(
            &mut tx,
            workspace_id,
            expected_latest + 1,
            transition,
            version_id,
            then_start,
            initiator,
            provisioner,
            reason,
            now,
        )
        .await?
        .ok_or_else(|| StoreError::Conflict("another build was queued at the same time".into()))?;
        tx.commit().await?;
        Ok(build_id)
    }

    pub async fn workspace_by_name(
        &self,
        owner_id: &str,
        name: &str,
    ) -> Result<Option<WorkspaceRow>> {
        let row = sqlx::query(&format!(
            "{WORKSPACE_SELECT} WHERE w.owner_id = $1 AND w.name = $2 AND w.deleted = 0"
        ))
        .bind(owner_id)
        .bind(name)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| WorkspaceRow::from_row(&r)).transpose()
    }

    pub async fn workspace_by_id(&self, id: &str) -> Result<Option<WorkspaceRow>> {
        let row = sqlx::query(&format!("{WORKSPACE_SELECT} WHERE w.id = $1"))
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| WorkspaceRow::from_row(&r)).transpose()
    }

    pub async fn list_workspaces(&self, owner_id: Option<&str>) -> Result<Vec<WorkspaceRow>> {
        let rows = match owner_id {
            Some(o) => {
                sqlx::query(&format!(
                    "{WORKSPACE_SELECT} WHERE w.owner_id = $1 AND w.deleted = 0 ORDER BY w.name"
                ))
                .bind(o)
                .fetch_all(self.db())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{WORKSPACE_SELECT} WHERE w.deleted = 0 ORDER BY w.name"
                ))
                .fetch_all(self.db())
                .await?
            }
        };
        rows.iter().map(WorkspaceRow::from_row).collect()
    }

    pub async fn build(&self, build_id: &str) -> Result<Option<BuildRow>> {
        let row = sqlx::query(&format!("{BUILD_SELECT} WHERE b.id = $1"))
            .bind(build_id)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| BuildRow::from_row(&r)).transpose()
    }

    pub async fn resources(&self, build_id: &str) -> Result<Vec<ResourceRow>> {
        let rows =
            sqlx::query("SELECT * FROM workspace_resources WHERE build_id = $1 ORDER BY name")
                .bind(build_id)
                .fetch_all(self.db())
                .await?;
        rows.iter().map(ResourceRow::from_row).collect()
    }

    /// Cancels the workspace's latest build: a pending job is canceled at once, a running one
    /// becomes canceling until its provisioner stops.
    pub async fn cancel_job(&self, job_id: &str) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = 'canceled', cancel_requested = 1, completed_at = $1 \
             WHERE id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(job_id)
        .execute(self.db())
        .await?;
        if res.rows_affected() == 1 {
            return Ok(true);
        }
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = 'canceling', cancel_requested = 1 WHERE id = $1 AND status = 'running'",
        )
        .bind(job_id)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }
}
