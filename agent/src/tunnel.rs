//! The relay tunnel: the agent dials control's agent API (mTLS), upgrades the connection, then
//! serves HTTP/2 on it, so control opens one stream per client (reversed HTTP/2). Streams:
//! `/ssh` (an SSH connection to the agent's server), `/tcp/PORT` (a connection to a port in
//! the workspace), `/pty?id=..` (a web terminal session, see `terminal.rs`), and the
//! dial-backs `/ssh/dial` and `/pty/dial` (the agent connects to control again, for one SSH
//! connection in plain TCP or one terminal client in TLS, or, where control names its hand-off
//! socket, to receive the browser's own connection: `handoff.rs`). Re-established with backoff.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_api::relay;
use outpost_common::pump::{body_to_writer, reader_to_frames};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::session::ControlSession;
use outpost_common::clock::{backoff, BACKOFF_BASE, BACKOFF_CAP};

pub struct SshCtx {
    pub config: Arc<russh::server::Config>,
    pub shared: Arc<crate::ssh::SshShared>,
    pub pty: Arc<crate::terminal::PtyHub>,
    pub port_owners: crate::procs::PortOwners,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Keeps one tunnel up for the life of the agent.
pub async fn tunnel_loop(session: ControlSession, agent_url: String, ssh: Arc<SshCtx>) {
    let mut attempt = 0u32;
    loop {
        let started = std::time::Instant::now();
        match connect_and_serve(&session, &agent_url, ssh.clone()).await {
            Ok(()) => tracing::info!("relay tunnel closed; reconnecting"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "relay tunnel failed"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
        }
        tokio::time::sleep(backoff(attempt, BACKOFF_BASE, BACKOFF_CAP)).await;
        attempt = attempt.saturating_add(1);
    }
}

async fn connect_and_serve(
    session: &ControlSession,
    agent_url: &str,
    ssh: Arc<SshCtx>,
) -> anyhow::Result<()> {
    let authority = agent_url
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(r))
        .context("bad agent URL")?
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await?;
    let _ = tcp.set_nodelay(true);
    let tls = start_tls(session, &authority, tcp, &[b"http/1.1"]).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = Request::get(relay::TUNNEL_PATH)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, relay::UPGRADE_TUNNEL)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        bail!("control refused the tunnel: {}", resp.status());
    }
    let upgraded = hyper::upgrade::on(resp).await?;
    tracing::info!("relay tunnel up");
    // Where an SSH dial-back goes when control names no address: the agent listener it dialed.
    let home: Arc<str> = Arc::from(authority.as_str());
    let session = session.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ssh = ssh.clone();
        let home = home.clone();
        let session = session.clone();
        async move { Ok::<_, Infallible>(handle(req, ssh, home, session).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(relay::STREAM_WINDOW)
        .initial_connection_window_size(relay::CONNECTION_WINDOW)
        .max_frame_size(relay::MAX_FRAME_SIZE)
        .serve_connection(upgraded, svc)
        .await?;
    Ok(())
}

/// TLS to control's agent listener at `authority` (`HOST:PORT`) over `tcp`, with the agent's
/// current client certificate, trusting only the pinned CAs.
async fn start_tls(
    session: &ControlSession,
    authority: &str,
    tcp: tokio::net::TcpStream,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let creds = session.credentials();
    let chain = format!("{}{}", creds.certificate_pem, creds.ca_pem);
    let mut cfg =
        outpost_common::tls::client_config(&creds.ca_pins, Some((&chain, &creds.key_pem)))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?)
}

/// Connects to control's agent listener at `to` for the terminal `token` names (see
/// [`relay::dial::PTY_PATH`]): the preamble in the clear, then TLS with the agent's certificate
/// (a terminal's bytes have no encryption of their own). Control closes the connection when
/// it does not wait for that token.
async fn dial_back_tls(
    session: &ControlSession,
    to: &str,
    token: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    tokio::time::timeout(DIAL_TIMEOUT, async {
        let mut tcp = tokio::net::TcpStream::connect(to).await?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(&relay::dial::preamble(token)).await?;
        start_tls(session, to, tcp, &[])
            .await
            .context("control closed the connection: not the replica waiting for it")
    })
    .await
    .context("timed out")?
}

