//! Schedule commands: `outpost schedule show|start|stop|extend`, `outpost activate`,
//! `outpost templates edit` (a template's schedule) and `outpost users quiet-hours`.

use anyhow::{bail, Context};
use outpost_api::*;

use super::ctx::*;
use crate::config::*;
use crate::schedule::{fmt_duration, fmt_time};

/// `8h`, `30m`, `7d`; `0`, `off` and `manual` are 0.
fn duration_ms(s: &str, what: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if matches!(s, "0" | "off" | "manual" | "never") {
        return Ok(0);
    }
    let d = humantime::parse_duration(s).with_context(|| {
        format!("{what}: {s:?} is not a duration; write it like 8h, 30m or 7d (or off)")
    })?;
    Ok(d.as_millis().min(i64::MAX as u128) as i64)
}

fn fmt_opt_duration(ms: i64) -> String {
    if ms <= 0 {
        "off".into()
    } else {
        fmt_duration(ms)
    }
}

pub(crate) fn print_template_schedule(s: &TemplateSchedule) {
    let r = s.autostop_requirement;
    println!("Schedule");
    println!(
        "  default autostop        {}",
        fmt_opt_duration(s.default_autostop_ms)
    );
    println!(
        "  activity bump           {}",
        fmt_opt_duration(s.activity_bump_ms)
    );
    println!(
        "  autostop requirement    {}",
        match r.days {
            RequirementDays::Off => "off".to_string(),
            d if r.weeks > 1 => format!(
                "{} every {} weeks, in the owner's quiet hours",
                d.as_str(),
                r.weeks
            ),
            d => format!("{}, in the owner's quiet hours", d.as_str()),
        }
    );
    println!("  autostart days          {}", s.autostart_days.join(", "));
    println!(
        "  users may set           autostart: {}, autostop: {}",
        if s.allow_user_autostart { "yes" } else { "no" },
        if s.allow_user_autostop { "yes" } else { "no" }
    );
    println!(
        "  failure cleanup         {}",
        fmt_opt_duration(s.failure_cleanup_ms)
    );
    println!(
        "  dormancy threshold      {}",
        fmt_opt_duration(s.dormancy_threshold_ms)
    );
    println!(
        "  dormancy auto-deletion  {}",
        fmt_opt_duration(s.dormancy_auto_deletion_ms)
    );
}

pub(crate) async fn edit_template(ctx: &Ctx, a: TemplateEditArgs) -> anyhow::Result<()> {
    let d = |v: &Option<String>, what: &str| v.as_deref().map(|s| duration_ms(s, what)).transpose();
    let update = TemplateScheduleUpdate {
        default_autostop_ms: d(&a.default_autostop, "--default-autostop")?,
        activity_bump_ms: d(&a.activity_bump, "--activity-bump")?,
        autostop_requirement_days: match a.autostop_requirement.as_deref() {
            Some(s) => Some(RequirementDays::parse(s).with_context(|| {
                format!("--autostop-requirement {s:?}: use daily, saturday, sunday or off")
            })?),
            None => None,
        },
        autostop_requirement_weeks: a.autostop_requirement_weeks,
        autostart_days: a.autostart_days.as_ref().map(|s| vec![s.clone()]),
        allow_user_autostart: a.allow_user_autostart,
        allow_user_autostop: a.allow_user_autostop,
        failure_cleanup_ms: d(&a.failure_cleanup, "--failure-cleanup")?,
        dormancy_threshold_ms: d(&a.dormancy_threshold, "--dormancy-threshold")?,
        dormancy_auto_deletion_ms: d(&a.dormancy_auto_deletion, "--dormancy-auto-deletion")?,
    };
    let s: TemplateSchedule = ctx
        .client()?
        .patch(&format!("/api/v1/templates/{}/schedule", a.name), &update)
        .await?;
    ctx.print(&s, || {
        println!("Template  {}", a.name);
        print_template_schedule(&s);
    })
}

