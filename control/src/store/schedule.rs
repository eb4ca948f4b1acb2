//! Schedules: template settings, quiet hours, workspaces' autostart/autostop, deadlines,
//! activity and dormancy, and what the scheduler's tick reads.

use super::*;

/// A workspace the scheduler may act on: its owner and latest build.
#[derive(Debug, Clone)]
pub struct DueRow {
    pub id: String,
    pub name: String,
    pub template_id: String,
    pub owner_name: String,
    pub parameters: String,
    /// Suspended or deleted: nothing starts its workspaces.
    pub owner_suspended: bool,
    pub autostart: Option<String>,
    pub next_start_at: Option<i64>,
    pub deadline: Option<i64>,
    pub max_deadline: Option<i64>,
    pub last_used_at: Option<i64>,
    pub dormant_at: Option<i64>,
    pub build_number: i64,
    pub transition: String,
    pub version_id: String,
    pub job_status: String,
    pub completed_at: Option<i64>,
    pub provisioner: String,
}

const DUE_SELECT: &str = "SELECT w.id, w.name, w.template_id, w.parameters, w.autostart, w.next_start_at, w.deadline, w.max_deadline, \
            w.last_used_at, w.dormant_at, COALESCE(u.suspended_at, u.deleted_at) AS suspended_at, u.username, b.number, b.transition, b.template_version_id, \
            j.status AS job_status, j.completed_at, j.provisioner \
     FROM workspaces w JOIN users u ON u.id = w.owner_id \
     JOIN workspace_builds b ON b.workspace_id = w.id \
          AND b.number = (SELECT MAX(b2.number) FROM workspace_builds b2 WHERE b2.workspace_id = w.id) \
     JOIN provisioner_jobs j ON j.build_id = b.id";

impl DueRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(DueRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            template_id: r.try_get("template_id")?,
            owner_name: r.try_get("username")?,
            parameters: r.try_get("parameters")?,
            owner_suspended: r.try_get::<Option<i64>, _>("suspended_at")?.is_some(),
            autostart: r.try_get("autostart")?,
            next_start_at: r.try_get("next_start_at")?,
            deadline: r.try_get("deadline")?,
            max_deadline: r.try_get("max_deadline")?,
            last_used_at: r.try_get("last_used_at")?,
            dormant_at: r.try_get("dormant_at")?,
            build_number: r.try_get("number")?,
            transition: r.try_get("transition")?,
            version_id: r.try_get("template_version_id")?,
            job_status: r.try_get("job_status")?,
            completed_at: r.try_get("completed_at")?,
            provisioner: r.try_get("provisioner")?,
        })
    }

    /// The latest build is a start that succeeded.
    pub fn is_up(&self) -> bool {
        self.transition == "start" && self.job_status == "succeeded"
    }

    pub fn is_stopped(&self) -> bool {
        self.transition == "stop" && self.job_status == "succeeded"
    }

    /// The latest build has finished (no build is pending or running).
    pub fn settled(&self) -> bool {
        matches!(
            self.job_status.as_str(),
            "succeeded" | "failed" | "canceled"
        )
    }
}

/// A build the scheduler queues after build `after` of a workspace.
#[derive(Debug, Clone)]
pub struct AutoBuild {
    pub workspace_id: String,
    pub after: i64,
    pub transition: String,
    pub version_id: String,
    pub provisioner: String,
    pub params: Option<String>,
    pub reason: String,
}

/// What [`Store::queue_auto_builds`] did for one [`AutoBuild`].
#[derive(Debug, Clone)]
pub struct AutoQueued {
    pub workspace_id: String,
    /// `None`: another tick or a person queued a build first; nothing was done.
    pub build_id: Option<String>,
    /// The agents revoked (a stop or delete), each with a stop order queued first.
    pub revoked: Vec<String>,
}

