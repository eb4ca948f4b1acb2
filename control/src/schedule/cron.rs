//! Cron schedules in a time zone: `CRON_TZ=ZONE MIN HOUR DOM MON DOW` (five fields, as Coder
//! and cron take them; `CRON_TZ=` defaults to UTC). Zones come from the IANA database (jiff's
//! bundled copy, or the system's when newer). Occurrences are computed in local time, so a
//! 02:30 schedule stays at 02:30 across daylight saving changes; on the day 02:30 does not
//! exist (spring forward) it happens at the first instant after the gap, as cron does.

use jiff::civil::{self, Date};
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, Clone)]
pub struct TzCron {
    /// The schedule as given, normalised (`CRON_TZ=ZONE` first).
    pub text: String,
    pub zone: String,
    tz: TimeZone,
    minutes: Vec<u32>,
    hours: Vec<u32>,
    days: [bool; 32],
    months: [bool; 13],
    /// Monday = 0 .. Sunday = 6.
    weekdays: [bool; 7],
    /// Both day fields restricted: either may match (cron's rule).
    day_or: bool,
}

const DOW_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn field(part: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<Vec<u32>, String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
        }
        v.parse::<u32>()
            .map_err(|_| format!("{what} field {part:?}: {v:?} is not a number"))
    };
    let mut out = Vec::new();
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} field {part:?}: bad step {s:?}"))?,
            ),
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if item.contains('/') { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return Err(format!(
                "{what} field {part:?}: {item:?} is outside {lo}-{hi}"
            ));
        }
        let mut v = a;
        while v <= b {
            out.push(v);
            v += step;
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The zone of `CRON_TZ=NAME` (or UTC), and the rest.
fn split_zone(s: &str) -> Result<(String, TimeZone, &str), String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("CRON_TZ=").or_else(|| s.strip_prefix("TZ=")) {
        let (name, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let tz = TimeZone::get(name).map_err(|_| {
            format!("unknown time zone {name:?}: use an IANA name such as America/Chicago, Europe/Berlin or UTC")
        })?;
        Ok((name.to_string(), tz, rest.trim()))
    } else {
        Ok(("UTC".into(), TimeZone::UTC, s))
    }
}

impl TzCron {
    pub fn parse(s: &str) -> Result<TzCron, String> {
        let (zone, tz, rest) = split_zone(s)?;
        let parts: Vec<&str> = rest.split_whitespace().collect();
        match parts.len() {
            5 => {}
            6 => return Err(format!("{s:?} has six fields; seconds are not allowed: use `CRON_TZ=ZONE MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`")),
            n => return Err(format!("{s:?} has {n} fields: use `CRON_TZ=ZONE MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`, e.g. `CRON_TZ=Europe/Berlin 30 8 * * 1-5`")),
        }
        let minutes = field(parts[0], 0, 59, &[], "minute")?;
        let hours = field(parts[1], 0, 23, &[], "hour")?;
        let mut days = [false; 32];
        for d in field(parts[2], 1, 31, &[], "day-of-month")? {
            days[d as usize] = true;
        }
        let mut months = [false; 13];
        for m in field(parts[3], 1, 12, &MONTH_NAMES, "month")? {
            months[m as usize] = true;
        }
        let mut weekdays = [false; 7];
        for d in field(parts[4], 0, 7, &DOW_NAMES, "day-of-week")? {
            // cron: 0 and 7 are Sunday; ours: Monday = 0.
            weekdays[((d + 6) % 7) as usize] = true;
        }
        Ok(TzCron {
            text: format!("CRON_TZ={zone} {}", parts.join(" ")),
            zone,
            tz,
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_or: parts[2] != "*" && parts[4] != "*",
        })
    }

    /// Quiet hours: only a minute and an hour (`CRON_TZ=ZONE MIN HOUR * * *`).
    pub fn parse_quiet_hours(s: &str) -> Result<TzCron, String> {
        let c = TzCron::parse(s)?;
        let (_, _, rest) = split_zone(s)?;
        let parts: Vec<&str> = rest.split_whitespace().collect();
        if parts[2..] != ["*", "*", "*"] {
            return Err(format!("{s:?}: quiet hours take only a minute and an hour (`CRON_TZ=ZONE MINUTE HOUR * * *`), not days or months"));
        }
        if c.minutes.len() != 1 || c.hours.len() != 1 {
            return Err(format!("{s:?}: quiet hours start at one time of day: give a single minute and hour, e.g. `CRON_TZ=America/Chicago 30 2 * * *`"));
        }
        Ok(c)
    }

    /// `CRON_TZ=UTC 0 0 * * *`, the default quiet hours.
    pub fn utc_midnight() -> TzCron {
        TzCron {
            text: "CRON_TZ=UTC 0 0 * * *".into(),
            zone: "UTC".into(),
            tz: TimeZone::UTC,
            minutes: vec![0],
            hours: vec![0],
            days: [true; 32],
            months: [true; 13],
            weekdays: [true; 7],
            day_or: false,
        }
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The week days (Monday = 0) the schedule can fire on.
    pub fn weekdays(&self) -> [bool; 7] {
        if self.day_or {
            // A day-of-month may fall on any week day.
            return [true; 7];
        }
        self.weekdays
    }

    fn day_matches(&self, d: Date) -> bool {
        if !self.months[d.month() as usize] {
            return false;
        }
        let dom = self.days[d.day() as usize];
        let dow = self.weekdays[d.weekday().to_monday_zero_offset() as usize];
        if self.day_or {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first occurrence strictly after `after_ms` (Unix ms), within about five years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(after_ms).ok()?;
        let mut day = start.to_zoned(self.tz.clone()).date();
        for _ in 0..(5 * 366) {
            if self.day_matches(day) {
                for &h in &self.hours {
                    for &m in &self.minutes {
                        let dt = day.to_datetime(civil::time(h as i8, m as i8, 0, 0));
                        let Ok(z) = self.tz.to_ambiguous_zoned(dt).compatible() else {
                            continue;
                        };
                        let ms = z.timestamp().as_millisecond();
                        if ms > after_ms {
                            return Some(ms);
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The local date and week day (Monday = 0) of instant `ms` in this schedule's zone.
    pub fn local_date(&self, ms: i64) -> Option<Date> {
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.tz.clone())
                .date(),
        )
    }
}

/// Days since 1970-01-01 of a civil date.
pub fn day_number(d: Date) -> i64 {
    d.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp().as_second().div_euclid(86_400))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("timestamp").as_millisecond()
    }

    #[test]
    fn parses_and_rejects() {
        assert!(TzCron::parse("CRON_TZ=America/Chicago 30 2 * * *").is_ok());
        assert!(TzCron::parse("30 9 * * mon-fri").is_ok());
        let e = TzCron::parse("CRON_TZ=Mars/Olympus 30 2 * * *").unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
        let e = TzCron::parse("CRON_TZ=UTC 0 30 2 * * *").unwrap_err();
        assert!(e.contains("seconds"), "{e}");
        let e = TzCron::parse("CRON_TZ=UTC 61 2 * * *").unwrap_err();
        assert!(e.contains("outside 0-59"), "{e}");
        let e = TzCron::parse_quiet_hours("CRON_TZ=UTC 30 2 * * 1").unwrap_err();
        assert!(e.contains("only a minute and an hour"), "{e}");
        let e = TzCron::parse_quiet_hours("CRON_TZ=UTC 0,30 2 * * *").unwrap_err();
        assert!(e.contains("single minute"), "{e}");
        assert!(TzCron::parse("CRON_TZ=UTC 1 2").is_err());
    }

    #[test]
    fn local_time_holds_across_dst() {
        let c = TzCron::parse_quiet_hours("CRON_TZ=America/Chicago 30 2 * * *").expect("parse");
        // Fall back on 2026-11-01: 02:30 CDT (07:30 UTC) the day before, 02:30 CST (08:30 UTC)
        // the day after.
        assert_eq!(
            c.next_after(ms("2026-10-31T00:00:00Z")),
            Some(ms("2026-10-31T07:30:00Z"))
        );
        assert_eq!(
            c.next_after(ms("2026-10-31T07:30:00Z")),
            Some(ms("2026-11-01T08:30:00Z"))
        );
        // Spring forward on 2026-03-08: 02:30 does not exist; it happens at 03:30 CDT.
        assert_eq!(
            c.next_after(ms("2026-03-07T12:00:00Z")),
            Some(ms("2026-03-08T08:30:00Z"))
        );
        assert_eq!(
            c.next_after(ms("2026-03-08T08:30:00Z")),
            Some(ms("2026-03-09T07:30:00Z"))
        );
    }

    #[test]
    fn weekdays_and_names() {
        let c = TzCron::parse("CRON_TZ=Europe/Berlin 0 9 * * MON-FRI").expect("parse");
        assert_eq!(c.weekdays(), [true, true, true, true, true, false, false]);
        // Saturday 2026-11-28 → Monday 2026-11-30 09:00 CET = 08:00 UTC.
        assert_eq!(
            c.next_after(ms("2026-11-28T10:00:00Z")),
            Some(ms("2026-11-30T08:00:00Z"))
        );
        let sun = TzCron::parse("0 0 * * 7").expect("parse");
        assert!(sun.weekdays()[6]);
    }
}
