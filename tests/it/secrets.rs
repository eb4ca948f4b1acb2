//! Secrets at rest, attacked as someone holding a copy of the database or the data dir would:
//! git private keys and the CA key are sealed, open only with the key kept apart, rotate
//! without loss, and a server given the wrong key refuses to start.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

fn running(w: &Value) -> bool {
    w["status"] == "running" && w["agent"]["status"] == "connected"
}

/// Opens `enc:v1:KEYID:BASE64(nonce || ciphertext || tag)` (AES-256-GCM, the key id as AAD)
/// with the first key of a secrets key file.
pub fn open_sealed(sealed: &str, key_file: &str) -> R<String> {
    use base64::Engine;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
    let b64 = base64::engine::general_purpose::STANDARD;
    let rest = sealed
        .strip_prefix("enc:v1:")
        .ok_or_else(|| anyhow::anyhow!("not sealed"))?;
    let (id, body) = rest
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("no key id"))?;
    let raw = b64.decode(key_file.lines().next().unwrap_or("").trim())?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| anyhow::anyhow!("bad key"))?,
    );
    let mut data = b64.decode(body.trim())?;
    anyhow::ensure!(data.len() > NONCE_LEN, "too short");
    let mut ct = data.split_off(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = data.try_into().map_err(|_| anyhow::anyhow!("bad nonce"))?;
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id.as_bytes()),
            &mut ct,
        )
        .map_err(|_| anyhow::anyhow!("does not open"))?;
    Ok(String::from_utf8(plain.to_vec())?)
}

/// Secrets at rest: the data dir is private, the database holds every user's git key only
/// sealed, the CA key file is sealed, and the key that opens them lives apart (its own 0600
/// file here). `outpost secrets rotate` re-seals everything under a new key; the server comes
/// back with its agents and git signatures working. A server started with the wrong key
/// refuses to start, says why, and changes nothing.
fn secrets_are_sealed_at_rest(backend: Backend) -> R {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Server::start(backend)?;
    s.ok(&["create", "w"])?;
    s.wait_for("w", T, running)?;
    let data = s.data();
    let mode =
        |p: &std::path::Path| -> R<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    assert_eq!(mode(&data)?, 0o700);
    assert_eq!(mode(&data.join("secrets.key"))?, 0o600);
    assert_eq!(mode(&data.join("ca.key"))?, 0o600);
    if data.join("outpost.db").exists() {
        assert_eq!(mode(&data.join("outpost.db"))?, 0o600);
    }
    let sealed = |s: &Server| -> R<Vec<String>> {
        let rows = eventually(|| {
            let r = s.db_rows("SELECT private_key FROM user_git_keys")?;
            Ok((!r.is_empty()).then_some(r))
        })?;
        Ok(rows.into_iter().map(|r| r[0].clone()).collect())
    };
    let before = sealed(&s)?;
    let key_file = std::fs::read_to_string(data.join("secrets.key"))?;
    for k in &before {
        assert!(
            k.starts_with("enc:v1:") && !k.contains("PRIVATE KEY"),
            "{k}"
        );
        // Only with the key file does it open (to the real key).
        assert!(open_sealed(k, &key_file)?.contains("OPENSSH PRIVATE KEY"));
    }
    let ca_before = std::fs::read_to_string(data.join("ca.key"))?;
    assert!(ca_before.starts_with("enc:v1:") && !ca_before.contains("PRIVATE KEY"));
    let sign = |s: &Server| -> R<u16> {
        let w = s.workspace("w")?;
        let AgentCreds { bundle, chain, key } = agent_creds(&w)?;
        let (code, body) = agent_call(
            &bundle,
            "/agent/v1/gitsign",
            Some(json!({ "data": "aGVsbG8=" })),
            Some((&chain, &key)),
        )?;
        anyhow::ensure!(code != 200 || body.contains("signature"), "{body}");
        Ok(code)
    };
    assert_eq!(sign(&s)?, 200);

    // Rotation, with the server stopped (it refuses while the server runs).
    let mut rotate = std::process::Command::new(bin("outpost"));
    rotate
        .args(["--json", "secrets", "rotate", "--data-dir"])
        .arg(&data);
    if let Backend::Postgres(url) = &s.backend {
        rotate.args(["--postgres-url", url]);
    }
    let o = rotate.output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("stop it first"));
    let key_before = std::fs::read_to_string(data.join("secrets.key"))?;
    s.kill();
    let o = rotate.output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout)?;
    let id = r["key_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(r["ca_keys"], 1, "{r}");
    assert!(r["git_keys"].as_u64().unwrap_or(0) >= 1, "{r}");
    assert_ne!(
        std::fs::read_to_string(data.join("secrets.key"))?,
        key_before
    );
    assert_eq!(mode(&data.join("secrets.key"))?, 0o600);
    assert!(std::fs::read_to_string(data.join("ca.key"))?.starts_with(&format!("enc:v1:{id}:")));
    for k in sealed(&s)? {
        assert!(k.starts_with(&format!("enc:v1:{id}:")), "{k}");
    }

    // The wrong key: the server refuses to start and says which key it needs.
    s.set_env(
        "OUTPOST_SECRETS_KEY",
        Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    );
    let err = s.restart().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("OUTPOST_SECRETS_KEY"), "{err}");
    s.set_env("OUTPOST_SECRETS_KEY", None);
    s.restart()?;
    s.wait_for("w", T, running)?;
    assert_eq!(sign(&s)?, 200);
    Ok(())
}
both_backends!(secrets_are_sealed_at_rest);
