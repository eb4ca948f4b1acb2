//! Simulated agents for `cargo xtask bench agents`: each runs the agent's own bootstrap, long
//! poll and heartbeat code (`outpost_agent::credentials`, `::session`) over real mTLS. The bench
//! process is also the provisioner that creates them: it takes the start jobs through the
//! provisioner API and hands each bundle to a simulated agent instead of spawning a process.
//!
//! An agent given several agent URLs (the replicas of `--replicas N`) starts on one and moves to
//! the next when a request fails, as an agent behind a load balancer would be moved.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use outpost_agent::credentials::{bootstrap_once_from, Credentials};
use outpost_agent::session::ControlSession;
use outpost_api::*;
use outpost_common::clock::{backoff, BACKOFF_BASE, BACKOFF_CAP};
use serde_json::json;

/// One simulated agent's state.
pub struct Sim {
    pub name: String,
    pub ok: AtomicBool,
    pub failed_since_kill: AtomicBool,
    /// When the request that last went through (a probe or a poll) began, ms since the epoch.
    /// One begun after an outage began was answered by a control up after it, even if no
    /// request of this agent failed (the HTTP client retries a request its dead connection
    /// never sent on a new connection).
    pub ok_request_ms: AtomicU64,
    pub stop_received_ms: AtomicU64,
    /// The index of the agent URL it talks to now.
    pub replica: AtomicUsize,
}

