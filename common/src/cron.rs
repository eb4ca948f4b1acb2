//! Cron schedules with a seconds field: `SEC MIN HOUR DOM MON DOW` (UTC), each field `*`, `*/N`,
//! `A`, `A-B`, `A-B/N` or a comma list of those. Day of week 0-6 (0 = Sunday).

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    fields: [Vec<bool>; 6],
}

const RANGES: [(u32, u32); 6] = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        if parts.len() != 6 {
            return Err(format!("{s:?}: a schedule has six fields: second minute hour day-of-month month day-of-week"));
        }
        let mut fields: [Vec<bool>; 6] = Default::default();
        for (i, part) in parts.iter().enumerate() {
            let (lo, hi) = RANGES[i];
            let mut allowed = vec![false; hi as usize + 1];
            for item in part.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, st)) => (
                        r,
                        st.parse::<u32>()
                            .map_err(|_| format!("bad step in {item:?}"))?,
                    ),
                    None => (item, 1),
                };
                if step == 0 {
                    return Err(format!("step 0 in {item:?}"));
                }
                let (a, b) = if range == "*" {
                    (lo, hi)
                } else if let Some((a, b)) = range.split_once('-') {
                    (
                        a.parse().map_err(|_| format!("bad value in {item:?}"))?,
                        b.parse().map_err(|_| format!("bad value in {item:?}"))?,
                    )
                } else {
                    let v: u32 = range
                        .parse()
                        .map_err(|_| format!("bad value in {item:?}"))?;
                    (v, if item.contains('/') { hi } else { v })
                };
                if a < lo || b > hi || a > b {
                    return Err(format!("{item:?} is outside {lo}-{hi}"));
                }
                let mut v = a;
                while v <= b {
                    allowed[v as usize] = true;
                    v += step;
                }
            }
            fields[i] = allowed;
        }
        Ok(Schedule { fields })
    }

    fn matches(&self, t: u64) -> bool {
        let (sec, min, hour, day, month, dow) = civil(t);
        self.fields[0][sec as usize]
            && self.fields[1][min as usize]
            && self.fields[2][hour as usize]
            && self.fields[3][day as usize]
            && self.fields[4][month as usize]
            && self.fields[5][dow as usize]
    }

    /// The first second after `after` (Unix seconds) that matches, within five years.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let mut t = after + 1;
        let end = after + 5 * 366 * 86_400;
        while t <= end {
            let (_, _, _, day, month, dow) = civil(t);
            if !self.fields[3][day as usize]
                || !self.fields[4][month as usize]
                || !self.fields[5][dow as usize]
            {
                t = (t / 86_400 + 1) * 86_400;
                continue;
            }
            if self.matches(t) {
                return Some(t);
            }
            t += 1;
        }
        None
    }
}

/// (second, minute, hour, day, month, weekday) of Unix time `t` in UTC.
fn civil(t: u64) -> (u32, u32, u32, u32, u32, u32) {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let dow = ((days + 4).rem_euclid(7)) as u32; // 1970-01-01 was a Thursday
                                                 // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        (secs % 60) as u32,
        ((secs / 60) % 60) as u32,
        (secs / 3600) as u32,
        d,
        m,
        dow,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_steps() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(s.next_after(0), Some(5));
        assert_eq!(s.next_after(7), Some(10));
        let s = Schedule::parse("0 30 9 * * 1").unwrap();
        // 1970-01-05 was a Monday: 09:30:00 that day.
        assert_eq!(s.next_after(0), Some(4 * 86_400 + 9 * 3600 + 30 * 60));
        let s = Schedule::parse("0 0 0 29 2 *").unwrap();
        let t = s.next_after(0).unwrap();
        assert_eq!(civil(t).3, 29);
        assert_eq!(civil(t).4, 2);
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("61 * * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * * *").is_err());
    }

    #[test]
    fn civil_dates() {
        // 2026-11-26 03:19:12 UTC was a Thursday.
        assert_eq!(civil(1_795_663_152), (12, 19, 3, 26, 11, 4));
    }
}
