//! The relay: each agent keeps one tunnel to control (an upgraded mTLS connection on which the
//! agent serves HTTP/2); a client stream (`outpost ssh --stdio`, `outpost port-forward`) is
//! authorised here, then bridged to a new HTTP/2 stream on its workspace's tunnel. SSH goes by
//! the agent's own dialed connection instead where it can (`dial.rs`, `splice.rs`).

use super::error::ApiPath;
use outpost_common::LockExt;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::agent::PeerIdentity;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::AppState;
use outpost_api::{relay, WorkspaceStatus};

type Sender = hyper::client::conn::http2::SendRequest<StreamBody<ReceiverStream>>;

/// The live tunnels, by agent id, and the agents whose tunnel went down in this process.
#[derive(Default)]
pub struct Tunnels {
    map: Mutex<HashMap<String, (u64, Sender)>>,
    lost: Mutex<std::collections::HashSet<String>>,
    next: std::sync::atomic::AtomicU64,
}

impl Tunnels {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Sender)>> {
        self.map.locked()
    }
    fn lost(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.lost.locked()
    }
    fn get(&self, agent: &str) -> Option<Sender> {
        self.map().get(agent).map(|(_, s)| s.clone())
    }
    fn insert(&self, agent: &str, s: Sender) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.map().insert(agent.to_string(), (id, s));
        self.lost().remove(agent);
        id
    }
    fn remove(&self, agent: &str, id: u64) {
        let mut m = self.map();
        if m.get(agent).is_some_and(|(i, _)| *i == id) {
            m.remove(agent);
            self.lost().insert(agent.to_string());
        }
    }
    pub fn forget(&self, agent: &str) {
        self.map().remove(agent);
        self.lost().remove(agent);
    }
    /// Does this process hold the agent's tunnel?
    pub fn is_up(&self, agent: &str) -> bool {
        self.map().contains_key(agent)
    }
    /// Did the agent's tunnel go down in this process (and not come back yet)?
    pub fn was_lost(&self, agent: &str) -> bool {
        self.lost().contains(agent)
    }
}

pub struct ReceiverStream(pub tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl futures_util::Stream for ReceiverStream {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

pub(super) fn switching(proto: &str) -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, proto)],
    )
        .into_response()
}

/// `GET /agent/v1/tunnel` (agent API, mTLS): the agent's side of the relay.
pub(super) async fn agent_tunnel(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    mut req: Request,
) -> ApiResult<Response> {
    let agent = super::agent::authed_agent_for_relay(&state, &peer).await?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("send Connection: upgrade"))?;
    let st = state.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .initial_stream_window_size(relay::STREAM_WINDOW)
            .initial_connection_window_size(relay::CONNECTION_WINDOW)
            .max_frame_size(relay::MAX_FRAME_SIZE)
            .keep_alive_interval(relay::KEEPALIVE)
            .handshake::<_, StreamBody<ReceiverStream>>(upgraded)
            .await;
        let (sender, conn) = match handshake {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel handshake failed");
                return;
            }
        };
        let id = st.tunnels.insert(&agent.id, sender);
        // The other replicas find the tunnel here.
        let shared = st.cluster.shared();
        if shared {
            let _ = st.store.set_tunnel_replica(&agent.id, &st.cluster.id).await;
        }
        tracing::info!(agent = %agent.id, "relay tunnel up");
        let _ = conn.await;
        st.tunnels.remove(&agent.id, id);
        if shared && !st.tunnels.is_up(&agent.id) {
            let _ = st
                .store
                .clear_tunnel_replica(&agent.id, &st.cluster.id)
                .await;
        }
        tracing::info!(agent = %agent.id, "relay tunnel down");
    });
    Ok(switching(relay::UPGRADE_TUNNEL))
}

