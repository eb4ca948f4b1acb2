//! Streams between replicas. A client that reaches replica A for a workspace whose agent's
//! tunnel is held by replica B is carried through B: A keeps one connection to each peer, TLS
//! 1.3 to B's agent listener with both sides checked against the CA the replicas share (A
//! presents a replica certificate), upgraded (`GET /replica/v1/tunnel`) to HTTP/2, on which A
//! opens one stream per relayed connection (`POST /stream?agent=ID&path=/ssh`). B opens that
//! stream on the agent's tunnel and pipes both ways: bytes are streamed, never buffered beyond
//! the HTTP/2 windows.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use outpost_api::relay;

use super::agent::PeerIdentity;
use super::error::{ApiError, ApiResult};
use super::relay::{FrameSender, ReceiverStream};
use super::AppState;
use crate::store::ReplicaRow;

pub const PEER_TUNNEL: &str = "/replica/v1/tunnel";
const UPGRADE_PEER: &str = "outpost-peer";
/// The replica answering a tunnel names itself.
const REPLICA_HEADER: &str = "x-outpost-replica";

type PeerSender = hyper::client::conn::http2::SendRequest<StreamBody<ReceiverStream>>;
type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Connections to other replicas, by replica id.
#[derive(Default)]
pub struct Peers {
    conns: tokio::sync::Mutex<HashMap<String, PeerSender>>,
}

fn unreachable(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "replica_unreachable",
        format!("the replica holding the workspace's agent tunnel is unreachable ({why}); retry in a moment"),
    )
}

/// Opens a stream on an agent's tunnel held by another replica; `None` when no other live
/// replica holds it.
pub(super) async fn open(
    state: &AppState,
    agent_id: &str,
    path: &str,
) -> ApiResult<Option<(FrameSender, Incoming)>> {
    if !state.cluster.shared() {
        return Ok(None);
    }
    let Some(holder) = state.store.tunnel_replica(agent_id).await? else {
        return Ok(None);
    };
    if holder == state.cluster.id {
        return Ok(None);
    }
    let fresh = super::cluster::stale_after(state).as_millis() as i64;
    let Some(peer) = state.store.replica(&holder, fresh).await? else {
        return Ok(None);
    };
    let mut sender = sender(state, &peer).await?;
    if sender.ready().await.is_err() {
        state.peers.conns.lock().await.remove(&peer.id);
        sender = sender_fresh(state, &peer).await?;
        sender.ready().await.map_err(unreachable)?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let uri = format!(
        "/stream?agent={}&path={}",
        outpost_api::percent_encode(agent_id),
        outpost_api::percent_encode(path)
    );
    let req = hyper::Request::post(uri)
        .body(StreamBody::new(ReceiverStream(rx)))
        .map_err(ApiError::internal)?;
    let resp = sender.send_request(req).await.map_err(unreachable)?;
    if resp.status() != StatusCode::OK {
        return Err(super::relay::refusal(resp).await);
    }
    Ok(Some((tx, resp.into_body())))
}

async fn sender(state: &AppState, peer: &ReplicaRow) -> ApiResult<PeerSender> {
    if let Some(s) = state.peers.conns.lock().await.get(&peer.id) {
        if !s.is_closed() {
            return Ok(s.clone());
        }
    }
    sender_fresh(state, peer).await
}

async fn sender_fresh(state: &AppState, peer: &ReplicaRow) -> ApiResult<PeerSender> {
    let s = tokio::time::timeout(Duration::from_secs(10), connect(state, peer))
        .await
        .map_err(|_| unreachable("timed out"))?
        .map_err(|e| unreachable(format!("{e:#}")))?;
    state
        .peers
        .conns
        .lock()
        .await
        .insert(peer.id.clone(), s.clone());
    Ok(s)
}

async fn connect(state: &AppState, peer: &ReplicaRow) -> anyhow::Result<PeerSender> {
    let url = &peer.replica_url;
    let host = super::host_of(url).ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no port in {url}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let config = state.ca.replica_client_config(&state.cluster.id)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn.with_upgrades());
    let req = hyper::Request::get(PEER_TUNNEL)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, UPGRADE_PEER)
        .body(Empty::<Bytes>::new())?;
    let resp = h1.send_request(req).await?;
    anyhow::ensure!(
        resp.status() == StatusCode::SWITCHING_PROTOCOLS,
        "it answered {} to the replica tunnel",
        resp.status()
    );
    // The address may have been taken by another replica since (a restart, a balancer).
    let answered = resp
        .headers()
        .get(REPLICA_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    anyhow::ensure!(
        answered == peer.id,
        "{url} is replica {answered:?} now, not {:?}",
        peer.id
    );
    let upgraded = hyper::upgrade::on(resp).await?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(relay::STREAM_WINDOW)
        .initial_connection_window_size(relay::CONNECTION_WINDOW)
        .max_frame_size(relay::MAX_FRAME_SIZE)
        .keep_alive_interval(relay::KEEPALIVE)
        .handshake::<_, StreamBody<ReceiverStream>>(upgraded)
        .await?;
    let id = peer.id.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, replica = %id, "replica connection ended");
        }
    });
    tracing::info!(replica = %peer.id, url = %url, "connected to a replica");
    Ok(sender)
}

