//! The store: the only code that writes SQL.
//!
//! One schema in two dialects (SQLite, the embedded default, and PostgreSQL), reached through
//! sqlx's `Any` driver at runtime. Integers are 64-bit everywhere, flags are 0/1 integers and
//! timestamps are Unix milliseconds, so one set of queries serves both dialects; the few places that
//! differ (job acquisition) branch on [`Dialect`].

use std::collections::BTreeMap;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, FromRow, Row};

mod agent_logs;
mod agents;
mod audit;
mod cluster;
mod jobs;
mod keys;
mod provisioners;
mod schedule;
mod stats;
mod teams;
mod templates;
pub mod timed;
pub use stats::{StatsSampleRow, STATS_KEEP_MS};
mod users;
mod workspaces;
pub mod write_turn;

pub use agents::{AgentChange, AgentRow};
pub use audit::{AuditEvent, AuditFilter};
pub use cluster::{LeaderLock, ReplicaRow, Turn};
pub use jobs::{JobRow, LogRow};
pub use keys::SshKeyRow;
pub use provisioners::{DaemonRow, JobScope, ProvisionerKeyRow};
pub use schedule::{AutoBuild, AutoQueued, DueRow};
pub use teams::GroupRow;
pub use templates::{TemplateRow, TemplateVersionRow};
pub use users::{TokenRow, UserRow};
pub use workspaces::{BuildRow, ResourceRow, ScheduleTimes, WorkspaceRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How long a query waits for one of the pool's connections before it fails as busy
/// ([`StoreError::is_busy`]; the API answers 503 with Retry-After). Shorter than the agents'
/// request timeout (40 s) less a held poll (25 s): under overload a caller hears "busy"
/// and backs off, instead of giving up on an answer control is still working on, and
/// retrying into the same queue.
pub const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl StoreError {
    /// Every connection of the pool stayed busy for [`STORE_WAIT`].
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::PoolTimedOut))
    }

    /// PostgreSQL refused a text value (a NUL character, which its `text` cannot hold, or
    /// bytes its encoding cannot take): the caller's input, not a fault of ours.
    pub fn is_invalid_text(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("22021") | Some("22P05"))
            }
            _ => false,
        }
    }
}

/// A PostgreSQL connection unused this long is pinged before a query is given it.
const PING_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where `/metrics`' scans of every agent run: on SQLite a read-only connection of its
    /// own (WAL lets it read beside the writer), so that a scrape at 50,000 agents (seconds)
    /// does not hold the one connection every request waits on; on PostgreSQL the pool.
    scans: AnyPool,
    dialect: Dialect,
    /// The database's URL: replicas open connections of their own for `LISTEN` and the
    /// leader's advisory lock.
    url: String,
    /// How long queries take, by store module (`/metrics`).
    times: timed::QueryTimes,
    /// Replicas on one SQLite data dir: their writes take turns (write_turn.rs).
    turns: Option<write_turn::WriteTurns>,
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("schema_sqlite.sql")),
    (2, include_str!("m2_sqlite.sql")),
    (3, include_str!("m3_sqlite.sql")),
    (4, include_str!("m4_sqlite.sql")),
    (5, include_str!("m5_sqlite.sql")),
    (6, include_str!("m6_sqlite.sql")),
    (7, include_str!("m7_sqlite.sql")),
    (8, include_str!("m8_sqlite.sql")),
    (9, include_str!("m9_sqlite.sql")),
    // Stopping a workspace drops its unused bootstrap tokens; control keeps spent ones, one
    // per start, so that DELETE scanned the whole table (`cargo xtask bench schedule`).
    (10, include_str!("m10_sqlite.sql")),
    (11, include_str!("m11_sqlite.sql")),
    (12, include_str!("m12_sqlite.sql")),
    // Deleted users and the account's dotfiles repository.
    (13, include_str!("m13_sqlite.sql")),
    // The audit log's `target` (what an event acted on) and indexes to filter by it and actor.
    (14, include_str!("m14_sqlite.sql")),
    // Identities at an OpenID Connect provider (issuer + subject) linked to users.
    (15, include_str!("m15_sqlite.sql")),
    // Control replicas on one database (each registers itself and heartbeats).
    (16, include_str!("m16_sqlite.sql")),
    // Which replica holds an agent's relay tunnel (the others carry streams through it).
    (17, include_str!("m17_sqlite.sql")),
    // Provisioner keys (scoped, tagged), the daemons seen, the tags a template version needs.
    (18, include_str!("m18_sqlite.sql")),
    // A job carries its template version's tags and its template, so taking one reads one
    // table (`cargo xtask bench agents --replicas 3`: the join took 13 ms per take at 4,000
    // pending jobs on a fresh database's statistics).
    (19, include_str!("m19_sqlite.sql")),
    (20, include_str!("m20_sqlite.sql")),
    // What every replica reads once a second instead of two queries per agent poll
    // (`server/poll_sweep.rs`): the agents with a command not yet delivered, the ones revoked lately.
    (21, include_str!("m21_sqlite.sql")),
    // Lookups by build (a job's agent, a build's resources) and by user (tokens, organizations)
    // had no index: every workspace creation scanned all agents and all resources
    // (`cargo xtask bench agents --count 50000`: 1.3 billion rows read making 50,000).
    (22, include_str!("m22_sqlite.sql")),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("schema_postgres.sql")),
    (2, include_str!("m2_postgres.sql")),
    (3, include_str!("m3_postgres.sql")),
    (4, include_str!("m4_postgres.sql")),
    (5, include_str!("m5_postgres.sql")),
    (6, include_str!("m6_postgres.sql")),
    (7, include_str!("m7_postgres.sql")),
    (8, include_str!("m8_postgres.sql")),
    (9, include_str!("m9_postgres.sql")),
    (10, include_str!("m10_postgres.sql")),
    (11, include_str!("m11_postgres.sql")),
    (12, include_str!("m12_postgres.sql")),
    (13, include_str!("m13_postgres.sql")),
    (14, include_str!("m14_postgres.sql")),
    (15, include_str!("m15_postgres.sql")),
    (16, include_str!("m16_postgres.sql")),
    (17, include_str!("m17_postgres.sql")),
    (18, include_str!("m18_postgres.sql")),
    (19, include_str!("m19_postgres.sql")),
    (20, include_str!("m20_postgres.sql")),
    (21, include_str!("m21_postgres.sql")),
    (22, include_str!("m22_postgres.sql")),
];

