//! Wire types for `/api/v1` (users, templates, workspaces, builds, provisioners) and `/agent/v1`.
//!
//! Request types reject unknown fields. Timestamps are Unix milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Error body: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

// ---------------------------------------------------------------- users and tokens

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub setup_token: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub token_id: String,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub admin: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    /// Lifetime in seconds; the server's default (30 days) when absent.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    pub token: String,
    pub info: TokenInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
}

// ---------------------------------------------------------------- templates

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTemplateRequest {
    pub name: String,
    /// Relative path -> UTF-8 file content. Must contain `template.toml`.
    pub files: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub activate: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub description: String,
    pub active_version: Option<i64>,
    pub active_version_id: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub id: String,
    pub template_id: String,
    pub template_name: String,
    pub version: i64,
    pub active: bool,
    pub manifest: TemplateManifest,
    pub files: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateDetail {
    pub template: Template,
    pub versions: Vec<TemplateVersion>,
}

/// The validated, normalised form of a `template.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TemplateManifest {
    pub description: String,
    pub provisioner: String,
    pub agent: AgentSettings,
    pub parameters: Vec<ParameterSpec>,
    #[serde(default)]
    pub scripts: Vec<ScriptSpec>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
}

/// Who may open an app through control's proxy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShareLevel {
    /// The workspace's owner only.
    Owner,
    /// Any signed-in user.
    Authenticated,
    /// Anyone, signed in or not.
    Public,
}

impl ShareLevel {
    pub fn parse(s: &str) -> Option<ShareLevel> {
        match s {
            "owner" => Some(ShareLevel::Owner),
            "authenticated" => Some(ShareLevel::Authenticated),
            "public" => Some(ShareLevel::Public),
            _ => None,
        }
    }
}

/// A web app inside the workspace, opened at `/@OWNER/WS/apps/SLUG/` (or an external URL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppSpec {
    pub slug: String,
    pub display_name: String,
    /// The port inside the workspace the proxy connects to.
    #[serde(default)]
    pub port: Option<u16>,
    /// Instead of a port: a URL the dashboard links to as it is.
    #[serde(default)]
    pub url: Option<String>,
    pub share: ShareLevel,
    #[serde(default)]
    pub healthcheck: Option<HealthcheckSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthcheckSpec {
    /// An http:// URL inside the workspace (e.g. `http://127.0.0.1:8000/`).
    pub url: String,
    pub interval_secs: u64,
    /// Consecutive failures before the app counts as unhealthy.
    pub threshold: u32,
}

/// An app's health as the agent sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AppHealth {
    /// No health check configured.
    Disabled,
    /// Checked, but not healthy yet (and not failed `threshold` times in a row).
    Initializing,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for AppHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppHealth::Disabled => "disabled",
            AppHealth::Initializing => "initializing",
            AppHealth::Healthy => "healthy",
            AppHealth::Unhealthy => "unhealthy",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppStatus {
    pub slug: String,
    pub health: AppHealth,
}

/// A TCP port something listens on inside the workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListeningPort {
    pub port: u16,
    /// The listening program's name, when the agent can see it.
    #[serde(default)]
    pub process: Option<String>,
}

/// A script the agent runs: on start (lifecycle starting -> ready), on stop, or both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScriptSpec {
    /// Display name, and the source of its log lines.
    pub name: String,
    pub script: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    /// 0: no timeout.
    pub timeout_secs: u64,
    /// New sessions wait until this start script has finished.
    pub blocks_login: bool,
    /// A schedule with a seconds field (`SEC MIN HOUR DOM MON DOW`, UTC): run it on that
    /// schedule once the start scripts have finished.
    #[serde(default)]
    pub cron: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentSettings {
    pub env: BTreeMap<String, String>,
    pub connection_timeout_secs: u64,
    /// A direct listen address for the agent's SSH server (e.g. `127.0.0.1:0`).
    #[serde(default)]
    pub ssh_listen: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    String,
    Number,
    Bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParameterSpec {
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: ParameterType,
    /// Default as its string form; a parameter without a default is required.
    pub default: Option<String>,
    pub mutable: bool,
    pub regex: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub options: Vec<String>,
}

// ---------------------------------------------------------------- workspaces and builds

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceRequest {
    pub name: String,
    pub template: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Start,
    Stop,
    Delete,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Stop => "stop",
            Transition::Delete => "delete",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(Transition::Start),
            "stop" => Some(Transition::Stop),
            "delete" => Some(Transition::Delete),
            _ => None,
        }
    }
}

