//! The provisioner daemons' API (`/api/v1/provisioner`): jobs, updates, completion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

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
