//! Agent credentials: the attack matrix, renewal, revocation, CA rotation and the audit log.

use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, SanType,
};
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

/// A server whose "agent" is /bin/true: start builds leave their bootstrap token unused.
pub(crate) fn fake_agent_server(backend: Backend, extra: &[&str]) -> R<Server> {
    let mut args = vec!["--agent-binary", "/bin/true"];
    args.extend_from_slice(extra);
    Server::start_with(backend, &args)
}

pub(crate) fn boot(b: &Value, token: &str, csr_pem: &str) -> R<(u16, String)> {
    agent_call(
        b,
        "/agent/v1/bootstrap",
        Some(json!({"token": token, "csr_pem": csr_pem})),
        None,
    )
}

pub(crate) fn tok(b: &Value) -> String {
    b["token"].as_str().unwrap_or_default().to_string()
}

/// A client certificate with the given SAN, signed by `issuer` (or self-signed), valid in
/// [from, to] (years).
fn forge(
    issuer: Option<&Issuer<'_, KeyPair>>,
    uri: &str,
    from: i32,
    to: i32,
) -> R<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(uri.to_string().try_into()?)];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(from, 1, 1);
    p.not_after = rcgen::date_time_ymd(to, 1, 1);
    let cert = match issuer {
        Some(i) => p.signed_by(&key, i)?,
        None => p.self_signed(&key)?,
    };
    Ok((cert.pem(), key.serialize_pem()))
}

/// Control's CA, as an attacker who stole the data dir and its secrets key would hold it.
fn our_ca(s: &Server) -> R<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(&crate::secrets::open_sealed(
        &std::fs::read_to_string(s.data().join("ca.key"))?,
        &std::fs::read_to_string(s.data().join("secrets.key"))?,
    )?)?;
    Ok(Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(s.data().join("ca.crt"))?,
        key,
    )?)
}

