//! `cargo xtask bench agents --count N --replicas K --load-processes P` (PostgreSQL): more agents
//! than one process may hold descriptors for. Each agent is one TLS connection, so one
//! descriptor in control and one in the load generator; where the hard open-file limit is
//! below N (20,000 on the VM this was written on, not raisable without CAP_SYS_RESOURCE) control
//! runs as K replicas on one machine and one database, and the simulated agents run in P load
//! processes (`bench agents-load`, this binary again, built with optimizations), agent `i` in
//! process `i % P`.
//!
//! The parent creates the workspaces and bootstraps every agent (a few connections at a time),
//! hands each load process its agents' credentials in a file, and talks to it over its stdin
//! and stdout (one line each way, below). Measured: heartbeat latency over a steady window,
//! control's CPU and memory summed over its replicas, every replica killed (SIGKILL) and
//! restarted and the time until every agent polls again, command delivery.
//!
//! Load process protocol. In: `record on`, `record off`, `reset` (forget who saw an outage;
//! answered `reset done`), `report`. Out: `status CONNECTED BACK` twice a second (BACK: agents
//! that saw the outage and polled since), `stopped NAME MS` when an agent's poll returns a stop
//! (ms since the epoch), `report JSON` (its heartbeats, failures).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use outpost_agent::credentials::Credentials;
use outpost_api::*;

use crate::agents::{cpu_ticks, Opts};
use crate::agentsim::{self, Shared};
use crate::bench::{machine, pct, rss_kib, start_server, write_results};

/// How long the agents have to be back after every replica restarted.
const RECOVERY: Duration = Duration::from_secs(300);

/// One agent as a load process gets it: workspace name, credentials, the URL index it starts
/// on, its index (its source address).
type Slot = (String, Credentials, usize, usize);

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Report {
    /// (sent, ms since the epoch; latency, µs; whether its agent saw the outage).
    heartbeats: Vec<(u64, u64, bool)>,
    heartbeat_errors: u64,
    poll_errors: u64,
    errors: Vec<(String, u64)>,
    /// How late the process's own 10 ms timer fired while recording (ms): the part of a
    /// heartbeat's latency that is the load process waiting for CPU, not control.
    #[serde(default)]
    lag_ms: Vec<f64>,
}

/// What the parent knows of a load process, from its output.
#[derive(Default)]
struct View {
    connected: usize,
    back: usize,
    stops: HashMap<String, u64>,
    report: Option<Report>,
    /// `reset` lines it has carried out.
    resets: usize,
    ended: bool,
}

struct Load {
    child: Child,
    stdin: ChildStdin,
    view: Arc<Mutex<View>>,
}

