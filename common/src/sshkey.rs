//! SSH keys: parsing a public key line as users paste it (`TYPE BASE64 [COMMENT]`) into its
//! canonical form and fingerprint, and making ed25519 key pairs.

use base64::Engine;

/// The public key types Outpost accepts.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why a public key line was refused; the message says what a valid one looks like.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("expected `TYPE BASE64 [COMMENT]`, as in ~/.ssh/id_ed25519.pub")]
    Shape,
    #[error("unsupported key type {0:?}; use one of {types}", types = KEY_TYPES.join(", "))]
    Type(String),
    #[error("the key's base64 is invalid")]
    Base64,
    #[error("the key's blob does not match its type")]
    Blob,
}

/// A parsed public key: `TYPE BASE64` without the comment, and its OpenSSH fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyLine {
    pub canonical: String,
    pub fingerprint: String,
}

/// Parses `TYPE BASE64 [COMMENT]`, checking that the blob carries the type it claims.
pub fn parse_public_key(line: &str) -> Result<PublicKeyLine, KeyError> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(KeyError::Shape);
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(KeyError::Type(kind.to_string()));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::Base64)?;
    // The blob starts with the length-prefixed key type.
    let ok = blob.len() > 4 + kind.len() && {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        n == kind.len() && &blob[4..4 + n] == kind.as_bytes()
    };
    if !ok {
        return Err(KeyError::Blob);
    }
    let fingerprint = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&blob);
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
        )
    };
    Ok(PublicKeyLine {
        canonical: format!("{kind} {b64}"),
        fingerprint,
    })
}

/// A new ed25519 key pair: (private key in OpenSSH PEM, public key line), with `comment`.
pub fn new_ed25519(comment: &str) -> Option<(String, String)> {
    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut seed);
    let mut key = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let private = key.to_openssh(ssh_key::LineEnding::LF).ok()?.to_string();
    let public = key.public_key().to_openssh().ok()?;
    Some((private, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_keys_parse_back() {
        let (private, public) = new_ed25519("me@here").expect("key");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let parsed = parse_public_key(&public).expect("parses");
        assert!(parsed.canonical.starts_with("ssh-ed25519 ") && !parsed.canonical.contains("me@"));
        assert!(parsed.fingerprint.starts_with("SHA256:"));
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(parse_public_key("junk"), Err(KeyError::Shape));
        assert!(matches!(
            parse_public_key("ssh-dss AAAA"),
            Err(KeyError::Type(_))
        ));
        assert_eq!(parse_public_key("ssh-ed25519 !!!"), Err(KeyError::Base64));
        // A valid blob of another type.
        let (_, public) = new_ed25519("x").expect("key");
        let b64 = public.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(
            parse_public_key(&format!("ssh-rsa {b64}")),
            Err(KeyError::Blob)
        );
    }
}
