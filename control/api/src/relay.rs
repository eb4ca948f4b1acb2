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

/// SSH by dial-back: SSH is already end-to-end encrypted and authenticated (the client checks
/// the agent's host key from control's known_hosts, the agent checks the user's key), so its
/// bytes need not be wrapped again in the tunnel's TLS and HTTP/2. Control opens a
/// [`dial::PATH`] stream on the tunnel with a one-time token; the agent dials a plain TCP
/// connection to control's agent listener (the address in `to`, then its own agent URL's),
/// sends [`dial::preamble`], waits for [`dial::ACK`] and serves SSH on that connection; control matches the token and
/// splices the client's connection to it in the kernel. Anything else on the tunnel (terminals,
/// ports, apps) stays inside TLS. A token is random (256 bits), single-use and short-lived, and
/// only ever travels to the agent inside its mTLS tunnel.
pub mod dial {
    /// The stream kind: `/ssh/dial?token=HEX[&to=HOST:PORT]`.
    pub const PATH: &str = "/ssh/dial";
    /// What a dialed connection starts with, before the token and a newline. Its first byte is
    /// never a TLS record's (0x16), which is how control's agent listener tells them apart.
    pub const MAGIC: &[u8] = b"OUTPOST-DIAL/1 ";
    /// A token: 32 random bytes in lower-case hex.
    pub const TOKEN_LEN: usize = 64;
    /// The whole preamble's length.
    pub const PREAMBLE_LEN: usize = MAGIC.len() + TOKEN_LEN + 1;
    /// Control's answer to a preamble whose token it was waiting for; then SSH begins. Without
    /// it (the connection closed: a token this replica does not know) the agent tries its next
    /// address.
    pub const ACK: u8 = b'+';

