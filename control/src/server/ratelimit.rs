//! Password sign-in under attack: failures counted per source address and per username, with an
//! exponential lockout; password hashing on the blocking pool behind a semaphore, so a flood of
//! sign-ins queues instead of taking every core; and the same work for unknown usernames as for
//! known ones, so timing does not say which names exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use outpost_common::LockExt;
use tokio::sync::Semaphore;

use super::auth;
use super::error::ApiError;

/// Failures a username may have before it is locked out for a while.
const USER_FREE_FAILURES: u32 = 5;
/// Failures one source address may have (over every username) before it is.
const SOURCE_FREE_FAILURES: u32 = 20;
/// The longest lockout; it doubles with each failure past the free ones, from one second.
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Counters untouched this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Tracked keys per map; past it, idle ones go first, then the map starts over.
const MAX_TRACKED: usize = 10_000;
/// Password hashes computed at once (each takes ~19 MiB and a core for tens of ms).
const HASHING_PERMITS: usize = 2;
/// The longest a sign-in waits for a hashing slot.
const HASHING_WAIT: Duration = Duration::from_secs(10);
/// The longest username we even look up; anything longer is refused as-is, never stored.
pub const MAX_USERNAME: usize = 64;

#[derive(Clone, Copy)]
struct Counter {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

fn lockout(failures: u32, free: u32) -> Option<Duration> {
    let over = failures.checked_sub(free)?;
    let secs = 1u64.checked_shl(over.min(20)).unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_LOCKOUT))
}

#[derive(Default)]
struct Counters(HashMap<String, Counter>);

impl Counters {
    fn locked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let c = self.0.get(key)?;
        c.locked_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn fail(&mut self, key: &str, free: u32, now: Instant) {
        if self.0.len() >= MAX_TRACKED && !self.0.contains_key(key) {
            self.0
                .retain(|_, c| now.duration_since(c.last) < FORGET_AFTER);
            if self.0.len() >= MAX_TRACKED {
                self.0.clear();
            }
        }
        let c = self.0.entry(key.to_string()).or_insert(Counter {
            failures: 0,
            locked_until: None,
            last: now,
        });
        if now.duration_since(c.last) > FORGET_AFTER {
            c.failures = 0;
        }
        c.failures = c.failures.saturating_add(1);
        c.last = now;
        c.locked_until = lockout(c.failures, free).map(|d| now + d);
    }

    fn clear(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// One per server, in its state.
pub struct LoginGuard {
    by_source: Mutex<Counters>,
    by_user: Mutex<Counters>,
    hashing: Semaphore,
    /// What unknown usernames are checked against (a hash of a random password).
    dummy_hash: String,
}

impl LoginGuard {
    pub fn new() -> Result<Self, ApiError> {
        Ok(LoginGuard {
            by_source: Mutex::default(),
            by_user: Mutex::default(),
            hashing: Semaphore::new(HASHING_PERMITS),
            dummy_hash: auth::hash_password(&auth::random_secret())?,
        })
    }

    /// Refuses a sign-in before any work when its source or its username is locked out.
    pub fn check(&self, source: IpAddr, username: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let wait = [
            self.by_source.locked().locked_for(&source.to_string(), now),
            self.by_user.locked().locked_for(username, now),
        ]
        .into_iter()
        .flatten()
        .max();
        match wait {
            Some(d) => Err(ApiError::too_many_requests(
                format!(
                    "too many failed sign-ins; try again in {} s",
                    d.as_secs().max(1)
                ),
                d,
            )),
            None => Ok(()),
        }
    }

    pub fn failed(&self, source: IpAddr, username: &str) {
        let now = Instant::now();
        self.by_source
            .locked()
            .fail(&source.to_string(), SOURCE_FREE_FAILURES, now);
        self.by_user
            .locked()
            .fail(username, USER_FREE_FAILURES, now);
    }

    pub fn succeeded(&self, username: &str) {
        self.by_user.locked().clear(username);
    }

    /// Checks `password` against `hash` (or, for an unknown user, against a dummy hash, so the
    /// answer takes as long), on the blocking pool, at most [`HASHING_PERMITS`] at a time.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, ApiError> {
        let _permit = tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| {
                ApiError::unavailable("the server is busy checking passwords; try again shortly")
            })?
            .map_err(ApiError::internal)?;
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_string();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
            .await
            .map_err(ApiError::internal)?;
        Ok(ok && known)
    }
}

/// Keys tracked by one set of buckets (an agent each: room for 50,000 and more).
const MAX_BUCKETS: usize = 200_000;

