//! The scheduler: one tick a minute (`--schedule-interval`) stops workspaces past their
//! deadline, starts those whose autostart time came, stops failed ones after the failure
//! cleanup, makes unused ones dormant and deletes long-dormant ones. Every action is a normal
//! build with a reason, and an audit event.
//!
//! A tick acts on a workspace at most once even when ticks overlap or several servers share the
//! store: a build is queued as "the build after number N" (the store's unique build number
//! refuses a second), the next autostart moves forward with a compare-and-set, and a workspace
//! becomes dormant only if it still is not. Activity (sessions, relays, app traffic) is
//! collected in memory and written in batches with the liveness.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use outpost_api::{TemplateManifest, TemplateSchedule};

use super::AppState;
use crate::schedule::{self, TzCron};
use crate::store::{now_ms, AutoBuild, Dialect, DueRow, StoreError};
use outpost_common::LockExt;

/// What one tick did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TickReport {
    /// Workspaces looked at.
    pub examined: usize,
    /// Builds queued.
    pub queued: usize,
    /// Workspaces made dormant.
    pub dormant: usize,
}

/// Ticks until the process ends.
pub(super) async fn run(state: AppState) {
    let every = state.config.schedule_interval;
    loop {
        tokio::time::sleep(every).await;
        // One replica ticks: the leader (a tick is safe twice over, but not worth doing twice).
        if !state.cluster.is_leader() {
            continue;
        }
        let started = std::time::Instant::now();
        match tick(&state, now_ms()).await {
            Ok(r) => {
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                if r.examined > 0 {
                    tracing::info!(
                        examined = r.examined,
                        queued = r.queued,
                        dormant = r.dormant,
                        elapsed_ms,
                        "schedule tick"
                    )
                } else {
                    tracing::debug!(elapsed_ms, "schedule tick: nothing due")
                }
            }
            Err(e) => tracing::warn!(error = %e, "schedule tick failed"),
        }
    }
}

/// Per tick: the templates' schedules and the provisioner and manifest of each version used.
struct Ctx<'a> {
    state: &'a AppState,
    now: i64,
    templates: HashMap<String, TemplateSchedule>,
    manifests: tokio::sync::Mutex<HashMap<String, Option<TemplateManifest>>>,
    /// Builds planned this tick, with what the audit log says of each.
    pending: std::sync::Mutex<Vec<(AutoBuild, String, String)>>,
}

impl Ctx<'_> {
    fn template(&self, id: &str) -> TemplateSchedule {
        self.templates.get(id).cloned().unwrap_or_default()
    }

    async fn manifest(&self, version_id: &str) -> Result<Option<TemplateManifest>, StoreError> {
        if let Some(m) = self.manifests.lock().await.get(version_id) {
            return Ok(m.clone());
        }
        let m = self
            .state
            .store
            .template_version(version_id)
            .await?
            .and_then(|v| serde_json::from_str::<TemplateManifest>(&v.manifest).ok());
        self.manifests
            .lock()
            .await
            .insert(version_id.to_string(), m.clone());
        Ok(m)
    }

    /// Plans `transition` after the row's latest build; [`Ctx::flush`] queues the plans in
    /// batches, skipping any workspace another tick (or a person) gave a build first.
    async fn queue(
        &self,
        w: &DueRow,
        transition: &str,
        target: Target<'_>,
        reason: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let build = AutoBuild {
            workspace_id: w.id.clone(),
            after: w.build_number,
            transition: transition.into(),
            version_id: target.version_id.into(),
            provisioner: target.provisioner.into(),
            params: target.params.map(str::to_string),
            reason: reason.into(),
        };
        self.pending.locked().push((
            build,
            format!("{}: {transition} ({reason}: {why})", w.name),
            super::audit::workspace_target(&w.owner_name, &w.name),
        ));
        Ok(true)
    }

    /// Queues what was planned, `BATCH` builds per transaction; the number queued.
    async fn flush(&self) -> Result<usize, StoreError> {
        let plans = std::mem::take(&mut *self.pending.locked());
        let mut queued = 0;
        for chunk in plans.chunks(BATCH) {
            let builds: Vec<AutoBuild> = chunk.iter().map(|(b, _, _)| b.clone()).collect();
            let done = self.state.store.queue_auto_builds(&builds).await?;
            for ((b, what, target), q) in chunk.iter().zip(done) {
                if q.build_id.is_none() {
                    continue;
                }
                queued += 1;
                for agent in &q.revoked {
                    self.state.forget_agent(agent);
                    self.state.audit.record(
                        "agent.revoke",
                        "revoked",
                        "control",
                        Some(&format!("agent:{agent}")),
                        Some(&b.workspace_id),
                        Some(agent),
                        None,
                        format!("{} by the scheduler ({})", b.transition, b.reason),
                    );
                }
                self.state.audit.record(
                    &format!("workspace.{}", b.reason.replace(' ', "_")),
                    "queued",
                    "scheduler",
                    Some(target),
                    Some(&b.workspace_id),
                    None,
                    None,
                    what.clone(),
                );
            }
        }
        Ok(queued)
    }
}

