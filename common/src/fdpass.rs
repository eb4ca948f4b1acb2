//! Passing a descriptor between processes of one machine over a Unix stream socket
//! (`SCM_RIGHTS`), through nix's safe wrappers: control hands a browser's upgraded terminal
//! connection to the workspace's agent (`outpost_api::relay::dial::HANDOFF_OK`), and the CLI
//! hands OpenSSH its relayed connection (`ProxyUseFdpass`).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Sends `data` with `fd` attached to its first byte, in one `sendmsg` on a blocking or
/// non-blocking socket (retried on EINTR; EAGAIN is the caller's). Returns the bytes sent: the
/// descriptor went with the first of them.
pub fn send_with_fd(
    sock: &impl AsRawFd,
    data: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<usize> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(data)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(std::io::Error::from),
        }
    }
}

/// [`send_with_fd`] on a tokio socket, then the rest of `data` (if the first call took only
/// part of it) by plain writes.
pub async fn send_all_with_fd(
    sock: &UnixStream,
    data: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    if data.is_empty() {
        return Err(std::io::Error::other(
            "a descriptor needs at least one byte with it",
        ));
    }
    let mut sent = sock
        .async_io(Interest::WRITABLE, || send_with_fd(sock, data, fd))
        .await?;
    while sent < data.len() {
        sock.writable().await?;
        match sock.try_write(&data[sent..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads into `buf` (at least one byte, or 0 at EOF) and the descriptors that came with those
/// bytes. Descriptors are received close-on-exec; any past the first are closed at once.
pub async fn recv_with_fd(
    sock: &UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<OwnedFd>)> {
    sock.async_io(Interest::READABLE, || recv_once(sock.as_raw_fd(), buf))
        .await
}

fn recv_once(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    // Room for as many descriptors as one message may carry (the kernel's SCM_MAX_FD, 253):
    // the message is never truncated, so every descriptor a peer sends is seen here, and all
    // past the first are closed rather than leaked.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(std::io::Error::from)?,
        }
    };
    let mut first = None;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel has just installed `fd` in this process's table for
                    // this message; nothing else knows it, so it is ours to own (and to close).
                    #[allow(unsafe_code)]
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if first.is_none() {
                        first = Some(owned);
                    }
                }
            }
        }
    }
    if truncated {
        // Not reached (the buffer holds the kernel's most); should it be, what was installed
        // is closed above or unseen, and the message is refused.
        return Err(std::io::Error::other("too many descriptors in one message"));
    }
    Ok((msg.bytes, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn a_descriptor_and_its_bytes_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_r, pipe_w) = std::io::pipe().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let sender = {
            let data = data.clone();
            tokio::spawn(async move {
                send_all_with_fd(&a, &data, std::os::fd::AsFd::as_fd(&pipe_w))
                    .await
                    .unwrap();
                drop(pipe_w);
                a
            })
        };
        let mut buf = vec![0u8; 16];
        let (n, fd) = recv_with_fd(&b, &mut buf).await.unwrap();
        assert!(n > 0);
        let fd = fd.expect("the descriptor came with the first bytes");
        let mut got = buf[..n].to_vec();
        let _a = sender.await.unwrap();
        let mut rest = vec![0u8; 64 * 1024];
        while got.len() < data.len() {
            let (n, extra) = recv_with_fd(&b, &mut rest).await.unwrap();
            assert!(n > 0 && extra.is_none());
            got.extend_from_slice(&rest[..n]);
        }
        assert!(got == data);
        // The received descriptor is the pipe's write end: bytes written there come out.
        let mut w = std::fs::File::from(fd);
        w.write_all(b"through").unwrap();
        drop(w);
        let mut s = String::new();
        pipe_r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through");
    }

    #[tokio::test]
    async fn plain_bytes_come_without_a_descriptor_and_eof_is_zero() {
        let (a, b) = UnixStream::pair().unwrap();
        a.try_write(b"x").unwrap();
        drop(a);
        let mut buf = [0u8; 4];
        let (n, fd) = recv_with_fd(&b, &mut buf).await.unwrap();
        assert_eq!((n, fd.is_none()), (1, true));
        let (n, fd) = recv_with_fd(&b, &mut buf).await.unwrap();
        assert_eq!((n, fd.is_none()), (0, true));
    }
}
