//! The agent listener: TLS connections (agents, other replicas) served with the agent router
//! and the peer's certificate identity attached, and the agents' plain SSH dial-backs
//! (`dial.rs`), told apart by their first byte.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_api::relay;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::agent::PeerIdentity;
use super::dial::Dials;

/// How long a connection may take to say what it is and finish its TLS handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once, over every address. A handshake is CPU work; when
/// tens of thousands of agents reconnect together (a restart), running them all at once
/// makes each one slow, and past the agents' connect timeout every one of them is work
/// thrown away. Past the cap a connection waits in line ([`LINE_WAIT`]), and past the line
/// (more than [`LINE`] waiting) it is closed at once and its agent backs off. The cap leaves
/// room for agents far away: a handshake takes two round trips, so 256 at 100 ms is still
/// over a thousand a second.
const HANDSHAKES_AT_ONCE: usize = 256;
const LINE: usize = 4096;
const LINE_WAIT: Duration = Duration::from_secs(5);

/// The cap on handshakes in progress and the line before it.
struct Handshakes {
    permits: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    line: usize,
    wait: Duration,
}

impl Handshakes {
    fn new(at_once: usize, line: usize, wait: Duration) -> Self {
        Handshakes {
            permits: tokio::sync::Semaphore::new(at_once),
            waiting: Default::default(),
            line,
            wait,
        }
    }

    /// A permit within the line's wait, or None (the line is full, or the wait ran out).
    async fn take(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.permits.try_acquire() {
            return Some(p);
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.line {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let p = tokio::time::timeout(self.wait, self.permits.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        p.ok()?.ok()
    }
}

/// Accepts TLS connections and serves `router` on each, with the peer's identity attached.
pub(super) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    dials: Arc<Dials>,
    limits: (super::listen::WaitingSlots, Duration),
    mut shutdown: watch::Receiver<bool>,
) {
    let (handshakes, header_timeout) = limits;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let busy = Arc::new(Handshakes::new(HANDSHAKES_AT_ONCE, LINE, LINE_WAIT));
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "agent listener accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::server::until_shutdown(&mut shutdown) => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        let handshakes = handshakes.clone();
        let dials = dials.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            // Handshakes in progress are capped per address: past the cap a connection waits
            // a little for its turn (agents of one host reconnect together), then is closed.
            let Some(slot) = handshakes.take(addr.ip(), Duration::from_secs(5)).await else {
                tracing::debug!(%addr, "agent API: too many handshakes from this address");
                return;
            };
            // A TLS record starts with 0x16; an agent's SSH dial-back with its preamble.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HANDSHAKE_WAIT, tcp.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return,
            }
            if first[0] == relay::dial::MAGIC[0] {
                super::dial::accept(&dials, tcp, addr, &acceptor).await;
                return;
            }
            let Some(turn) = busy.take().await else {
                tracing::debug!(%addr, "agent API: too many handshakes waiting");
                return;
            };
            let tls = match tokio::time::timeout(HANDSHAKE_WAIT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %addr, "agent TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            drop((turn, slot));
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let id = leaf.and_then(|c| crate::ca::identity_from_cert(c));
            let serial = leaf.and_then(|c| crate::ca::serial_from_cert(c));
            let replica = leaf.and_then(|c| crate::ca::replica_from_cert(c));
            let identity = PeerIdentity {
                id,
                serial,
                replica,
                addr,
            };
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(identity.clone());
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = crate::server::until_shutdown(&mut shutdown) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshakes_past_the_cap_wait_in_a_bounded_line() {
        let h = Arc::new(Handshakes::new(2, 1, Duration::from_millis(300)));
        let (a, b) = (h.take().await, h.take().await);
        assert!(a.is_some() && b.is_some(), "the first two go at once");
        // The third waits in line; with the line full, a fourth is refused at once.
        let h2 = h.clone();
        let third = tokio::spawn(async move { h2.take().await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = std::time::Instant::now();
        assert!(h.take().await.is_none(), "past the line: refused");
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "refused without waiting"
        );
        // A finished handshake lets the one in line go.
        drop(a);
        assert!(third.await.unwrap(), "the one in line got its turn");
        // Both held again and nobody finishes: the wait runs out.
        let c = h.take().await;
        assert!(c.is_some());
        let t = std::time::Instant::now();
        assert!(h.take().await.is_none() && h.take().await.is_none());
        assert!(
            t.elapsed() >= Duration::from_millis(550),
            "each waited its line's wait"
        );
        assert_eq!(h.waiting.load(std::sync::atomic::Ordering::Relaxed), 0);
        drop((b, c));
        assert!(h.take().await.is_some());
    }
}
