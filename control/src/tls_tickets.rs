//! TLS 1.3 session tickets for the agent listener, sealed under keys every replica derives from
//! the secrets key, so an agent that reconnects (to a restarted control, or to another replica
//! on the same database) resumes its session instead of a full handshake: no certificate
//! signatures made or checked on either side, only the key exchange. That is most of a
//! handshake's CPU, which is what a reconnection storm of thousands of agents spends.
//!
//! A ticket is `PERIOD (8 bytes, big-endian) || nonce (12) || AES-256-GCM(state) || tag`. The
//! key of a period is HKDF-SHA256 over the current secrets key, for that period's number; a
//! ticket opens in its own period and the next one only, so none lives past two periods
//! ([`PERIOD_SECS`]), whatever lifetime the client keeps it for. A resumed session carries the
//! client certificate chain the full handshake verified (rustls keeps it in the ticket), and
//! every request is still checked against the agent's current certificate serial in the store,
//! and the certificate's expiry is checked on every connection (`agent_listen.rs`), so a ticket
//! grants nothing the certificate it was issued for does not.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;

/// How long one ticket key seals new tickets; a ticket opens for at most two of these.
pub const PERIOD_SECS: u64 = 6 * 60 * 60;

/// The HKDF salt: a domain apart from every other use of the secrets key.
const SALT: &[u8] = b"outpost agent listener TLS session tickets v1";

/// Seals and opens session tickets (rustls' `ProducesTickets`).
pub struct TicketKeys {
    prk: hkdf::Prk,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKeys")
    }
}

impl TicketKeys {
    /// Ticket keys derived from `secret` (the current secrets key's 32 bytes).
    pub fn new(secret: &[u8; 32]) -> TicketKeys {
        TicketKeys {
            prk: hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret),
        }
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let info = period.to_be_bytes();
        let info = [&info[..]];
        let okm = self.prk.expand(&info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn seal_at(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.key(period)?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let head = period.to_be_bytes();
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&head),
            &mut body,
        )
        .ok()?;
        let mut out = Vec::with_capacity(head.len() + NONCE_LEN + body.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, now_period: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        let (head, rest) = ticket.split_at_checked(8)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let period = u64::from_be_bytes(head.try_into().ok()?);
        if period != now_period && period.checked_add(1) != Some(now_period) {
            return None;
        }
        let key = self.key(period)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(head), &mut body)
            .ok()?
            .len();
        body.truncate(len);
        Some(body)
    }
}

fn period_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / PERIOD_SECS)
        .unwrap_or(0)
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    /// What the client is told (it may drop the ticket earlier, never keep it longer).
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(period_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(period_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        let keys = TicketKeys::new(&[7; 32]);
        let t = keys.seal_at(100, b"session state").unwrap();
        assert_eq!(keys.open_at(100, &t).unwrap(), b"session state");
        assert_eq!(keys.open_at(101, &t).unwrap(), b"session state");
        assert!(keys.open_at(102, &t).is_none(), "two periods old");
        assert!(keys.open_at(99, &t).is_none(), "from the future");
    }

    #[test]
    fn replicas_with_one_secret_open_each_others_tickets_and_no_one_else_does() {
        let a = TicketKeys::new(&[7; 32]);
        let b = TicketKeys::new(&[7; 32]);
        let other = TicketKeys::new(&[8; 32]);
        let t = a.seal_at(5, b"x").unwrap();
        assert_eq!(b.open_at(5, &t).unwrap(), b"x");
        assert!(other.open_at(5, &t).is_none());
    }

    #[test]
    fn altered_or_short_tickets_are_refused() {
        let keys = TicketKeys::new(&[7; 32]);
        let t = keys.seal_at(5, b"state").unwrap();
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert!(keys.open_at(5, &bad).is_none(), "byte {i} flipped");
        }
        for n in 0..t.len() {
            assert!(keys.open_at(5, &t[..n]).is_none(), "cut to {n}");
        }
        // The period is bound to the ciphertext: relabelling a ticket as newer fails.
        let mut moved = t.clone();
        moved[..8].copy_from_slice(&6u64.to_be_bytes());
        assert!(keys.open_at(6, &moved).is_none());
    }
}
