//! `cargo xtask bench schedule` (issue 15): one scheduler tick over 100,000 workspaces in the
//! store, 1% of them past their deadline, on SQLite and PostgreSQL. Bar: a tick under 1 s on
//! both, the due stop builds queued within that tick.
//!
//! It drives the real `outpost server` (release build). A first run creates the schema and the
//! admin; the server is stopped and the store seeded through the database's own CLI (`sqlite3`,
//! `psql`): N workspaces of the built-in `base` template, each running (its latest build a
//! succeeded start; a third of them with three builds: start, stop, start), with an agent and a
//! spent bootstrap token per start as a real start leaves them, 1% with a deadline a minute
//! ago, the others an hour ahead or none. The server then restarts with
//! `--provisioner-daemons 0` (queued jobs stay queued), `--schedule-interval 3s` and
//! `--log-json`; the first `schedule tick` line gives the tick's own `elapsed_ms`, `examined`
//! and `queued`, and the store must then hold exactly one pending `autostop` stop build per due
//! workspace, and no more after the next tick.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use crate::bench::{date, first_user, machine, start_server, write_results, ServerProc};

/// The bar for one tick.
const BAR_MS: f64 = 1000.0;
/// The PostgreSQL the test suite uses (tests/it/harness.rs); a fresh database is made on it.
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Ticks while measuring (the first comes one interval after the server starts).
const INTERVAL: &str = "3s";

struct Opts {
    count: usize,
    pg: Option<String>,
    sqlite: bool,
    keep: bool,
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut o = Opts {
        count: 100_000,
        pg: Some(
            std::env::var("OUTPOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_string()),
        ),
        sqlite: true,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => o.count = it.next().context("--count N")?.parse()?,
            "--postgres-url" => o.pg = Some(it.next().context("--postgres-url URL")?.clone()),
            "--no-postgres" => o.pg = None,
            "--no-sqlite" => o.sqlite = false,
            "--keep" => o.keep = true,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(o.count >= 100, "--count must be at least 100");
    for tool in ["sqlite3", "psql"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ensure!(
            found,
            "`{tool}` is needed to seed the store (apt-get install -y sqlite3 postgresql-client)"
        );
    }
    // The server's filter: the tick's info line, and the scheduler's debug line for a tick that
    // finds nothing due (so the bench sees the second tick). Set before any thread starts.
    std::env::set_var(
        "OUTPOST_LOG",
        "info,outpost_control::server::scheduler=debug",
    );
    crate::cargo(&["build", "--release", "--bins"])?;
    outpost_common::tls::install_provider();
    let bin = crate::root().join("target/release");

    let mut runs = Vec::new();
    if o.sqlite {
        runs.push(run(&bin, Backend::Sqlite, o.count, o.keep)?);
    }
    if let Some(admin) = &o.pg {
        match fresh_pg(admin) {
            Ok(mut db) => {
                db.keep = o.keep;
                let res = run(&bin, Backend::Postgres(db.url.clone()), o.count, o.keep);
                drop(db);
                runs.push(res?);
            }
            Err(e) => eprintln!("SKIPPED (PostgreSQL): {admin} is not usable: {e:#}"),
        }
    }
    ensure!(!runs.is_empty(), "no backend ran");
    report(&runs, o.count)
}

#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

/// A database made for one run on the given server, dropped afterwards.
struct PgDb {
    admin: String,
    name: String,
    url: String,
    keep: bool,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("PostgreSQL: the database is kept: {}", self.url);
            return;
        }
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn fresh_pg(admin: &str) -> anyhow::Result<PgDb> {
    let name = format!("outpost_bench_schedule_{}", std::process::id());
    psql(
        admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )?;
    psql(admin, &format!("CREATE DATABASE {name}"))?;
    let (base, _) = admin
        .rsplit_once('/')
        .context("the PostgreSQL URL has no database path")?;
    Ok(PgDb {
        admin: admin.to_string(),
        url: format!("{base}/{name}"),
        name,
        keep: false,
    })
}

/// Runs `sql` through `psql` against `url`; the rows as `a|b` lines.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    cli(
        Command::new("psql").args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url]),
        sql,
    )
}

