//! Test harness: starts the real `outpost` server (SQLite or a fresh PostgreSQL database) in a
//! temp dir, runs the real CLI against it, and cleans up its agents.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub type R<T = ()> = anyhow::Result<T>;

pub use crate::procs::*;

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        outpost_common::tls::install_provider();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// target/debug (or wherever this test binary was built), holding `outpost` and `outpost-agent`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in ["outpost", "outpost-agent"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run `cargo build --bins` first (cargo xtask ci does)",
            dir.join(b).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh PostgreSQL database, or None (with the reason printed) when PostgreSQL is not
/// reachable and OUTPOST_REQUIRE_POSTGRES is not set.
pub fn postgres() -> Option<Backend> {
    let admin = std::env::var("OUTPOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let name = format!("outpost_it_{}", uuid_like());
    let res: Result<(), sqlx::Error> = rt().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await?;
        Ok(())
    });
    match res {
        Ok(()) => {
            let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
            Some(Backend::Postgres(format!("{base}/{name}")))
        }
        Err(e) => {
            if std::env::var("OUTPOST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("PostgreSQL is required (OUTPOST_REQUIRE_POSTGRES=1) but {admin} is not usable: {e}");
            }
            eprintln!("SKIPPED (PostgreSQL): {admin} is not usable: {e}. Set OUTPOST_TEST_POSTGRES_URL or start PostgreSQL; .ci/run does.");
            None
        }
    }
}

/// A new, empty database of the same kind as `backend` (a dropped server drops its
/// PostgreSQL database).
pub fn fresh(backend: &Backend) -> Backend {
    match backend {
        Backend::Sqlite => Backend::Sqlite,
        Backend::Postgres(_) => postgres().unwrap_or(Backend::Sqlite),
    }
}

pub fn uuid_like() -> String {
    let mut b = [0u8; 8];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, x) in b.iter_mut().enumerate() {
        *x = ((t >> (i * 8)) as u8) ^ (std::process::id() as u8).wrapping_mul(i as u8 + 1);
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{}{n}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Runs `body` against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() -> $crate::harness::R {
                super::$name($crate::harness::Backend::Sqlite)
            }
            #[test]
            fn postgres() -> $crate::harness::R {
                match $crate::harness::postgres() {
                    Some(b) => super::$name(b),
                    None => Ok(()),
                }
            }
        }
    };
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub url: String,
    pub agent_url: String,
    /// Where the agent listener is bound (`agent_url` may name a balancer in front of it).
    pub agent_listen: String,
    child: Option<Child>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// The address the agent API listens on (127.0.0.1, or the Docker bridge's gateway).
    agent_host: String,
    listen: Option<(String, String)>,
    /// Another server's data dir this one serves too (`--shared-data-dir`).
    data_dir: Option<PathBuf>,
}

/// How to start a server beyond the defaults.
#[derive(Default)]
pub struct Opts<'a> {
    pub extra: &'a [&'a str],
    /// Environment of the server process (secrets that must not reach workspaces, say).
    pub env: &'a [(&'a str, &'a str)],
    /// Listen for agents on this address instead of 127.0.0.1 (containers reach the host
    /// through the Docker bridge's gateway).
    pub agent_host: Option<String>,
    /// The store already has its users (a second server on the same PostgreSQL): no sign-in.
    pub joins_existing: bool,
    /// Serve this data dir (another server's, with `--shared-data-dir`) instead of one of
    /// its own.
    pub data_dir: Option<PathBuf>,
}

impl Server {
    pub fn start(backend: Backend) -> R<Server> {
        Self::start_with(backend, &[])
    }

    /// Starts a server with extra flags and signs in the first admin (`admin`).
    pub fn start_with(backend: Backend, extra: &[&str]) -> R<Server> {
        Self::start_opts(
            backend,
            Opts {
                extra,
                ..Default::default()
            },
        )
    }

