//! Row types and the SELECTs that produce them.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Result, StoreError};

fn flag(r: &AnyRow, col: &str) -> Result<bool> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub admin: bool,
    pub created_at: i64,
}

impl UserRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(UserRow {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            password_hash: r.try_get("password_hash")?,
            admin: flag(r, "is_admin")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// `workspace:<id>` for the short-lived tokens agents hand to the CLI inside a workspace.
    pub scope: Option<String>,
}

impl TokenRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(TokenRow {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            name: r.try_get("name")?,
            secret_hash: r.try_get("secret_hash")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            last_used_at: r.try_get("last_used_at")?,
            revoked_at: r.try_get("revoked_at")?,
            scope: r.try_get("scope")?,
        })
    }
}

pub(super) const TEMPLATE_SELECT: &str =
    "SELECT t.id, t.name, t.description, t.active_version_id, t.created_at, v.version AS active_version \
     FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id";

#[derive(Debug, Clone)]
pub struct TemplateRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub active_version_id: Option<String>,
    pub active_version: Option<i64>,
    pub created_at: i64,
}

impl TemplateRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(TemplateRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            active_version_id: r.try_get("active_version_id")?,
            active_version: r.try_get("active_version")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

pub(super) const VERSION_SELECT: &str =
    "SELECT v.id, v.template_id, v.version, v.manifest, v.files, v.created_at, t.name AS template_name, \
            t.active_version_id AS active_version_id \
     FROM template_versions v JOIN templates t ON t.id = v.template_id";

#[derive(Debug, Clone)]
pub struct TemplateVersionRow {
    pub id: String,
    pub template_id: String,
    pub template_name: String,
    pub version: i64,
    pub active: bool,
    pub manifest: String,
    pub files: String,
    pub created_at: i64,
}

impl TemplateVersionRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        let id: String = r.try_get("id")?;
        let active: Option<String> = r.try_get("active_version_id")?;
        Ok(TemplateVersionRow {
            active: active.as_deref() == Some(id.as_str()),
            id,
            template_id: r.try_get("template_id")?,
            template_name: r.try_get("template_name")?,
            version: r.try_get("version")?,
            manifest: r.try_get("manifest")?,
            files: r.try_get("files")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

pub(super) const BUILD_SELECT: &str =
    "SELECT b.id, b.workspace_id, b.number, b.transition, b.template_version_id, b.then_start, b.created_at, \
            v.version AS template_version, j.id AS job_id, j.status AS job_status, j.error AS job_error, \
            j.started_at AS job_started_at, j.completed_at AS job_completed_at, j.provisioner AS provisioner \
     FROM workspace_builds b JOIN provisioner_jobs j ON j.build_id = b.id \
     JOIN template_versions v ON v.id = b.template_version_id";

#[derive(Debug, Clone)]
pub struct BuildRow {
    pub id: String,
    pub workspace_id: String,
    pub number: i64,
    pub transition: String,
    pub template_version_id: String,
    pub template_version: i64,
    pub then_start: bool,
    pub created_at: i64,
    pub job_id: String,
    pub job_status: String,
    pub job_error: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub provisioner: String,
}

impl BuildRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(BuildRow {
            id: r.try_get("id")?,
            workspace_id: r.try_get("workspace_id")?,
            number: r.try_get("number")?,
            transition: r.try_get("transition")?,
            template_version_id: r.try_get("template_version_id")?,
            template_version: r.try_get("template_version")?,
            then_start: flag(r, "then_start")?,
            created_at: r.try_get("created_at")?,
            job_id: r.try_get("job_id")?,
            job_status: r.try_get("job_status")?,
            job_error: r.try_get("job_error")?,
            started_at: r.try_get("job_started_at")?,
            completed_at: r.try_get("job_completed_at")?,
            provisioner: r.try_get("provisioner")?,
        })
    }
}

/// A workspace with its owner, template and the ids of its latest build and newest agent.
pub(super) const WORKSPACE_SELECT: &str =
    "SELECT w.id, w.owner_id, w.name, w.template_id, w.parameters, w.provisioner_state, w.deleted, w.created_at, \
            u.username AS owner_name, t.name AS template_name, t.active_version_id AS active_version_id, \
            (SELECT b.id FROM workspace_builds b WHERE b.workspace_id = w.id ORDER BY b.number DESC LIMIT 1) AS latest_build_id, \
            (SELECT a.id FROM agents a WHERE a.workspace_id = w.id ORDER BY a.created_at DESC LIMIT 1) AS latest_agent_id \
     FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id";

#[derive(Debug, Clone)]
pub struct WorkspaceRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub name: String,
    pub template_id: String,
    pub template_name: String,
    pub active_version_id: Option<String>,
    pub parameters: String,
    pub provisioner_state: String,
    pub deleted: bool,
    pub created_at: i64,
    pub latest_build_id: String,
    pub latest_agent_id: Option<String>,
}