fn openssl_csr(args: &[&str]) -> R<String> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=evil"])
        .args(args)
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn attack_matrix(backend: Backend) -> R {
    let clock = tempfile::NamedTempFile::new()?;
    std::fs::write(clock.path(), "0")?;
    let clock_path = clock.path().display().to_string();
    let s = fake_agent_server(backend, &["--test-clock-file", &clock_path])?;
    s.json(&["create", "ws", "--no-wait"])?;
    let b = bundle(&s, "ws", 1)?;
    let (st, generic) = agent_call(&b, "/agent/v1/poll", None, None)?;
    assert_eq!(st, 401);

    // 2. Expired token: move control's clock 16 minutes ahead.
    std::fs::write(clock.path(), (16 * 60 * 1000).to_string())?;
    std::thread::sleep(Duration::from_millis(200));
    let (st, body) = boot(&b, &tok(&b), &csr()?)?;
    assert_eq!(
        (st, body.as_str()),
        (401, generic.as_str()),
        "expired token"
    );
    std::fs::write(clock.path(), "0")?;
    std::thread::sleep(Duration::from_millis(200));

    // 6. Oversized body: 413 before any parsing (the body is not even JSON).
    let mut big = b"{\"token\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    let pins: Vec<String> = vec![b["ca_pins"][0].as_str().unwrap_or_default().to_string()];
    let cfg = outpost_common::tls::client_config(&pins, None)?;
    let url = format!(
        "{}/agent/v1/bootstrap",
        b["agent_url"].as_str().unwrap_or_default()
    );
    let st = rt().block_on(async move {
        let c = reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .build()?;
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await?;
        Ok::<_, anyhow::Error>(r.status().as_u16())
    })?;
    assert_eq!(st, 413, "oversized bootstrap body");

    // 7. Bad CSRs cost a 401 and do not spend the token.
    let good = csr()?;
    let mut der_tampered = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())?
            .as_ref()
            .to_vec()
    };
    let n = der_tampered.len();
    der_tampered[n - 5] ^= 0xff; // inside the signature
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&der_tampered)
    );
    let p384 = {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&k)?
            .pem()?
    };
    let with_ext = {
        let k = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 2, 3, 4, 5],
            vec![5, 0],
        )];
        p.serialize_request(&k)?.pem()?
    };
    for (what, bad) in [
        ("bad signature", tampered),
        ("RSA key", openssl_csr(&["-newkey", "rsa:2048"])?),
        (
            "unknown curve (secp256k1)",
            openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"])?,
        ),
        ("P-384 key", p384),
        ("an extension control does not know", with_ext),
        ("not a CSR", "hello".to_string()),
    ] {
        let (st, body) = boot(&b, &tok(&b), &bad)?;
        assert_eq!((st, body.as_str()), (401, generic.as_str()), "{what}");
    }

    // 8. A CSR asking for SANs, CA rights and a long life gets only what control chooses.
    let greedy = {
        let k = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec!["evil.example".to_string()])?;
        p.subject_alt_names.push(SanType::URI(
            "spiffe://outpost/workspace/other/agent/other".try_into()?,
        ));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_after = rcgen::date_time_ymd(2099, 1, 1);
        p.serialize_request(&k)?.pem()?
    };
    let (st, body) = boot(&b, &tok(&b), &greedy)?;
    assert_eq!(
        st,
        200,
        "the token was not spent by the bad CSRs: {body}\n{}",
        serde_json::to_string_pretty(&s.json(&["audit"])?)?
    );
    let issued: Value = serde_json::from_str(&body)?;
    let w = s.workspace("ws")?;
    {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(
            issued["certificate_pem"].as_str().unwrap_or("").as_bytes(),
        )?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
        assert!(!cert.is_ca(), "never a CA");
        let sans: Vec<String> = cert
            .subject_alternative_name()?
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .map(|g| g.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let want = format!(
            "URI(spiffe://outpost/workspace/{}/agent/{}",
            w["id"].as_str().unwrap_or(""),
            issued["agent_id"].as_str().unwrap_or("")
        );
        let want = format!("{want})");
        assert_eq!(sans, vec![want], "only control's identity");
        let eku = cert
            .extended_key_usage()?
            .map(|e| (e.value.client_auth, e.value.server_auth));
        assert_eq!(eku, Some((true, false)), "clientAuth only");
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!(
            life <= 24 * 3600 + 600,
            "short life, not the 2099 the CSR asked for: {life}s"
        );
    }

    // 1. Replay.
    let (st, body) = boot(&b, &tok(&b), &csr()?)?;
    assert_eq!((st, body.as_str()), (401, generic.as_str()), "replay");

    // 9. Agent routes refuse forged or foreign certificates.
    let ws_id = w["id"].as_str().unwrap_or_default().to_string();
    let uri = format!(
        "spiffe://outpost/workspace/{ws_id}/agent/{}",
        issued["agent_id"].as_str().unwrap_or("")
    );
    let other_ca = {
        let k = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Issuer::new(p, k)
    };
    let ours = our_ca(&s)?;
    for (what, (chain, key)) in [
        (
            "a certificate from another CA",
            forge(Some(&other_ca), &uri, 2020, 2090)?,
        ),
        (
            "a self-signed certificate with the right SAN",
            forge(None, &uri, 2020, 2090)?,
        ),
        (
            "an expired certificate from our CA",
            forge(Some(&ours), &uri, 2001, 2002)?,
        ),
        (
            "a not-yet-valid certificate from our CA",
            forge(Some(&ours), &uri, 2090, 2091)?,
        ),
    ] {
        match agent_call(&b, "/agent/v1/poll", None, Some((&chain, &key))) {
            Ok((st, _)) => assert_eq!(st, 401, "{what}"),
            Err(e) => assert!(
                format!("{e:#}").to_lowercase().contains("error"),
                "{what}: refused in the handshake: {e:#}"
            ),
        }
    }

    // 5. Tokens of stopped and deleted workspaces.
    s.json(&["create", "gone", "--no-wait"])?;
    let b_gone = bundle(&s, "gone", 1)?;
    s.json(&["create", "halted", "--no-wait"])?;
    let b_halted = bundle(&s, "halted", 1)?;
    s.ok(&["delete", "gone"])?;
    s.ok(&["stop", "halted"])?;
    for (what, bb) in [
        ("deleted workspace", &b_gone),
        ("stopped workspace", &b_halted),
    ] {
        let (st, body) = boot(bb, &tok(bb), &csr()?)?;
        assert_eq!((st, body.as_str()), (401, generic.as_str()), "{what}");
    }

    // Every rejection above is an audit event, and none holds a secret.
    eventually(|| {
        let events = s.json(&[
            "audit",
            "--action",
            "agent.bootstrap",
            "--outcome",
            "rejected",
            "--limit",
            "1000",
        ])?;
        let reasons: Vec<String> = events
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|e| e["details"].as_str().unwrap_or("").to_string())
            .collect();
        let all = [
            "used or expired",
            "invalid CSR",
            "unknown token id",
            "key must be ECDSA P-256",
        ]
        .iter()
        .all(|n| reasons.iter().any(|r| r.contains(n)));
        Ok(all.then_some(()))
    })?;
    let all = serde_json::to_string(&s.json(&["audit", "--limit", "10000"])?)?;
    for secret in [&tok(&b), &tok(&b_gone), &tok(&b_halted)] {
        // obt_<id>_<secret>: the secret is base64url and may itself contain `_`.
        let secret_part = secret.splitn(3, '_').nth(2).unwrap_or_default();
        assert!(
            !all.contains(secret_part),
            "an audit event holds a token secret"
        );
    }
    let issued_events = s.json(&[
        "audit",
        "--action",
        "agent.bootstrap",
        "--outcome",
        "issued",
    ])?;
    assert_eq!(issued_events.as_array().map(Vec::len), Some(1));
    Ok(())
}
both_backends!(attack_matrix);