/// `GET /api/v1/workspaces/{name}/relay/ssh` (upgrade): an SSH connection to the workspace.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{name}/relay/ssh",
    tag = "relay",
    summary = "Upgrade to a byte stream to the workspace's SSH server (`Upgrade: outpost-relay`)",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 101, description = "Switching protocols")),
)]
pub(super) async fn relay_ssh(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> ApiResult<Response> {
    let w =
        super::lookup::connect_workspace(&state, &auth, &name, super::lookup::Reach::Ssh).await?;
    relay(state, auth, w, relay::stream::SSH.to_string(), req).await
}

/// `GET /api/v1/workspaces/{name}/relay/tcp/{port}` (upgrade): a TCP connection to a port.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{name}/relay/tcp/{port}",
    tag = "relay",
    summary = "Upgrade to a byte stream to a TCP port inside the workspace (`Upgrade: outpost-relay`)",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
        ("port" = u16, Path, description = "A TCP port inside the workspace"),
    ),
    responses((status = 101, description = "Switching protocols")),
)]
pub(super) async fn relay_tcp(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath((name, port)): ApiPath<(String, u16)>,
    req: Request,
) -> ApiResult<Response> {
    let w = super::lookup::connect_workspace(&state, &auth, &name, super::lookup::Reach::Tcp(port))
        .await?;
    relay(state, auth, w, relay::stream::tcp(port), req).await
}

async fn relay(
    state: AppState,
    auth: AuthUser,
    w: crate::store::WorkspaceRow,
    path: String,
    mut req: Request,
) -> ApiResult<Response> {
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| {
            ApiError::bad_request("send Connection: upgrade and Upgrade: outpost-relay")
        })?;
    let agent = ready_agent(&state, &w).await?;
    let ssh = path == relay::stream::SSH;
    if ssh {
        // SSH goes by the agent's own connection where it can (see dial.rs).
        if let Some(tcp) = super::dial::ssh(&state, &agent).await {
            state.metrics.relay_ssh_path("dial");
            tokio::spawn(spliced(state, auth.user.id, on_upgrade, tcp));
            return Ok(switching(relay::UPGRADE_RELAY));
        }
        state.metrics.relay_ssh_path("tunnel");
    }
    let (tx, down) = open_agent(&state, &agent, &path).await?;
    // A suspension of the caller ends the relay at once.
    let cut = state.user_cut(&auth.user.id);
    let kind = if ssh { "ssh" } else { "tcp" };
    tokio::spawn(async move {
        let _open = OpenRelay::new(&state);
        let (_stream, bytes_up, bytes_down) = state.metrics.relay_opened(kind);
        let client = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(_) => return,
        };
        let (crd, cwr) = tokio::io::split(client);
        let crd = super::metrics::Counted {
            inner: crd,
            bytes: bytes_up,
        };
        let cwr = super::metrics::Counted {
            inner: cwr,
            bytes: bytes_down,
        };
        let up = tokio::spawn(outpost_common::pump::reader_to_frames(crd, tx));
        tokio::select! {
            _ = outpost_common::pump::body_to_writer(down, cwr) => {}
            _ = cut => {}
        }
        up.abort();
    });
    Ok(switching(relay::UPGRADE_RELAY))
}

/// A client's SSH connection bridged to the agent's dialed one: spliced in the kernel when the
/// client's connection is plain TCP, copied otherwise (a TLS client).
async fn spliced(
    state: AppState,
    user: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut agent: tokio::net::TcpStream,
) {
    use tokio::io::AsyncWriteExt;
    let _open = OpenRelay::new(&state);
    let (_stream, up, down) = state.metrics.relay_opened("ssh");
    let cut = state.user_cut(&user);
    let Ok(client) = on_upgrade.await else {
        return;
    };
    let pump = async move {
        match client.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => {
                // What the client sent right after its request, already read by the server.
                if !parts.read_buf.is_empty() {
                    if agent.write_all(&parts.read_buf).await.is_err() {
                        return;
                    }
                    up.inc_by(parts.read_buf.len() as u64);
                }
                let client = parts.io.into_inner();
                super::splice::both_ways(&client, &agent, up, down).await;
            }
            Err(client) => {
                let (crd, cwr) = tokio::io::split(TokioIo::new(client));
                let (ard, awr) = agent.into_split();
                let crd = super::metrics::Counted {
                    inner: crd,
                    bytes: up,
                };
                let cwr = super::metrics::Counted {
                    inner: cwr,
                    bytes: down,
                };
                let _ = tokio::join!(copy_then_close(crd, awr), copy_then_close(ard, cwr));
            }
        }
    };
    tokio::select! {
        _ = pump => {}
        _ = cut => {}
    }
}

async fn copy_then_close<R, W>(mut rd: R, mut wr: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let _ = tokio::io::copy(&mut rd, &mut wr).await;
    let _ = wr.shutdown().await;
}

/// One open relay, counted while it lives (a shutdown waits for the count to drop).
struct OpenRelay(AppState);

impl OpenRelay {
    fn new(state: &AppState) -> Self {
        state
            .open_relays
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenRelay(state.clone())
    }
}