/// An audit event of the scheduler about workspace `w`.
fn scheduler_event(state: &AppState, w: &DueRow, action: &str, outcome: &str, details: String) {
    state.audit.record(
        action,
        outcome,
        "scheduler",
        Some(&super::audit::workspace_target(&w.owner_name, &w.name)),
        Some(&w.id),
        None,
        None,
        details,
    );
}

/// Builds queued per transaction.
const BATCH: usize = 250;

/// What a queued build runs: a template version, its provisioner, the parameters.
struct Target<'a> {
    version_id: &'a str,
    provisioner: &'a str,
    params: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The version the workspace runs now (stop, delete).
    fn current(w: &'a DueRow) -> Self {
        Target {
            version_id: &w.version_id,
            provisioner: &w.provisioner,
            params: None,
        }
    }
}

/// How many workspaces a tick handles at once (PostgreSQL has a pool; SQLite one writer).
fn parallel(state: &AppState) -> usize {
    match state.store.dialect() {
        Dialect::Sqlite => 1,
        Dialect::Postgres => 8,
    }
}

/// One pass over everything due at `now`.
pub async fn tick(state: &AppState, now: i64) -> Result<TickReport, StoreError> {
    let templates: HashMap<String, TemplateSchedule> = state
        .store
        .template_schedules()
        .await?
        .into_iter()
        .map(|(id, _, s)| (id, schedule::template_schedule(s.as_deref())))
        .collect();
    let ctx = Ctx {
        state,
        now,
        templates,
        manifests: Default::default(),
        pending: Default::default(),
    };
    let mut report = TickReport::default();
    let n = parallel(state);

    // Unused workspaces become dormant first: one that does now must not autostart below.
    for (tid, t) in &ctx.templates {
        if t.dormancy_threshold_ms > 0 {
            let cutoff = now - t.dormancy_threshold_ms;
            let due = state.store.unused_since(tid, cutoff).await?;
            report.examined += due.len();
            for w in &due {
                if state.store.mark_dormant(&w.id, now, cutoff).await? {
                    report.dormant += 1;
                    scheduler_event(
                        state,
                        w,
                        "workspace.dormant",
                        "dormant",
                        format!(
                            "{}: unused for {} (dormancy threshold)",
                            w.name,
                            crate::schedule::fmt_duration(now - w.last_used_at.unwrap_or(now))
                        ),
                    );
                }
            }
        }
    }

    let due = state.store.due_stops(now).await?;
    report.examined += due.len();
    let c = &ctx;
    let results: Vec<Result<bool, StoreError>> = futures_util::stream::iter(due)
        .map(move |w| async move { deadline_passed(c, &w).await })
        .buffer_unordered(n)
        .collect()
        .await;
    check(results)?;

    let due = state.store.due_autostarts(now).await?;
    report.examined += due.len();
    let c = &ctx;
    let results: Vec<Result<bool, StoreError>> = futures_util::stream::iter(due)
        .map(move |w| async move { autostart(c, &w).await })
        .buffer_unordered(n)
        .collect()
        .await;
    check(results)?;

    let ids: BTreeMap<String, TemplateSchedule> = ctx
        .templates
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (tid, t) in &ids {
        if t.failure_cleanup_ms > 0 {
            let due = state
                .store
                .failed_before(tid, now - t.failure_cleanup_ms)
                .await?;
            report.examined += due.len();
            for w in &due {
                let why = format!(
                    "failed for longer than {}",
                    crate::schedule::fmt_duration(t.failure_cleanup_ms)
                );
                ctx.queue(w, "stop", Target::current(w), "failure cleanup", &why)
                    .await?;
            }
        }
        if t.dormancy_threshold_ms > 0 || t.dormancy_auto_deletion_ms > 0 {
            // Every dormant workspace: stopped if it runs, deleted when its time is up.
            let due = state.store.dormant_before(tid, now).await?;
            report.examined += due.len();
            for w in &due {
                dormant(&ctx, t, w).await?;
            }
        }
    }
    report.queued = ctx.flush().await?;
    if report.queued > 0 {
        state.job_queued();
        state.bump_progress();
    }
    Ok(report)
}

fn check(results: Vec<Result<bool, StoreError>>) -> Result<(), StoreError> {
    for r in results {
        r?;
    }
    Ok(())
}

async fn deadline_passed(ctx: &Ctx<'_>, w: &DueRow) -> Result<bool, StoreError> {
    let Some(deadline) = w.deadline else {
        return Ok(false);
    };
    if !w.is_up() {
        if w.settled() {
            // Not running any more (stopped by hand, failed): the deadline is stale.
            ctx.state.store.clear_deadline(&w.id, deadline).await?;
        }
        return Ok(false);
    }
    let reason = schedule::stop_reason(ctx.now, w.max_deadline);
    let why = if reason == "autostop" {
        format!(
            "no activity since before {}",
            crate::schedule::fmt_time(deadline - ctx.template(&w.template_id).activity_bump_ms)
        )
    } else {
        "the template requires a stop in the owner's quiet hours".to_string()
    };
    ctx.queue(w, "stop", Target::current(w), reason, &why).await
}

