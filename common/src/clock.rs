//! Wall-clock milliseconds and retry backoff.

use std::time::Duration;

use rand::Rng;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Full-jitter exponential backoff: a random wait in [0, min(cap, base * 2^attempt)], at least
/// 50 ms.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let max = exp.min(cap);
    let ms = rand::thread_rng().gen_range(0..=max.as_millis() as u64);
    Duration::from_millis(ms.max(50))
}

pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_cap() {
        for attempt in 0..40 {
            let d = backoff(attempt, BACKOFF_BASE, BACKOFF_CAP);
            assert!(d >= Duration::from_millis(50) && d <= BACKOFF_CAP, "{d:?}");
        }
    }
}
