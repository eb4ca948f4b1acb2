//! The agent's side of a web terminal hand-off (the protocol: `outpost_api::relay::dial::
//! HANDOFF_OK`): when control, on this machine, names its hand-off socket in a terminal's
//! dial-back request, the agent connects there with the one-time token and receives the
//! browser's upgraded connection itself. It then serves the WebSocket on it (the server's side,
//! frames as on control's `/pty` endpoint): keystrokes reach the PTY with no hop through
//! control. The Unix connection stays open while the session lives; control closing it (a cut,
//! or control's exit) ends the session, and the agent closing it tells control the session is
//! over. Any failure before the connection arrives leaves the usual TLS dial-back to try.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use outpost_api::relay::{dial, pty as relay_pty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::terminal::{Attach, FrameResult, PtyHub, DRAIN_WAIT};

/// How long connecting and sending the preamble may take (control's socket is on this machine:
/// anything slower is something wrong, and the TLS dial-back is left to try).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long control may take to answer with the connection: it first answers the browser's
/// upgrade request, which a busy machine may take a while to schedule.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a hand-off brings: the browser's connection, the bytes of it control had read
/// already, and the Unix connection that stands for the session.
pub struct Received {
    pub browser: TcpStream,
    pub leftover: Vec<u8>,
    pub control: UnixStream,
}

/// Connects to control's hand-off socket at `path`, sends the preamble with `token` and reads
/// control's [`dial::ACK`]: control took the token (an error when it did not: another replica's
/// socket, say, and the TLS dial-back is left to try).
pub async fn connect(path: &str, token: &str) -> anyhow::Result<UnixStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut control = UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to {path}"))?;
        // Control runs as root (a Unix user per workspace) or as this agent's own user: the
        // token goes to nobody else listening there.
        let peer = control.peer_cred()?.uid();
        if peer != 0 && peer != nix::unistd::Uid::effective().as_raw() {
            bail!("{path} is served by uid {peer}, not control");
        }
        control.write_all(&dial::preamble(token)).await?;
        let mut ack = [0u8; 1];
        control
            .read_exact(&mut ack)
            .await
            .context("control closed the hand-off: not the replica waiting for it")?;
        if ack[0] != dial::ACK {
            bail!("control answered {:#04x}", ack[0]);
        }
        anyhow::Ok(control)
    })
    .await
    .context("timed out connecting")?
}

/// Receives the browser's connection on `control` (after [`connect`]).
pub async fn receive(mut control: UnixStream) -> anyhow::Result<Received> {
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut header = [0u8; dial::HANDOFF_HEADER_LEN];
        let mut got = 0;
        let mut fd = None;
        while got < header.len() {
            let (n, f) = outpost_common::fdpass::recv_with_fd(&control, &mut header[got..]).await?;
            if n == 0 {
                bail!("control closed the hand-off: not the replica waiting for it");
            }
            if f.is_some() {
                if fd.is_some() {
                    bail!("control sent two connections");
                }
                fd = f;
            }
            got += n;
        }
        let len = dial::parse_handoff_header(&header).context("not a hand-off answer")?;
        let fd = fd.context("no connection came with the hand-off")?;
        let mut leftover = vec![0u8; len];
        control.read_exact(&mut leftover).await?;
        let browser = std::net::TcpStream::from(fd);
        // A TCP socket (anything else fails here), in this process's event loop from now.
        browser
            .peer_addr()
            .context("the hand-off is not a connection")?;
        browser.set_nonblocking(true)?;
        let browser = TcpStream::from_std(browser)?;
        let _ = browser.set_nodelay(true);
        Ok((browser, leftover))
    })
    .await
    .context("timed out waiting for control's answer")?
    .map(|(browser, leftover)| Received {
        browser,
        leftover,
        control,
    })
}

/// Receives the connection on `control` and serves session `a` of `hub` on it.
pub async fn run(hub: Arc<PtyHub>, a: Attach, control: UnixStream) {
    match receive(control).await {
        Ok(got) => {
            tracing::debug!(session = %a.id, "terminal handed off");
            attach(hub, a, got).await
        }
        Err(e) => tracing::info!("terminal hand-off failed: {e:#}"),
    }
}

/// Serves the terminal session `a` of `hub` to the browser on a handed-off connection, until
/// the browser goes, the program exits or control closes the Unix connection; the output still
/// queued then is written (for at most [`DRAIN_WAIT`]), and a close frame.
pub async fn attach(hub: Arc<PtyHub>, a: Attach, got: Received) {
    let Received {
        browser,
        leftover,
        mut control,
    } = got;
    // As control's own endpoint: 1 MiB messages at most, and 8 KiB reads (tungstenite zero-fills
    // its read buffer before each read, a keystroke's included).
    let config = WebSocketConfig::default()
        .max_message_size(Some(relay_pty::MAX_FRAME))
        .max_frame_size(Some(relay_pty::MAX_FRAME))
        .read_buffer_size(8 * 1024);
    let ws =
        WebSocketStream::from_partially_read(browser, leftover, Role::Server, Some(config)).await;
    let (mut sink, stream) = ws.split();
    // Browser -> PTY: binary `[kind, payload...]` or text (input), as the relay's frames.
    let input = futures_util::stream::unfold(stream, |mut stream| async move {
        loop {
            let frame = match stream.next().await {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => relay_pty::encode(b[0], &b[1..]),
                Some(Ok(Message::Text(t))) => {
                    relay_pty::encode(relay_pty::KIND_INPUT, t.as_bytes())
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            };
            return Some((Bytes::from(frame), stream));
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FrameResult>(64);
    let writer = async move {
        while let Some(Ok(f)) = rx.recv().await {
            let Ok(data) = f.into_data() else { continue };
            if sink.send(Message::Binary(data)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    };
    let control_gone = async {
        let mut b = [0u8; 64];
        while matches!(control.read(&mut b).await, Ok(n) if n > 0) {}
    };
    tokio::pin!(writer);
    tokio::select! {
        _ = hub.serve(a, input, tx) => {
            tracing::debug!("handed-off terminal: the client or the program ended");
        }
        _ = &mut writer => {
            tracing::debug!("handed-off terminal: the browser's connection failed");
            return;
        }
        _ = control_gone => {
            tracing::info!("handed-off terminal: control closed it");
            return;
        }
    }
    let _ = tokio::time::timeout(DRAIN_WAIT, writer).await;
}
