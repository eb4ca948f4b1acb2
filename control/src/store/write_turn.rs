//! Replicas on one SQLite data dir (`--shared-data-dir`) take turns to write, one at a
//! time. SQLite alone lets one process write and makes the others retry on their own: its
//! busy handler sleeps 1, 2, 5, ... up to 100 ms between tries, so a replica asking while
//! another writes sleeps on past the moment the file is free, and under a burst of writes from
//! three replicas (50,000 agents reconnecting) one replica's write waited seconds while the file
//! sat unlocked between the others' tries. Here a write first waits on an exclusive `flock` of
//! `DATA_DIR/write.lock` (the kernel wakes a waiter as soon as it is let go), then runs; SQLite's
//! own lock is then free and its busy handler has nothing to wait for.
//!
//! `flock` alone is not fair: when it is let go the kernel wakes the waiters, but the process
//! that let go, already running, takes it again first (its next statement asks without
//! waiting): a replica flushing 17,000 agents' liveness in chunks of 500 could keep the file
//! for its whole flush while another replica's API write waited behind every chunk. So a turn is
//! asked for through a turnstile, `DATA_DIR/write.queue`: a writer takes the queue, then the
//! lock, then lets the queue go. The one waiting for the lock holds the queue, so a writer that
//! has just let the lock go and asks again waits at the queue until that one has had its turn.
//!
//! The order is: the process's one SQLite connection first, then the turn (a process asks for
//! at most one turn at a time, and never waits for a turn while holding one). A write that does
//! not get its turn within [`TURN_WAIT`] runs without it and SQLite's lock still keeps the file
//! whole: the turn only orders the waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

/// How long a write waits for its turn before it runs anyway (SQLite's busy timeout is 5 s).
const TURN_WAIT: Duration = Duration::from_secs(5);

/// The lock file replicas on one data dir take turns on, and the turnstile before it.
#[derive(Clone, Debug)]
pub struct WriteTurns {
    path: Arc<PathBuf>,
    queue: Arc<PathBuf>,
}

/// This process's turn to write, until dropped.
pub struct Turn {
    _lock: Option<Flock<std::fs::File>>,
}

impl WriteTurns {
    /// The turns of the replicas on the data dir `dir` (its `write.lock` and `write.queue`).
    pub fn new(dir: &Path) -> std::io::Result<WriteTurns> {
        let path = dir.join("write.lock");
        let queue = dir.join("write.queue");
        open(&path)?;
        open(&queue)?;
        Ok(WriteTurns {
            path: Arc::new(path),
            queue: Arc::new(queue),
        })
    }

    /// Waits for this process's turn to write: the queue, then the lock (at most [`TURN_WAIT`]
    /// in all; a turn without the lock after that, or when a lock file cannot be opened, and
    /// SQLite's busy handler decides).
    pub async fn take(&self) -> Turn {
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        let Some(queue) = lock(&self.queue, deadline).await else {
            return Turn { _lock: None };
        };
        let turn = Turn {
            _lock: lock(&self.path, deadline).await,
        };
        drop(queue);
        turn
    }
}

/// An exclusive `flock` of `path` (a new open file: a flock belongs to the open file, not the
/// process), waited for until `deadline`; None after that or when the file cannot be opened.
async fn lock(path: &Path, deadline: tokio::time::Instant) -> Option<Flock<std::fs::File>> {
    let f = open(path).ok()?;
    let f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Some(l),
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => f,
        Err(_) => return None,
    };
    // Another replica has it: wait in the kernel's queue, on a thread of the blocking pool.
    // Given up at the deadline, the thread still takes the lock when its turn comes and lets it
    // go at once (its result is dropped).
    let waiting = tokio::task::spawn_blocking(move || Flock::lock(f, FlockArg::LockExclusive).ok());
    match tokio::time::timeout_at(deadline, waiting).await {
        Ok(Ok(lock)) => lock,
        _ => {
            tracing::warn!(
                "waited {TURN_WAIT:?} for the write turn on the shared data dir; writing without it"
            );
            None
        }
    }
}

/// A transaction, and on a shared SQLite data dir the turn it writes in (let go after the
/// transaction: fields drop in order). Used as the transaction's connection (`&mut *tx`).
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<Turn>,
}

impl Tx {
    pub fn new(tx: sqlx::Transaction<'static, sqlx::Any>, turn: Option<Turn>) -> Tx {
        Tx { tx, _turn: turn }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// The pool's connection, then (with `turns`) this process's turn: always in that order.
pub async fn connection_then_turn(
    pool: &sqlx::AnyPool,
    turns: Option<&WriteTurns>,
) -> Result<(sqlx::pool::PoolConnection<sqlx::Any>, Option<Turn>), sqlx::Error> {
    let conn = pool.acquire().await?;
    let turn = match turns {
        Some(t) => Some(t.take().await),
        None => None,
    };
    Ok((conn, turn))
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Whether a statement may write (anything but a read): those wait for the turn.
pub fn writes(sql: &str) -> bool {
    let head: String = sql
        .trim_start()
        .chars()
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    !(head.starts_with("SELECT") || head.starts_with("PRAGMA") || head.starts_with("EXPLAIN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_do_not_wait_for_a_turn() {
        assert!(!writes("SELECT 1"));
        assert!(!writes("  select id FROM users"));
        assert!(!writes("PRAGMA query_only = ON"));
        assert!(writes("UPDATE agents SET x = 1"));
        assert!(writes("INSERT INTO t VALUES (1)"));
        assert!(writes("DELETE FROM t"));
        assert!(writes("WITH x AS (SELECT 1) UPDATE t SET a = 1"));
    }

    #[tokio::test]
    async fn a_second_turn_waits_for_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let turns = WriteTurns::new(dir.path()).expect("turns");
        let first = turns.take().await;
        assert!(first._lock.is_some());
        let t2 = turns.clone();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let second = tokio::spawn(async move {
            let t = t2.take().await;
            let _ = tx.send(());
            t
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            rx.try_recv().is_err(),
            "the second turn came while the first was held"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second turn comes once the first ends")
            .expect("join");
        assert!(second._lock.is_some());
    }

    /// Two replicas (each `WriteTurns` opens files of its own, as a process does): the one
    /// that lets its turn go and asks again at once goes after the one that was waiting.
    #[tokio::test]
    async fn a_writer_asking_again_goes_after_the_one_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let busy = WriteTurns::new(dir.path()).expect("turns");
        let other = WriteTurns::new(dir.path()).expect("turns");
        let first = busy.take().await;
        assert!(first._lock.is_some());
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn(async move {
            let t = other.take().await;
            let _ = tx.send(());
            tokio::time::sleep(Duration::from_millis(300)).await;
            t
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "the turn came while held");
        // Let go and ask again at once, as a flush's next chunk does.
        drop(first);
        let again = tokio::spawn(async move { busy.take().await });
        tokio::time::timeout(Duration::from_secs(5), &mut rx)
            .await
            .expect("the waiting replica has its turn before the one that asked again")
            .expect("sent");
        assert!(
            !again.is_finished(),
            "the replica that asked again took the turn before the one waiting"
        );
        let w = waiting.await.expect("join");
        assert!(w._lock.is_some());
        drop(w);
        let again = tokio::time::timeout(Duration::from_secs(5), again)
            .await
            .expect("the second ask has its turn after")
            .expect("join");
        assert!(again._lock.is_some());
    }
}