fn cli(cmd: &mut Command, sql: &str) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the database CLI")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = sql.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        let head: String = sql.chars().take(200).collect();
        bail!(
            "{:?} failed: {}\n(sql: {head}...)",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The store of one run, reached through its CLI.
struct Db {
    backend: Backend,
    file: PathBuf,
}

impl Db {
    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        match &self.backend {
            Backend::Sqlite => cli(
                Command::new("sqlite3")
                    .args(["-batch", "-bail"])
                    .arg(&self.file),
                &format!(".timeout 30000\n{sql}"),
            ),
            Backend::Postgres(url) => psql(url, sql),
        }
    }

    fn count(&self, sql: &str) -> anyhow::Result<u64> {
        let out = self.sql(sql)?;
        out.lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .with_context(|| format!("not a count: {out:?} from {sql}"))
    }
}

/// One backend's figures.
struct Run {
    store: &'static str,
    workspaces: u64,
    due: u64,
    seed_s: f64,
    tick_ms: f64,
    examined: u64,
    queued: u64,
    pending_autostop: u64,
    on_due: u64,
    idle_tick_ms: Option<f64>,
    requeued: u64,
}

fn run(bin: &Path, backend: Backend, count: usize, keep: bool) -> anyhow::Result<Run> {
    let store = backend.name();
    let tmp = std::env::temp_dir().join(format!(
        "outpost-bench-schedule-{}-{}",
        std::process::id(),
        store.to_lowercase()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let res = run_in(bin, &backend, count, &tmp);
    if res.is_ok() && !keep {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        eprintln!("{store}: the data dir is kept: {}", tmp.display());
    }
    res
}

fn run_in(bin: &Path, backend: &Backend, count: usize, tmp: &Path) -> anyhow::Result<Run> {
    let store = backend.name();
    let mut extra: Vec<String> = vec!["--provisioner-daemons".into(), "0".into()];
    if let Backend::Postgres(url) = backend {
        extra.push("--postgres-url".into());
        extra.push(url.clone());
    }
    let args = |more: &[&str]| -> Vec<String> {
        let mut v = extra.clone();
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };

    // 1. The schema, the admin and the built-in templates; no tick in that run.
    eprintln!("{store}: creating the store...");
    let first = args(&["--schedule-interval", "1h"]);
    let server = start(bin, tmp, &first)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(first_user(&server.url, &server.data, "bench-password"))?;
    stop(server)?;

    // 2. The workspaces, straight into the store.
    let db = Db {
        backend: backend.clone(),
        file: tmp.join("outpost.db"),
    };
    let owner = db.sql("SELECT id FROM users WHERE username = 'admin'")?;
    let tpl = db.sql("SELECT id || '|' || active_version_id FROM templates WHERE name = 'base'")?;
    let (tpl, version) = tpl
        .split_once('|')
        .context("no active version of the base template")?;
    let manifest = db.sql(&format!(
        "SELECT manifest FROM template_versions WHERE id = '{}'",
        lit(version)?
    ))?;
    let provisioner = serde_json::from_str::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|m| m["provisioner"].as_str().map(str::to_string))
        .unwrap_or_else(|| "local".into());
    let now = outpost_common::clock::now_ms() as i64;
    let t = Instant::now();
    db.sql(&seed_sql(
        backend,
        count,
        &Ids {
            owner: lit(&owner)?,
            template: lit(tpl)?,
            version: lit(version)?,
            provisioner: lit(&provisioner)?,
        },
        now,
    ))?;
    let seed_s = t.elapsed().as_secs_f64();
    let in_store = db.count("SELECT COUNT(*) FROM workspaces WHERE deleted = 0")?;
    let due = db.count(&format!(
        "SELECT COUNT(*) FROM workspaces WHERE deadline <= {}",
        outpost_common::clock::now_ms()
    ))?;
    eprintln!("{store}: seeded {in_store} workspaces ({due} due) in {seed_s:.1} s");
    ensure!(
        in_store == count as u64 && due == count.div_ceil(100) as u64,
        "seeding gave {in_store} workspaces, {due} due"
    );

    // 3. The measured run.
    let log = tmp.join("server.log");
    let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let second = args(&["--schedule-interval", INTERVAL, "--log-json"]);
    let mut server = start(bin, tmp, &second)?;
    let mut lines = LogTail {
        path: log,
        offset: from,
        buf: String::new(),
    };
    let first_tick = next_tick(&mut lines, &mut server, Duration::from_secs(120))?;
    let queued_in_store = || {
        db.count(
            "SELECT COUNT(*) FROM workspace_builds b JOIN provisioner_jobs j ON j.build_id = b.id \
             WHERE b.reason = 'autostop' AND b.transition = 'stop' AND j.status = 'pending'",
        )
    };
    let queued_store = queued_in_store()?;
    let on_due = db.count(
        "SELECT COUNT(DISTINCT b.workspace_id) FROM workspace_builds b \
         JOIN workspaces w ON w.id = b.workspace_id WHERE b.reason = 'autostop' AND w.name LIKE 'due-%'",
    )?;
    eprintln!(
        "{store}: first tick {:.1} ms, examined {}, queued {} ({queued_store} pending autostop builds in the store)",
        first_tick.elapsed_ms, first_tick.examined, first_tick.queued
    );
    // The next tick must find nothing more to stop.
    let again = next_tick(&mut lines, &mut server, Duration::from_secs(60))?;
    let requeued = again.queued as u64 + queued_in_store()?.saturating_sub(queued_store);
    eprintln!(
        "{store}: second tick {:.1} ms, examined {}, queued {}",
        again.elapsed_ms, again.examined, again.queued
    );
    stop(server)?;
    Ok(Run {
        store,
        workspaces: in_store,
        due,
        seed_s,
        tick_ms: first_tick.elapsed_ms,
        examined: first_tick.examined as u64,
        queued: first_tick.queued as u64,
        pending_autostop: queued_store,
        on_due,
        idle_tick_ms: (again.examined == 0).then_some(again.elapsed_ms),
        requeued,
    })
}

fn start(bin: &Path, data: &Path, args: &[String]) -> anyhow::Result<ServerProc> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    start_server(bin, data, ("127.0.0.1:0", "127.0.0.1:0"), &a)
}

