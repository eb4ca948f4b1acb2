//! The agent's SSH server (russh): public-key auth against the workspace owner's keys, exec and
//! shells with or without a PTY, env, window changes, signals, exit-status and exit-signal, the
//! sftp subsystem and local TCP forwarding (direct-tcpip).
//!
//! Each channel runs in a task of its own that owns the `Channel` and reads its messages, so a
//! slow process never stalls the connection's event loop. The host key is made once and kept in
//! the persistent home.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet, Sig};

use crate::state::{Agent, SessionKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// What every connection shares: the accepted keys (refreshed from control), the agent's state
/// (session counts) and the user's environment.
pub struct SshShared {
    pub authorized: RwLock<Vec<PublicKey>>,
    pub agent: Arc<Agent>,
    pub home: PathBuf,
    pub shell: String,
    pub user: String,
    /// Template environment plus workspace identity.
    pub env: Vec<(String, String)>,
    /// Closed (false) while a start script that blocks login runs.
    pub login_gate: tokio::sync::watch::Receiver<bool>,
}

impl SshShared {
    /// Replaces the accepted keys with `lines` (OpenSSH format); unparsable lines are skipped.
    pub fn set_authorized(&self, lines: &[String]) {
        let keys: Vec<PublicKey> = lines
            .iter()
            .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
            .collect();
        if let Ok(mut a) = self.authorized.write() {
            *a = keys;
        }
    }

    fn accepts(&self, key: &PublicKey) -> bool {
        self.authorized
            .read()
            .map(|a| a.iter().any(|k| k.key_data() == key.key_data()))
            .unwrap_or(false)
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
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 256 * 1024,
        channel_buffer_size: 1024,
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

/// Serves one SSH connection over any byte stream (a TCP connection, or a relayed stream).
pub fn serve_stream<S>(
    io: S,
    config: Arc<russh::server::Config>,
    shared: Arc<SshShared>,
    peer: Option<SocketAddr>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = Conn {
        shared,
        peer,
        tcp_forwards: HashMap::new(),
        unix_forwards: HashMap::new(),
    };
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

/// A TCP stream that acknowledges every read at once (see [`crate::sys::quickack`]).
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if r.is_ready() {
            use std::os::fd::AsRawFd;
            crate::sys::quickack(self.0.as_raw_fd());
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<SshShared>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ssh accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        serve_stream(QuickAck(tcp), config.clone(), shared.clone(), Some(peer));
    }
}

struct Conn {
    shared: Arc<SshShared>,
    peer: Option<SocketAddr>,
    /// Remote forwards (-R) of this connection: TCP (address, port) and Unix socket paths.
    tcp_forwards: HashMap<(String, u32), tokio::task::AbortHandle>,
    unix_forwards: HashMap<String, tokio::task::AbortHandle>,
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

/// What kind of client a session is, from Outpost's marker or the IDEs' well-known commands.
fn session_kind(marker: Option<&str>, command: Option<&str>) -> SessionKind {
    match marker {
        Some("vscode") => return SessionKind::Vscode,
        Some("jetbrains") => return SessionKind::Jetbrains,
        _ => {}
    }
    let c = command.unwrap_or("");
    if c.contains("vscode-server") || c.contains(".vscode") || c.contains("code-server") {
        SessionKind::Vscode
    } else if c.contains("jetbrains") || c.contains("remote-dev-server") || c.contains("JetBrains")
    {
        SessionKind::Jetbrains
    } else {
        SessionKind::Ssh
    }
}

/// The environment every session starts from: the user's identity, PATH, the template's
/// environment and the workspace's identity.
pub fn base_env(shared: &SshShared) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![
        ("HOME".into(), shared.home.display().to_string()),
        ("USER".into(), shared.user.clone()),
        ("LOGNAME".into(), shared.user.clone()),
        ("SHELL".into(), shared.shell.clone()),
        ("PATH".into(), crate::user::session_path()),
    ];
    vars.extend(shared.env.iter().cloned());
    vars
}

/// Writes every chunk of `batch` (vectored, as few calls as the socket allows), emptying it.
async fn write_all_vectored<W>(wr: &mut W, batch: &mut Vec<bytes::Bytes>) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use bytes::Buf;
    let mut first = 0;
    while first < batch.len() {
        let slices: Vec<std::io::IoSlice<'_>> = batch[first..]
            .iter()
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < batch.len() {
            let len = batch[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                batch[first].advance(n);
                n = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

/// Copies both ways between an SSH channel and a local stream (forwarded ports and sockets, the
/// auth agent), counting bytes, with half-close passed on both ways. Channel data is written to
/// the stream as it arrives and stream reads go out as channel data, with no scratch buffer in
/// between. A closed channel ends both ways.
async fn pipe<S>(channel: Channel<Msg>, stream: S, agent: Arc<Agent>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rx, tx) = channel.split();
    let (rd, mut wr) = tokio::io::split(stream);
    // Channel -> stream: (bytes, whether the channel closed rather than sent EOF).
    let down = async {
        use futures_util::FutureExt;
        let mut n = 0u64;
        // Packets that are already here go out in one write (as sshd's channel buffer does).
        let mut batch: Vec<bytes::Bytes> = Vec::new();
        let mut next = None;
        let closed = loop {
            let msg = match next.take() {
                Some(m) => m,
                None => rx.wait().await,
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    batch.push(data);
                    while batch.len() < 64 {
                        match rx.wait().now_or_never() {
                            Some(Some(ChannelMsg::Data { data })) => batch.push(data),
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    n += batch.iter().map(|b| b.len() as u64).sum::<u64>();
                    if write_all_vectored(&mut wr, &mut batch).await.is_err() {
                        break false;
                    }
                }
                Some(ChannelMsg::Eof) => break false,
                Some(ChannelMsg::Close) | None => break true,
                Some(_) => {}
            }
        };
        let _ = wr.shutdown().await;
        (n, closed)
    };
    // Stream -> channel.
    let up = async {
        let mut n = 0u64;
        let mut rd = outpost_common::pump::ChunkReader::new(rd, 256 * 1024);
        while let Some(chunk) = rd.next().await {
            n += chunk.len() as u64;
            if tx.data_bytes(chunk).await.is_err() {
                break;
            }
        }
        let _ = tx.eof().await;
        n
    };
    tokio::pin!(down, up);
    let (mut ab, mut ba) = (None, None);
    while ab.is_none() || ba.is_none() {
        tokio::select! {
            (n, closed) = &mut down, if ab.is_none() => {
                ab = Some(n);
                if closed {
                    break;
                }
            }
            n = &mut up, if ba.is_none() => ba = Some(n),
        }
    }
    agent.add_bytes(ab.unwrap_or(0), ba.unwrap_or(0));
    let _ = tx.close().await;
    crate::sys::trim_heap();
}

fn loopback_or(address: &str) -> String {
    match address {
        "" | "localhost" => "127.0.0.1".to_string(),
        a => a.to_string(),
    }
}

/// Environment variables a client may set (like Debian's sshd `AcceptEnv LANG LC_*`), plus
/// Outpost's session-kind marker.
fn env_allowed(name: &str) -> bool {
    name == "LANG"
        || name.starts_with("LC_")
        || name == "OUTPOST_SESSION_KIND"
        || name == "OUTPOST_NO_WAIT"
        || name == "COLORTERM"
}

impl russh::server::Handler for Conn {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.shared.accepts(offer.public_key) {
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
        if self.shared.accepts(key.public_key) {
            tracing::info!(user, peer = ?self.peer, "ssh login");
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
        let symlinks = crate::sftp::SymlinkOrder::of_client(session.remote_sshid());
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

#[derive(Default)]
struct PtyReq {
    term: String,
    cols: u32,
    rows: u32,
}

enum What {
    Shell,
    Exec(String),
    Sftp,
}

/// One session channel: collects pty/env requests, then runs the shell, command or subsystem.
async fn run_session(
    mut channel: Channel<Msg>,
    shared: Arc<SshShared>,
    handle: Handle,
    peer: Option<SocketAddr>,
    symlinks: crate::sftp::SymlinkOrder,
) -> anyhow::Result<()> {
    let id = channel.id();
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut agent_sock: Option<AgentSocket> = None;
    let what = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some(PtyReq {
                    term,
                    cols: col_width,
                    rows: row_height,
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if env_allowed(&variable_name) {
                    env.push((variable_name, variable_value));
                }
            }
            Some(ChannelMsg::AgentForward { .. }) => {
                if agent_sock.is_none() {
                    match AgentSocket::start(handle.clone(), shared.agent.clone()) {
                        Ok(s) => agent_sock = Some(s),
                        Err(e) => tracing::warn!(error = %e, "agent forwarding"),
                    }
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break What::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break What::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                if name == "sftp" {
                    break What::Sftp;
                }
            }
            Some(_) => {}
            None => return Ok(()),
        }
    };
    let mut vars = base_env(&shared);
    // As sshd sets them (relayed connections have no client address: 0.0.0.0 0).
    let (ip, port) = peer
        .map(|p| (p.ip().to_string(), p.port()))
        .unwrap_or_else(|| ("0.0.0.0".into(), 0));
    vars.push(("SSH_CONNECTION".into(), format!("{ip} {port} 127.0.0.1 22")));
    vars.push(("SSH_CLIENT".into(), format!("{ip} {port} 22")));
    if let Some(p) = &pty {
        vars.push((
            "TERM".into(),
            if p.term.is_empty() {
                "xterm".into()
            } else {
                p.term.clone()
            },
        ));
    }
    let marker = env
        .iter()
        .find(|(k, _)| k == "OUTPOST_SESSION_KIND")
        .map(|(_, v)| v.clone());
    let no_wait = env.iter().any(|(k, v)| k == "OUTPOST_NO_WAIT" && v == "1");
    // Blocking startup scripts hold new sessions back (and say so), unless told not to wait.
    let mut gate = shared.login_gate.clone();
    if !*gate.borrow() && !no_wait {
        let _ = handle
            .extended_data(
                id,
                1,
                bytes::Bytes::from_static(b"Waiting for the workspace's startup scripts to finish (they block login); `outpost ssh --no-wait` skips this.\r\n"),
            )
            .await;
        let _ = gate.wait_for(|open| *open).await;
    }
    vars.extend(env);
    if let Some(s) = &agent_sock {
        vars.push(("SSH_AUTH_SOCK".into(), s.path.display().to_string()));
    }
    let command = match &what {
        What::Exec(c) => Some(c.clone()),
        _ => None,
    };
    let _live = match what {
        What::Sftp => None,
        _ => Some(
            shared
                .agent
                .live(session_kind(marker.as_deref(), command.as_deref())),
        ),
    };
    // The message of the day for interactive login shells, unless ~/.hushlogin exists.
    if matches!(what, What::Shell) && pty.is_some() && !shared.home.join(".hushlogin").exists() {
        if let Ok(motd) = std::fs::read_to_string(shared.home.join(".outpost/motd"))
            .or_else(|_| std::fs::read_to_string("/etc/motd"))
        {
            if !motd.is_empty() {
                let _ = handle
                    .data(id, bytes::Bytes::from(motd.replace('\n', "\r\n")))
                    .await;
            }
        }
    }
    let code = match (what, pty) {
        (What::Sftp, _) => {
            run_sftp(&mut channel, &handle, id, shared.home.clone(), symlinks).await?
        }
        (What::Exec(cmd), None) => {
            run_piped(
                &mut channel,
                &handle,
                id,
                &shared.shell,
                &["-c", &cmd],
                &shared.home,
                &vars,
            )
            .await?
        }
        (What::Shell, None) => {
            run_piped(
                &mut channel,
                &handle,
                id,
                &shared.shell,
                &["-l"],
                &shared.home,
                &vars,
            )
            .await?
        }
        (what, Some(p)) => {
            let args: Vec<String> = match what {
                What::Exec(cmd) => vec!["-c".into(), cmd],
                _ => vec!["-l".into()],
            };
            run_pty(&mut channel, &handle, id, &shared, &args, &vars, p).await?
        }
    };
    match code {
        Ended::Code(c) => {
            let _ = handle.exit_status_request(id, c).await;
        }
        Ended::Signal(sig) => {
            let _ = handle
                .exit_signal_request(id, sig, false, String::new(), String::new())
                .await;
        }
    }
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
    Ok(())
}

/// A Unix socket in the workspace for `ssh -A`: each connection to it becomes an
/// `auth-agent@openssh.com` channel to the client. Removed when the session ends.
struct AgentSocket {
    path: PathBuf,
    task: tokio::task::AbortHandle,
}

impl AgentSocket {
    fn start(handle: Handle, agent: Arc<Agent>) -> anyhow::Result<AgentSocket> {
        let dir = std::env::temp_dir().join(format!("outpost-ssh-{}", uuid_like()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let path = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (handle, agent) = (handle.clone(), agent.clone());
                tokio::spawn(async move {
                    if let Ok(ch) = handle.channel_open_agent().await {
                        pipe(ch, sock, agent).await;
                    }
                });
            }
        });
        Ok(AgentSocket {
            path,
            task: task.abort_handle(),
        })
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

enum Ended {
    Code(u32),
    Signal(Sig),
}

fn sig_from_name(name: &str) -> Sig {
    match name.trim_start_matches("SIG") {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

/// Signal names as SSH spells them, and their numbers here.
const SIGNALS: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("TERM", libc::SIGTERM),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("WINCH", libc::SIGWINCH),
];

/// The number of a signal a client sent (unknown ones: TERM).
/// Sends signal number `n` to process group `pgid`.
fn signal_group(pgid: i32, n: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(n) {
        outpost_common::process::signal_group(pgid, sig);
    }
}

fn sig_number(sig: &Sig) -> i32 {
    let name = match sig {
        Sig::Custom(s) => s.clone(),
        known => format!("{known:?}"),
    };
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap_or(libc::SIGTERM)
}

/// The SSH name of a signal that ended a process.
fn sig_of_number(n: i32) -> Sig {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(name, _)| sig_from_name(name))
        .unwrap_or_else(|| Sig::Custom(n.to_string()))
}

/// The sftp subsystem over an in-memory pipe, so the channel ends like sshd's: exit-status 0
/// once the client is done (scp checks it).
async fn run_sftp(
    channel: &mut Channel<Msg>,
    handle: &Handle,
    id: ChannelId,
    home: PathBuf,
    symlinks: crate::sftp::SymlinkOrder,
) -> anyhow::Result<Ended> {
    let (ours, theirs) = tokio::io::duplex(512 * 1024);
    // The sftp server does its file I/O synchronously: it gets a thread and a runtime of its own,
    // so a slow disk never stalls the agent's other sessions, heartbeats or terminals.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let handler = crate::sftp::Sftp::new(home, symlinks);
    std::thread::Builder::new()
        .name("sftp".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                russh_sftp::server::run(theirs, handler).await;
                // Until the session has ended (or its owner is gone).
                let _ = done_rx.await;
            });
        })
        .context("starting the sftp thread")?;
    let (rd, mut wr) = tokio::io::split(ours);
    let h = handle.clone();
    let out = tokio::spawn(async move {
        let mut rd = outpost_common::pump::ChunkReader::new(rd, 256 * 1024);
        while let Some(chunk) = rd.next().await {
            if h.data(id, chunk).await.is_err() {
                break;
            }
        }
    });
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            Some(ChannelMsg::Eof) | None => break,
            Some(_) => {}
        }
    }
    let _ = wr.shutdown().await;
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(5), out).await;
    let _ = done_tx.send(());
    crate::sys::trim_heap();
    Ok(Ended::Code(0))
}

/// A process with pipes: stdin from the channel, stdout and stderr back, EOF passed on.
#[allow(clippy::too_many_arguments)]
async fn run_piped(
    channel: &mut Channel<Msg>,
    handle: &Handle,
    id: ChannelId,
    program: &str,
    args: &[&str],
    home: &Path,
    vars: &[(String, String)],
) -> anyhow::Result<Ended> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(home)
        .env_clear()
        .envs(vars.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    let pid = child.id().map(|p| p as i32);
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (h1, h2) = (handle.clone(), handle.clone());
    let out_task = tokio::spawn(async move {
        let mut rd = outpost_common::pump::ChunkReader::new(stdout, 64 * 1024);
        while let Some(chunk) = rd.next().await {
            if h1.data(id, chunk).await.is_err() {
                break;
            }
        }
    });
    let err_task = tokio::spawn(async move {
        let mut rd = outpost_common::pump::ChunkReader::new(stderr, 64 * 1024);
        while let Some(chunk) = rd.next().await {
            if h2.extended_data(id, 1, chunk).await.is_err() {
                break;
            }
        }
    });
    let status = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(ChannelMsg::Eof) => {
                    stdin = None;
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(p) = pid {
                        signal_group(p, sig_number(&signal));
                    }
                }
                Some(_) => {}
                None => {
                    // The client went away: end the process group.
                    if let Some(p) = pid {
                        signal_group(p, libc::SIGHUP);
                    }
                    let _ = child.kill().await;
                    return Ok(Ended::Code(255));
                }
            },
            st = child.wait() => break st?,
        }
    };
    let _ = out_task.await;
    let _ = err_task.await;
    crate::sys::trim_heap();
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Code(c as u32),
        (None, Some(s)) => Ended::Signal(sig_of_number(s)),
        _ => Ended::Code(255),
    })
}

