//! Store tests, run against SQLite and (when reachable, or when OUTPOST_REQUIRE_POSTGRES=1)
//! PostgreSQL.

use super::*;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

struct TestDb {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database made for this test, dropped after it.
    pg: Option<(String, String)>,
}

impl TestDb {
    async fn drop_db(self) {
        use sqlx::Connection;
        if let Some((admin, name)) = self.pg {
            drop(self.store);
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await;
            }
        }
    }
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    TestDb {
        store: Store::connect(&url).await.expect("sqlite store"),
        _dir: Some(dir),
        pg: None,
    }
}

async fn postgres() -> Option<TestDb> {
    use sqlx::Connection;
    let admin = std::env::var("OUTPOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let name = format!("outpost_store_{}", uuid::Uuid::new_v4().simple());
    let created = async {
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if let Err(e) = created {
        if std::env::var("OUTPOST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("PostgreSQL required but {admin} is not usable: {e}");
        }
        eprintln!("SKIPPED (PostgreSQL): {admin} is not usable: {e}");
        return None;
    }
    let (base, _) = admin.rsplit_once('/')?;
    let store = Store::connect(&format!("{base}/{name}"))
        .await
        .expect("pg store");
    Some(TestDb {
        store,
        _dir: None,
        pg: Some((admin, name)),
    })
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::sqlite().await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::postgres().await {
                    super::$name(db.store.clone()).await;
                    db.drop_db().await;
                }
            }
        }
    };
}

async fn seed(store: &Store) -> (UserRow, TemplateVersionRow) {
    let user = store
        .create_user("alice", "x", true, true)
        .await
        .expect("user");
    let v = store
        .push_template_version("base", "d", "{}", "{}", "", true, Some(&user.id))
        .await
        .expect("template");
    (user, v)
}

async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.expect("second migrate");
    assert_eq!(store.count_users().await.expect("count"), 0);
    // Only one first user, even when asked twice.
    store
        .create_user("a", "h", true, true)
        .await
        .expect("first");
    assert!(matches!(
        store.create_user("b", "h", true, true).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_user("a", "h", false, false).await,
        Err(StoreError::Conflict(_))
    ));
}
both!(migrations_are_idempotent);

