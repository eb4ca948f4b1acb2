//! The agent rows read from the store lately, so that a poll or a heartbeat (2,000 polls and
//! 3,300 heartbeats a second at 50,000 agents) is checked without a store query. A revocation
//! here or on another replica drops the row (the bus's `forget`, and the revocations
//! `poll_sweep` reads every second whatever the bus did), and so does a renewal (a new
//! certificate is not in the cached row, so its first request reads the store; the read drops
//! rows elsewhere that name the old one, which then works only within its overlap). A row serves for [`LONG`] while that read
//! is current, else for [`FRESH`]: with the store unreadable here, a revocation made through
//! another replica whose bus event was lost counts for up to [`FRESH`] (heartbeats, and polls
//! that carry only commands; nothing else uses the cache).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use outpost_common::LockExt;

use crate::store::AgentRow;

/// How long a row serves while the revocations are read every second.
pub const LONG: Duration = Duration::from_secs(300);
/// How long a row serves otherwise.
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

    /// The row, if it was read from the store within `max_age`.
    pub fn get(&self, id: &str, max_age: Duration) -> Option<AgentRow> {
        let m = self.rows.locked();
        m.get(id)
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(r, _)| r.clone())
    }

    /// The agent was renewed: its row goes unless it names the certificate now current.
    pub fn forget_unless_serial(&self, id: &str, serial: Option<&str>) {
        let mut m = self.rows.locked();
        if m.get(id)
            .is_some_and(|(r, _)| r.cert_serial.as_deref() != serial)
        {
            m.remove(id);
        }
    }

    /// Every row goes (revocations may have been missed).
    pub fn clear(&self) {
        self.rows.locked().clear();
    }

    pub fn forget(&self, id: &str) {
        self.rows.locked().remove(id);
    }
}
