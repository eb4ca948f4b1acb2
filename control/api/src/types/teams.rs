//! Organizations, groups and quotas (`/api/v1/organizations`, `/groups`, `/quotas`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateOrganizationRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z][a-z0-9_-]{0,31}$"))]
    pub username: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    pub id: String,
    pub name: String,
    pub organization: String,
    /// Cost units the group's members may have running together (summed over a user's groups);
    /// `None`: the group sets no budget.
    pub quota_budget: Option<i64>,
    /// `local`, or `oidc` (kept in step with the identity provider's groups claim).
    pub source: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    /// Default: `default`.
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub quota_budget: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    pub quota_budget: Option<i64>,
}

/// `PUT /api/v1/templates/{name}/groups`: only these groups' members may see and use the
/// template (empty: everyone in its organization).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetTemplateGroupsRequest {
    pub groups: Vec<String>,
}

/// Server-wide quota settings (owners).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// The most workspaces one user may have; `None`: no limit.
    #[serde(default)]
    pub workspaces_per_user: Option<i64>,
}

/// What a user has and may have.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaUsage {
    pub workspaces: i64,
    pub workspaces_limit: Option<i64>,
    /// Cost units of the user's running (or starting) workspaces.
    pub cost_in_use: i64,
    /// The sum of the budgets of the user's groups; `None`: no group sets one (no limit).
    pub budget: Option<i64>,
}

/// `GET /api/v1/replicas` (owners, auditors): the control replicas serving this database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Replica {
    pub id: String,
    pub hostname: String,
    pub api_url: String,
    pub agent_url: String,
    /// Where the other replicas reach it.
    pub replica_url: String,
    pub version: String,
    /// Runs what must happen once: the lease reaper, the scheduler, retention.
    pub leader: bool,
    pub started_at: i64,
    pub heartbeat_at: i64,
}
