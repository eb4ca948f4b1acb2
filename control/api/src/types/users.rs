//! Users, sign-in and API tokens (`/api/v1/setup`, `/login`, `/users`, `/tokens`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub setup_token: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub token: String,
    pub token_id: String,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: String,
    pub username: String,
    /// Holds the `owner` role (every right).
    pub admin: bool,
    /// Roles beyond member's (none: a member).
    #[serde(default)]
    pub roles: Vec<Role>,
    pub created_at: i64,
    /// An admin suspended the account: no sign-in, no token, no running workspace.
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z][a-z0-9_-]{0,31}$"))]
    pub username: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256))]
    pub password: String,
    /// Make the user an owner (the same as `roles: ["owner"]`).
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// What a user may do beyond using their own workspaces (a member, with no role).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including granting `owner`.
    Owner,
    /// Users: create, suspend, reinstate, delete, passwords, roles (not owners).
    UserAdmin,
    /// Templates and their schedules.
    TemplateAdmin,
    /// Reads the audit log, users and every workspace's status; changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Owner,
        Role::UserAdmin,
        Role::TemplateAdmin,
        Role::Auditor,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::UserAdmin => "user-admin",
            Role::TemplateAdmin => "template-admin",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s.trim())
    }
}

/// `PUT /api/v1/users/{username}/roles`: the user's roles from now on (empty: a member).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub name: String,
    /// Lifetime in seconds; the server's default (30 days) when absent.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenResponse {
    pub token: String,
    pub info: TokenInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
}

/// `PUT /api/v1/users/me/password` (your own: `current_password` required) and
/// `PUT /api/v1/users/{username}/password` (admins: no current password).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[serde(default)]
    pub current_password: Option<String>,
    pub new_password: String,
}

/// `GET|PUT /api/v1/users/me/dotfiles`: the account's dotfiles repository (`None`: none), used
/// by every template with a `dotfiles_uri` parameter when a workspace is given no value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DotfilesSetting {
    #[serde(default)]
    pub dotfiles_uri: Option<String>,
}

/// `DELETE /api/v1/users/{username}` and `GET /api/v1/users/{username}/deletion`: a deleted
/// user (renamed `deleted-ID`, so the name is free at once) and their workspaces still being
/// deleted (none left: done).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserDeletion {
    pub user: User,
    /// The name the user had.
    pub former_username: String,
    pub workspaces: Vec<DeletingWorkspace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeletingWorkspace {
    pub name: String,
    pub status: super::WorkspaceStatus,
    /// Its latest build is the delete (not yet queued: a build it had was being canceled).
    pub deleting: bool,
    /// The delete build's error, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}