fn base64_lines(der: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Attack 4: fifty concurrent redemptions of one token: exactly one wins, one agent exists.
fn concurrent_redemptions(backend: Backend) -> R {
    let s = fake_agent_server(backend, &[])?;
    s.json(&["create", "ws", "--no-wait"])?;
    let b = bundle(&s, "ws", 1)?;
    let token = tok(&b);
    let csrs: Vec<String> = (0..50).map(|_| csr()).collect::<R<_>>()?;
    let pins: Vec<String> = vec![b["ca_pins"][0].as_str().unwrap_or_default().to_string()];
    let url = format!(
        "{}/agent/v1/bootstrap",
        b["agent_url"].as_str().unwrap_or_default()
    );
    let statuses: Vec<u16> = rt().block_on(async move {
        let mut tasks = Vec::new();
        for c in csrs {
            let cfg = outpost_common::tls::client_config(&pins, None)?;
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(cfg)
                .build()?;
            let (url, token) = (url.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                client
                    .post(&url)
                    .json(&json!({"token": token, "csr_pem": c}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        49,
        "{statuses:?}"
    );
    let agents = s.db_rows("SELECT id FROM agents WHERE cert_serial IS NOT NULL")?;
    assert_eq!(agents.len(), 1, "one agent holds a certificate");
    let issued = eventually(|| {
        let n = s.db_rows("SELECT id FROM audit_events WHERE action = 'agent.bootstrap' AND outcome = 'issued'")?.len();
        Ok((n == 1).then_some(n))
    })?;
    assert_eq!(issued, 1);
    Ok(())
}
both_backends!(concurrent_redemptions);

/// Attack 10: a revoked agent mid-poll: the held poll ends at once; everything after is 401.
/// Identity comes only from the certificate: naming another workspace is 403.
fn revocation_and_isolation(backend: Backend) -> R {
    let s = fake_agent_server(backend, &[])?;
    let mut creds = Vec::new();
    for name in ["a", "b"] {
        s.json(&["create", name, "--no-wait"])?;
        let b = bundle(&s, name, 1)?;
        let k = KeyPair::generate()?;
        let c = CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&k)?
            .pem()?;
        let (st, body) = boot(&b, &tok(&b), &c)?;
        assert_eq!(st, 200);
        let r: Value = serde_json::from_str(&body)?;
        let chain = format!(
            "{}{}",
            r["certificate_pem"].as_str().unwrap_or(""),
            r["ca_pem"].as_str().unwrap_or("")
        );
        creds.push((
            b,
            chain,
            k.serialize_pem(),
            r["workspace_id"].as_str().unwrap_or("").to_string(),
            r["agent_id"].as_str().unwrap_or("").to_string(),
        ));
    }
    let (ba, chain_a, key_a, ws_a, agent_a) = creds[0].clone();
    let (_, _, _, ws_b, agent_b) = creds[1].clone();
    let a = Some((chain_a.as_str(), key_a.as_str()));

    // A's manifest is A's; naming B anywhere is 403; a body naming B is refused (400) and
    // changes nothing of B.
    let (st, m) = agent_call(&ba, "/agent/v1/manifest", None, a)?;
    assert_eq!(st, 200);
    let m: Value = serde_json::from_str(&m)?;
    assert_eq!(
        (m["workspace_id"].as_str(), m["agent_id"].as_str()),
        (Some(ws_a.as_str()), Some(agent_a.as_str()))
    );
    for path in [
        format!("/agent/v1/manifest?workspace_id={ws_b}"),
        format!("/agent/v1/poll?agent_id={agent_b}"),
        format!("/agent/v1/manifest?workspace_id={ws_a}&agent_id={agent_b}"),
    ] {
        let (st, _) = agent_call(&ba, &path, None, a)?;
        assert_eq!(st, 403, "{path}");
    }
    let (st, _) = agent_call(
        &ba,
        "/agent/v1/heartbeat",
        Some(json!({"stats": {}, "workspace_id": ws_b})),
        a,
    )?;
    assert_eq!(st, 400, "unknown fields are refused");
    let b_seen = s.db_rows(&format!(
        "SELECT last_seen_at FROM agents WHERE id = '{agent_b}'"
    ))?;
    assert_eq!(b_seen[0][0], "", "B untouched");

    // A holds a poll; stopping A ends it at once.
    let ba2 = ba.clone();
    let (c2, k2) = (chain_a.clone(), key_a.clone());
    let started = Instant::now();
    let poller =
        std::thread::spawn(move || agent_call(&ba2, "/agent/v1/poll", None, Some((&c2, &k2))));
    std::thread::sleep(Duration::from_millis(500));
    s.json(&["stop", "a", "--no-wait"])?;
    let (st, body) = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))??;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the held poll ended at once"
    );
    assert!(
        st == 401 || (st == 200 && body.contains("stop")),
        "{st} {body}"
    );
    for (path, body) in [
        ("/agent/v1/poll", None),
        ("/agent/v1/manifest", None),
        (
            "/agent/v1/heartbeat",
            Some(json!({"stats": {"cpu_cores": 2}})),
        ),
    ] {
        let (st, _) = agent_call(&ba, path, body, a)?;
        assert_eq!(st, 401, "{path} after revocation");
    }
    eventually(|| {
        let revoked = s.json(&["audit", "--action", "agent.revoke", "--workspace", "a"])?;
        Ok((revoked.as_array().map(Vec::len) == Some(1)).then_some(()))
    })?;
    let tokens = s.db_rows(&format!(
        "SELECT id FROM bootstrap_tokens WHERE workspace_id = '{ws_a}' AND used_at IS NULL"
    ))?;
    assert!(
        tokens.is_empty(),
        "no unused bootstrap token of a stopped workspace survives"
    );
    Ok(())
}
both_backends!(revocation_and_isolation);

/// Attack 11: TLS 1.0, 1.1 and 1.2 clients are refused (a client certificate would cross in
/// clear before 1.3); TLS 1.3 works.
fn old_tls_refused(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let hostport = s.agent_url.trim_start_matches("https://").to_string();
    let probe = |flag: &str| -> R<(bool, String)> {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &hostport,
                flag,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ])
            .stdin(std::process::Stdio::null())
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let negotiated = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
        Ok((negotiated, text))
    };
    // TLS 1.3 only: before it, the client certificate (naming the workspace) travels in clear.
    for flag in ["-tls1", "-tls1_1", "-tls1_2"] {
        let (ok, text) = probe(flag)?;
        assert!(!ok, "{flag} negotiated a session:\n{text}");
    }
    let (ok, text) = probe("-tls1_3")?;
    assert!(ok, "TLS 1.3 works:\n{text}");
    Ok(())
}
both_backends!(old_tls_refused);