impl Load {
    fn say(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn views<T>(loads: &[Load], f: impl Fn(&View) -> T) -> Vec<T> {
    loads
        .iter()
        .map(|l| f(&l.view.lock().unwrap_or_else(|p| p.into_inner())))
        .collect()
}

/// Waits until `f` summed over the load processes reaches `n`, saying every 10 s how far it
/// got and what `extra` says (CPU, the kernel's listen queue).
fn wait_sum(
    loads: &[Load],
    n: usize,
    within: Duration,
    f: fn(&View) -> usize,
    extra: &mut dyn FnMut() -> String,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (mut said, mut said_got) = (Instant::now(), 0usize);
    loop {
        let got: usize = views(loads, f).into_iter().sum();
        if got >= n {
            return Ok(t.elapsed().as_secs_f64());
        }
        if said.elapsed() >= Duration::from_secs(10) {
            let rate = (got - said_got.min(got)) as f64 / said.elapsed().as_secs_f64();
            eprintln!(
                "  {got} of {n} after {:.0} s ({rate:.0}/s){}",
                t.elapsed().as_secs_f64(),
                extra()
            );
            (said, said_got) = (Instant::now(), got);
        }
        if views(loads, |v| v.ended).into_iter().any(|e| e) {
            bail!("a load process ended ({got} of {n})");
        }
        if t.elapsed() > within {
            bail!("{got} of {n} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asks every load process for its report: the heartbeats recorded (ms), how many failed and
/// the processes' own timer lag (ms); prints the most common failures.
fn reports(loads: &mut [Load]) -> anyhow::Result<(Vec<f64>, u64, Vec<f64>)> {
    for l in loads.iter_mut() {
        l.view.lock().unwrap_or_else(|p| p.into_inner()).report = None;
        l.say("report")?;
    }
    let t = Instant::now();
    while views(loads, |v| v.report.is_some()).contains(&false) {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("a load process did not report");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut hb, mut lag): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    // (sent, ms since the epoch; latency, µs) of every heartbeat, for when the slow ones went.
    let mut sent: Vec<(u64, u64)> = Vec::new();
    let (mut hb_errors, mut errors) = (0u64, HashMap::<String, u64>::new());
    for l in loads.iter() {
        let g = l.view.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rep) = &g.report {
            hb.extend(rep.heartbeats.iter().map(|(_, us, _)| *us as f64 / 1000.0));
            sent.extend(rep.heartbeats.iter().map(|(at, us, _)| (*at, *us)));
            hb_errors += rep.heartbeat_errors;
            lag.extend(&rep.lag_ms);
            for (e, c) in &rep.errors {
                *errors.entry(e.clone()).or_default() += c;
            }
        }
    }
    let mut errors: Vec<_> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (e, c) in errors.iter().take(6) {
        eprintln!("  {c} x {e}");
    }
    if let Some(line) = slow_seconds(&sent, 250_000) {
        eprintln!("{line}");
    }
    Ok((hb, hb_errors, lag))
}

/// When the heartbeats slower than `over_us` were sent: the seconds with the most of them,
/// counted from the first heartbeat (a stall shows as a few seconds holding most of them).
fn slow_seconds(sent: &[(u64, u64)], over_us: u64) -> Option<String> {
    let start = sent.iter().map(|(at, _)| *at).min()?;
    // Per second: (slow, sent).
    let mut by: std::collections::BTreeMap<u64, (usize, usize)> = Default::default();
    for (at, us) in sent {
        let e = by.entry((at - start) / 1000).or_default();
        e.1 += 1;
        if *us > over_us {
            e.0 += 1;
        }
    }
    let total: usize = by.values().map(|e| e.0).sum();
    let busiest = by.values().map(|e| e.1).max().unwrap_or(0);
    let mean = sent.len() / by.len().max(1);
    let mut worst: Vec<(u64, (usize, usize))> = by.into_iter().filter(|e| e.1 .0 > 0).collect();
    worst.sort_by_key(|(s, n)| (std::cmp::Reverse(n.0), *s));
    let top: Vec<String> = worst
        .iter()
        .take(5)
        .map(|(s, n)| format!("+{s} s: {} of {} sent", n.0, n.1))
        .collect();
    Some(format!(
        "heartbeats over {} ms: {total} of {}; sent per second: {mean} on average, {busiest} at most; the seconds the slow ones were sent in, most first (from {} ms since the epoch): {}",
        over_us / 1000,
        sent.len(),
        start,
        top.join(", ")
    ))
}

/// CPU of control's replicas, of the load processes and of the whole machine (cores), and
/// connections the kernel dropped from full listen queues, since the last call.
struct Usage {
    ctl: Vec<u32>,
    load: Vec<u32>,
    last: (f64, f64, f64, u64, Instant),
}

impl Usage {
    fn new(ctl: Vec<u32>, load: Vec<u32>) -> Self {
        let last = Self::sample(&ctl, &load);
        Usage { ctl, load, last }
    }

    fn sample(ctl: &[u32], load: &[u32]) -> (f64, f64, f64, u64, Instant) {
        let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>() as f64 / 100.0;
        (
            ticks(ctl),
            ticks(load),
            crate::cpustat::machine_cpu_secs(),
            listen_overflows(),
            Instant::now(),
        )
    }

    /// (control, load processes, machine) in cores, and listen overflows, since the last call.
    fn since(&mut self) -> (f64, f64, f64, u64) {
        let now = Self::sample(&self.ctl, &self.load);
        let last = std::mem::replace(&mut self.last, now);
        let secs = now.4.duration_since(last.4).as_secs_f64().max(0.001);
        (
            (now.0 - last.0) / secs,
            (now.1 - last.1) / secs,
            (now.2 - last.2) / secs,
            now.3.saturating_sub(last.3),
        )
    }

    /// [`Usage::since`] as a progress line's tail.
    fn line(&mut self) -> String {
        let (c, l, m, o) = self.since();
        format!(": control {c:.2} cores, load {l:.2}, machine {m:.2}; listen overflows +{o}")
    }
}

/// TcpExt ListenOverflows from /proc/net/netstat: connections dropped because an accept queue
/// was full.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(k, _)| *k == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn spawn_load(file: &std::path::Path, urls: &[String], gate: usize) -> anyhow::Result<Load> {
    // The load generator built with optimizations (`cargo xtask` itself is a debug build):
    // its CPU is taken from the same two cores as control's.
    let mut child = Command::new(crate::root().join("target/release/xtask"))
        .args(["bench", "agents-load", "--file"])
        .arg(file)
        .args(["--urls", &urls.join(","), "--connect-concurrency"])
        .arg(gate.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let view = Arc::new(Mutex::new(View::default()));
    let v = view.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut g = v.lock().unwrap_or_else(|p| p.into_inner());
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("status"), Some(c), Some(b)) => {
                    g.connected = c.parse().unwrap_or(0);
                    g.back = b.parse().unwrap_or(0);
                }
                (Some("stopped"), Some(name), Some(ms)) => {
                    g.stops.insert(name.to_string(), ms.parse().unwrap_or(0));
                }
                (Some("reset"), Some("done"), _) => g.resets += 1,
                (Some("report"), Some(_), _) => {
                    g.report = line
                        .strip_prefix("report ")
                        .and_then(|j| serde_json::from_str(j).ok());
                }
                _ => {}
            }
        }
        v.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
    });
    Ok(Load { child, stdin, view })
}

