//! The ssh-agent that offers the owner's git key. It holds only the public key: each sign
//! request goes to control, which keeps the private key (a process in the workspace can get
//! signatures while the workspace runs, never the key itself).

use super::*;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asks control to sign `data` with the git key; `None` when it will not.
pub type GitSigner = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>;

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Requests are small (a userauth blob); anything larger ends the connection.
const MAX_MESSAGE: usize = 64 * 1024;

/// Serves an ssh-agent socket at `path` listing only the git key (`public_key`, an OpenSSH
/// line) and answering sign requests for it through `signer`. Adding, removing or locking keys
/// is refused.
pub async fn serve_git_agent(
    path: PathBuf,
    public_key: String,
    signer: GitSigner,
) -> anyhow::Result<()> {
    use base64::Engine;
    let mut fields = public_key.split_whitespace();
    let blob = fields
        .nth(1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .context("the git key from control is not an OpenSSH public key")?;
    let comment = fields.next().unwrap_or("outpost git key").to_string();
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let key = Arc::new((blob, comment));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_one(sock, key.clone(), signer.clone()));
        }
    });
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn take_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let s = buf.get(4..4 + n)?;
    *buf = &buf[4 + n..];
    Some(s)
}

/// The answer to one request (type byte + payload), framed by the caller.
async fn answer(msg: &[u8], key: &(Vec<u8>, String), signer: &GitSigner) -> Vec<u8> {
    match msg.split_first() {
        Some((&REQUEST_IDENTITIES, _)) => {
            let mut out = vec![IDENTITIES_ANSWER];
            out.extend_from_slice(&1u32.to_be_bytes());
            put_string(&mut out, &key.0);
            put_string(&mut out, key.1.as_bytes());
            out
        }
        Some((&SIGN_REQUEST, mut rest)) => {
            let (Some(blob), Some(data)) = (take_string(&mut rest), take_string(&mut rest)) else {
                return vec![FAILURE];
            };
            if blob != key.0.as_slice() {
                return vec![FAILURE];
            }
            match signer(data.to_vec()).await {
                Some(sig) => {
                    let mut out = vec![SIGN_RESPONSE];
                    put_string(&mut out, &sig);
                    out
                }
                None => vec![FAILURE],
            }
        }
        _ => vec![FAILURE],
    }
}

async fn serve_one(
    mut sock: tokio::net::UnixStream,
    key: Arc<(Vec<u8>, String)>,
    signer: GitSigner,
) {
    loop {
        let mut len = [0u8; 4];
        if sock.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_MESSAGE {
            return;
        }
        let mut msg = vec![0u8; n];
        if sock.read_exact(&mut msg).await.is_err() {
            return;
        }
        let reply = answer(&msg, &key, &signer).await;
        let mut framed = (reply.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if sock.write_all(&framed).await.is_err() {
            return;
        }
    }
}
