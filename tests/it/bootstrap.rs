//! The one-time bootstrap token: works once; replayed, expired, wrong and malformed tokens all get
//! the same generic 401; the store keeps only a hash.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

fn bootstrap_basics(backend: Backend) -> R {
    // /bin/true as the agent: the provisioner starts it, it exits, the token stays unused.
    let s = Server::start_with(
        backend,
        &[
            "--agent-binary",
            "/bin/true",
            "--bootstrap-token-ttl-secs",
            "3",
        ],
    )?;
    s.json(&["create", "ws", "--no-wait"])?;
    let b = bundle(&s, "ws", 1)?;
    let token = b["token"].as_str().unwrap_or_default().to_string();
    assert!(token.starts_with("obt_"));
    assert_eq!(
        s.status("ws")?,
        "starting",
        "running only after the agent's first poll"
    );

    // The store keeps a hash, not the token or its secret.
    // obt_<id>_<secret>: the secret is base64url and may itself contain `_`.
    let secret = token.splitn(3, '_').nth(2).unwrap_or_default().to_string();
    let rows = s.db_rows("SELECT id, secret_hash, workspace_id, agent_id FROM bootstrap_tokens")?;
    assert_eq!(rows.len(), 1);
    for col in &rows[0] {
        assert!(!col.contains(&secret), "a stored column holds the secret");
    }
    assert_eq!(rows[0][1].len(), 64, "sha-256 hex");

    // No client certificate: agent routes refuse.
    let (st, generic) = agent_call(&b, "/agent/v1/poll", None, None)?;
    assert_eq!(st, 401);

    // First use: a certificate for this workspace's agent.
    let (st, body) = agent_call(
        &b,
        "/agent/v1/bootstrap",
        Some(json!({"token": token, "csr_pem": csr()?})),
        None,
    )?;
    assert_eq!(st, 200, "{body}");
    let resp: Value = serde_json::from_str(&body)?;
    let w = s.workspace("ws")?;
    assert_eq!(resp["workspace_id"], w["id"]);
    assert!(resp["certificate_pem"]
        .as_str()
        .unwrap_or("")
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // Every rejection is the same 401 with the same body.
    let wrong_secret = format!(
        "{}_{}",
        token.splitn(3, '_').take(2).collect::<Vec<_>>().join("_"),
        "A".repeat(43)
    );
    let cases = [
        ("replay", token.clone()),
        ("wrong secret", wrong_secret),
        ("unknown id", format!("obt_ffffffffffffffff_{secret}")),
        ("malformed", "garbage".to_string()),
        ("wrong prefix", token.replacen("obt_", "opt_", 1)),
    ];
    for (what, t) in &cases {
        let (st, body) = agent_call(
            &b,
            "/agent/v1/bootstrap",
            Some(json!({"token": t, "csr_pem": csr()?})),
            None,
        )?;
        assert_eq!(st, 401, "{what}");
        assert_eq!(body, generic, "{what}: the same generic body");
    }

    // The issued certificate works: the first authenticated poll turns the workspace running.
    let key_and_chain = {
        // Bootstrap the real way once more with a fresh token, keeping the key this time.
        s.ok(&["stop", "ws"])?;
        s.json(&["start", "ws", "--no-wait"])?;
        let b2 = bundle(&s, "ws", 3)?;
        let key = rcgen::KeyPair::generate()?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&key)?
            .pem()?;
        let (st, body) = agent_call(
            &b2,
            "/agent/v1/bootstrap",
            Some(json!({"token": b2["token"], "csr_pem": csr})),
            None,
        )?;
        assert_eq!(st, 200, "{body}");
        let r: Value = serde_json::from_str(&body)?;
        (
            b2,
            key.serialize_pem(),
            format!(
                "{}{}",
                r["certificate_pem"].as_str().unwrap_or(""),
                r["ca_pem"].as_str().unwrap_or("")
            ),
        )
    };
    let (b2, key_pem, chain) = key_and_chain;
    let poller = std::thread::spawn(move || {
        agent_call(&b2, "/agent/v1/poll", None, Some((&chain, &key_pem))).map(|r| r.0)
    });
    s.wait_for("ws", Duration::from_secs(30), |w| w["status"] == "running")?;
    // Stopping ends the held poll at once with 401 (the identity is revoked).
    s.ok(&["stop", "ws"])?;
    let st = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))??;
    assert!(st == 200 || st == 401, "held poll ended with {st}");

    // Expired: a fresh token left unused past its 3 s life.
    s.json(&["start", "ws", "--no-wait"])?;
    let b3 = bundle(&s, "ws", 5)?;
    std::thread::sleep(Duration::from_millis(3500));
    let (st, body) = agent_call(
        &b3,
        "/agent/v1/bootstrap",
        Some(json!({"token": b3["token"], "csr_pem": csr()?})),
        None,
    )?;
    assert_eq!(st, 401, "expired");
    assert_eq!(body, generic);
    Ok(())
}
both_backends!(bootstrap_basics);

/// An agent whose bootstrap answer was lost (control died mid-request) retries with the same key
/// and gets its certificate; the spent token is still refused to any other key.
fn bootstrap_retry_with_the_same_key(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--agent-binary", "/bin/true"])?;
    s.json(&["create", "ws", "--no-wait"])?;
    let b = bundle(&s, "ws", 1)?;
    let token = b["token"].as_str().unwrap_or_default().to_string();
    let mine = csr()?;
    let call = |csr: &str| {
        agent_call(
            &b,
            "/agent/v1/bootstrap",
            Some(json!({"token": token, "csr_pem": csr})),
            None,
        )
    };
    let (st, first) = call(&mine)?;
    assert_eq!(st, 200, "{first}");
    let (st, again) = call(&mine)?;
    assert_eq!(st, 200, "{again}");
    let (first, again): (Value, Value) =
        (serde_json::from_str(&first)?, serde_json::from_str(&again)?);
    assert_eq!(first["agent_id"], again["agent_id"]);
    let (st, _) = call(&csr()?)?;
    assert_eq!(st, 401, "another key cannot spend the token");
    Ok(())
}
both_backends!(bootstrap_retry_with_the_same_key);