    pub fn start_opts(backend: Backend, opts: Opts) -> R<Server> {
        let extra = opts.extra;
        let dir = tempfile::tempdir()?;
        // Workspace users (the server runs as root in CI) pass through to their homes.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )?;
        let mut s = Server {
            dir,
            backend,
            url: String::new(),
            agent_url: String::new(),
            agent_listen: String::new(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: opts
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            agent_host: opts.agent_host.unwrap_or_else(|| "127.0.0.1".into()),
            listen: None,
            data_dir: opts.data_dir,
        };
        s.spawn()?;
        if opts.joins_existing {
            return Ok(s);
        }
        let token = std::fs::read_to_string(s.data().join("setup-token"))?;
        let out = s.cli_stdin(
            &[
                "login",
                &s.url.clone(),
                "--first-user",
                "--username",
                "admin",
                "--password-stdin",
                "--setup-token",
                token.trim(),
            ],
            "admin-password\n",
        )?;
        assert!(
            out.status.success(),
            "first-user login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(s)
    }

    pub fn data(&self) -> PathBuf {
        match &self.data_dir {
            Some(d) => d.clone(),
            None => self.dir.path().join("data"),
        }
    }

    /// Where the server's local provisioner keeps workspaces (`--workspaces-dir`).
    pub fn workspaces(&self) -> PathBuf {
        self.dir.path().join("workspaces")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("cli")
    }

    /// Waits for `/readyz` to say the store answers and is migrated (a server with no daemons
    /// of its own is not ready for builds until one connects, which tests do after this).
    fn wait_ready(&mut self, deadline: Instant) -> R {
        loop {
            if let Ok((_, v)) = http("GET", &format!("{}/readyz", self.url), None, None) {
                let ok = |c: &str| v["checks"][c]["ok"] == true;
                if ok("store") && ok("migrations") {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    anyhow::bail!("server exited with {st}: {}", self.log());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "server not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self) -> R {
        let (api, agent) = self
            .listen
            .clone()
            .unwrap_or_else(|| ("127.0.0.1:0".into(), format!("{}:0", self.agent_host)));
        let _ = std::fs::remove_file(self.data().join("server.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        let mut cmd = Command::new(bin("outpost"));
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data())
            .arg("--workspaces-dir")
            .arg(self.workspaces())
            .args(["--listen", &api, "--agent-listen", &agent])
            .args([
                "--heartbeat-secs",
                "1",
                "--job-lease-secs",
                "3",
                "--stop-grace-secs",
                "5",
            ])
            .args(&self.extra)
            .envs(self.env.iter().cloned())
            .env("OUTPOST_LOG", "info,outpost_control=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Backend::Postgres(url) = &self.backend {
            cmd.args(["--postgres-url", url]);
        }
        self.child = Some(cmd.spawn()?);
        let info = self.data().join("server.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(bytes) = std::fs::read(&info) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    self.url = v["api_url"].as_str().unwrap_or_default().to_string();
                    self.agent_url = v["agent_url"].as_str().unwrap_or_default().to_string();
                    self.agent_listen = v["agent_listen"].as_str().unwrap_or_default().to_string();
                    break;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    anyhow::bail!("server exited with {st}: {}", self.log());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_ready(deadline)?;
        let port = |u: &str| u.rsplit(':').next().unwrap_or("0").to_string();
        self.listen = Some((
            format!("127.0.0.1:{}", port(&self.url)),
            format!("{}:{}", self.agent_host, port(&self.agent_listen)),
        ));
        Ok(())
    }

    /// The server's pid (for tests that check a workspace cannot signal it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (up to `within`) for the server to exit; its exit status and how
    /// long that took.
    pub fn terminate(&mut self, within: Duration) -> R<(std::process::ExitStatus, Duration)> {
        let mut c = self
            .child
            .take()
            .ok_or_else(|| anyhow::anyhow!("not running"))?;
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok((st, t.elapsed()));
            }
            if t.elapsed() > within {
                let _ = c.kill();
                let _ = c.wait();
                anyhow::bail!("the server did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again (after [`Server::terminate`]) on the same data dir and ports.
    pub fn start_again(&mut self) -> R {
        self.spawn()
    }

    /// Sets (or with `None` removes) an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts the server again on the same data dir, database and ports.
    pub fn restart(&mut self) -> R {
        self.kill();
        self.spawn()
    }

    pub fn cli(&self, args: &[&str]) -> R<Output> {
        self.cli_stdin(args, "")
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> R<Output> {
        let mut c = Command::new(bin("outpost"));
        c.args(args)
            .env("OUTPOST_CONFIG_DIR", self.config_dir())
            .env_remove("OUTPOST_URL")
            .env_remove("OUTPOST_TOKEN");
        run_with_stdin(c, stdin)
    }

    /// Runs the CLI, requires success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> R<String> {
        let out = self.cli(args)?;
        anyhow::ensure!(
            out.status.success(),
            "`outpost {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn json(&self, args: &[&str]) -> R<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.ok(&a)?;
        Ok(serde_json::from_str(&s)?)
    }

    pub fn workspace(&self, name: &str) -> R<Value> {
        self.json(&["show", name])
    }

    pub fn status(&self, name: &str) -> R<String> {
        Ok(self.workspace(name)?["status"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The admin's saved API token.
    pub fn token(&self) -> R<String> {
        let v: Value =
            serde_json::from_slice(&std::fs::read(self.config_dir().join("session.json"))?)?;
        Ok(v["token"].as_str().unwrap_or_default().to_string())
    }

    /// Polls the workspace until `pred` holds, recording every status seen.
    pub fn wait_for(
        &self,
        name: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> R<(Value, Vec<String>)> {
        let deadline = Instant::now() + within;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let w = self.workspace(name)?;
            let st = w["status"].as_str().unwrap_or_default().to_string();
            if seen.last() != Some(&st) {
                seen.push(st);
            }
            if pred(&w) {
                return Ok((w, seen));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out; statuses seen: {seen:?}; last: {w:#}\nserver log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Row counts and contents that a rejected request must not change.
    pub fn db_snapshot(&self) -> R<String> {
        let mut out = String::new();
        for (t, cols, order) in [
            (
                "users",
                "id, username, is_admin, roles, suspended_at, deleted_at, password_hash, quiet_hours, dotfiles_uri",
                "id",
            ),
            ("api_tokens", "id, revoked_at, expires_at", "id"),
            ("user_ssh_keys", "id, user_id, fingerprint", "id"),
            (
                "templates",
                "id, name, active_version_id, schedule, organization_id",
                "id",
            ),
            ("template_versions", "id, version", "id"),
            (
                "workspaces",
                "id, name, parameters, deleted, autostart, autostop_ms, dormant_at",
                "id",
            ),
            ("workspace_builds", "id, number, transition", "id"),
            ("provisioner_jobs", "id, status", "id"),
            ("agents", "id, revoked_at", "id"),
            ("bootstrap_tokens", "id, used_at", "id"),
            ("organizations", "id, name", "id"),
            (
                "organization_members",
                "organization_id, user_id",
                "organization_id, user_id",
            ),
            (
                "user_groups",
                "id, organization_id, name, quota_budget",
                "id",
            ),
            ("group_members", "group_id, user_id", "group_id, user_id"),
            (
                "template_groups",
                "template_id, group_id",
                "template_id, group_id",
            ),
        ] {
            let rows = self.db_cells(&format!("SELECT {cols} FROM {t} ORDER BY {order}"))?;
            out.push_str(&format!("{t}: {}\n", rows.len()));
            for r in rows {
                let vals: Vec<String> = r
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect();
                out.push_str(&format!("  {}\n", vals.join("|")));
            }
        }
        // Quotas live in settings (other settings are the server's own: keys, the CA).
        for r in
            self.db_cells("SELECT key, value FROM settings WHERE key LIKE 'quota.%' ORDER BY key")?
        {
            let vals: Vec<String> = r.into_iter().map(Option::unwrap_or_default).collect();
            out.push_str(&format!("settings: {}\n", vals.join("=")));
        }
        Ok(out)
    }

    /// Rows of a table, as strings (NULL as ""), for assertions on what the store holds.
    pub fn db_rows(&self, sql: &str) -> R<Vec<Vec<String>>> {
        Ok(self
            .db_cells(sql)?
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    /// Rows of a query against this server's store; each cell as text, None for NULL.
    fn db_cells(&self, sql: &str) -> R<Vec<Vec<Option<String>>>> {
        let url = match &self.backend {
            Backend::Sqlite => format!("sqlite://{}", self.data().join("outpost.db").display()),
            Backend::Postgres(u) => u.clone(),
        };
        let sql = sql.to_string();
        rt().block_on(async move {
            use sqlx::{Connection, Row};
            sqlx::any::install_default_drivers();
            let mut c = sqlx::AnyConnection::connect(&url).await?;
            let rows = sqlx::query(&sql).fetch_all(&mut c).await?;
            let out = rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .or_else(|_| {
                                    r.try_get::<Option<i64>, _>(i)
                                        .map(|v| v.map(|n| n.to_string()))
                                })
                                .unwrap_or_else(|_| Some("?".into()))
                        })
                        .collect()
                })
                .collect();
            c.close().await?;
            Ok::<_, anyhow::Error>(out)
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // What this server started for its workspaces: agents (in sessions of their own, so
        // they outlive control) and everything they started, orphans included. All by pid.
        for pid in self.workspace_pids() {
            signal(pid, libc::SIGKILL);
        }
        // The Unix users and Docker objects it made for workspaces it did not delete.
        for id in self.workspace_ids() {
            remove_workspace_leftovers(&id);
        }
        if let Backend::Postgres(url) = &self.backend {
            let admin =
                std::env::var("OUTPOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.into());
            if let Some((_, db)) = url.rsplit_once('/') {
                let db = db.to_string();
                let _ = rt().block_on(async move {
                    use sqlx::Connection;
                    let mut c = sqlx::PgConnection::connect(&admin).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .execute(&mut c)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                });
            }
        }
    }
}

impl Server {
    /// The ids of every workspace this server made, deleted ones included (the store keeps
    /// them), and of the workspace directories its local provisioner holds.
    fn workspace_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .db_rows("SELECT id FROM workspaces")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        if let Ok(rd) = std::fs::read_dir(self.workspaces()) {
            ids.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every live process this server started for its workspaces: each agent (its pid file)
    /// and every process carrying a workspace's `OUTPOST_WORKSPACE_ID`, which the agent gives
    /// to all it starts (sessions, scripts, and what they leave behind).
    pub fn workspace_pids(&self) -> Vec<i32> {
        let ids = self.workspace_ids();
        let mut pids: Vec<i32> = ids
            .iter()
            .filter_map(|id| {
                std::fs::read_to_string(self.workspaces().join(id).join("agent.pid"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .filter(|p| alive(*p))
            .collect();
        for id in &ids {
            pids.extend(processes_of_workspace(id));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// Removes what a test server's workspace `id` may have left on the machine: its Unix user (only
/// one whose comment names the id, as the provisioner makes them) and Docker containers and
/// volumes labelled with the id.
fn remove_workspace_leftovers(id: &str) {
    let hex: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect();
    let name = format!("ws-{}", hex.to_ascii_lowercase());
    if let Ok(Some(u)) = nix::unistd::User::from_name(&name) {
        if u.gecos.to_string_lossy() == format!("outpost workspace {id}") {
            let _ = Command::new("userdel").arg(&name).output();
        }
    }
    let filter = format!("label=outpost.workspace_id={id}");
    for (list, rm) in [
        (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
        (
            vec!["volume", "ls", "-q", "--filter", &filter],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let Ok(o) = Command::new("docker").args(&list).output() else {
            return;
        };
        let names: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !names.is_empty() {
            let _ = Command::new("docker").args(&rm).args(&names).output();
        }
    }
}

/// A raw HTTP call: (status, JSON body or Null).
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> R<(u16, Value)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let url = url.to_string();
    let token = token.map(str::to_string);
    let body = body.map(|(ct, b)| (ct.to_string(), b.to_vec()));
    rt().block_on(async move {
        let mut rb = reqwest::Client::new().request(method, &url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some((ct, b)) = body {
            rb = rb.header("content-type", ct).body(b);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    })
}

pub fn post_json(url: &str, token: Option<&str>, body: &Value) -> R<(u16, Value)> {
    http(
        "POST",
        url,
        token,
        Some(("application/json", body.to_string().as_bytes())),
    )
}

/// A TCP port free on loopback right now.
pub fn free_port() -> R<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A process's resident memory (VmRSS) in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Pushes a local template `name` whose template.toml is `[provisioner] type = "local"` + `toml`.
pub fn push_local_template(s: &Server, name: &str, toml: &str) -> R {
    let dir = s.dir.path().join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        format!("[provisioner]\ntype = \"local\"\n{toml}"),
    )?;
    s.ok(&["templates", "push", dir.to_str().unwrap_or_default()])?;
    Ok(())
}

/// Retries `f` until it returns Some (or 20 s pass): for effects that land asynchronously
/// (audit events are written in batches).
pub fn eventually<T>(mut f: impl FnMut() -> R<Option<T>>) -> R<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "condition not reached within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `c` with `stdin` written to it, collecting its output.
pub fn run_with_stdin(mut c: Command, stdin: &str) -> R<Output> {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

pub use crate::agent_api::*;
pub use crate::fixtures::*;
