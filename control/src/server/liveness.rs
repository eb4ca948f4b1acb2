//! Agent liveness in memory, written to the store in batches: tens of thousands of agents polling
//! and heartbeating must not mean tens of thousands of single-row writes.

use outpost_common::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::Store;

#[derive(Default)]
struct Seen {
    last_seen: i64,
    lifecycle: Option<String>,
    stats: Option<String>,
}

#[derive(Default)]
pub struct Liveness {
    pending: Mutex<HashMap<String, Seen>>,
    /// The newest last-seen of every agent, flushed or not (for status derivation).
    latest: Mutex<HashMap<String, i64>>,
    /// Workspaces with activity (sessions, relays, app traffic) since the last flush, and when.
    activity: Mutex<HashMap<String, i64>>,
    /// When each workspace's statistics were last sampled for its history, and the samples not
    /// yet written (at most one a minute per workspace).
    sampled: Mutex<HashMap<String, i64>>,
    samples: Mutex<Vec<crate::store::StatsSampleRow>>,
    /// When samples past the history's hour were last pruned.
    pruned_at: Mutex<i64>,
}

/// How often samples past the history's hour are pruned.
const PRUNE_EVERY_MS: i64 = 300_000;

/// One history sample per workspace every four heartbeats: a minute at the default 15 s (and
/// never more often than every 4 s, nor less than every minute).
pub fn sample_every_ms(heartbeat_secs: u64) -> i64 {
    i64::try_from(heartbeat_secs.saturating_mul(4_000))
        .unwrap_or(i64::MAX)
        .clamp(4_000, 60_000)
}

impl Liveness {
    pub fn record(
        &self,
        agent_id: &str,
        now: i64,
        lifecycle: Option<String>,
        stats: Option<String>,
    ) {
        {
            let mut p = self.pending.locked();
            let e = p.entry(agent_id.to_string()).or_default();
            e.last_seen = e.last_seen.max(now);
            if lifecycle.is_some() {
                e.lifecycle = lifecycle;
            }
            if stats.is_some() {
                e.stats = stats;
            }
        }
        let mut l = self.latest.locked();
        let v = l.entry(agent_id.to_string()).or_insert(now);
        *v = (*v).max(now);
    }

    /// Keeps a sample of a workspace's statistics for its history when the last one is
    /// `every_ms` old (or there is none).
    pub fn sample(
        &self,
        workspace_id: &str,
        now: i64,
        st: &outpost_api::AgentStats,
        every_ms: i64,
    ) {
        {
            let mut s = self.sampled.locked();
            let last = s.entry(workspace_id.to_string()).or_insert(i64::MIN);
            if now.saturating_sub(*last) < every_ms {
                return;
            }
            *last = now;
        }
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.samples.locked().push(crate::store::StatsSampleRow {
            workspace_id: workspace_id.to_string(),
            at: now,
            cpu_percent: f64::from(st.cpu_percent),
            cpu_cores: i64::from(st.cpu_cores),
            mem_used_bytes: big(st.mem_used_bytes),
            mem_total_bytes: big(st.mem_total_bytes),
            home_disk_used_bytes: big(st.home_disk_used_bytes),
            home_disk_total_bytes: big(st.home_disk_total_bytes),
            load1: st.load1,
        });
    }

    /// Someone used workspace `workspace_id` at `now` (its deadline is bumped at the flush).
    pub fn activity(&self, workspace_id: &str, now: i64) {
        let mut a = self.activity.locked();
        let v = a.entry(workspace_id.to_string()).or_insert(now);
        *v = (*v).max(now);
    }

    pub fn take_activity(&self) -> Vec<(String, i64)> {
        self.activity.locked().drain().collect()
    }

    pub fn last_seen(&self, agent_id: &str) -> Option<i64> {
        self.latest.locked().get(agent_id).copied()
    }

    /// A revoked agent's pending updates are dropped.
    pub fn forget(&self, agent_id: &str) {
        self.pending.locked().remove(agent_id);
        self.latest.locked().remove(agent_id);
    }

    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(String, i64, Option<String>, Option<String>)> = {
            let mut p = self.pending.locked();
            p.drain()
                .map(|(id, s)| (id, s.last_seen, s.lifecycle, s.stats))
                .collect()
        };
        for chunk in batch.chunks(500) {
            if let Err(e) = store.agent_liveness_batch(chunk).await {
                tracing::warn!(error = %e, n = chunk.len(), "writing agent liveness failed");
            }
        }
        let samples = std::mem::take(&mut *self.samples.locked());
        for chunk in samples.chunks(500) {
            if let Err(e) = store.add_stats_samples(chunk).await {
                tracing::warn!(error = %e, n = chunk.len(), "writing statistics samples failed");
            }
        }
        // Every few minutes: the history keeps an hour; the sampling marks of workspaces not
        // heard from within it go too.
        let now = crate::store::now_ms();
        let due = {
            let mut p = self.pruned_at.locked();
            let due = now - *p >= PRUNE_EVERY_MS;
            if due {
                *p = now;
            }
            due
        };
        if due {
            let before = now - crate::store::STATS_KEEP_MS;
            self.sampled.locked().retain(|_, at| *at >= before);
            if let Err(e) = store.prune_stats_samples(before).await {
                tracing::warn!(error = %e, "pruning statistics samples failed");
            }
        }
    }

    /// Flushes every `every` until the process ends.
    pub async fn run(state: super::AppState, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            state.liveness.flush(&state.store).await;
            super::scheduler::flush_activity(&state).await;
        }
    }
}