/// How long one SSH dial-back attempt may take (connect, preamble, control's answer); control
/// falls back to a stream on the tunnel after a little more than two of them.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Connects to control's agent listener at `to` for the SSH stream `token` names (see
/// [`relay::dial`]): plain TCP, since SSH encrypts and authenticates its own bytes.
async fn dial_back(to: &str, token: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(DIAL_TIMEOUT, async {
        let mut tcp = tokio::net::TcpStream::connect(to).await?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(&relay::dial::preamble(token)).await?;
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack)
            .await
            .context("control closed the connection: not the replica waiting for it")?;
        if ack[0] != relay::dial::ACK {
            bail!("control answered {:#04x}", ack[0]);
        }
        Ok(tcp)
    })
    .await
    .context("timed out")?
}

/// Dials back to the replica that asked (`to`: it may not be the one the agent URL leads to),
/// then to the agent URL's `home`; the first connection made, or the 502 saying why each failed.
async fn dial_first<'a, T, F, Fut>(
    to: Option<&'a str>,
    home: &'a str,
    mut dial: F,
) -> Result<T, Response<Body>>
where
    F: FnMut(&'a str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut tried = Vec::new();
    for to in to.into_iter().chain([home]) {
        match dial(to).await {
            Ok(c) => return Ok(c),
            Err(e) => tried.push(format!("{to}: {e:#}")),
        }
    }
    Err(status(
        StatusCode::BAD_GATEWAY,
        &format!("the agent could not dial control ({})", tried.join("; ")),
    ))
}

fn status(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r =
        Response::new(http_body_util::Full::new(Bytes::from(msg.to_string())).boxed_unsync());
    *r.status_mut() = code;
    r
}