impl Store {
    /// Queues the scheduler's builds in one transaction: each build and its job; for a stop or
    /// delete, a stop order for the workspace's live agents, then their revocation and the
    /// removal of unspent bootstrap tokens. A build some other tick queued first is skipped.
    pub async fn queue_auto_builds(&self, items: &[AutoBuild]) -> Result<Vec<AutoQueued>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            if let Some(p) = &it.params {
                sqlx::query("UPDATE workspaces SET parameters = $1 WHERE id = $2")
                    .bind(p)
                    .bind(&it.workspace_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let build_id = insert_build(
                &mut tx,
                &it.workspace_id,
                it.after + 1,
                &it.transition,
                &it.version_id,
                false,
                None,
                &it.provisioner,
                &it.reason,
                now,
            )
            .await?;
            let mut revoked = Vec::new();
            if build_id.is_some() && it.transition != "start" {
                sqlx::query(
                    "INSERT INTO agent_commands (agent_id, kind, created_at) \
                     SELECT id, 'stop', $1 FROM agents WHERE workspace_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&it.workspace_id)
                .execute(&mut *tx)
                .await?;
                let rows = sqlx::query(
                    "UPDATE agents SET revoked_at = $1, lifecycle = 'off' WHERE workspace_id = $2 AND revoked_at IS NULL RETURNING id",
                )
                .bind(now)
                .bind(&it.workspace_id)
                .fetch_all(&mut *tx)
                .await?;
                for r in &rows {
                    revoked.push(r.try_get("id")?);
                }
                sqlx::query(
                    "DELETE FROM bootstrap_tokens WHERE workspace_id = $1 AND used_at IS NULL",
                )
                .bind(&it.workspace_id)
                .execute(&mut *tx)
                .await?;
            }
            out.push(AutoQueued {
                workspace_id: it.workspace_id.clone(),
                build_id,
                revoked,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn due(&self, filter: &str, binds: &[&dyn BindValue]) -> Result<Vec<DueRow>> {
        let sql = format!("{DUE_SELECT} WHERE w.deleted = 0 AND {filter}");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.bind_to(q);
        }
        let rows = q.fetch_all(self.db()).await?;
        rows.iter().map(DueRow::from_row).collect()
    }

    /// Running workspaces whose deadline has passed.
    pub async fn due_stops(&self, now: i64) -> Result<Vec<DueRow>> {
        self.due("w.deadline IS NOT NULL AND w.deadline <= $1", &[&now])
            .await
    }

    /// Workspaces whose autostart time has come.
    pub async fn due_autostarts(&self, now: i64) -> Result<Vec<DueRow>> {
        self.due(
            "w.next_start_at IS NOT NULL AND w.next_start_at <= $1",
            &[&now],
        )
        .await
    }

    /// Workspaces of `template_id` whose latest build, a start, failed before `cutoff`.
    pub async fn failed_before(&self, template_id: &str, cutoff: i64) -> Result<Vec<DueRow>> {
        self.due(
            "w.template_id = $1 AND j.status = 'failed' AND b.transition = 'start' AND j.completed_at <= $2",
            &[&template_id.to_string(), &cutoff],
        )
        .await
    }

    /// Workspaces of `template_id` not used since `cutoff` and not dormant yet.
    pub async fn unused_since(&self, template_id: &str, cutoff: i64) -> Result<Vec<DueRow>> {
        self.due(
            "w.template_id = $1 AND w.dormant_at IS NULL AND w.last_used_at <= $2",
            &[&template_id.to_string(), &cutoff],
        )
        .await
    }

    /// Workspaces of `template_id` dormant since before `cutoff`.
    pub async fn dormant_before(&self, template_id: &str, cutoff: i64) -> Result<Vec<DueRow>> {
        self.due(
            "w.template_id = $1 AND w.dormant_at IS NOT NULL AND w.dormant_at <= $2",
            &[&template_id.to_string(), &cutoff],
        )
        .await
    }

    /// Running workspaces (latest build a successful start) of a template or of an owner.
    pub async fn running_of(
        &self,
        template_id: Option<&str>,
        owner_id: Option<&str>,
    ) -> Result<Vec<DueRow>> {
        let up = "b.transition = 'start' AND j.status = 'succeeded'";
        match (template_id, owner_id) {
            (Some(t), _) => {
                self.due(&format!("{up} AND w.template_id = $1"), &[&t.to_string()])
                    .await
            }
            (None, Some(o)) => {
                self.due(&format!("{up} AND w.owner_id = $1"), &[&o.to_string()])
                    .await
            }
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Moves the next autostart from `old` to `new`; false when another tick already did.
    pub async fn claim_autostart(&self, id: &str, old: i64, new: Option<i64>) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE workspaces SET next_start_at = $1 WHERE id = $2 AND next_start_at = $3",
        )
        .bind(new)
        .bind(id)
        .bind(old)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks a workspace dormant if it still is unused since `cutoff`; false when it is not
    /// (used since, or another tick marked it).
    pub async fn mark_dormant(&self, id: &str, now: i64, cutoff: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE workspaces SET dormant_at = $1 WHERE id = $2 AND dormant_at IS NULL AND last_used_at <= $3",
        )
        .bind(now)
        .bind(id)
        .bind(cutoff)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Clears a deadline that no longer applies (the workspace is not running).
    pub async fn clear_deadline(&self, id: &str, was: i64) -> Result<()> {
        sqlx::query(
            "UPDATE workspaces SET deadline = NULL, max_deadline = NULL WHERE id = $1 AND deadline = $2",
        )
        .bind(id)
        .bind(was)
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn set_template_schedule(&self, template_id: &str, json: &str) -> Result<()> {
        sqlx::query("UPDATE templates SET schedule = $1 WHERE id = $2")
            .bind(json)
            .bind(template_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn set_quiet_hours(&self, user_id: &str, schedule: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET quiet_hours = $1 WHERE id = $2")
            .bind(schedule.map(str::to_string))
            .bind(user_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn set_autostart(
        &self,
        id: &str,
        schedule: Option<&str>,
        next_start_at: Option<i64>,
    ) -> Result<()> {
        sqlx::query("UPDATE workspaces SET autostart = $1, next_start_at = $2 WHERE id = $3")
            .bind(schedule.map(str::to_string))
            .bind(next_start_at)
            .bind(id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn set_autostop(&self, id: &str, autostop_ms: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE workspaces SET autostop_ms = $1 WHERE id = $2")
            .bind(autostop_ms)
            .bind(id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// A start build of `build_number` succeeded: its deadlines (unless a newer build exists).
    pub async fn set_deadlines(
        &self,
        id: &str,
        build_number: i64,
        deadline: Option<i64>,
        max_deadline: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE workspaces SET deadline = $1, max_deadline = $2 WHERE id = $3 \
             AND (SELECT MAX(number) FROM workspace_builds WHERE workspace_id = $3) = $4",
        )
        .bind(deadline)
        .bind(max_deadline)
        .bind(id)
        .bind(build_number)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Sets the deadline of a running workspace (`outpost schedule extend`).
    pub async fn set_deadline(&self, id: &str, deadline: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE workspaces SET deadline = $1 WHERE id = $2 AND deadline IS NOT NULL",
        )
        .bind(deadline)
        .bind(id)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Wakes a dormant workspace: it may start again and counts as used now.
    pub async fn activate(&self, id: &str, now: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE workspaces SET dormant_at = NULL, last_used_at = $1 WHERE id = $2 AND dormant_at IS NOT NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.db())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Activity: for each (workspace, when, deadline it may be pushed to), the last use moves
    /// forward and a deadline (if the workspace has one) moves out to at least the given one.
    /// A cleared deadline (a stop was queued) stays cleared.
    pub async fn record_activity(&self, batch: &[(String, i64, Option<i64>)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, at, bump_to) in batch {
            let used = "last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $1 THEN $1 ELSE last_used_at END";
            match bump_to {
                Some(to) => {
                    sqlx::query(&format!(
                        "UPDATE workspaces SET {used}, \
                           deadline = CASE WHEN deadline IS NULL OR deadline >= $2 THEN deadline ELSE $2 END \
                         WHERE id = $3"
                    ))
                    .bind(*at)
                    .bind(*to)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query(&format!("UPDATE workspaces SET {used} WHERE id = $2"))
                        .bind(*at)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// For activity: each workspace's max deadline and template schedule.
    pub async fn activity_targets(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<i64>, Option<String>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT w.id, w.max_deadline, t.schedule FROM workspaces w JOIN templates t ON t.id = w.template_id WHERE w.id IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(self.db()).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("max_deadline")?,
                    r.try_get("schedule")?,
                ))
            })
            .collect()
    }

    /// Every template's id, name and schedule (the tick reads them once).
    pub async fn template_schedules(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query("SELECT id, name, schedule FROM templates")
            .fetch_all(self.db())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?, r.try_get("schedule")?)))
            .collect()
    }
}

/// A value bound into a dynamic query (strings and integers).
trait BindValue: Sync {
    fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;
}

impl BindValue for i64 {
    fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        q.bind(*self)
    }
}

impl BindValue for String {
    fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        q.bind(self.as_str())
    }
}
