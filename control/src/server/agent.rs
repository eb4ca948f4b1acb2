//! The agent API on its own TLS listener: `POST /agent/v1/bootstrap` needs no client certificate;
//! every other route needs a certificate from our CA whose agent is not revoked. Every rejection
//! is the same generic 401.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_api::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::auth::{ct_eq, sha256_hex, split_token, BOOTSTRAP_TOKEN_PREFIX};
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{now_ms, AgentRow};

const BOOTSTRAP_BODY_LIMIT: usize = 64 * 1024;
const POLL_HOLD: Duration = Duration::from_secs(25);

/// Who the TLS layer says the peer is: (workspace id, agent id) from its verified certificate.
#[derive(Clone, Debug)]
pub struct PeerIdentity(pub Option<(String, String)>);

fn generic_401() -> ApiError {
    ApiError::unauthorized("unauthorized")
}

pub(super) fn router(state: AppState) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/agent/v1/bootstrap", post(bootstrap))
        .route("/agent/v1/poll", get(poll))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BOOTSTRAP_BODY_LIMIT))
        .with_state(state)
}

/// Accepts TLS connections and serves `router` on each, with the peer's identity attached.
pub(super) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = tokio::select! {
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
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "agent TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::ca::identity_from_cert(c));
            let identity = PeerIdentity(peer);
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(identity.clone());
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = crate::server::until_shutdown(&mut shutdown) => {}
            }
        });
    }
}

/// The calling agent, checked against the store on every request (revocation is immediate).
async fn authed_agent(state: &AppState, peer: &PeerIdentity) -> ApiResult<AgentRow> {
    let (ws, agent_id) = peer.0.as_ref().ok_or_else(generic_401)?;
    let agent = state.store.agent(agent_id).await?.ok_or_else(generic_401)?;
    if &agent.workspace_id != ws || agent.revoked_at.is_some() || agent.cert_serial.is_none() {
        return Err(generic_401());
    }
    Ok(agent)
}

async fn bootstrap(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<BootstrapRequest>,
) -> Result<Json<BootstrapResponse>, ApiError> {
    let Some((token_id, secret)) = split_token(&req.token, BOOTSTRAP_TOKEN_PREFIX) else {
        tracing::info!(
            outcome = "rejected",
            reason = "malformed token",
            "agent bootstrap"
        );
        return Err(generic_401());
    };
    // Check the CSR before spending the token; a bad CSR costs the caller nothing but a 401.
    if rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).is_err() {
        tracing::info!(
            outcome = "rejected",
            reason = "invalid CSR",
            "agent bootstrap"
        );
        return Err(generic_401());
    }
    let hash = sha256_hex(secret);
    // Compare in constant time before the atomic consume (which matches the hash exactly).
    match state.store.bootstrap_token_secret_hash(token_id).await? {
        Some(h) if ct_eq(&h, &hash) => {}
        _ => {
            tracing::info!(
                outcome = "rejected",
                reason = "unknown token or wrong secret",
                "agent bootstrap"
            );
            return Err(generic_401());
        }
    }
    let Some((workspace_id, agent_id)) = state
        .store
        .consume_bootstrap_token(token_id, &hash, now_ms())
        .await?
    else {
        tracing::info!(
            outcome = "rejected",
            reason = "used or expired token",
            "agent bootstrap"
        );
        return Err(generic_401());
    };
    let agent = state
        .store
        .agent(&agent_id)
        .await?
        .ok_or_else(generic_401)?;
    if agent.revoked_at.is_some() {
        return Err(generic_401());
    }
    let issued = match state.ca.sign_agent_csr(
        &req.csr_pem,
        &workspace_id,
        &agent_id,
        Duration::from_secs(state.config.agent_cert_lifetime_secs),
    ) {
        Ok(i) => i,
        Err(e) => {
            tracing::info!(outcome = "rejected", reason = %e, "agent bootstrap");
            return Err(generic_401());
        }
    };
    let version: Option<String> = req.version.map(|v| v.chars().take(64).collect());
    state
        .store
        .set_agent_certificate(
            &agent_id,
            &issued.serial,
            issued.expires_at_ms,
            version.as_deref(),
        )
        .await?;
    tracing::info!(outcome = "issued", workspace = %workspace_id, agent = %agent_id, serial = %issued.serial, "agent bootstrap");
    state.bump_progress();
    Ok(Json(BootstrapResponse {
        workspace_id,
        agent_id,
        certificate_pem: issued.pem,
        ca_pem: state.ca.cert_pem().to_string(),
        expires_at: issued.expires_at_ms,
    }))
}

/// Long poll: returns pending commands at once, or holds up to 25 s for one to arrive. The first
/// authenticated poll marks the agent connected (and so the workspace running).
async fn poll(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
) -> Result<Response, ApiError> {
    let agent = authed_agent(&state, &peer).await?;
    let first = agent.first_connected_at.is_none();
    state.store.agent_seen(&agent.id, now_ms()).await?;
    if first {
        tracing::info!(agent = %agent.id, workspace = %agent.workspace_id, "agent connected");
        state.bump_progress();
    }
    let waker = state.agent_waker(&agent.id);
    let deadline = tokio::time::Instant::now() + POLL_HOLD;
    let mut shutdown = state.shutdown.clone();
    loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let cmds = state.store.take_commands(&agent.id).await?;
        if !cmds.is_empty() {
            let commands = cmds
                .iter()
                .filter_map(|k| match k.as_str() {
                    "stop" => Some(AgentCommand::Stop),
                    _ => None,
                })
                .collect();
            return Ok(Json(PollResponse { commands }).into_response());
        }
        // Revoked while we held the poll: end it.
        authed_agent(&state, &peer).await?;
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Json(PollResponse { commands: vec![] }).into_response());
            }
            _ = crate::server::until_shutdown(&mut shutdown) => {
                return Ok(StatusCode::SERVICE_UNAVAILABLE.into_response());
            }
        }
    }
}

async fn heartbeat(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let agent = authed_agent(&state, &peer).await?;
    let lifecycle = req
        .lifecycle
        .and_then(|l| serde_json::to_value(l).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    let stats = serde_json::to_string(&req).map_err(ApiError::internal)?;
    state
        .store
        .agent_heartbeat(&agent.id, now_ms(), lifecycle.as_deref(), &stats)
        .await?;
    Ok(Json(serde_json::json!({})))
}