/// Stops the server with SIGTERM (a clean shutdown), then waits for it.
fn stop(mut server: ServerProc) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            eprintln!("the server did not stop on SIGTERM in 20 s; killing it");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    Ok(())
}

/// A value put into the seeding SQL: store ids (UUIDs) and provisioner names only.
fn lit(s: &str) -> anyhow::Result<&str> {
    let s = s.trim();
    ensure!(
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "unexpected value from the store: {s:?}"
    );
    Ok(s)
}

struct Ids<'a> {
    owner: &'a str,
    template: &'a str,
    version: &'a str,
    provisioner: &'a str,
}

/// One transaction: `count` running workspaces (`due-N` every 100th, its deadline a minute ago;
/// `ws-N` the others, the deadline an hour ahead, or none for every tenth), one succeeded start
/// build each, and for a third of them a stop and a second start before it; an agent and its
/// spent bootstrap token per start build, as a real start leaves them.
fn seed_sql(backend: &Backend, count: usize, ids: &Ids, now: i64) -> String {
    let last = count - 1;
    let numbers = match backend {
        Backend::Sqlite => format!(
            "CREATE TEMP TABLE n (i INTEGER PRIMARY KEY);\n\
             WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {last}) \
             INSERT INTO n SELECT i FROM g;\n"
        ),
        Backend::Postgres(_) => format!(
            "CREATE TEMP TABLE n (i BIGINT PRIMARY KEY);\n\
             INSERT INTO n SELECT generate_series(0, {last});\n"
        ),
    };
    let Ids {
        owner,
        template,
        version,
        provisioner,
    } = ids;
    let (past, ahead, made) = (now - 60_000, now + 3_600_000, now - 86_400_000);
    let build = |n: i64, transition: &str, filter: &str| {
        format!(
            "INSERT INTO workspace_builds (id, workspace_id, number, transition, template_version_id, then_start, initiator_id, created_at, reason) \
             SELECT 'bench-b-' || i || '-{n}', 'bench-w-' || i, {n}, '{transition}', '{version}', 0, '{owner}', {}, 'initiator' FROM n{filter};\n",
            made + n * 1000
        )
    };
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&numbers);
    sql.push_str(&format!(
        "INSERT INTO workspaces (id, owner_id, name, template_id, parameters, provisioner_state, deleted, created_at, last_used_at, deadline, max_deadline) \
         SELECT 'bench-w-' || i, '{owner}', CASE WHEN i % 100 = 0 THEN 'due-' ELSE 'ws-' END || i, '{template}', '{{}}', 'null', 0, {made}, {now}, \
                CASE WHEN i % 100 = 0 THEN {past} WHEN i % 10 = 5 THEN NULL ELSE {ahead} END, NULL \
         FROM n;\n"
    ));
    sql.push_str(&build(1, "start", ""));
    sql.push_str(&build(2, "stop", " WHERE i % 3 = 1"));
    sql.push_str(&build(3, "start", " WHERE i % 3 = 1"));
    sql.push_str(&format!(
        "INSERT INTO provisioner_jobs (id, build_id, provisioner, status, attempts, cancel_requested, created_at, started_at, completed_at) \
         SELECT 'bench-j-' || b.id, b.id, '{provisioner}', 'succeeded', 1, 0, b.created_at, b.created_at, b.created_at + 500 \
         FROM workspace_builds b WHERE b.id LIKE 'bench-b-%';\n"
    ));
    // Each start build's agent: the latest connected, the one before revoked at the stop; each
    // agent's bootstrap token, spent (control keeps them).
    let agent = |build: &str, filter: &str, live: bool| {
        let (lifecycle, revoked) = if live {
            ("ready", "NULL".to_string())
        } else {
            ("off", format!("{}", made + 2000))
        };
        format!(
            "INSERT INTO agents (id, workspace_id, build_id, created_at, first_connected_at, last_seen_at, lifecycle, version, cert_serial, cert_expires_at, revoked_at) \
             SELECT 'bench-a-' || i || '-' || {build}, 'bench-w-' || i, 'bench-b-' || i || '-' || {build}, {made}, {made}, {now}, '{lifecycle}', 'bench', 'serial-' || i || '-' || {build}, {}, {revoked} \
             FROM n{filter};\n",
            now + 86_400_000
        )
    };
    sql.push_str(&agent("1", " WHERE i % 3 = 1", false));
    sql.push_str(&agent("CASE WHEN i % 3 = 1 THEN 3 ELSE 1 END", "", true));
    sql.push_str(
        "INSERT INTO bootstrap_tokens (id, secret_hash, workspace_id, agent_id, created_at, expires_at, used_at, used_key) \
         SELECT 'bench-t-' || a.id, 'hash', a.workspace_id, a.id, a.created_at, a.created_at + 900000, a.created_at + 1000, 'key' \
         FROM agents a WHERE a.id LIKE 'bench-a-%';\n",
    );
    sql.push_str("DROP TABLE n;\nCOMMIT;\n");
    if let Backend::Postgres(_) = backend {
        // What autovacuum would have done by the time a store holds this many rows.
        sql.push_str("ANALYZE;\n");
    }
    sql
}