/// Attack 12: an agent pointed at a server with another CA (or with the wrong pin) aborts in the
/// handshake: the server never receives a byte of application data, so no token byte.
fn agent_aborts_on_wrong_ca() -> R {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let key = KeyPair::generate()?;
    let ca_key = KeyPair::generate()?;
    let mut cap = CertificateParams::new(Vec::<String>::new())?;
    cap.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = cap.self_signed(&ca_key)?;
    let issuer = Issuer::new(cap, ca_key);
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &issuer)?;
    let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
    let keyder = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!(e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(outpost_common::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, keyder)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let app_bytes = Arc::new(AtomicUsize::new(0));
    let (h, c, a) = (handshakes.clone(), completed.clone(), app_bytes.clone());
    let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt().spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let (acc, c, a) = (acceptor.clone(), c.clone(), a.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acc.accept(tcp).await {
                    c.fetch_add(1, Ordering::SeqCst);
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                        a.fetch_add(n, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    // The pin of some other CA (the fake server's is not it).
    let other = KeyPair::generate()?;
    let mut op = CertificateParams::new(Vec::<String>::new())?;
    op.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_pin =
        outpost_common::tls::spki_pin(op.self_signed(&other)?.der()).unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let secret = "S3CRETS3CRETS3CRETS3CRETS3CRETS3CRETxxxxxx";
    let bundle = json!({
        "agent_url": format!("https://127.0.0.1:{port}"),
        "token": format!("obt_0123456789abcdef_{secret}"),
        "ca_pins": [other_pin],
        "heartbeat_secs": 1,
        "env": {},
    });
    std::fs::write(dir.path().join("bundle.json"), bundle.to_string())?;
    let mut agent = std::process::Command::new(bin("outpost-agent"))
        .arg("--bootstrap-file")
        .arg(dir.path().join("bundle.json"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while handshakes.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let out = agent.wait_with_output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        handshakes.load(Ordering::SeqCst) >= 2,
        "the agent kept trying (with backoff)"
    );
    assert_eq!(
        completed.load(Ordering::SeqCst),
        0,
        "no handshake completed"
    );
    assert_eq!(
        app_bytes.load(Ordering::SeqCst),
        0,
        "not one byte of application data"
    );
    assert!(
        log.contains("pinned") || log.contains("certificate"),
        "the agent says why: {log}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "no credentials were stored"
    );
    Ok(())
}

#[test]
fn agent_aborts_on_wrong_ca_or_pin() -> R {
    agent_aborts_on_wrong_ca()
}

/// Renewal at ~2/3 of a short certificate life, with a new key, stored atomically (0600).
/// An agent whose certificate expired cannot renew: it says so and the workspace shows why.
fn renewal_and_expiry(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--agent-cert-lifetime-secs", "6"])?;
    s.ok(&["create", "dev"])?;
    let w = s.workspace("dev")?;
    let agent_id = w["agent"]["id"].as_str().unwrap_or_default().to_string();
    let serial = |s: &Server| -> R<String> {
        Ok(s.db_rows(&format!(
            "SELECT cert_serial FROM agents WHERE id = '{agent_id}'"
        ))?[0][0]
            .clone())
    };
    let first = serial(&s)?;
    let creds_path = resource_path(&w, "run")
        .expect("run dir")
        .join("agent/credentials.json");
    let key1 = std::fs::read_to_string(&creds_path)?;
    // Past the first certificate's end the same agent is still connected, on a renewed one.
    std::thread::sleep(Duration::from_secs(8));
    let (w, _) = s.wait_for("dev", Duration::from_secs(20), |w| {
        w["agent"]["status"] == "connected" && w["health"]["healthy"] == true
    })?;
    assert_ne!(serial(&s)?, first, "renewed");
    let key2 = std::fs::read_to_string(&creds_path)?;
    let (k1, k2): (Value, Value) = (serde_json::from_str(&key1)?, serde_json::from_str(&key2)?);
    assert_ne!(k1["key_pem"], k2["key_pem"], "a new key each renewal");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&creds_path)?.permissions().mode() & 0o777,
        0o600
    );
    let renewals = s.json(&["audit", "--action", "agent.renew", "--outcome", "issued"])?;
    assert!(renewals.as_array().map(Vec::len).unwrap_or(0) >= 1);
    assert!(w["agent"]["cert_expires_at"].as_i64().unwrap_or(0) > 0);

    // Freeze the agent past its certificate's end: thawed, it cannot renew.
    let pid = agent_pid(&w).expect("agent pid");
    signal(pid, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8));
    let (w, _) = s.wait_for("dev", Duration::from_secs(20), |w| {
        w["health"]["healthy"] == false
    })?;
    let reasons = w["health"]["reasons"].to_string();
    assert!(reasons.contains("certificate expired"), "{reasons}");
    signal(pid, libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "the agent with an expired certificate exits");
    let log = std::fs::read_to_string(resource_path(&w, "run").expect("run").join("agent.log"))?;
    assert!(log.contains("expired"), "it says why: {log}");
    // A restart issues a new token: healthy again.
    s.ok(&["restart", "dev"])?;
    let w = s.workspace("dev")?;
    assert_eq!(w["health"]["healthy"], true, "{w}");
    Ok(())
}
both_backends!(renewal_and_expiry);

/// The CA rotates: agents learn the new pin from their heartbeats, trust the new CA during the
/// overlap, renew onto it, and keep working after the old one is retired.
fn ca_rotation(backend: Backend) -> R {
    let mut s = Server::start_with(backend, &["--agent-cert-lifetime-secs", "8"])?;
    s.ok(&["create", "old"])?;
    let w = s.workspace("old")?;
    let pid = agent_pid(&w).expect("pid");
    let creds = resource_path(&w, "run")
        .expect("run")
        .join("agent/credentials.json");
    let data = s.data().display().to_string();
    let pins = |p: &std::path::Path| -> R<Vec<String>> {
        let v: Value = serde_json::from_slice(&std::fs::read(p)?)?;
        Ok(v["ca_pins"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect())
    };
    assert_eq!(pins(&creds)?.len(), 1);

    s.ok(&["ca", "rotate", "--data-dir", &data])?;
    s.restart()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pins(&creds)?.len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agent did not learn the new pin"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.ok(&["create", "new"])?;
    let new_bundle = bundle(&s, "new", 1);
    assert!(new_bundle.is_err() || new_bundle?["ca_pins"].as_array().map(Vec::len) == Some(2));

    s.ok(&["ca", "promote", "--data-dir", &data])?;
    s.restart()?;
    // Both agents trust the new CA (the old one through its learned pin) and renew onto it.
    let ca2 = std::fs::read_to_string(s.data().join("ca.crt"))?;
    let new_creds = resource_path(&s.workspace("new")?, "run")
        .expect("run")
        .join("agent/credentials.json");
    let deadline = Instant::now() + Duration::from_secs(40);
    for c in [&creds, &new_creds] {
        loop {
            let v: Value = serde_json::from_slice(&std::fs::read(c)?)?;
            if v["ca_pem"].as_str() == Some(ca2.as_str()) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "an agent did not renew onto the new CA"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    s.ok(&["ca", "retire", "--data-dir", &data])?;
    s.restart()?;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    for name in ["old", "new"] {
        s.wait_for(name, Duration::from_secs(40), |w| {
            w["agent"]["status"] == "connected"
                && w["agent"]["last_seen_at"].as_i64().unwrap_or(0) > t
        })?;
    }
    assert!(alive(pid), "the same old agent, never restarted");
    Ok(())
}
both_backends!(ca_rotation);
