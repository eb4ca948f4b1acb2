//! Helpers for the agent API as a workspace (or an attacker in one) reaches it: the bootstrap
//! bundle a build left, a CSR, the agent's stored credentials, and mTLS calls with them.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{resource_path, rt, Server, R};

/// The bootstrap bundle a start build left in the workspace's run/ dir.
pub fn bundle(s: &Server, name: &str, build: i64) -> R<Value> {
    let (w, _) = s.wait_for(name, Duration::from_secs(60), |w| {
        w["latest_build"]["number"] == build && w["latest_build"]["status"] == "succeeded"
    })?;
    let run = resource_path(&w, "run").expect("run resource");
    Ok(serde_json::from_slice(&std::fs::read(
        run.join("bootstrap.json"),
    )?)?)
}

pub fn csr() -> R<String> {
    let key = rcgen::KeyPair::generate()?;
    Ok(rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?)
}

/// What a process in a local workspace can read of its agent (run/agent/): the kept bundle
/// (agent URL, CA pins), and the client certificate chain and its key.
pub struct AgentCreds {
    pub bundle: Value,
    pub chain: String,
    pub key: String,
}

pub fn agent_creds(w: &Value) -> R<AgentCreds> {
    let run = resource_path(w, "run").ok_or_else(|| anyhow::anyhow!("no run dir: {w}"))?;
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(
        run.join("agent/credentials.json"),
    )?)?;
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("agent/bundle.json"))?)?;
    let chain = format!(
        "{}{}",
        raw["certificate_pem"].as_str().unwrap_or(""),
        raw["ca_pem"].as_str().unwrap_or("")
    );
    let key = raw["key_pem"].as_str().unwrap_or("").to_string();
    Ok(AgentCreds { bundle, chain, key })
}

/// POSTs to the agent API trusting only the pinned CA, optionally with a client certificate.
pub fn agent_call(
    b: &Value,
    path: &str,
    body: Option<Value>,
    cert: Option<(&str, &str)>,
) -> R<(u16, String)> {
    let pins: Vec<String> = b["ca_pins"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    let cfg = outpost_common::tls::client_config(&pins, cert)?;
    let url = format!("{}{path}", b["agent_url"].as_str().unwrap_or_default());
    rt().block_on(async move {
        let c = reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .timeout(Duration::from_secs(40))
            .build()?;
        let resp = match body {
            Some(v) => c.post(&url).json(&v).send().await?,
            None => c.get(&url).send().await?,
        };
        Ok((resp.status().as_u16(), resp.text().await?))
    })
}
