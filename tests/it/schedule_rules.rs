//! The scheduler's other rules against the real server, with the clock the test moves (see
//! `schedule.rs`): autostart on allowed days only and never a dormant workspace, failure
//! cleanup, dormancy then deletion, bad input, and two servers on one PostgreSQL acting once.

use std::time::Duration;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;
use crate::schedule::*;

/// Autostart starts a stopped workspace at its time on the days the template allows, on the
/// template's active version; never on a forbidden day, never a dormant workspace.
fn autostart_on_allowed_days(backend: Backend) -> R {
    let (s, clock) = server(backend, &[])?;
    push_local_template(&s, "daily", "")?;
    push_local_template(&s, "sleepy", "")?;
    s.ok(&[
        "templates",
        "edit",
        "daily",
        "--autostart-days",
        "mon,tue,wed,thu,fri",
    ])?;
    s.ok(&["templates", "edit", "sleepy", "--dormancy-threshold", "12h"])?;
    // Thursday, 12:00 UTC, a week or more ahead.
    let mut day = real_now() / DAY + 7;
    while (day - 4) % 7 != 3 {
        day += 1;
    }
    clock.set(day * DAY + 12 * HOUR)?;
    relogin(&s)?;
    s.ok(&["create", "work", "-t", "daily"])?;
    s.ok(&["create", "nap", "-t", "sleepy"])?;
    for ws in ["work", "nap"] {
        s.wait_for(ws, T, |w| w["status"] == "running")?;
    }
    // Every day is refused where the template allows weekdays only.
    let e = cli_fails(&s, &["schedule", "start", "work", "CRON_TZ=UTC 0 9 * * *"])?;
    assert!(e.contains("saturday, sunday"), "{e}");
    assert!(sched(&s, "work")?["autostart"].is_null());
    s.ok(&["schedule", "start", "work", "CRON_TZ=UTC 0 9 * * 1-5"])?;
    s.ok(&["schedule", "start", "nap", "CRON_TZ=UTC 0 9 * * *"])?;
    s.ok(&["stop", "work"])?;
    s.ok(&["stop", "nap"])?;
    for ws in ["work", "nap"] {
        s.wait_for(ws, T, |w| w["status"] == "stopped")?;
    }
    let sc = sched(&s, "work")?;
    assert_eq!(
        sc["next_autostart_at"],
        (day + 1) * DAY + 9 * HOUR,
        "{sc:#}"
    );
    assert_eq!(sc["next"]["reason"], "autostart");
    // The template drops Friday meanwhile, and gets a new version.
    s.ok(&[
        "templates",
        "edit",
        "daily",
        "--autostart-days",
        "mon,tue,wed,thu",
    ])?;
    push_local_template(
        &s,
        "daily",
        "[[scripts]]\nname = \"v2\"\nscript = \"true\"\n",
    )?;
    // Friday 09:00: not allowed any more. `nap` has been unused for 21 hours: dormant (since
    // midnight), so its autostart is skipped too.
    clock.set((day + 1) * DAY + 9 * HOUR + 30_000)?;
    std::thread::sleep(Duration::from_secs(1));
    let w = s.workspace("work")?;
    assert_eq!(w["status"], "stopped", "{w:#}\n{}", s.log());
    let nap = s.workspace("nap")?;
    assert_eq!(nap["status"], "stopped");
    assert!(
        nap["schedule"]["dormant_at"].is_i64(),
        "{:#}",
        nap["schedule"]
    );
    let skipped = s.json(&[
        "audit",
        "--action",
        "workspace.autostart",
        "--outcome",
        "skipped",
    ])?;
    let text = skipped.to_string();
    assert!(
        text.contains("does not allow autostart on that day"),
        "{text}"
    );
    assert!(text.contains("dormant"), "{text}");
    // Monday 09:00: `work` starts, on version 2; `nap` does not.
    clock.set((day + 4) * DAY + 9 * HOUR + 30_000)?;
    let (w, _) = s.wait_for("work", T, |w| w["status"] == "running")?;
    assert_eq!(w["latest_build"]["reason"], "autostart");
    assert_eq!(w["template_version"], 2);
    assert_eq!(s.status("nap")?, "stopped");
    // A dormant workspace is started only after its owner activates it.
    let e = cli_fails(&s, &["start", "nap"])?;
    assert!(e.contains("outpost activate nap"), "{e}");
    s.ok(&["activate", "nap"])?;
    s.ok(&["start", "nap"])?;
    s.wait_for("nap", T, |w| w["status"] == "running")?;
    Ok(())
}
both_backends!(autostart_on_allowed_days);