/// A consistent copy of the SQLite database at `db` in a new file `out`, while a server may be
/// using it (`VACUUM INTO` reads one snapshot through a read-only connection of its own).
pub async fn sqlite_snapshot(db: &std::path::Path, out: &std::path::Path) -> Result<()> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
    sqlx::query("VACUUM INTO $1")
        .bind(out.display().to_string())
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(())
}

/// What `/metrics` reads from the store at scrape time.
#[derive(Debug, Default)]
pub struct MetricCounts {
    /// (status, template, count) of the workspaces not deleted.
    pub workspaces: Vec<(String, String, i64)>,
    /// (lifecycle, count) of the live agents.
    pub agents: Vec<(String, i64)>,
    /// (status, count) of the jobs pending or running.
    pub jobs: Vec<(String, i64)>,
    /// How long ago the stalest live agent was heard from (0 with none).
    pub heartbeat_lag_ms: i64,
    /// (OWNER/NAME, the statistics of its last heartbeat) of each live agent.
    pub agent_stats: Vec<(String, String)>,
}

/// The version the last migration brings a database to (both dialects have the same list).
pub const LATEST_MIGRATION: i64 = MIGRATIONS_POSTGRES[MIGRATIONS_POSTGRES.len() - 1].0;

/// How long after its first use a bootstrap token can be spent again by the same key.
pub const BOOTSTRAP_RETRY_MS: i64 = 120_000;