async fn autostart(ctx: &Ctx<'_>, w: &DueRow) -> Result<bool, StoreError> {
    let Some(at) = w.next_start_at else {
        return Ok(false);
    };
    let cron = w.autostart.as_deref().and_then(|s| TzCron::parse(s).ok());
    let next = cron.as_ref().and_then(|c| c.next_after(ctx.now));
    if !ctx.state.store.claim_autostart(&w.id, at, next).await? {
        return Ok(false);
    }
    let t = ctx.template(&w.template_id);
    let allowed = schedule::parse_weekdays(&t.autostart_days).unwrap_or([true; 7]);
    let day = cron
        .as_ref()
        .and_then(|c| c.local_date(at))
        .map(|d| d.weekday().to_monday_zero_offset() as usize);
    let skip = if !t.allow_user_autostart {
        Some("the template no longer allows autostart")
    } else if day.is_some_and(|d| !allowed[d]) {
        Some("the template does not allow autostart on that day")
    } else if w.dormant_at.is_some() {
        Some("the workspace is dormant: activate it first")
    } else if w.owner_suspended {
        Some("its owner is suspended")
    } else if !w.is_stopped() {
        // Already running, or a build is under way: nothing to do.
        return Ok(false);
    } else {
        None
    };
    if let Some(why) = skip {
        scheduler_event(
            ctx.state,
            w,
            "workspace.autostart",
            "skipped",
            format!("{}: autostart skipped: {why}", w.name),
        );
        return Ok(false);
    }
    // On the template's active version, so restarts pick up template updates.
    let Some(version_id) = ctx
        .state
        .store
        .template_by_id(&w.template_id)
        .await?
        .and_then(|t| t.active_version_id)
    else {
        return Ok(false);
    };
    let Some(manifest) = ctx.manifest(&version_id).await? else {
        return Ok(false);
    };
    // Within the owner's quota, like a start by hand (a refusal is audited).
    if let Some(owner) = ctx.state.store.user_by_username(&w.owner_name).await? {
        let what = format!("autostarting {:?}", w.name);
        if super::teams::check(ctx.state, &owner, false, Some(&w.id), manifest.cost, &what)
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
    let previous: BTreeMap<String, String> =
        serde_json::from_str(&w.parameters).unwrap_or_default();
    let params =
        match crate::template::resolve_parameters(&manifest, &BTreeMap::new(), Some(&previous)) {
            Ok(p) => serde_json::to_string(&p).ok(),
            Err(e) => {
                scheduler_event(
                    ctx.state,
                    w,
                    "workspace.autostart",
                    "failed",
                    format!(
                        "{}: the template's active version needs parameters: {e}; start it by hand",
                        w.name
                    ),
                );
                return Ok(false);
            }
        };
    ctx.queue(
        w,
        "start",
        Target {
            version_id: &version_id,
            provisioner: &manifest.provisioner,
            params: params.as_deref(),
        },
        "autostart",
        &format!("scheduled at {}", crate::schedule::fmt_time(at)),
    )
    .await
}

async fn dormant(ctx: &Ctx<'_>, t: &TemplateSchedule, w: &DueRow) -> Result<bool, StoreError> {
    let Some(since) = w.dormant_at else {
        return Ok(false);
    };
    if !w.settled() {
        return Ok(false);
    }
    if t.dormancy_auto_deletion_ms > 0 && since + t.dormancy_auto_deletion_ms <= ctx.now {
        let why = format!(
            "dormant for longer than {}",
            crate::schedule::fmt_duration(t.dormancy_auto_deletion_ms)
        );
        return ctx
            .queue(w, "delete", Target::current(w), "dormancy deletion", &why)
            .await;
    }
    if w.is_up() {
        return ctx
            .queue(
                w,
                "stop",
                Target::current(w),
                "dormancy",
                "the workspace became dormant",
            )
            .await;
    }
    Ok(false)
}

/// Writes the activity collected since the last flush: last use, and the deadline pushed to
/// now + the template's activity bump (never past the autostop requirement's stop).
pub(super) async fn flush_activity(state: &AppState) {
    let batch = state.liveness.take_activity();
    if batch.is_empty() {
        return;
    }
    for chunk in batch.chunks(200) {
        let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
        let targets = match state.store.activity_targets(&ids).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading workspaces for activity failed");
                continue;
            }
        };
        let at: HashMap<&str, i64> = chunk.iter().map(|(id, t)| (id.as_str(), *t)).collect();
        let rows: Vec<(String, i64, Option<i64>)> = targets
            .into_iter()
            .filter_map(|(id, max, sched)| {
                let when = *at.get(id.as_str())?;
                let bump = schedule::template_schedule(sched.as_deref()).activity_bump_ms;
                let to = (bump > 0).then(|| {
                    let to = when + bump;
                    max.map_or(to, |m| to.min(m))
                });
                Some((id, when, to))
            })
            .collect();
        if let Err(e) = state.store.record_activity(&rows).await {
            tracing::warn!(error = %e, "writing workspace activity failed");
        }
    }
}
