//! `cargo xtask bench agents`: N simulated agents in this one process, each running the agent's
//! own bootstrap / long-poll / heartbeat code (`outpost_agent::credentials`, `::session`) over real mTLS against one
//! `outpost server`. This process is also the provisioner daemon: it takes the start jobs through
//! the provisioner API and hands each bundle to a simulated agent instead of spawning a process.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use outpost_agent::credentials::bootstrap_once;
use outpost_agent::session::ControlSession;
use outpost_api::*;
use outpost_common::clock::{backoff, BACKOFF_BASE, BACKOFF_CAP};
use serde_json::json;

use crate::bench::{
    first_user, machine, pct, rss_kib, start_server as start_server_ulimit, write_results,
};

struct Opts {
    count: usize,
    pg: Option<String>,
    steady_secs: u64,
    sample: usize,
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut o = Opts {
        count: 1000,
        pg: None,
        steady_secs: 60,
        sample: 200,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => o.count = it.next().context("--count N")?.parse()?,
            "--postgres-url" => o.pg = Some(it.next().context("--postgres-url URL")?.clone()),
            "--steady-secs" => o.steady_secs = it.next().context("--steady-secs S")?.parse()?,
            "--sample" => o.sample = it.next().context("--sample M")?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    raise_nofile();
    crate::cargo(&["build", "--release", "--bins"])?;
    run(o)
}

#[allow(unsafe_code)]
fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on this process; children inherit the limit.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
        }
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// One simulated agent's shared state.
struct Sim {
    ok: AtomicBool,
    failed_since_kill: AtomicBool,
    stop_received_ms: AtomicU64,
}

#[derive(Default)]
struct Shared {
    heartbeat_us: Mutex<Vec<u64>>,
    record_heartbeats: AtomicBool,
    connected: AtomicUsize,
    poll_errors: AtomicU64,
}

fn now_ms() -> u64 {
    outpost_common::clock::now_ms() as u64
}

