//! SSH and web terminals by dial-back (the protocol is `outpost_api::relay::dial`): instead
//! of a stream on the agent's TLS tunnel, control asks the agent (through the tunnel) to dial a
//! connection of its own to the agent listener with a one-time token. SSH's is plain TCP: SSH
//! encrypts and authenticates its own bytes end to end, so nothing is lost by not wrapping them
//! in TLS again, and control splices the client's connection to it without copying them
//! through user space. A terminal's starts TLS after the preamble, with the agent's client
//! certificate, which must name the agent control asked; control bridges the browser's
//! WebSocket to it in one task (no HTTP/2 stream and no task hops per keystroke).
//!
//! A token is 256 random bits, registered here only while this replica waits for that one
//! connection (at most [`DIAL_WAIT`]), used once, and sent to the agent only inside its mTLS
//! tunnel. A connection with an unknown, used or malformed token is closed without a byte. If
//! the agent cannot dial (an old agent, a network that only lets its tunnel through), the
//! connection goes through the tunnel as before.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use outpost_api::relay;
use outpost_common::LockExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::AppState;

/// How long control waits for the agent's connection before using the tunnel instead.
const DIAL_WAIT: Duration = Duration::from_secs(4);
/// How long a dialed connection may take to send its preamble (and a terminal's, its TLS
/// handshake).
const PREAMBLE_WAIT: Duration = Duration::from_secs(5);
/// Dial-backs waited for at once; past it connections go through the tunnel.
const MAX_PENDING: usize = 4096;

/// A connection an agent dialed: plain for SSH, TLS (the agent's certificate checked) for a
/// terminal.
pub(super) enum Dialed {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The agent on this machine, on the hand-off socket (`handoff.rs`), ready for the
    /// browser's connection.
    Handoff(tokio::net::UnixStream),
}

/// What a waiter expects on its token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    /// Plain TCP, acknowledged with [`relay::dial::ACK`] (SSH).
    Plain,
    /// TLS started by the agent whose id this is (a terminal); or, where `handoff` names the
    /// Unix user that agent runs as, that user on the hand-off socket.
    Tls { agent: String, handoff: Option<u32> },
}

/// The dial-backs this replica waits for, by token.
#[derive(Default)]
pub struct Dials {
    pending: Mutex<HashMap<String, (Want, oneshot::Sender<Dialed>)>>,
    /// The address agents are told to dial when several replicas share the store (this
    /// replica's own agent listener, from `--replica-url`); None: the agent's own agent URL.
    own: OnceLock<Option<String>>,
}

/// A registered token; dropping it forgets the token.
struct Pending<'a> {
    dials: &'a Dials,
    token: String,
    rx: oneshot::Receiver<Dialed>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.dials.pending.locked().remove(&self.token);
    }
}

impl Dials {
    /// Sets the address agents dial back to (called once at startup).
    pub fn set_own_address(&self, url: Option<&str>) {
        let addr = url.and_then(|u| {
            let rest = u.split_once("://").map_or(u, |(_, r)| r);
            let authority = rest.split('/').next().unwrap_or(rest);
            let unspecified = authority.starts_with("0.0.0.0:") || authority.starts_with("[::]:");
            (relay::dial::valid_address(authority) && !unspecified).then(|| authority.to_string())
        });
        let _ = self.own.set(addr);
    }

