//! Web terminals by hand-off (the protocol: `outpost_api::relay::dial::HANDOFF_OK`). For an
//! agent on this machine (a `local` workspace) and a browser whose connection to control is
//! plain TCP, control authorises the WebSocket upgrade as always, then hands the upgraded
//! connection itself to the agent over a Unix socket (`SCM_RIGHTS`): the browser's keystrokes
//! go straight into the agent, with no second TCP hop and no process in between.
//!
//! The socket is `WORKSPACES/.handoff/api-PORT.sock`: the directory is control's, mode 0711 (a
//! workspace user may pass through but not list it, nor put anything in it), the socket open to
//! connect. What a connection must bring: within [`PREAMBLE_WAIT`], a dial preamble whose
//! one-time token this replica waits for as a terminal's hand-off (a token only ever sent to
//! the asked agent, inside its mTLS tunnel), from the Unix user the workspace runs as
//! (`SO_PEERCRED`). Anything else is closed without a byte, and the token is used up.
//!
//! Control keeps its own descriptor of the browser's connection (out of its event loop, so
//! keystrokes never wake it) and the Unix connection: a cut (the user suspended), control's
//! shutdown or the end of its task shuts the browser's connection down and closes the Unix
//! one, and the agent ends the session; the agent closing the Unix connection ends control's
//! part. (A control killed outright leaves that to the agents.) The workspace learns the
//! browser's address from the connection, and nothing else it did not see before.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use outpost_api::relay::dial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::AppState;

/// How long a connection on the socket may take to send its preamble.
const PREAMBLE_WAIT: Duration = Duration::from_secs(5);
/// Connections on the socket that have not sent their preamble yet; past it, closed at once.
const MAX_UNSENT: usize = 64;

/// Where this replica's hand-off socket is, once bound.
#[derive(Default)]
pub struct Handoff {
    path: OnceLock<String>,
}

impl Handoff {
    /// The socket's path, when terminals may be handed off here.
    pub fn path(&self) -> Option<&str> {
        self.path.get().map(String::as_str)
    }
}

/// Binds `root/.handoff/api-PORT.sock` (a stale one of a dead replica on the same port is
/// replaced) and serves it until shutdown. An error leaves terminals on the dial-back.
pub(super) fn start(
    state: &AppState,
    root: &Path,
    api_port: u16,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(".handoff");
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    // A real directory of this process's user (never followed through a link): only then is
    // the socket in it the one agents think it is.
    let md = std::fs::symlink_metadata(&dir)?;
    if !md.is_dir() || md.uid() != nix::unistd::Uid::effective().as_raw() {
        anyhow::bail!(
            "{} is not a directory of this server's user; remove it",
            dir.display()
        );
    }
    // Control's own: workspace users pass through to the socket but cannot list or add.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    let sock: PathBuf = dir.join(format!("api-{api_port}.sock"));
    let path = sock
        .to_str()
        .filter(|p| dial::valid_handoff_path(p))
        .with_context(|| {
            format!(
                "{} is too long or has characters a hand-off path may not (A-Z a-z 0-9 / . _ -, at most 107 bytes)",
                sock.display()
            )
        })?
        .to_string();
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        anyhow::bail!(
            "another server answers on {} (the same API port on another address?)",
            sock.display()
        );
    }
    match std::fs::remove_file(&sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", sock.display())),
    }
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))?;
    let ino = std::fs::symlink_metadata(&sock)?.ino();
    let _ = state.handoff.path.set(path);
    tokio::spawn(serve(listener, state.clone(), (sock, ino), shutdown));
    Ok(())
}

async fn serve(
    listener: UnixListener,
    state: AppState,
    (sock, ino): (PathBuf, u64),
    mut shutdown: watch::Receiver<bool>,
) {
    let unsent = Arc::new(tokio::sync::Semaphore::new(MAX_UNSENT));
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = super::until_shutdown(&mut shutdown) => break,
        };
        let Ok((conn, _)) = conn else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = unsent.clone().try_acquire_owned() else {
            tracing::debug!("hand-off socket: too many connections without a preamble; closed");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let token = read_preamble(conn).await;
            drop(permit);
            if let Some((token, conn, uid)) = token {
                if !state.dials.deliver_handoff(&token, conn, uid).await {
                    tracing::info!(
                        uid,
                        "hand-off socket: an unknown or used token, or another user's; closed"
                    );
                }
            }
        });
    }
    // Ours only: a later server may have bound the path since.
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(&sock).is_ok_and(|m| m.ino() == ino) {
        let _ = std::fs::remove_file(&sock);
    }
}

/// The preamble's token, the connection and its peer's uid; None (the connection closed) when
/// it sends no well-formed preamble in time.
async fn read_preamble(mut conn: UnixStream) -> Option<(String, UnixStream, u32)> {
    let uid = conn.peer_cred().ok()?.uid();
    let mut pre = [0u8; dial::PREAMBLE_LEN];
    tokio::time::timeout(PREAMBLE_WAIT, conn.read_exact(&mut pre))
        .await
        .ok()?
        .ok()?;
    let token = dial::parse_preamble(&pre)?.to_string();
    Some((token, conn, uid))
}