impl Drop for OpenRelay {
    fn drop(&mut self) {
        self.0
            .open_relays
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The most of an agent's refusal text control reads.
const RELAY_ERROR_BODY_MAX: usize = 4096;

/// Opens a stream of kind `path` (`/ssh`, `/tcp/PORT`, `/pty?..`) to the workspace's agent:
/// the sender of the bytes going up, and the body of the bytes coming down.
pub(super) async fn open(
    state: &AppState,
    w: &crate::store::WorkspaceRow,
    path: &str,
) -> ApiResult<(FrameSender, hyper::body::Incoming)> {
    let agent = ready_agent(state, w).await?;
    open_agent(state, &agent, path).await
}

/// The agent id of a running workspace (else a conflict saying how to start it); counts as
/// the workspace's activity.
pub(super) async fn ready_agent(
    state: &AppState,
    w: &crate::store::WorkspaceRow,
) -> ApiResult<String> {
    let name = &w.name;
    let view = super::workspaces::workspace_view(state, w).await?;
    if view.status != WorkspaceStatus::Running {
        return Err(ApiError::conflict(format!(
            "workspace {name:?} is {}: start it with `outpost start {name}`",
            view.status
        )));
    }
    let agent = view
        .agent
        .ok_or_else(|| ApiError::conflict("the workspace has no agent"))?;
    // SSH, terminals, port forwards and app traffic all come through here: activity.
    state.liveness.activity(&w.id, crate::store::now_ms());
    Ok(agent.id)
}

/// Opens a stream on an agent's tunnel, here or through the replica holding it.
pub(super) async fn open_agent(
    state: &AppState,
    agent: &str,
    path: &str,
) -> ApiResult<(FrameSender, hyper::body::Incoming)> {
    if state.tunnels.get(agent).is_none() {
        // Another replica may hold the tunnel: the stream goes through it.
        if let Some(opened) = super::peer::open(state, agent, path).await? {
            return Ok(opened);
        }
    }
    open_local(state, agent, path).await
}

fn no_tunnel() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "agent_unreachable",
        "the workspace's agent has no relay tunnel to control right now; retry in a moment",
    )
}

/// Opens a stream on the agent's tunnel, which this process holds.
pub(super) async fn open_local(
    state: &AppState,
    agent_id: &str,
    path: &str,
) -> ApiResult<(FrameSender, hyper::body::Incoming)> {
    let sender = state.tunnels.get(agent_id).ok_or_else(no_tunnel)?;
    // Open the stream to the agent before answering, so a refused port is an error here.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let mut sender = sender;
    sender.ready().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_unreachable",
            "the relay tunnel closed; retry",
        )
    })?;
    let upstream = hyper::Request::post(path)
        .body(StreamBody::new(ReceiverStream(rx)))
        .map_err(ApiError::internal)?;
    let resp = sender.send_request(upstream).await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_unreachable",
            "the agent did not answer on the relay",
        )
    })?;
    if resp.status() != StatusCode::OK {
        return Err(refusal(resp).await);
    }
    Ok((tx, resp.into_body()))
}

/// The error for a stream the far end (an agent, or a replica holding its tunnel) did not
/// open: its reason, read with a cap on size and time (it is not trusted to keep it short).
/// A 403 stays a 403 (a port the workspace does not listen on); anything else is a 502.
pub(super) async fn refusal(resp: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let refused = resp.status() == StatusCode::FORBIDDEN;
    let body = http_body_util::Limited::new(resp.into_body(), RELAY_ERROR_BODY_MAX);
    let msg = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg: String = String::from_utf8_lossy(&msg)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    ApiError::new(
        if refused {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_GATEWAY
        },
        "upstream_refused",
        if msg.is_empty() {
            "the agent refused the stream".to_string()
        } else {
            msg
        },
    )
}

/// [`open`], as a byte stream (for HTTP clients and the terminal bridge).
pub(super) async fn open_io(
    state: &AppState,
    w: &crate::store::WorkspaceRow,
    path: &str,
) -> ApiResult<tokio::io::DuplexStream> {
    let (tx, down) = open(state, w, path).await?;
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (rd, wr) = tokio::io::split(ours);
    tokio::spawn(outpost_common::pump::reader_to_frames(rd, tx));
    tokio::spawn(outpost_common::pump::body_to_writer(down, wr));
    Ok(theirs)
}

pub(super) type FrameSender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
