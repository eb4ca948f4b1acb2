//! The agent API on its own TLS listener: `POST /agent/v1/bootstrap` needs no client certificate;
//! every other route needs a certificate from a trusted CA whose agent is not revoked. Identity
//! comes only from that certificate. Every rejection is the same generic 401, and an audit event.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use outpost_api::*;

use super::auth::{ct_eq, sha256_hex, split_token, BOOTSTRAP_TOKEN_PREFIX};
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use crate::store::{now_ms, AgentRow};

const BODY_LIMIT: usize = 64 * 1024;
/// Agent log batches (the agent keeps them under 256 KiB of output).
const LOGS_BODY_LIMIT: usize = 1 << 20;
const POLL_HOLD: Duration = Duration::from_secs(25);

/// How long one poll is held at most: [`POLL_HOLD`] less up to a fifth, at random. Polls that a
/// stall made arrive together would otherwise all be answered together 25 s later, sent again
/// together, and so on (at 50,000 agents, a burst every hold).
fn poll_hold() -> Duration {
    use rand::Rng;
    POLL_HOLD.mul_f64(rand::thread_rng().gen_range(0.8..=1.0))
}

/// Who the TLS layer says the peer is: (workspace id, agent id) from its verified certificate.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub id: Option<(String, String)>,
    /// The client certificate's serial (hex): only the agent's current one, or the one before
    /// it during renewal's overlap, is accepted.
    pub serial: Option<String>,
    /// Another replica (its certificate names it), for replica-to-replica streams.
    pub replica: Option<String>,
    pub addr: SocketAddr,
}

fn generic_401() -> ApiError {
    ApiError::unauthorized("unauthorized")
}

pub(super) fn router(state: AppState) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route(agent_routes::BOOTSTRAP, post(bootstrap))
        .route(agent_routes::RENEW, post(renew))
        .route(agent_routes::POLL, get(poll))
        .route(agent_routes::HEARTBEAT, post(heartbeat))
        .route(agent_routes::MANIFEST, get(manifest))
        .route(agent_routes::SSH, post(report_ssh))
        .route(agent_routes::GIT_SSH_KEY, get(agent_git_key))
        .route(agent_routes::GIT_SIGN, post(agent_git_sign))
        .route(agent_routes::USER_TOKEN, post(agent_user_token))
        .route(
            agent_routes::LOGS,
            post(agent_logs).layer(DefaultBodyLimit::max(LOGS_BODY_LIMIT)),
        )
        .route(
            outpost_api::relay::TUNNEL_PATH,
            get(super::relay::agent_tunnel),
        )
        .route(super::peer::PEER_TUNNEL, get(super::peer::tunnel))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn(only_own_identity))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A request that names a workspace or agent (query `workspace_id`/`agent_id`, headers
/// `x-outpost-workspace-id`/`x-outpost-agent-id`) other than its certificate's is refused (403).
async fn only_own_identity(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.id.clone());
    let mut named: Vec<(&str, String)> = Vec::new();
    if let Some(q) = req.uri().query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "workspace_id" || k == "agent_id" {
                named.push((
                    if k == "workspace_id" { "ws" } else { "agent" },
                    v.to_string(),
                ));
            }
        }
    }
    for (h, kind) in [
        ("x-outpost-workspace-id", "ws"),
        ("x-outpost-agent-id", "agent"),
    ] {
        for v in req.headers().get_all(h) {
            named.push((kind, v.to_str().unwrap_or("\u{0}").to_string()));
        }
    }
    if !named.is_empty() {
        let ok = peer.as_ref().is_some_and(|(ws, agent)| {
            named
                .iter()
                .all(|(k, v)| if *k == "ws" { v == ws } else { v == agent })
        });
        if !ok {
            return ApiError::forbidden("an agent may only act as itself").into_response();
        }
    }
    next.run(req).await
}

fn reject(state: &AppState, action: &str, peer: &PeerIdentity, reason: &str) -> ApiError {
    let (ws, agent) = match &peer.id {
        Some((w, a)) => (Some(w.as_str()), Some(a.as_str())),
        None => (None, None),
    };
    state.audit.record(
        action,
        "rejected",
        "agent",
        agent.map(|a| format!("agent:{a}")).as_deref(),
        ws,
        agent,
        Some(peer.addr.to_string()),
        reason,
    );
    generic_401()
}

