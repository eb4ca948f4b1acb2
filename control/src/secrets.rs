//! Secrets at rest: the users' git private keys (in the store) and the CA keys (files in the
//! data dir) are sealed with AES-256-GCM under a key-encryption key kept apart from the
//! database: `OUTPOST_SECRETS_KEY` (base64 of 32 bytes), or a file (`--secrets-key-file`,
//! default `DATA_DIR/secrets.key`, made 0600 on first start). A copy of the database, or of the
//! data dir without that file, holds no usable key.
//!
//! Sealed text is `enc:v1:KEYID:BASE64(nonce || ciphertext || tag)`; KEYID (8 hex of the key's
//! SHA-256) says which key opens it, so a key file may hold the new key and the previous one
//! while `outpost secrets rotate` re-seals everything (crash-safe: either key opens what it
//! finds).

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::Digest;

const PREFIX: &str = "enc:v1:";
/// The environment variable holding the key (base64), which wins over the key file.
pub const KEY_ENV: &str = "OUTPOST_SECRETS_KEY";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a secret is sealed with key {0}, which this server does not have: start it with the key it was written with (OUTPOST_SECRETS_KEY or --secrets-key-file)")]
    UnknownKey(String),
    #[error("a sealed secret does not open with its key: it was altered, or the key is wrong")]
    Corrupt,
}

struct Key {
    id: String,
    raw: [u8; 32],
    aead: LessSafeKey,
}

impl Key {
    fn new(raw: [u8; 32]) -> anyhow::Result<Key> {
        let id = sha2::Sha256::digest(raw)
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| anyhow::anyhow!("bad AES key"))?,
        );
        Ok(Key { id, raw, aead })
    }

    fn parse(b64: &str) -> anyhow::Result<Key> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .context("the secrets key is not base64")?;
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the secrets key must be 32 bytes (base64)"))?;
        Key::new(raw)
    }

    fn encoded(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.raw)
    }
}

/// The key-encryption keys: the current one seals, any of them opens.
pub struct Keyring {
    keys: Vec<Key>,
    /// Where the keys came from, for messages (`OUTPOST_SECRETS_KEY` or a file).
    pub source: String,
    file: Option<PathBuf>,
}

impl Keyring {
    /// The default key file of a data dir.
    pub fn default_file(data_dir: &Path) -> PathBuf {
        data_dir.join("secrets.key")
    }

    /// The keys from `OUTPOST_SECRETS_KEY` (`env`), else from `file`, which is created with a
    /// fresh key when it does not exist yet.
    pub fn load(env: Option<&str>, file: &Path) -> anyhow::Result<Keyring> {
        if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
            let keys = v
                .split(',')
                .map(Key::parse)
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("reading {KEY_ENV}"))?;
            return Ok(Keyring {
                keys,
                source: KEY_ENV.into(),
                file: None,
            });
        }
        if !file.exists() {
            let key = Key::new(rand::random())?;
            outpost_common::fs::write_private(file, format!("{}\n", key.encoded()).as_bytes())
                .with_context(|| format!("creating the secrets key {}", file.display()))?;
            tracing::info!(file = %file.display(), "made a new secrets key; keep it apart from database backups");
        }
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the secrets key {}", file.display()))?;
        let keys = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Key::parse)
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("reading {}", file.display()))?;
        anyhow::ensure!(!keys.is_empty(), "{} holds no key", file.display());
        Ok(Keyring {
            keys,
            source: file.display().to_string(),
            file: Some(file.to_path_buf()),
        })
    }

    /// The agent listener's TLS session ticket keys, derived from the current key: every
    /// replica with this key file opens the tickets of the others, and of its own earlier runs.
    pub fn ticket_keys(&self) -> crate::tls_tickets::TicketKeys {
        crate::tls_tickets::TicketKeys::new(&self.keys[0].raw)
    }

    /// Seals `plain` with the current key.
    pub fn seal(&self, plain: &[u8]) -> String {
        let key = &self.keys[0];
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buf = plain.to_vec();
        // Sealing in place only fails for inputs larger than AES-GCM allows (64 GiB).
        if key
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(key.id.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            buf.clear();
        }
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// Opens sealed text; text from before sealing (no prefix) comes back as it is.
    pub fn open(&self, stored: &str) -> Result<Vec<u8>, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.as_bytes().to_vec());
        };
        let (id, b64) = rest.split_once(':').ok_or(SecretError::Corrupt)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
        let mut data = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| SecretError::Corrupt)?;
        if data.len() < NONCE_LEN {
            return Err(SecretError::Corrupt);
        }
        let mut ct = data.split_off(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = data.try_into().map_err(|_| SecretError::Corrupt)?;
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut ct,
            )
            .map_err(|_| SecretError::Corrupt)?;
        Ok(plain.to_vec())
    }

    /// Opens as UTF-8.
    pub fn open_str(&self, stored: &str) -> Result<String, SecretError> {
        String::from_utf8(self.open(stored)?).map_err(|_| SecretError::Corrupt)
    }

    /// Whether `stored` is sealed with the current key (else it needs re-sealing).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(id, _)| id == self.keys[0].id)
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// A new current key in front of these (rotation's first step): the file, when there is
    /// one, is rewritten with both.
    pub fn rotate(&mut self, new_key: Option<&str>) -> anyhow::Result<()> {
        let key = match new_key {
            Some(k) => Key::parse(k)?,
            None => Key::new(rand::random())?,
        };
        self.keys.insert(0, key);
        self.save()
    }

    /// Drops every key but the current one (rotation's last step).
    pub fn retire_old(&mut self) -> anyhow::Result<()> {
        self.keys.truncate(1);
        self.save()
    }

    /// The current key, base64 (for an operator who keeps it in `OUTPOST_SECRETS_KEY`).
    pub fn current_encoded(&self) -> String {
        self.keys[0].encoded()
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let text: String = self.keys.iter().map(|k| k.encoded() + "\n").collect();
        outpost_common::fs::write_private(file, text.as_bytes())
    }
}

