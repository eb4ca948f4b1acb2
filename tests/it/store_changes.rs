//! Changes that reach the store with no wake-up or bus event behind them (a replica whose event
//! the bus dropped, an operator's SQL): each server reads them once a second (`poll_sweep`), so
//! a command reaches a held poll, and a renewal or a revocation stops a certificate the agent
//! cache still holds, within seconds, not after a poll's 25 s or a cached row's life.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::both_backends;
use crate::credentials::{boot, fake_agent_server, tok};
use crate::harness::*;

fn now_ms() -> R<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())
}

/// The agent's poll, held on a thread of its own: (status, body, how long it was held).
fn poll_in_background(
    b: &Value,
    chain: &str,
    key: &str,
) -> std::thread::JoinHandle<R<(u16, String, Duration)>> {
    let (b, chain, key) = (b.clone(), chain.to_string(), key.to_string());
    std::thread::spawn(move || {
        let t = Instant::now();
        let (st, body) = agent_call(&b, "/agent/v1/poll", None, Some((&chain, &key)))?;
        Ok((st, body, t.elapsed()))
    })
}

fn joined<T>(h: std::thread::JoinHandle<R<T>>) -> R<T> {
    h.join().map_err(|_| anyhow::anyhow!("poller panicked"))?
}

fn changes_without_a_wake_up(backend: Backend) -> R {
    let s = fake_agent_server(backend, &[])?;
    s.json(&["create", "a", "--no-wait"])?;
    let b = bundle(&s, "a", 1)?;
    let k = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&k)?
        .pem()?;
    let (st, body) = boot(&b, &tok(&b), &csr)?;
    assert_eq!(st, 200, "{body}");
    let r: Value = serde_json::from_str(&body)?;
    let chain = format!(
        "{}{}",
        r["certificate_pem"].as_str().unwrap_or(""),
        r["ca_pem"].as_str().unwrap_or("")
    );
    let key = k.serialize_pem();
    let agent = r["agent_id"].as_str().unwrap_or("").to_string();
    let me = Some((chain.as_str(), key.as_str()));
    let beat = || {
        agent_call(
            &b,
            "/agent/v1/heartbeat",
            Some(json!({"stats": {"cpu_cores": 2}})),
            me,
        )
        .map(|r| r.0)
    };

    // The first poll marks the agent connected and holds (no command yet). A command written
    // straight into the store, as a replica would whose wake-up never arrived, answers it.
    let poller = poll_in_background(&b, &chain, &key);
    std::thread::sleep(Duration::from_secs(1));
    s.db_rows(&format!(
        "INSERT INTO agent_commands (agent_id, kind, created_at) VALUES ('{agent}', 'refresh_keys', {})",
        now_ms()?
    ))?;
    let (st, body, held) = joined(poller)?;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("refresh_keys"), "{body}");
    assert!(held < Duration::from_secs(12), "answered after {held:?}");
    let undelivered = s.db_rows(&format!(
        "SELECT id FROM agent_commands WHERE agent_id = '{agent}' AND delivered_at IS NULL"
    ))?;
    assert!(undelivered.is_empty(), "{undelivered:?}");

    // A renewal elsewhere: the store names another certificate, the one this agent holds
    // was superseded a moment ago. Its heartbeats (served from the cache) stop within seconds.
    assert_eq!(beat()?, 200);
    assert_eq!(beat()?, 200);
    let serial = s.db_rows(&format!(
        "SELECT cert_serial FROM agents WHERE id = '{agent}'"
    ))?[0][0]
        .clone();
    s.db_rows(&format!(
        "UPDATE agents SET prev_cert_serial = cert_serial, prev_cert_until = {}, cert_serial = 'feed' WHERE id = '{agent}'",
        now_ms()?
    ))?;
    let t = Instant::now();
    eventually(|| Ok((beat()? == 401).then_some(())))?;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Renewed back to it (as a test can): accepted again.
    s.db_rows(&format!(
        "UPDATE agents SET cert_serial = '{serial}', prev_cert_serial = NULL, prev_cert_until = NULL WHERE id = '{agent}'"
    ))?;
    eventually(|| Ok((beat()? == 200).then_some(())))?;

    // A revocation elsewhere ends the held poll and the heartbeats within seconds.
    let poller = poll_in_background(&b, &chain, &key);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(beat()?, 200);
    s.db_rows(&format!(
        "UPDATE agents SET revoked_at = {}, lifecycle = 'off' WHERE id = '{agent}'",
        now_ms()?
    ))?;
    let t = Instant::now();
    let (st, body, _) = joined(poller)?;
    assert_eq!(st, 401, "{body}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(beat()?, 401);
    let (st, _) = agent_call(&b, "/agent/v1/poll", None, me)?;
    assert_eq!(st, 401);
    Ok(())
}
both_backends!(changes_without_a_wake_up);