    fn register(&self, want: Want) -> Option<Pending<'_>> {
        let mut pending = self.pending.locked();
        if pending.len() >= MAX_PENDING {
            return None;
        }
        let token: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (tx, rx) = oneshot::channel();
        pending.insert(token.clone(), (want, tx));
        Some(Pending {
            dials: self,
            token,
            rx,
        })
    }

    /// Hands a dialed connection to whoever waits for `token`: a plain one after telling the
    /// agent so ([`relay::dial::ACK`]), a TLS one once the handshake is done and the agent's
    /// certificate names the agent asked; false when nobody waits for it or the check fails.
    /// The token is used up either way.
    async fn deliver(&self, token: &str, mut tcp: TcpStream, tls: &TlsAcceptor) -> bool {
        let Some((want, tx)) = self.pending.locked().remove(token) else {
            return false;
        };
        if tx.is_closed() {
            return false;
        }
        let dialed = match want {
            Want::Plain => {
                if tcp.write_all(&[relay::dial::ACK]).await.is_err() {
                    return false;
                }
                Dialed::Plain(tcp)
            }
            Want::Tls { agent, .. } => {
                let stream = match tokio::time::timeout(PREAMBLE_WAIT, tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::info!(agent, "a terminal dial-back's TLS handshake failed");
                        return false;
                    }
                };
                let presented = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::ca::identity_from_cert(c))
                    .map(|(_, id)| id);
                if presented.as_deref() != Some(agent.as_str()) {
                    tracing::warn!(
                        agent,
                        presented = presented.as_deref().unwrap_or("none"),
                        "a terminal dial-back with another identity's certificate; closed"
                    );
                    return false;
                }
                Dialed::Tls(Box::new(stream))
            }
        };
        tx.send(dialed).is_ok()
    }

    /// Hands the agent's connection on the hand-off socket (from Unix user `uid`) to whoever
    /// waits for `token` as a terminal that may be handed off to that user, after telling the
    /// agent so ([`relay::dial::ACK`]); false otherwise. The token is used up either way.
    pub(super) async fn deliver_handoff(
        &self,
        token: &str,
        mut conn: tokio::net::UnixStream,
        uid: u32,
    ) -> bool {
        let Some((want, tx)) = self.pending.locked().remove(token) else {
            return false;
        };
        match want {
            Want::Tls {
                handoff: Some(u), ..
            } if u == uid && !tx.is_closed() => {
                conn.write_all(&[relay::dial::ACK]).await.is_ok()
                    && tx.send(Dialed::Handoff(conn)).is_ok()
            }
            _ => false,
        }
    }

    /// How many dial-backs are awaited now (tests of the bound).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.pending.locked().len()
    }
}

/// A plain connection on the agent listener (its first byte was not TLS's): reads the
/// preamble, with a deadline, and hands the connection over; anything else is closed.
pub(super) async fn accept(dials: &Dials, mut tcp: TcpStream, addr: SocketAddr, tls: &TlsAcceptor) {
    let mut pre = [0u8; relay::dial::PREAMBLE_LEN];
    match tokio::time::timeout(PREAMBLE_WAIT, tcp.read_exact(&mut pre)).await {
        Ok(Ok(_)) => {}
        _ => {
            tracing::debug!(%addr, "agent listener: a plain connection sent no dial preamble");
            return;
        }
    }
    let Some(token) = relay::dial::parse_preamble(&pre) else {
        tracing::debug!(%addr, "agent listener: not TLS and not a dial preamble");
        return;
    };
    if !dials.deliver(token, tcp, tls).await {
        tracing::info!(%addr, "agent listener: a dial-back with an unknown or used token");
    }
}

/// Asks the agent to dial back for an SSH connection; the connection, or None (the caller uses
/// a stream on the tunnel).
pub(super) async fn ssh(state: &AppState, agent_id: &str) -> Option<TcpStream> {
    match ask(state, agent_id, Want::Plain, relay::dial::path).await {
        Some(Dialed::Plain(tcp)) => Some(tcp),
        Some(Dialed::Tls(_) | Dialed::Handoff(_)) => None,
        None => {
            tracing::info!(agent = agent_id, "SSH dial-back failed; using the tunnel");
            None
        }
    }
}

/// Asks the agent to dial back, in TLS, for a web terminal (`pty_query`: a `/pty` stream's
/// query), or, with `handoff` (the Unix user it runs as), to take the browser's connection on
/// this replica's hand-off socket; the agent's connection, or None (the caller uses a stream
/// on the tunnel).
pub(super) async fn pty(
    state: &AppState,
    agent_id: &str,
    pty_query: &str,
    handoff: Option<u32>,
) -> Option<Dialed> {
    let want = Want::Tls {
        agent: agent_id.to_string(),
        handoff,
    };
    let sock = handoff.and(state.handoff.path());
    let dialed = ask(state, agent_id, want, |token, to| {
        relay::dial::pty_path(token, to, sock, pty_query)
    })
    .await;
    match dialed {
        Some(d @ (Dialed::Tls(_) | Dialed::Handoff(_))) => Some(d),
        Some(Dialed::Plain(_)) | None => {
            tracing::info!(
                agent = agent_id,
                "terminal dial-back failed; using the tunnel"
            );
            None
        }
    }
}