pub(crate) async fn quiet_hours(
    ctx: &Ctx,
    schedule: Option<String>,
    reset: bool,
) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let q: QuietHours = if reset || schedule.is_some() {
        client
            .put("/api/v1/users/me/quiet-hours", &SetQuietHours { schedule })
            .await?
    } else {
        client.get("/api/v1/users/me/quiet-hours").await?
    };
    ctx.print(&q, || {
        println!("Quiet hours  {}", q.schedule);
        if let Some(c) = &q.custom {
            if !q.user_can_set {
                println!("             (your own, {c}, is ignored: the server does not allow custom quiet hours)");
            }
        }
        if let Some(t) = q.next_at {
            println!("Next start   {}", fmt_time(t));
        }
    })
}

pub(crate) fn print_schedule(w: &Workspace) {
    let s = &w.schedule;
    println!(
        "Autostart  {}",
        s.autostart.as_deref().unwrap_or("manual (none)")
    );
    println!(
        "Autostop   {}{}",
        fmt_opt_duration(s.effective_autostop_ms),
        if s.autostop_ms.is_none() {
            " (template default)"
        } else {
            ""
        }
    );
    if let Some(d) = s.deadline {
        println!("Deadline   {}", fmt_time(d));
    }
    if let Some(m) = s.max_deadline {
        println!("Required   stop by {} (autostop requirement)", fmt_time(m));
    }
    if let Some(d) = s.dormant_at {
        println!(
            "Dormant    since {}: `outpost activate {}` before starting it{}",
            fmt_time(d),
            w.name,
            s.deleting_at
                .map(|t| format!("; deleted at {}", fmt_time(t)))
                .unwrap_or_default()
        );
    }
    match &s.next {
        Some(n) => println!(
            "Next       {} at {} ({})",
            n.action,
            fmt_time(n.at),
            n.reason
        ),
        None => println!("Next       no automatic action"),
    }
}

pub(crate) async fn schedule(ctx: &Ctx, cmd: ScheduleCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let w: Workspace = match cmd {
        ScheduleCmd::Show { name } => client.workspace(&name).await?,
        ScheduleCmd::Start { name, schedule } => {
            let schedule = match schedule.trim() {
                "manual" | "off" | "" => None,
                s => Some(s.to_string()),
            };
            client
                .put(
                    &format!(
                        "/api/v1/workspaces/{}/autostart",
                        outpost_api::percent_encode(&name)
                    ),
                    &SetAutostart { schedule },
                )
                .await?
        }
        ScheduleCmd::Stop { name, duration } => {
            let autostop_ms = match duration.trim() {
                "default" => None,
                s => Some(duration_ms(s, "autostop")?),
            };
            client
                .put(
                    &format!(
                        "/api/v1/workspaces/{}/autostop",
                        outpost_api::percent_encode(&name)
                    ),
                    &SetAutostop { autostop_ms },
                )
                .await?
        }
        ScheduleCmd::Extend { name, duration } => {
            let duration_ms = duration_ms(&duration, "extend")?;
            if duration_ms == 0 {
                bail!("extend by a duration such as 2h");
            }
            client
                .post(
                    &format!(
                        "/api/v1/workspaces/{}/extend",
                        outpost_api::percent_encode(&name)
                    ),
                    &ExtendRequest { duration_ms },
                )
                .await?
        }
    };
    ctx.print(&w.schedule, || {
        println!("Workspace  {}", w.name);
        print_schedule(&w);
    })
}

pub(crate) async fn activate(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let w: Workspace = ctx
        .client()?
        .post(
            &format!(
                "/api/v1/workspaces/{}/activate",
                outpost_api::percent_encode(name)
            ),
            &serde_json::json!({}),
        )
        .await?;
    ctx.print(&w, || {
        println!(
            "{} is active again; start it with `outpost start {}`",
            w.name, w.name
        )
    })
}
