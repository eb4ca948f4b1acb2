//! The agent rows that authenticated a poll recently, so a heartbeat (every agent, every
//! 15 s) is checked without a store query: the poll reads the row at least every 25 s, a
//! revocation or renewal here or on another replica (the bus's `forget`) drops it, and an
//! entry older than [`FRESH`] is not used. The one window: with the bus down, a revoked agent's
//! heartbeats (liveness and statistics, nothing else) count for up to [`FRESH`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use outpost_common::LockExt;

use crate::store::AgentRow;

/// How long a row read by a poll serves heartbeats.
pub const FRESH: Duration = Duration::from_secs(30);
/// Entries kept at most (one per connected agent; past it the cache starts over).
const CAP: usize = 200_000;

#[derive(Default)]
pub struct AgentCache {
    rows: Mutex<HashMap<String, (AgentRow, Instant)>>,
}

impl AgentCache {
    pub fn put(&self, row: &AgentRow) {
        let mut m = self.rows.locked();
        if m.len() >= CAP && !m.contains_key(&row.id) {
            m.clear();
        }
        m.insert(row.id.clone(), (row.clone(), Instant::now()));
    }

    /// The row, if a poll read it within [`FRESH`].
    pub fn get(&self, id: &str) -> Option<AgentRow> {
        let m = self.rows.locked();
        m.get(id)
            .filter(|(_, at)| at.elapsed() < FRESH)
            .map(|(r, _)| r.clone())
    }

    pub fn forget(&self, id: &str) {
        self.rows.locked().remove(id);
    }
}