/// `GET /replica/v1/tunnel` (agent listener, a replica's certificate): another replica's
/// connection, upgraded to HTTP/2, on which it opens streams to agents whose tunnels are here.
pub(super) async fn tunnel(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    mut req: Request,
) -> ApiResult<Response> {
    let Some(from) = peer.replica.clone() else {
        return Err(ApiError::unauthorized("unauthorized"));
    };
    let state_id = state.cluster.id.clone();
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("send Connection: upgrade"))?;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "replica tunnel upgrade failed");
                return;
            }
        };
        tracing::info!(replica = %from, "a replica connected");
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(stream(state, req).await) }
        });
        let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(relay::STREAM_WINDOW)
            .initial_connection_window_size(relay::CONNECTION_WINDOW)
            .max_frame_size(relay::MAX_FRAME_SIZE)
            .keep_alive_interval(relay::KEEPALIVE)
            .serve_connection(upgraded, service)
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, replica = %from, "replica tunnel ended");
        }
    });
    let mut resp = super::relay::switching(UPGRADE_PEER);
    if let Ok(v) = axum::http::HeaderValue::from_str(&state_id) {
        resp.headers_mut().insert(REPLICA_HEADER, v);
    }
    Ok(resp)
}

/// One stream another replica asked for: opened on the agent's tunnel here, piped both ways.
async fn stream(state: AppState, req: hyper::Request<Incoming>) -> hyper::Response<Boxed> {
    let (mut agent, mut path) = (String::new(), String::new());
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("agent", v)) => agent = super::web::percent_decode(v),
            Some(("path", v)) => path = super::web::percent_decode(v),
            _ => {}
        }
    }
    if agent.is_empty() || !path.starts_with('/') {
        return answer(
            StatusCode::BAD_REQUEST,
            "expected ?agent=ID&path=/KIND".into(),
        );
    }
    match super::relay::open_local(&state, &agent, &path).await {
        Ok((tx, down)) => {
            tokio::spawn(pipe(req.into_body(), tx));
            hyper::Response::new(down.boxed_unsync())
        }
        Err(e) => answer(e.status, e.message),
    }
}

/// The other replica's bytes, on to the agent; its end ends ours.
async fn pipe(mut body: Incoming, tx: FrameSender) {
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            if tx.send(Ok(Frame::data(data))).await.is_err() {
                return;
            }
        }
    }
}

fn answer(status: StatusCode, msg: String) -> hyper::Response<Boxed> {
    let mut r = hyper::Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}
