//! Reconnecting PTYs for the web terminal. A session (the browser's id) owns a shell in a PTY
//! and a terminal-state model (vt100) fed with everything the program prints. A client that
//! attaches (first time, after a reload, a second tab) gets the current screen repainted from the
//! model, not a replay of raw bytes, so full-screen programs (top, vim, less) come back intact;
//! then the live output. Sessions outlive their clients; one with no client ends after the idle
//! timeout.
//!
//! Wire format on the relay stream: `outpost_api::relay::pty`.

use outpost_common::LockExt;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use http_body_util::BodyExt;
use hyper::body::Frame;

use crate::ssh::SshShared;
use crate::state::{Agent, Live, SessionKind};

use outpost_api::relay::pty::{Frames, KIND_INPUT, KIND_RESIZE};

const SCROLLBACK: usize = 1000;

pub struct PtyHub {
    sessions: Mutex<HashMap<String, Arc<PtySession>>>,
    shared: Arc<SshShared>,
    idle_timeout: Duration,
    next_client: AtomicU64,
}

struct PtySession {
    /// The screen model, and the output channel: output is fed to the model and sent under the
    /// same lock, so an attaching client's repaint and its live stream never overlap or gap.
    term: Mutex<Term>,
    /// The PTY master for input, non-blocking and written directly (no threads between a
    /// keystroke and it). It is registered with tokio only while a write waits for room: one
    /// registered for writing would wake the agent each time the program reads its input.
    input: std::fs::File,
    /// One client's input is written whole before another's.
    writing: tokio::sync::Mutex<()>,
    master: Mutex<Box<dyn portable_pty::MasterPty + Send>>,
    attached: AtomicUsize,
    detached_at: Mutex<Instant>,
    pid: Option<i32>,
    exited: tokio::sync::watch::Receiver<bool>,
    /// Counts the session (the heartbeat's `pty`) while it lives, and its bytes.
    _live: Live,
    agent: Arc<Agent>,
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Some(p) = self.pid {
            outpost_common::process::signal_group(p, nix::sys::signal::Signal::SIGHUP);
        }
    }
}

/// What a client asks for when it attaches.
#[derive(Debug, Clone)]
pub struct Attach {
    pub id: String,
    pub cols: u16,
    pub rows: u16,
    /// A command to run instead of the login shell (only used when the session is new).
    pub command: Option<String>,
}

impl Attach {
    /// From the relay stream's query: `id=..&cols=..&rows=..&command=..`.
    pub fn from_query(q: &str) -> anyhow::Result<Attach> {
        let mut a = Attach {
            id: String::new(),
            cols: 80,
            rows: 24,
            command: None,
        };
        for (k, v) in form_urlencoded_pairs(q) {
            match k.as_str() {
                "id" => a.id = v,
                "cols" => a.cols = v.parse().context("cols")?,
                "rows" => a.rows = v.parse().context("rows")?,
                "command" if !v.is_empty() => a.command = Some(v),
                _ => {}
            }
        }
        if a.id.is_empty()
            || a.id.len() > 64
            || !a
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            anyhow::bail!("a session id (1-64 of A-Z a-z 0-9 - _) is required");
        }
        a.cols = a.cols.clamp(1, 1000);
        a.rows = a.rows.clamp(1, 1000);
        Ok(a)
    }
}