    /// Is `token` the right shape (64 lower-case hex digits)?
    pub fn valid_token(token: &str) -> bool {
        token.len() == TOKEN_LEN
            && token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Is `to` a `HOST:PORT` (a name, an IPv4 or a bracketed IPv6 address): nothing that
    /// needs escaping in a query.
    pub fn valid_address(to: &str) -> bool {
        !to.is_empty()
            && to.len() <= 255
            && to.contains(':')
            && to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    }

    /// The stream path control opens on the tunnel (`to` must be [`valid_address`]).
    pub fn path(token: &str, to: Option<&str>) -> String {
        path_of(PATH, token, to)
    }

    fn path_of(kind: &str, token: &str, to: Option<&str>) -> String {
        match to {
            Some(to) => format!("{kind}?token={token}&to={to}"),
            None => format!("{kind}?token={token}"),
        }
    }

    /// The token and the address to dial of a [`PATH`] stream's query.
    pub fn parse_query(query: &str) -> Option<(String, Option<String>)> {
        parse(query, false)
    }

    /// `token` and `to` of a query, each at most once and well formed; other pairs are refused
    /// unless `others` (a terminal's).
    fn parse(query: &str, others: bool) -> Option<(String, Option<String>)> {
        let (mut token, mut to) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("token", v)) if token.is_none() && valid_token(v) => {
                    token = Some(v.to_string())
                }
                Some(("to", v)) if to.is_none() && valid_address(v) => to = Some(v.to_string()),
                Some(("token", _)) | Some(("to", _)) => return None,
                _ if others => {}
                _ => return None,
            }
        }
        Some((token?, to))
    }

    /// A web terminal by dial-back: `/pty/dial?token=HEX[&to=HOST:PORT]&id=..&cols=..` (the
    /// rest of the query is a [`super::stream::PTY`] stream's). After the preamble the agent
    /// starts TLS on the same connection, with its client certificate, and control checks that
    /// certificate names the agent it asked: a terminal's bytes are not encrypted by anything
    /// else, so unlike SSH's they never cross the network outside TLS. Inside it flow the
    /// terminal's frames exactly as on a `/pty` stream. No [`ACK`]: the handshake is the answer.
    pub const PTY_PATH: &str = "/pty/dial";

    /// The stream path for a terminal by dial-back (`to` must be [`valid_address`], `pty_query`
    /// a `/pty` stream's query, already encoded; `handoff` a [`valid_handoff_path`]).
    pub fn pty_path(
        token: &str,
        to: Option<&str>,
        handoff: Option<&str>,
        pty_query: &str,
    ) -> String {
        match handoff {
            Some(h) => format!("{}&handoff={h}&{pty_query}", path_of(PTY_PATH, token, to)),
            None => format!("{}&{pty_query}", path_of(PTY_PATH, token, to)),
        }
    }

    /// A terminal by hand-off, for an agent on control's own machine when the browser's
    /// connection to control is plain TCP: the [`PTY_PATH`] query also names `handoff=PATH`,
    /// control's Unix socket. The agent connects there and sends the same [`preamble`]; control
    /// answers [`ACK`] at once when it takes the token, then, once it has answered the browser,
    /// [`HANDOFF_OK`] and a u32 BE length (the [`HANDOFF_HEADER_LEN`] bytes), the
    /// browser's upgraded connection attached to them (`SCM_RIGHTS`), then that many bytes the
    /// browser sent that control had already read (at most [`MAX_HANDOFF_LEFTOVER`]). From
    /// then on the agent serves the WebSocket (the server's side, frames as on control's `/pty`
    /// endpoint) on that connection itself, and the Unix connection stays open while the
    /// session lives: either side closing it ends the session (control closes it, and shuts the
    /// browser's connection down, to cut a session). A token control does not wait for, or a
    /// connection from another Unix user than the workspace's, is closed without a byte (no
    /// [`ACK`]); the agent then dials back over TCP as without a hand-off.
    pub const HANDOFF_OK: u8 = b'+';
    pub const HANDOFF_HEADER_LEN: usize = 5;
    pub const MAX_HANDOFF_LEFTOVER: usize = 1 << 21;

    /// Is `p` an absolute path of `A-Z a-z 0-9 / . _ -` (nothing to escape in a query), without
    /// `..`, short enough for a Unix socket address (107 bytes)?
    pub fn valid_handoff_path(p: &str) -> bool {
        p.starts_with('/')
            && p.len() <= 107
            && !p.split('/').any(|c| c == "..")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    }

    /// The `handoff` path of a [`PTY_PATH`] query, when it names one well formed (once).
    pub fn handoff_of(query: &str) -> Option<&str> {
        let mut found = None;
        for pair in query.split('&') {
            if let Some(("handoff", v)) = pair.split_once('=') {
                if found.is_some() || !valid_handoff_path(v) {
                    return None;
                }
                found = Some(v);
            }
        }
        found
    }

    /// Control's answer on the Unix socket: [`HANDOFF_OK`] and the leftover's length.
    pub fn handoff_header(leftover: usize) -> [u8; HANDOFF_HEADER_LEN] {
        let n = (leftover as u32).to_be_bytes();
        [HANDOFF_OK, n[0], n[1], n[2], n[3]]
    }

    /// The leftover's length of a header; None when it is not one or says too much.
    pub fn parse_handoff_header(h: &[u8; HANDOFF_HEADER_LEN]) -> Option<usize> {
        let n = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        (h[0] == HANDOFF_OK && n <= MAX_HANDOFF_LEFTOVER).then_some(n)
    }

    /// The token and the address to dial of a [`PTY_PATH`] stream's query (its other pairs are
    /// the terminal's); None without a valid token or with a malformed `to`.
    pub fn parse_pty_query(query: &str) -> Option<(String, Option<String>)> {
        parse(query, true)
    }

    /// The first bytes the agent sends on a dialed connection.
    pub fn preamble(token: &str) -> Vec<u8> {
        let mut p = Vec::with_capacity(PREAMBLE_LEN);
        p.extend_from_slice(MAGIC);
        p.extend_from_slice(token.as_bytes());
        p.push(b'\n');
        p
    }

    /// The token of a whole preamble; None when it is not one.
    pub fn parse_preamble(p: &[u8]) -> Option<&str> {
        let rest = p.strip_prefix(MAGIC)?.strip_suffix(b"\n")?;
        let token = std::str::from_utf8(rest).ok()?;
        valid_token(token).then_some(token)
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

    #[test]
    fn dial_paths_and_preambles_round_trip() {
        use super::dial::*;
        let token = "0123456789abcdef".repeat(4);
        let p = path(&token, Some("10.0.0.1:7443"));
        let (_, query) = p.split_once('?').unwrap();
        assert_eq!(
            parse_query(query),
            Some((token.clone(), Some("10.0.0.1:7443".to_string())))
        );
        assert_eq!(
            parse_query(&format!("token={token}")),
            Some((token.clone(), None))
        );
        assert_eq!(parse_query("token=abc"), None, "short");
        assert_eq!(
            parse_query(&format!("token={}", token.to_uppercase())),
            None
        );
        assert_eq!(
            parse_query(&format!("token={token}&x=1")),
            None,
            "unknown key"
        );
        assert_eq!(parse_query(&format!("token={token}&to=a%20b:1")), None);
        assert!(valid_address("[::1]:7443") && valid_address("ctl.example:7443"));
        let pre = preamble(&token);
        assert_eq!(pre.len(), PREAMBLE_LEN);
        assert_eq!(parse_preamble(&pre), Some(token.as_str()));
        assert_ne!(pre[0], 0x16, "never the start of a TLS record");
        let mut bad = pre.clone();
        bad[PREAMBLE_LEN - 1] = b'x';
        assert_eq!(parse_preamble(&bad), None);
        assert_eq!(parse_preamble(b"GET / HTTP/1.1"), None);
    }

    #[test]
    fn terminal_dial_paths_carry_the_terminal_query() {
        use super::dial::*;
        let token = "fedcba9876543210".repeat(4);
        let p = pty_path(&token, Some("10.0.0.1:7443"), None, "id=a&cols=80&rows=24");
        let (path, query) = p.split_once('?').unwrap();
        assert_eq!(path, PTY_PATH);
        assert_eq!(
            parse_pty_query(query),
            Some((token.clone(), Some("10.0.0.1:7443".to_string())))
        );
        let p = pty_path(&token, None, None, "id=a&command=ls%20-l");
        let (_, query) = p.split_once('?').unwrap();
        assert_eq!(parse_pty_query(query), Some((token.clone(), None)));
        assert_eq!(parse_pty_query("id=a&cols=80"), None, "no token");
        assert_eq!(parse_pty_query("token=abc&id=a"), None, "short token");
        assert_eq!(
            parse_pty_query(&format!("token={token}&token={token}")),
            None,
            "a second token"
        );
        assert_eq!(
            parse_pty_query(&format!("token={token}&to=a%20b:1")),
            None,
            "a malformed address"
        );
    }

    #[test]
    fn hand_off_paths_and_headers() {
        use super::dial::*;
        let token = "0123456789abcdef".repeat(4);
        let sock = "/var/lib/outpost-workspaces/d-1/.handoff/api-7080.sock";
        let p = pty_path(&token, None, Some(sock), "id=a&cols=80&rows=24");
        let (_, query) = p.split_once('?').unwrap();
        assert_eq!(parse_pty_query(query), Some((token.clone(), None)));
        assert_eq!(handoff_of(query), Some(sock));
        assert_eq!(handoff_of("id=a"), None);
        for bad in [
            "relative/x.sock",
            "/a/../b.sock",
            "/a b.sock",
            "/a%2fb",
            &format!("/{}", "x".repeat(107)),
        ] {
            assert!(!valid_handoff_path(bad), "{bad}");
            assert_eq!(handoff_of(&format!("handoff={bad}")), None, "{bad}");
        }
        assert_eq!(
            handoff_of(&format!("handoff={sock}&handoff={sock}")),
            None,
            "twice"
        );
        assert_eq!(parse_handoff_header(&handoff_header(0)), Some(0));
        assert_eq!(parse_handoff_header(&handoff_header(1234)), Some(1234));
        assert_eq!(
            parse_handoff_header(&handoff_header(MAX_HANDOFF_LEFTOVER + 1)),
            None
        );
        let mut h = handoff_header(3);
        h[0] = b'-';
        assert_eq!(parse_handoff_header(&h), None);
    }
}