#[derive(Default)]
pub struct Shared {
    /// (when it was sent, ms since the epoch; how long it took, µs; whether its agent had lost
    /// its connection since the last outage began, see [`Sim::failed_since_kill`]).
    pub heartbeat_us: Mutex<Vec<(u64, u64, bool)>>,
    pub record_heartbeats: AtomicBool,
    pub heartbeat_errors: AtomicU64,
    pub connected: AtomicUsize,
    pub poll_errors: AtomicU64,
    /// When this process was told every replica was killed (ms since the epoch; 0: not yet
    /// since the last `reset`).
    pub killed_ms: AtomicU64,
    /// Connections (TLS handshake and first request) the load process makes at once, when
    /// capped: the agents' client handshakes share this one process's cores, which real
    /// agents do not. Every request of an agent not connected takes a permit (its probe and
    /// its heartbeat, either of which may make the connection).
    pub connect_gate: Option<tokio::sync::Semaphore>,
    /// Failed requests by their message (digits blanked), for the report.
    pub errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Shared {
    fn note(&self, e: &dyn std::fmt::Display) {
        let m: String = e
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(160)
            .collect();
        if let Ok(mut g) = self.errors.lock() {
            *g.entry(m).or_default() += 1;
        }
    }

    /// The commonest failures, for the log.
    pub fn top_errors(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .errors
            .lock()
            .map(|g| g.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(5);
        v
    }

    /// The recorded heartbeat latencies in ms.
    pub fn heartbeats_ms(&self) -> Vec<f64> {
        self.heartbeats_ms_where(|_, _| true)
    }

    /// The latencies in ms of the heartbeats `keep` takes (given when each was sent, ms since
    /// the epoch, and whether its agent had lost its connection).
    pub fn heartbeats_ms_where(&self, keep: impl Fn(u64, bool) -> bool) -> Vec<f64> {
        self.heartbeat_us
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(at, _, moved)| keep(*at, *moved))
                    .map(|(_, us, _)| *us as f64 / 1000.0)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The source address of simulated agent `i`: one loopback address each (127.1.0.1 on), as
/// agents on their own hosts have. One address for all would run out of its ~64,000 ports
/// past that many agents, and would meet control's per-address handshake cap, which is for
/// one host's agents.
pub fn source(i: usize) -> std::net::IpAddr {
    let i = i as u32;
    std::net::Ipv4Addr::new(
        127,
        1 + (i / 62_500) as u8,
        ((i / 250) % 250) as u8 + 1,
        (i % 250) as u8 + 1,
    )
    .into()
}

pub fn now_ms() -> u64 {
    outpost_common::clock::now_ms() as u64
}

/// Creates `n` workspaces (named `a0`..) through `creators` in turn, 16 in flight, while 4
/// provisioner loops per client in `provs` (a replica's each) complete their start jobs.
/// Returns the bundles and the seconds.
pub async fn make_bundles(
    creators: &[Client],
    provs: &[Client],
    n: usize,
) -> anyhow::Result<(Vec<(String, BootstrapBundle)>, f64)> {
    eprintln!("creating {n} workspaces...");
    let t = Instant::now();
    let bundles = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let api = creators[w % creators.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let req = CreateWorkspaceRequest {
                    name: format!("a{i}"),
                    template: "base".into(),
                    parameters: Default::default(),
                };
                let _: Workspace = api.post("/api/v1/workspaces", &req).await?;
                i += 16;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut acquirers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    for d in 0..4 * provs.len() {
        let (prov, bundles) = (provs[d % provs.len()].clone(), bundles.clone());
        acquirers.push(tokio::spawn(async move {
            loop {
                if bundles.lock().map(|b| b.len()).unwrap_or(0) >= n {
                    return Ok(());
                }
                let req = AcquireJobRequest {
                    daemon_id: format!("bench-{d}"),
                    provisioners: vec!["local".into()],
                    version: None,
                };
                let Some(job): Option<ProvisionerJob> =
                    prov.post("/api/v1/provisioner/acquire", &req).await?
                else {
                    continue;
                };
                let done = CompleteJobRequest {
                    daemon_id: format!("bench-{d}"),
                    outcome: JobOutcome::Succeeded {
                        resources: vec![Resource {
                            name: "sim".into(),
                            kind: "simulated_agent".into(),
                            persistent: false,
                            details: Default::default(),
                        }],
                        state: json!({}),
                    },
                };
                let _: serde_json::Value = prov
                    .post(
                        &format!("/api/v1/provisioner/jobs/{}/complete", job.job_id),
                        &done,
                    )
                    .await?;
                if let Some(b) = job.bootstrap {
                    if let Ok(mut v) = bundles.lock() {
                        v.push((job.workspace_name.clone(), b));
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    while bundles.lock().map(|b| b.len()).unwrap_or(0) < n {
        if acquirers.iter().any(|a| a.is_finished()) {
            bail!("a provisioner loop ended early");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for a in acquirers {
        a.abort();
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!("created {n} in {secs:.1}s");
    let v = std::mem::take(&mut *bundles.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((v, secs))
}

/// Bootstraps every bundle (64 in flight), agent `i` through `urls[i % len]`. Returns the
/// credentials with the URL index each starts on, and the rate in agents per second. Agent
/// `i` connects from [`source`]`(i)`.
pub async fn bootstrap_all(
    bundles: Vec<(String, BootstrapBundle)>,
    urls: &[String],
) -> anyhow::Result<(Vec<(String, Credentials, usize)>, f64)> {
    let n = bundles.len();
    eprintln!("bootstrapping {n} agents...");
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut boots = Vec::new();
    for (i, (name, mut b)) in bundles.into_iter().enumerate() {
        let sem = sem.clone();
        let at = i % urls.len();
        b.agent_url = urls[at].clone();
        boots.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let mut attempt = 0;
            loop {
                match bootstrap_once_from(&b, Some(source(i))).await {
                    Ok(c) => return Ok::<_, anyhow::Error>((name, c, at)),
                    Err(e) if attempt < 5 && e.status().is_none_or(|s| s >= 500) => {
                        tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }));
    }
    let mut creds = Vec::with_capacity(n);
    for b in boots {
        creds.push(b.await??);
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "bootstrapped {n} in {:.1}s ({rate:.0}/s)",
        t.elapsed().as_secs_f64()
    );
    Ok((creds, rate))
}

/// The session an agent uses now, and the URL index it belongs to.
struct Current {
    urls: Arc<Vec<String>>,
    now: Mutex<(usize, ControlSession)>,
}

impl Current {
    fn session(&self) -> ControlSession {
        match self.now.lock() {
            Ok(g) => g.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        }
    }

    /// Moves to the next URL (with one URL: stays, keeping the session's connection pool).
    fn next(&self, sim: &Sim) {
        if self.urls.len() < 2 {
            return;
        }
        if let Ok(mut g) = self.now.lock() {
            let i = (g.0 + 1) % self.urls.len();
            // The same TLS session store: a ticket from one replica resumes at the next.
            if let Ok(s) = g.1.to(&self.urls[i]) {
                *g = (i, s);
                sim.replica.store(i, Ordering::Relaxed);
            }
        }
    }
}

/// Starts one simulated agent on `urls[at]`: a heartbeat every 15 s (the first at a random
/// moment of the 15 s after it first connected) and a long poll that returns when a stop
/// arrives. Its connections come from `local`.
pub fn spawn(
    name: String,
    local: std::net::IpAddr,
    creds: Credentials,
    urls: Arc<Vec<String>>,
    at: usize,
    shared: Arc<Shared>,
) -> anyhow::Result<Arc<Sim>> {
    let sim = Arc::new(Sim {
        name,
        ok: AtomicBool::new(false),
        failed_since_kill: AtomicBool::new(false),
        ok_request_ms: AtomicU64::new(0),
        stop_received_ms: AtomicU64::new(0),
        replica: AtomicUsize::new(at),
    });
    let session = ControlSession::new_from(&urls[at], creds, Some(local))?;
    let cur = Arc::new(Current {
        urls,
        now: Mutex::new((at, session)),
    });
    let (shared2, sim2, cur2) = (shared.clone(), sim.clone(), cur.clone());
    // The first heartbeat goes at a random moment of the first interval after the agent first
    // connected (as agents started one by one would). Heartbeats that waited at the connect
    // gate behind every agent's probe all went out together when the probes were through, and
    // that one burst came back every interval for minutes (jitter spreads it only slowly).
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if first_rx.await.is_err() {
            return;
        }
        let offset = rand::random::<u64>() % 15_000;
        tokio::time::sleep(Duration::from_millis(offset)).await;
        // As the agent's heartbeat loop: every 15 s give or take 1.5 s from the last send, spread
        // out (up to 60 s, jittered) while heartbeats fail.
        let every = Duration::from_secs(15);
        let mut failures = 0u32;
        loop {
            if sim2.stop_received_ms.load(Ordering::Relaxed) > 0 {
                return;
            }
            // Not connected (before the first request got through, or after a failure): the
            // heartbeat may make a connection too, so it takes its turn at the gate as the
            // probe does (without, 50,000 heartbeats in their first 15 s began ~3,300 TLS
            // handshakes a second past a gate of 64 and overflowed control's listen queue).
            let permit = match (&shared2.connect_gate, sim2.ok.load(Ordering::Relaxed)) {
                (Some(g), false) => g.acquire().await.ok(),
                _ => None,
            };
            let (t, at) = (Instant::now(), now_ms());
            let req = HeartbeatRequest {
                lifecycle: None,
                stats: AgentStats {
                    cpu_cores: 2,
                    ..Default::default()
                },
            };
            let ok = cur2.session().heartbeat(&req).await.is_ok();
            drop(permit);
            failures = if ok { 0 } else { failures.saturating_add(1) };
            if shared2.record_heartbeats.load(Ordering::Relaxed) {
                if !ok {
                    shared2.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(mut v) = shared2.heartbeat_us.lock() {
                    let moved = sim2.failed_since_kill.load(Ordering::Relaxed);
                    v.push((at, t.elapsed().as_micros() as u64, moved));
                }
            }
            // As the agent: counted from the send, so a stall does not line beats up (from
            // the failure while they fail).
            let from = outpost_agent::run::beat_from(tokio::time::Instant::from_std(t), failures);
            let next = from + outpost_agent::run::next_beat(every, failures);
            tokio::time::sleep_until(next).await;
        }
    });
    let sim3 = sim.clone();
    tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        let mut attempt = 0u32;
        // Connected = an authenticated request got through (a held poll only answers after
        // 25 s, so a quick manifest read marks the moment).
        let mut probe = true;
        loop {
            let session = cur.session();
            if probe {
                let _permit = match &shared.connect_gate {
                    Some(g) => g.acquire().await.ok(),
                    None => None,
                };
                let began = now_ms();
                match session.manifest().await {
                    Ok(_) => {
                        sim3.ok_request_ms.store(began, Ordering::Relaxed);
                        if let Some(tx) = first_tx.take() {
                            let _ = tx.send(());
                        }
                        probe = false;
                        attempt = 0;
                        if !sim3.ok.swap(true, Ordering::Relaxed) {
                            shared.connected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        shared.note(&e);
                        // A failed probe sees the outage too: an agent already probing
                        // (its poll failed before the outage began) is back only after it.
                        sim3.failed_since_kill.store(true, Ordering::Relaxed);
                        cur.next(&sim3);
                        tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
                        attempt = attempt.saturating_add(1);
                    }
                }
                continue;
            }
            let began = now_ms();
            match session.poll().await {
                Ok(r) => {
                    sim3.ok_request_ms.store(began, Ordering::Relaxed);
                    attempt = 0;
                    if !sim3.ok.swap(true, Ordering::Relaxed) {
                        shared.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    if r.commands.contains(&AgentCommand::Stop) {
                        sim3.stop_received_ms.store(now_ms(), Ordering::Relaxed);
                        return;
                    }
                }
                Err(e) => {
                    shared.note(&e);
                    shared.poll_errors.fetch_add(1, Ordering::Relaxed);
                    if sim3.ok.swap(false, Ordering::Relaxed) {
                        shared.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    sim3.failed_since_kill.store(true, Ordering::Relaxed);
                    cur.next(&sim3);
                    tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
                    attempt = attempt.saturating_add(1);
                    probe = true;
                }
            }
        }
    });
    Ok(sim)
}

/// Waits until all `n` agents made an authenticated request.
pub async fn wait_connected(shared: &Shared, n: usize, within: Duration) -> anyhow::Result<f64> {
    let t = Instant::now();
    while shared.connected.load(Ordering::Relaxed) < n {
        if t.elapsed() > within {
            bail!(
                "only {} of {n} agents connected",
                shared.connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits until every agent failed once since `since` was reset and polled successfully again.
pub async fn wait_back(sims: &[Arc<Sim>], since: Instant, within: Duration) -> anyhow::Result<()> {
    loop {
        let back = sims
            .iter()
            .filter(|s| s.ok.load(Ordering::Relaxed) && s.failed_since_kill.load(Ordering::Relaxed))
            .count();
        if back == sims.len() {
            return Ok(());
        }
        if since.elapsed() > within {
            let noticed = sims
                .iter()
                .filter(|s| s.failed_since_kill.load(Ordering::Relaxed))
                .count();
            bail!(
                "after {within:?} only {back} of {} agents are back ({noticed} noticed the outage)",
                sims.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops `sample` agents through the API, `api_for(sim)` choosing the replica to ask, 20 ms
/// apart; returns each delivery time in ms (API call to the agent's poll returning the stop).
pub async fn deliver_stops(
    sims: &[Arc<Sim>],
    sample: usize,
    api_for: impl Fn(&Sim) -> Client,
) -> anyhow::Result<Vec<f64>> {
    let mut sent = Vec::with_capacity(sample);
    for sim in sims.iter().take(sample) {
        let t = now_ms();
        let _: Build = api_for(sim)
            .post(
                &format!("/api/v1/workspaces/{}/builds", sim.name),
                &BuildRequest {
                    action: WorkspaceAction::Stop,
                    parameters: Default::default(),
                },
            )
            .await?;
        sent.push((t, sim.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut delivery = Vec::new();
    for (t, sim) in &sent {
        let r = sim.stop_received_ms.load(Ordering::Relaxed);
        if r == 0 {
            bail!("a stop command for {} was never delivered", sim.name);
        }
        delivery.push(r.saturating_sub(*t) as f64);
    }
    Ok(delivery)
}

/// How late this process's timers fire: a task that sleeps 10 ms over and over, recording
/// (when, ms since the epoch; how late, ms) while `on` is set.
pub fn lag_probe(on: Arc<AtomicBool>) -> Arc<Mutex<Vec<(u64, f64)>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    tokio::spawn(async move {
        loop {
            let t = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let late = t.elapsed().as_secs_f64() * 1000.0 - 10.0;
            if on.load(Ordering::Relaxed) {
                if let Ok(mut v) = o.lock() {
                    v.push((now_ms(), late.max(0.0)));
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_simulated_agent_has_an_address_of_its_own() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            let a = super::source(i);
            let std::net::IpAddr::V4(v4) = a else {
                panic!("{a} is not IPv4");
            };
            let o = v4.octets();
            assert!(o[0] == 127 && o[1] >= 1 && (1..=250).contains(&o[2]), "{a}");
            assert!((1..=250).contains(&o[3]), "{a}");
            assert!(seen.insert(a), "{a} twice");
        }
    }
}
