//! The agent API (`/agent/v1`): bootstrap, poll, heartbeat, renewal, manifest, logs; SSH keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// What a start build hands to its agent (env `OUTPOST_BOOTSTRAP` or a file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BootstrapBundle {
    pub agent_url: String,
    pub token: String,
    /// base64 SHA-256 of the CA certificates' SubjectPublicKeyInfo; any one may sign the server.
    pub ca_pins: Vec<String>,
    pub heartbeat_secs: u64,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    pub token: String,
    pub csr_pem: String,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BootstrapResponse {
    pub workspace_id: String,
    pub agent_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollResponse {
    pub commands: Vec<AgentCommand>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentCommand {
    /// Run shutdown work and exit cleanly.
    Stop,
    /// The owner's SSH keys changed: fetch the manifest again.
    #[serde(rename = "refresh_keys")]
    RefreshKeys,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lifecycle: Option<AgentLifecycle>,
    pub stats: AgentStats,
}

/// What the agent measures (sysinfo) and counts, sent with every heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AgentStats {
    /// Seconds since the agent process started.
    pub agent_uptime_secs: u64,
    /// Seconds since the machine booted.
    pub system_uptime_secs: u64,
    /// Whole-machine CPU use since the previous heartbeat, 0-100 per core summed over cores / cores.
    pub cpu_percent: f32,
    pub cpu_cores: u32,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    /// The volume holding the workspace home.
    pub home_disk_used_bytes: u64,
    pub home_disk_total_bytes: u64,
    /// Agent process memory.
    pub agent_rss_bytes: u64,
    pub sessions: SessionCounts,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Listening TCP ports in the workspace (/proc/net/tcp, tcp6), the agent's own excepted.
    pub ports: Vec<ListeningPort>,
    /// The template apps' health.
    pub apps: Vec<AppStatus>,
    /// Script runs since the agent started, by how they ended.
    pub scripts: ScriptCounts,
    /// The workspace user's home directory, as seen inside the workspace (editors open it).
    pub home_dir: String,
}

/// Script runs (start, stop, cron, dotfiles) since the agent started, by outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ScriptCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
}

/// Live sessions by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct SessionCounts {
    pub ssh: u32,
    pub vscode: u32,
    pub jetbrains: u32,
    pub pty: u32,
    pub port_forward: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// The CA pins the agent should trust from now on (they change when the CA rotates).
    pub ca_pins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddSshKeyRequest {
    pub name: String,
    /// One OpenSSH public key line: `TYPE BASE64 [COMMENT]`.
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshKey {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

/// A short-lived credential for the `outpost` CLI inside a workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceCredential {
    pub url: String,
    pub token: String,
    pub expires_at: i64,
}

/// A user's git SSH key: control holds it; workspaces sign with it through the agent, which
/// asks control for each signature ([`GitSignRequest`]): the private key never leaves control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitSshKey {
    pub public_key: String,
    /// Never sent any more; kept so an older client still parses the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// An ssh-agent sign request for the owner's git key, forwarded by the agent to control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GitSignRequest {
    /// The data to sign, base64 (at most [`GIT_SIGN_MAX`] bytes decoded).
    pub data: String,
}

/// The largest payload control signs (an SSH userauth request is a few hundred bytes).
pub const GIT_SIGN_MAX: usize = 16 * 1024;

/// The SSH signature blob (`string algorithm, string signature`), base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitSignResponse {
    pub signature: String,
}

/// The agent's SSH server, reported to control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SshReport {
    pub host_key: String,
    pub listen: Option<String>,
}

/// What an agent may know about its own workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentManifest {
    pub workspace_id: String,
    pub workspace_name: String,
    pub owner: String,
    pub agent_id: String,
    pub env: BTreeMap<String, String>,
    pub heartbeat_secs: u64,
    pub ca_pins: Vec<String>,
    /// The owner's SSH public keys: the only keys the agent's SSH server accepts.
    pub authorized_keys: Vec<String>,
    /// Keys accepted only on connections that come through control's relay, where control
    /// checked and audited the connection: the server owners' keys, when the server lets owners
    /// into other users' workspaces (`--allow-owner-workspace-access`). Never on the direct
    /// listener.
    #[serde(default)]
    pub relay_keys: Vec<String>,
    /// Where the agent's SSH server listens directly, if anywhere (`[agent] ssh_listen`).
    pub ssh_listen: Option<String>,
    #[serde(default)]
    pub scripts: Vec<ScriptSpec>,
    /// The workspace parameter `dotfiles_uri`, when set.
    #[serde(default)]
    pub dotfiles_uri: Option<String>,
    /// A web terminal session nobody is attached to ends after this long.
    #[serde(default = "default_terminal_idle")]
    pub terminal_idle_timeout_secs: u64,
    /// An SSH connection that has not logged in after this long is closed.
    #[serde(default = "default_ssh_login_grace_secs")]
    pub ssh_login_grace_secs: u64,
    /// The template's apps, whose health the agent checks.
    #[serde(default)]
    pub apps: Vec<AppSpec>,
}

fn default_terminal_idle() -> u64 {
    300
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentLogLine {
    pub source: String,
    pub level: String,
    pub output: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentLogsRequest {
    pub lines: Vec<AgentLogLine>,
    /// The shutdown lifecycle (shutting_down, off, shutdown_error, shutdown_timeout): a stopping
    /// agent is already revoked for heartbeats, so it reports the end of its stop scripts here.
    #[serde(default)]
    pub lifecycle: Option<AgentLifecycle>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentLogsResponse {
    /// The agent's log cap is reached: further lines are dropped, stop sending them.
    pub over_limit: bool,
}

/// One audit event (no secrets in it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEventView {
    pub id: i64,
    pub created_at: i64,
    pub action: String,
    pub outcome: String,
    pub actor: String,
    /// What the event acted on: `user:NAME`, `template:NAME`, `workspace:OWNER/NAME`,
    /// `token:ID`, `key:FINGERPRINT`, ...
    #[serde(default)]
    pub target: Option<String>,
    pub workspace_id: Option<String>,
    pub agent_id: Option<String>,
    pub remote_addr: Option<String>,
    pub details: String,
}

fn default_ssh_login_grace_secs() -> u64 {
    30
}
