//! Replicas on one SQLite data dir (`--shared-data-dir`: several `outpost server` processes on
//! one host, one database file). What PostgreSQL gives replicas on a shared database is made
//! here from the data dir, which only control's user may enter (0700):
//! - the data dir's lock, shared by such replicas and exclusive for a server alone, so a mix
//!   refuses to start;
//! - a start-up turn (`start.lock`): one server at a time migrates, creates the CA and the
//!   built-in templates;
//! - the leader's lock (`leader.lock`, flock: the kernel lets it go when the holder dies);
//! - the bus: a Unix datagram socket per replica in `bus/`, named by its id; an event goes to
//!   every other socket there, one datagram per batch of lines. A socket nobody reads any more
//!   (its server was killed) refuses a datagram and is removed.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The largest datagram the bus sends: events batch into lines up to this size.
const DATAGRAM: usize = 32 * 1024;

fn open_lock_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))
}

/// Takes the data dir's lock: exclusive for a server alone on it, shared for replicas
/// (`shared`). Held until the returned file is dropped.
pub fn lock_data_dir(dir: &Path, shared: bool) -> anyhow::Result<Flock<std::fs::File>> {
    let f = open_lock_file(&dir.join("server.lock"))?;
    let arg = if shared {
        FlockArg::LockSharedNonblock
    } else {
        FlockArg::LockExclusiveNonblock
    };
    Flock::lock(f, arg).map_err(|_| {
        if shared {
            anyhow::anyhow!(
                "an outpost server without --shared-data-dir is running on the data dir {}. Stop it and start every server on this data dir with --shared-data-dir",
                dir.display()
            )
        } else {
            anyhow::anyhow!(
                "another outpost server is running on the data dir {}. Stop it; or start every server on this data dir with --shared-data-dir (replicas on this host), or each with --postgres-url on one PostgreSQL database",
                dir.display()
            )
        }
    })
}

/// Waits for this server's start-up turn on the data dir; the turn ends when the returned lock
/// is dropped.
pub async fn start_turn(dir: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    let f = open_lock_file(&dir.join("start.lock"))?;
    tokio::task::spawn_blocking(move || {
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("waiting for the start-up turn: {e}"))
    })
    .await?
}

/// The leader's lock if no other replica holds it.
pub fn try_lead(dir: &Path) -> anyhow::Result<Option<Flock<std::fs::File>>> {
    let f = open_lock_file(&dir.join("leader.lock"))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::anyhow!("taking the leader's lock: {e}")),
    }
}

/// This replica's end of the bus.
pub struct Bus {
    sock: tokio::net::UnixDatagram,
    dir: PathBuf,
    own: PathBuf,
}

impl Bus {
    /// Binds this replica's socket (`bus/ID`).
    pub fn bind(data_dir: &Path, id: &str) -> anyhow::Result<Bus> {
        let dir = data_dir.join("bus");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let own = dir.join(id);
        let sock = tokio::net::UnixDatagram::bind(&own).map_err(|e| {
            anyhow::anyhow!(
                "binding the replicas' bus at {} ({e}; a Unix socket's path has at most 107 bytes: a shorter --data-dir helps)",
                own.display()
            )
        })?;
        Ok(Bus { sock, dir, own })
    }

    /// Sends `lines` to every other replica, in datagrams of whole lines. A replica whose
    /// queue is full misses them (waiters recheck on their own timers).
    pub fn send(&self, lines: &[String]) -> std::io::Result<()> {
        let mut datagrams = Vec::new();
        let mut cur = Vec::new();
        for l in lines {
            if !cur.is_empty() && cur.len() + l.len() + 1 > DATAGRAM {
                datagrams.push(std::mem::take(&mut cur));
            }
            cur.extend_from_slice(l.as_bytes());
            cur.push(b'\n');
        }
        if !cur.is_empty() {
            datagrams.push(cur);
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path == self.own {
                continue;
            }
            for d in &datagrams {
                match self.sock.try_send_to(d, &path) {
                    Ok(_) => {}
                    // Nobody reads there: a replica killed without removing its socket.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        let _ = std::fs::remove_file(&path);
                        break;
                    }
                    // Gone meanwhile.
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        tracing::warn!(replica = %path.display(), "a replica's event queue is full; events to it were dropped");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, replica = %path.display(), "passing events to a replica");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The next datagram's lines.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sock.recv(buf).await
    }

    /// The largest datagram `send` makes.
    pub fn datagram_max() -> usize {
        DATAGRAM
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.own);
    }
}