/// The Unix user a `local` workspace's agent runs as, when this replica can hand it a
/// terminal: the workspace's own user with isolation, control's own without it.
pub(super) async fn agent_uid(state: &AppState, workspace_id: &str) -> Option<u32> {
    use crate::provisioner::local::Isolation;
    state.handoff.path()?;
    match state.config.isolation {
        Isolation::None => Some(nix::unistd::Uid::current().as_raw()),
        Isolation::User => {
            // The user database, read off the runtime's threads.
            let id = workspace_id.to_string();
            tokio::task::spawn_blocking(move || crate::provisioner::local::users::existing_uid(&id))
                .await
                .ok()
                .flatten()
        }
    }
}

/// A request's upgrade, when it came on a plain TCP connection ([`super::listen::PlainTcp`]):
/// what a hand-off passes on. Extracted before axum's WebSocket extractor, which takes it.
pub(super) struct PlainUpgrade(pub Option<hyper::upgrade::OnUpgrade>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PlainUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let plain = parts.extensions.get::<super::listen::PlainTcp>().is_some();
        Ok(PlainUpgrade(
            plain
                .then(|| parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned())
                .flatten(),
        ))
    }
}

/// The 101 answer to a WebSocket upgrade request (its key checked by the extractor already).
pub(super) fn switching(headers: &HeaderMap) -> Option<Response> {
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).ok()?,
    );
    Some(r)
}

/// Once the browser's connection is upgraded: passes it, and what control already read of it,
/// to the agent on `agent`, then holds on until the agent closes that connection, `cut`, or
/// control's shutdown. Control keeps its descriptor of the browser's connection throughout: a
/// cut or a shutdown shuts the connection down (whoever else holds it), and so does dropping
/// this task at any point (`Held`). Only a control killed outright leaves the ending of its
/// handed-off sessions to their agents (they end them when the Unix connection closes).
pub(super) async fn pass(
    on_upgrade: hyper::upgrade::OnUpgrade,
    agent: UnixStream,
    cut: impl std::future::Future<Output = ()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = Held(None);
    let served = async {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "a terminal hand-off's upgrade failed");
                return false;
            }
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() else {
            // Not a plain TCP connection after all: nothing to hand off; the browser retries.
            tracing::warn!("a terminal hand-off on a connection that is not plain TCP; closed");
            return false;
        };
        // Out of this process's event loop: the agent reads it now, and its keystrokes must
        // not wake control.
        let Ok(browser) = parts.io.into_inner().into_std() else {
            return false;
        };
        let browser = held.0.insert(browser);
        let mut agent = agent;
        let header = dial::handoff_header(parts.read_buf.len());
        let sent = tokio::time::timeout(SEND_WAIT, async {
            if parts.read_buf.len() > dial::MAX_HANDOFF_LEFTOVER {
                return Err(std::io::Error::other("too much read ahead"));
            }
            outpost_common::fdpass::send_all_with_fd(&agent, &header, browser.as_fd()).await?;
            agent.write_all(&parts.read_buf).await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::info!("a terminal hand-off: the agent did not take the connection");
            return false;
        }
        // The agent sends nothing more: EOF, an error or any byte is its end of the session.
        let mut b = [0u8; 1];
        let _ = agent.read(&mut b).await;
        tracing::debug!("a handed-off terminal ended");
        true
    };
    let ended_by_agent = tokio::select! {
        ended = served => ended,
        _ = cut => {
            tracing::info!("a handed-off terminal cut");
            false
        }
        _ = super::until_shutdown(&mut shutdown) => false,
    };
    if ended_by_agent {
        if let Some(browser) = held.0.take() {
            linger(browser).await;
        }
    }
}

/// How long the agent may take to take the connection and the bytes read ahead.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Control's descriptor of a handed-off connection: dropped, it shuts the connection down in
/// both directions, whoever else still holds it.
struct Held(Option<std::net::TcpStream>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The agent ended the session (its close frame sent): half-closes the browser's connection
/// and reads what the browser still sends (its close reply) for a moment before closing, so
/// that closing with unread input does not reset the connection and lose the agent's last
/// output.
async fn linger(browser: std::net::TcpStream) {
    let _ = browser.shutdown(std::net::Shutdown::Write);
    let Ok(mut browser) = tokio::net::TcpStream::from_std(browser) else {
        return;
    };
    let mut b = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(browser.read(&mut b).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Control's descriptor, dropped, ends the connection for the browser even while another
    /// process (here a clone: the agent's) still holds it open and never closes it.
    #[test]
    fn dropping_controls_descriptor_ends_the_connection_for_everyone() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut browser = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        let agents = ours.try_clone().unwrap();
        drop(Held(Some(ours)));
        browser
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(browser.read(&mut b).unwrap(), 0, "the browser sees the end");
        drop(agents);
    }
}