/// Re-seals every git key with the current key (also what a server does at start for keys
/// written before sealing, or sealed with a key since replaced).
pub async fn reseal_store(store: &crate::store::Store, keys: &Keyring) -> anyhow::Result<usize> {
    let mut n = 0;
    for (user_id, stored) in store.git_private_keys().await? {
        if keys.is_current(&stored) {
            continue;
        }
        let plain = keys
            .open(&stored)
            .context("opening a git key in the store")?;
        store
            .set_git_private_key(&user_id, &stored, &keys.seal(&plain))
            .await?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_with_its_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Keyring::default_file(dir.path());
        let mut ring = Keyring::load(None, &file).expect("made");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let sealed = ring.seal(b"-----BEGIN OPENSSH PRIVATE KEY-----");
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("PRIVATE"));
        assert_ne!(
            sealed,
            ring.seal(b"-----BEGIN OPENSSH PRIVATE KEY-----"),
            "fresh nonces"
        );
        assert_eq!(
            ring.open_str(&sealed).expect("opens"),
            "-----BEGIN OPENSSH PRIVATE KEY-----"
        );
        assert_eq!(
            ring.open_str("legacy plain").expect("as is"),
            "legacy plain"
        );
        // Tampering is detected.
        let mut bad = sealed.clone();
        bad.replace_range(bad.len() - 6..bad.len() - 2, "AAAA");
        assert!(matches!(ring.open(&bad), Err(SecretError::Corrupt)));
        // Another key cannot open it, and says which key it needs.
        let other = Keyring::load(
            Some(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])),
            &file,
        )
        .expect("env key");
        assert!(matches!(
            other.open(&sealed),
            Err(SecretError::UnknownKey(_))
        ));
        // Rotation: both keys open while it runs; after it, only the new one is kept.
        let old_id = ring.current_id().to_string();
        ring.rotate(None).expect("rotates");
        assert_ne!(ring.current_id(), old_id);
        assert!(!ring.is_current(&sealed));
        let resealed = ring.seal(&ring.open(&sealed).expect("old opens"));
        assert!(ring.is_current(&resealed));
        let reloaded = Keyring::load(None, &file).expect("reloads");
        assert!(reloaded.open(&sealed).is_ok() && reloaded.open(&resealed).is_ok());
        ring.retire_old().expect("retires");
        let reloaded = Keyring::load(None, &file).expect("reloads");
        assert!(reloaded.open(&resealed).is_ok());
        assert!(matches!(
            reloaded.open(&sealed),
            Err(SecretError::UnknownKey(_))
        ));
        assert!(Keyring::load(Some("short"), &file).is_err());
    }
}
