use super::*;

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .expect("timestamp")
        .as_millisecond()
}

fn req(days: RequirementDays, weeks: u32) -> AutostopRequirement {
    AutostopRequirement { days, weeks }
}

#[test]
fn daily_requirement_stops_at_quiet_hours_across_dst() {
    let q = TzCron::parse_quiet_hours("CRON_TZ=America/Chicago 30 2 * * *").expect("quiet");
    let daily = req(RequirementDays::Daily, 1);
    // Started Saturday 2026-10-31 at noon Chicago (17:00 UTC, CDT): stops 02:30 CDT Sunday?
    // No: the clocks fall back at 02:00 on Sunday 2026-11-01, so 02:30 that night is CST.
    assert_eq!(
        next_required_stop(&q, daily, ms("2026-10-31T17:00:00Z")),
        Some(ms("2026-11-01T08:30:00Z"))
    );
    // The night before, still summer time: 02:30 CDT = 07:30 UTC.
    assert_eq!(
        next_required_stop(&q, daily, ms("2026-10-30T17:00:00Z")),
        Some(ms("2026-10-31T07:30:00Z"))
    );
    // Started 40 minutes before quiet hours: the next night's.
    assert_eq!(
        next_required_stop(&q, daily, ms("2026-10-31T06:50:00Z")),
        Some(ms("2026-11-01T08:30:00Z"))
    );
    assert_eq!(
        next_required_stop(&q, req(RequirementDays::Off, 1), ms("2026-10-31T06:50:00Z")),
        None
    );
}

#[test]
fn weekly_requirement_is_in_step_for_the_whole_template() {
    let q = TzCron::parse_quiet_hours("CRON_TZ=UTC 0 1 * * *").expect("quiet");
    let every2 = req(RequirementDays::Saturday, 2);
    // Two workspaces started in different weeks stop on the same Saturday.
    let a = next_required_stop(&q, every2, ms("2026-11-02T09:00:00Z")).expect("a");
    let b = next_required_stop(&q, every2, ms("2026-11-09T09:00:00Z")).expect("b");
    assert_eq!(a, b);
    let sat = jiff::Timestamp::from_millisecond(a)
        .expect("ts")
        .to_zoned(jiff::tz::TimeZone::UTC);
    assert_eq!(sat.weekday(), jiff::civil::Weekday::Saturday);
    assert_eq!((sat.hour(), sat.minute()), (1, 0));
    // And the one after is two weeks later.
    let next = next_required_stop(&q, every2, a).expect("next");
    assert_eq!(next - a, 14 * 86_400_000);
    // Sunday, every week.
    let sun = next_required_stop(&q, req(RequirementDays::Sunday, 1), a).expect("sun");
    assert_eq!(sun - a, 86_400_000);
}

#[test]
fn bad_settings_are_refused() {
    let base = TemplateSchedule::default();
    let e = apply_update(
        &base,
        &TemplateScheduleUpdate {
            autostop_requirement_days: Some(RequirementDays::Saturday),
            autostop_requirement_weeks: Some(17),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("1 to 16"), "{e}");
    let e = apply_update(
        &base,
        &TemplateScheduleUpdate {
            autostop_requirement_days: Some(RequirementDays::Daily),
            autostop_requirement_weeks: Some(2),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("fixed at 1 with daily"), "{e}");
    let e = apply_update(
        &base,
        &TemplateScheduleUpdate {
            autostart_days: Some(vec!["funday".into()]),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("not a day of the week"), "{e}");
    let e = apply_update(
        &base,
        &TemplateScheduleUpdate {
            activity_bump_ms: Some(-1),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("activity bump"), "{e}");
    let ok = apply_update(
        &base,
        &TemplateScheduleUpdate {
            autostart_days: Some(vec!["mon,tue".into(), "Fri".into()]),
            ..Default::default()
        },
    )
    .expect("days");
    assert_eq!(ok.autostart_days, ["monday", "tuesday", "friday"]);
    assert_eq!(
        parse_weekdays(&["mon-fri".into()]).expect("range"),
        [true, true, true, true, true, false, false]
    );
    assert!(parse_weekdays(&["fri-mon".into()]).is_err());
}

#[test]
fn autostart_must_fit_the_allowed_days() {
    let t = TemplateSchedule {
        autostart_days: vec!["monday".into(), "tuesday".into()],
        ..Default::default()
    };
    assert!(check_autostart("CRON_TZ=Europe/Berlin 0 9 * * 1-2", &t).is_ok());
    let e = check_autostart("CRON_TZ=Europe/Berlin 0 9 * * 1-5", &t).unwrap_err();
    assert!(e.contains("wednesday, thursday, friday"), "{e}");
    let e = check_autostart("CRON_TZ=Europe/Berlin 0 9 1 * *", &t).unwrap_err();
    assert!(
        e.contains("allows autostart only on monday, tuesday"),
        "{e}"
    );
    let no = TemplateSchedule {
        allow_user_autostart: false,
        ..Default::default()
    };
    assert!(check_autostart("0 9 * * *", &no).is_err());
}

#[test]
fn deadlines_and_next_action() {
    assert_eq!(deadlines_at_start(1000, 0, None), (None, None));
    assert_eq!(deadlines_at_start(1000, 500, None), (Some(1500), None));
    assert_eq!(
        deadlines_at_start(1000, 500, Some(1200)),
        (Some(1200), Some(1200))
    );
    assert_eq!(
        deadlines_at_start(1000, 0, Some(1200)),
        (Some(1200), Some(1200))
    );
    assert_eq!(stop_reason(1200, Some(1200)), "autostop requirement");
    assert_eq!(stop_reason(1100, Some(1200)), "autostop");
    let t = TemplateSchedule {
        dormancy_threshold_ms: 10_000,
        dormancy_auto_deletion_ms: 5_000,
        ..Default::default()
    };
    let running = WorkspaceTimes {
        running: true,
        deadline: Some(5_000),
        last_used_at: Some(0),
        ..Default::default()
    };
    let n = next_action(&t, &running).expect("next");
    assert_eq!(
        (n.at, n.action.as_str(), n.reason.as_str()),
        (5_000, "stop", "autostop")
    );
    let dormant = WorkspaceTimes {
        stopped: true,
        dormant_at: Some(20_000),
        next_autostart_at: Some(21_000),
        ..Default::default()
    };
    let n = next_action(&t, &dormant).expect("next");
    assert_eq!((n.at, n.reason.as_str()), (25_000, "dormancy deletion"));
}