/// Token buckets by key: `capacity` requests at once, refilled at `per_sec`.
pub struct Buckets {
    map: Mutex<HashMap<String, (f64, Instant)>>,
    capacity: f64,
    per_sec: f64,
}

impl Buckets {
    pub fn new(capacity: u32, per_sec: f64) -> Self {
        Buckets {
            map: Mutex::default(),
            capacity: f64::from(capacity),
            per_sec,
        }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut m = self.map.locked();
        if m.len() >= MAX_BUCKETS && !m.contains_key(key) {
            let full = self.capacity;
            let rate = self.per_sec;
            m.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < full);
            if m.len() >= MAX_BUCKETS {
                m.clear();
            }
        }
        let (tokens, at) = m.entry(key.to_string()).or_insert((self.capacity, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

/// What one agent may ask of the agent API at once, or per second.
pub struct AgentLimits {
    polls: Mutex<HashMap<String, usize>>,
    heartbeats: Buckets,
    mints: Buckets,
}

/// Long polls one agent may hold at once (its own, plus one left over from a reconnect).
const POLLS_PER_AGENT: usize = 2;

/// A held poll; dropping it frees the place.
pub struct HeldPoll<'a> {
    limits: &'a AgentLimits,
    agent: String,
}

impl Drop for HeldPoll<'_> {
    fn drop(&mut self) {
        let mut m = self.limits.polls.locked();
        if let Some(n) = m.get_mut(&self.agent) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.agent);
            }
        }
    }
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            polls: Mutex::default(),
            // Heartbeats come every few seconds: a burst of 10, then 2 a second.
            heartbeats: Buckets::new(10, 2.0),
            // The CLI's credential is cached for most of its hour: 5, then one a minute.
            mints: Buckets::new(5, 1.0 / 60.0),
        }
    }
}

fn too_many(what: &str, wait: Duration) -> ApiError {
    ApiError::too_many_requests(format!("too many {what} from this agent; slow down"), wait)
}

impl AgentLimits {
    pub fn hold_poll(&self, agent: &str) -> Result<HeldPoll<'_>, ApiError> {
        let mut m = self.polls.locked();
        let n = m.entry(agent.to_string()).or_insert(0);
        if *n >= POLLS_PER_AGENT {
            return Err(too_many("held polls", Duration::from_secs(1)));
        }
        *n += 1;
        Ok(HeldPoll {
            limits: self,
            agent: agent.to_string(),
        })
    }

    pub fn heartbeat(&self, agent: &str) -> Result<(), ApiError> {
        self.heartbeats
            .take(agent)
            .map_err(|w| too_many("heartbeats", w))
    }

    pub fn mint(&self, agent: &str) -> Result<(), ApiError> {
        self.mints
            .take(agent)
            .map_err(|w| too_many("token mints", w))
    }
}

/// A username as it may be looked up and written to the audit log: at most [`MAX_USERNAME`]
/// bytes and no control characters, or `None`.
pub fn plausible_username(name: &str) -> Option<&str> {
    (!name.is_empty() && name.len() <= MAX_USERNAME && !name.chars().any(char::is_control))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_double_and_stop_growing() {
        assert_eq!(lockout(5, 5), Some(Duration::from_secs(1)));
        assert_eq!(lockout(4, 5), None);
        assert_eq!(lockout(7, 5), Some(Duration::from_secs(4)));
        assert_eq!(lockout(500, 5), Some(MAX_LOCKOUT));
    }

    #[test]
    fn counters_stay_bounded() {
        let mut c = Counters::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED + 10) {
            c.fail(&format!("u{i}"), 5, now);
        }
        assert!(c.0.len() <= MAX_TRACKED);
        c.fail("x", 0, now);
        assert!(c.locked_for("x", now).is_some());
        c.clear("x");
        assert!(c.locked_for("x", now).is_none());
    }

    #[test]
    fn buckets_refill_and_polls_are_given_back() {
        let b = Buckets::new(2, 1000.0);
        assert!(b.take("a").is_ok() && b.take("a").is_ok());
        assert!(b.take("a").is_err());
        assert!(b.take("b").is_ok(), "per key");
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.take("a").is_ok(), "refilled");
        let l = AgentLimits::default();
        let p1 = l.hold_poll("x").expect("one");
        let _p2 = l.hold_poll("x").expect("two");
        assert!(l.hold_poll("x").is_err());
        drop(p1);
        assert!(l.hold_poll("x").is_ok());
    }

    #[test]
    fn usernames_are_capped_before_use() {
        assert_eq!(plausible_username("alice"), Some("alice"));
        assert_eq!(plausible_username(&"a".repeat(65)), None);
        assert_eq!(plausible_username("a\nb"), None);
        assert_eq!(plausible_username(""), None);
    }
}
