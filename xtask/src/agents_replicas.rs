//! `cargo xtask bench agents --replicas N` (PostgreSQL): N `outpost server` replicas on one fresh
//! database, the simulated agents of [`crate::agentsim`] spread over them (agent `i` on replica
//! `i % N`, moving on to the next replica when a request fails, as a load balancer would move
//! it). Measures:
//! - build throughput with 1, 2 and 4 external `outpost provisioner start` daemons (each on a
//!   replica of its own, workspaces created through every replica in turn);
//! - heartbeat latency over a steady window in whose middle the leader replica is killed
//!   (SIGKILL), and how long its agents take to be back on the survivors;
//! - command delivery through another replica: a stop asked of a replica other than the one
//!   holding the agent's poll.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use outpost_api::*;

use crate::agents::{cpu_ticks, Opts};
use crate::agentsim::{self, Shared};
use crate::bench::{first_user, machine, pct, rss_kib, start_server, write_results, ServerProc};

pub(crate) const KEY: &str = "bench-provisioner-key-0123456789";

/// Replicas started on one database: the first makes the first user (its token here), the
/// others share its secrets key.
fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub(crate) struct Replicas {
    pub servers: Vec<Option<ServerProc>>,
    pub token: String,
    pub api_urls: Vec<String>,
    pub agent_urls: Vec<String>,
    pub pids: Vec<u32>,
    /// Each replica's server flags (to restart it as it was).
    pub flags: Vec<Vec<String>>,
    /// Each replica's `--metrics-listen` address.
    pub metrics: Vec<String>,
}

