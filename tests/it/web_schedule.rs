//! The dashboard's schedule pages in a real browser (issue 15): a template's schedule settings
//! (saved, and a bad value refused with the server's message and nothing changed), the user's
//! quiet hours, and a workspace's Schedule card (autostart set through the form, refused on a
//! day the template does not allow, autostop and extend, and "Starts at" once it is stopped).
//! Non-admins are kept off the template settings page. Screenshots land in
//! `target/screenshots/`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::browser::Browser;
use crate::harness::*;

fn text_of(b: &Browser, id: &str) -> R<String> {
    Ok(b.exec(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
        json!([id]),
    )?
    .as_str()
    .unwrap_or_default()
    .to_string())
}

fn base_schedule(s: &Server) -> R<Value> {
    Ok(s.json(&["templates", "show", "base"])?["template"]["schedule"].clone())
}

fn schedule_pages(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start(backend)?;
    let url = s.url.clone();
    b.sign_in(&url, "admin", "admin-password")?;

    // ---- The template's schedule settings: default autostop 2h, autostart Monday to Friday.
    b.goto(&format!("{url}/templates/base/settings"))?;
    b.wait_js("document.body.dataset.ready === '1'", 30)?;
    assert_eq!(
        b.exec(
            "return document.getElementById('default-autostop').value;",
            json!([])
        )?,
        "off"
    );
    // Every control has a label.
    let unlabelled = b.exec(
        "return [...document.querySelectorAll('#template-schedule input, #template-schedule select')].filter((i) => !i.labels || !i.labels.length).map((i) => i.id);",
        json!([]),
    )?;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    b.set_input("#default-autostop", "2h")?;
    for day in ["saturday", "sunday"] {
        b.click(&format!("#day-{day}"))?;
    }
    b.click("#save-schedule")?;
    b.wait_text("saved", "Saved")?;
    let t = base_schedule(&s)?;
    assert_eq!(t["default_autostop_ms"], 7_200_000, "{t}");
    assert_eq!(
        t["autostart_days"],
        json!(["monday", "tuesday", "wednesday", "thursday", "friday"]),
        "{t}"
    );
    let summary = text_of(&b, "current-schedule")?;
    assert!(summary.contains("2h"), "{summary}");
    assert!(
        summary.contains("monday, tuesday, wednesday, thursday, friday"),
        "{summary}"
    );
    assert_eq!(
        b.exec(
            "return document.getElementById('default-autostop').value;",
            json!([])
        )?,
        "2h"
    );
    b.screenshot("template-schedule")?;

    // A bad value (17 weeks with saturday) shows the server's message and changes nothing,
    // not even the fields that were fine.
    b.exec(
        "const s = document.getElementById('requirement-days'); s.value = 'saturday'; s.dispatchEvent(new Event('change'));",
        json!([]),
    )?;
    b.set_input("#requirement-weeks", "17")?;
    b.set_input("#default-autostop", "5h")?;
    b.click("#save-schedule")?;
    let err = b.wait_text("error", "weeks")?;
    assert!(err.contains("1 to 16"), "the server's message: {err}");
    assert_eq!(text_of(&b, "saved")?, "");
    assert_eq!(base_schedule(&s)?, t, "a refused change changes nothing");
    // A duration the page cannot read is refused before it is sent.
    b.set_input("#requirement-weeks", "2")?;
    b.set_input("#activity-bump", "soon")?;
    b.click("#save-schedule")?;
    b.wait_text("error", "is not a duration")?;
    assert_eq!(base_schedule(&s)?, t);

    // ---- The user's schedule settings: quiet hours, reached from the nav.
    b.goto(&format!("{url}/"))?;
    b.wait_js("document.body.dataset.page === 'home'", 30)?;
    b.click("#nav-schedule")?;
    b.wait_js(
        "document.body.dataset.page === 'schedule-settings' && document.body.dataset.ready === '1'",
        30,
    )?;
    assert_eq!(text_of(&b, "quiet-schedule")?, "CRON_TZ=UTC 0 0 * * *");
    assert!(text_of(&b, "quiet-custom")?.contains("default"));
    // Admins get links to the templates' settings.
    b.wait_find("#templates-list a[href='/templates/base/settings']")?;
    b.set_input("#quiet-input", "CRON_TZ=America/Chicago 30 2 * * *")?;
    b.click("#quiet-save")?;
    b.wait_text("saved", "Saved")?;
    assert_eq!(
        text_of(&b, "quiet-custom")?,
        "CRON_TZ=America/Chicago 30 2 * * *"
    );
    assert_eq!(text_of(&b, "quiet-timezone")?, "America/Chicago");
    let q = s.json(&["users", "quiet-hours"])?;
    assert_eq!(q["schedule"], "CRON_TZ=America/Chicago 30 2 * * *", "{q}");
    assert_eq!(q["custom"], "CRON_TZ=America/Chicago 30 2 * * *", "{q}");
    b.screenshot("schedule-settings")?;
    // A bad one shows the server's message and keeps the saved one.
    b.set_input("#quiet-input", "CRON_TZ=America/Chicago 30 2 * * 1")?;
    b.click("#quiet-save")?;
    b.wait_text("error", "quiet hours take only a minute and an hour")?;
    assert_eq!(
        s.json(&["users", "quiet-hours"])?["custom"],
        "CRON_TZ=America/Chicago 30 2 * * *"
    );

    // ---- A workspace's Schedule card.
    s.ok(&["create", "dev"])?;
    b.goto(&format!("{url}/@admin/dev"))?;
    b.wait_js(
        "document.getElementById('status').textContent === 'running'",
        60,
    )?;
    // Running with the template's 2h default: it stops at its deadline.
    let next = b.wait_text("next-action", "Stops at")?;
    assert!(next.ends_with("UTC (autostop)"), "{next}");
    assert!(text_of(&b, "deadline-line")?.starts_with("Deadline: 20"));
    assert_eq!(
        b.exec(
            "return document.getElementById('autostop-input').value;",
            json!([])
        )?,
        "default"
    );
    // The template allows autostart on weekdays only: a Saturday is refused with its message.
    b.set_input("#autostart-input", "CRON_TZ=UTC 0 9 * * 6")?;
    b.click("#autostart-save")?;
    let err = b.wait_text("schedule-error", "allows autostart only on")?;
    assert!(err.contains("saturday"), "{err}");
    assert!(s.workspace("dev")?["schedule"]["autostart"].is_null());
    b.set_input("#autostart-input", "CRON_TZ=UTC 0 9 * * 1-5")?;
    b.click("#autostart-save")?;
    b.wait_text("schedule-saved", "Autostart saved")?;
    assert_eq!(text_of(&b, "schedule-error")?, "");
    let w = s.workspace("dev")?;
    assert_eq!(w["schedule"]["autostart"], "CRON_TZ=UTC 0 9 * * 1-5", "{w}");
    // Autostop 3h, then extend by 90 minutes.
    b.set_input("#autostop-input", "3h")?;
    b.click("#autostop-save")?;
    b.wait_text("schedule-saved", "Autostop saved: 3h")?;
    assert_eq!(s.workspace("dev")?["schedule"]["autostop_ms"], 10_800_000);
    b.set_input("#extend-input", "90m")?;
    b.click("#extend-button")?;
    b.wait_text("schedule-saved", "Deadline extended to")?;
    let deadline = s.workspace("dev")?["schedule"]["deadline"]
        .as_i64()
        .unwrap_or_default();
    let want = 90 * 60_000
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
    assert!(
        (deadline - want).abs() < 60_000,
        "deadline {deadline}, about {want}"
    );
    // Not dormant: no Activate button shown.
    assert_eq!(
        b.exec(
            "return document.getElementById('dormant').hidden;",
            json!([])
        )?,
        true
    );
    b.screenshot("workspace-schedule")?;

    // Stopped, the next automatic action is the autostart.
    s.ok(&["stop", "dev"])?;
    s.wait_for("dev", Duration::from_secs(60), |w| w["status"] == "stopped")?;
    let next = b.wait_text("next-action", "Starts at")?;
    assert!(next.contains(" 09:00 UTC (autostart)"), "{next}");
    // A person stopped it: no scheduler reason is shown.
    assert_eq!(
        b.exec(
            "return document.getElementById('build-reason').hidden;",
            json!([])
        )?,
        true
    );

    // ---- Non-admins are kept off the template settings page.
    s.cli_stdin(
        &["users", "create", "bob", "--password-stdin"],
        "bob-password\n",
    )?;
    b.delete_cookies()?;
    b.sign_in(&url, "bob", "bob-password")?;
    b.goto(&format!("{url}/templates/base/settings"))?;
    b.wait_js("document.body.dataset.page === 'refused'", 30)?;
    assert!(text_of(&b, "error")?.contains("Only admins"));
    assert!(b.find("#template-schedule").is_err(), "no form for bob");
    // Their own schedule settings page works, without the templates' links.
    b.goto(&format!("{url}/settings/schedule"))?;
    b.wait_js("document.body.dataset.ready === '1'", 30)?;
    assert_eq!(
        b.exec(
            "return document.getElementById('template-links').hidden;",
            json!([])
        )?,
        true
    );
    assert_eq!(text_of(&b, "quiet-schedule")?, "CRON_TZ=UTC 0 0 * * *");
    Ok(())
}