impl WorkspaceRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        let latest: Option<String> = r.try_get("latest_build_id")?;
        Ok(WorkspaceRow {
            id: r.try_get("id")?,
            owner_id: r.try_get("owner_id")?,
            owner_name: r.try_get("owner_name")?,
            name: r.try_get("name")?,
            template_id: r.try_get("template_id")?,
            template_name: r.try_get("template_name")?,
            active_version_id: r.try_get("active_version_id")?,
            parameters: r.try_get("parameters")?,
            provisioner_state: r.try_get("provisioner_state")?,
            deleted: flag(r, "deleted")?,
            created_at: r.try_get("created_at")?,
            latest_build_id: latest
                .ok_or_else(|| StoreError::Corrupt("workspace without a build".into()))?,
            latest_agent_id: r.try_get("latest_agent_id")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub build_id: String,
    pub status: String,
    pub daemon_id: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub error: Option<String>,
}

impl JobRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(JobRow {
            id: r.try_get("id")?,
            build_id: r.try_get("build_id")?,
            status: r.try_get("status")?,
            daemon_id: r.try_get("daemon_id")?,
            attempts: r.try_get("attempts")?,
            cancel_requested: flag(r, "cancel_requested")?,
            error: r.try_get("error")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct LogRow {
    pub id: i64,
    pub created_at: i64,
    pub stage: String,
    pub level: String,
    pub output: String,
}

impl LogRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(LogRow {
            id: r.try_get("id")?,
            created_at: r.try_get("created_at")?,
            stage: r.try_get("stage")?,
            level: r.try_get("level")?,
            output: r.try_get("output")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub name: String,
    pub kind: String,
    pub persistent: bool,
    pub details: String,
}

impl ResourceRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(ResourceRow {
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            persistent: flag(r, "persistent")?,
            details: r.try_get("details")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: String,
    pub workspace_id: String,
    pub build_id: String,
    pub created_at: i64,
    pub first_connected_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub lifecycle: String,
    pub version: Option<String>,
    pub cert_serial: Option<String>,
    pub cert_expires_at: Option<i64>,
    pub stats: Option<String>,
    pub revoked_at: Option<i64>,
    pub ssh_host_key: Option<String>,
    pub ssh_addr: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SshKeyRow {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

impl AgentRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(AgentRow {
            id: r.try_get("id")?,
            workspace_id: r.try_get("workspace_id")?,
            build_id: r.try_get("build_id")?,
            created_at: r.try_get("created_at")?,
            first_connected_at: r.try_get("first_connected_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            lifecycle: r.try_get("lifecycle")?,
            version: r.try_get("version")?,
            cert_serial: r.try_get("cert_serial")?,
            cert_expires_at: r.try_get("cert_expires_at")?,
            stats: r.try_get("stats")?,
            revoked_at: r.try_get("revoked_at")?,
            ssh_host_key: r.try_get("ssh_host_key")?,
            ssh_addr: r.try_get("ssh_addr")?,
        })
    }
}
