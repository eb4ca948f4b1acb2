//! Workspaces, builds, their statuses and logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    pub template: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAction {
    Start,
    Stop,
    Restart,
    Update,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub action: WorkspaceAction,
    /// New values for mutable parameters (start, restart and update only).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Who or what asked for it: `initiator` (a person) or the scheduler's reason
    /// (`BUILD_REASONS`).
    #[serde(default = "initiator")]
    pub reason: String,
    /// The username of the person who asked for it, when a person did.
    #[serde(default)]
    pub initiator: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resource {
    pub name: String,
    pub kind: String,
    pub persistent: bool,
    pub details: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub healthy: bool,
    /// Why the workspace is unhealthy; empty when healthy.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// How the workspace is kept apart from others and from the server, as its provisioner
    /// reported it: `container`, `user NAME (uid N)`, or `none` (runs as the server's user).
    #[serde(default)]
    pub isolation: Option<String>,
    /// Autostart, autostop, dormancy and what the scheduler does next.
    #[serde(default)]
    pub schedule: WorkspaceSchedule,
}

fn initiator() -> String {
    "initiator".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceApp {
    pub slug: String,
    pub display_name: String,
    /// `/@OWNER/WS/apps/SLUG/` for a port inside the workspace, or the template's external URL.
    pub url: String,
    pub share: ShareLevel,
    pub health: AppHealth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub id: i64,
    pub created_at: i64,
    pub stage: String,
    pub level: String,
    pub output: String,
}

/// `GET /api/v1/workspaces/{name}/stats`: one sample of the workspace's statistics (at most one
/// a minute, from its agent's heartbeats; the last hour is kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsSample {
    pub at: i64,
    pub cpu_percent: f64,
    pub cpu_cores: i64,
    pub mem_used_bytes: i64,
    pub mem_total_bytes: i64,
    pub home_disk_used_bytes: i64,
    pub home_disk_total_bytes: i64,
    pub load1: f64,
}
