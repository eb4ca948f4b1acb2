//! What an SSH connection may hold before it logs in: a bounded number of connections not
//! logged in yet on the direct listener, per address and in all ([`SourceSlot`], given back at
//! login), and a grace after which a connection that has not logged in is cut ([`Killable`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections one address may hold on the direct SSH listener before they log in (OpenSSH's
/// MaxStartups counts the same; logged-in sessions are not limited).
const SSH_CONNECTIONS_PER_SOURCE: usize = 128;
/// Connections all addresses together may hold before they log in: many addresses (an IPv6
/// prefix, a botnet) cannot hold more memory than this many handshakes need.
const SSH_CONNECTIONS_NOT_LOGGED_IN: usize = 512;

/// The direct listener's connections not logged in yet: per address, and in all.
#[derive(Default)]
pub struct Slots {
    per_source: HashMap<IpAddr, usize>,
    total: usize,
}

type Counts = Arc<Mutex<Slots>>;

fn lock(m: &Counts) -> std::sync::MutexGuard<'_, Slots> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One of an address's connection slots, given back when dropped.
pub struct SourceSlot {
    map: Counts,
    ip: IpAddr,
}

impl SourceSlot {
    /// A slot for a connection from `ip`; None when that address, or all of them together,
    /// already hold as many connections not logged in as they may.
    pub fn take(map: &Counts, ip: IpAddr) -> Option<SourceSlot> {
        let mut m = lock(map);
        if m.total >= SSH_CONNECTIONS_NOT_LOGGED_IN {
            return None;
        }
        let n = m.per_source.entry(ip).or_insert(0);
        if *n >= SSH_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *n += 1;
        m.total += 1;
        Some(SourceSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = lock(&self.map);
        m.total = m.total.saturating_sub(1);
        if let Some(n) = m.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.per_source.remove(&self.ip);
            }
        }
    }
}

struct KillState {
    killed: AtomicBool,
    /// Set when the stream is gone (nothing left to kill).
    done: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// Ends a [`Killable`] stream from outside.
pub struct Kill(Arc<KillState>);

impl Kill {
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::SeqCst);
        self.0.reader.wake();
        self.0.writer.wake();
    }

    /// Whether the stream already ended by itself.
    pub fn is_done(&self) -> bool {
        self.0.done.load(Ordering::SeqCst)
    }
}

/// A stream that fails every read and write once killed (waking a pending one), so whoever
/// runs it ends and drops it, closing the connection.
pub struct Killable<S> {
    io: S,
    state: Arc<KillState>,
}

impl<S> Killable<S> {
    pub fn new(io: S) -> (Self, Kill) {
        let state = Arc::new(KillState {
            killed: AtomicBool::new(false),
            done: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        (
            Killable {
                io,
                state: state.clone(),
            },
            Kill(state),
        )
    }

    fn killed(&self) -> bool {
        self.state.killed.load(Ordering::SeqCst)
    }
}

impl<S> Drop for Killable<S> {
    fn drop(&mut self) {
        self.state.done.store(true, Ordering::SeqCst);
    }
}

fn cut() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "no login in time")
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.state.reader.register(cx.waker());
        if self.killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.state.writer.register(cx.waker());
        if self.killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_killed_stream_fails_its_pending_read() {
        let (a, _b) = tokio::io::duplex(64);
        let (mut k, kill) = Killable::new(a);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            k.read(&mut buf).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        kill.kill();
        let r = reader.await.expect("joined");
        assert!(r.is_err());
        assert!(kill.is_done(), "the stream was dropped with its task");
    }

    #[test]
    fn slots_per_address() {
        let m: Counts = Arc::default();
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        let slots: Vec<_> = (0..SSH_CONNECTIONS_PER_SOURCE)
            .map(|_| SourceSlot::take(&m, ip).expect("slot"))
            .collect();
        assert!(SourceSlot::take(&m, ip).is_none());
        drop(slots);
        assert!(SourceSlot::take(&m, ip).is_some());
    }

    #[test]
    fn slots_in_all() {
        let m: Counts = Arc::default();
        let held: Vec<_> = (0..SSH_CONNECTIONS_NOT_LOGGED_IN)
            .map(|i| {
                let ip = IpAddr::from([10, 0, (i / 100) as u8, (i % 100) as u8]);
                SourceSlot::take(&m, ip).expect("slot")
            })
            .collect();
        let fresh: IpAddr = "10.9.9.9".parse().expect("ip");
        assert!(SourceSlot::take(&m, fresh).is_none(), "past the cap in all");
        drop(held);
        let one = SourceSlot::take(&m, fresh);
        assert!(one.is_some());
        assert_eq!(lock(&m).total, 1);
        assert_eq!(
            lock(&m).per_source.len(),
            1,
            "given-back addresses are forgotten"
        );
    }
}
