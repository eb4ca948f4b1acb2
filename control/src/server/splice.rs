//! Moves bytes between two TCP connections inside the kernel: `splice(2)` from one socket into a
//! pipe and from the pipe into the other, so relayed SSH never passes through control's user
//! space (no read, no write, no copy). Each direction ends with a half-close, as the relay's
//! other pumps do.

use std::os::fd::AsRawFd;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice call moves (the pipe is grown to this where the kernel allows).
const CHUNK: usize = 1 << 20;

/// Pumps `a` <-> `b` until both directions are done; `a_to_b` and `b_to_a` count the bytes.
pub async fn both_ways(a: &TcpStream, b: &TcpStream, a_to_b: Counter, b_to_a: Counter) {
    let _ = tokio::join!(one_way(a, b, a_to_b), one_way(b, a, b_to_a));
}

async fn one_way(from: &TcpStream, to: &TcpStream, counted: Counter) -> std::io::Result<()> {
    let r = pump(from, to, counted).await;
    // EOF or an error: the far side learns the stream is over.
    let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
    r
}

async fn pump(from: &TcpStream, to: &TcpStream, counted: Counter) -> std::io::Result<()> {
    let (pipe_rd, pipe_wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // A bigger pipe means fewer calls per MiB; the default (64 KiB) still works.
    let _ = nix::fcntl::fcntl(&pipe_wr, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here: fill it from the socket.
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, &pipe_wr, None, CHUNK, flags).map_err(std::io::Error::from)
            })
            .await?;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            let m = to
                .async_io(Interest::WRITABLE, || {
                    splice(&pipe_rd, None, to, None, left, flags).map_err(std::io::Error::from)
                })
                .await?;
            if m == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            left -= m;
        }
        counted.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn every_byte_both_ways_then_half_closes() {
        // client <-> (c_srv | splice | a_cli) <-> agent
        let (mut client, c_srv) = pair().await;
        let (a_cli, mut agent) = pair().await;
        let (up, down) = (Counter::default(), Counter::default());
        let relay = tokio::spawn({
            let (up, down) = (up.clone(), down.clone());
            async move { both_ways(&c_srv, &a_cli, up, down).await }
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let send = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        agent.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes arrive in order, unchanged");
        agent.write_all(b"bye").await.unwrap();
        agent.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"bye");
        relay.await.unwrap();
        assert_eq!(up.get(), data.len() as u64);
        assert_eq!(down.get(), 3);
    }
}
