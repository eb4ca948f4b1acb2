//! Workspace schedules, as pure functions of time: a template's settings checked, the
//! autostop requirement's next required stop in the owner's quiet hours, deadlines at start,
//! and what the scheduler will do next. The scheduler itself (`server/scheduler.rs`) reads the
//! store and queues builds; everything it decides is computed here.

pub mod cron;

use outpost_api::{
    AutostopRequirement, RequirementDays, ScheduledAction, TemplateSchedule,
    TemplateScheduleUpdate, WEEKDAYS,
};

pub use cron::TzCron;

/// The server's quiet hours when none is configured.
pub const DEFAULT_QUIET_HOURS: &str = "CRON_TZ=UTC 0 0 * * *";
/// A workspace started less than this before a required stop keeps running until the next one.
pub const REQUIREMENT_THRESHOLD_MS: i64 = 3_600_000;
/// The longest duration a setting takes (a year).
const MAX_DURATION_MS: i64 = 366 * 86_400_000;
/// Monday 1970-01-05 starts week 0: every template's weeks count from it, so workspaces of
/// one template stop in the same week whenever they were created.
const EPOCH_MONDAY_DAY: i64 = 4;

/// Week days by name (`mon`, `monday`, `Mon`...), or `all`, to a Monday-first mask.
pub fn parse_weekdays(items: &[String]) -> Result<[bool; 7], String> {
    let mut mask = [false; 7];
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim().to_ascii_lowercase();
        if item.is_empty() {
            continue;
        }
        if item == "all" {
            return Ok([true; 7]);
        }
        let day = |name: &str| {
            WEEKDAYS
                .iter()
                .position(|d| *d == name || (name.len() >= 3 && d.starts_with(name)))
                .ok_or_else(|| {
                    format!("{name:?} is not a day of the week: use monday..sunday (or mon..sun, mon-fri, or all)")
                })
        };
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!(
                        "{item:?}: a range of days runs from Monday towards Sunday"
                    ));
                }
                for m in &mut mask[a..=b] {
                    *m = true;
                }
            }
            None => mask[day(&item)?] = true,
        }
    }
    Ok(mask)
}

pub fn weekday_names(mask: [bool; 7]) -> Vec<String> {
    WEEKDAYS
        .iter()
        .zip(mask)
        .filter(|(_, on)| *on)
        .map(|(d, _)| d.to_string())
        .collect()
}

fn duration(name: &str, v: i64) -> Result<i64, String> {
    if !(0..=MAX_DURATION_MS).contains(&v) {
        return Err(format!(
            "{name} must be between 0 (off) and 366 days, not {v} ms"
        ));
    }
    Ok(v)
}

/// Applies `u` to `current`: the result, checked, or why not (nothing is changed then).
pub fn apply_update(
    current: &TemplateSchedule,
    u: &TemplateScheduleUpdate,
) -> Result<TemplateSchedule, String> {
    let mut s = current.clone();
    if let Some(v) = u.default_autostop_ms {
        s.default_autostop_ms = duration("default autostop", v)?;
    }
    if let Some(v) = u.activity_bump_ms {
        s.activity_bump_ms = duration("activity bump", v)?;
    }
    if let Some(v) = u.autostop_requirement_days {
        s.autostop_requirement.days = v;
        if v == RequirementDays::Daily && u.autostop_requirement_weeks.is_none() {
            s.autostop_requirement.weeks = 1;
        }
    }
    if let Some(v) = u.autostop_requirement_weeks {
        s.autostop_requirement.weeks = v;
    }
    if let Some(v) = &u.autostart_days {
        s.autostart_days = weekday_names(parse_weekdays(v)?);
    }
    if let Some(v) = u.allow_user_autostart {
        s.allow_user_autostart = v;
    }
    if let Some(v) = u.allow_user_autostop {
        s.allow_user_autostop = v;
    }
    if let Some(v) = u.failure_cleanup_ms {
        s.failure_cleanup_ms = duration("failure cleanup", v)?;
    }
    if let Some(v) = u.dormancy_threshold_ms {
        s.dormancy_threshold_ms = duration("dormancy threshold", v)?;
    }
    if let Some(v) = u.dormancy_auto_deletion_ms {
        s.dormancy_auto_deletion_ms = duration("dormancy auto-deletion", v)?;
    }
    validate(&s)?;
    Ok(s)
}

pub fn validate(s: &TemplateSchedule) -> Result<(), String> {
    let r = s.autostop_requirement;
    if !(1..=16).contains(&r.weeks) {
        return Err(format!(
            "autostop requirement weeks must be 1 to 16, not {}",
            r.weeks
        ));
    }
    if r.days == RequirementDays::Daily && r.weeks != 1 {
        return Err(format!(
            "autostop requirement weeks is fixed at 1 with daily (got {}); choose saturday or sunday to stop every {} weeks",
            r.weeks, r.weeks
        ));
    }
    parse_weekdays(&s.autostart_days)?;
    for (name, v) in [
        ("default autostop", s.default_autostop_ms),
        ("activity bump", s.activity_bump_ms),
        ("failure cleanup", s.failure_cleanup_ms),
        ("dormancy threshold", s.dormancy_threshold_ms),
        ("dormancy auto-deletion", s.dormancy_auto_deletion_ms),
    ] {
        duration(name, v)?;
    }
    Ok(())
}