both_backends!(schedule_pages);

/// A server that does not allow custom quiet hours: the page says so and its form is disabled.
fn quiet_hours_not_allowed(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start_with(backend, &["--allow-custom-quiet-hours=false"])?;
    b.sign_in(&s.url, "admin", "admin-password")?;
    b.goto(&format!("{}/settings/schedule", s.url))?;
    b.wait_js("document.body.dataset.ready === '1'", 30)?;
    assert_eq!(
        b.exec(
            "return [document.getElementById('quiet-not-allowed').hidden, document.getElementById('quiet-fieldset').disabled, document.getElementById('quiet-input').matches(':disabled')];",
            json!([])
        )?,
        json!([false, true, true])
    );
    assert!(text_of(&b, "quiet-not-allowed")?.contains("not allowed by this server"));
    Ok(())
}

both_backends!(quiet_hours_not_allowed);

/// What the scheduler did, on the workspace page: control's clock is moved by the test
/// (`--test-clock-file`) and the scheduler ticks every 250 ms. The autostop stops the workspace
/// ("Stopped by the scheduler: autostop"); unused for longer than the dormancy threshold it
/// turns dormant (the notice, the deletion ahead) and the Activate button brings it back.
fn scheduler_actions_on_the_page(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "0")?;
    let clock_arg = clock.display().to_string();
    let s = Server::start_with(
        backend,
        &[
            "--test-clock-file",
            &clock_arg,
            "--schedule-interval",
            "250ms",
            "--agent-cert-lifetime-secs",
            "4000000",
        ],
    )?;
    // Moves control's clock `ms` ahead of the real one.
    let set_offset = |ms: i64| -> R {
        std::fs::write(&clock, ms.to_string())?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    };
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    s.ok(&[
        "templates",
        "edit",
        "base",
        "--default-autostop",
        "1h",
        "--dormancy-threshold",
        "12h",
        "--dormancy-auto-deletion",
        "30d",
    ])?;
    s.ok(&["create", "dev"])?;
    let url = s.url.clone();
    b.sign_in(&url, "admin", "admin-password")?;
    b.goto(&format!("{url}/@admin/dev"))?;
    b.wait_text("next-action", "(autostop)")?;

    // An hour and a bit later, the scheduler stops it; the page says why.
    set_offset(61 * MIN)?;
    s.wait_for("dev", Duration::from_secs(60), |w| {
        w["status"] == "stopped" && w["latest_build"]["reason"] == "autostop"
    })?;
    b.wait_text("build-reason", "Stopped by the scheduler: autostop")?;
    assert_eq!(
        b.exec(
            "return document.getElementById('build-reason').hidden;",
            json!([])
        )?,
        false
    );
    let next = b.wait_text("next-action", "Becomes dormant at")?;
    assert!(next.ends_with("UTC (dormancy)"), "{next}");

    // Unused for more than 12 hours: dormant, with its deletion ahead.
    set_offset(14 * HOUR)?;
    s.wait_for("dev", Duration::from_secs(30), |w| {
        w["schedule"]["dormant_at"].is_i64()
    })?;
    let notice = b.wait_text("dormant-text", "Dormant since")?;
    assert!(notice.contains("activate it to start it again"), "{notice}");
    assert!(notice.contains("It will be deleted at"), "{notice}");
    let next = b.wait_text("next-action", "Deleted at")?;
    assert!(next.ends_with("UTC (dormancy deletion)"), "{next}");
    b.screenshot("workspace-dormant")?;

    // Activate: no longer dormant, the notice goes away.
    b.click("#activate")?;
    b.wait_text("schedule-saved", "Activated")?;
    assert!(s.workspace("dev")?["schedule"]["dormant_at"].is_null());
    b.wait_js("document.getElementById('dormant').hidden", 10)?;
    // Activating it again is refused with the server's message.
    let refused = b.exec_async(
        "const r = await fetch('/api/v1/workspaces/dev/activate', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name=\"csrf-token\"]').content}}); return r.status;",
    )?;
    assert_eq!(refused, 409);
    Ok(())
}

both_backends!(scheduler_actions_on_the_page);
