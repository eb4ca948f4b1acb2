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
    #[error("the private key does not parse or cannot sign")]
    Private,
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

/// Signs `data` with an OpenSSH private key (what an ssh-agent answers to a sign request):
/// the SSH signature blob (`string algorithm, string signature`) and the key's public blob.
/// Control signs for workspaces this way, so the git key itself never leaves it.
pub fn sign(private_openssh: &str, data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    use ssh_key::encoding::Encode;
    fn sign_with<K: ssh_key::SigningKey>(k: &K, data: &[u8]) -> Option<ssh_key::Signature> {
        k.try_sign(data).ok()
    }
    let key = ssh_key::PrivateKey::from_openssh(private_openssh).map_err(|_| KeyError::Private)?;
    let sig = sign_with(&key, data).ok_or(KeyError::Private)?;
    let blob = sig.encode_vec().map_err(|_| KeyError::Private)?;
    let public = key
        .public_key()
        .key_data()
        .encode_vec()
        .map_err(|_| KeyError::Private)?;
    Ok((blob, public))
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
    fn signatures_verify_with_the_public_key() {
        use ssh_key::encoding::Decode;
        let (private, public) = new_ed25519("git").expect("key");
        let (blob, key_blob) = sign(&private, b"to be signed").expect("signs");
        let sig = ssh_key::Signature::decode(&mut blob.as_slice()).expect("decodes");
        let pk = ssh_key::PublicKey::from_openssh(&public).expect("public");
        assert_eq!(
            ssh_key::encoding::Encode::encode_vec(pk.key_data()).expect("blob"),
            key_blob
        );
        fn verify<K: signature::Verifier<ssh_key::Signature>>(
            k: &K,
            m: &[u8],
            s: &ssh_key::Signature,
        ) -> bool {
            k.verify(m, s).is_ok()
        }
        assert!(verify(pk.key_data(), b"to be signed", &sig));
        assert!(!verify(pk.key_data(), b"something else", &sig));
        assert_eq!(sign("junk", b"x"), Err(KeyError::Private));
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
