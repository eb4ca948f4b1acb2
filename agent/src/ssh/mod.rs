//! The agent's SSH server (russh): public-key auth against the workspace owner's keys, exec and
//! shells with or without a PTY, env, window changes, signals, exit-status and exit-signal, the
//! sftp subsystem, TCP and Unix-socket forwarding both ways, and agent forwarding.
//!
//! Each channel runs in a task of its own that owns the `Channel` and reads its messages, so a
//! slow process never stalls the connection's event loop. The host key is made once and kept in
//! the persistent home.
//!
//! This file: the shared state, configuration, accepting connections and the connection
//! handler. `session.rs` runs a session channel (environment, shell, command or subsystem);
//! `exec.rs` runs its process (pipes or a PTY) and signals; `forward.rs` pipes forwarded
//! channels and the auth agent; `sftp.rs` the sftp subsystem; `gitagent.rs` the git key's
//! ssh-agent (signatures made by control).

mod exec;
mod forward;
mod gitagent;
mod limits;
mod session;
mod sftp;
mod tcp;

pub use exec::spawn_in_pty;
use exec::*;
use forward::*;
pub use gitagent::{serve_git_agent, GitSigner};
use limits::Killable;
pub use limits::SourceSlot;
pub use session::base_env;
use session::*;
use sftp::run_sftp;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet, Sig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::state::{Agent, SessionKind};

/// What every connection shares: the accepted keys (refreshed from control), the agent's state
/// (session counts) and the user's environment.
pub struct SshShared {
    pub authorized: RwLock<HashSet<String>>,
    /// Accepted on relayed connections only (see `AgentManifest::relay_keys`).
    pub relay_authorized: RwLock<HashSet<String>>,
    pub agent: Arc<Agent>,
    pub home: PathBuf,
    pub shell: String,
    pub user: String,
    /// Template environment plus workspace identity.
    pub env: Vec<(String, String)>,
    /// Closed (false) while a start script that blocks login runs.
    pub login_gate: tokio::sync::watch::Receiver<bool>,
    /// A connection that has not logged in after this long is closed.
    pub login_grace: Duration,
}

impl SshShared {
    /// Replaces the accepted keys with `lines` (OpenSSH format); unparsable lines are skipped.
    /// Keys are kept as `TYPE BASE64`, parsed by the one parser control uses too.
    pub fn set_authorized(&self, lines: &[String], relay_lines: &[String]) {
        let parse = |lines: &[String]| -> HashSet<String> {
            lines
                .iter()
                .filter_map(|l| outpost_common::sshkey::parse_public_key(l).ok())
                .map(|k| k.canonical)
                .collect()
        };
        *self
            .authorized
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = parse(lines);
        *self
            .relay_authorized
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = parse(relay_lines);
    }

    /// Whether `key` may log in: the owner's keys anywhere, the relay-only keys on a relayed
    /// connection.
    fn accepts(&self, key: &PublicKey, relayed: bool) -> bool {
        let Some(offered) = key
            .to_openssh()
            .ok()
            .and_then(|l| outpost_common::sshkey::parse_public_key(&l).ok())
        else {
            return false;
        };
        let has = |set: &RwLock<HashSet<String>>| {
            set.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&offered.canonical)
        };
        has(&self.authorized) || (relayed && has(&self.relay_authorized))
    }
}

/// Loads the host key from `dir`, making it on first use (ed25519, 0600).
pub fn host_key(dir: &Path) -> anyhow::Result<PrivateKey> {
    let path = dir.join("ssh_host_ed25519_key");
    if let Ok(pem) = std::fs::read_to_string(&path) {
        return PrivateKey::from_openssh(&pem).context("parsing the SSH host key");
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut seed);
    let key = PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &seed,
    ));
    let pem = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .context("encoding the SSH host key")?;
    outpost_common::fs::write_private(&path, pem.as_bytes())?;
    Ok(key)
}

