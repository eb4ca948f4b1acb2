//! Accepting connections with limits: at most N open connections per source address (the
//! (N+1)th is closed at once), a deadline for each request's headers (a slow sender is cut
//! off), graceful shutdown. The API uses [`serve_http`]; the agent API counts its TLS
//! handshakes per source with [`SourceSlots`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use outpost_common::LockExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Things held at once per key (connections per source address, log followers per user),
/// with a cap.
#[derive(Clone)]
pub struct Slots<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    cap: usize,
}

/// Open connections per source address.
pub type SourceSlots = Slots<IpAddr>;

/// A held slot; dropping it frees it.
pub struct Slot<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Slots<K> {
    pub fn new(cap: usize) -> Self {
        Slots {
            counts: Arc::default(),
            cap,
        }
    }

    /// A slot for `key`, or None when it holds `cap` already.
    pub fn take(&self, key: K) -> Option<Slot<K>> {
        let mut m = self.counts.locked();
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut m = self.counts.locked();
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Per-address permits that a connection may wait for (a few seconds) instead of being
/// refused at once: a host's agents reconnecting together queue for their turn, while one
/// address holding many slow handshakes only ever delays itself.
#[derive(Clone)]
pub struct WaitingSlots {
    map: Arc<Mutex<HashMap<IpAddr, Arc<PerSource>>>>,
    cap: usize,
}

struct PerSource {
    permits: tokio::sync::Semaphore,
    /// Connections waiting for a permit (each holds a socket): at most four times the cap.
    waiting: Slots<()>,
}

impl WaitingSlots {
    pub fn new(cap: usize) -> Self {
        WaitingSlots {
            map: Arc::default(),
            cap: cap.max(1),
        }
    }

    /// A permit for `ip` within `wait`, or None.
    pub async fn take(&self, ip: IpAddr, wait: Duration) -> Option<Permit> {
        let src = {
            let mut m = self.map.locked();
            if m.len() >= 10_000 && !m.contains_key(&ip) {
                let cap = self.cap;
                m.retain(|_, s| s.permits.available_permits() < cap);
            }
            let cap = self.cap;
            m.entry(ip)
                .or_insert_with(|| {
                    Arc::new(PerSource {
                        permits: tokio::sync::Semaphore::new(cap),
                        waiting: Slots::new(cap.saturating_mul(4)),
                    })
                })
                .clone()
        };
        let immediate = src.permits.try_acquire().map(|p| p.forget()).is_ok();
        if immediate {
            return Some(Permit(src));
        }
        // Past the cap: wait a little, unless too many from this address wait already.
        let _waiting = src.waiting.take(())?;
        tokio::time::timeout(wait, src.permits.acquire())
            .await
            .ok()?
            .ok()?
            .forget();
        Some(Permit(src.clone()))
    }
}

/// A handshake permit of one address; dropping it gives it back.
pub struct Permit(Arc<PerSource>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.permits.add_permits(1);
    }
}

/// Marks a request that came on a plain TCP connection of [`serve_http`]'s: once upgraded, the
/// connection is the `TcpStream` itself (what a terminal hand-off passes on).
#[derive(Clone, Copy, Debug)]
pub struct PlainTcp;

/// Serves `router` on `listener` (HTTP/1.1 with upgrades) until `shutdown` is set.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    slots: SourceSlots,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "API listener accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::until_shutdown(&mut shutdown) => break,
        };
        let Some(slot) = slots.take(addr.ip()) else {
            tracing::debug!(%addr, "connection refused: too many from this address");
            drop(tcp);
            continue;
        };
        // Keystrokes and relay frames are small: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                    req.extensions_mut().insert(PlainTcp);
                    router.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            // HTTP/1.1 only (no HTTP/2 without TLS): an upgraded connection is then the
            // plain `TcpStream` itself, which the SSH relay splices in the kernel.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = super::until_shutdown(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
        // Reap finished connection tasks so the set stays small.
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_slots_queue_then_give_up() {
        let s = WaitingSlots::new(1);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let first = s.take(a, Duration::from_millis(10)).await.expect("first");
        assert!(
            s.take(a, Duration::from_millis(20)).await.is_none(),
            "gives up"
        );
        let s2 = s.clone();
        let waiter =
            tokio::spawn(async move { s2.take(a, Duration::from_secs(5)).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(
            waiter.await.expect("joined"),
            "the waiter got the freed permit"
        );
    }

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let s = SourceSlots::new(2);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let one = s.take(a).expect("first");
        let _two = s.take(a).expect("second");
        assert!(s.take(a).is_none());
        assert!(s.take(b).is_some(), "another address is not affected");
        drop(one);
        assert!(s.take(a).is_some());
    }
}
