//! Byte pumps between HTTP/2 bodies and sockets: how the relay moves a stream's bytes on both
//! sides (control bridges a client connection to a tunnel stream; the agent bridges a tunnel
//! stream to its SSH server, a port or a terminal).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes an HTTP body's data frames to `wr`, then shuts it down (half-close).
pub async fn body_to_writer<B, W>(mut body: B, mut wr: W)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    W: AsyncWrite + Unpin,
{
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if wr.write_all(&data).await.is_err() {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let _ = wr.shutdown().await;
}

/// Reads `rd` in chunks that become the data's own memory (no copy out of a scratch buffer).
pub struct ChunkReader<R> {
    rd: R,
    buf: bytes::BytesMut,
    chunk: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> ChunkReader<R> {
    pub fn new(rd: R, chunk: usize) -> Self {
        ChunkReader {
            rd,
            buf: bytes::BytesMut::new(),
            chunk,
        }
    }

    /// The next chunk, or None at EOF or on an error.
    pub async fn next(&mut self) -> Option<bytes::Bytes> {
        if self.buf.capacity() < self.chunk / 4 {
            self.buf.reserve(self.chunk);
        }
        match self.rd.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(self.buf.split().freeze()),
        }
    }
}

/// Reads `rd` into data frames for a streaming HTTP body, until EOF or the body is dropped.
pub async fn reader_to_frames<R>(
    rd: R,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) where
    R: AsyncRead + Unpin,
{
    let mut rd = ChunkReader::new(rd, 256 * 1024);
    while let Some(chunk) = rd.next().await {
        if tx.send(Ok(Frame::data(chunk))).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunk_reader_yields_every_byte_then_none() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let send = data.clone();
        tokio::spawn(async move {
            a.write_all(&send).await.unwrap();
        });
        let mut rd = ChunkReader::new(b, 64 * 1024);
        let mut got = Vec::new();
        while let Some(c) = rd.next().await {
            assert!(!c.is_empty());
            got.extend_from_slice(&c);
        }
        assert_eq!(got, data);
    }
}
