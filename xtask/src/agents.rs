//! `cargo xtask bench agents`: N simulated agents in this one process, each running the agent's
//! own bootstrap / long-poll / heartbeat code (`outpost_agent::credentials`, `::session`) over real mTLS against one
//! `outpost server`. This process is also the provisioner daemon: it takes the start jobs through
//! the provisioner API and hands each bundle to a simulated agent instead of spawning a process.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use outpost_api::*;

use crate::agentsim::{self, Shared};

use crate::bench::{
    first_user, machine, pct, rss_kib, start_server as start_server_ulimit, write_results,
};

pub(crate) struct Opts {
    pub count: usize,
    pub pg: Option<String>,
    /// PostgreSQL on a database of the bench's own (`$OUTPOST_BENCH_POSTGRES_URL`'s server),
    /// dropped at the end.
    pub fresh_pg: bool,
    pub steady_secs: u64,
    pub sample: usize,
    /// Control replicas on one PostgreSQL (1: the single-server bench).
    pub replicas: usize,
    /// External daemon counts for the build-throughput rounds of `--replicas`.
    pub daemons: Vec<usize>,
    /// Builds per round.
    pub builds: usize,
    /// Connections the load process makes at once (0: no cap).
    pub connect_concurrency: usize,
    /// Runs control under heaptrack until the end of the steady window and reports where its
    /// heap goes (the single-server bench only).
    pub heap_profile: bool,
    /// Load processes the simulated agents are spread over (`--replicas` on PostgreSQL or
    /// `--sqlite`), for more agents than one process may hold descriptors for.
    pub load_processes: usize,
    /// `--replicas K --load-processes P` on one SQLite data dir (`--shared-data-dir`) instead
    /// of PostgreSQL.
    pub sqlite: bool,
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut o = Opts {
        count: 1000,
        pg: None,
        fresh_pg: false,
        steady_secs: 60,
        sample: 200,
        replicas: 1,
        daemons: vec![1, 2, 4],
        builds: 100,
        connect_concurrency: 0,
        heap_profile: false,
        load_processes: 1,
        sqlite: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => o.count = it.next().context("--count N")?.parse()?,
            "--postgres-url" => o.pg = Some(it.next().context("--postgres-url URL")?.clone()),
            "--postgres" => o.fresh_pg = true,
            "--steady-secs" => o.steady_secs = it.next().context("--steady-secs S")?.parse()?,
            "--sample" => o.sample = it.next().context("--sample M")?.parse()?,
            "--replicas" => o.replicas = it.next().context("--replicas N")?.parse()?,
            "--builds" => o.builds = it.next().context("--builds N")?.parse()?,
            "--connect-concurrency" => {
                o.connect_concurrency = it.next().context("--connect-concurrency N")?.parse()?
            }
            "--heap-profile" => o.heap_profile = true,
            "--sqlite" => o.sqlite = true,
            "--load-processes" => {
                o.load_processes = it.next().context("--load-processes P")?.parse()?
            }
            "--daemons" => {
                o.daemons = it
                    .next()
                    .context("--daemons 1,2,4")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    raise_nofile();
    // Every agent holds a descriptor in this process and one in control: past the limit the
    // connections would fail one by one and the bench would wait out its timeouts.
    // With several replicas and load processes, each holds its share.
    let limit = nofile_limit();
    let share = o.count.div_ceil(o.replicas.min(o.load_processes).max(1)) as u64;
    if share + NOFILE_SPARE > limit {
        bail!(
            "--count {} needs more open files than this machine allows ({limit}, the hard limit, \
             which only root with CAP_SYS_RESOURCE can raise): each agent holds a descriptor in \
             a load process and in control. Use --count {} or less here, raise `ulimit -Hn`, or \
             spread them with --replicas K --load-processes P (PostgreSQL, or --sqlite for \
             replicas on one SQLite data dir).",
            o.count,
            limit.saturating_sub(NOFILE_SPARE)
        );
    }
    crate::cargo(&["build", "--release", "--bins"])?;
    if o.load_processes > 1 {
        anyhow::ensure!(
            o.replicas > 1,
            "--load-processes needs --replicas K (PostgreSQL, or SQLite with --sqlite)"
        );
        return crate::agents_many::run(o);
    }
    anyhow::ensure!(
        !o.sqlite,
        "--sqlite is for --replicas K --load-processes P (SQLite is the default otherwise)"
    );
    // PostgreSQL without a URL of the user's: a database of the bench's own, dropped at the
    // end however the run ends (a second run on a database the first left behind would find
    // its workspaces and the shared CA sealed with that run's secrets key).
    let made = if o.pg.is_none() && (o.fresh_pg || o.replicas > 1) {
        let url = crate::bench::fresh_database("agents", "")?.context(
            "bench agents on PostgreSQL: set OUTPOST_BENCH_POSTGRES_URL (an admin URL) or pass --postgres-url (an empty database)",
        )?;
        o.pg = Some(url.clone());
        Some(url)
    } else {
        None
    };
    let r = if o.replicas > 1 {
        crate::agents_replicas::run(o)
    } else {
        run(o)
    };
    if let Some(url) = made {
        crate::bench::drop_database(&url);
    }
    r
}

/// Raises this process's open-file limit as far as it may go (children inherit it): to the
/// kernel's maximum where the hard limit can be raised, else to the hard limit.
pub(crate) fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if setrlimit(Resource::RLIMIT_NOFILE, 1 << 20, 1 << 20).is_err() {
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Descriptors kept aside for everything but the agents' connections (the store, listeners,
/// the API clients, bootstraps in flight).
const NOFILE_SPARE: u64 = 1000;

/// This process's soft limit on open files (what [`raise_nofile`] got; control inherits it).
fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
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
    // Control's metrics, for how its TLS handshakes went (full or resumed from a ticket).
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    extra.push("--metrics-listen".into());
    extra.push(metrics_addr.clone());
    if let Some(u) = &o.pg {
        extra.push("--postgres-url".into());
        extra.push(u.clone());
    }
    let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
    let heap_file = tmp.join("heap");
    let wrapper: Vec<String> = if o.heap_profile {
        vec![
            "heaptrack".into(),
            "-o".into(),
            heap_file.display().to_string(),
        ]
    } else {
        vec![]
    };
    let mut server = crate::bench::start_server_wrapped(
        &bin,
        &tmp,
        ("127.0.0.1:0", "127.0.0.1:0"),
        &extra_ref,
        &wrapper,
    )?;
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
    let info_agent_url = info["agent_url"].as_str().unwrap_or_default().to_string();
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

        let (bundles, create_secs) =
            agentsim::make_bundles(std::slice::from_ref(&api), std::slice::from_ref(&prov), n)
                .await?;
        let urls = Arc::new(vec![info_agent_url.clone()]);
        // Control's memory with every workspace made and no agent connected: the base the
        // per-agent figure is counted from.
        let rss_idle = rss_kib(server.pid());
        let (creds, boot_rate) = agentsim::bootstrap_all(bundles, &urls).await?;
        let shared = Arc::new(Shared::default());
        let mut sims = Vec::with_capacity(n);
        for (i, (name, c, at)) in creds.into_iter().enumerate() {
            let local = agentsim::source(i);
            sims.push(agentsim::spawn(
                name,
                local,
                c,
                urls.clone(),
                at,
                shared.clone(),
            )?);
        }
        let connected_after =
            agentsim::wait_connected(&shared, n, Duration::from_secs(300)).await?;
        eprintln!(
            "all {n} connected after {connected_after:.1}s; measuring a {}s steady window...",
            o.steady_secs
        );

        // 4. Steady state: heartbeat latency, control CPU and RSS.
        tokio::time::sleep(Duration::from_secs(16)).await;
        shared.record_heartbeats.store(true, Ordering::Relaxed);
        let pid = server.pid();
        let me = std::process::id();
        let (c0, l0, t0) = (cpu_ticks(pid), cpu_ticks(me), Instant::now());
        tokio::time::sleep(Duration::from_secs(o.steady_secs)).await;
        let ticks = (cpu_ticks(pid) - c0) as f64;
        let hz = 100.0; // USER_HZ
        let cpu_cores_busy = ticks / hz / t0.elapsed().as_secs_f64();
        let load_cores = (cpu_ticks(me) - l0) as f64 / hz / t0.elapsed().as_secs_f64();
        shared.record_heartbeats.store(false, Ordering::Relaxed);
        let rss = rss_kib(pid);
        let mut hb = shared.heartbeats_ms();
        eprintln!(
            "{} heartbeats measured; control {:.2} cores busy, RSS {} MiB",
            hb.len(),
            cpu_cores_busy,
            rss / 1024
        );

        // 5. Kill control (SIGKILL) and restart it: time until every agent polls again.
        for s in &sims {
            s.failed_since_kill.store(false, Ordering::Relaxed);
        }
        let rss_kib_now = rss_kib(pid);
        crate::heap::kill9(pid);
        let _ = server.child.wait();
        let killed = Instant::now();
        let heap = if o.heap_profile {
            Some(crate::heap::summary(&tmp, n, rss_kib_now)?)
        } else {
            None
        };
        let (api_l, agent_l) = (listen.0.clone(), listen.1.clone());
        server = start_server_ulimit(&bin, &tmp, (&api_l, &agent_l), &extra_ref)?;
        let restarted_after = killed.elapsed().as_secs_f64();
        // Every agent must have noticed the outage and polled successfully since.
        agentsim::wait_back(&sims, killed, Duration::from_secs(300)).await?;
        let reconnect = killed.elapsed().as_secs_f64() - restarted_after;
        eprintln!("all {n} back {reconnect:.1}s after the restart");
        let pid = server.pid();
        let (full, resumed) = crate::bench::tls_handshakes(&metrics_addr).await?;
        eprintln!("TLS handshakes since the restart: {resumed} resumed, {full} full");

        // 6. Command delivery: stop a sample, from the API call to the agent's poll returning it.
        let mut delivery = agentsim::deliver_stops(&sims, o.sample.min(n), |_| api.clone()).await?;
        let rss_after = rss_kib(pid);
        Ok::<_, anyhow::Error>((
            create_secs,
            boot_rate,
            pct(&mut hb, 0.5),
            pct(&mut hb, 0.99),
            hb.len(),
            pct(&mut delivery, 0.5),
            pct(&mut delivery, 0.99),
            rss,
            rss_after,
            cpu_cores_busy,
            reconnect,
            (heap, rss_idle, load_cores, (full, resumed)),
        ))
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
        (heap, rss_idle, load_cores, (tls_full, tls_resumed)),
    ) = result?;

    let heap_note = match &heap {
        Some(_) => " Control ran under heaptrack until the kill (its latencies and CPU are heaptrack's, not a release server's); the heap profile follows the table.",
        None => "",
    };
    let title = format!(
        "bench agents ({store}), {n} agents, {}\n\nMachine: {}. One `outpost server` (release) and one load process on the same machine; heartbeats every 15 s give or take 1.5 s (from the last one sent), long polls held 20-25 s; {hb_n} heartbeats in the steady window; creating the {n} workspaces took {create_secs:.1} s. Each simulated agent connects from a loopback address of its own.{heap_note}",
        crate::bench::date(),
        machine()
    );
    // Issue 3's bars were for 10,000 agents; issue 19 raised the memory bar for 50,000.
    let (rss_bar, rss_anchor) = if n > 10_000 {
        (2048.0, "bar: 2 GiB (issue 19)")
    } else {
        (1024.0, "bar: 1 GiB (issue 3)")
    };
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
            rss_anchor,
            Some(rss_bar),
        ),
        (
            "control RSS, after restart and reconnect",
            rss_after as f64 / 1024.0,
            "MiB",
            rss_anchor,
            Some(rss_bar),
        ),
        ("control CPU, steady", cores, "cores", "-", None),
        (
            "control RSS per connected agent, steady (over its RSS with no agent connected)",
            rss.saturating_sub(rss_idle) as f64 / n as f64,
            "KiB",
            "-",
            None,
        ),
        (
            "load process CPU, steady (the simulated agents' side)",
            load_cores,
            "cores",
            "-",
            None,
        ),
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
        (
            "TLS handshakes from the restart to all back, resumed from a session ticket",
            tls_resumed,
            "handshakes",
            "all TLS handshakes in that time",
            Some(tls_full + tls_resumed),
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
    )?;
    if let Some(h) = heap {
        println!("{h}");
    }
    Ok(())
}