/// The server's JSON log, read as it grows.
struct LogTail {
    path: PathBuf,
    offset: u64,
    buf: String,
}

impl LogTail {
    /// The complete lines written since the last call.
    fn lines(&mut self) -> anyhow::Result<Vec<String>> {
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut s = String::new();
        let n = f.read_to_string(&mut s)?;
        self.offset += n as u64;
        self.buf.push_str(&s);
        let mut out = Vec::new();
        while let Some(i) = self.buf.find('\n') {
            out.push(self.buf[..i].to_string());
            self.buf.drain(..=i);
        }
        Ok(out)
    }
}

/// What one `schedule tick` line says.
struct Tick {
    elapsed_ms: f64,
    examined: usize,
    queued: usize,
}

/// Waits for the scheduler's next tick line (`schedule tick`, or its debug line when nothing
/// was due); a failed tick is an error.
fn next_tick(log: &mut LogTail, server: &mut ServerProc, within: Duration) -> anyhow::Result<Tick> {
    let deadline = Instant::now() + within;
    loop {
        for line in log.lines()? {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let f = &v["fields"];
            let msg = f["message"].as_str().unwrap_or_default();
            let n = |k: &str| f[k].as_u64().unwrap_or(0) as usize;
            match msg {
                "schedule tick" | "schedule tick: nothing due" => {
                    return Ok(Tick {
                        elapsed_ms: f["elapsed_ms"].as_f64().context("no elapsed_ms")?,
                        examined: n("examined"),
                        queued: n("queued"),
                    })
                }
                "schedule tick failed" => bail!("the tick failed: {line}"),
                _ => {}
            }
        }
        if let Some(st) = server.child.try_wait()? {
            bail!("the server exited ({st}); see {}", log.path.display());
        }
        if Instant::now() > deadline {
            bail!("no schedule tick in {within:?}; see {}", log.path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn report(runs: &[Run], count: usize) -> anyhow::Result<()> {
    let due = count.div_ceil(100);
    let mut rows: Vec<(String, f64, &str, &str, Option<f64>)> = Vec::new();
    let mut failures = Vec::new();
    for r in runs {
        let s = r.store;
        rows.push((
            format!("tick_ms {s} ({} workspaces, {} due)", r.workspaces, r.due),
            r.tick_ms,
            "ms",
            "bar",
            Some(BAR_MS),
        ));
        rows.push((
            format!("queued in that tick {s}"),
            r.queued as f64,
            "builds",
            "due workspaces",
            Some(due as f64),
        ));
        rows.push((
            format!("pending autostop builds in the store {s}"),
            r.pending_autostop as f64,
            "builds",
            "due workspaces",
            Some(due as f64),
        ));
        rows.push((
            format!("workspaces {s}"),
            r.workspaces as f64,
            "workspaces",
            "-",
            None,
        ));
        if let Some(ms) = r.idle_tick_ms {
            rows.push((
                format!("next tick, nothing due, {s}"),
                ms,
                "ms",
                "bar",
                Some(BAR_MS),
            ));
        }
        if r.tick_ms >= BAR_MS {
            failures.push(format!("{s}: the tick took {:.0} ms (bar 1 s)", r.tick_ms));
        }
        if r.queued as usize != due
            || r.pending_autostop as usize != due
            || r.on_due as usize != due
        {
            failures.push(format!(
                "{s}: {due} due, the tick queued {} (examined {}), the store holds {} pending autostop builds, {} of them on due workspaces",
                r.queued, r.examined, r.pending_autostop, r.on_due
            ));
        }
        if r.requeued > 0 {
            failures.push(format!(
                "{s}: the next tick queued {} more builds",
                r.requeued
            ));
        }
    }
    let seeds: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {:.1} s", r.store, r.seed_s))
        .collect();
    let title = format!(
        "bench schedule (issue 15), {}\n\nMachine: {}. One `outpost server` (release, `--provisioner-daemons 0`, `--schedule-interval {INTERVAL}`) per store; {count} running workspaces (a third with three builds; an agent and a spent bootstrap token per start) seeded through the store's CLI ({}), {due} of them past their deadline; tick_ms is the `elapsed_ms` of the server's first `schedule tick` log line.",
        date(),
        machine(),
        seeds.join(", ")
    );
    let rows_ref: Vec<(&str, f64, &str, &str, Option<f64>)> = rows
        .iter()
        .map(|(m, v, u, a, av)| (m.as_str(), *v, *u, *a, *av))
        .collect();
    write_results("schedule", &title, &rows_ref)?;
    if !failures.is_empty() {
        bail!("bench schedule: {}", failures.join("; "));
    }
    eprintln!("bar: a tick under 1 s with every due build queued: met");
    Ok(())
}