async fn handle(
    req: Request<Incoming>,
    ssh: Arc<SshCtx>,
    home: Arc<str>,
    session: ControlSession,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == relay::dial::PTY_PATH {
        let query = req.uri().query().unwrap_or("");
        let Some((token, to)) = relay::dial::parse_pty_query(query) else {
            return status(
                StatusCode::BAD_REQUEST,
                "expected ?token=HEX[&to=HOST:PORT]&id=SESSION...",
            );
        };
        let attach = match crate::terminal::Attach::from_query(query) {
            Ok(a) => a,
            Err(e) => return status(StatusCode::BAD_REQUEST, &format!("{e:#}")),
        };
        // All of it in a task of its own: control drops this stream once its token arrives,
        // which may end this handler before the connection is served. The handler answers
        // once the task has its connection (or has failed to get one).
        let handoff = relay::dial::handoff_of(query).map(str::to_string);
        let pty = ssh.pty.clone();
        let (done, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // Control on this machine may hand the browser's connection over (handoff.rs).
            if let Some(sock) = handoff {
                match crate::handoff::connect(&sock, &token).await {
                    Ok(control) => {
                        let _ = done.send(Response::new(Empty::new().boxed_unsync()));
                        return crate::handoff::run(pty, attach, control).await;
                    }
                    Err(e) => tracing::info!("terminal hand-off failed, dialing back: {e:#}"),
                }
            }
            match dial_first(to.as_deref(), &home, |to| {
                dial_back_tls(&session, to, &token)
            })
            .await
            {
                Ok(tls) => {
                    let _ = done.send(Response::new(Empty::new().boxed_unsync()));
                    pty.attach_io(attach, tls).await
                }
                Err(r) => {
                    let _ = done.send(r);
                }
            }
        });
        return answer.await.unwrap_or_else(|_| {
            status(StatusCode::INTERNAL_SERVER_ERROR, "the terminal task ended")
        });
    }
    if path == relay::dial::PATH {
        let Some((token, to)) = relay::dial::parse_query(req.uri().query().unwrap_or("")) else {
            return status(
                StatusCode::BAD_REQUEST,
                "expected ?token=HEX[&to=HOST:PORT]",
            );
        };
        return match dial_first(to.as_deref(), &home, |to| dial_back(to, &token)).await {
            Ok(tcp) => {
                // Control splices the client's bytes in with Nagle off: no quick ACKs needed.
                let tcp = crate::ssh::tcp_stream(tcp, false);
                crate::ssh::serve_stream(tcp, ssh.config.clone(), ssh.shared.clone(), None, None);
                Response::new(Empty::new().boxed_unsync())
            }
            Err(r) => r,
        };
    }
    if path == relay::stream::SSH {
        // The SSH server reads the request body and writes the response's frames directly.
        let (tx, rx) = futures_channel::mpsc::channel(16);
        let io = H2Io {
            body: req.into_body(),
            chunk: Bytes::new(),
            tx,
        };
        crate::ssh::serve_stream(io, ssh.config.clone(), ssh.shared.clone(), None, None);
        return Response::new(BodyExt::boxed_unsync(StreamBody::new(rx)));
    }
    if path == relay::stream::PTY {
        let attach = match crate::terminal::Attach::from_query(req.uri().query().unwrap_or("")) {
            Ok(a) => a,
            Err(e) => return status(StatusCode::BAD_REQUEST, &format!("{e:#}")),
        };
        // No byte pipe in between: keystrokes go from the HTTP/2 body to the PTY, output from
        // the PTY to the response's frames.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        tokio::spawn(ssh.pty.clone().attach(attach, req.into_body(), tx));
        return Response::new(BodyExt::boxed_unsync(StreamBody::new(tokio_stream_from(
            rx,
        ))));
    }
    if let Some(port) = relay::stream::tcp_port(&path) {
        // Only the workspace's own listeners, checked now: never a port of the host or of
        // another workspace that happens to share the network.
        let owners = ssh.port_owners;
        let ours =
            tokio::task::spawn_blocking(move || crate::procs::is_workspace_port(owners, port))
                .await
                .unwrap_or(false);
        if !ours {
            return status(
                StatusCode::FORBIDDEN,
                &format!("port {port} is not listened on by a process of this workspace"),
            );
        }
        return match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                // A relayed port (`outpost port-forward`, an app) is a session: it keeps the
                // workspace from its autostop while it is open.
                let live = ssh
                    .shared
                    .agent
                    .live(crate::state::SessionKind::PortForward);
                bridge(req.into_body(), tcp, live)
            }
            Err(e) => status(
                StatusCode::BAD_GATEWAY,
                &format!("nothing accepts connections on port {port} in the workspace: {e}"),
            ),
        };
    }
    status(StatusCode::NOT_FOUND, "unknown stream kind")
}

type FrameResult = Result<Frame<Bytes>, Infallible>;

/// One relayed stream as a byte stream: reads come from the request body's data frames, writes
/// go out as the response's frames. No pipe and no copying task in between.
struct H2Io {
    body: Incoming,
    chunk: Bytes,
    tx: futures_channel::mpsc::Sender<FrameResult>,
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use hyper::body::Body as _;
        use std::task::Poll;
        while self.chunk.is_empty() {
            match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.chunk = data;
                    }
                }
                // End of the stream, or a broken one: EOF.
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.chunk.len().min(buf.remaining());
        let part = self.chunk.split_to(n);
        buf.put_slice(&part);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let gone = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        match self.tx.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(gone())),
            Poll::Pending => return Poll::Pending,
        }
        self.tx
            .start_send(Ok(Frame::data(Bytes::copy_from_slice(buf))))
            .map_err(|_| gone())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.tx.close_channel();
        std::task::Poll::Ready(Ok(()))
    }
}

/// Request body -> `io`; `io` -> response body.
fn bridge<S>(body: Incoming, io: S, live: crate::state::Live) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let down = tokio::spawn(body_to_writer(body, wr));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let up = tokio::spawn(reader_to_frames(rd, tx));
    // The session lasts while either direction still flows.
    tokio::spawn(async move {
        let _ = tokio::join!(down, up);
        drop(live);
    });
    let stream = tokio_stream_from(rx);
    Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)))
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
        .boxed()
}
