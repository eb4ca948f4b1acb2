//! Who may do what: one table of the rights each role grants, and one check every gated route
//! makes. A member (no role) uses their own workspaces, keys and tokens; what reaches beyond
//! that is a right here. A workspace credential has no right at all, whatever its user's roles.

use outpost_api::Role;

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};

/// A right beyond one's own workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Create users, suspend, reinstate and delete them, set their passwords, change their
    /// roles (not `owner`: acting on an owner takes [`Right::GrantOwner`]).
    ManageUsers,
    /// List users.
    ReadUsers,
    /// Push templates, change their schedules.
    ManageTemplates,
    /// Read the audit log.
    ReadAudit,
    /// See every workspace, its builds and their logs.
    ReadAllWorkspaces,
    /// Start, stop, update, delete anyone's workspace and change its schedule (not reach into
    /// it: SSH, terminals, ports and apps stay their owner's).
    ManageAllWorkspaces,
    /// Grant or take the `owner` role.
    GrantOwner,
    /// Make, list and revoke provisioner keys; list the daemons.
    ManageProvisioners,
    /// Get into other users' workspaces: SSH, terminals, ports, apps. Only when the server
    /// runs with `--allow-owner-workspace-access`, and every connection is audited.
    ConnectAllWorkspaces,
}

impl Right {
    fn what(self) -> &'static str {
        match self {
            Right::ManageUsers => "manage users",
            Right::ReadUsers => "list users",
            Right::ManageTemplates => "change templates",
            Right::ReadAudit => "read the audit log",
            Right::ReadAllWorkspaces => "see other users' workspaces",
            Right::ManageAllWorkspaces => "act on other users' workspaces",
            Right::GrantOwner => "grant or take the owner role",
            Right::ConnectAllWorkspaces => "connect to other users' workspaces",
            Right::ManageProvisioners => "manage provisioner keys",
        }
    }
}

/// The table: what each role grants. `owner` has every right.
pub const GRANTS: &[(Role, &[Right])] = &[
    (
        Role::Owner,
        &[
            Right::ManageUsers,
            Right::ReadUsers,
            Right::ManageTemplates,
            Right::ReadAudit,
            Right::ReadAllWorkspaces,
            Right::ManageAllWorkspaces,
            Right::GrantOwner,
            Right::ConnectAllWorkspaces,
            Right::ManageProvisioners,
        ],
    ),
    (Role::UserAdmin, &[Right::ManageUsers, Right::ReadUsers]),
    (
        Role::TemplateAdmin,
        &[
            Right::ManageTemplates,
            Right::ReadUsers,
            Right::ManageProvisioners,
        ],
    ),
    (
        Role::Auditor,
        &[Right::ReadAudit, Right::ReadUsers, Right::ReadAllWorkspaces],
    ),
];

/// Whether `roles` grant `right`.
pub fn grants(roles: &[Role], right: Right) -> bool {
    GRANTS
        .iter()
        .any(|(role, rights)| roles.contains(role) && rights.contains(&right))
}

/// Whether the caller holds `right` (never through a workspace credential).
pub fn can(auth: &AuthUser, right: Right) -> bool {
    !auth.scoped() && grants(&auth.user.roles, right)
}

/// 403 unless the caller holds `right`, naming the roles that grant it. A refusal is audited
/// (`refused`) as the `action` the caller attempted on `target`.
pub fn require(auth: &AuthUser, right: Right, action: &str, target: Option<&str>) -> ApiResult<()> {
    if can(auth, right) {
        return Ok(());
    }
    auth.record(
        action,
        "refused",
        target.unwrap_or(""),
        None,
        format!("may not {}", right.what()),
    );
    let roles: Vec<&str> = GRANTS
        .iter()
        .filter(|(_, rights)| rights.contains(&right))
        .map(|(r, _)| r.as_str())
        .collect();
    Err(ApiError::forbidden(format!(
        "you may not {}: that takes the role {}; ask an owner (`outpost users roles NAME --set ROLE`)",
        right.what(),
        roles.join(" or ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        assert!(grants(&[Role::Owner], Right::GrantOwner));
        assert!(!grants(&[Role::UserAdmin], Right::GrantOwner));
        assert!(grants(&[Role::UserAdmin], Right::ManageUsers));
        assert!(!grants(&[Role::TemplateAdmin], Right::ManageUsers));
        assert!(grants(&[Role::Auditor], Right::ReadAudit));
        assert!(!grants(&[Role::Auditor], Right::ManageTemplates));
        assert!(!grants(&[], Right::ReadUsers));
        assert!(grants(
            &[Role::Auditor, Role::TemplateAdmin],
            Right::ManageTemplates
        ));
    }
}