/// Starts the user's shell with `args` in the home on a new PTY, with exactly `vars` as its
/// environment; the slave side is closed here (else the master never sees EOF).
pub fn spawn_in_pty(
    shared: &SshShared,
    size: portable_pty::PtySize,
    args: &[String],
    vars: &[(String, String)],
) -> anyhow::Result<(
    Box<dyn portable_pty::MasterPty + Send>,
    Box<dyn portable_pty::Child + Send + Sync>,
)> {
    let pair = portable_pty::native_pty_system()
        .openpty(size)
        .context("opening a PTY")?;
    let mut cmd = portable_pty::CommandBuilder::new(&shared.shell);
    cmd.args(args);
    cmd.cwd(&shared.home);
    cmd.env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let child = pair
        .slave
        .spawn_command(cmd)
        .context("starting the shell")?;
    drop(pair.slave);
    Ok((pair.master, child))
}

/// A process on a PTY (portable-pty, blocking: a reader thread and a writer thread).
async fn run_pty(
    channel: &mut Channel<Msg>,
    handle: &Handle,
    id: ChannelId,
    shared: &SshShared,
    args: &[String],
    vars: &[(String, String)],
    req: PtyReq,
) -> anyhow::Result<Ended> {
    use portable_pty::PtySize;
    let size = |cols: u32, rows: u32| PtySize {
        rows: rows.clamp(1, 1000) as u16,
        cols: cols.clamp(1, 1000) as u16,
        pixel_width: 0,
        pixel_height: 0,
    };
    let (master, mut child) = spawn_in_pty(
        shared,
        size(
            if req.cols == 0 { 80 } else { req.cols },
            if req.rows == 0 { 24 } else { req.rows },
        ),
        args,
        vars,
    )?;
    let pid = child.process_id().map(|p| p as i32);
    let mut reader = master.try_clone_reader()?;
    let mut writer = master.take_writer()?;
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        while let Ok(data) = in_rx.recv() {
            if writer.write_all(&data).is_err() {
                break;
            }
            let _ = writer.flush();
        }
    });
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let h = handle.clone();
    let pump = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            if h.data(id, bytes::Bytes::from(data)).await.is_err() {
                break;
            }
        }
    });
    let status = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    let tx = in_tx.clone();
                    let _ = tokio::task::spawn_blocking(move || tx.send(data.to_vec())).await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let _ = master.resize(size(col_width, row_height));
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(p) = pid {
                        signal_group(p, sig_number(&signal));
                    }
                }
                Some(_) => {}
                None => {
                    if let Some(p) = pid {
                        signal_group(p, libc::SIGHUP);
                    }
                    return Ok(Ended::Code(255));
                }
            },
            st = &mut exit_rx => break st.ok().and_then(|r| r.ok()),
        }
    };
    drop(in_tx);
    // Drain what the program wrote before it exited (background jobs may hold the PTY open:
    // stop after a quiet moment).
    drop(master);
    let _ = tokio::time::timeout(Duration::from_millis(500), pump).await;
    Ok(match status {
        Some(s) => match s.signal() {
            Some(name) => Ended::Signal(sig_from_name(&signal_short(name))),
            None => Ended::Code(s.exit_code()),
        },
        None => Ended::Code(255),
    })
}

