//! Replicas of control on one store. Each registers itself (`replicas` table, a heartbeat
//! every few seconds; the leader forgets silent ones), passes its wake-ups to the others (the
//! bus), and one of them, the holder of a lock, is the leader: it alone runs what must happen
//! once (the lease reaper, the scheduler, retention). The lock goes when the leader dies.
//! On PostgreSQL the bus is `LISTEN`/`NOTIFY` and the lock an advisory lock held by a
//! connection of its own; replicas on one SQLite data dir (`--shared-data-dir`, one host) use
//! the data dir instead (`cluster_local.rs`). A server alone on its SQLite data dir (a second
//! one refuses to start) always leads.

use std::path::PathBuf;
use std::time::Duration;

use outpost_common::LockExt;
use tokio::sync::{mpsc, watch};

use super::cluster_local;
use super::AppState;
use crate::store::{Dialect, ReplicaRow};

/// Events a replica passes on, in the bus's text form `REPLICA KIND [ARG]`.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A command was queued for this agent: answer its held poll.
    Wake(&'a str),
    /// A provisioner job was queued.
    Jobs,
    /// A log topic changed.
    Touch(&'a str),
    /// A user was suspended or deleted: end their connections.
    Cut(&'a str),
    /// An agent was revoked.
    Forget(&'a str),
}

/// Events waiting to be sent, at most.
const OUTBOX: usize = 4096;

pub struct Cluster {
    /// This replica's id (random per process).
    pub id: String,
    /// SQLite replicas: their data dir (bus and leader's lock live there).
    data_dir: Option<PathBuf>,
    outbox: Option<mpsc::Sender<String>>,
    inbox: std::sync::Mutex<Option<mpsc::Receiver<String>>>,
    leader: watch::Sender<bool>,
}

impl Cluster {
    /// `shared_data_dir`: the SQLite data dir other servers on this host serve too.
    pub fn new(dialect: Dialect, shared_data_dir: Option<PathBuf>) -> Cluster {
        let shared = dialect == Dialect::Postgres || shared_data_dir.is_some();
        let (outbox, inbox) = if shared {
            let (tx, rx) = mpsc::channel(OUTBOX);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        Cluster {
            id: super::auth::random_id(),
            data_dir: shared_data_dir.filter(|_| dialect == Dialect::Sqlite),
            outbox,
            inbox: std::sync::Mutex::new(inbox),
            // A server alone leads; a replica leads once it holds the lock.
            leader: watch::channel(!shared).0,
        }
    }

    /// Whether other replicas share this store (PostgreSQL, or a shared SQLite data dir).
    pub fn shared(&self) -> bool {
        self.outbox.is_some()
    }

    /// Passes `e` to the other replicas (nothing for a server alone). A full outbox drops it: waiters
    /// recheck on their own timers (held polls answer within their timeout, log followers
    /// every 15 s), so a lost wake-up delays, never loses, anything.
    pub fn publish(&self, e: Event<'_>) {
        let Some(tx) = &self.outbox else {
            return;
        };
        let payload = match e {
            Event::Wake(a) => format!("{} wake {a}", self.id),
            Event::Jobs => format!("{} jobs", self.id),
            Event::Touch(t) => format!("{} touch {t}", self.id),
            Event::Cut(u) => format!("{} cut {u}", self.id),
            Event::Forget(a) => format!("{} forget {a}", self.id),
        };
        if tx.try_send(payload).is_err() {
            tracing::warn!("the replicas' event outbox is full; an event was dropped");
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

/// How often a replica heartbeats, from the agents' heartbeat setting (at most every 5 s).
fn beat(state: &AppState) -> Duration {
    Duration::from_secs(state.config.heartbeat_secs.clamp(1, 5))
}

/// Replicas silent for this long are gone.
pub fn stale_after(state: &AppState) -> Duration {
    beat(state) * 3
}

/// Starts the bus, the leader election and the heartbeat; returns their tasks.
pub fn start(state: &AppState, me: ReplicaRow) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = vec![tokio::spawn(heartbeat(state.clone(), me))];
    if !state.cluster.shared() {
        return Ok(tasks);
    }
    let rx = state.cluster.inbox.locked().take();
    match &state.cluster.data_dir {
        None => {
            if let Some(rx) = rx {
                tasks.push(tokio::spawn(send(state.clone(), rx)));
            }
            tasks.push(tokio::spawn(receive(state.clone())));
        }
        Some(dir) => {
            let bus = std::sync::Arc::new(cluster_local::Bus::bind(dir, &state.cluster.id)?);
            if let Some(rx) = rx {
                tasks.push(tokio::spawn(send_local(bus.clone(), rx)));
            }
            tasks.push(tokio::spawn(receive_local(state.clone(), bus)));
        }
    }
    tasks.push(tokio::spawn(elect(state.clone())));
    Ok(tasks)
}

/// Sends the outbox in batches (PostgreSQL).
async fn send(state: AppState, mut rx: mpsc::Receiver<String>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        if let Err(e) = state.store.notify(&batch).await {
            tracing::warn!(error = %e, events = batch.len(), "passing events to the other replicas");
        }
        batch.clear();
    }
}

/// Sends the outbox in batches (SQLite replicas).
async fn send_local(bus: std::sync::Arc<cluster_local::Bus>, mut rx: mpsc::Receiver<String>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        if let Err(e) = bus.send(&batch) {
            tracing::warn!(error = %e, events = batch.len(), "passing events to the other replicas");
        }
        batch.clear();
    }
}

/// The other replicas' events (SQLite replicas). Whatever waits here looks again first: events
/// sent before this replica's socket was bound are missed.
async fn receive_local(state: AppState, bus: std::sync::Arc<cluster_local::Bus>) {
    state.wake_all_local();
    let mut buf = vec![0u8; cluster_local::Bus::datagram_max() * 2];
    loop {
        match bus.recv(&mut buf).await {
            Ok(n) => {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    handle(&state, line);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "receiving the other replicas' events");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Listens for the other replicas' events, reconnecting when the connection drops (then
/// everything waiting here looks again: events may have been missed meanwhile).
async fn receive(state: AppState) {
    loop {
        let mut listener = match state.store.listen().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "listening for the other replicas' events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        state.wake_all_local();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => handle(&state, n.payload()),
                Ok(None) => {
                    tracing::warn!("the events connection dropped; reconnecting");
                    state.wake_all_local();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the events connection failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

fn handle(state: &AppState, payload: &str) {
    let mut it = payload.splitn(3, ' ');
    let (from, kind, arg) = (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    );
    if from == state.cluster.id {
        return;
    }
    match kind {
        "wake" => state.wake_agent_local(arg),
        "jobs" => state.jobs_changed.notify_waiters(),
        "touch" => state.touch_local(arg),
        "cut" => state.cut_user_local(arg),
        "forget" => state.forget_agent_local(arg),
        _ => tracing::debug!(payload, "an event this replica does not know"),
    }
}

/// The leader's lock, as the store or the data dir holds it.
enum Lead {
    Postgres(crate::store::LeaderLock),
    DataDir(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>),
}

impl Lead {
    async fn held(&mut self) -> bool {
        match self {
            Lead::Postgres(l) => l.held().await,
            // The kernel holds it for as long as this process lives.
            Lead::DataDir(_) => true,
        }
    }
}

async fn try_lead(state: &AppState) -> anyhow::Result<Option<Lead>> {
    Ok(match &state.cluster.data_dir {
        None => state.store.try_lead().await?.map(Lead::Postgres),
        Some(dir) => cluster_local::try_lead(dir)?.map(Lead::DataDir),
    })
}

/// Holds the leader's lock, or tries for it every second.
async fn elect(state: AppState) {
    let mut lock = None;
    loop {
        match lock.as_mut() {
            None => match try_lead(&state).await {
                Ok(Some(l)) => {
                    lock = Some(l);
                    state.cluster.leader.send_replace(true);
                    tracing::info!(replica = %state.cluster.id, "this replica leads (lease reaper, scheduler, retention)");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "trying for the leader's lock"),
            },
            Some(l) => {
                if !l.held().await {
                    lock = None;
                    state.cluster.leader.send_replace(false);
                    tracing::warn!("lost the leader's lock (its connection dropped)");
                    continue;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps this replica's row fresh; the leader forgets silent replicas. The row goes when the
/// server stops (see `forget`).
async fn heartbeat(state: AppState, mut me: ReplicaRow) {
    loop {
        me.leader = state.cluster.is_leader();
        if let Err(e) = state.store.replica_heartbeat(&me).await {
            tracing::warn!(error = %e, "replica heartbeat");
        }
        if me.leader {
            let stale = stale_after(&state).as_millis() as i64;
            match state.store.forget_replicas(stale, None).await {
                Ok(n) if n > 0 => {
                    tracing::info!(count = n, "forgot replicas that stopped heartbeating")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "forgetting silent replicas"),
            }
        }
        tokio::time::sleep(beat(&state)).await;
    }
}

/// This replica leaves: its row goes at once.
pub async fn forget(state: &AppState) {
    let _ = state
        .store
        .forget_replicas(i64::MAX / 2, Some(&state.cluster.id))
        .await;
}

/// `GET /api/v1/replicas` (owners, auditors): the replicas heartbeating now.
#[utoipa::path(
    get,
    path = "/api/v1/replicas",
    tag = "servers",
    summary = "The control replicas on this store",
    responses((status = 200, description = "OK", body = Vec<outpost_api::Replica>)),
)]
pub(super) async fn list_replicas(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: super::auth::AuthUser,
) -> super::error::ApiResult<axum::Json<Vec<outpost_api::Replica>>> {
    super::authz::require(&auth, super::authz::Right::ReadAudit, "replicas.list", None)?;
    let rows = state
        .store
        .replicas(stale_after(&state).as_millis() as i64)
        .await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| outpost_api::Replica {
                id: r.id,
                hostname: r.hostname,
                api_url: r.api_url,
                agent_url: r.agent_url,
                replica_url: r.replica_url,
                version: r.version,
                leader: r.leader,
                started_at: r.started_at,
                heartbeat_at: r.heartbeat_at,
            })
            .collect(),
    ))
}