pub fn config(key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        // OpenSSH tries `none` first: do not make every login wait for it.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![key],
        // A live session is never dropped for inactivity; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        // sshd's channel window (2 MiB). A larger one lets OpenSSH's client queue that much in
        // its channel buffer whenever we read a moment late, and moving and growing a buffer
        // of many megabytes costs the client more CPU than the data does: with 16 MiB, `-L`
        // fell from sshd's rate to 0.6-0.7x of it in one run of three (the client, the
        // busiest process, doubling its system time).
        window_size: CHANNEL_WINDOW,
        maximum_packet_size: 256 * 1024,
        // What a channel may hold in the agent between the connection and whoever takes its
        // data (a forward's target, a program's stdin): russh gives the window back as packets
        // arrive, not as they are taken, so this queue is the bound. 64 packets is 2 MiB of
        // OpenSSH's 32 KiB ones (the window's worth) and at most 16 MiB of the largest; with
        // 1,024 a forward into a port that never reads parked 32 MiB in the agent per connection.
        channel_buffer_size: 64,
        preferred: russh::Preferred {
            kex: std::borrow::Cow::Borrowed(KEX),
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            mac: std::borrow::Cow::Borrowed(MACS),
            // No compression (zlib@openssh.com has broken sftp -C in some versions).
            compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Modern algorithms only, no compression. chacha20-poly1305 (OpenSSH's default cipher) is safe
/// from the Terrapin prefix-truncation attack (CVE-2023-48795) only under OpenSSH's strict key
/// exchange, so the server always advertises `kex-strict-s-v00@openssh.com`, as OpenSSH 9.6+ and
/// Debian's patched 9.2 do. (Debian bookworm's ssh-audit 2.5 predates the marker and calls it an
/// unknown algorithm, for Debian's own sshd too; ssh-audit 3.x knows it. See `tests/it/ssh.rs`.)
const KEX: &[russh::kex::Name] = &[
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    russh::kex::DH_G18_SHA512,
    russh::kex::DH_G16_SHA512,
    russh::kex::EXTENSION_SUPPORT_AS_SERVER,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
/// OpenSSH's own server list: the AEAD ciphers, then AES-CTR (with the encrypt-then-MAC MACs
/// below) for clients without them, such as paramiko (Ansible, Fabric), which has neither GCM
/// nor chacha20. Clients pick by their own preference, so OpenSSH still lands on chacha20.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_256_CTR,
];
const MACS: &[russh::mac::Name] = &[russh::mac::HMAC_SHA512_ETM, russh::mac::HMAC_SHA256_ETM];

/// The window each channel grants its sender (sshd's; see the config above).
const CHANNEL_WINDOW: u32 = 2 * 1024 * 1024;

/// The read buffer of an SSH connection.
const SSH_READ_BUFFER: usize = 64 * 1024;

/// Serves one SSH connection over any byte stream (a TCP connection, or a relayed stream).
/// `pre_login` is the address's slot (direct listener), held until the connection logs in.
pub fn serve_stream<S>(
    io: S,
    config: Arc<russh::server::Config>,
    shared: Arc<SshShared>,
    peer: Option<SocketAddr>,
    pre_login: Option<SourceSlot>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (login_tx, login_rx) = tokio::sync::oneshot::channel();
    let grace = shared.login_grace;
    let handler = Conn {
        shared,
        peer,
        login: Some(login_tx),
        tcp_forwards: HashMap::new(),
        unix_forwards: HashMap::new(),
    };
    // russh reads each packet with two exact reads (its first block, then the rest), which
    // would be two or more system calls per packet (four with the direct listener's quick
    // ACKs); a read buffer takes whatever has arrived, several packets at a time, as sshd does.
    let io = tokio::io::BufReader::with_capacity(SSH_READ_BUFFER, io);
    // Before login a connection gets `grace`, from its first byte; then it is cut (russh runs
    // the session in a task of its own, so the stream itself is what we end).
    let (io, kill) = Killable::new(io);
    tokio::spawn(async move {
        let _slot = pre_login;
        if !matches!(tokio::time::timeout(grace, login_rx).await, Ok(Ok(()))) {
            if !kill.is_done() {
                tracing::info!(?peer, ?grace, "ssh connection closed: no login in time");
            }
            kill.kill();
        }
    });
    tokio::spawn(async move {
        match russh::server::run_stream(config, io, handler).await {
            Ok(session) => {
                if let Err(e) = session.await {
                    tracing::debug!(error = ?e, ?peer, "ssh session ended");
                }
            }
            Err(e) => tracing::debug!(error = ?e, ?peer, "ssh handshake failed"),
        }
    });
}

/// Accepts connections on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<SshShared>,
) {
    let not_logged_in: Arc<std::sync::Mutex<limits::Slots>> = Arc::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ssh accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = SourceSlot::take(&not_logged_in, peer.ip()) else {
            tracing::info!(%peer, "ssh connection refused: too many not logged in (from this address or in all)");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        serve_stream(
            tcp_stream(tcp, true),
            config.clone(),
            shared.clone(),
            Some(peer),
            Some(slot),
        );
    }
}

/// An SSH connection's TCP stream (the direct listener's, or a relay's dial-back to control)
/// with the flow mark and, if `quick_acks` (a client's own connection), quick ACKs (`tcp.rs`).
pub fn tcp_stream(tcp: tokio::net::TcpStream, quick_acks: bool) -> tcp::SshTcp {
    tcp::SshTcp::new(
        tcp,
        SSH_READ_BUFFER,
        CHANNEL_WINDOW as usize / 4,
        quick_acks,
    )
}

struct Conn {
    shared: Arc<SshShared>,
    peer: Option<SocketAddr>,
    /// Told once the connection logs in (ends its pre-login grace).
    login: Option<tokio::sync::oneshot::Sender<()>>,
    /// Remote forwards (-R) of this connection: TCP (address, port) and Unix socket paths.
    tcp_forwards: HashMap<(String, u32), tokio::task::AbortHandle>,
    unix_forwards: HashMap<String, tokio::task::AbortHandle>,
}

impl Conn {
    /// A connection with no peer address came through control's relay (the tunnel), not the
    /// direct listener.
    fn relayed(&self) -> bool {
        self.peer.is_none()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for (_, h) in self.tcp_forwards.drain() {
            h.abort();
        }
        for (path, h) in self.unix_forwards.drain() {
            h.abort();
            let _ = std::fs::remove_file(path);
        }
    }
}

fn loopback_or(address: &str) -> String {
    match address {
        "" | "localhost" => "127.0.0.1".to_string(),
        a => a.to_string(),
    }
}

impl russh::server::Handler for Conn {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.shared.accepts(offer.public_key, self.relayed()) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.accepts(key.public_key, self.relayed()) {
            tracing::info!(user, peer = ?self.peer, "ssh login");
            if let Some(tx) = self.login.take() {
                let _ = tx.send(());
            }
            Ok(Auth::Accept)
        } else {
            tracing::info!(user, peer = ?self.peer, "ssh key refused");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let shared = self.shared.clone();
        let handle = session.handle();
        let peer = self.peer;
        let symlinks = sftp::SymlinkOrder::of_client(session.remote_sshid());
        tokio::spawn(async move {
            let id = channel.id();
            if let Err(e) = run_session(channel, shared, handle.clone(), peer, symlinks).await {
                tracing::debug!(error = %e, "ssh session channel");
                let _ = handle.close(id).await;
            }
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _orig: &str,
        _orig_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = format!("{host}:{port}");
        // Connect first so a refused port is a refused channel, as with sshd.
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&target),
        )
        .await
        {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                reply.accept().await;
                let agent = self.shared.agent.clone();
                tokio::spawn(async move {
                    let _live = agent.live(SessionKind::PortForward);
                    pipe(channel, tcp, agent.clone()).await;
                });
            }
            _ => {
                tracing::debug!(%target, "direct-tcpip refused");
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    /// `ssh -L` to a Unix socket in the workspace.
    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match tokio::net::UnixStream::connect(socket_path).await {
            Ok(sock) => {
                reply.accept().await;
                let agent = self.shared.agent.clone();
                tokio::spawn(async move {
                    let _live = agent.live(SessionKind::PortForward);
                    pipe(channel, sock, agent.clone()).await;
                });
            }
            Err(_) => reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
        }
        Ok(())
    }

    /// `ssh -R`: listen in the workspace (port 0 picks one) and send connections back.
    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(p) = u16::try_from(*port) else {
            return Ok(false);
        };
        let listener = match tokio::net::TcpListener::bind((loopback_or(address), p)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, address, port = *port, "tcpip-forward refused");
                return Ok(false);
            }
        };
        let bound = listener.local_addr()?.port();
        *port = u32::from(bound);
        let handle = session.handle();
        let addr = address.to_string();
        let agent = self.shared.agent.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (handle, addr, agent) = (handle.clone(), addr.clone(), agent.clone());
                tokio::spawn(async move {
                    let ch = handle
                        .channel_open_forwarded_tcpip(
                            addr,
                            u32::from(bound),
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    if let Ok(ch) = ch {
                        let _live = agent.live(SessionKind::PortForward);
                        pipe(ch, tcp, agent.clone()).await;
                    }
                });
            }
        });
        self.tcp_forwards
            .insert((address.to_string(), u32::from(bound)), task.abort_handle());
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(
            match self.tcp_forwards.remove(&(address.to_string(), port)) {
                Some(h) => {
                    h.abort();
                    true
                }
                None => false,
            },
        )
    }

    /// `ssh -R` to a Unix socket in the workspace.
    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let listener = match tokio::net::UnixListener::bind(socket_path) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, socket_path, "streamlocal-forward refused");
                return Ok(false);
            }
        };
        let handle = session.handle();
        let path = socket_path.to_string();
        let agent = self.shared.agent.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (handle, path, agent) = (handle.clone(), path.clone(), agent.clone());
                tokio::spawn(async move {
                    if let Ok(ch) = handle.channel_open_forwarded_streamlocal(path).await {
                        let _live = agent.live(SessionKind::PortForward);
                        pipe(ch, sock, agent.clone()).await;
                    }
                });
            }
        });
        self.unix_forwards
            .insert(socket_path.to_string(), task.abort_handle());
        Ok(true)
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(match self.unix_forwards.remove(socket_path) {
            Some(h) => {
                h.abort();
                let _ = std::fs::remove_file(socket_path);
                true
            }
            None => false,
        })
    }

    /// `ssh -A`: the session's own task makes the socket when it sees the request.
    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    // Requests are handled by the channel's own task (it receives them as ChannelMsg); here we
    // only answer them, so clients that wait for a reply proceed.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if env_allowed(name) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}