/// A template's stored schedule (`NULL`: the defaults).
pub fn template_schedule(stored: Option<&str>) -> TemplateSchedule {
    stored
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// A user's autostart cron, checked against what the template allows.
pub fn check_autostart(s: &str, t: &TemplateSchedule) -> Result<TzCron, String> {
    if !t.allow_user_autostart {
        return Err("this template does not let users set an autostart schedule; ask a template admin (`outpost templates edit NAME --allow-user-autostart true`)".into());
    }
    let c = TzCron::parse(s)?;
    let allowed = parse_weekdays(&t.autostart_days)?;
    let forbidden: Vec<&str> = c
        .weekdays()
        .iter()
        .zip(allowed)
        .zip(WEEKDAYS)
        .filter(|((on, ok), _)| **on && !ok)
        .map(|(_, d)| d)
        .collect();
    if !forbidden.is_empty() {
        return Err(format!(
            "{s:?} would start the workspace on {}, but the template allows autostart only on {}: restrict the day-of-week field (e.g. `CRON_TZ={} 0 9 * * 1-5`)",
            forbidden.join(", "),
            if t.autostart_days.is_empty() { "no day".to_string() } else { t.autostart_days.join(", ") },
            c.zone
        ));
    }
    Ok(c)
}

/// The autostop in force: the workspace's own when the template lets users choose.
pub fn effective_autostop(t: &TemplateSchedule, own: Option<i64>) -> i64 {
    match own {
        Some(v) if t.allow_user_autostop => v,
        _ => t.default_autostop_ms,
    }
}

/// The next required stop after `after` (ms): the start of the quiet hours on a required day of
/// a required week in the quiet hours' zone. At least `REQUIREMENT_THRESHOLD_MS` away.
pub fn next_required_stop(quiet: &TzCron, req: AutostopRequirement, after: i64) -> Option<i64> {
    let want_day: Option<i8> = match req.days {
        RequirementDays::Off => return None,
        RequirementDays::Daily => None,
        RequirementDays::Saturday => Some(5),
        RequirementDays::Sunday => Some(6),
    };
    let weeks = i64::from(req.weeks.max(1));
    let mut t = after + REQUIREMENT_THRESHOLD_MS - 1;
    for _ in 0..(7 * 17 + 2) {
        let at = quiet.next_after(t)?;
        let date = quiet.local_date(at)?;
        let day_ok = want_day.is_none_or(|d| date.weekday().to_monday_zero_offset() == d);
        let week = (cron::day_number(date) - EPOCH_MONDAY_DAY).div_euclid(7);
        if day_ok && week.rem_euclid(weeks) == 0 {
            return Some(at);
        }
        t = at;
    }
    None
}

/// A start build finished at `now`: (deadline, max deadline).
pub fn deadlines_at_start(
    now: i64,
    autostop_ms: i64,
    max_deadline: Option<i64>,
) -> (Option<i64>, Option<i64>) {
    let deadline = (autostop_ms > 0).then(|| now + autostop_ms);
    let deadline = match (deadline, max_deadline) {
        (Some(d), Some(m)) => Some(d.min(m)),
        (None, m) => m,
        (d, None) => d,
    };
    (deadline, max_deadline)
}

/// Why a running workspace is stopped at its deadline.
pub fn stop_reason(now: i64, max_deadline: Option<i64>) -> &'static str {
    if max_deadline.is_some_and(|m| m <= now) {
        "autostop requirement"
    } else {
        "autostop"
    }
}

/// What the scheduler knows of one workspace.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceTimes {
    pub running: bool,
    pub stopped: bool,
    /// The latest build failed; when it ended.
    pub failed_at: Option<i64>,
    pub deadline: Option<i64>,
    pub max_deadline: Option<i64>,
    pub next_autostart_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub dormant_at: Option<i64>,
}

/// The first thing the scheduler will do to a workspace, if anything.
pub fn next_action(t: &TemplateSchedule, w: &WorkspaceTimes) -> Option<ScheduledAction> {
    let mut all: Vec<(i64, &str, &str)> = Vec::new();
    if w.running {
        if let Some(d) = w.deadline {
            let reason = if w.max_deadline == Some(d) {
                "autostop requirement"
            } else {
                "autostop"
            };
            all.push((d, "stop", reason));
        }
    }
    if w.stopped && w.dormant_at.is_none() {
        if let Some(a) = w.next_autostart_at {
            all.push((a, "start", "autostart"));
        }
    }
    if let Some(f) = w.failed_at {
        if t.failure_cleanup_ms > 0 {
            all.push((f + t.failure_cleanup_ms, "stop", "failure cleanup"));
        }
    }
    match w.dormant_at {
        None if t.dormancy_threshold_ms > 0 => {
            if let Some(u) = w.last_used_at {
                all.push((u + t.dormancy_threshold_ms, "dormant", "dormancy"));
            }
        }
        Some(d) if t.dormancy_auto_deletion_ms > 0 => {
            all.push((
                d + t.dormancy_auto_deletion_ms,
                "delete",
                "dormancy deletion",
            ));
        }
        _ => {}
    }
    all.into_iter()
        .min_by_key(|(at, _, _)| *at)
        .map(|(at, action, reason)| ScheduledAction {
            at,
            action: action.into(),
            reason: reason.into(),
        })
}

/// An instant for people: `2026-11-30 02:30:00 UTC`.
pub fn fmt_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// A duration for people: `1h 30m`.
pub fn fmt_duration(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs((ms.max(0) / 1000) as u64))
        .to_string()
}

#[cfg(test)]
mod tests;
