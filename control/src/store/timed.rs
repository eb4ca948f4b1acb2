//! Store query latency (issue 18): every query run on the pool outside a transaction goes
//! through [`Timed`], an `sqlx::Executor` over `&AnyPool` that observes the time from asking to
//! the last row in a histogram labelled by the store module that ran it (`users`, `agents`,
//! ...: a bounded set). Queries inside a transaction (`Store::begin`) are not timed one by one.

use std::panic::Location;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use sqlx::{Any, AnyPool};
use sqlx::{Describe, Either, Execute, Executor};

use super::write_turn::{self, WriteTurns};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AreaLabels {
    area: String,
}

fn query_histogram() -> Histogram {
    // 0.1 ms .. ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Query durations by store module; `/metrics` registers it as
/// `outpost_store_query_duration_seconds`.
pub type QueryTimes = Family<AreaLabels, Histogram, fn() -> Histogram>;

pub fn query_times() -> QueryTimes {
    Family::new_with_constructor(query_histogram)
}

/// The pool, timing each query into `hist`; with `turns` (replicas on one SQLite data dir),
/// a statement that writes takes the connection, then its turn (write_turn.rs), then runs.
#[derive(Clone)]
pub struct Timed<'p> {
    pool: &'p AnyPool,
    hist: Histogram,
    turns: Option<&'p WriteTurns>,
}

impl std::fmt::Debug for Timed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").finish_non_exhaustive()
    }
}

impl<'p> Timed<'p> {
    /// Labels the queries with the store module of the caller (`store/users.rs`: `users`).
    #[track_caller]
    pub fn new(pool: &'p AnyPool, times: &QueryTimes, turns: Option<&'p WriteTurns>) -> Self {
        let file = Location::caller().file();
        let area = std::path::Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("store");
        let area = if area == "mod" { "store" } else { area };
        let hist = times
            .get_or_create(&AreaLabels {
                area: area.to_string(),
            })
            .clone();
        Timed { pool, hist, turns }
    }
}

/// Observes the time since it was made when dropped (a stream read to its end, or given up).
struct Observe(Histogram, Instant);

impl Drop for Observe {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}

impl<'p> Executor<'p> for Timed<'p> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<sqlx::any::AnyQueryResult, sqlx::any::AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let seen = Observe(self.hist, Instant::now());
        if let Some(turns) = self.turns.filter(|_| write_turn::writes(query.sql())) {
            let pool = self.pool;
            // A write's rows (RETURNING at most) are read whole while the turn is held.
            let rows = async move {
                let (mut conn, _turn) =
                    match write_turn::connection_then_turn(pool, Some(turns)).await {
                        Ok(ct) => ct,
                        Err(e) => return vec![Err(e)],
                    };
                let rows: Vec<_> = (&mut *conn).fetch_many(query).collect().await;
                drop(seen);
                rows
            };
            return futures_util::stream::once(rows)
                .flat_map(futures_util::stream::iter)
                .boxed();
        }
        self.pool
            .fetch_many(query)
            .map(move |item| {
                let _ = &seen;
                item
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<sqlx::any::AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let seen = Observe(self.hist, Instant::now());
        if let Some(turns) = self.turns.filter(|_| write_turn::writes(query.sql())) {
            let pool = self.pool;
            return Box::pin(async move {
                let (mut conn, _turn) = write_turn::connection_then_turn(pool, Some(turns)).await?;
                let r = (&mut *conn).fetch_optional(query).await;
                drop(seen);
                r
            });
        }
        let fut = self.pool.fetch_optional(query);
        Box::pin(async move {
            let r = fut.await;
            drop(seen);
            r
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::any::AnyTypeInfo],
    ) -> BoxFuture<'e, Result<sqlx::any::AnyStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}