/// A resize frame's payload, `cols u16 BE, rows u16 BE`, each clamped to 1-1000; `None` for a
/// payload of any other length (the frame is ignored).
pub fn resize_payload(p: &[u8]) -> Option<(u16, u16)> {
    let &[c0, c1, r0, r1] = p else {
        return None;
    };
    let cols = u16::from_be_bytes([c0, c1]);
    let rows = u16::from_be_bytes([r0, r1]);
    Some((cols.clamp(1, 1000), rows.clamp(1, 1000)))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_urlencoded_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

impl PtyHub {
    pub fn new(shared: Arc<SshShared>, idle_timeout: Duration) -> Arc<PtyHub> {
        let hub = Arc::new(PtyHub {
            sessions: Mutex::new(HashMap::new()),
            shared,
            idle_timeout,
            next_client: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { return };
                hub.reap();
            }
        });
        hub
    }

    /// Ends sessions whose program exited, and sessions nobody attached to for the timeout.
    fn reap(&self) {
        let mut map = self.sessions.locked();
        map.retain(|id, s| {
            let idle = s.attached.load(Ordering::SeqCst) == 0
                && s.detached_at.locked().elapsed() >= self.idle_timeout;
            let keep = !*s.exited.borrow() && !idle;
            if !keep {
                tracing::info!(session = %id, idle, "terminal session ended");
            }
            keep
        });
    }

    fn get_or_start(&self, a: &Attach) -> anyhow::Result<Arc<PtySession>> {
        let mut map = self.sessions.locked();
        if let Some(s) = map.get(&a.id) {
            if !*s.exited.borrow() {
                return Ok(s.clone());
            }
            map.remove(&a.id);
        }
        let s = self.start(a)?;
        map.insert(a.id.clone(), s.clone());
        Ok(s)
    }

    fn start(&self, a: &Attach) -> anyhow::Result<Arc<PtySession>> {
        let args: Vec<String> = match &a.command {
            Some(c) => vec!["-c".into(), c.clone()],
            None => vec!["-l".into()],
        };
        let mut vars = crate::ssh::base_env(&self.shared);
        vars.push(("TERM".into(), "xterm-256color".into()));
        vars.push(("OUTPOST_SESSION_KIND".into(), "web-terminal".into()));
        let size = portable_pty::PtySize {
            rows: a.rows,
            cols: a.cols,
            pixel_width: 0,
            pixel_height: 0,
        };
        let (master, mut child) = crate::ssh::spawn_in_pty(&self.shared, size, &args, &vars)?;
        let pid = child.process_id().map(|p| p as i32);
        let raw = master
            .as_raw_fd()
            .context("the PTY has no file descriptor")?;
        // The reader's copy is registered for reading only (see `input`).
        let fd = crate::sys::async_dup(raw, tokio::io::Interest::READABLE)?;
        let input = crate::sys::dup_nonblocking(raw)?;
        let (exit_tx, exit_rx) = tokio::sync::watch::channel(false);
        let s = Arc::new(PtySession {
            term: Mutex::new(Term {
                parser: vt100::Parser::new(a.rows, a.cols, SCROLLBACK),
                clients: Vec::new(),
            }),
            input,
            writing: tokio::sync::Mutex::new(()),
            master: Mutex::new(master),
            attached: AtomicUsize::new(0),
            detached_at: Mutex::new(Instant::now()),
            pid,
            exited: exit_rx,
            _live: self.shared.agent.live(SessionKind::Pty),
            agent: self.shared.agent.clone(),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let Ok(mut ready) = fd.readable().await else {
                    break;
                };
                let n = match ready.try_io(|f| f.get_ref().read(&mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => break, // EIO: the program and its children are gone
                    Ok(Ok(n)) => n,
                    Err(_) => continue,
                };
                if n < buf.len() {
                    // A short read emptied the PTY's queue: wait for the next wake-up rather
                    // than read again only to be told EAGAIN (a system call per keystroke).
                    // Output that lands after the read wakes the fd again (the driver's tick
                    // keeps this clear from hiding it).
                    ready.clear_ready();
                }
                let Some(s) = weak.upgrade() else { break };
                s.agent.add_bytes(0, n as u64);
                {
                    let mut t = s.term.locked();
                    t.parser.process(&buf[..n]);
                    t.broadcast(Bytes::copy_from_slice(&buf[..n]));
                };
            }
            // The streams end once their last frames are sent.
            if let Some(s) = weak.upgrade() {
                s.term.locked().clients.clear();
            }
            let _ = exit_tx.send(true);
        });
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(s)
    }

    /// Serves one client on a relay stream (input frames in `body`, output through `out`)
    /// until it goes away or the program exits.
    pub async fn attach<B>(self: Arc<Self>, a: Attach, body: B, out: FrameTx)
    where
        B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    {
        let input = futures_util::stream::unfold(body, |mut body| async move {
            loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            return Some((data, body));
                        }
                    }
                    _ => return None,
                }
            }
        });
        self.serve(a, input, out).await
    }

    /// Serves one client on a connection of its own (a dial-back: input frames read from `io`,
    /// output written to it, by this one task) until it goes away or the program exits; the
    /// output still queued then is written (for at most [`DRAIN_WAIT`]).
    pub async fn attach_io<S>(self: Arc<Self>, a: Attach, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (rd, mut wr) = tokio::io::split(io);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<FrameResult>(64);
        let input = futures_util::stream::unfold(
            (rd, vec![0u8; 16 * 1024]),
            |(mut rd, mut buf)| async move {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some((Bytes::copy_from_slice(&buf[..n]), (rd, buf))),
                }
            },
        );
        let writer = async move {
            while let Some(Ok(f)) = rx.recv().await {
                let Ok(data) = f.into_data() else { continue };
                if wr.write_all(&data).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::pin!(writer);
        tokio::select! {
            _ = self.serve(a, input, tx) => {}
            _ = &mut writer => return,
        }
        let _ = tokio::time::timeout(DRAIN_WAIT, writer).await;
    }

    /// One client: input frames from `input`, output through `out`.
    pub(crate) async fn serve<I>(self: Arc<Self>, a: Attach, input: I, out: FrameTx)
    where
        I: futures_util::Stream<Item = Bytes>,
    {
        use futures_util::StreamExt;
        let send = |b: Bytes| {
            let out = out.clone();
            async move { out.send(Ok(hyper::body::Frame::data(b))).await.is_ok() }
        };
        let s = match self.get_or_start(&a) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("\r\noutpost: cannot start the terminal: {e:#}\r\n");
                send(Bytes::from(msg)).await;
                return;
            }
        };
        s.resize(a.cols, a.rows);
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(tokio::sync::Notify::new());
        {
            let mut t = s.term.locked();
            let first = repaint(t.parser.screen());
            if out.try_send(Ok(Frame::data(Bytes::from(first)))).is_err() {
                return;
            }
            t.clients.push(Client {
                id,
                tx: out.clone(),
                lagged: false,
                wake: wake.clone(),
            });
        }
        s.attached.fetch_add(1, Ordering::SeqCst);
        let _detach = Detach(s.clone(), id);
        let exited = s.exited.clone();
        // A client too slow for the output gets the screen repainted from the model once it has
        // room again, then the live output.
        let repainter = async {
            loop {
                wake.notified().await;
                let Ok(permit) = out.reserve().await else {
                    return;
                };
                let mut t = s.term.locked();
                permit.send(Ok(Frame::data(Bytes::from(repaint(t.parser.screen())))));
                if let Some(c) = t.clients.iter_mut().find(|c| c.id == id) {
                    c.lagged = false;
                }
            }
        };
        let reader = async {
            let mut frames = Frames::default();
            let mut input = std::pin::pin!(input);
            while let Some(data) = input.next().await {
                frames.push(&data);
                loop {
                    match frames.next_frame() {
                        Ok(Some((KIND_INPUT, payload))) => {
                            s.agent.add_bytes(payload.len() as u64, 0);
                            if s.write_input(&payload).await.is_err() {
                                return;
                            }
                        }
                        Ok(Some((KIND_RESIZE, p))) => {
                            if let Some((cols, rows)) = resize_payload(&p) {
                                s.resize(cols, rows);
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
        };
        tokio::select! {
            _ = repainter => {}
            _ = reader => {}
            _ = wait_exit(exited) => {}
        }
    }
}

async fn wait_exit(mut rx: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub(crate) type FrameResult = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
pub type FrameTx = tokio::sync::mpsc::Sender<FrameResult>;

/// How long a client on a connection of its own may take to read the output queued when its
/// session ends.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The screen model and the attached clients, under one lock: output is fed to the model and
/// sent to the clients together, so a client's repaint and its live stream never overlap or gap.
struct Term {
    parser: vt100::Parser,
    clients: Vec<Client>,
}

struct Client {
    id: u64,
    tx: FrameTx,
    /// Its channel was full: output skips it until it is repainted.
    lagged: bool,
    wake: Arc<tokio::sync::Notify>,
}

impl Term {
    /// Output to every attached client, straight from the PTY's reader (no task in between).
    fn broadcast(&mut self, data: Bytes) {
        self.clients.retain_mut(|c| {
            if c.lagged {
                return true;
            }
            match c.tx.try_send(Ok(Frame::data(data.clone()))) {
                Ok(()) => true,
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    c.lagged = true;
                    c.wake.notify_one();
                    true
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

struct Detach(Arc<PtySession>, u64);

impl Drop for Detach {
    fn drop(&mut self) {
        {
            let mut t = self.0.term.locked();
            t.clients.retain(|c| c.id != self.1);
        }
        {
            let mut t = self.0.detached_at.locked();
            *t = Instant::now();
        }
        self.0.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PtySession {
    /// Writes all of `data` to the program, waiting while the PTY's input queue is full.
    async fn write_input(&self, data: &[u8]) -> std::io::Result<()> {
        let _one_at_a_time = self.writing.lock().await;
        let mut off = 0;
        while off < data.len() {
            match (&self.input).write(&data[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The input queue is full (a paste the program has not read yet): wait for
                    // room on a copy registered for that wait alone. Registering reports room
                    // that came between the write and now, so no wake-up is lost.
                    let raw = std::os::fd::AsRawFd::as_raw_fd(&self.input);
                    let waiter = crate::sys::async_dup(raw, tokio::io::Interest::WRITABLE)?;
                    waiter.writable().await?.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn resize(&self, cols: u16, rows: u16) {
        {
            let mut t = self.term.locked();
            if t.parser.screen().size() != (rows, cols) {
                t.parser.screen_mut().set_size(rows, cols);
                {
                    let m = self.master.locked();
                    let _ = m.resize(portable_pty::PtySize {
                        rows,
                        cols,
                        pixel_width: 0,
                        pixel_height: 0,
                    });
                }
            }
        }
    }
}

/// Reset, then the alternate screen if a full-screen program holds it, then the screen.
pub fn repaint(screen: &vt100::Screen) -> Vec<u8> {
    let mut v = b"\x1bc".to_vec();
    if screen.alternate_screen() {
        v.extend_from_slice(b"\x1b[?1049h");
    }
    v.extend_from_slice(&screen.state_formatted());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repaint_reproduces_a_full_screen_program() {
        let mut p = vt100::Parser::new(5, 20, 0);
        p.process(b"before\r\n\x1b[?1049h\x1b[2J\x1b[H\x1b[1mtop\x1b[0m - 10:00\r\n  PID USER");
        let again = repaint(p.screen());
        let mut q = vt100::Parser::new(5, 20, 0);
        q.process(b"garbage that a reload would have shown");
        q.process(&again);
        assert!(q.screen().alternate_screen());
        assert_eq!(q.screen().contents(), p.screen().contents());
        assert_eq!(q.screen().cursor_position(), p.screen().cursor_position());
        assert!(q.screen().cell(0, 0).is_some_and(|c| c.bold()));
    }

    #[test]
    fn attach_query() {
        let a = Attach::from_query("id=ab-1&cols=100&rows=30&command=top%20-d+1").unwrap();
        assert_eq!((a.id.as_str(), a.cols, a.rows), ("ab-1", 100, 30));
        assert_eq!(a.command.as_deref(), Some("top -d 1"));
        assert!(Attach::from_query("cols=1").is_err());
        assert!(Attach::from_query("id=../x").is_err());
        assert!(Attach::from_query("id=a&cols=x").is_err());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