/// A workspace `failed` for longer than the failure cleanup is stopped, not before.
fn failure_cleanup_stops_failed_workspaces(backend: Backend) -> R {
    let (s, clock) = server(backend, &[])?;
    // An image nobody can pull: the start build fails.
    let dir = s.dir.path().join("broken-docker");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"docker\"\nimage = \"127.0.0.1:9/nothing:here\"\n",
    )?;
    s.ok(&[
        "templates",
        "push",
        &dir.display().to_string(),
        "--name",
        "broken",
    ])?;
    s.ok(&["templates", "edit", "broken", "--failure-cleanup", "2h"])?;
    let _ = s.cli(&["create", "bad", "-t", "broken"])?;
    let (w, _) = s.wait_for("bad", T, |w| w["status"] == "failed")?;
    let failed_at = w["latest_build"]["completed_at"]
        .as_i64()
        .unwrap_or_default();
    assert_eq!(w["schedule"]["next"]["reason"], "failure cleanup");
    assert_eq!(w["schedule"]["next"]["at"], failed_at + 2 * HOUR);
    clock.set(failed_at + 2 * HOUR - MIN)?;
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(s.status("bad")?, "failed");
    clock.set(failed_at + 2 * HOUR + MIN)?;
    let (w, _) = s.wait_for("bad", T, |w| {
        w["latest_build"]["reason"] == "failure cleanup"
            && w["latest_build"]["status"] != "pending"
            && w["latest_build"]["status"] != "running"
    })?;
    assert_eq!(w["latest_build"]["transition"], "stop", "{w:#}");
    let audit = s.json(&["audit", "--action", "workspace.failure_cleanup"])?;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit:#}");
    Ok(())
}
both_backends!(failure_cleanup_stops_failed_workspaces);

/// Dormancy then deletion: unused for the threshold, a running workspace is stopped and
/// marked dormant; the home is still there a minute before the auto-deletion and gone after;
/// the audit log has both.
fn dormancy_then_deletion(backend: Backend) -> R {
    let (s, clock) = server(backend, &[])?;
    push_local_template(&s, "tidy", "")?;
    s.ok(&[
        "templates",
        "edit",
        "tidy",
        "--dormancy-threshold",
        "2d",
        "--dormancy-auto-deletion",
        "3d",
    ])?;
    s.ok(&["create", "old", "-t", "tidy"])?;
    let (w, _) = s.wait_for("old", T, |w| w["status"] == "running")?;
    let home = home_of(&w);
    std::fs::write(home.join("keep.txt"), "precious")?;
    let used = w["schedule"]["last_used_at"].as_i64().unwrap_or_default();
    assert_eq!(w["schedule"]["next"]["reason"], "dormancy");
    clock.set(used + 2 * DAY + MIN)?;
    let w = wait_stopped_by(&s, "old", "dormancy")?;
    let dormant_at = w["schedule"]["dormant_at"].as_i64().unwrap_or_default();
    assert!(dormant_at > 0, "{:#}", w["schedule"]);
    assert_eq!(w["schedule"]["deleting_at"], dormant_at + 3 * DAY);
    assert!(home.join("keep.txt").exists());
    clock.set(dormant_at + 3 * DAY - MIN)?;
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(s.status("old")?, "stopped");
    assert_eq!(std::fs::read_to_string(home.join("keep.txt"))?, "precious");
    clock.set(dormant_at + 3 * DAY + MIN)?;
    eventually(|| {
        let list = s.json(&["list"])?;
        let gone = !list
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w["name"] == "old"));
        Ok(gone.then_some(()))
    })?;
    assert!(!home.exists(), "the home is deleted with the workspace");
    let audit = s.json(&["audit", "--action", "workspace."])?.to_string();
    assert!(audit.contains("workspace.dormant"), "{audit}");
    assert!(audit.contains("workspace.dormancy_deletion"), "{audit}");
    Ok(())
}
both_backends!(dormancy_then_deletion);

