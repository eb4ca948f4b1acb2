//! The web terminal's frame codec (`outpost_api::relay::pty`) and the `/tcp/PORT` stream paths.
//!
//! Input: `[n][n & 15 chunk sizes][rest]`. `rest` is read three ways:
//! - as bytes off the wire, pushed into `Frames` in chunks of the given sizes: what comes out
//!   must be what a reader holding the whole stream at once sees (same frames, the error at the
//!   same frame), and what `Frames` holds after each chunk is less than one frame;
//! - as frames to send (`[kind][len u8][payload]...`): encoded, chunked the same way and read
//!   back, they must come back equal, with nothing left over;
//! - as a stream path for `tcp_port`.
//!
//! With `n == 0xff` the input also sends a header declaring exactly `MAX_FRAME` bytes (it must
//! be waited for) and one declaring more (it must be an error, not a panic or an allocation);
//! the first such input in a process also round-trips a whole `MAX_FRAME`-byte frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_api::relay::pty::{encode, FrameTooLarge, Frames, MAX_FRAME};
use outpost_api::relay::stream;

type Frame = (u8, Vec<u8>);

/// `data` cut into chunks of `sizes` (cycled; a 0 pushes an empty chunk) until it runs out.
fn chunks<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|&s| s == 0) {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    for &s in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(s.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// What a reader with the whole stream at once sees: the whole frames in order, then whether
/// the next header declares more than `MAX_FRAME` (the client is cut off there).
fn reference(wire: &[u8]) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    let mut rest = wire;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len > MAX_FRAME {
            return (frames, true);
        }
        if rest.len() < 5 + len {
            break;
        }
        frames.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    (frames, false)
}

/// `Frames` fed chunk by chunk, drained after each as the agent does: the frames, whether it
/// cut the client off, and the bytes it still holds at the end.
fn read_chunked(parts: &[&[u8]]) -> (Vec<Frame>, bool, usize) {
    let mut f = Frames::default();
    let mut got = Vec::new();
    let (mut pushed, mut consumed) = (0usize, 0usize);
    for part in parts {
        f.push(part);
        pushed += part.len();
        loop {
            match f.next_frame() {
                Ok(Some((kind, payload))) => {
                    assert!(
                        payload.len() <= MAX_FRAME,
                        "a frame past MAX_FRAME came out"
                    );
                    consumed += 5 + payload.len();
                    got.push((kind, payload));
                }
                Ok(None) => break,
                Err(FrameTooLarge) => {
                    // Asking again after the error must not panic either.
                    let _ = f.next_frame();
                    return (got, true, pushed - consumed);
                }
            }
        }
        // Drained: what is held is less than one whole frame, so memory stays bounded by the
        // largest frame allowed, whatever the client sends.
        let held = pushed - consumed;
        assert!(
            held < 5 + MAX_FRAME,
            "Frames holds {held} bytes after draining"
        );
        assert_eq!(f.next_frame(), Ok(None), "a drained Frames yields again");
    }
    (got, false, pushed - consumed)
}

/// Frames to send from `data`: `[kind][len u8][payload]...`, a short last payload as it is.
fn to_send(data: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let end = (i + 2 + data[i + 1] as usize).min(data.len());
        out.push((data[i], data[i + 2..end].to_vec()));
        i = end;
    }
    out
}

fn round_trip(frames: &[Frame], sizes: &[usize]) {
    let mut wire = Vec::new();
    for (kind, payload) in frames {
        let e = encode(*kind, payload);
        assert_eq!(e.len(), 5 + payload.len());
        assert_eq!(e[0], *kind);
        assert_eq!(&e[1..5], &(payload.len() as u32).to_be_bytes());
        assert_eq!(&e[5..], &payload[..]);
        wire.extend_from_slice(&e);
    }
    let (got, too_large, held) = read_chunked(&chunks(&wire, sizes));
    assert!(!too_large, "frames of at most MAX_FRAME bytes were refused");
    assert_eq!(held, 0, "bytes left over after whole frames");
    assert!(
        got == frames,
        "encode -> Frames did not give the frames back"
    );
}

fn tcp_paths(rest: &[u8]) {
    if let Ok(path) = std::str::from_utf8(rest) {
        if let Some(port) = stream::tcp_port(path) {
            assert!(path.starts_with("/tcp/"), "{path:?} read as port {port}");
            assert_eq!(stream::tcp_port(&stream::tcp(port)), Some(port));
        }
    }
    if let [a, b, ..] = *rest {
        let port = u16::from_be_bytes([a, b]);
        assert_eq!(stream::tcp_port(&stream::tcp(port)), Some(port));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, data)) = data.split_first() else {
        return;
    };
    let k = usize::from(n & 15).min(data.len());
    let (sizes, rest) = data.split_at(k);
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();

    // The bytes as a client's stream.
    let (want, want_err) = reference(rest);
    let (got, got_err, _) = read_chunked(&chunks(rest, &sizes));
    assert_eq!(
        got_err, want_err,
        "the error depends on where the stream was cut"
    );
    assert!(got == want, "the frames depend on where the stream was cut");

    // The bytes as frames to send.
    round_trip(&to_send(rest), &sizes);

    tcp_paths(rest);

    if n == 0xff {
        // The largest frame allowed is waited for, one byte more is refused from its header
        // alone (the payload never has to arrive, nothing that size is allocated).
        let kind = rest.first().copied().unwrap_or(0);
        let extra = u32::from(rest.get(1).copied().unwrap_or(0)) << 23;
        for (len, refused) in [
            (MAX_FRAME as u32, false),
            (MAX_FRAME as u32 + 1 + extra, true),
        ] {
            let mut header = vec![kind];
            header.extend_from_slice(&len.to_be_bytes());
            let (got, too_large, held) = read_chunked(&chunks(&header, &sizes));
            assert!(
                got.is_empty(),
                "a frame came out of a bare {len}-byte header"
            );
            assert_eq!(too_large, refused, "a header declaring {len} bytes");
            assert!(refused || held == 5);
        }
        // A whole frame of MAX_FRAME bytes, cut as this input says, goes through: once per
        // process (it costs a few MiB of copies).
        static BIG: std::sync::Once = std::sync::Once::new();
        BIG.call_once(|| {
            let big = vec![(kind, vec![kind; MAX_FRAME])];
            let big_sizes: Vec<usize> = sizes.iter().map(|s| s * 4096).collect();
            round_trip(&big, &big_sizes);
        });
    }
});
