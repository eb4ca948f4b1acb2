//! What replicas of control on one PostgreSQL share beyond the tables: events (`LISTEN` /
//! `NOTIFY` on one channel), the leader's advisory lock (held by a connection of its own, so it
//! goes when the replica dies), and the registry of replicas. On SQLite there is one server: no
//! events to pass on, and it always leads.

use sqlx::Connection;

use super::*;

/// The channel replicas talk on.
pub const CHANNEL: &str = "outpost_events";
/// The advisory lock the leader holds (7001 serialises migrations).
const LEADER_LOCK: i64 = 7002;
/// Serialises replicas' start-up steps that read then write shared state (the CA).
const TURN_LOCK: i64 = 7003;

#[derive(Debug, Clone)]
pub struct ReplicaRow {
    pub id: String,
    pub hostname: String,
    pub api_url: String,
    pub agent_url: String,
    /// Where the other replicas reach this one's agent listener (`--replica-url`).
    pub replica_url: String,
    pub version: String,
    pub leader: bool,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl ReplicaRow {
    fn from_row(r: &AnyRow) -> Result<ReplicaRow> {
        Ok(ReplicaRow {
            id: r.try_get("id")?,
            hostname: r.try_get("hostname")?,
            api_url: r.try_get("api_url")?,
            agent_url: r.try_get("agent_url")?,
            replica_url: r.try_get("replica_url")?,
            version: r.try_get("version")?,
            leader: flag(r, "leader")?,
            started_at: r.try_get("started_at")?,
            heartbeat_at: r.try_get("heartbeat_at")?,
        })
    }
}

/// The leader's lock: a connection of its own holding `pg_try_advisory_lock`. Dropping it (or
/// the replica dying) closes the connection, and PostgreSQL lets the lock go.
pub struct LeaderLock(sqlx::postgres::PgConnection);

impl LeaderLock {
    /// Whether the connection (and so the lock) is still there.
    pub async fn held(&mut self) -> bool {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sqlx::query("SELECT 1").execute(&mut self.0),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

/// A turn at shared start-up state, held until dropped (its connection closes, and with it
/// the lock).
pub struct Turn {
    _held: Option<sqlx::postgres::PgConnection>,
}

impl Store {
    /// Waits for this replica's turn (PostgreSQL; on SQLite there is one server).
    pub async fn cluster_turn(&self) -> Result<Turn> {
        if self.dialect != Dialect::Postgres {
            return Ok(Turn { _held: None });
        }
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(TURN_LOCK)
            .execute(&mut conn)
            .await?;
        Ok(Turn { _held: Some(conn) })
    }

    /// Tells every replica (itself included) `payload`. Nothing on SQLite.
    pub async fn notify(&self, payloads: &[String]) -> Result<()> {
        if self.dialect != Dialect::Postgres || payloads.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for p in payloads {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(p)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A listener on the replicas' channel (PostgreSQL only).
    pub async fn listen(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(CHANNEL).await?;
        Ok(Some(l))
    }

    /// Tries to become the leader: `Some` with the lock, `None` if another replica holds it.
    /// SQLite has one server, which always leads: `Ok(None)` is never answered there (callers
    /// check the dialect first).
    pub async fn try_lead(&self) -> Result<Option<LeaderLock>> {
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(LeaderLock(conn)))
    }

    /// Registers this replica, or refreshes its heartbeat (and whether it leads).
    pub async fn replica_heartbeat(&self, r: &ReplicaRow) -> Result<()> {
        let now = now_ms();
        let res = sqlx::query("UPDATE replicas SET heartbeat_at = $1, leader = $2 WHERE id = $3")
            .bind(now)
            .bind(b(r.leader))
            .bind(&r.id)
            .execute(self.db())
            .await?;
        if res.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO replicas (id, hostname, api_url, agent_url, replica_url, version, leader, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&r.id)
            .bind(&r.hostname)
            .bind(&r.api_url)
            .bind(&r.agent_url)
            .bind(&r.replica_url)
            .bind(&r.version)
            .bind(b(r.leader))
            .bind(r.started_at)
            .bind(now)
            .execute(self.db())
            .await?;
        }
        Ok(())
    }

    /// Replicas that heartbeat within `fresh_ms`, oldest first.
    pub async fn replicas(&self, fresh_ms: i64) -> Result<Vec<ReplicaRow>> {
        let rows =
            sqlx::query("SELECT * FROM replicas WHERE heartbeat_at >= $1 ORDER BY started_at, id")
                .bind(now_ms() - fresh_ms)
                .fetch_all(self.db())
                .await?;
        rows.iter().map(ReplicaRow::from_row).collect()
    }

    /// Forgets replicas silent for longer than `stale_ms` (and `id`, leaving).
    pub async fn forget_replicas(&self, stale_ms: i64, leaving: Option<&str>) -> Result<u64> {
        let res = sqlx::query("DELETE FROM replicas WHERE heartbeat_at < $1 OR id = $2")
            .bind(now_ms() - stale_ms)
            .bind(leaving.unwrap_or(""))
            .execute(self.db())
            .await?;
        Ok(res.rows_affected())
    }

    /// The replica `id`, if it heartbeat within `fresh_ms`.
    pub async fn replica(&self, id: &str, fresh_ms: i64) -> Result<Option<ReplicaRow>> {
        let row = sqlx::query("SELECT * FROM replicas WHERE id = $1 AND heartbeat_at >= $2")
            .bind(id)
            .bind(now_ms() - fresh_ms)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(ReplicaRow::from_row).transpose()
    }

    /// The agent's relay tunnel is held by `replica` now.
    pub async fn set_tunnel_replica(&self, agent_id: &str, replica: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET tunnel_replica = $1 WHERE id = $2")
            .bind(replica)
            .bind(agent_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// The tunnel `replica` held closed (unless another replica holds a newer one).
    pub async fn clear_tunnel_replica(&self, agent_id: &str, replica: &str) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET tunnel_replica = NULL WHERE id = $1 AND tunnel_replica = $2",
        )
        .bind(agent_id)
        .bind(replica)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Which replica holds the agent's relay tunnel, if any.
    pub async fn tunnel_replica(&self, agent_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT tunnel_replica FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(self.db())
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("tunnel_replica"))
            .transpose()?
            .flatten())
    }
}
