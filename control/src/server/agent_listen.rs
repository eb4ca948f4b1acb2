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

/// How long a connection may take to say what it is and finish its TLS handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Accepts TLS connections and serves `router` on each, with the peer's identity attached.
pub(super) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    state: super::AppState,
    limits: (super::listen::WaitingSlots, Duration),
    mut shutdown: watch::Receiver<bool>,
) {
    let (handshakes, header_timeout) = limits;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
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
        let state = state.clone();
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
                super::dial::accept(&state.dials, tcp, addr, &acceptor).await;
                return;
            }
            let tls = match tokio::time::timeout(HANDSHAKE_WAIT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %addr, "agent TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            drop(slot);
            let session = tls.get_ref().1;
            let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            state.metrics.agent_tls_handshake(resumed);
            // Read from the certificate on every connection, expiry included: a resumed
            // session's chain was verified when its ticket was issued, not now.
            let peer = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::ca::peer_cert(c, outpost_common::clock::now_ms() / 1000))
                .unwrap_or_default();
            let identity = PeerIdentity {
                id: peer.identity,
                serial: peer.serial,
                replica: peer.replica,
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