/// Registers a token, asks the agent (on its tunnel, here or through the replica holding it)
/// to dial back with it, and waits at most [`DIAL_WAIT`] for the connection.
async fn ask(
    state: &AppState,
    agent_id: &str,
    want: Want,
    path: impl FnOnce(&str, Option<&str>) -> String,
) -> Option<Dialed> {
    let mut pending = state.dials.register(want)?;
    let to = state.dials.own.get().cloned().flatten();
    let path = path(&pending.token, to.as_deref());
    let asked = async {
        let opened = if state.tunnels.is_up(agent_id) {
            super::relay::open_local(state, agent_id, &path).await.ok()
        } else {
            super::peer::open(state, agent_id, &path)
                .await
                .ok()
                .flatten()
        };
        // The agent answers once it has dialed (or failed to); keep the stream until then.
        if let Some(stream) = opened {
            std::future::pending::<()>().await;
            drop(stream);
        }
    };
    tokio::time::timeout(DIAL_WAIT, async {
        tokio::select! {
            dialed = &mut pending.rx => dialed.ok(),
            _ = asked => None,
        }
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaSet;
    use crate::secrets::Keyring;

    fn acceptor(dir: &std::path::Path) -> (CaSet, TlsAcceptor) {
        let keys = Keyring::load(None, &Keyring::default_file(dir)).unwrap();
        let ca = CaSet::load(dir, &keys).unwrap();
        let cfg = ca.agent_server_config(&["localhost".to_string()]).unwrap();
        (ca, TlsAcceptor::from(std::sync::Arc::new(cfg)))
    }

    /// An agent's TLS client config: a fresh key, a certificate naming `agent`.
    fn agent_tls(ca: &CaSet, agent: &str) -> tokio_rustls::TlsConnector {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let cert = ca
            .signing
            .sign_agent_csr(&csr, "ws", agent, Duration::from_secs(600))
            .unwrap();
        let chain = format!("{}{}", cert.pem, ca.signing.cert_pem());
        let cfg =
            outpost_common::tls::client_config(&ca.pins(), Some((&chain, &key.serialize_pem())))
                .unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
    }

    /// A connected pair: (control's end, the agent's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, agent)
    }

    #[tokio::test]
    async fn tokens_are_single_use_and_forgotten_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_ca, tls) = acceptor(dir.path());
        let dials = Dials::default();
        let p = dials.register(Want::Plain).unwrap();
        assert!(relay::dial::valid_token(&p.token));
        let token = p.token.clone();
        let (a, mut a_far) = pair().await;
        assert!(dials.deliver(&token, a, &tls).await);
        let mut ack = [0u8; 1];
        a_far.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack[0], relay::dial::ACK, "the agent is told");
        let (b, _b_far) = pair().await;
        assert!(!dials.deliver(&token, b, &tls).await, "used once");
        let mut p = p;
        assert!(matches!((&mut p.rx).await, Ok(Dialed::Plain(_))));
        let q = dials.register(Want::Plain).unwrap();
        let t2 = q.token.clone();
        drop(q);
        assert_eq!(dials.waiting(), 0);
        let (c, _c_far) = pair().await;
        assert!(
            !dials.deliver(&t2, c, &tls).await,
            "forgotten when the waiter gave up"
        );
    }

    /// A terminal's dial-back is TLS with the asked agent's certificate: another agent's
    /// certificate (a workspace's own agent key, used from inside it), no certificate, or plain
    /// bytes get nothing, and the token is used up.
    #[tokio::test]
    async fn terminal_dial_backs_need_the_asked_agents_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, tls) = acceptor(dir.path());
        let dials = Dials::default();
        let name = || rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let want = || Want::Tls {
            agent: "ag-1".to_string(),
            handoff: None,
        };

        // Another agent's certificate.
        let mut p = dials.register(want()).unwrap();
        let token = p.token.clone();
        let (ours, theirs) = pair().await;
        let other = agent_tls(&ca, "ag-2");
        let client = tokio::spawn(async move { other.connect(name(), theirs).await });
        assert!(!dials.deliver(&token, ours, &tls).await);
        assert!((&mut p.rx).await.is_err(), "the waiter got nothing");
        // TLS 1.3: the client may finish before the server says no; its stream is then closed.
        if let Ok(Ok(mut s)) = client.await {
            let mut b = [0u8; 1];
            assert!(!matches!(s.read(&mut b).await, Ok(1)));
        }
        let (again, _far) = pair().await;
        assert!(!dials.deliver(&token, again, &tls).await, "used up");

        // No certificate at all.
        let mut p = dials.register(want()).unwrap();
        let token = p.token.clone();
        let (ours, theirs) = pair().await;
        let anon = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            outpost_common::tls::client_config(&ca.pins(), None).unwrap(),
        ));
        let client = tokio::spawn(async move { anon.connect(name(), theirs).await });
        assert!(!dials.deliver(&token, ours, &tls).await);
        assert!((&mut p.rx).await.is_err());
        let _ = client.await;

        // Plain bytes where TLS is expected.
        let mut p = dials.register(want()).unwrap();
        let token = p.token.clone();
        let (ours, mut theirs) = pair().await;
        theirs.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        assert!(!dials.deliver(&token, ours, &tls).await);
        assert!((&mut p.rx).await.is_err());

        // The asked agent's own certificate: the waiter gets the stream, and bytes flow.
        let mut p = dials.register(want()).unwrap();
        let token = p.token.clone();
        let (ours, theirs) = pair().await;
        let right = agent_tls(&ca, "ag-1");
        let client = tokio::spawn(async move {
            let mut s = right.connect(name(), theirs).await.unwrap();
            s.write_all(b"hi").await.unwrap();
            s.flush().await.unwrap();
            s
        });
        assert!(dials.deliver(&token, ours, &tls).await);
        let Ok(Dialed::Tls(mut got)) = (&mut p.rx).await else {
            panic!("the waiter gets the TLS stream");
        };
        let mut b = [0u8; 2];
        got.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");
        drop(client.await.unwrap());
        drop(p);
        assert_eq!(dials.waiting(), 0);
    }

    /// A hand-off is only for the Unix user the asked agent runs as, only where the waiter
    /// allows one, and its token is used up by any attempt.
    #[tokio::test]
    async fn hand_offs_need_the_agents_unix_user() {
        let dials = Dials::default();
        let want = |handoff| Want::Tls {
            agent: "ag-1".to_string(),
            handoff,
        };
        let conn = || tokio::net::UnixStream::pair().unwrap().0;

        // Another user's connection with the right token: nothing, and the token is gone.
        let mut p = dials.register(want(Some(1000))).unwrap();
        let token = p.token.clone();
        assert!(!dials.deliver_handoff(&token, conn(), 1001).await);
        assert!((&mut p.rx).await.is_err(), "the waiter got nothing");
        assert!(
            !dials.deliver_handoff(&token, conn(), 1000).await,
            "used up"
        );

        // A terminal that may not be handed off, and an SSH dial-back: never by the socket.
        for w in [want(None), Want::Plain] {
            let mut p = dials.register(w).unwrap();
            let token = p.token.clone();
            assert!(!dials.deliver_handoff(&token, conn(), 1000).await);
            assert!((&mut p.rx).await.is_err());
        }

        // The agent's own user: told so, and the waiter gets the connection.
        let mut p = dials.register(want(Some(1000))).unwrap();
        let token = p.token.clone();
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        assert!(dials.deliver_handoff(&token, ours, 1000).await);
        let mut ack = [0u8; 1];
        theirs.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack[0], relay::dial::ACK);
        assert!(matches!((&mut p.rx).await, Ok(Dialed::Handoff(_))));
        assert!(
            !dials
                .deliver_handoff("f".repeat(64).as_str(), conn(), 1000)
                .await
        );
        drop(p);
        assert_eq!(dials.waiting(), 0);
    }

    #[test]
    fn own_address_is_the_replica_urls_authority() {
        let d = Dials::default();
        d.set_own_address(Some("https://10.1.2.3:7443/"));
        assert_eq!(d.own.get(), Some(&Some("10.1.2.3:7443".to_string())));
        let d = Dials::default();
        d.set_own_address(Some("https://bad host:1"));
        assert_eq!(d.own.get(), Some(&None));
    }
}