/// The calling agent, checked against the store on every request (revocation is immediate).
/// A revoked agent gets `Err`, with its row when it exists (it may still collect its last
/// commands).
async fn authed_agent(
    state: &AppState,
    peer: &PeerIdentity,
    action: &str,
) -> Result<AgentRow, (ApiError, Option<AgentRow>)> {
    authed_agent_with(state, peer, action, false).await
}

/// Why a certificate does not make its caller this agent, if it does not.
enum Verdict {
    Ok,
    Reject(&'static str),
    Revoked,
}

fn verdict(agent: &AgentRow, ws: &str, peer: &PeerIdentity) -> Verdict {
    if agent.workspace_id != ws || agent.cert_serial.is_none() {
        return Verdict::Reject("certificate does not match an agent");
    }
    // Bound to the serial last issued (or the one before it, briefly): a copied or superseded
    // certificate stops working at renewal, not at its expiry.
    let sent = peer.serial.as_deref().unwrap_or("");
    let current = agent
        .cert_serial
        .as_deref()
        .is_some_and(|s| crate::ca::same_serial(sent, s));
    let previous = agent
        .prev_cert_serial
        .as_deref()
        .is_some_and(|s| crate::ca::same_serial(sent, s))
        && agent.prev_cert_until.is_some_and(|t| now_ms() < t);
    if !current && !previous {
        return Verdict::Reject("superseded certificate");
    }
    if agent.revoked_at.is_some() {
        return Verdict::Revoked;
    }
    Verdict::Ok
}

/// The calling agent; with `cached`, from the rows read lately when one passes (see
/// [`super::agent_cache`]), else (and on any doubt) from the store, keeping what it read.
async fn authed_agent_with(
    state: &AppState,
    peer: &PeerIdentity,
    action: &str,
    cached: bool,
) -> Result<AgentRow, (ApiError, Option<AgentRow>)> {
    let Some((ws, agent_id)) = peer.id.as_ref() else {
        return Err((reject(state, action, peer, "no client certificate"), None));
    };
    if cached {
        let max_age = if state.poll_sweep.current() {
            super::agent_cache::LONG
        } else {
            super::agent_cache::FRESH
        };
        if let Some(a) = state.agent_cache.get(agent_id, max_age) {
            if matches!(verdict(&a, ws, peer), Verdict::Ok) {
                return Ok(a);
            }
        }
    }
    let agent = match state.store.agent(agent_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err((reject(state, action, peer, "unknown agent"), None)),
        Err(e) => return Err((e.into(), None)),
    };
    match verdict(&agent, ws, peer) {
        Verdict::Ok => {
            if cached {
                state.agent_cache.put(&agent);
            }
            Ok(agent)
        }
        Verdict::Reject(why) => Err((reject(state, action, peer, why), None)),
        Verdict::Revoked => Err((reject(state, action, peer, "agent revoked"), Some(agent))),
    }
}

/// The relay's check: a valid, unrevoked agent.
pub(super) async fn authed_agent_for_relay(
    state: &AppState,
    peer: &PeerIdentity,
) -> ApiResult<AgentRow> {
    authed_agent(state, peer, "agent.tunnel")
        .await
        .map_err(|e| e.0)
}

async fn bootstrap(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<BootstrapRequest>,
) -> Result<Json<BootstrapResponse>, ApiError> {
    let Some((token_id, secret)) = split_token(&req.token, BOOTSTRAP_TOKEN_PREFIX) else {
        return Err(reject(&state, "agent.bootstrap", &peer, "malformed token"));
    };
    // Check the CSR before spending the token; a bad CSR costs the caller nothing but a 401.
    let key_hash = match crate::ca::Ca::csr_key_hash(&req.csr_pem) {
        Ok(h) => h,
        Err(e) => {
            return Err(reject(
                &state,
                "agent.bootstrap",
                &peer,
                &format!("invalid CSR: {e} (token id {token_id})"),
            ))
        }
    };
    let hash = sha256_hex(secret);
    // Compare in constant time before the atomic consume (which matches the hash exactly).
    match state.store.bootstrap_token_secret_hash(token_id).await? {
        Some(h) if ct_eq(&h, &hash) => {}
        Some(_) => {
            return Err(reject(
                &state,
                "agent.bootstrap",
                &peer,
                &format!("wrong secret for token id {token_id}"),
            ))
        }
        None => {
            return Err(reject(
                &state,
                "agent.bootstrap",
                &peer,
                &format!("unknown token id {token_id}"),
            ))
        }
    }
    let Some((workspace_id, agent_id)) = state
        .store
        .consume_bootstrap_token(token_id, &hash, &key_hash, now_ms())
        .await?
    else {
        return Err(reject(
            &state,
            "agent.bootstrap",
            &peer,
            &format!("used or expired token id {token_id}"),
        ));
    };
    let agent = state.store.agent(&agent_id).await?;
    if agent.as_ref().is_none_or(|a| a.revoked_at.is_some()) {
        return Err(reject(
            &state,
            "agent.bootstrap",
            &peer,
            &format!("token id {token_id} belongs to a revoked agent"),
        ));
    }
    let issued = match state.ca.signing.sign_agent_csr(
        &req.csr_pem,
        &workspace_id,
        &agent_id,
        Duration::from_secs(state.config.agent_cert_lifetime_secs),
    ) {
        Ok(i) => i,
        Err(e) => {
            return Err(reject(
                &state,
                "agent.bootstrap",
                &peer,
                &format!("{e} (token id {token_id}, now used)"),
            ))
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
    state.audit.record(
        "agent.bootstrap",
        "issued",
        "agent",
        Some(&format!("agent:{agent_id}")),
        Some(&workspace_id),
        Some(&agent_id),
        Some(peer.addr.to_string()),
        format!(
            "token id {token_id}; certificate serial {} until {}",
            issued.serial, issued.expires_at_ms
        ),
    );
    state.bump_progress();
    Ok(Json(BootstrapResponse {
        workspace_id,
        agent_id,
        certificate_pem: issued.pem,
        ca_pem: state.ca.signing.cert_pem().to_string(),
        expires_at: issued.expires_at_ms,
    }))
}

/// How long the certificate a renewal replaces keeps working (requests already on their way):
/// a sixth of a certificate's life, between 2 s and 2 minutes.
fn renewal_overlap(state: &AppState) -> Duration {
    Duration::from_secs(state.config.agent_cert_lifetime_secs / 6)
        .clamp(Duration::from_secs(2), Duration::from_secs(120))
}

/// A new certificate for the same identity and a new key. Needs a valid (unexpired, unrevoked)
/// certificate: an expired one fails the TLS handshake and can only be replaced by a new start.
async fn renew(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<RenewResponse>, ApiError> {
    let agent = authed_agent(&state, &peer, "agent.renew")
        .await
        .map_err(|e| e.0)?;
    let issued = match state.ca.signing.sign_agent_csr(
        &req.csr_pem,
        &agent.workspace_id,
        &agent.id,
        Duration::from_secs(state.config.agent_cert_lifetime_secs),
    ) {
        Ok(i) => i,
        Err(e) => return Err(reject(&state, "agent.renew", &peer, &e.to_string())),
    };
    if !state
        .store
        .renew_agent_certificate(
            &agent.id,
            &issued.serial,
            issued.expires_at_ms,
            now_ms() + renewal_overlap(&state).as_millis() as i64,
        )
        .await?
    {
        return Err(reject(
            &state,
            "agent.renew",
            &peer,
            "agent revoked during renewal",
        ));
    }
    state.agent_cache.forget(&agent.id);
    state.audit.record(
        "agent.renew",
        "issued",
        "agent",
        Some(&format!("agent:{}", agent.id)),
        Some(&agent.workspace_id),
        Some(&agent.id),
        Some(peer.addr.to_string()),
        format!(
            "certificate serial {} until {}",
            issued.serial, issued.expires_at_ms
        ),
    );
    Ok(Json(RenewResponse {
        certificate_pem: issued.pem,
        ca_pem: state.ca.signing.cert_pem().to_string(),
        expires_at: issued.expires_at_ms,
    }))
}

fn commands_response(cmds: &[String]) -> Response {
    let commands = cmds
        .iter()
        .filter_map(|k| match k.as_str() {
            "stop" => Some(AgentCommand::Stop),
            "refresh_keys" => Some(AgentCommand::RefreshKeys),
            _ => None,
        })
        .collect();
    Json(PollResponse { commands }).into_response()
}

/// Long poll: returns pending commands at once, or holds up to 25 s for one to arrive. The first
/// authenticated poll marks the agent connected (and so the workspace running). A revoked agent
/// may collect the commands queued before its revocation (its stop order), then gets 401.
async fn poll(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
) -> Result<Response, ApiError> {
    // The hold counts from the request's arrival: time spent waiting for the store comes out
    // of it, so the agent's answer never arrives after its request timed out (40 s).
    let deadline = tokio::time::Instant::now() + poll_hold();
    // The store's futures are boxed: a held poll keeps its future for up to 25 s, and an
    // inlined query would make every held poll as large as the largest query's state.
    let agent = match Box::pin(authed_agent_with(&state, &peer, "agent.poll", true)).await {
        Ok(a) => a,
        Err((e, Some(revoked))) => {
            let cmds = Box::pin(state.store.take_commands(&revoked.id)).await?;
            if cmds.is_empty() {
                return Err(e);
            }
            return Ok(commands_response(&cmds));
        }
        Err((e, None)) => return Err(e),
    };
    let now = now_ms();
    if agent.first_connected_at.is_none() {
        Box::pin(state.store.agent_seen(&agent.id, now)).await?;
        state.agent_cache.forget(&agent.id);
        tracing::info!(agent = %agent.id, workspace = %agent.workspace_id, "agent connected");
        state.bump_progress();
    } else {
        state.liveness.record(&agent.id, now, None, None);
    }
    let waker = state.agent_waker(&agent.id);
    let _held = state.agent_limits.hold_poll(&agent.id)?;
    let _counted = state.metrics.poll_held();
    let mut shutdown = state.shutdown.clone();
    // The row was just read (or known current); after a wake-up it is read again (a
    // revocation ends the poll). The store is asked for commands at first only when some may
    // be waiting (`poll_sweep`), and after every wake-up.
    let mut reread = false;
    loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if reread || state.poll_sweep.may_have_commands(&agent.id) {
            let cmds = Box::pin(state.store.take_commands(&agent.id)).await?;
            if !cmds.is_empty() {
                return Ok(commands_response(&cmds));
            }
        }
        // Revoked while we held the poll: end it.
        if reread {
            if let Some(a) = Box::pin(state.store.agent(&agent.id)).await? {
                if a.revoked_at.is_some() {
                    state.agent_cache.forget(&a.id);
                    return Err(reject(
                        &state,
                        "agent.poll",
                        &peer,
                        "agent revoked during a held poll",
                    ));
                }
            }
        }
        reread = true;
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
) -> ApiResult<Json<HeartbeatResponse>> {
    let agent = authed_agent_with(&state, &peer, "agent.heartbeat", true)
        .await
        .map_err(|e| e.0)?;
    state.agent_limits.heartbeat(&agent.id)?;
    let lifecycle = req
        .lifecycle
        .and_then(|l| serde_json::to_value(l).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    let stats = serde_json::to_string(&req.stats).map_err(ApiError::internal)?;
    let now = now_ms();
    if agent.first_connected_at.is_none() {
        state.store.agent_seen(&agent.id, now).await?;
        state.agent_cache.forget(&agent.id);
        state.bump_progress();
    }
    let s = &req.stats.sessions;
    if s.ssh + s.vscode + s.jetbrains + s.pty + s.port_forward > 0 {
        state.liveness.activity(&agent.workspace_id, now);
    }
    let every = super::liveness::sample_every_ms(state.config.heartbeat_secs);
    state
        .liveness
        .sample(&agent.workspace_id, now, &req.stats, every);
    state
        .liveness
        .record(&agent.id, now, lifecycle, Some(stats));
    Ok(Json(HeartbeatResponse {
        ca_pins: state.ca.pins(),
    }))
}

/// The calling agent (checked) and its workspace.
async fn agent_and_workspace(
    state: &AppState,
    peer: &PeerIdentity,
    action: &str,
) -> ApiResult<(AgentRow, crate::store::WorkspaceRow)> {
    let agent = authed_agent(state, peer, action).await.map_err(|e| e.0)?;
    let w = state
        .store
        .workspace_by_id(&agent.workspace_id)
        .await?
        .ok_or_else(generic_401)?;
    Ok((agent, w))
}

async fn manifest(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
) -> ApiResult<Json<AgentManifest>> {
    let (agent, w) = agent_and_workspace(&state, &peer, "agent.manifest").await?;
    let build = state
        .store
        .build(&agent.build_id)
        .await?
        .ok_or_else(generic_401)?;
    let version = state
        .store
        .template_version(&build.template_version_id)
        .await?
        .ok_or_else(generic_401)?;
    let manifest: TemplateManifest =
        serde_json::from_str(&version.manifest).map_err(ApiError::internal)?;
    let parameters: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&w.parameters).unwrap_or_default();
    // The template's environment, then every parameter value as OUTPOST_PARAM_<NAME>.
    let mut env = manifest.agent.env;
    for (name, value) in &parameters {
        env.insert(outpost_api::param_env_name(name), value.clone());
    }
    Ok(Json(AgentManifest {
        workspace_id: w.id,
        workspace_name: w.name,
        owner: w.owner_name,
        agent_id: agent.id,
        env,
        heartbeat_secs: state.config.heartbeat_secs,
        ca_pins: state.ca.pins(),
        authorized_keys: state
            .store
            .ssh_keys(&w.owner_id)
            .await?
            .into_iter()
            .map(|k| k.public_key)
            .collect(),
        // Owners get in through the relay only, where each connection is checked and audited.
        relay_keys: if state.config.allow_owner_workspace_access {
            state.store.owner_ssh_keys(&w.owner_id).await?
        } else {
            Vec::new()
        },
        ssh_listen: manifest.agent.ssh_listen,
        scripts: manifest.scripts,
        apps: manifest.apps,
        terminal_idle_timeout_secs: state.config.terminal_idle_timeout_secs,
        ssh_login_grace_secs: state.config.ssh_login_grace_secs,
        dotfiles_uri: parameters
            .get("dotfiles_uri")
            .cloned()
            .filter(|u| !u.trim().is_empty()),
    }))
}

/// A short-lived (1 h), workspace-scoped API token of the owner, for the CLI inside the workspace.
async fn agent_user_token(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
) -> ApiResult<Json<WorkspaceCredential>> {
    let (agent, w) = agent_and_workspace(&state, &peer, "agent.user_token").await?;
    state.agent_limits.mint(&agent.id)?;
    let owner = state
        .store
        .user_by_username(&w.owner_name)
        .await?
        .ok_or_else(generic_401)?;
    let (token, info) =
        super::tokens::issue_token(&state, &owner, &format!("workspace {}", w.name), 3600).await?;
    state
        .store
        .scope_token(&info.id, &format!("workspace:{}", w.id))
        .await?;
    Ok(Json(WorkspaceCredential {
        url: state.access_url.clone(),
        token,
        expires_at: info.expires_at,
    }))
}

/// The workspace owner's git SSH public key, for the agent's ssh-agent to list. The private
/// key stays here: the agent asks for each signature ([`agent_git_sign`]).
async fn agent_git_key(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
) -> ApiResult<Json<GitSshKey>> {
    let (_, w) = agent_and_workspace(&state, &peer, "agent.gitsshkey").await?;
    let (_, public_key) = super::keys::git_key(&state, &w.owner_id, &w.owner_name).await?;
    Ok(Json(GitSshKey {
        public_key,
        private_key: None,
    }))
}

/// Signs with the owner's git key for a live agent of one of the owner's workspaces (git over
/// SSH inside the workspace): the workspace gets signatures while it runs, never the key.
async fn agent_git_sign(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<GitSignRequest>,
) -> ApiResult<Json<GitSignResponse>> {
    use base64::Engine;
    let (_, w) = agent_and_workspace(&state, &peer, "agent.gitsign").await?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(req.data.as_bytes())
        .map_err(|_| ApiError::bad_request("data is not base64"))?;
    if data.len() > GIT_SIGN_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {GIT_SIGN_MAX} bytes are signed"
        )));
    }
    let (sealed, _) = super::keys::git_key(&state, &w.owner_id, &w.owner_name).await?;
    let private_key = state
        .secrets
        .open_str(&sealed)
        .map_err(ApiError::internal)?;
    let (signature, _) =
        tokio::task::spawn_blocking(move || outpost_common::sshkey::sign(&private_key, &data))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    Ok(Json(GitSignResponse {
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
    }))
}

