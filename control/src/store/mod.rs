//! The store: the only code that writes SQL.
//!
//! One schema in two dialects (SQLite, the embedded default, and PostgreSQL), reached through
//! sqlx's `Any` driver at runtime. Integers are 64-bit everywhere, flags are 0/1 integers and
//! timestamps are Unix milliseconds, so one set of queries serves both dialects; the few places that
//! differ (job acquisition) branch on [`Dialect`].

use std::collections::BTreeMap;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod rows;
pub use rows::*;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("schema_sqlite.sql")),
    (2, include_str!("m2_sqlite.sql")),
    (3, include_str!("m3_sqlite.sql")),
    (4, include_str!("m4_sqlite.sql")),
    (5, include_str!("m5_sqlite.sql")),
    (6, include_str!("m6_sqlite.sql")),
    (7, include_str!("m7_sqlite.sql")),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("schema_postgres.sql")),
    (2, include_str!("m2_postgres.sql")),
    (3, include_str!("m3_postgres.sql")),
    (4, include_str!("m4_postgres.sql")),
    (5, include_str!("m5_postgres.sql")),
    (6, include_str!("m6_postgres.sql")),
    (7, include_str!("m7_postgres.sql")),
];

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
                    .connect(url)
                    .await?
            }
        };
        if dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let migrations = match self.dialect {
            Dialect::Sqlite => MIGRATIONS_SQLITE,
            Dialect::Postgres => MIGRATIONS_POSTGRES,
        };
        for (version, sql) in migrations {
            let mut tx = self.pool.begin().await?;
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
                .fetch_one(&self.pool)
                .await?;
            out.insert(t.to_string(), row.try_get::<i64, _>("n")?);
        }
        Ok(out)
    }

    // ------------------------------------------------------------ settings

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_setting(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ users and tokens

    pub async fn count_users(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user. With `only_if_first`, fails with Conflict unless there are no users yet
    /// (atomically: two concurrent setups cannot both win).
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        admin: bool,
        only_if_first: bool,
    ) -> Result<UserRow> {
        let id = new_id();
        let now = now_ms();
        let sql = if only_if_first {
            "INSERT INTO users (id, username, password_hash, is_admin, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM users)"
        } else {
            "INSERT INTO users (id, username, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4, $5)"
        };
        let res = sqlx::query(sql)
            .bind(&id)
            .bind(username)
            .bind(password_hash)
            .bind(b(admin))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| unique_to_conflict(e, &format!("user {username:?} already exists")))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict("the first user already exists".into()));
        }
        Ok(UserRow {
            id,
            username: username.to_string(),
            password_hash: password_hash.to_string(),
            admin,
            created_at: now,
        })
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| UserRow::from_row(&r)).transpose()
    }

    pub async fn create_token(
        &self,
        user_id: &str,
        name: &str,
        secret_hash: &str,
        expires_at: i64,
    ) -> Result<TokenRow> {
        let row = TokenRow {
            id: new_id_short(),
            user_id: user_id.to_string(),
            name: name.to_string(),
            secret_hash: secret_hash.to_string(),
            created_at: now_ms(),
            expires_at,
            last_used_at: None,
            revoked_at: None,
            scope: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.user_id)
        .bind(&row.name)
        .bind(&row.secret_hash)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(row)
    }

    /// The token and its user, whatever the token's state (the caller checks expiry/revocation).
    pub async fn token_with_user(&self, token_id: &str) -> Result<Option<(TokenRow, UserRow)>> {
        let row = sqlx::query(
            "SELECT t.id AS t_id, t.user_id AS t_user_id, t.name AS t_name, t.secret_hash AS t_secret_hash, \
                    t.created_at AS t_created_at, t.expires_at AS t_expires_at, t.last_used_at AS t_last_used_at, \
                    t.revoked_at AS t_revoked_at, t.scope AS t_scope, u.* \
             FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let t = TokenRow {
            id: r.try_get("t_id")?,
            user_id: r.try_get("t_user_id")?,
            name: r.try_get("t_name")?,
            secret_hash: r.try_get("t_secret_hash")?,
            created_at: r.try_get("t_created_at")?,
            expires_at: r.try_get("t_expires_at")?,
            last_used_at: r.try_get("t_last_used_at")?,
            revoked_at: r.try_get("t_revoked_at")?,
            scope: r.try_get("t_scope")?,
        };
        Ok(Some((t, UserRow::from_row(&r)?)))
    }

    /// Marks a token as scoped to a workspace (its own user's operations only: no admin rights,
    /// no new tokens).
    pub async fn scope_token(&self, token_id: &str, scope: &str) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET scope = $1 WHERE id = $2")
            .bind(scope)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn touch_token(&self, token_id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT * FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TokenRow::from_row).collect()
    }

    pub async fn revoke_token(&self, user_id: &str, token_id: &str) -> Result<()> {
        let res = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(token_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    // ------------------------------------------------------------ templates

    pub async fn template_by_name(&self, name: &str) -> Result<Option<TemplateRow>> {
        let row = sqlx::query(&format!("{TEMPLATE_SELECT} WHERE t.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| TemplateRow::from_row(&r)).transpose()
    }

    pub async fn list_templates(&self) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query(&format!("{TEMPLATE_SELECT} ORDER BY t.name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(TemplateRow::from_row).collect()
    }

    /// Adds an immutable version to template `name` (creating the template), optionally making
    /// it the active version. Returns the new version.
    pub async fn push_template_version(
        &self,
        name: &str,
        description: &str,
        manifest_json: &str,
        files_json: &str,
        activate: bool,
        created_by: Option<&str>,
    ) -> Result<TemplateVersionRow> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query("SELECT id FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let template_id: String = match existing {
            Some(r) => r.try_get("id")?,
            None => {
                let id = new_id();
                sqlx::query(
                    "INSERT INTO templates (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(name)
                .bind(description)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| unique_to_conflict(e, "template was created concurrently; retry"))?;
                id
            }
        };
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM template_versions WHERE template_id = $1",
        )
        .bind(&template_id)
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = row.try_get::<i64, _>("v")? + 1;
        let id = new_id();
        sqlx::query(
            "INSERT INTO template_versions (id, template_id, version, manifest, files, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&template_id)
        .bind(version)
        .bind(manifest_json)
        .bind(files_json)
        .bind(created_by.map(str::to_string))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_to_conflict(e, "a version was pushed concurrently; retry"))?;
        if activate {
            sqlx::query(
                "UPDATE templates SET active_version_id = $1, description = $2 WHERE id = $3",
            )
            .bind(&id)
            .bind(description)
            .bind(&template_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.template_version(&id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn template_version(&self, id: &str) -> Result<Option<TemplateVersionRow>> {
        let row = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| TemplateVersionRow::from_row(&r)).transpose()
    }

    pub async fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersionRow>> {
        let rows = sqlx::query(&format!(
            "{VERSION_SELECT} WHERE v.template_id = $1 ORDER BY v.version"
        ))
        .bind(template_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TemplateVersionRow::from_row).collect()
    }

    // ------------------------------------------------------------ workspaces and builds

    /// Creates a workspace and its first (start) build and job, atomically.
    pub async fn create_workspace(
        &self,
        owner_id: &str,
        name: &str,
        template_id: &str,
        version_id: &str,
        provisioner: &str,
        parameters_json: &str,
    ) -> Result<String> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workspaces (id, owner_id, name, template_id, parameters, provisioner_state, deleted, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'null', 0, $6)",
        )
        .bind(&id)
        .bind(owner_id)
        .bind(name)
        .bind(template_id)
        .bind(parameters_json)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_to_conflict(e, &format!("you already have a workspace named {name:?}")))?;
        insert_build(
            &mut tx,
            &id,
            1,
            "start",
            version_id,
            false,
            Some(owner_id),
            provisioner,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Queues a new build unless one is pending or running (Conflict), atomically.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_build(
        &self,
        workspace_id: &str,
        expected_latest: i64,
        transition: &str,
        version_id: &str,
        then_start: bool,
        initiator: Option<&str>,
        provisioner: &str,
        parameters_json: Option<&str>,
    ) -> Result<String> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(p) = parameters_json {
            sqlx::query("UPDATE workspaces SET parameters = $1 WHERE id = $2")
                .bind(p)
                .bind(workspace_id)
                .execute(&mut *tx)
                .await?;
        }
        // The unique (workspace_id, number) constraint makes a concurrent second build fail.
        let build_id = insert_build(
            &mut tx,
            workspace_id,
            expected_latest + 1,
            transition,
            version_id,
            then_start,
            initiator,
            provisioner,
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Db(e) => unique_to_conflict(e, "another build was queued at the same time"),
            e => e,
        })?;
        tx.commit().await?;
        Ok(build_id)
    }

    pub async fn workspace_by_name(
        &self,
        owner_id: &str,
        name: &str,
    ) -> Result<Option<WorkspaceRow>> {
        let row = sqlx::query(&format!(
            "{WORKSPACE_SELECT} WHERE w.owner_id = $1 AND w.name = $2 AND w.deleted = 0"
        ))
        .bind(owner_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| WorkspaceRow::from_row(&r)).transpose()
    }

    pub async fn workspace_by_id(&self, id: &str) -> Result<Option<WorkspaceRow>> {
        let row = sqlx::query(&format!("{WORKSPACE_SELECT} WHERE w.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| WorkspaceRow::from_row(&r)).transpose()
    }

    pub async fn list_workspaces(&self, owner_id: Option<&str>) -> Result<Vec<WorkspaceRow>> {
        let rows = match owner_id {
            Some(o) => {
                sqlx::query(&format!(
                    "{WORKSPACE_SELECT} WHERE w.owner_id = $1 AND w.deleted = 0 ORDER BY w.name"
                ))
                .bind(o)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{WORKSPACE_SELECT} WHERE w.deleted = 0 ORDER BY w.name"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(WorkspaceRow::from_row).collect()
    }

    pub async fn build(&self, build_id: &str) -> Result<Option<BuildRow>> {
        let row = sqlx::query(&format!("{BUILD_SELECT} WHERE b.id = $1"))
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| BuildRow::from_row(&r)).transpose()
    }

    pub async fn resources(&self, build_id: &str) -> Result<Vec<ResourceRow>> {
        let rows =
            sqlx::query("SELECT * FROM workspace_resources WHERE build_id = $1 ORDER BY name")
                .bind(build_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(ResourceRow::from_row).collect()
    }

    /// Cancels the workspace's latest build: a pending job is canceled at once, a running one
    /// becomes canceling until its provisioner stops.
    pub async fn cancel_job(&self, job_id: &str) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = 'canceled', cancel_requested = 1, completed_at = $1 \
             WHERE id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 1 {
            return Ok(true);
        }
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = 'canceling', cancel_requested = 1 WHERE id = $1 AND status = 'running'",
        )
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    // ------------------------------------------------------------ provisioner jobs

    /// Takes the oldest pending job for one of `provisioners`, leasing it to `daemon_id`.
    pub async fn acquire_job(
        &self,
        daemon_id: &str,
        provisioners: &[String],
        lease_ms: i64,
    ) -> Result<Option<String>> {
        let now = now_ms();
        // Provisioner names are validated identifiers, so they can be inlined as literals.
        let list = provisioners
            .iter()
            .filter(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(",");
        if list.is_empty() {
            return Ok(None);
        }
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE provisioner_jobs SET status = 'running', daemon_id = $1, lease_expires_at = $2, \
                 started_at = $3, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM provisioner_jobs WHERE status = 'pending' AND provisioner IN ({list}) \
                         ORDER BY created_at LIMIT 1{lock}) AND status = 'pending' \
             RETURNING id"
        );
        let row = sqlx::query(&sql)
            .bind(daemon_id)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query("SELECT * FROM provisioner_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| JobRow::from_row(&r)).transpose()
    }

    /// Extends the lease of a job held by `daemon_id` and appends logs. Returns the job
    /// (NotFound when the daemon does not hold it any more).
    pub async fn job_update(
        &self,
        job_id: &str,
        daemon_id: &str,
        lease_ms: i64,
        logs: &[(String, String, String)],
    ) -> Result<JobRow> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET lease_expires_at = $1 \
             WHERE id = $2 AND daemon_id = $3 AND status IN ('running', 'canceling')",
        )
        .bind(now + lease_ms)
        .bind(job_id)
        .bind(daemon_id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        for (stage, level, output) in logs {
            sqlx::query(
                "INSERT INTO build_logs (job_id, created_at, stage, level, output) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job_id)
            .bind(now)
            .bind(stage)
            .bind(level)
            .bind(output)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query("SELECT * FROM provisioner_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        JobRow::from_row(&row)
    }

    pub async fn append_log(
        &self,
        job_id: &str,
        stage: &str,
        level: &str,
        output: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO build_logs (job_id, created_at, stage, level, output) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job_id)
        .bind(now_ms())
        .bind(stage)
        .bind(level)
        .bind(output)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Finishes a job held by `daemon_id`. On success records resources and provisioner state.
    pub async fn complete_job(
        &self,
        job_id: &str,
        daemon_id: &str,
        status: &str,
        error: Option<&str>,
        resources: &[(String, String, bool, String)],
        state_json: Option<&str>,
    ) -> Result<JobRow> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = $1, error = $2, completed_at = $3, lease_expires_at = NULL \
             WHERE id = $4 AND daemon_id = $5 AND status IN ('running', 'canceling')",
        )
        .bind(status)
        .bind(error.map(str::to_string))
        .bind(now)
        .bind(job_id)
        .bind(daemon_id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(
            "SELECT b.id AS build_id, b.workspace_id AS workspace_id FROM provisioner_jobs j \
             JOIN workspace_builds b ON b.id = j.build_id WHERE j.id = $1",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        let build_id: String = row.try_get("build_id")?;
        let workspace_id: String = row.try_get("workspace_id")?;
        if status == "succeeded" {
            for (name, kind, persistent, details) in resources {
                sqlx::query(
                    "INSERT INTO workspace_resources (id, build_id, workspace_id, name, kind, persistent, details) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(new_id())
                .bind(&build_id)
                .bind(&workspace_id)
                .bind(name)
                .bind(kind)
                .bind(b(*persistent))
                .bind(details)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(s) = state_json {
                sqlx::query("UPDATE workspaces SET provisioner_state = $1 WHERE id = $2")
                    .bind(s)
                    .bind(&workspace_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let job = sqlx::query("SELECT * FROM provisioner_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        JobRow::from_row(&job)
    }

    /// Marks a workspace deleted (after its delete build succeeded); its name becomes free.
    pub async fn mark_workspace_deleted(&self, workspace_id: &str) -> Result<()> {
        sqlx::query("UPDATE workspaces SET deleted = 1 WHERE id = $1")
            .bind(workspace_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Jobs whose lease ran out: their daemon died. Returns (job id, attempts, status).
    pub async fn expired_jobs(&self, now: i64) -> Result<Vec<(String, i64, String)>> {
        let rows = sqlx::query(
            "SELECT id, attempts, status FROM provisioner_jobs \
             WHERE status IN ('running', 'canceling') AND lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("attempts")?,
                    r.try_get("status")?,
                ))
            })
            .collect()
    }

    /// Puts an expired job back in the queue (only if still expired: one reaper wins).
    pub async fn requeue_expired(&self, job_id: &str, now: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = 'pending', daemon_id = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND status = 'running' AND lease_expires_at < $2",
        )
        .bind(job_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Ends an expired job for good.
    pub async fn fail_expired(
        &self,
        job_id: &str,
        now: i64,
        status: &str,
        error: &str,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE provisioner_jobs SET status = $1, error = $2, completed_at = $3, lease_expires_at = NULL \
             WHERE id = $4 AND status IN ('running', 'canceling') AND lease_expires_at < $3",
        )
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn logs_after(&self, job_id: &str, after: i64) -> Result<Vec<LogRow>> {
        let rows = sqlx::query(
            "SELECT * FROM build_logs WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT 1000",
        )
        .bind(job_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(LogRow::from_row).collect()
    }

    // ------------------------------------------------------------ agents

    /// The agent of a start build, made on first acquisition of its job.
    pub async fn ensure_agent(&self, workspace_id: &str, build_id: &str) -> Result<String> {
        if let Some(r) = sqlx::query("SELECT id FROM agents WHERE build_id = $1")
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(r.try_get("id")?);
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO agents (id, workspace_id, build_id, created_at, lifecycle) VALUES ($1, $2, $3, $4, 'created')",
        )
        .bind(&id)
        .bind(workspace_id)
        .bind(build_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Stores a bootstrap token (hash only) and drops the workspace's older unused tokens.
    pub async fn create_bootstrap_token(
        &self,
        token_id: &str,
        secret_hash: &str,
        workspace_id: &str,
        agent_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM bootstrap_tokens WHERE workspace_id = $1 AND used_at IS NULL")
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO bootstrap_tokens (id, secret_hash, workspace_id, agent_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_id)
        .bind(secret_hash)
        .bind(workspace_id)
        .bind(agent_id)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Consumes a bootstrap token atomically: of concurrent redemptions exactly one gets the
    /// (workspace id, agent id); a used, expired, unknown or wrong-secret token gets None.
    /// Spends a bootstrap token for the key `key_hash`. The same key may spend it again for
    /// [`BOOTSTRAP_RETRY_MS`] after the first use: an agent whose answer was lost (control died
    /// mid-request) retries with its key and gets a certificate for that key; any other key is
    /// refused.
    pub async fn consume_bootstrap_token(
        &self,
        token_id: &str,
        secret_hash: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "UPDATE bootstrap_tokens SET used_at = COALESCE(used_at, $1), used_key = $4 \
             WHERE id = $2 AND secret_hash = $3 AND expires_at > $1 \
             AND (used_at IS NULL OR (used_key = $4 AND used_at > $5)) \
             RETURNING workspace_id, agent_id",
        )
        .bind(now)
        .bind(token_id)
        .bind(secret_hash)
        .bind(key_hash)
        .bind(now - BOOTSTRAP_RETRY_MS)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("workspace_id")?, r.try_get("agent_id")?)))
            .transpose()
    }

    pub async fn bootstrap_token_secret_hash(&self, token_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret_hash FROM bootstrap_tokens WHERE id = $1")
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("secret_hash")).transpose()?)
    }

    pub async fn set_agent_certificate(
        &self,
        agent_id: &str,
        serial: &str,
        expires_at: i64,
        version: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET cert_serial = $1, cert_expires_at = $2, version = $3, lifecycle = 'starting' WHERE id = $4",
        )
        .bind(serial)
        .bind(expires_at)
        .bind(version.map(str::to_string))
        .bind(agent_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a renewed certificate (same identity) unless the agent was revoked meanwhile.
    pub async fn renew_agent_certificate(
        &self,
        agent_id: &str,
        serial: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE agents SET cert_serial = $1, cert_expires_at = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(serial)
        .bind(expires_at)
        .bind(agent_id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn agent(&self, agent_id: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query("SELECT * FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| AgentRow::from_row(&r)).transpose()
    }

    /// Records that the agent was seen; the first time also sets `first_connected_at`.
    pub async fn agent_seen(&self, agent_id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET last_seen_at = $1, first_connected_at = COALESCE(first_connected_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(agent_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a batch of liveness updates (last seen, lifecycle, stats) in one transaction.
    /// `last_seen_at` only moves forward.
    pub async fn agent_liveness_batch(
        &self,
        batch: &[(String, i64, Option<String>, Option<String>)],
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, seen, lifecycle, stats) in batch {
            sqlx::query(
                "UPDATE agents SET \
                    last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < $1 THEN $1 ELSE last_seen_at END, \
                    first_connected_at = COALESCE(first_connected_at, $1), \
                    lifecycle = COALESCE($2, lifecycle), stats = COALESCE($3, stats) \
                 WHERE id = $4 AND revoked_at IS NULL",
            )
            .bind(*seen)
            .bind(lifecycle.clone())
            .bind(stats.clone())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn agent_heartbeat(
        &self,
        agent_id: &str,
        now: i64,
        lifecycle: Option<&str>,
        stats_json: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET last_seen_at = $1, first_connected_at = COALESCE(first_connected_at, $1), \
                lifecycle = COALESCE($2, lifecycle), stats = $3 WHERE id = $4",
        )
        .bind(now)
        .bind(lifecycle.map(str::to_string))
        .bind(stats_json)
        .bind(agent_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------ git SSH keys

    /// The user's git SSH key (private, public), made by `make` on first use.
    pub async fn git_key(
        &self,
        user_id: &str,
        make: impl FnOnce() -> Option<(String, String)>,
    ) -> Result<(String, String)> {
        let get = || async {
            let row =
                sqlx::query("SELECT private_key, public_key FROM user_git_keys WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|r| Ok::<_, StoreError>((r.try_get("private_key")?, r.try_get("public_key")?)))
                .transpose()
        };
        if let Some(k) = get().await? {
            return Ok(k);
        }
        let (private, public) =
            make().ok_or_else(|| StoreError::Corrupt("cannot make a key".into()))?;
        // Two makers at once: the first insert wins and both read it back.
        sqlx::query(
            "INSERT INTO user_git_keys (user_id, private_key, public_key, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(private)
        .bind(public)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        get().await?.ok_or(StoreError::NotFound)
    }

    // ------------------------------------------------------------ agent logs

    /// Appends an agent's log lines within its byte cap. Lines past the cap are dropped and one
    /// overflow marker is written. Returns whether the agent is over its cap.
    pub async fn append_agent_logs(
        &self,
        agent_id: &str,
        workspace_id: &str,
        lines: &[(String, String, String, i64)],
        cap: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT logs_bytes, logs_overflowed FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_one(&mut *tx)
            .await?;
        let mut used: i64 = row.try_get("logs_bytes")?;
        let mut over = row.try_get::<i64, _>("logs_overflowed")? != 0;
        for (source, level, output, at) in lines {
            if over {
                break;
            }
            let n = (source.len() + output.len()) as i64;
            if used + n > cap {
                over = true;
                sqlx::query(
                    "INSERT INTO agent_logs (agent_id, workspace_id, source, level, output, created_at) VALUES ($1, $2, $3, 'warn', $4, $5)",
                )
                .bind(agent_id)
                .bind(workspace_id)
                .bind(source)
                .bind(format!("[outpost] log limit of {cap} bytes reached; further output is dropped"))
                .bind(*at)
                .execute(&mut *tx)
                .await?;
                break;
            }
            used += n;
            sqlx::query(
                "INSERT INTO agent_logs (agent_id, workspace_id, source, level, output, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(agent_id)
            .bind(workspace_id)
            .bind(source)
            .bind(level)
            .bind(output)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE agents SET logs_bytes = $1, logs_overflowed = $2 WHERE id = $3")
            .bind(used)
            .bind(i64::from(over))
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(over)
    }

    /// A workspace's agent log lines after `after`, optionally of one source.
    pub async fn agent_logs_after(
        &self,
        workspace_id: &str,
        source: Option<&str>,
        after: i64,
    ) -> Result<Vec<(LogRow, String)>> {
        let rows = sqlx::query(
            "SELECT id, created_at, source AS stage, level, output, source FROM agent_logs \
             WHERE workspace_id = $1 AND id > $2 AND ($3 = '' OR source = $3) ORDER BY id LIMIT 1000",
        )
        .bind(workspace_id)
        .bind(after)
        .bind(source.unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((LogRow::from_row(r)?, r.try_get("source")?)))
            .collect()
    }

    // ------------------------------------------------------------ SSH

    pub async fn add_ssh_key(
        &self,
        user_id: &str,
        name: &str,
        public_key: &str,
        fingerprint: &str,
    ) -> Result<SshKeyRow> {
        let row = SshKeyRow {
            id: new_id_short(),
            name: name.to_string(),
            public_key: public_key.to_string(),
            fingerprint: fingerprint.to_string(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO user_ssh_keys (id, user_id, name, public_key, fingerprint, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(user_id)
        .bind(name)
        .bind(public_key)
        .bind(fingerprint)
        .bind(row.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, &format!("you already added the key {fingerprint}")))?;
        Ok(row)
    }

    pub async fn ssh_keys(&self, user_id: &str) -> Result<Vec<SshKeyRow>> {
        let rows =
            sqlx::query("SELECT * FROM user_ssh_keys WHERE user_id = $1 ORDER BY created_at")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(SshKeyRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    public_key: r.try_get("public_key")?,
                    fingerprint: r.try_get("fingerprint")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn remove_ssh_key(&self, user_id: &str, id: &str) -> Result<()> {
        let res = sqlx::query(
            "DELETE FROM user_ssh_keys WHERE user_id = $1 AND (id = $2 OR fingerprint = $2)",
        )
        .bind(user_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// What the agent reports of its SSH server: host key and listen address.
    pub async fn set_agent_ssh(
        &self,
        agent_id: &str,
        host_key: &str,
        addr: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE agents SET ssh_host_key = $1, ssh_addr = $2 WHERE id = $3 AND revoked_at IS NULL")
            .bind(host_key)
            .bind(addr.map(str::to_string))
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes every agent identity of a workspace (stop, delete).
    pub async fn revoke_agents(&self, workspace_id: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE agents SET revoked_at = $1, lifecycle = 'off' WHERE workspace_id = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        sqlx::query("DELETE FROM bootstrap_tokens WHERE workspace_id = $1 AND used_at IS NULL")
            .bind(workspace_id)
            .execute(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Sets the lifecycle directly (a stopping, revoked agent reporting how its stop ended).
    pub async fn set_agent_lifecycle(&self, agent_id: &str, lifecycle: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET lifecycle = $1 WHERE id = $2")
            .bind(lifecycle)
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes the workspace's agents other than `keep` (a new start build replaces them).
    pub async fn revoke_agents_except(
        &self,
        workspace_id: &str,
        keep: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE agents SET revoked_at = $1, lifecycle = 'off' WHERE workspace_id = $2 AND id <> $3 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now_ms())
        .bind(workspace_id)
        .bind(keep)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The live agents of a workspace (not revoked).
    pub async fn live_agents(&self, workspace_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT id FROM agents WHERE workspace_id = $1 AND revoked_at IS NULL")
                .bind(workspace_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn enqueue_command(&self, agent_id: &str, kind: &str) -> Result<()> {
        sqlx::query("INSERT INTO agent_commands (agent_id, kind, created_at) VALUES ($1, $2, $3)")
            .bind(agent_id)
            .bind(kind)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the agent's undelivered commands, marking them delivered.
    pub async fn take_commands(&self, agent_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE agent_commands SET delivered_at = $1 WHERE agent_id = $2 AND delivered_at IS NULL RETURNING id, kind",
        )
        .bind(now_ms())
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await?;
        let mut cmds: Vec<(i64, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("kind")?)))
            .collect::<Result<_>>()?;
        cmds.sort();
        Ok(cmds.into_iter().map(|(_, k)| k).collect())
    }
}

/// One audit event. No secrets: token ids at most, never token material.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub created_at: i64,
    pub action: String,
    pub outcome: String,
    pub actor: String,
    pub workspace_id: Option<String>,
    pub agent_id: Option<String>,
    pub remote_addr: Option<String>,
    pub details: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub workspace_id: Option<String>,
    pub since: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (created_at, action, outcome, actor, workspace_id, agent_id, remote_addr, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(e.created_at)
            .bind(&e.action)
            .bind(&e.outcome)
            .bind(&e.actor)
            .bind(e.workspace_id.clone())
            .bind(e.agent_id.clone())
            .bind(e.remote_addr.clone())
            .bind(&e.details)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Newest first. Filters are exact matches; `action` also matches a prefix ending in `.`.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        // Each filter is `($n = '' OR col = $n)` so one statement serves every combination.
        let action = f.action.clone().unwrap_or_default();
        let action_prefix = format!("{action}%");
        let rows = sqlx::query(
            "SELECT * FROM audit_events \
             WHERE ($1 = '' OR action = $1 OR (action LIKE $2 AND $1 LIKE '%.')) \
               AND ($3 = '' OR outcome = $3) AND ($4 = '' OR workspace_id = $4) AND created_at >= $5 \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(action)
        .bind(action_prefix)
        .bind(f.outcome.clone().unwrap_or_default())
        .bind(f.workspace_id.clone().unwrap_or_default())
        .bind(f.since.unwrap_or(0))
        .bind(f.limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    action: r.try_get("action")?,
                    outcome: r.try_get("outcome")?,
                    actor: r.try_get("actor")?,
                    workspace_id: r.try_get("workspace_id")?,
                    agent_id: r.try_get("agent_id")?,
                    remote_addr: r.try_get("remote_addr")?,
                    details: r.try_get("details")?,
                })
            })
            .collect()
    }
}

fn new_id_short() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

#[allow(clippy::too_many_arguments)]
async fn insert_build(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    workspace_id: &str,
    number: i64,
    transition: &str,
    version_id: &str,
    then_start: bool,
    initiator: Option<&str>,
    provisioner: &str,
    now: i64,
) -> Result<String> {
    let build_id = new_id();
    sqlx::query(
        "INSERT INTO workspace_builds (id, workspace_id, number, transition, template_version_id, then_start, initiator_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&build_id)
    .bind(workspace_id)
    .bind(number)
    .bind(transition)
    .bind(version_id)
    .bind(b(then_start))
    .bind(initiator.map(str::to_string))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO provisioner_jobs (id, build_id, provisioner, status, attempts, cancel_requested, created_at) \
         VALUES ($1, $2, $3, 'pending', 0, 0, $4)",
    )
    .bind(new_id())
    .bind(&build_id)
    .bind(provisioner)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(build_id)
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