async fn workspace_names_unique_per_owner(store: Store) {
    let (user, v) = seed(&store).await;
    let id = store
        .create_workspace(&user.id, "dev", &v.template_id, &v.id, "local", "{}")
        .await
        .expect("create");
    assert!(matches!(
        store
            .create_workspace(&user.id, "dev", &v.template_id, &v.id, "local", "{}")
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A concurrent second build on the same number conflicts.
    assert!(matches!(
        store
            .queue_build(
                &id,
                0,
                "stop",
                &v.id,
                false,
                None,
                "local",
                None,
                "initiator"
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    store.mark_workspace_deleted(&id).await.expect("delete");
    store
        .create_workspace(&user.id, "dev", &v.template_id, &v.id, "local", "{}")
        .await
        .expect("the name is free after delete");
}
both!(workspace_names_unique_per_owner);

async fn jobs_are_taken_once_and_leases_expire(store: Store) {
    let (user, v) = seed(&store).await;
    for i in 0..5 {
        store
            .create_workspace(
                &user.id,
                &format!("w{i}"),
                &v.template_id,
                &v.id,
                "local",
                "{}",
            )
            .await
            .expect("create");
    }
    // 10 daemons race for 5 jobs: each job goes to exactly one.
    let mut tasks = Vec::new();
    for d in 0..10 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.acquire_job(
                &format!("d{d}"),
                &["local".to_string()],
                &untagged(),
                60_000,
            )
            .await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        if let Some(j) = t.await.expect("join").expect("acquire") {
            got.push(j);
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 5);
    assert!(store
        .acquire_job("d", &["local".to_string()], &untagged(), 60_000)
        .await
        .expect("acquire")
        .is_none());
    // Unknown provisioner types take nothing.
    assert!(store
        .acquire_job("d", &["docker".to_string()], &untagged(), 1)
        .await
        .expect("acquire")
        .is_none());

    // An expired lease: the job is requeued once, and only the owner can update a job.
    let job = &got[0];
    let holder = store
        .job(job)
        .await
        .expect("job")
        .expect("exists")
        .daemon_id
        .expect("held");
    assert!(matches!(
        store.job_update(job, "intruder", 1000, &[]).await,
        Err(StoreError::NotFound)
    ));
    store
        .job_update(job, &holder, -1, &[])
        .await
        .expect("renew to the past");
    let expired = store.expired_jobs(now_ms()).await.expect("expired");
    assert_eq!(expired.len(), 1);
    assert!(store.requeue_expired(job, now_ms()).await.expect("requeue"));
    assert!(!store
        .requeue_expired(job, now_ms())
        .await
        .expect("second reaper loses"));
    let again = store
        .acquire_job("d-new", &["local".to_string()], &untagged(), 60_000)
        .await
        .expect("acquire")
        .expect("requeued job");
    assert_eq!(&again, job);
    assert_eq!(
        store.job(job).await.expect("job").expect("exists").attempts,
        2
    );
    // The old holder cannot complete it any more.
    assert!(matches!(
        store
            .complete_job(job, &holder, "succeeded", None, &[], None)
            .await,
        Err(StoreError::NotFound)
    ));
    store
        .complete_job(
            job,
            "d-new",
            "succeeded",
            None,
            &[("home".into(), "local_dir".into(), true, "{}".into())],
            Some("{\"a\":1}"),
        )
        .await
        .expect("complete");
}
both!(jobs_are_taken_once_and_leases_expire);

async fn bootstrap_tokens_have_one_winner(store: Store) {
    let (user, v) = seed(&store).await;
    let ws = store
        .create_workspace(&user.id, "dev", &v.template_id, &v.id, "local", "{}")
        .await
        .expect("create");
    let w = store
        .workspace_by_id(&ws)
        .await
        .expect("ws")
        .expect("exists");
    let agent = store
        .ensure_agent(&ws, &w.latest_build_id)
        .await
        .expect("agent");
    store
        .create_bootstrap_token("tok", "hash", &ws, &agent, now_ms() + 600_000)
        .await
        .expect("token");
    assert!(store
        .consume_bootstrap_token("tok", "wrong", "k0", now_ms())
        .await
        .expect("c")
        .is_none());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.consume_bootstrap_token("tok", "hash", &format!("k{i}"), now_ms())
                .await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.expect("join").expect("consume").is_some() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1);
    // The winning key may spend it again for a while (its answer may have been lost); no other.
    let key = format!("k{}", winners[0]);
    let other = format!("k{}", (winners[0] + 1) % 20);
    assert!(store
        .consume_bootstrap_token("tok", "hash", &key, now_ms())
        .await
        .expect("c")
        .is_some());
    assert!(store
        .consume_bootstrap_token("tok", "hash", &other, now_ms())
        .await
        .expect("c")
        .is_none());
    assert!(store
        .consume_bootstrap_token(
            "tok",
            "hash",
            &key,
            now_ms() + crate::store::BOOTSTRAP_RETRY_MS + 1
        )
        .await
        .expect("c")
        .is_none());
    // Expired tokens are refused.
    store
        .create_bootstrap_token("old", "h2", &ws, &agent, now_ms() - 1)
        .await
        .expect("token");
    assert!(store
        .consume_bootstrap_token("old", "h2", "k0", now_ms())
        .await
        .expect("c")
        .is_none());
}
both!(bootstrap_tokens_have_one_winner);

/// What the server's own daemons may take: untagged jobs of any template.
fn untagged() -> super::JobScope {
    super::JobScope {
        tag_sets: vec![String::new()],
        ..Default::default()
    }
}

/// The pool gives a connection back without a round trip to the database
/// (`test_after_release(false)`, vendor/patches/sqlx-core-*): what a request gave up on midway
/// is finished by the flush on release, not left for the next request on that connection, and a
/// connection that died while idle is replaced before a query is given it.
async fn a_request_given_up_midway_leaves_nothing_behind(store: Store) {
    use sqlx::Connection;
    let count = |pool: AnyPool| async move {
        sqlx::query("SELECT COUNT(*) AS n FROM release_probe")
            .fetch_one(&pool)
            .await
            .expect("count")
            .try_get::<i64, _>("n")
            .expect("n")
    };
    sqlx::query("CREATE TABLE release_probe (n BIGINT NOT NULL)")
        .execute(&store.pool)
        .await
        .expect("create");
    // A transaction dropped without its commit: rolled back before the connection is reused.
    {
        let mut tx = store.pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO release_probe (n) VALUES (1)")
            .execute(&mut *tx)
            .await
            .expect("insert in tx");
    }
    let counts = futures_util::future::join_all((0..40).map(|_| count(store.pool.clone()))).await;
    assert!(counts.iter().all(|n| *n == 0), "{counts:?}");
    // Nor is any connection left inside it: a write outside a transaction is seen by a
    // connection of its own.
    sqlx::query("INSERT INTO release_probe (n) VALUES (2)")
        .execute(&store.pool)
        .await
        .expect("insert");
    let mut own = sqlx::AnyConnection::connect(&store.url)
        .await
        .expect("own connection");
    let seen: i64 = sqlx::query("SELECT COUNT(*) AS n FROM release_probe")
        .fetch_one(&mut own)
        .await
        .expect("count")
        .try_get("n")
        .expect("n");
    assert_eq!(seen, 1);
    if store.dialect != Dialect::Postgres {
        return;
    }
    // A query whose request gave up (its future dropped while the database worked): the next
    // queries get their own answers.
    let given_up = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        sqlx::query("SELECT pg_sleep(1)").execute(&store.pool),
    )
    .await;
    assert!(given_up.is_err(), "pg_sleep(1) finished within 100 ms");
    for i in 0..40_i64 {
        let got: i64 = sqlx::query("SELECT $1 AS n")
            .bind(i)
            .fetch_one(&store.pool)
            .await
            .expect("select")
            .try_get("n")
            .expect("n");
        assert_eq!(got, i);
    }
    // Every pooled connection ended by the database while idle (as a restart does): a query
    // after they have been idle past PING_IDLE is given a live one.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut own)
    .await
    .expect("terminate");
    tokio::time::sleep(PING_IDLE + std::time::Duration::from_millis(500)).await;
    let counts = futures_util::future::join_all((0..16).map(|_| count(store.pool.clone()))).await;
    assert!(counts.iter().all(|n| *n == 1), "{counts:?}");
    own.close().await.expect("close");
}
both!(a_request_given_up_midway_leaves_nothing_behind);

/// (workspace, agent) of `n` new workspaces of one user.
async fn agents_of_new_workspaces(store: &Store, n: usize) -> Vec<(String, String)> {
    let (user, v) = seed(store).await;
    let mut agents = Vec::new();
    for i in 0..n {
        let ws = store
            .create_workspace(
                &user.id,
                &format!("dev{i}"),
                &v.template_id,
                &v.id,
                "local",
                "{}",
            )
            .await
            .expect("create");
        let w = store
            .workspace_by_id(&ws)
            .await
            .expect("ws")
            .expect("exists");
        agents.push((
            ws.clone(),
            store
                .ensure_agent(&ws, &w.latest_build_id)
                .await
                .expect("agent"),
        ));
    }
    agents
}

/// Liveness is written in one statement per batch: each agent's last sighting only moves
/// forward, a missing lifecycle or statistics keeps the stored one, a revoked agent is left
/// alone, and a full batch (the flush's 500) fits in one statement.
async fn liveness_batches_update_each_agent(store: Store) {
    let agents = agents_of_new_workspaces(&store, 3).await;
    store.revoke_agents(&agents[2].0).await.expect("revoke");
    let row = |i: usize, seen: i64, lc: Option<&str>, st: Option<&str>| {
        (
            agents[i].1.clone(),
            seen,
            lc.map(str::to_string),
            st.map(str::to_string),
        )
    };
    let mut batch = vec![
        row(0, 1_000, Some("ready"), Some(r#"{"a":1}"#)),
        row(1, 2_000, None, None),
        row(2, 3_000, Some("ready"), Some(r#"{"a":3}"#)),
    ];
    // Ids of no agent fill it to the flush's chunk: 2,000 parameters in one statement.
    batch.extend((3..500).map(|i| (format!("none-{i}"), 1, None, None)));
    store.agent_liveness_batch(&batch).await.expect("batch");
    // (last seen, first connected, lifecycle, statistics) of agent i.
    let state = |i: usize| {
        let (s, id) = (store.clone(), agents[i].1.clone());
        async move {
            let a = s.agent(&id).await.expect("agent").expect("exists");
            (a.last_seen_at, a.first_connected_at, a.lifecycle, a.stats)
        }
    };
    let json = |v: &str| Some(v.to_string());
    assert_eq!(
        state(0).await,
        (Some(1_000), Some(1_000), "ready".into(), json(r#"{"a":1}"#))
    );
    let (seen, first, _, stats) = state(1).await;
    assert_eq!((seen, first, stats), (Some(2_000), Some(2_000), None));
    let (seen, first, _, stats) = state(2).await;
    assert_eq!((seen, first, stats), (None, None, None));
    // An older sighting does not move it back; new statistics without a lifecycle keep it.
    store
        .agent_liveness_batch(&[
            row(0, 500, None, Some(r#"{"a":2}"#)),
            row(1, 2_500, Some("starting"), None),
        ])
        .await
        .expect("batch");
    assert_eq!(
        state(0).await,
        (Some(1_000), Some(1_000), "ready".into(), json(r#"{"a":2}"#))
    );
    let (seen, first, lifecycle, _) = state(1).await;
    assert_eq!(
        (seen, first, lifecycle.as_str()),
        (Some(2_500), Some(2_000), "starting")
    );
}
both!(liveness_batches_update_each_agent);

/// A NUL in a name: SQLite stores and finds nothing; PostgreSQL's `text` cannot hold it and
/// refuses, which the API answers as the caller's error (400), not its own (500).
async fn a_nul_in_text_is_the_callers_error(store: Store) {
    match store.template_by_name("a\u{0}b").await {
        Ok(found) => {
            assert_eq!(store.dialect, Dialect::Sqlite);
            assert!(found.is_none());
        }
        Err(e) => {
            assert_eq!(store.dialect, Dialect::Postgres);
            assert!(e.is_invalid_text(), "{e}");
            assert!(!e.is_busy());
        }
    }
}
both!(a_nul_in_text_is_the_callers_error);

/// What `poll_sweep` reads once a second: the agents with commands not yet delivered, and the
/// ones revoked or renewed lately (with the certificate now current).
async fn pending_commands_and_recent_changes_are_read_for_all_agents(store: Store) {
    let agents = agents_of_new_workspaces(&store, 4).await;
    let id = |i: usize| agents[i].1.clone();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert!(store
        .agents_with_commands(10)
        .await
        .expect("read")
        .is_empty());
    store.enqueue_command(&id(0), "stop").await.expect("queue");
    store
        .enqueue_command(&id(1), "refresh_keys")
        .await
        .expect("queue");
    store.enqueue_command(&id(1), "stop").await.expect("queue");
    let mut want = sorted(vec![id(0), id(1)]);
    assert_eq!(
        sorted(store.agents_with_commands(10).await.expect("read")),
        want
    );
    assert_eq!(store.agents_with_commands(1).await.expect("read").len(), 1);
    assert_eq!(store.take_commands(&id(0)).await.expect("take"), ["stop"]);
    want.retain(|a| *a != id(0));
    assert_eq!(store.agents_with_commands(10).await.expect("read"), want);

    let now = now_ms();
    for i in 0..4 {
        store
            .set_agent_certificate(&id(i), &format!("s{i}"), now + 3_600_000, None)
            .await
            .expect("cert");
    }
    assert!(store
        .agents_changed_since(now - 60_000, 10)
        .await
        .expect("read")
        .is_empty());
    assert!(store
        .renew_agent_certificate(&id(1), "s1b", now + 3_600_000, now + 120_000)
        .await
        .expect("renew"));
    store.revoke_agents(&agents[2].0).await.expect("revoke");
    let mut changed = store
        .agents_changed_since(now - 60_000, 10)
        .await
        .expect("read");
    changed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expect = vec![
        AgentChange {
            id: id(1),
            revoked: false,
            cert_serial: Some("s1b".into()),
        },
        AgentChange {
            id: id(2),
            revoked: true,
            cert_serial: Some("s2".into()),
        },
    ];
    expect.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(changed, expect);
    // Older than the renewal's overlap and the revocation: nothing.
    assert!(store
        .agents_changed_since(now + 600_000, 10)
        .await
        .expect("read")
        .is_empty());
}
both!(pending_commands_and_recent_changes_are_read_for_all_agents);

/// The plan the database makes for `sql`, one line per step. On PostgreSQL with sequential
/// scans priced out, so that a table's small size in a test cannot hide a missing index.
async fn plan(store: &Store, sql: &str) -> Vec<String> {
    let mut tx = store.pool.begin().await.expect("begin");
    let explain = match store.dialect() {
        Dialect::Postgres => {
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .expect("set");
            format!("EXPLAIN {sql}")
        }
        Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
    };
    let rows = sqlx::query(&explain)
        .fetch_all(&mut *tx)
        .await
        .expect("explain");
    let column = match store.dialect() {
        Dialect::Postgres => "QUERY PLAN",
        Dialect::Sqlite => "detail",
    };
    rows.iter()
        .map(|r| r.try_get::<String, _>(column).expect("plan line"))
        .collect()
}

/// What runs once per build or per request reads through an index, never every row: a
/// workspace's start looks up its agent by build and its resources by build, a token check
/// and a user's organizations look up by user (a table scan each was 1.3 billion rows read
/// creating 50,000 workspaces).
async fn lookups_by_build_and_by_user_use_an_index(store: Store) {
    for sql in [
        "SELECT id FROM agents WHERE build_id = 'b'",
        "SELECT * FROM workspace_resources WHERE build_id = 'b' ORDER BY name",
        "SELECT * FROM api_tokens WHERE user_id = 'u' AND revoked_at IS NULL ORDER BY created_at",
        "SELECT organization_id FROM organization_members WHERE user_id = 'u'",
        "SELECT id FROM agents WHERE workspace_id = 'w' AND revoked_at IS NULL",
        "SELECT * FROM bootstrap_tokens WHERE id = 't'",
    ] {
        let p = plan(&store, sql).await;
        let scans: Vec<&String> = p
            .iter()
            .filter(|l| l.contains("Seq Scan") || l.starts_with("SCAN "))
            .collect();
        assert!(scans.is_empty(), "{sql} reads every row: {p:?}");
        assert!(
            p.iter().any(|l| l.contains("Index") || l.contains("INDEX")),
            "{sql}: {p:?}"
        );
    }
}
both!(lookups_by_build_and_by_user_use_an_index);

/// `/metrics`' scan of every agent reads on SQLite from a read-only connection of its own:
/// while a request holds the one writing connection in a transaction (at 50,000 agents a
/// scrape took seconds, and every request of that server waited behind it), the scan still
/// answers, with what was committed, and cannot write.
#[tokio::test]
async fn metrics_scans_do_not_wait_on_the_writer() {
    let db = sqlite().await;
    let store = db.store.clone();
    let agents = agents_of_new_workspaces(&store, 2).await;
    let stats = r#"{"a":1}"#.to_string();
    store
        .agent_liveness_batch(&[(agents[0].1.clone(), 1_000, None, Some(stats.clone()))])
        .await
        .expect("batch");
    let tx = store.begin().await.expect("begin");
    let counts = tokio::time::timeout(std::time::Duration::from_secs(5), store.metric_counts())
        .await
        .expect("the scan waited on the writing connection")
        .expect("counts");
    assert_eq!(counts.agent_stats.len(), 1);
    assert_eq!(counts.agent_stats[0].1, stats);
    let write = sqlx::query("DELETE FROM agents")
        .execute(&store.scans)
        .await;
    assert!(write.is_err(), "the scans' connection wrote");
    drop(tx);
    assert!(store.agent(&agents[0].1).await.expect("agent").is_some());
}