/// Script output, in batches; a cap per agent (1 MiB) keeps a noisy script from filling the store.
const AGENT_LOG_CAP: i64 = 1 << 20;

async fn agent_logs(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<AgentLogsRequest>,
) -> ApiResult<Json<AgentLogsResponse>> {
    // A stopping agent is revoked the moment the stop is queued; it may still report its
    // shutdown scripts' output for a minute (append-only, under the same cap). Nothing else.
    let agent = match authed_agent(&state, &peer, "agent.logs").await {
        Ok(a) => a,
        Err((_, Some(a))) if a.revoked_at.is_some_and(|t| now_ms() - t < 60_000) => a,
        Err((e, _)) => return Err(e),
    };
    if req.lines.len() > 2000 {
        return Err(ApiError::bad_request("at most 2000 lines per batch"));
    }
    let lines: Vec<(String, String, String, i64)> = req
        .lines
        .into_iter()
        .map(|l| {
            let mut out = l.output;
            if out.len() > 8192 {
                let mut cut = 8192;
                while !out.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.truncate(cut);
            }
            (
                l.source.chars().take(64).collect(),
                l.level.chars().take(16).collect(),
                out,
                l.created_at,
            )
        })
        .collect();
    let over = state
        .store
        .append_agent_logs(&agent.id, &agent.workspace_id, &lines, AGENT_LOG_CAP)
        .await?;
    use AgentLifecycle as L;
    if let Some(l @ (L::ShuttingDown | L::Off | L::ShutdownError | L::ShutdownTimeout)) =
        req.lifecycle
    {
        let name = serde_json::to_value(l)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        state.store.set_agent_lifecycle(&agent.id, &name).await?;
    }
    state.touch(&super::logs::agent_logs_topic(&agent.workspace_id));
    state.bump_progress();
    Ok(Json(AgentLogsResponse { over_limit: over }))
}

