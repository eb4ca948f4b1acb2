//! Templates and what they say: the manifest, parameters, scripts, apps, agent settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::TemplateSchedule;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushTemplateRequest {
    pub name: String,
    /// Relative path -> UTF-8 file content. Must contain `template.toml`.
    pub files: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub activate: bool,
    /// The organization a new template belongs to (default: `default`); an existing
    /// template keeps its own.
    #[serde(default)]
    pub organization: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Template {
    pub id: String,
    pub name: String,
    pub description: String,
    pub active_version: Option<i64>,
    pub active_version_id: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub schedule: TemplateSchedule,
    #[serde(default)]
    pub organization: String,
    /// Only these groups' members see and use it (empty: everyone in the organization).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateVersion {
    pub id: String,
    pub template_id: String,
    pub template_name: String,
    pub version: i64,
    pub active: bool,
    pub manifest: TemplateManifest,
    pub files: Vec<String>,
    pub created_at: i64,
    /// Who pushed it (none for the built-in templates).
    #[serde(default)]
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateDetail {
    pub template: Template,
    pub versions: Vec<TemplateVersion>,
    /// Workspaces whose latest build used an older version than the active one: everyone's for
    /// those who may see every workspace, else the caller's own.
    #[serde(default)]
    pub outdated_workspaces: Vec<OutdatedWorkspace>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutdatedWorkspace {
    pub owner: String,
    pub name: String,
    /// The version its latest build used.
    pub version: i64,
}

/// The validated, normalised form of a `template.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateManifest {
    pub description: String,
    pub provisioner: String,
    /// The `[provisioner]` fields beyond `type`; values may hold `${param.NAME}` placeholders,
    /// filled in with the workspace's parameter values at each build.
    #[serde(default)]
    pub provisioner_settings: ProvisionerSettings,
    pub agent: AgentSettings,
    pub parameters: Vec<ParameterSpec>,
    #[serde(default)]
    pub scripts: Vec<ScriptSpec>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// Quota cost units a running workspace of this version uses.
    #[serde(default)]
    pub cost: i64,
}

/// Who may open an app through control's proxy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthcheckSpec {
    /// An http:// URL inside the workspace (e.g. `http://127.0.0.1:8000/`).
    pub url: String,
    pub interval_secs: u64,
    /// Consecutive failures before the app counts as unhealthy.
    pub threshold: u32,
}

/// An app's health as the agent sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppStatus {
    pub slug: String,
    pub health: AppHealth,
}

/// A TCP port something listens on inside the workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListeningPort {
    pub port: u16,
    /// The listening program's name, when the agent can see it.
    #[serde(default)]
    pub process: Option<String>,
}

/// A script the agent runs: on start (lifecycle starting -> ready), on stop, or both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSettings {
    pub env: BTreeMap<String, String>,
    pub connection_timeout_secs: u64,
    /// A direct listen address for the agent's SSH server (e.g. `127.0.0.1:0`).
    #[serde(default)]
    pub ssh_listen: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    String,
    Number,
    Bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// `[provisioner]` settings. `docker` uses all of them; `local` takes none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionerSettings {
    /// The container image (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The workspace user's name inside the container (docker; default `dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The workspace user's uid and gid inside the container (docker; default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// CPU limit, in CPUs (`"1.5"`), or a placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Memory limit (`"512m"`, `"2g"`, bytes), or a placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Tags a provisioner daemon must carry (through its key) to run this template's jobs;
    /// none: the server's own daemons and untagged keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Tags as one canonical string (`k=v` lines, sorted): how jobs and keys are matched.
pub fn canonical_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}