/// portable-pty reports signals by description ("Terminated"); map the common ones back.
fn signal_short(desc: &str) -> String {
    match desc {
        "Terminated" => "TERM".into(),
        "Killed" => "KILL".into(),
        "Hangup" => "HUP".into(),
        "Interrupt" => "INT".into(),
        "Quit" => "QUIT".into(),
        "Aborted" => "ABRT".into(),
        "Segmentation fault" => "SEGV".into(),
        other => other.to_uppercase(),
    }
}

/// Serves an ssh-agent socket holding only `key` (git over SSH inside the workspace signs with
/// it; the key never touches the disk). Adding, removing or locking keys is refused.
pub async fn serve_git_agent(path: PathBuf, key: PrivateKey) -> anyhow::Result<()> {
    #[derive(Clone)]
    struct OnlyOurs(Arc<std::sync::atomic::AtomicBool>);
    impl russh::keys::agent::server::Agent for OnlyOurs {
        fn confirm_request(
            &self,
            msg: russh::keys::agent::server::MessageType,
        ) -> impl std::future::Future<Output = bool> + Send {
            use russh::keys::agent::server::MessageType as M;
            let sealed = self.0.load(Ordering::SeqCst);
            let ok = match msg {
                M::RequestKeys | M::Sign => true,
                _ => !sealed,
            };
            async move { ok }
        }
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let sealed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let agent = OnlyOurs(sealed.clone());
    tokio::spawn(async move {
        let _ = russh::keys::agent::server::serve(Box::pin(stream), agent).await;
    });
    let mut client = russh::keys::agent::client::AgentClient::connect_uds(&path).await?;
    client.add_identity(&key, &[]).await?;
    sealed.store(true, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn vectored_writes_survive_short_writes() {
        // A 7-byte pipe: every write is short, so chunks are split and advanced.
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut batch: Vec<bytes::Bytes> = ["hello ", "", "vectored", " world", "!"]
            .iter()
            .map(|s| bytes::Bytes::from_static(s.as_bytes()))
            .collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        write_all_vectored(&mut a, &mut batch).await.unwrap();
        assert!(batch.is_empty());
        drop(a);
        assert_eq!(reader.await.unwrap().unwrap(), b"hello vectored world!");
    }
}