/// The agent reports its SSH host key (made once, kept in the persistent home) and address.
async fn report_ssh(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    ApiJson(req): ApiJson<SshReport>,
) -> ApiResult<Json<serde_json::Value>> {
    let agent = authed_agent(&state, &peer, "agent.ssh")
        .await
        .map_err(|e| e.0)?;
    // Only `TYPE BASE64` is kept: users' known_hosts files get this text, so no comment, no
    // second line, no control character an agent sends ever reaches them.
    let host_key = outpost_common::sshkey::parse_public_key(&req.host_key)
        .map_err(|_| ApiError::bad_request("host_key is not an OpenSSH public key"))?
        .canonical;
    if let Some(l) = &req.listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::bad_request("listen is not a socket address"));
        }
    }
    state
        .store
        .set_agent_ssh(&agent.id, &host_key, req.listen.as_deref())
        .await?;
    state.bump_progress();
    Ok(Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_held_for_spread_out_times() {
        let holds: Vec<Duration> = (0..400).map(|_| poll_hold()).collect();
        assert!(holds
            .iter()
            .all(|h| *h >= POLL_HOLD.mul_f64(0.8) && *h <= POLL_HOLD));
        assert!(
            holds.iter().any(|h| *h < POLL_HOLD.mul_f64(0.85))
                && holds.iter().any(|h| *h > POLL_HOLD.mul_f64(0.95)),
            "spread over the range: {holds:?}"
        );
    }
}
