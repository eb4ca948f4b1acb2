//! The agent's one shared state, made by `run` and handed to the parts: what the heartbeat
//! reports (live sessions by kind, bytes, apps' health) and what one part signals another (the
//! owner's keys changed). No process-wide statics.

use outpost_common::LockExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use outpost_api::{AppHealth, AppStatus, SessionCounts};

#[derive(Default)]
pub struct Agent {
    ssh: AtomicU32,
    vscode: AtomicU32,
    jetbrains: AtomicU32,
    pty: AtomicU32,
    port_forward: AtomicU32,
    rx: AtomicU64,
    tx: AtomicU64,
    apps: Mutex<BTreeMap<String, AppHealth>>,
    /// Control queued `refresh_keys`: the SSH server fetches the owner's keys now.
    pub keys_changed: tokio::sync::Notify,
}

/// What kind of session a [`Live`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Ssh,
    Vscode,
    Jetbrains,
    /// A web terminal (reconnecting PTY).
    Pty,
    PortForward,
}

impl Agent {
    fn counter(&self, kind: SessionKind) -> &AtomicU32 {
        match kind {
            SessionKind::Ssh => &self.ssh,
            SessionKind::Vscode => &self.vscode,
            SessionKind::Jetbrains => &self.jetbrains,
            SessionKind::Pty => &self.pty,
            SessionKind::PortForward => &self.port_forward,
        }
    }

    /// Counts one live session of `kind` until the returned guard is dropped.
    pub fn live(self: &Arc<Self>, kind: SessionKind) -> Live {
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        Live {
            agent: self.clone(),
            kind,
        }
    }

    pub fn sessions(&self) -> SessionCounts {
        let n = |k| self.counter(k).load(Ordering::Relaxed);
        SessionCounts {
            ssh: n(SessionKind::Ssh),
            vscode: n(SessionKind::Vscode),
            jetbrains: n(SessionKind::Jetbrains),
            pty: n(SessionKind::Pty),
            port_forward: n(SessionKind::PortForward),
        }
    }

    /// Bytes relayed into (`rx`) and out of (`tx`) the workspace by forwarded channels.
    pub fn add_bytes(&self, rx: u64, tx: u64) {
        self.rx.fetch_add(rx, Ordering::Relaxed);
        self.tx.fetch_add(tx, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> (u64, u64) {
        (
            self.rx.load(Ordering::Relaxed),
            self.tx.load(Ordering::Relaxed),
        )
    }

    pub fn set_app_health(&self, slug: &str, h: AppHealth) {
        self.apps.locked().insert(slug.to_string(), h);
    }

    /// The apps' latest health, by slug, as the heartbeat reports it.
    pub fn app_statuses(&self) -> Vec<AppStatus> {
        self.apps
            .locked()
            .iter()
            .map(|(slug, h)| AppStatus {
                slug: slug.clone(),
                health: *h,
            })
            .collect()
    }
}

/// One live session, counted while it lives.
pub struct Live {
    agent: Arc<Agent>,
    kind: SessionKind,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.agent
            .counter(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sessions_count_while_they_live() {
        let agent = Arc::new(Agent::default());
        let a = agent.live(SessionKind::Vscode);
        let b = agent.live(SessionKind::Vscode);
        let c = agent.live(SessionKind::Pty);
        assert_eq!(agent.sessions().vscode, 2);
        assert_eq!(agent.sessions().pty, 1);
        drop((a, c));
        assert_eq!((agent.sessions().vscode, agent.sessions().pty), (1, 0));
        drop(b);
        assert_eq!(agent.sessions().vscode, 0);
        agent.add_bytes(3, 4);
        agent.add_bytes(1, 1);
        assert_eq!(agent.bytes(), (4, 5));
    }
}
