//! The OpenAPI description of `/api/v1` (issue 18): served at `/api/v1/openapi.json`, the same
//! as the committed `docs/openapi.json`, naming exactly the router's `/api/v1` operations; then
//! schemathesis (PyPI; `.ci/run` installs it into /opt/schemathesis) fuzzes a running server with
//! an owner's token, its stateful phase following the links it infers: no 5xx, no status,
//! content type or body the description does not allow. The server must still answer after.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(90);
const SCHEMATHESIS: &str = "/opt/schemathesis/bin/schemathesis";

/// Operations that would take the fuzzer's own credentials away (revoking its token, suspending,
/// deleting or demoting its user, changing its password). They run in a second pass, alone and
/// without the stateful phase, so they meet made-up names and ids rather than the fuzzer's own.
const SELF_HARM: &str = r"^(DELETE /api/v1/tokens/\{id\}|DELETE /api/v1/users/\{username\}|POST /api/v1/users/\{username\}/suspend|PUT /api/v1/users/\{username\}/(roles|password)|PUT /api/v1/users/me/password)$";

fn described(spec: &serde_json::Value) -> R<BTreeSet<(String, String)>> {
    let mut out = BTreeSet::new();
    let paths = spec["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths"))?;
    for (path, item) in paths {
        for method in item.as_object().into_iter().flat_map(|o| o.keys()) {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    Ok(out)
}

fn schemathesis(s: &Server, token: &str, pass: &[&str]) -> R<String> {
    // The log routes' `follow=true` streams until the build ends (for agent logs, until the
    // client leaves): the fuzzer asks for the logs as they are, never to follow them.
    let config = s.dir.path().join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"query.follow\" = false\n")?;
    let out = Command::new(SCHEMATHESIS)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", s.url))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "15",
            "--request-timeout",
            "20",
            "--seed",
            "20261130",
            "--no-color",
        ])
        .args(pass)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{text}",
        out.status.code()
    );
    Ok(text)
}

fn openapi_described_and_fuzzed(backend: Backend) -> R {
    let s = Server::start(backend)?;

    // Served without a token, and the same as the committed file.
    let (code, spec) = http("GET", &format!("{}/api/v1/openapi.json", s.url), None, None)?;
    assert_eq!(code, 200);
    let committed: serde_json::Value = serde_json::from_slice(&std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
    )?)?;
    assert!(
        spec == committed,
        "the served description differs from docs/openapi.json; run \
         `UPDATE_OPENAPI=1 cargo test -p outpost-control openapi` and commit it"
    );
    assert_eq!(spec["openapi"], "3.1.0");

    // Exactly the router's /api/v1 operations (the description itself aside).
    let declared: BTreeSet<(String, String)> = crate::routes::declared_routes()?
        .into_iter()
        .filter(|(_, p)| p.starts_with("/api/v1/") && p != "/api/v1/openapi.json")
        .collect();
    let described = described(&spec)?;
    let missing: Vec<_> = declared.difference(&described).collect();
    let extra: Vec<_> = described.difference(&declared).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes without a description: {missing:?}; descriptions without a route: {extra:?}"
    );

    if !Path::new(SCHEMATHESIS).exists() {
        if std::env::var_os("OUTPOST_CI").is_some() {
            anyhow::bail!("{SCHEMATHESIS} is missing (scripts/ci-services.sh installs it)");
        }
        eprintln!(
            "SKIPPED schemathesis: {SCHEMATHESIS} is missing (scripts/ci-services.sh installs it)"
        );
        return Ok(());
    }

    // Something to find: a running workspace with a build and logs.
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    let token = s.token()?;

    let first = schemathesis(&s, &token, &["--exclude-name-regex", SELF_HARM])?;
    let second = schemathesis(
        &s,
        &token,
        &[
            "--include-name-regex",
            SELF_HARM,
            "--phases",
            "examples,coverage,fuzzing",
        ],
    )?;
    for text in [&first, &second] {
        let summary = text
            .lines()
            .rev()
            .find(|l| l.contains(" in "))
            .unwrap_or("");
        eprintln!("schemathesis: {summary}");
        assert!(
            text.contains("generated"),
            "schemathesis generated nothing:\n{text}"
        );
    }

    // Still serving, and the fuzzer's owner still works.
    let (code, _) = http("GET", &format!("{}/readyz", s.url), None, None)?;
    assert_eq!(code, 200);
    let (code, me) = http(
        "GET",
        &format!("{}/api/v1/users/me", s.url),
        Some(&token),
        None,
    )?;
    assert_eq!(code, 200, "{me}");
    // (The fuzzer may have stopped or deleted `dev` through its builds route: that is allowed.)
    let (code, list) = http(
        "GET",
        &format!("{}/api/v1/workspaces", s.url),
        Some(&token),
        None,
    )?;
    assert_eq!(code, 200, "{list}");
    Ok(())
}
both_backends!(openapi_described_and_fuzzed);