/// What a user asks of a workspace. `restart` is stop then start; `update` is stop then start on
/// the template's active version (or just a start when the workspace is not running).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAction {
    Start,
    Stop,
    Restart,
    Update,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub action: WorkspaceAction,
    /// New values for mutable parameters (start, restart and update only).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceling,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceling => "canceling",
            JobStatus::Canceled => "canceled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "canceling" => JobStatus::Canceling,
            "canceled" => JobStatus::Canceled,
            _ => return None,
        })
    }
    /// The job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceStatus {
    Pending,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    Canceling,
    Canceled,
    Deleting,
    Deleted,
}

impl WorkspaceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceStatus::Pending => "pending",
            WorkspaceStatus::Starting => "starting",
            WorkspaceStatus::Running => "running",
            WorkspaceStatus::Stopping => "stopping",
            WorkspaceStatus::Stopped => "stopped",
            WorkspaceStatus::Failed => "failed",
            WorkspaceStatus::Canceling => "canceling",
            WorkspaceStatus::Canceled => "canceled",
            WorkspaceStatus::Deleting => "deleting",
            WorkspaceStatus::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Connecting,
    Connected,
    /// Heard from recently, but its relay tunnel to control is not (yet) back: control
    /// restarted or the connection dropped. SSH and terminals wait for it.
    Reconnecting,
    Disconnected,
    Timeout,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AgentLifecycle {
    Created,
    Starting,
    Ready,
    StartTimeout,
    StartError,
    ShuttingDown,
    ShutdownTimeout,
    ShutdownError,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Build {
    pub id: String,
    pub workspace_id: String,
    pub number: i64,
    pub transition: Transition,
    pub template_version_id: String,
    pub template_version: i64,
    pub status: JobStatus,
    pub job_id: String,
    pub error: Option<String>,
    /// A start build follows when this (stop) build succeeds: restart and update.
    pub then_start: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub kind: String,
    pub persistent: bool,
    pub details: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub status: AgentStatus,
    /// The agent's SSH host key (OpenSSH public key format), once reported.
    pub ssh_host_key: Option<String>,
    /// The agent's direct SSH listen address, when it has one.
    pub ssh_addr: Option<String>,
    pub cert_expires_at: Option<i64>,
    pub stats: Option<AgentStats>,
    pub lifecycle: AgentLifecycle,
    pub first_connected_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    /// Why the workspace is unhealthy; empty when healthy.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub template: String,
    pub template_version: i64,
    pub outdated: bool,
    pub status: WorkspaceStatus,
    pub health: Health,
    pub parameters: BTreeMap<String, String>,
    pub latest_build: Build,
    pub agent: Option<AgentInfo>,
    pub resources: Vec<Resource>,
    pub created_at: i64,
    /// The template's apps, with where to open them and their health.
    #[serde(default)]
    pub apps: Vec<WorkspaceApp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceApp {
    pub slug: String,
    pub display_name: String,
    /// `/@OWNER/WS/apps/SLUG/` for a port inside the workspace, or the template's external URL.
    pub url: String,
    pub share: ShareLevel,
    pub health: AppHealth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub id: i64,
    pub created_at: i64,
    pub stage: String,
    pub level: String,
    pub output: String,
}

// ---------------------------------------------------------------- provisioner daemons

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireJobRequest {
    pub daemon_id: String,
    pub provisioners: Vec<String>,
}

/// Everything a provisioner needs to run one build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionerJob {
    pub job_id: String,
    pub build_id: String,
    pub transition: Transition,
    pub workspace_id: String,
    pub workspace_name: String,
    pub owner: String,
    pub manifest: TemplateManifest,
    pub parameters: BTreeMap<String, String>,
    /// Present for start builds.
    pub bootstrap: Option<BootstrapBundle>,
    /// What the provisioner reported as state for the previous build of this workspace.
    pub state: serde_json::Value,
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobUpdateRequest {
    pub daemon_id: String,
    #[serde(default)]
    pub logs: Vec<NewLogLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLogLine {
    pub stage: String,
    pub level: String,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobUpdateResponse {
    /// The build was canceled: stop work and complete the job as canceled.
    pub canceled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteJobRequest {
    pub daemon_id: String,
    pub outcome: JobOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum JobOutcome {
    Succeeded {
        resources: Vec<Resource>,
        state: serde_json::Value,
    },
    Failed {
        error: String,
    },
    Canceled,
}

// ---------------------------------------------------------------- agent API

/// What a start build hands to its agent (env `OUTPOST_BOOTSTRAP` or a file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapBundle {
    pub agent_url: String,
    pub token: String,
    /// base64 SHA-256 of the CA certificates' SubjectPublicKeyInfo; any one may sign the server.
    pub ca_pins: Vec<String>,
    pub heartbeat_secs: u64,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    pub token: String,
    pub csr_pem: String,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapResponse {
    pub workspace_id: String,
    pub agent_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollResponse {
    pub commands: Vec<AgentCommand>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentCommand {
    /// Run shutdown work and exit cleanly.
    Stop,
    /// The owner's SSH keys changed: fetch the manifest again.
    #[serde(rename = "refresh_keys")]
    RefreshKeys,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lifecycle: Option<AgentLifecycle>,
    pub stats: AgentStats,
}

/// What the agent measures (sysinfo) and counts, sent with every heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
}

/// Live sessions by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionCounts {
    pub ssh: u32,
    pub vscode: u32,
    pub jetbrains: u32,
    pub pty: u32,
    pub port_forward: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The CA pins the agent should trust from now on (they change when the CA rotates).
    pub ca_pins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSshKeyRequest {
    pub name: String,
    /// One OpenSSH public key line: `TYPE BASE64 [COMMENT]`.
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

/// A short-lived credential for the `outpost` CLI inside a workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceCredential {
    pub url: String,
    pub token: String,
    pub expires_at: i64,
}

/// A user's git SSH key: control holds it; workspaces sign with it through the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitSshKey {
    pub public_key: String,
    /// Only on the agent API, to that user's workspace agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// The agent's SSH server, reported to control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshReport {
    pub host_key: String,
    pub listen: Option<String>,
}

/// What an agent may know about its own workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The template's apps, whose health the agent checks.
    #[serde(default)]
    pub apps: Vec<AppSpec>,
}

fn default_terminal_idle() -> u64 {
    300
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLogLine {
    pub source: String,
    pub level: String,
    pub output: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLogsRequest {
    pub lines: Vec<AgentLogLine>,
    /// The shutdown lifecycle (shutting_down, off, shutdown_error, shutdown_timeout): a stopping
    /// agent is already revoked for heartbeats, so it reports the end of its stop scripts here.
    #[serde(default)]
    pub lifecycle: Option<AgentLifecycle>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentLogsResponse {
    /// The agent's log cap is reached: further lines are dropped, stop sending them.
    pub over_limit: bool,
}

/// One audit event (no secrets in it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEventView {
    pub id: i64,
    pub created_at: i64,
    pub action: String,
    pub outcome: String,
    pub actor: String,
    pub workspace_id: Option<String>,
    pub agent_id: Option<String>,
    pub remote_addr: Option<String>,
    pub details: String,
}
