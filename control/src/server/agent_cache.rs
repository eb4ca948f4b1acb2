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

    /// The agent's first request was recorded (`first_connected_at`, as the store now has it):
    /// its cached row says so too, rather than going and costing each new agent's next request
    /// a store read (50,000 of them after a connection storm).
    pub fn connected(&self, id: &str, at: i64) {
        if let Some((r, _)) = self.rows.locked().get_mut(id) {
            r.first_connected_at.get_or_insert(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> AgentRow {
        AgentRow {
            id: id.into(),
            ..AgentRow::default()
        }
    }

    #[test]
    fn a_connected_agent_keeps_its_row_marked() {
        let c = AgentCache::default();
        c.put(&row("a"));
        c.connected("a", 42);
        let r = c.get("a", LONG).expect("still cached");
        assert_eq!(r.first_connected_at, Some(42));
        // The first time only, as the store's COALESCE.
        c.connected("a", 99);
        assert_eq!(
            c.get("a", LONG).and_then(|r| r.first_connected_at),
            Some(42)
        );
        // An agent not cached stays so (its next request reads the store).
        c.connected("b", 1);
        assert!(c.get("b", LONG).is_none());
    }
}
