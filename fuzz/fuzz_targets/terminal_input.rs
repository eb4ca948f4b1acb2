//! The agent's side of a web terminal client (`outpost_agent::terminal`): the attach query
//! (`Attach::from_query`, with its percent-decoding) and the client's frames read as
//! `PtyHub::attach` reads them (`Frames`, then `resize_payload` for a resize).
//!
//! Input: the query (UTF-8, invalid sequences replaced) up to the first newline, then the
//! client's bytes, cut in two at the position their first byte gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_agent::terminal::{resize_payload, Attach};
use outpost_api::relay::pty::{Frames, KIND_INPUT, KIND_RESIZE};

/// Every byte of `s` as `%XX` (hex case from `upper`), a space as `+` when `plus`.
fn percent_encode(s: &str, upper: bool, plus: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if plus && b == b' ' {
            out.push('+');
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn query(q: &str) {
    if let Ok(a) = Attach::from_query(q) {
        assert!(
            !a.id.is_empty()
                && a.id.len() <= 64
                && a.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "accepted session id {:?}",
            a.id
        );
        assert!((1..=1000).contains(&a.cols) && (1..=1000).contains(&a.rows));
        assert!(a.command.as_deref() != Some(""), "an empty command");
    }
    // Whatever the command, percent-encoded it comes back as it was.
    let upper = q.len() % 2 == 0;
    let plus = q.len() % 3 == 0;
    let encoded = format!("id=s&command={}", percent_encode(q, upper, plus));
    let a = Attach::from_query(&encoded).expect("a valid id with a command is accepted");
    let want = (!q.is_empty()).then(|| q.to_string());
    assert_eq!(a.command, want, "the command from {encoded:?}");
    assert_eq!((a.id.as_str(), a.cols, a.rows), ("s", 80, 24));
}

fn frames(wire: &[u8]) {
    let cut = wire.first().map_or(0, |&c| usize::from(c)).min(wire.len());
    let mut f = Frames::default();
    let mut input = 0usize;
    for part in [&wire[..cut], &wire[cut..]] {
        f.push(part);
        loop {
            match f.next_frame() {
                Ok(Some((KIND_INPUT, payload))) => input += payload.len(),
                Ok(Some((KIND_RESIZE, p))) => match resize_payload(&p) {
                    Some((cols, rows)) => {
                        assert_eq!(p.len(), 4);
                        assert!((1..=1000).contains(&cols) && (1..=1000).contains(&rows));
                        let want = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]).clamp(1, 1000);
                        assert_eq!((cols, rows), (want(p[0], p[1]), want(p[2], p[3])));
                    }
                    None => assert_ne!(p.len(), 4, "a 4-byte resize was ignored"),
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(input <= wire.len());
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let q = String::from_utf8_lossy(&data[..split]);
    query(&q);
    frames(data.get(split + 1..).unwrap_or_default());
    // Any bytes as a resize payload.
    if let Some(p) = resize_payload(data) {
        assert_eq!(data.len(), 4);
        assert!((1..=1000).contains(&p.0) && (1..=1000).contains(&p.1));
    }
});
