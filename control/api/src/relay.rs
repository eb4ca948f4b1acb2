//! The relay protocol, in one place for control and the agent: the HTTP upgrade tokens, the
//! HTTP/2 settings of the tunnel, the stream kinds (the paths control opens on an agent's
//! tunnel) and the web terminal's frame codec.
//!
//! An agent dials control's agent API and upgrades `GET /agent/v1/tunnel` to [`UPGRADE_TUNNEL`];
//! on that connection the agent serves HTTP/2 and control opens one stream per client, with a
//! path from [`stream`]. Clients reach control with an upgrade to [`UPGRADE_RELAY`].

use std::time::Duration;

/// The agent's upgrade of `GET /agent/v1/tunnel`.
pub const UPGRADE_TUNNEL: &str = "outpost-tunnel";
/// A client's upgrade of `GET /api/v1/workspaces/NAME/relay/...`.
pub const UPGRADE_RELAY: &str = "outpost-relay";
/// Where the agent asks for its tunnel (agent API, mTLS).
pub const TUNNEL_PATH: &str = "/agent/v1/tunnel";

/// HTTP/2 flow control on the tunnel (both ends set the same): big windows keep a relayed bulk
/// transfer from stalling on window updates.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;
/// Control pings the tunnel this often; a dead agent connection is found within two of them.
pub const KEEPALIVE: Duration = Duration::from_secs(20);

/// The stream kinds: the paths control opens on a tunnel.
pub mod stream {
    /// The workspace's SSH server.
    pub const SSH: &str = "/ssh";
    /// A reconnecting terminal: `/pty?id=SESSION&cols=N&rows=N[&command=...]`.
    pub const PTY: &str = "/pty";
    const TCP_PREFIX: &str = "/tcp/";

    /// A TCP connection to `port` inside the workspace.
    pub fn tcp(port: u16) -> String {
        format!("{TCP_PREFIX}{port}")
    }

    /// The port of a `/tcp/PORT` path.
    pub fn tcp_port(path: &str) -> Option<u16> {
        path.strip_prefix(TCP_PREFIX)?.parse().ok()
    }
}

/// The web terminal's frames, client to agent: `[kind u8][len u32 BE][payload]`. Kind
/// [`pty::KIND_INPUT`]: input bytes; [`pty::KIND_RESIZE`]: `cols u16 BE, rows u16 BE`. Agent to
/// client: the terminal's output bytes, unframed.
pub mod pty {
    pub const KIND_INPUT: u8 = 0;
    pub const KIND_RESIZE: u8 = 1;
    /// Largest client frame accepted (input is typed or pasted text).
    pub const MAX_FRAME: usize = 1 << 20;

    /// One frame on the wire.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(5 + payload.len());
        frame.push(kind);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// A frame longer than [`MAX_FRAME`]: the client is cut off.
    #[derive(Debug, PartialEq, Eq)]
    pub struct FrameTooLarge;

    impl std::fmt::Display for FrameTooLarge {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a terminal frame is larger than {MAX_FRAME} bytes")
        }
    }

    impl std::error::Error for FrameTooLarge {}

    /// Client frames (`[kind][len u32 BE][payload]`) reassembled from body chunks.
    #[derive(Default)]
    pub struct Frames {
        buf: Vec<u8>,
    }

    impl Frames {
        pub fn push(&mut self, data: &[u8]) {
            self.buf.extend_from_slice(data);
        }

        /// The next whole frame; `Err` for an oversized one (the client is cut off).
        pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameTooLarge> {
            if self.buf.len() < 5 {
                return Ok(None);
            }
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_FRAME {
                return Err(FrameTooLarge);
            }
            if self.buf.len() < 5 + len {
                return Ok(None);
            }
            let kind = self.buf[0];
            let payload = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            Ok(Some((kind, payload)))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn frames_split_anywhere() {
            let mut wire = vec![
                KIND_INPUT,
                0,
                0,
                0,
                2,
                b'h',
                b'i',
                KIND_RESIZE,
                0,
                0,
                0,
                4,
                0,
                100,
                0,
                30,
            ];
            wire.extend_from_slice(&[KIND_INPUT, 0, 0, 0, 0]);
            for cut in 0..wire.len() {
                let mut f = Frames::default();
                let mut got = Vec::new();
                for part in [&wire[..cut], &wire[cut..]] {
                    f.push(part);
                    while let Ok(Some(x)) = f.next_frame() {
                        got.push(x);
                    }
                }
                assert_eq!(
                    got,
                    vec![
                        (KIND_INPUT, b"hi".to_vec()),
                        (KIND_RESIZE, vec![0, 100, 0, 30]),
                        (KIND_INPUT, vec![])
                    ],
                    "cut at {cut}"
                );
            }
            let mut f = Frames::default();
            f.push(&[KIND_INPUT, 0xff, 0xff, 0xff, 0xff]);
            assert!(f.next_frame().is_err());
        }

        #[test]
        fn encode_and_decode_agree() {
            let mut f = Frames::default();
            f.push(&encode(KIND_RESIZE, &[0, 80, 0, 24]));
            f.push(&encode(KIND_INPUT, b"ls\r"));
            assert_eq!(f.next_frame(), Ok(Some((KIND_RESIZE, vec![0, 80, 0, 24]))));
            assert_eq!(f.next_frame(), Ok(Some((KIND_INPUT, b"ls\r".to_vec()))));
            assert_eq!(f.next_frame(), Ok(None));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tcp_paths_round_trip() {
        assert_eq!(super::stream::tcp(8080), "/tcp/8080");
        assert_eq!(super::stream::tcp_port("/tcp/8080"), Some(8080));
        assert_eq!(super::stream::tcp_port("/tcp/x"), None);
        assert_eq!(super::stream::tcp_port("/ssh"), None);
    }
}