fn run(o: Opts) -> anyhow::Result<()> {
    outpost_common::tls::install_provider();
    let bin = crate::root().join("target/release");
    let tmp = std::env::temp_dir().join(format!("outpost-bench-agents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let key = "bench-provisioner-key-0123456789";
    let mut extra: Vec<String> = vec![
        "--provisioner-daemons".into(),
        "0".into(),
        "--provisioner-key".into(),
        key.into(),
        "--heartbeat-secs".into(),
        "15".into(),
        "--job-lease-secs".into(),
        "60".into(),
    ];
    if let Some(u) = &o.pg {
        extra.push("--postgres-url".into());
        extra.push(u.clone());
    }
    let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server = start_server_ulimit(&bin, &tmp, ("127.0.0.1:0", "127.0.0.1:0"), &extra_ref)?;
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.join("server.json"))?)?;
    let listen = (
        info["api_url"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("http://")
            .to_string(),
        info["agent_url"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("https://")
            .to_string(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = if o.pg.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let n = o.count;

    let result = rt.block_on(async {
        let token = first_user(&server.url, &server.data, "bench-password").await?;
        let api = Client::new(&server.url, Some(token));
        let prov = Client::new(&server.url, Some(key.to_string()));

        // 1. N workspaces; their start jobs taken by this process as the provisioner.
        eprintln!("creating {n} workspaces...");
        let t = Instant::now();
        let bundles = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let created = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..16 {
            let (api, created) = (api.clone(), created.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    let req = CreateWorkspaceRequest { name: format!("a{i}"), template: "base".into(), parameters: Default::default() };
                    let _: Workspace = api.post("/api/v1/workspaces", &req).await?;
                    created.fetch_add(1, Ordering::Relaxed);
                    i += 16;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        let mut acquirers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
        for d in 0..4 {
            let (prov, bundles) = (prov.clone(), bundles.clone());
            acquirers.push(tokio::spawn(async move {
                loop {
                    if bundles.lock().map(|b| b.len()).unwrap_or(0) >= n {
                        return Ok(());
                    }
                    let req = AcquireJobRequest { daemon_id: format!("bench-{d}"), provisioners: vec!["local".into()], version: None };
                    let Some(job): Option<ProvisionerJob> = prov.post("/api/v1/provisioner/acquire", &req).await? else { continue };
                    let done = CompleteJobRequest {
                        daemon_id: format!("bench-{d}"),
                        outcome: JobOutcome::Succeeded {
                            resources: vec![Resource { name: "sim".into(), kind: "simulated_agent".into(), persistent: false, details: Default::default() }],
                            state: json!({}),
                        },
                    };
                    let _: serde_json::Value = prov.post(&format!("/api/v1/provisioner/jobs/{}/complete", job.job_id), &done).await?;
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
            for a in &acquirers {
                if a.is_finished() {
                    bail!("a provisioner loop ended early");
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for a in acquirers {
            a.abort();
        }
        let create_secs = t.elapsed().as_secs_f64();
        eprintln!("created {n} in {create_secs:.1}s");
        let bundles: Vec<(String, BootstrapBundle)> = std::mem::take(&mut *bundles.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);

        // 2. Bootstrap them all (64 in flight).
        eprintln!("bootstrapping {n} agents...");
        let t = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut boots = Vec::new();
        for (i, (name, b)) in bundles.into_iter().enumerate() {
            let sem = sem.clone();
            boots.push(tokio::spawn(async move {
                let _permit = sem.acquire().await?;
                let mut attempt = 0;
                loop {
                    match bootstrap_once(&b).await {
                        Ok(c) => return Ok::<_, anyhow::Error>((i, name, b, c)),
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
        let boot_secs = t.elapsed().as_secs_f64();
        let boot_rate = n as f64 / boot_secs;
        eprintln!("bootstrapped {n} in {boot_secs:.1}s ({boot_rate:.0}/s)");

        // 3. Run them: long poll + heartbeat every 15 s (first one at a random offset).
        let shared = Arc::new(Shared::default());
        let mut sims: Vec<(String, Arc<Sim>)> = Vec::with_capacity(n);
        for (i, name, b, c) in creds {
            let sim = Arc::new(Sim { ok: AtomicBool::new(false), failed_since_kill: AtomicBool::new(false), stop_received_ms: AtomicU64::new(0) });
            sims.push((name, sim.clone()));
            let session = ControlSession::new(&b.agent_url, c)?;
            let (shared2, sim2, s2) = (shared.clone(), sim.clone(), session.clone());
            tokio::spawn(async move {
                let offset = rand::random::<u64>() % 15_000;
                tokio::time::sleep(Duration::from_millis(offset)).await;
                let mut iv = tokio::time::interval(Duration::from_secs(15));
                loop {
                    iv.tick().await;
                    if sim2.stop_received_ms.load(Ordering::Relaxed) > 0 {
                        return;
                    }
                    let t = Instant::now();
                    let req = HeartbeatRequest { lifecycle: None, stats: AgentStats { cpu_cores: 2, ..Default::default() } };
                    if s2.heartbeat(&req).await.is_ok() && shared2.record_heartbeats.load(Ordering::Relaxed) {
                        if let Ok(mut v) = shared2.heartbeat_us.lock() {
                            v.push(t.elapsed().as_micros() as u64);
                        }
                    }
                }
            });
            let (shared3, sim3) = (shared.clone(), sim.clone());
            let _ = i;
            tokio::spawn(async move {
                let mut attempt = 0u32;
                // Connected = an authenticated request got through (a held poll only answers
                // after 25 s, so a quick manifest read marks the moment).
                let mut probe = true;
                loop {
                    if probe {
                        match session.manifest().await {
                            Ok(_) => {
                                probe = false;
                                attempt = 0;
                                if !sim3.ok.swap(true, Ordering::Relaxed) {
                                    shared3.connected.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
                                attempt = attempt.saturating_add(1);
                            }
                        }
                        continue;
                    }
                    match session.poll().await {
                        Ok(r) => {
                            attempt = 0;
                            if !sim3.ok.swap(true, Ordering::Relaxed) {
                                shared3.connected.fetch_add(1, Ordering::Relaxed);
                            }
                            if r.commands.contains(&AgentCommand::Stop) {
                                sim3.stop_received_ms.store(now_ms(), Ordering::Relaxed);
                                return;
                            }
                        }
                        Err(_) => {
                            shared3.poll_errors.fetch_add(1, Ordering::Relaxed);
                            if sim3.ok.swap(false, Ordering::Relaxed) {
                                shared3.connected.fetch_sub(1, Ordering::Relaxed);
                            }
                            sim3.failed_since_kill.store(true, Ordering::Relaxed);
                            tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
                            attempt = attempt.saturating_add(1);
                            probe = true;
                        }
                    }
                }
            });
        }
        let t = Instant::now();
        while shared.connected.load(Ordering::Relaxed) < n {
            if t.elapsed() > Duration::from_secs(300) {
                bail!("only {} of {n} agents connected", shared.connected.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("all {n} connected after {:.1}s; measuring a {}s steady window...", t.elapsed().as_secs_f64(), o.steady_secs);

        // 4. Steady state: heartbeat latency, control CPU and RSS.
        tokio::time::sleep(Duration::from_secs(16)).await;
        shared.record_heartbeats.store(true, Ordering::Relaxed);
        let pid = server.child.id();
        let (c0, t0) = (cpu_ticks(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(o.steady_secs)).await;
        let ticks = (cpu_ticks(pid) - c0) as f64;
        let hz = 100.0; // USER_HZ
        let cpu_cores_busy = ticks / hz / t0.elapsed().as_secs_f64();
        shared.record_heartbeats.store(false, Ordering::Relaxed);
        let rss = rss_kib(pid);
        let mut hb: Vec<f64> = shared.heartbeat_us.lock().map(|v| v.iter().map(|x| *x as f64 / 1000.0).collect()).unwrap_or_default();
        eprintln!("{} heartbeats measured; control {:.2} cores busy, RSS {} MiB", hb.len(), cpu_cores_busy, rss / 1024);

        // 5. Kill control (SIGKILL) and restart it: time until every agent polls again.
        for (_, s) in &sims {
            s.failed_since_kill.store(false, Ordering::Relaxed);
        }
        let _ = server.child.kill();
        let _ = server.child.wait();
        let killed = Instant::now();
        let (api_l, agent_l) = (listen.0.clone(), listen.1.clone());
        server = start_server_ulimit(&bin, &tmp, (&api_l, &agent_l), &extra_ref)?;
        let restarted_after = killed.elapsed().as_secs_f64();
        // Every agent must have noticed the outage and polled successfully since.
        loop {
            let back = sims.iter().filter(|(_, s)| s.ok.load(Ordering::Relaxed) && s.failed_since_kill.load(Ordering::Relaxed)).count();
            let noticed = sims.iter().filter(|(_, s)| s.failed_since_kill.load(Ordering::Relaxed)).count();
            if back == n {
                break;
            }
            if killed.elapsed() > Duration::from_secs(300) {
                bail!("after 300 s only {back} of {n} agents are back ({noticed} noticed the restart)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reconnect = killed.elapsed().as_secs_f64() - restarted_after;
        eprintln!("all {n} back {reconnect:.1}s after the restart");
        let pid = server.child.id();

        // 6. Command delivery: stop a sample, from the API call to the agent's poll returning it.
        let sample = o.sample.min(n);
        let mut sent = Vec::with_capacity(sample);
        for (name, sim) in sims.iter().take(sample) {
            let t = now_ms();
            let _: Build = api.post(&format!("/api/v1/workspaces/{name}/builds"), &BuildRequest { action: WorkspaceAction::Stop, parameters: Default::default() }).await?;
            sent.push((t, sim.clone()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut delivery: Vec<f64> = Vec::new();
        for (t, sim) in &sent {
            let r = sim.stop_received_ms.load(Ordering::Relaxed);
            if r == 0 {
                bail!("a stop command was never delivered");
            }
            delivery.push(r.saturating_sub(*t) as f64);
        }
        let rss_after = rss_kib(pid);
        Ok::<_, anyhow::Error>((create_secs, boot_rate, pct(&mut hb, 0.5), pct(&mut hb, 0.99), hb.len(), pct(&mut delivery, 0.5), pct(&mut delivery, 0.99), rss, rss_after, cpu_cores_busy, reconnect, shared.poll_errors.load(Ordering::Relaxed)))
    });
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&tmp);
    let (
        create_secs,
        boot_rate,
        hb50,
        hb99,
        hb_n,
        cd50,
        cd99,
        rss,
        rss_after,
        cores,
        reconnect,
        _errs,
    ) = result?;

    let title = format!(
        "bench agents ({store}), {n} agents, {}\n\nMachine: {}. One `outpost server` (release) and one load process on the same machine; heartbeats every 15 s, long polls held 25 s; {hb_n} heartbeats in the steady window; creating the {n} workspaces took {create_secs:.1} s.",
        crate::bench::date(),
        machine()
    );
    let coder_per_vcpu = 2000.0 / 3.0;
    let rows = vec![
        ("bootstrap rate", boot_rate, "agents/s", "-", None),
        ("heartbeat latency p50", hb50, "ms", "-", None),
        (
            "heartbeat latency p99",
            hb99,
            "ms",
            "bar: 250 ms (issue 3)",
            Some(250.0),
        ),
        ("command delivery p50", cd50, "ms", "-", None),
        (
            "command delivery p99",
            cd99,
            "ms",
            "bar: 1 s (issue 3)",
            Some(1000.0),
        ),
        (
            "control RSS, steady",
            rss as f64 / 1024.0,
            "MiB",
            "bar: 1 GiB (issue 3)",
            Some(1024.0),
        ),
        (
            "control RSS, after restart and reconnect",
            rss_after as f64 / 1024.0,
            "MiB",
            "bar: 1 GiB (issue 3)",
            Some(1024.0),
        ),
        ("control CPU, steady", cores, "cores", "-", None),
        (
            "agents per busy core",
            n as f64 / cores.max(0.01),
            "agents/core",
            "Coder scale test: 2,000 agents on ~3 busy vCPU",
            Some(coder_per_vcpu),
        ),
        (
            "all agents back after kill -9 + restart",
            reconnect,
            "s",
            "bar: 120 s (issue 3)",
            Some(120.0),
        ),
    ];
    write_results(
        if o.pg.is_some() {
            "agents-postgres"
        } else {
            "agents"
        },
        &title,
        &rows,
    )
}