pub fn run(o: Opts) -> anyhow::Result<()> {
    outpost_common::tls::install_provider();
    // PostgreSQL, a database of the bench's own unless named; or one SQLite data dir that
    // every replica serves (`--sqlite`).
    let made = o.pg.is_none() && !o.sqlite;
    let db = match (&o.pg, o.sqlite) {
        (Some(u), _) => Some(u.clone()),
        (None, true) => None,
        (None, false) => Some(crate::bench::fresh_database("many", "")?.context(
            "bench agents --load-processes needs a store shared by the replicas: set OUTPOST_BENCH_POSTGRES_URL (an admin URL), pass --postgres-url (an empty database), or --sqlite (replicas on one SQLite data dir)",
        )?),
    };
    let store = match db {
        Some(_) => "PostgreSQL",
        None => "SQLite",
    };
    let (k, n, p) = (o.replicas, o.count, o.load_processes);
    let bin = crate::root().join("target/release");
    let tmp = std::env::temp_dir().join(format!("outpost-bench-many-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut r = crate::agents_replicas::start_replicas(&rt, &bin, &tmp, db.as_deref(), k)?;
    let apis: Vec<Client> = r
        .api_urls
        .iter()
        .map(|u| Client::new(u, Some(r.token.clone())))
        .collect();
    let provs: Vec<Client> = r
        .api_urls
        .iter()
        .map(|u| Client::new(u, Some(crate::agents_replicas::KEY.to_string())))
        .collect();

    // Workspaces, then every agent's credentials (bootstrapped here, 64 at a time).
    let (bundles, create_secs) = rt.block_on(agentsim::make_bundles(&apis, &provs, n))?;
    let rss_idle: u64 = r.pids.iter().map(|p| rss_kib(*p)).sum();
    let (creds, boot_rate) = rt.block_on(agentsim::bootstrap_all(bundles, &r.agent_urls))?;
    let mut slices: Vec<Vec<Slot>> = (0..p).map(|_| Vec::new()).collect();
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, (name, c, at)) in creds.into_iter().enumerate() {
        owner.insert(name.clone(), i % p);
        slices[i % p].push((name, c, at, i));
    }
    let mut loads = Vec::new();
    for (j, slice) in slices.iter().enumerate() {
        let file = tmp.join(format!("load-{j}.json"));
        // Private keys: readable by this user only.
        outpost_common::fs::write_private(&file, &serde_json::to_vec(slice)?)?;
        loads.push(spawn_load(&file, &r.agent_urls, o.connect_concurrency)?);
    }
    drop(slices);
    let load_pids: Vec<u32> = loads.iter().map(|l| l.child.id()).collect();
    let mut usage = Usage::new(r.pids.clone(), load_pids.clone());
    let connected = wait_sum(
        &loads,
        n,
        Duration::from_secs(600),
        |v| v.connected,
        &mut || usage.line(),
    )?;
    eprintln!("all {n} connected after {connected:.1}s: {k} replicas, {p} load processes");

    // Steady window.
    std::thread::sleep(Duration::from_secs(16));
    for l in &mut loads {
        l.say("record on")?;
    }
    usage.since();
    std::thread::sleep(Duration::from_secs(o.steady_secs));
    let (cores, load_cores, machine_cores, _) = usage.since();
    for l in &mut loads {
        l.say("record off")?;
    }
    let rss: Vec<u64> = r.pids.iter().map(|p| rss_kib(*p)).collect();
    let rss_sum: u64 = rss.iter().sum();
    eprintln!(
        "steady: control {cores:.2} cores, RSS {} MiB over {k} replicas; load {load_cores:.2} cores",
        rss_sum / 1024
    );

    // The load processes' heartbeats in the window.
    let (mut hb, hb_errors, mut lag) = reports(&mut loads)?;

    // Every replica killed (SIGKILL) and restarted on its own addresses, once every load
    // process has forgotten who saw an outage (a reset read after the kill would forget the
    // agents that had already seen this one, and they would never count as back).
    for l in &mut loads {
        l.say("reset")?;
    }
    let acked = Instant::now();
    while views(&loads, |v| v.resets).contains(&0) {
        if acked.elapsed() > Duration::from_secs(60) {
            bail!("a load process did not answer `reset` within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut listens = Vec::new();
    for s in r.servers.iter_mut() {
        let Some(mut s) = s.take() else { continue };
        // Not from `server.json`: replicas on one SQLite data dir share that file.
        let addr = |url: &str| {
            url.split_once("://")
                .map(|(_, a)| a.trim_end_matches('/').to_string())
                .unwrap_or_default()
        };
        listens.push((s.data.clone(), addr(&s.url), addr(&s.agent_url)));
        crate::heap::kill9(s.child.id());
        let _ = s.child.wait();
    }
    let killed = Instant::now();
    for l in &mut loads {
        l.say("killed")?;
    }
    for (i, (data, api, agent)) in listens.iter().enumerate() {
        let flags: Vec<&str> = r.flags[i].iter().map(String::as_str).collect();
        r.servers[i] = Some(start_server(&bin, data, (api, agent), &flags)?);
    }
    let restarted = killed.elapsed().as_secs_f64();
    r.pids = r.servers.iter().flatten().map(|s| s.child.id()).collect();
    // Past the limit the figures so far are still written, with how many were back.
    let mut usage = Usage::new(r.pids.clone(), load_pids);
    let back = match wait_sum(&loads, n, RECOVERY, |v| v.back, &mut || usage.line()) {
        Ok(_) => Some(killed.elapsed().as_secs_f64() - restarted),
        Err(e) => {
            eprintln!("not every agent is back: {e:#}");
            None
        }
    };
    let back_count: usize = views(&loads, |v| v.back).into_iter().sum();
    let (mut tls_full, mut tls_resumed) = (0.0, 0.0);
    for addr in &r.metrics {
        let (f, res) = rt.block_on(crate::bench::tls_handshakes(addr))?;
        tls_full += f;
        tls_resumed += res;
    }
    let connected_now: usize = views(&loads, |v| v.connected).into_iter().sum();
    eprintln!("{back_count} of {n} back after the restart ({back:?} s), {connected_now} connected; TLS handshakes since: {tls_resumed} resumed, {tls_full} full; the failures so far:");
    reports(&mut loads)?;

    // Command delivery: stops through the replicas in turn, 20 ms apart.
    let sample = if back.is_some() { o.sample.min(n) } else { 0 };
    let names: Vec<String> = owner.keys().take(sample).cloned().collect();
    let (sent, mut api_ms) = rt.block_on(async {
        let (mut sent, mut api_ms) = (Vec::new(), Vec::new());
        for (i, name) in names.iter().enumerate() {
            let t = agentsim::now_ms();
            let _: Build = apis[i % k]
                .post(
                    &format!("/api/v1/workspaces/{name}/builds"),
                    &BuildRequest {
                        action: WorkspaceAction::Stop,
                        parameters: Default::default(),
                    },
                )
                .await?;
            api_ms.push(agentsim::now_ms().saturating_sub(t) as f64);
            sent.push((name.clone(), t));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, anyhow::Error>((sent, api_ms))
    })?;
    // The slowest API calls, in the order they were asked (which replica, how long): a cold
    // replica's first calls, or a moment when every replica waited on one write.
    let mut slow: Vec<(usize, f64)> = api_ms.iter().copied().enumerate().collect();
    slow.sort_by(|a, b| b.1.total_cmp(&a.1));
    slow.truncate(5);
    let slow: Vec<String> = slow
        .iter()
        .map(|(i, ms)| format!("#{i} on replica {}: {ms:.0} ms", i % k))
        .collect();
    eprintln!("the slowest stop calls: {}", slow.join(", "));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delivery = Vec::new();
    for (name, t) in &sent {
        let j = owner[name];
        loop {
            let got = views(&loads[j..=j], |v| v.stops.get(name).copied())[0];
            if let Some(at) = got {
                delivery.push(at.saturating_sub(*t) as f64);
                break;
            }
            if Instant::now() > deadline {
                bail!("a stop command for {name} was never delivered");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let rss_after: u64 = r.pids.iter().map(|p| rss_kib(*p)).sum();

    drop(loads);
    drop(r);
    rt.shutdown_timeout(Duration::from_secs(1));
    if std::env::var_os("OUTPOST_BENCH_KEEP").is_some() {
        eprintln!(
            "kept {} (OUTPOST_BENCH_KEEP): the replicas' data and logs",
            tmp.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if let (true, Some(db)) = (made, &db) {
        crate::bench::drop_database(db);
    }

    let per_agent = rss_sum.saturating_sub(rss_idle) as f64 / n as f64;
    let title = format!(
        "bench agents ({store}, {k} replicas, {p} load processes), {n} agents, {}\n\nMachine: {}. One process here may hold at most as many descriptors as the hard open-file limit allows, and each agent is one in control and one in the load generator: control runs as {k} `outpost server` replicas (release) on {}, all on this machine, and the simulated agents in {p} load processes (agent i in process i mod {p}, on replica i mod {k}, moving to the next replica when a request fails). Heartbeats every 15 s give or take 1.5 s (from the last one sent), polls held 20-25 s; {} heartbeats in the {}s steady window ({hb_errors} failed); creating the {n} workspaces took {create_secs:.1} s. Then every replica was killed (SIGKILL) and restarted on its own addresses. Control's RSS and CPU are the sums over its replicas; the machine's CPU includes the store ({store}) and the load processes.",
        crate::bench::date(),
        machine(),
        match db {
            Some(_) => "one PostgreSQL",
            None => "one SQLite data dir (`--shared-data-dir`)",
        },
        hb.len(),
        o.steady_secs,
    );
    let mut rows = vec![
        ("bootstrap rate", boot_rate, "agents/s", "-", None),
        ("heartbeat latency p50", pct(&mut hb, 0.5), "ms", "-", None),
        (
            "heartbeat latency p99",
            pct(&mut hb, 0.99),
            "ms",
            "bar: 250 ms (issue 19)",
            Some(250.0),
        ),
        (
            "the load processes' own timer lag p99 in that window (a 10 ms sleep, how late)",
            pct(&mut lag, 0.99),
            "ms",
            "-",
            None,
        ),
        (
            "command delivery p50",
            pct(&mut delivery, 0.5),
            "ms",
            "-",
            None,
        ),
        (
            "command delivery p99",
            pct(&mut delivery, 0.99),
            "ms",
            "bar: 1 s (issue 19)",
            Some(1000.0),
        ),
        (
            "command delivery p99: the API call asking for the stop, its part of the above",
            pct(&mut api_ms, 0.99),
            "ms",
            "-",
            None,
        ),
        (
            "control RSS, steady (all replicas)",
            rss_sum as f64 / 1024.0,
            "MiB",
            "bar: 2 GiB (issue 19)",
            Some(2048.0),
        ),
        (
            "control RSS, the largest replica",
            rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
            "MiB",
            "-",
            None,
        ),
        (
            "control RSS, after restart and reconnect (all replicas)",
            rss_after as f64 / 1024.0,
            "MiB",
            "bar: 2 GiB (issue 19)",
            Some(2048.0),
        ),
        (
            "control RSS per connected agent (over the replicas' RSS with no agent connected)",
            per_agent,
            "KiB",
            "-",
            None,
        ),
        (
            "control CPU, steady (all replicas)",
            cores,
            "cores",
            "-",
            None,
        ),
        (
            "load processes' CPU, steady",
            load_cores,
            "cores",
            "-",
            None,
        ),
        ("machine CPU, steady", machine_cores, "cores", "-", None),
    ];
    if delivery.is_empty() {
        rows.retain(|r| !r.0.starts_with("command delivery"));
    }
    match back {
        Some(back) => rows.push((
            "all agents back after kill -9 of every replica + restart",
            back,
            "s",
            "bar: 120 s (issue 19)",
            Some(120.0),
        )),
        None => rows.push((
            "agents back 300 s after kill -9 of every replica + restart (no delivery measured)",
            back_count as f64,
            "agents",
            "all of them",
            Some(n as f64),
        )),
    }
    rows.push((
        "TLS handshakes from the restart on, resumed from a session ticket (all replicas)",
        tls_resumed,
        "handshakes",
        "all TLS handshakes in that time",
        Some(tls_full + tls_resumed),
    ));
    let name = match db {
        Some(_) => "agents-many",
        None => "agents-many-sqlite",
    };
    write_results(name, &title, &rows)
}

/// One line to the parent.
fn say_line(line: String) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// `bench agents-load --file F --urls U,.. --connect-concurrency N`: one load process (above).
pub fn load_main(args: &[String]) -> anyhow::Result<()> {
    let (mut file, mut urls, mut gate) = (None, Vec::new(), 0usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--file" => file = Some(it.next().context("--file F")?.clone()),
            "--urls" => {
                urls = it
                    .next()
                    .context("--urls U,..")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--connect-concurrency" => {
                gate = it.next().context("--connect-concurrency N")?.parse()?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    crate::agents::raise_nofile();
    outpost_common::tls::install_provider();
    let slots: Vec<Slot> = serde_json::from_slice(&std::fs::read(file.context("--file")?)?)?;
    // One thread: a load process is one of several on two cores, and a multi-threaded
    // runtime's work stealing and cross-thread wake-ups cost more than they gave here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shared = Arc::new(Shared {
            connect_gate: (gate > 0).then(|| tokio::sync::Semaphore::new(gate)),
            ..Default::default()
        });
        let urls = Arc::new(urls);
        let lag_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lag = agentsim::lag_probe(lag_on.clone());
        let mut sims = Vec::with_capacity(slots.len());
        for (name, c, at, i) in slots {
            sims.push(agentsim::spawn(
                name,
                agentsim::source(i),
                c,
                urls.clone(),
                at,
                shared.clone(),
            )?);
        }
        let say = say_line;
        let (say2, sims2, shared2) = (say, sims.clone(), shared.clone());
        tokio::spawn(async move {
            let mut told = vec![false; sims2.len()];
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Back: connected, and either it saw the outage or a request of its begun
                // after the kill went through.
                let killed = shared2.killed_ms.load(Ordering::Relaxed);
                let back = sims2
                    .iter()
                    .filter(|s| {
                        s.ok.load(Ordering::Relaxed)
                            && (s.failed_since_kill.load(Ordering::Relaxed)
                                || (killed > 0 && s.ok_request_ms.load(Ordering::Relaxed) > killed))
                    })
                    .count();
                for (s, told) in sims2.iter().zip(told.iter_mut()) {
                    let at = s.stop_received_ms.load(Ordering::Relaxed);
                    if at > 0 && !*told {
                        *told = true;
                        say2(format!("stopped {} {at}", s.name));
                    }
                }
                say2(format!(
                    "status {} {back}",
                    shared2.connected.load(Ordering::Relaxed)
                ));
            }
        });
        let mut lines =
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        while let Some(line) = lines.next_line().await? {
            match line.trim() {
                // Told once every replica is dead (so later than the kill itself: a request
                // begun in between counts only when it or a later one fails or goes through).
                "killed" => {
                    shared
                        .killed_ms
                        .store(crate::agentsim::now_ms(), Ordering::Relaxed);
                }
                "record on" => {
                    shared.record_heartbeats.store(true, Ordering::Relaxed);
                    lag_on.store(true, Ordering::Relaxed);
                }
                "record off" => {
                    shared.record_heartbeats.store(false, Ordering::Relaxed);
                    lag_on.store(false, Ordering::Relaxed);
                }
                "reset" => {
                    // An agent not connected now (backing off after a failure of its own
                    // before the kill) is out already: it is back once a request gets through
                    // again. Counting only failures from here on, such an agent whose next
                    // probe went through after the restart never counted as back.
                    shared.killed_ms.store(0, Ordering::Relaxed);
                    for s in &sims {
                        let out = !s.ok.load(Ordering::Relaxed);
                        s.failed_since_kill.store(out, Ordering::Relaxed);
                    }
                    say("reset done".to_string());
                }
                "report" => {
                    let rep = Report {
                        heartbeats: shared
                            .heartbeat_us
                            .lock()
                            .map(|v| v.clone())
                            .unwrap_or_default(),
                        heartbeat_errors: shared.heartbeat_errors.load(Ordering::Relaxed),
                        poll_errors: shared.poll_errors.load(Ordering::Relaxed),
                        errors: shared.top_errors(),
                        lag_ms: lag
                            .lock()
                            .map(|v| v.iter().map(|(_, ms)| *ms).collect())
                            .unwrap_or_default(),
                    };
                    say(format!("report {}", serde_json::to_string(&rep)?));
                }
                other => eprintln!("agents-load: unknown command {other:?}"),
            }
        }
        Ok::<_, anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn slow_heartbeats_are_counted_by_the_second_they_were_sent() {
        // Sent over 10 s from t=5,000 ms: two slow in second 3, one in second 7.
        let mut sent: Vec<(u64, u64)> = (0..100).map(|i| (5_000 + i * 100, 1_000)).collect();
        sent[31].1 = 400_000;
        sent[35].1 = 300_000;
        sent[72].1 = 260_000;
        sent[80].1 = 250_000; // not over
        let line = super::slow_seconds(&sent, 250_000).expect("a line");
        assert_eq!(
            line,
            "heartbeats over 250 ms: 3 of 100; sent per second: 10 on average, 10 at most; the seconds the slow ones were sent in, most first (from 5000 ms since the epoch): +3 s: 2 of 10 sent, +7 s: 1 of 10 sent"
        );
        assert!(super::slow_seconds(&[], 250_000).is_none());
    }
}