static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Control's clock: wall time plus an offset that tests can move (`--test-clock-file`).
pub fn now_ms() -> i64 {
    outpost_common::clock::now_ms() + CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Moves control's clock (tests only; the server reads it from `--test-clock-file`).
pub fn set_clock_offset_ms(offset: i64) {
    CLOCK_OFFSET_MS.store(offset, std::sync::atomic::Ordering::Relaxed);
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn flag(r: &AnyRow, col: &str) -> Result<bool> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn b(v: bool) -> i64 {
    i64::from(v)
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        let pool = match dialect {
            // SQLite has a single writer: one connection avoids SQLITE_BUSY between our own
            // connections; long polls wait on in-memory notifications, not on the database.
            Dialect::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(STORE_WAIT)
                    .acquire_slow_threshold(STORE_WAIT / 2)
                    // SQLite's "ping" is a round trip to the connection's worker thread, and
                    // an embedded file does not go away.
                    .test_before_acquire(false)
                    .test_after_release(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Dialect::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(STORE_WAIT)
                    .acquire_slow_threshold(STORE_WAIT / 2)
                    // One round trip per query, not three: sqlx pings a connection when it
                    // is taken and again when it is given back, and the connection stays out
                    // of the pool until the releasing task has run again and the answer has
                    // come (at 50,000 agents the replicas waited seconds for connections
                    // PostgreSQL showed idle). Given back, a connection is only flushed
                    // (what a dropped query or transaction left outstanding is read, and a
                    // connection that fails at it is closed: vendor/README.md); taken after
                    // `PING_IDLE` unused, it is pinged first, so one that died idle (the
                    // database restarted) is replaced before a request sees it.
                    .test_before_acquire(false)
                    .test_after_release(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_IDLE {
                                sqlx::Connection::ping(conn).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        let scans = match dialect {
            Dialect::Sqlite => {
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&pool)
                    .await?;
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(STORE_WAIT)
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA query_only = ON")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_lazy(url)?
            }
            Dialect::Postgres => pool.clone(),
        };
        let store = Store {
            pool,
            scans,
            dialect,
            url: url.to_string(),
            times: timed::query_times(),
            turns: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction. On SQLite it takes the write lock first (`BEGIN IMMEDIATE`, waiting up
    /// to the busy timeout): a deferred transaction that reads and then writes fails at once
    /// (`SQLITE_BUSY`) when another server on a shared data dir wrote in between.
    /// With replicas on the data dir, it first waits for this process's write turn.
    async fn begin(&self) -> Result<write_turn::Tx> {
        Ok(match self.dialect {
            Dialect::Sqlite => {
                let (conn, turn) =
                    write_turn::connection_then_turn(&self.pool, self.turns.as_ref()).await?;
                let tx = sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into())).await?;
                write_turn::Tx::new(tx, turn)
            }
            Dialect::Postgres => write_turn::Tx::new(self.pool.begin().await?, None),
        })
    }

    /// Replicas on one SQLite data dir (`dir`): from now on this store's writes wait for their
    /// turn among the replicas' (write_turn.rs).
    pub fn take_write_turns(mut self, dir: &std::path::Path) -> std::io::Result<Store> {
        if self.dialect == Dialect::Sqlite {
            self.turns = Some(write_turn::WriteTurns::new(dir)?);
        }
        Ok(self)
    }

    /// The pool, each query timed under the calling module's name.
    #[track_caller]
    fn db(&self) -> timed::Timed<'_> {
        timed::Timed::new(&self.pool, &self.times, self.turns.as_ref())
    }

    /// The connection for reads that scan every agent (`/metrics`): see [`Store::scans`].
    fn scans(&self) -> timed::Timed<'_> {
        timed::Timed::new(&self.scans, &self.times, None)
    }

    /// Query durations by store module, for `/metrics`.
    pub fn query_times(&self) -> &timed::QueryTimes {
        &self.times
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Counts for `/metrics`, each by a bounded label (status, template, lifecycle).
    pub async fn metric_counts(&self) -> Result<MetricCounts> {
        let mut c = MetricCounts::default();
        for r in sqlx::query(
            "SELECT CASE \
               WHEN j.status IN ('pending', 'running') THEN CASE b.transition WHEN 'start' THEN 'starting' WHEN 'stop' THEN 'stopping' ELSE 'deleting' END \
               WHEN j.status = 'succeeded' THEN CASE b.transition WHEN 'start' THEN 'running' WHEN 'stop' THEN 'stopped' ELSE 'deleted' END \
               WHEN j.status IN ('canceling', 'canceled') THEN j.status \
               ELSE 'failed' END AS status, t.name AS template, COUNT(*) AS n \
             FROM workspaces w JOIN templates t ON t.id = w.template_id \
             JOIN workspace_builds b ON b.workspace_id = w.id \
               AND b.number = (SELECT MAX(b2.number) FROM workspace_builds b2 WHERE b2.workspace_id = w.id) \
             JOIN provisioner_jobs j ON j.build_id = b.id \
             WHERE w.deleted = 0 GROUP BY 1, 2",
        )
        .fetch_all(self.scans())
        .await?
        {
            c.workspaces
                .push((r.try_get("status")?, r.try_get("template")?, r.try_get("n")?));
        }
        for r in sqlx::query(
            "SELECT lifecycle, COUNT(*) AS n FROM agents WHERE revoked_at IS NULL AND first_connected_at IS NOT NULL GROUP BY lifecycle",
        )
        .fetch_all(self.scans())
        .await?
        {
            c.agents.push((r.try_get("lifecycle")?, r.try_get("n")?));
        }
        for r in sqlx::query(
            "SELECT status, COUNT(*) AS n FROM provisioner_jobs WHERE status IN ('pending', 'running') GROUP BY status",
        )
        .fetch_all(self.scans())
        .await?
        {
            c.jobs.push((r.try_get("status")?, r.try_get("n")?));
        }
        let oldest: Option<i64> = sqlx::query(
            "SELECT MIN(last_seen_at) AS oldest FROM agents WHERE revoked_at IS NULL AND last_seen_at IS NOT NULL",
        )
        .fetch_one(self.scans())
        .await?
        .try_get("oldest")?;
        c.heartbeat_lag_ms = oldest.map_or(0, |o| (now_ms() - o).max(0));
        for r in sqlx::query(
            "SELECT u.username, w.name, a.stats FROM agents a \
             JOIN workspaces w ON w.id = a.workspace_id JOIN users u ON u.id = w.owner_id \
             WHERE a.revoked_at IS NULL AND a.stats IS NOT NULL AND w.deleted = 0",
        )
        .fetch_all(self.scans())
        .await?
        {
            let (owner, name): (String, String) = (r.try_get("username")?, r.try_get("name")?);
            c.agent_stats
                .push((format!("{owner}/{name}"), r.try_get("stats")?));
        }
        Ok(c)
    }

    /// The newest migration applied to the database.
    pub async fn schema_version(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(self.db())
            .await?;
        Ok(r.try_get::<i64, _>("v")?)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(self.db())
        .await?;
        let migrations = match self.dialect {
            Dialect::Sqlite => MIGRATIONS_SQLITE,
            Dialect::Postgres => MIGRATIONS_POSTGRES,
        };
        for (version, sql) in migrations {
            let mut tx = self.begin().await?;
            if self.dialect == Dialect::Postgres {
                // Several servers may start at once against one database.
                sqlx::query("SELECT pg_advisory_xact_lock(7001)")
                    .execute(&mut *tx)
                    .await?;
            }
            let done: Option<AnyRow> =
                sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Row counts of every table: lets tests show that rejected requests changed nothing.
    pub async fn table_counts(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for t in [
            "users",
            "api_tokens",
            "templates",
            "template_versions",
            "workspaces",
            "workspace_builds",
            "provisioner_jobs",
            "agents",
            "bootstrap_tokens",
        ] {
            let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {t}"))
                .fetch_one(self.db())
                .await?;
            out.insert(t.to_string(), row.try_get::<i64, _>("n")?);
        }
        Ok(out)
    }

    // ------------------------------------------------------------ settings

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn delete_setting(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(self.db())
            .await?;
        Ok(())
    }
}

fn new_id_short() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

#[allow(clippy::too_many_arguments)]
async fn insert_build(
    tx: &mut write_turn::Tx,
    workspace_id: &str,
    number: i64,
    transition: &str,
    version_id: &str,
    then_start: bool,
    initiator: Option<&str>,
    provisioner: &str,
    reason: &str,
    now: i64,
) -> Result<Option<String>> {
    let build_id = new_id();
    // The unique (workspace_id, number) makes a concurrent second build a no-op here (and the
    // transaction stays usable, for the scheduler's batches).
    let res = sqlx::query(
        "INSERT INTO workspace_builds (id, workspace_id, number, transition, template_version_id, then_start, initiator_id, created_at, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (workspace_id, number) DO NOTHING",
    )
    .bind(&build_id)
    .bind(workspace_id)
    .bind(number)
    .bind(transition)
    .bind(version_id)
    .bind(b(then_start))
    .bind(initiator.map(str::to_string))
    .bind(now)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    if res.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO provisioner_jobs (id, build_id, provisioner, status, attempts, cancel_requested, created_at, provisioner_tags, template_id) \
         SELECT $1, $2, $3, 'pending', 0, 0, $4, v.provisioner_tags, v.template_id FROM template_versions v WHERE v.id = $5",
    )
    .bind(new_id())
    .bind(&build_id)
    .bind(provisioner)
    .bind(now)
    .bind(version_id)
    .execute(&mut **tx)
    .await?;
    // No deadline while a build runs: a start build sets one when it succeeds.
    sqlx::query("UPDATE workspaces SET deadline = NULL, max_deadline = NULL WHERE id = $1")
        .bind(workspace_id)
        .execute(&mut **tx)
        .await?;
    if reason == "initiator" && initiator.is_some() {
        // A person asking for a build is using the workspace (dormancy counts from it).
        sqlx::query("UPDATE workspaces SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(workspace_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(Some(build_id))
}

fn unique_to_conflict(e: sqlx::Error, msg: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(msg.to_string());
        }
    }
    StoreError::Db(e)
}

#[cfg(test)]
mod tests;
