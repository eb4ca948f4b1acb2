//! SSH by dial-back (the protocol is `outpost_api::relay::dial`): instead of a stream on the
//! agent's TLS tunnel, control asks the agent (through the tunnel) to dial a plain TCP
//! connection to the agent listener with a one-time token, and splices the client's connection
//! to it. SSH encrypts and authenticates its own bytes end to end, so nothing is lost by not
//! wrapping them in TLS again, and control moves them without copying them through user space.
//!
//! A token is 256 random bits, registered here only while this replica waits for that one
//! connection (at most [`DIAL_WAIT`]), used once, and sent to the agent only inside its mTLS
//! tunnel. A connection with an unknown, used or malformed token is closed without a byte. If
//! the agent cannot dial (an old agent, a network that only lets its tunnel through), the SSH
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

use super::AppState;

/// How long control waits for the agent's connection before using the tunnel instead.
const DIAL_WAIT: Duration = Duration::from_secs(4);
/// How long a dialed connection may take to send its preamble.
const PREAMBLE_WAIT: Duration = Duration::from_secs(5);
/// Dial-backs waited for at once; past it SSH goes through the tunnel.
const MAX_PENDING: usize = 4096;

/// The dial-backs this replica waits for, by token.
#[derive(Default)]
pub struct Dials {
    pending: Mutex<HashMap<String, oneshot::Sender<TcpStream>>>,
    /// The address agents are told to dial when several replicas share the store (this
    /// replica's own agent listener, from `--replica-url`); None: the agent's own agent URL.
    own: OnceLock<Option<String>>,
}

/// A registered token; dropping it forgets the token.
struct Pending<'a> {
    dials: &'a Dials,
    token: String,
    rx: oneshot::Receiver<TcpStream>,
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

    fn register(&self) -> Option<Pending<'_>> {
        let mut pending = self.pending.locked();
        if pending.len() >= MAX_PENDING {
            return None;
        }
        let token: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (tx, rx) = oneshot::channel();
        pending.insert(token.clone(), tx);
        Some(Pending {
            dials: self,
            token,
            rx,
        })
    }

    /// Hands a dialed connection to whoever waits for `token`, after telling the agent so
    /// ([`relay::dial::ACK`]); false when nobody does.
    async fn deliver(&self, token: &str, mut tcp: TcpStream) -> bool {
        let Some(tx) = self.pending.locked().remove(token) else {
            return false;
        };
        if tx.is_closed() || tcp.write_all(&[relay::dial::ACK]).await.is_err() {
            return false;
        }
        tx.send(tcp).is_ok()
    }

    /// How many dial-backs are awaited now (tests of the bound).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.pending.locked().len()
    }
}

/// A plain connection on the agent listener (its first byte was not TLS's): reads the
/// preamble, with a deadline, and hands the connection over; anything else is closed.
pub(super) async fn accept(dials: &Dials, mut tcp: TcpStream, addr: SocketAddr) {
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
    if !dials.deliver(token, tcp).await {
        tracing::info!(%addr, "agent listener: a dial-back with an unknown or used token");
    }
}

/// Asks the agent to dial back for an SSH connection; the connection, or None (the caller uses
/// a stream on the tunnel).
pub(super) async fn ssh(state: &AppState, agent_id: &str) -> Option<TcpStream> {
    let mut pending = state.dials.register()?;
    let to = state.dials.own.get().cloned().flatten();
    let path = relay::dial::path(&pending.token, to.as_deref());
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
    let got = tokio::time::timeout(DIAL_WAIT, async {
        tokio::select! {
            tcp = &mut pending.rx => tcp.ok(),
            _ = asked => None,
        }
    })
    .await
    .ok()
    .flatten();
    if got.is_none() {
        tracing::info!(agent = agent_id, "SSH dial-back failed; using the tunnel");
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_single_use_and_forgotten_when_dropped() {
        let dials = Dials::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = dials.register().unwrap();
        assert!(relay::dial::valid_token(&p.token));
        let token = p.token.clone();
        let a = TcpStream::connect(addr).await.unwrap();
        let (mut a_far, _) = listener.accept().await.unwrap();
        assert!(dials.deliver(&token, a).await);
        let mut ack = [0u8; 1];
        a_far.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack[0], relay::dial::ACK, "the agent is told");
        let b = TcpStream::connect(addr).await.unwrap();
        assert!(!dials.deliver(&token, b).await, "used once");
        let mut p = p;
        assert!((&mut p.rx).await.is_ok());
        let q = dials.register().unwrap();
        let t2 = q.token.clone();
        drop(q);
        assert_eq!(dials.waiting(), 0);
        let c = TcpStream::connect(addr).await.unwrap();
        assert!(
            !dials.deliver(&t2, c).await,
            "forgotten when the waiter gave up"
        );
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
