//! An SSH connection's TCP stream (the direct listener's, a relay's dial-back), tuned for the two
//! ways an SSH connection is used.
//!
//! Interactive traffic (a login, keystrokes, a command's output) wants every read acknowledged
//! at once: OpenSSH leaves Nagle on for non-interactive sessions and would otherwise wait for our
//! delayed ACK, about 40 ms, in the middle of a login. So each read that does not fill the read
//! buffer is followed by `TCP_QUICKACK` (which is not sticky).
//!
//! A transfer in full flow (an upload, `-L`) fills the read buffer on every read. Its sender is
//! not waiting on an ACK (the kernel acknowledges a read of more than a segment itself), so those
//! reads skip the quick ACK; and it is better served by fewer, larger wake-ups: once a read
//! fills the buffer, the socket's `SO_RCVLOWAT` is raised to the flow mark (a quarter of a
//! channel's window), so the kernel wakes the agent once that much has arrived instead of for
//! each of the client's writes (about 32 KiB each). The agent then decrypts and passes on a
//! batch at a time (its CPU per GiB of `-L` fell by about 30%), and the client, the busiest
//! process of a transfer, no longer wakes the agent from each of its `write`s.
//!
//! When the flow stops, less than the mark may be left queued, with the client waiting for an
//! answer: a read that would wait lowers the mark again after [`FLOW_PAUSE`], and the kernel then
//! reports what is there. The mark stays below half a channel's window, so a sender that has
//! used its window always has queued more than the mark (the agent gives the window back once
//! half of it has arrived) and never waits on the pause for that.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a reader in full flow waits for the flow mark before taking what there is.
const FLOW_PAUSE: Duration = Duration::from_millis(1);

pub struct SshTcp {
    tcp: TcpStream,
    /// The size of a read that means the transfer is in full flow.
    full: usize,
    /// Bytes queued before a reader in full flow is woken.
    mark: usize,
    /// `SO_RCVLOWAT` is `mark`.
    in_flow: bool,
    /// Acknowledge reads that do not fill the buffer at once (a client's own connection).
    quick_acks: bool,
    /// While in flow, a read that would wait waits at most this long.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SshTcp {
    pub fn new(tcp: TcpStream, full: usize, mark: usize, quick_acks: bool) -> SshTcp {
        SshTcp {
            tcp,
            full,
            mark,
            in_flow: false,
            quick_acks,
            pause: None,
        }
    }

    fn read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.pause = None;
            let fd = self.tcp.as_raw_fd();
            if buf.filled().len() - before >= self.full {
                if !self.in_flow {
                    crate::sys::set_rcvlowat(fd, self.mark);
                    self.in_flow = true;
                }
            } else if !self.in_flow && self.quick_acks {
                crate::sys::quickack(fd);
            }
        }
        r
    }
}

impl AsyncRead for SshTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = this.read(cx, buf);
        if r.is_ready() || !this.in_flow {
            return r;
        }
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(FLOW_PAUSE)));
        if pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The flow has paused: take what is queued, however little.
        this.pause = None;
        this.in_flow = false;
        crate::sys::set_rcvlowat(this.tcp.as_raw_fd(), 1);
        this.read(cx, buf)
    }
}

impl AsyncWrite for SshTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
