//! The control session: an authenticated (mTLS) client of the agent API with one typed method
//! per route; nothing else in the agent names an agent API path.

use outpost_common::LockExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_api::*;

use crate::credentials::{http, new_csr, Credentials};
use outpost_common::clock::now_ms;
use outpost_common::tls;

/// An authenticated (mTLS) connection to the agent API. Cheap to clone; [`ControlSession::swap`]
/// replaces the identity or pins for every clone.
#[derive(Clone)]
pub struct ControlSession {
    url: String,
    /// The source address of its connections (`None`: the system's choice).
    local: Option<std::net::IpAddr>,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    creds: Credentials,
    /// The TLS configuration of these credentials; its clones share one session store, so a
    /// session to another URL ([`ControlSession::to`]) resumes with the tickets this one got.
    tls: rustls::ClientConfig,
    client: Client,
}

impl ControlSession {
    pub fn new(agent_url: &str, creds: Credentials) -> anyhow::Result<ControlSession> {
        Self::new_from(agent_url, creds, None)
    }

    /// A session whose connections come from the source address `local`.
    pub fn new_from(
        agent_url: &str,
        creds: Credentials,
        local: Option<std::net::IpAddr>,
    ) -> anyhow::Result<ControlSession> {
        let tls = Self::tls_for(&creds)?;
        Self::with_tls(agent_url, creds, tls, local)
    }

    fn with_tls(
        url: &str,
        creds: Credentials,
        tls: rustls::ClientConfig,
        local: Option<std::net::IpAddr>,
    ) -> anyhow::Result<ControlSession> {
        let client = Self::client_for(url, &tls, local)?;
        Ok(ControlSession {
            url: url.to_string(),
            local,
            inner: Arc::new(Mutex::new(Inner { creds, tls, client })),
        })
    }

    /// A session to another control URL (another replica) with these credentials and this
    /// session's TLS session store: a ticket one replica gave resumes at another, since the
    /// replicas of one deployment seal tickets with one key.
    pub fn to(&self, url: &str) -> anyhow::Result<ControlSession> {
        let (creds, tls) = {
            let g = self.inner.locked();
            (g.creds.clone(), g.tls.clone())
        };
        Self::with_tls(url, creds, tls, self.local)
    }

    fn tls_for(creds: &Credentials) -> anyhow::Result<rustls::ClientConfig> {
        let chain = format!("{}{}", creds.certificate_pem, creds.ca_pem);
        Ok(tls::client_config(
            &creds.ca_pins,
            Some((&chain, &creds.key_pem)),
        )?)
    }

    fn client_for(
        url: &str,
        tls: &rustls::ClientConfig,
        local: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Client> {
        Ok(Client::with_http(
            http(tls.clone(), Duration::from_secs(40), local)?,
            url,
            None,
        ))
    }

    /// The agent's own SSH server: its host key and listen address, for control to show.
    pub async fn report_ssh(&self, report: &SshReport) -> Result<serde_json::Value, ClientError> {
        self.client().post(agent_routes::SSH, report).await
    }

    /// The owner's git SSH public key (control holds the private key and signs for us).
    pub async fn git_ssh_key(&self) -> Result<GitSshKey, ClientError> {
        self.client().get(agent_routes::GIT_SSH_KEY).await
    }

    /// A signature with the owner's git key over `data`: the SSH signature blob.
    pub async fn git_sign(&self, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let r: GitSignResponse = self
            .client()
            .post(
                agent_routes::GIT_SIGN,
                &GitSignRequest {
                    data: b64.encode(data),
                },
            )
            .await?;
        b64.decode(r.signature.as_bytes())
            .map_err(|e| ClientError::Decode {
                url: agent_routes::GIT_SIGN.to_string(),
                message: format!("the signature is not base64: {e}"),
            })
    }

    /// A short-lived, workspace-scoped credential for the `outpost` CLI inside the workspace.
    pub async fn user_token(&self) -> Result<WorkspaceCredential, ClientError> {
        self.client()
            .post(agent_routes::USER_TOKEN, &serde_json::json!({}))
            .await
    }

    fn client(&self) -> Client {
        self.inner.locked().client.clone()
    }

    pub fn credentials(&self) -> Credentials {
        self.inner.locked().creds.clone()
    }

    /// Uses new credentials from now on.
    pub fn swap(&self, creds: Credentials) -> anyhow::Result<()> {
        // New credentials, a new session store: a ticket resumes the certificate it was
        // issued under, which control would take for the old one.
        let tls = Self::tls_for(&creds)?;
        let client = Self::client_for(&self.url, &tls, self.local)?;
        *self.inner.locked() = Inner { creds, tls, client };
        Ok(())
    }

    /// Long poll: returns commands, or none after control's hold (~25 s).
    pub async fn poll(&self) -> Result<PollResponse, ClientError> {
        self.client().get(agent_routes::POLL).await
    }

    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.client().post(agent_routes::HEARTBEAT, req).await
    }

    pub async fn client_post_logs(
        &self,
        req: &AgentLogsRequest,
    ) -> Result<AgentLogsResponse, ClientError> {
        self.client().post(agent_routes::LOGS, req).await
    }

    pub async fn manifest(&self) -> Result<AgentManifest, ClientError> {
        self.client().get(agent_routes::MANIFEST).await
    }

    /// A new key and certificate for the same identity. Returns the new credentials (not yet
    /// swapped in).
    pub async fn renew(&self) -> anyhow::Result<Credentials> {
        let (key, csr) = new_csr()?;
        let r: RenewResponse = self
            .client()
            .post(agent_routes::RENEW, &RenewRequest { csr_pem: csr })
            .await?;
        let mut c = self.credentials();
        c.certificate_pem = r.certificate_pem;
        c.ca_pem = r.ca_pem;
        c.key_pem = key.serialize_pem();
        c.issued_at = now_ms();
        c.expires_at = r.expires_at;
        Ok(c)
    }
}
