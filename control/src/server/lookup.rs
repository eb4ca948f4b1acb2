//! Finding the workspace or build a request names, for the caller: their own, or (owners and
//! auditors) anyone's as `OWNER/NAME`.

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::store::{BuildRow, WorkspaceRow};

/// What a caller wants to do with a workspace it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// See it: its view, builds, logs.
    Read,
    /// Act on it: builds, cancel, its schedule.
    Manage,
}

/// The workspace `name` names for the caller: one of their own, or `OWNER/NAME`, which owners
/// (and, to read, auditors) may name for anyone's. Never a way into its SSH, terminal, ports
/// or apps: those routes look up the caller's own workspaces only.
pub(super) async fn find_workspace(
    state: &AppState,
    auth: &AuthUser,
    name: &str,
    access: Access,
) -> ApiResult<WorkspaceRow> {
    use super::authz::{can, Right};
    let nf = || {
        ApiError::not_found(format!(
            "you have no workspace named {name:?}; see `outpost list`"
        ))
    };
    let (owner_id, ws) = match name.split_once('/') {
        Some((owner, ws)) if owner != auth.user.username => {
            if !can(auth, Right::ReadAllWorkspaces) {
                return Err(nf());
            }
            if access == Access::Manage {
                super::authz::require(
                    auth,
                    Right::ManageAllWorkspaces,
                    "workspace.manage",
                    Some(&format!("workspace:{name}")),
                )?;
            }
            let user = state.store.user_by_username(owner).await?.ok_or_else(nf)?;
            (user.id, ws)
        }
        Some((_, ws)) => (auth.user.id.clone(), ws),
        None => (auth.user.id.clone(), name),
    };
    state
        .store
        .workspace_by_name(&owner_id, ws)
        .await?
        .filter(|w| auth.may_touch(&w.id))
        .ok_or_else(nf)
}

/// One of the caller's own workspaces, or (owners) anyone's as `OWNER/NAME`, to act on.
pub(super) async fn own_workspace(
    state: &AppState,
    auth: &AuthUser,
    name: &str,
) -> ApiResult<WorkspaceRow> {
    find_workspace(state, auth, name, Access::Manage).await
}

pub(super) async fn own_build(state: &AppState, auth: &AuthUser, id: &str) -> ApiResult<BuildRow> {
    let nf = || ApiError::not_found(format!("no build {id:?}"));
    let b = state.store.build(id).await?.ok_or_else(nf)?;
    let w = state
        .store
        .workspace_by_id(&b.workspace_id)
        .await?
        .ok_or_else(nf)?;
    let others = super::authz::can(auth, super::authz::Right::ReadAllWorkspaces);
    if (w.owner_id != auth.user.id && !others) || !auth.may_touch(&w.id) {
        return Err(nf());
    }
    Ok(b)
}
