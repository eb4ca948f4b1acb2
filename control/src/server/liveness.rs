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
