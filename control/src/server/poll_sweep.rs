//! What an agent's poll need not ask the store. At 50,000 agents the polls come 2,000 a second,
//! and each asked twice (the agent's row, its commands), nearly always for nothing. Instead, once
//! a second, each replica reads the agents with a command not yet delivered and the agents
//! revoked in the last minute ([`run`]). A poll then takes commands from the store only for an
//! agent that read named or a wake-up named since it began (a command queued here, or on another
//! replica and passed on the bus); a held poll whose agent the read names is woken, so a wake-up
//! the bus lost costs a second, not the poll's 25 s. A revocation the read finds is forgotten
//! here as the bus's `forget` would be: the agent cache drops the row and held polls end. A
//! renewal it finds drops a cached row that names an older certificate.
//! Until a read succeeds, and when none has for [`STALE`], every poll asks the store, as before.

use std::collections::HashSet;
use std::mem::take;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use outpost_common::LockExt;

use super::AppState;
use crate::store::now_ms;

/// How often the store is read.
pub const EVERY: Duration = Duration::from_secs(1);
/// Past this without a read, polls ask the store themselves.
const STALE: Duration = Duration::from_secs(5);
/// Revocations and renewals this recent are read every time (those made by replicas whose
/// clock is behind this one's, and rows a poll read just before a change and cached just after).
const WINDOW_MS: i64 = 60_000;
/// Past this since the last read, the agent cache is cleared (changes may have been
/// missed: the window is [`WINDOW_MS`], with room for clocks that differ).
const GAP: Duration = Duration::from_secs(30);
/// Names read at most; past it every poll asks the store.
const LIMIT: i64 = 100_000;

#[derive(Default)]
pub struct PollSweep {
    sets: Mutex<Sets>,
}

#[derive(Default)]
struct Sets {
    /// Agents the last read found with commands.
    pending: HashSet<String>,
    /// The last read found more than [`LIMIT`].
    overflow: bool,
    /// Woken since the read in flight began (`all`: every agent, the bus reconnected).
    woken: HashSet<String>,
    woken_all: bool,
    /// Woken before the read in flight began, kept until a read completes after it.
    before: HashSet<String>,
    before_all: bool,
    /// When the last read succeeded.
    read_at: Option<Instant>,
}

impl PollSweep {
    /// A command was queued for `agent` (here or on another replica).
    pub fn woken(&self, agent: &str) {
        self.sets.locked().woken.insert(agent.to_string());
    }

    /// Wake-ups may have been missed (the bus reconnected): every agent may have commands.
    pub fn woken_all(&self) {
        self.sets.locked().woken_all = true;
    }

    /// Whether a read succeeded within [`STALE`] (so what it says can be trusted).
    pub fn current(&self) -> bool {
        self.sets
            .locked()
            .read_at
            .is_some_and(|t| t.elapsed() < STALE)
    }

    /// Whether `agent` may have commands waiting in the store.
    pub fn may_have_commands(&self, agent: &str) -> bool {
        let s = self.sets.locked();
        s.read_at.is_none_or(|t| t.elapsed() >= STALE)
            || s.overflow
            || s.woken_all
            || s.before_all
            || s.pending.contains(agent)
            || s.woken.contains(agent)
            || s.before.contains(agent)
    }

    /// A read begins: what was woken until now, it will see in the store. Returns the time
    /// since the last read that succeeded.
    fn begin(&self) -> Option<Duration> {
        let mut s = self.sets.locked();
        let woken = take(&mut s.woken);
        s.before.extend(woken);
        s.before_all |= take(&mut s.woken_all);
        s.read_at.map(|t| t.elapsed())
    }

    /// The read begun last succeeded.
    fn done(&self, pending: HashSet<String>, overflow: bool) {
        let mut s = self.sets.locked();
        s.pending = pending;
        s.overflow = overflow;
        s.before.clear();
        s.before_all = false;
        s.read_at = Some(Instant::now());
    }
}

/// Reads the store every [`EVERY`] until the process ends.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match sweep(&state).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("reading pending agent commands again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "reading pending agent commands; polls ask the store themselves meanwhile");
            }
            Err(_) => {}
        }
    }
}

async fn sweep(state: &AppState) -> Result<(), crate::store::StoreError> {
    let since_last = state.poll_sweep.begin();
    let changed = state
        .store
        .agents_changed_since(now_ms() - WINDOW_MS, LIMIT)
        .await?;
    let pending = state.store.agents_with_commands(LIMIT + 1).await?;
    // Revocations older than the window were not read: after a long gap (or at the first
    // read) the agent cache starts over.
    if since_last.is_none_or(|d| d > GAP) {
        state.agent_cache.clear();
    }
    for a in &changed {
        if a.revoked {
            state.forget_agent_local(&a.id);
        } else {
            state
                .agent_cache
                .forget_unless_serial(&a.id, a.cert_serial.as_deref());
        }
    }
    let overflow = pending.len() as i64 > LIMIT;
    let pending: HashSet<String> = pending.into_iter().collect();
    for a in &pending {
        state.wake_held_poll(a);
    }
    state.poll_sweep.done(pending, overflow);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_known_before_a_read() {
        let s = PollSweep::default();
        assert!(s.may_have_commands("a"));
        assert!(!s.current());
        s.begin();
        s.done(HashSet::new(), false);
        assert!(s.current());
        assert!(!s.may_have_commands("a"));
    }

    #[test]
    fn a_wake_up_counts_until_a_read_that_began_after_it_completes() {
        let s = PollSweep::default();
        s.begin();
        s.done(HashSet::new(), false);
        s.woken("a");
        assert!(s.may_have_commands("a"));
        // A read begins after the wake-up: until it completes, "a" still counts.
        s.begin();
        s.woken("b");
        assert!(s.may_have_commands("a") && s.may_have_commands("b"));
        s.done(HashSet::new(), false);
        // That read saw a's command (taken since: it found none); b's came after it began.
        assert!(!s.may_have_commands("a"));
        assert!(s.may_have_commands("b"));
        s.begin();
        s.done(["b".to_string()].into_iter().collect(), false);
        assert!(s.may_have_commands("b") && !s.may_have_commands("a"));
    }

    #[test]
    fn a_failed_read_keeps_the_wake_ups_for_the_next() {
        let s = PollSweep::default();
        s.begin();
        s.done(HashSet::new(), false);
        s.woken("a");
        s.begin(); // fails: no `done`
        s.begin();
        assert!(s.may_have_commands("a"));
        s.done(HashSet::new(), false);
        assert!(!s.may_have_commands("a"));
    }

    #[test]
    fn a_lost_bus_or_too_many_names_make_every_agent_count() {
        let s = PollSweep::default();
        s.begin();
        s.done(HashSet::new(), false);
        s.woken_all();
        assert!(s.may_have_commands("x"));
        s.begin();
        assert!(s.may_have_commands("x"));
        s.done(HashSet::new(), false);
        assert!(!s.may_have_commands("x"));
        s.begin();
        s.done(HashSet::new(), true);
        assert!(s.may_have_commands("x"));
    }
}
