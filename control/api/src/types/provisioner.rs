//! The provisioner daemons' API (`/api/v1/provisioner`): jobs, updates, completion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcquireJobRequest {
    pub daemon_id: String,
    pub provisioners: Vec<String>,
    /// The daemon's version, shown by `outpost provisioners list`.
    #[serde(default)]
    pub version: Option<String>,
}

/// The most tags a provisioner key (or a template) may carry.
pub const MAX_PROVISIONER_TAGS: usize = 6;

/// Whether `s` may be a provisioner tag's key or value: 1-64 of `A-Za-z0-9_.-`.
pub fn valid_tag_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `POST /api/v1/provisioner-keys` (owners, template admins): a key for external daemons,
/// scoped to an organization and/or some templates, with the tags its daemons carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateProvisionerKey {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9_.-]{1,64}$"))]
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Only jobs of templates in this organization.
    #[serde(default)]
    pub organization: Option<String>,
    /// Only jobs of these templates (by name).
    #[serde(default)]
    pub templates: Vec<String>,
}

/// A provisioner key (its secret is shown once, at creation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionerKey {
    pub id: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub organization: Option<String>,
    pub templates: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Only in the answer to its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `GET /api/v1/provisioners`: daemons seen in the last minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionerDaemon {
    pub id: String,
    /// The key it authenticates with (`built-in` for the server's own daemons).
    pub key: String,
    pub tags: BTreeMap<String, String>,
    pub version: String,
    pub last_seen_at: i64,
    /// The job it holds now, if any.
    pub current_job: Option<String>,
}

/// Everything a provisioner needs to run one build.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionerJob {
    pub job_id: String,
    pub build_id: String,
    pub transition: Transition,
    pub workspace_id: String,
    pub workspace_name: String,
    pub owner: String,
    /// The template's name (labels on what the provisioner makes).
    #[serde(default)]
    pub template: String,
    pub manifest: TemplateManifest,
    pub parameters: BTreeMap<String, String>,
    /// Present for start builds.
    pub bootstrap: Option<BootstrapBundle>,
    /// What the provisioner reported as state for the previous build of this workspace.
    pub state: serde_json::Value,
    pub lease_secs: u64,
    /// The template version's files (`template.toml` included): delivered read-only into the
    /// workspace on every start.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobUpdateRequest {
    pub daemon_id: String,
    #[serde(default)]
    pub logs: Vec<NewLogLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewLogLine {
    pub stage: String,
    pub level: String,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobUpdateResponse {
    /// The build was canceled: stop work and complete the job as canceled.
    pub canceled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteJobRequest {
    pub daemon_id: String,
    pub outcome: JobOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
