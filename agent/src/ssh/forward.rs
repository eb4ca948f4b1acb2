//! Forwarded channels: bytes between an SSH channel and a local stream (ports, Unix sockets,
//! the auth agent), and the `ssh -A` socket inside the workspace.

use super::*;

/// Writes every chunk of `batch` (vectored, as few calls as the socket allows), emptying it.
pub(super) async fn write_all_vectored<W>(
    wr: &mut W,
    batch: &mut Vec<bytes::Bytes>,
) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use bytes::Buf;
    let mut first = 0;
    while first < batch.len() {
        let slices: Vec<std::io::IoSlice<'_>> = batch[first..]
            .iter()
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < batch.len() {
            let len = batch[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                batch[first].advance(n);
                n = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

/// Copies both ways between an SSH channel and a local stream (forwarded ports and sockets, the
/// auth agent), counting bytes, with half-close passed on both ways. Channel data is written to
/// the stream as it arrives and stream reads go out as channel data, with no scratch buffer in
/// between. A closed channel ends both ways.
pub(super) async fn pipe<S>(channel: Channel<Msg>, stream: S, agent: Arc<Agent>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rx, tx) = channel.split();
    let (rd, mut wr) = tokio::io::split(stream);
    // Channel -> stream: (bytes, whether the channel closed rather than sent EOF).
    let down = async {
        use futures_util::FutureExt;
        let mut n = 0u64;
        // Packets that are already here go out in one write (as sshd's channel buffer does).
        let mut batch: Vec<bytes::Bytes> = Vec::new();
        let mut next = None;
        let closed = loop {
            let msg = match next.take() {
                Some(m) => m,
                None => rx.wait().await,
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    batch.push(data);
                    while batch.len() < 64 {
                        match rx.wait().now_or_never() {
                            Some(Some(ChannelMsg::Data { data })) => batch.push(data),
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    n += batch.iter().map(|b| b.len() as u64).sum::<u64>();
                    if write_all_vectored(&mut wr, &mut batch).await.is_err() {
                        break false;
                    }
                }
                Some(ChannelMsg::Eof) => break false,
                Some(ChannelMsg::Close) | None => break true,
                Some(_) => {}
            }
        };
        let _ = wr.shutdown().await;
        (n, closed)
    };
    // Stream -> channel.
    let up = async {
        let mut n = 0u64;
        let mut rd = outpost_common::pump::ChunkReader::new(rd, 256 * 1024);
        while let Some(chunk) = rd.next().await {
            n += chunk.len() as u64;
            if tx.data_bytes(chunk).await.is_err() {
                break;
            }
        }
        let _ = tx.eof().await;
        n
    };
    tokio::pin!(down, up);
    let (mut ab, mut ba) = (None, None);
    while ab.is_none() || ba.is_none() {
        tokio::select! {
            (n, closed) = &mut down, if ab.is_none() => {
                ab = Some(n);
                if closed {
                    break;
                }
            }
            n = &mut up, if ba.is_none() => ba = Some(n),
        }
    }
    agent.add_bytes(ab.unwrap_or(0), ba.unwrap_or(0));
    let _ = tx.close().await;
    crate::sys::trim_heap();
}

/// A Unix socket in the workspace for `ssh -A`: each connection to it becomes an
/// `auth-agent@openssh.com` channel to the client. Removed when the session ends.
pub(super) struct AgentSocket {
    pub(super) path: PathBuf,
    task: tokio::task::AbortHandle,
}

impl AgentSocket {
    pub(super) fn start(handle: Handle, agent: Arc<Agent>) -> anyhow::Result<AgentSocket> {
        let dir = std::env::temp_dir().join(format!("outpost-ssh-{}", uuid_like()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let path = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (handle, agent) = (handle.clone(), agent.clone());
                tokio::spawn(async move {
                    if let Ok(ch) = handle.channel_open_agent().await {
                        pipe(ch, sock, agent).await;
                    }
                });
            }
        });
        Ok(AgentSocket {
            path,
            task: task.abort_handle(),
        })
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(super) fn uuid_like() -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn vectored_writes_survive_short_writes() {
        // A 7-byte pipe: every write is short, so chunks are split and advanced.
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut batch: Vec<bytes::Bytes> = ["hello ", "", "vectored", " world", "!"]
            .iter()
            .map(|s| bytes::Bytes::from_static(s.as_bytes()))
            .collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        write_all_vectored(&mut a, &mut batch).await.unwrap();
        assert!(batch.is_empty());
        drop(a);
        assert_eq!(reader.await.unwrap().unwrap(), b"hello vectored world!");
    }
}