/// A free loopback address for a replica's `/metrics`, kept across its restarts.
fn metrics_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// Starts `k` replicas on the PostgreSQL database `db`, the data of replica `i` in `tmp/rI`;
/// with no `db`, on one SQLite data dir, `tmp/r0` (`--shared-data-dir`).
pub(crate) fn start_replicas(
    rt: &tokio::runtime::Runtime,
    bin: &std::path::Path,
    tmp: &std::path::Path,
    db: Option<&str>,
    k: usize,
) -> anyhow::Result<Replicas> {
    let store: &[&str] = match db {
        Some(url) => &["--postgres-url", url],
        None => &["--shared-data-dir"],
    };
    let common: Vec<String> = store
        .iter()
        .chain(&[
            "--provisioner-daemons",
            "0",
            "--provisioner-key",
            KEY,
            "--heartbeat-secs",
            "15",
            "--job-lease-secs",
            "60",
            // Every workspace is created before any agent bootstraps; tens of thousands can take
            // longer than the default 15 minutes on a small machine.
            "--bootstrap-token-ttl-secs",
            "7200",
        ])
        .map(|s| s.to_string())
        .collect();
    let any = ("127.0.0.1:0", "127.0.0.1:0");
    let mut metrics = vec![metrics_addr()?];
    let mut f0 = common.clone();
    f0.extend(["--metrics-listen".to_string(), metrics[0].clone()]);
    let mut servers: Vec<Option<ServerProc>> = vec![Some(start_server(
        bin,
        &tmp.join("r0"),
        any,
        &as_refs(&f0),
    )?)];
    let mut flags = vec![f0];
    let first = servers[0].as_ref().context("replica 0")?;
    let token = rt.block_on(first_user(&first.url, &first.data, "bench-password"))?;
    // The others after the first user (a replica of an empty store makes its own setup token).
    let key_file = tmp.join("r0/secrets.key").display().to_string();
    for i in 1..k {
        let mut f = common.clone();
        metrics.push(metrics_addr()?);
        if db.is_some() {
            f.extend(["--secrets-key-file".to_string(), key_file.clone()]);
        }
        f.extend(["--metrics-listen".to_string(), metrics[i].clone()]);
        let data = match db {
            Some(_) => tmp.join(format!("r{i}")),
            None => tmp.join("r0"),
        };
        servers.push(Some(start_server(bin, &data, any, &as_refs(&f))?));
        flags.push(f);
    }
    let mut api_urls = Vec::new();
    let mut agent_urls = Vec::new();
    let mut pids = Vec::new();
    for s in servers.iter().flatten() {
        api_urls.push(s.url.clone());
        agent_urls.push(s.agent_url.clone());
        pids.push(s.child.id());
    }
    Ok(Replicas {
        servers,
        token,
        api_urls,
        agent_urls,
        pids,
        flags,
        metrics,
    })
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn psql(db: &str, sql: &str) -> anyhow::Result<String> {
    let o = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", db, "-c", sql])
        .output()
        .context("psql")?;
    if !o.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// One build-throughput round's figures.
struct Round {
    daemons: usize,
    per_sec: f64,
    spread: String,
}

pub fn run(o: Opts) -> anyhow::Result<()> {
    outpost_common::tls::install_provider();
    // `agents::main` made a database of the bench's own when none was given (and drops it).
    let db =
        o.pg.clone()
            .context("bench agents --replicas needs a PostgreSQL database")?;
    let (k, n) = (o.replicas, o.count);
    let bin = crate::root().join("target/release");
    let tmp = std::env::temp_dir().join(format!("outpost-bench-replicas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let Replicas {
        mut servers,
        token,
        api_urls,
        agent_urls,
        pids,
        ..
    } = start_replicas(&rt, &bin, &tmp, Some(&db), k)?;
    let agent_urls = Arc::new(agent_urls);

    let result = rt.block_on(async {
        let apis: Vec<Client> = api_urls
            .iter()
            .map(|u| Client::new(u, Some(token.clone())))
            .collect();
        let t = Instant::now();
        loop {
            let r: Vec<Replica> = apis[0].get("/api/v1/replicas").await?;
            if r.len() == k {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("only {} of {k} replicas registered", r.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let prov = Client::new(&api_urls[0], Some(KEY.to_string()));
        let (bundles, create_secs) =
            agentsim::make_bundles(&apis, std::slice::from_ref(&prov), n).await?;
        let (creds, boot_rate) = agentsim::bootstrap_all(bundles, &agent_urls).await?;
        let shared = Arc::new(Shared {
            connect_gate: (o.connect_concurrency > 0)
                .then(|| tokio::sync::Semaphore::new(o.connect_concurrency)),
            ..Default::default()
        });
        let lag_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lag = agentsim::lag_probe(lag_on.clone());
        let mut sims = Vec::with_capacity(n);
        for (i, (name, c, at)) in creds.into_iter().enumerate() {
            sims.push(agentsim::spawn(
                name,
                agentsim::source(i),
                c,
                agent_urls.clone(),
                at,
                shared.clone(),
            )?);
        }
        let connected = agentsim::wait_connected(&shared, n, Duration::from_secs(300)).await?;
        eprintln!("all {n} connected after {connected:.1}s, spread over {k} replicas");

        // Build throughput with external daemons.
        let pk: ProvisionerKey = apis[0]
            .post(
                "/api/v1/provisioner-keys",
                &CreateProvisionerKey {
                    name: "bench-daemons".into(),
                    tags: Default::default(),
                    organization: None,
                    templates: vec![],
                },
            )
            .await?;
        let daemon_key = pk.key.context("no key in the answer to its creation")?;
        let mut rounds = Vec::new();
        for (r, &d) in o.daemons.iter().enumerate() {
            rounds.push(
                build_round(
                    &bin,
                    &tmp,
                    &db,
                    &apis,
                    &api_urls,
                    &daemon_key,
                    r,
                    d,
                    o.builds,
                )
                .await?,
            );
        }

        // Steady window; the leader is killed in its middle.
        tokio::time::sleep(Duration::from_secs(16)).await;
        let replicas: Vec<Replica> = apis[0].get("/api/v1/replicas").await?;
        let leader = replicas.iter().find(|r| r.leader).context("no leader")?;
        let victim = api_urls
            .iter()
            .position(|u| u.trim_end_matches('/') == leader.api_url.trim_end_matches('/'))
            .with_context(|| {
                format!(
                    "the leader's URL {} is none of {api_urls:?}",
                    leader.api_url
                )
            })?;
        let victim_id = leader.id.clone();
        let survivors: Vec<usize> = (0..k).filter(|i| *i != victim).collect();
        shared.record_heartbeats.store(true, Ordering::Relaxed);
        lag_on.store(true, Ordering::Relaxed);
        let c0: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(o.steady_secs / 2)).await;
        for s in &sims {
            s.failed_since_kill.store(false, Ordering::Relaxed);
        }
        let moved: Vec<_> = sims
            .iter()
            .filter(|s| s.replica.load(Ordering::Relaxed) == victim)
            .cloned()
            .collect();
        let rss_before = rss_kib(pids[victim]);
        if let Some(mut s) = servers[victim].take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        let (killed, killed_ms) = (Instant::now(), agentsim::now_ms());
        // Who burns the CPU in the 10 s after the kill: the survivors, this load process, the
        // machine (PostgreSQL included).
        let storm_cpu = {
            let survivors: Vec<u32> = survivors.iter().map(|i| pids[*i]).collect();
            tokio::spawn(async move {
                let me = std::process::id();
                let take = || {
                    (
                        survivors.iter().map(|p| cpu_ticks(*p)).sum::<u64>() as f64 / 100.0,
                        cpu_ticks(me) as f64 / 100.0,
                        crate::cpustat::machine_cpu_secs(),
                    )
                };
                let a = take();
                tokio::time::sleep(Duration::from_secs(10)).await;
                let b = take();
                ((b.0 - a.0) / 10.0, (b.1 - a.1) / 10.0, (b.2 - a.2) / 10.0)
            })
        };
        eprintln!(
            "killed the leader (replica {victim}), which held {} agents",
            moved.len()
        );
        let moved2 = moved.clone();
        let back = tokio::spawn(async move {
            agentsim::wait_back(&moved2, killed, Duration::from_secs(300)).await?;
            Ok::<_, anyhow::Error>(killed.elapsed().as_secs_f64())
        });
        let watcher = apis[survivors[0]].clone();
        let leader_moved = tokio::spawn(async move {
            loop {
                if let Ok(r) = watcher.get::<Vec<Replica>>("/api/v1/replicas").await {
                    if r.iter().any(|r| r.leader && r.id != victim_id) {
                        return killed.elapsed().as_secs_f64();
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(o.steady_secs - o.steady_secs / 2)).await;
        shared.record_heartbeats.store(false, Ordering::Relaxed);
        lag_on.store(false, Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        // The survivors' CPU over the whole window (the dead one's is gone with it).
        let cores: f64 = survivors
            .iter()
            .map(|i| cpu_ticks(pids[*i]).saturating_sub(c0[*i]) as f64 / 100.0 / secs)
            .sum();
        let back = back.await??;
        let storm_cpu = storm_cpu.await?;
        for (e, c) in shared.top_errors() {
            eprintln!("  {c} x {e}");
        }
        eprintln!(
            "the {} agents of the dead replica are back after {back:.1}s",
            moved.len()
        );
        let leader_secs = tokio::time::timeout(Duration::from_secs(60), leader_moved)
            .await
            .context("no new leader within 60 s")??;
        let rss: Vec<u64> = survivors.iter().map(|i| rss_kib(pids[*i])).collect();
        let mut hb = shared.heartbeats_ms();
        // The same window without the 10 s after the kill (the reconnection storm).
        let storm = killed_ms..killed_ms + 10_000;
        let mut calm = shared.heartbeats_ms_where(|at, _| !storm.contains(&at));
        let mut stormy = shared.heartbeats_ms_where(|at, _| storm.contains(&at));
        // In the storm, the agents that kept their connection (a survivor's own).
        let mut kept = shared.heartbeats_ms_where(|at, moved| storm.contains(&at) && !moved);
        let mut lag_storm: Vec<f64> = lag
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(at, _)| storm.contains(at))
                    .map(|(_, l)| *l)
                    .collect()
            })
            .unwrap_or_default();
        let hb_errors = shared.heartbeat_errors.load(Ordering::Relaxed);

        // Delivery through another replica than the one holding the agent's poll.
        let mut delivery = agentsim::deliver_stops(&sims, o.sample.min(n), |sim| {
            let at = sim.replica.load(Ordering::Relaxed);
            let other = survivors
                .iter()
                .copied()
                .find(|i| *i != at)
                .unwrap_or(survivors[0]);
            apis[other].clone()
        })
        .await?;
        Ok::<_, anyhow::Error>(Figures {
            create_secs,
            boot_rate,
            hb50: pct(&mut hb, 0.5),
            hb99: pct(&mut hb, 0.99),
            hb_n: hb.len(),
            calm99: pct(&mut calm, 0.99),
            storm50: pct(&mut stormy, 0.5),
            storm99: pct(&mut stormy, 0.99),
            storm_n: stormy.len(),
            kept99: pct(&mut kept, 0.99),
            kept_n: kept.len(),
            lag99: pct(&mut lag_storm, 0.99),
            lag_max: pct(&mut lag_storm, 1.0),
            storm_cpu,
            hb_errors,
            cd50: pct(&mut delivery, 0.5),
            cd99: pct(&mut delivery, 0.99),
            moved: moved.len(),
            back,
            leader_secs,
            rss_before,
            rss_max: rss.into_iter().max().unwrap_or(0),
            cores,
            rounds,
        })
    });
    drop(servers);
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&tmp);
    report(&result?, k, n, o.steady_secs, o.connect_concurrency)
}

struct Figures {
    create_secs: f64,
    boot_rate: f64,
    hb50: f64,
    hb99: f64,
    hb_n: usize,
    calm99: f64,
    storm50: f64,
    storm99: f64,
    storm_n: usize,
    kept99: f64,
    kept_n: usize,
    lag99: f64,
    lag_max: f64,
    /// Cores busy in the 10 s after the kill: (the survivors, the load process, the machine).
    storm_cpu: (f64, f64, f64),
    hb_errors: u64,
    cd50: f64,
    cd99: f64,
    moved: usize,
    back: f64,
    leader_secs: f64,
    rss_before: u64,
    rss_max: u64,
    cores: f64,
    rounds: Vec<Round>,
}

/// `d` daemons, daemon `j` on replica `j % k`; `builds` workspaces created through the replicas
/// in turn, 8 at a time; the rate from the first create to the last job succeeded.
#[allow(clippy::too_many_arguments)]
async fn build_round(
    bin: &std::path::Path,
    tmp: &std::path::Path,
    db: &str,
    apis: &[Client],
    api_urls: &[String],
    key: &str,
    round: usize,
    d: usize,
    builds: usize,
) -> anyhow::Result<Round> {
    let mut daemons = Vec::new();
    let mut ids = Vec::new();
    for j in 0..d {
        let dir = tmp.join(format!("daemon-{round}-{j}"));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.with_extension("log"))?;
        let child = Command::new(bin.join("outpost"))
            .args([
                "provisioner",
                "start",
                "--url",
                &api_urls[j % api_urls.len()],
                "--key",
                key,
            ])
            .arg("--workspaces-dir")
            .arg(&dir)
            .args(["--agent-binary", "/bin/true", "--isolation", "none"])
            .env_remove("OUTPOST_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        ids.push(format!("-{}", child.id()));
        daemons.push(Daemon(child));
    }
    let t = Instant::now();
    loop {
        let list: Vec<ProvisionerDaemon> = apis[0].get("/api/v1/provisioners").await?;
        if ids
            .iter()
            .all(|id| list.iter().any(|l| l.id.ends_with(id.as_str())))
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the {d} daemons did not all connect");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{d} external daemon(s) connected; {builds} builds...");
    let prefix = format!("b{round}x");
    let count = || {
        psql(
            db,
            &format!(
                "SELECT count(*) FILTER (WHERE j.status = 'succeeded'), count(*) FILTER (WHERE j.attempts > 1) \
                 FROM provisioner_jobs j JOIN workspace_builds b ON b.id = j.build_id \
                 JOIN workspaces w ON w.id = b.workspace_id WHERE w.name LIKE '{prefix}%'"
            ),
        )
    };
    let t = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (next, prefix) = (next.clone(), prefix.clone());
        let api = apis[w % apis.len()].clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= builds {
                    return Ok::<_, anyhow::Error>(());
                }
                let req = CreateWorkspaceRequest {
                    name: format!("{prefix}{i}"),
                    template: "base".into(),
                    parameters: Default::default(),
                };
                let _: Workspace = api.post("/api/v1/workspaces", &req).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (done, retried) = loop {
        let c = count()?;
        let (done, retried) = c.split_once('|').unwrap_or(("0", "0"));
        let (done, retried): (usize, usize) = (done.parse()?, retried.parse()?);
        if done >= builds {
            break (done, retried);
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("{done} of {builds} builds done after 300 s with {d} daemons");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(retried == 0, "{retried} jobs ran more than once");
    let spread = psql(
        db,
        &format!(
            "SELECT string_agg(n::text, '/' ORDER BY n DESC) FROM (SELECT count(*) AS n FROM provisioner_jobs j \
             JOIN workspace_builds b ON b.id = j.build_id JOIN workspaces w ON w.id = b.workspace_id \
             WHERE w.name LIKE '{prefix}%' GROUP BY j.daemon_id) c"
        ),
    )?;
    eprintln!("{done} builds in {secs:.1}s with {d} daemon(s) (jobs per daemon {spread})");
    drop(daemons);
    Ok(Round {
        daemons: d,
        per_sec: builds as f64 / secs,
        spread,
    })
}

fn report(f: &Figures, k: usize, n: usize, steady: u64, gate: usize) -> anyhow::Result<()> {
    let spread: Vec<String> = f
        .rounds
        .iter()
        .map(|r| format!("{} daemon(s): {}", r.daemons, r.spread))
        .collect();
    let title = format!(
        "bench agents (PostgreSQL, {k} replicas), {n} agents, {}\n\nMachine: {}. {k} `outpost server` replicas (release) on one PostgreSQL and one load process, all on this machine; agent i starts on replica i mod {k} and moves to the next when a request fails; heartbeats every 15 s, polls held 25 s. The leader replica was killed (SIGKILL) in the middle of the {steady} s steady window ({} of its agents moved); {} heartbeats measured in the window, {} failed (those sent to the dead replica). Creating the {n} workspaces through the replicas in turn took {:.1} s. Builds: external `outpost provisioner start` daemons (local provisioner, `--isolation none`, agent `/bin/true`), daemon j on replica j mod {k}; jobs per daemon: {}; no job ran twice.",
        crate::bench::date(),
        machine(),
        f.moved,
        f.hb_n,
        f.hb_errors,
        f.create_secs,
        spread.join("; "),
    ) + &if gate > 0 {
        format!(" The load process made at most {gate} connections (TLS handshake and first request) at a time: 10,000 real agents shake hands on their own cores, not on this process's.")
    } else {
        " The load process made its agents' connections with no cap (their client handshakes all on this one process's share of the 2 cores).".to_string()
    };
    let mut rows: Vec<(String, f64, &str, &str, Option<f64>)> = vec![
        ("bootstrap rate".into(), f.boot_rate, "agents/s", "-", None),
        ("heartbeat latency p50".into(), f.hb50, "ms", "-", None),
        (
            "heartbeat latency p99, a replica killed in the window".into(),
            f.hb99,
            "ms",
            "bar: 250 ms (issue 17)",
            Some(250.0),
        ),
        (
            "heartbeat latency p99, the window but the 10 s after the kill".into(),
            f.calm99,
            "ms",
            "bar: 250 ms (issue 17)",
            Some(250.0),
        ),
        (
            format!(
                "heartbeat latency p50 in the 10 s after the kill ({} heartbeats)",
                f.storm_n
            ),
            f.storm50,
            "ms",
            "-",
            None,
        ),
        (
            "heartbeat latency p99 in the 10 s after the kill".into(),
            f.storm99,
            "ms",
            "-",
            None,
        ),
        (
            format!(
                "heartbeat latency p99 in the 10 s after the kill, agents that kept their connection ({} heartbeats)",
                f.kept_n
            ),
            f.kept99,
            "ms",
            "bar: 250 ms (issue 17)",
            Some(250.0),
        ),
        (
            "the load process's own timer lag p99 in the 10 s after the kill".into(),
            f.lag99,
            "ms",
            "-",
            None,
        ),
        (
            "the load process's own timer lag, worst, in the 10 s after the kill".into(),
            f.lag_max,
            "ms",
            "-",
            None,
        ),
        (
            "CPU in the 10 s after the kill: the survivors".into(),
            f.storm_cpu.0,
            "cores",
            "-",
            None,
        ),
        (
            "CPU in the 10 s after the kill: the load process".into(),
            f.storm_cpu.1,
            "cores",
            "-",
            None,
        ),
        (
            "CPU in the 10 s after the kill: the whole machine".into(),
            f.storm_cpu.2,
            "cores",
            "-",
            None,
        ),
        (
            "command delivery p50, through another replica".into(),
            f.cd50,
            "ms",
            "-",
            None,
        ),
        (
            "command delivery p99, through another replica".into(),
            f.cd99,
            "ms",
            "bar: 1 s (issue 17)",
            Some(1000.0),
        ),
        (
            "the dead replica's agents back on the others".into(),
            f.back,
            "s",
            "bar: 120 s (issue 3)",
            Some(120.0),
        ),
        (
            "a new leader after the kill".into(),
            f.leader_secs,
            "s",
            "-",
            None,
        ),
        (
            "survivors' CPU over the window (sum)".into(),
            f.cores,
            "cores",
            "-",
            None,
        ),
        (
            "RSS of the killed replica before".into(),
            f.rss_before as f64 / 1024.0,
            "MiB",
            "bar: 1 GiB (issue 3)",
            Some(1024.0),
        ),
        (
            "largest survivor RSS after".into(),
            f.rss_max as f64 / 1024.0,
            "MiB",
            "bar: 1 GiB (issue 3)",
            Some(1024.0),
        ),
    ];
    let one = f.rounds.first().map(|r| r.per_sec);
    for r in &f.rounds {
        rows.push((
            format!("builds with {} external daemon(s)", r.daemons),
            r.per_sec,
            "builds/s",
            if r.daemons == 1 {
                "-"
            } else {
                "1 daemon, same run"
            },
            if r.daemons == 1 { None } else { one },
        ));
    }
    let rows_ref: Vec<(&str, f64, &str, &str, Option<f64>)> = rows
        .iter()
        .map(|(m, v, u, a, av)| (m.as_str(), *v, *u, *a, *av))
        .collect();
    write_results("agents-replicas", &title, &rows_ref)
}