/// Bad schedules: each a clear error, nothing changed.
fn bad_schedules_are_refused(backend: Backend) -> R {
    let (s, _clock) = server(backend, &[])?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["status"] == "running")?;
    s.ok(&["templates", "edit", "base", "--autostart-days", "mon,tue"])?;
    let before = s.json(&["templates", "show", "base"])?["template"]["schedule"].clone();
    let q_before = s.json(&["users", "quiet-hours"])?;
    let ws_before = sched(&s, "dev")?;
    for (args, want) in [
        (
            vec!["users", "quiet-hours", "CRON_TZ=UTC 0 30 2 * * *"],
            "seconds are not allowed",
        ),
        (
            vec!["users", "quiet-hours", "CRON_TZ=UTC 30 2 * * 1"],
            "only a minute and an hour",
        ),
        (
            vec![
                "users",
                "quiet-hours",
                "CRON_TZ=Mars/Olympus_Mons 30 2 * * *",
            ],
            "unknown time zone",
        ),
        (
            vec![
                "templates",
                "edit",
                "base",
                "--autostop-requirement",
                "saturday",
                "--autostop-requirement-weeks",
                "17",
            ],
            "1 to 16",
        ),
        (
            vec![
                "templates",
                "edit",
                "base",
                "--autostop-requirement",
                "daily",
                "--autostop-requirement-weeks",
                "2",
            ],
            "fixed at 1 with daily",
        ),
        (
            vec!["templates", "edit", "base", "--default-autostop", "soon"],
            "is not a duration",
        ),
        (
            vec!["schedule", "start", "dev", "CRON_TZ=UTC 0 9 * * 1-5"],
            "wednesday, thursday, friday",
        ),
        (
            vec![
                "schedule",
                "start",
                "dev",
                "CRON_TZ=Europe/Nowhere 0 9 * * 1",
            ],
            "unknown time zone",
        ),
        (
            vec!["schedule", "extend", "dev", "2h"],
            "no deadline to extend",
        ),
    ] {
        let e = cli_fails(&s, &args)?;
        assert!(e.contains(want), "`outpost {}`: {e}", args.join(" "));
    }
    assert_eq!(
        s.json(&["templates", "show", "base"])?["template"]["schedule"],
        before
    );
    assert_eq!(
        s.json(&["users", "quiet-hours"])?["custom"],
        q_before["custom"]
    );
    assert_eq!(sched(&s, "dev")?["autostart"], ws_before["autostart"]);
    // A member may not change a template's schedule.
    let bob = Client::new_user(&s, "bob")?;
    let o = run_with_stdin(
        bob.command(&["templates", "edit", "base", "--default-autostop", "1h"]),
        "",
    )?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("that takes the role owner or template-admin")
    );
    assert_eq!(
        s.json(&["templates", "show", "base"])?["template"]["schedule"],
        before
    );
    Ok(())
}
both_backends!(bad_schedules_are_refused);

/// Two servers on one PostgreSQL, both ticking every 100 ms on the same clock: each due
/// workspace is stopped once, by one of them (one build, one audit event).
#[test]
fn two_servers_act_once() -> R {
    let Some(pg) = postgres() else {
        return Ok(());
    };
    let clock = Clock::new()?;
    let path = clock.path.display().to_string();
    let flags = ["--test-clock-file", &path, "--schedule-interval", "100ms"];
    let a = Server::start_with(pg.clone(), &flags)?;
    let key = a.data().join("secrets.key").display().to_string();
    let mut b_flags = flags.to_vec();
    b_flags.extend_from_slice(&["--provisioner-daemons", "0", "--secrets-key-file", &key]);
    let _b = Server::start_opts(
        pg,
        Opts {
            extra: &b_flags,
            joins_existing: true,
            ..Default::default()
        },
    )?;
    a.ok(&["templates", "edit", "base", "--default-autostop", "1h"])?;
    let names = ["w1", "w2", "w3", "w4", "w5", "w6"];
    for n in names {
        a.ok(&["create", n, "--no-wait"])?;
    }
    for n in names {
        a.wait_for(n, T, |w| w["status"] == "running")?;
    }
    clock.advance(61 * MIN)?;
    for n in names {
        wait_stopped_by(&a, n, "autostop")?;
    }
    // Many more ticks of both.
    std::thread::sleep(Duration::from_secs(1));
    let rows = a.db_rows(
        "SELECT w.name, COUNT(*) FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id WHERE b.reason = 'autostop' GROUP BY w.name ORDER BY w.name",
    )?;
    assert_eq!(rows.len(), names.len(), "{rows:?}");
    assert!(rows.iter().all(|r| r[1] == "1"), "{rows:?}");
    let audit = a.json(&["audit", "--action", "workspace.autostop"])?;
    assert_eq!(
        audit.as_array().map(Vec::len),
        Some(names.len()),
        "{audit:#}"
    );
    Ok(())
}
