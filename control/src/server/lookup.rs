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

/// What reaching into a workspace is for, as audited.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reach<'a> {
    Ssh,
    Tcp(u16),
    Terminal,
    /// An app (by slug) or a port, through the dashboard's proxy.
    Proxy(&'a str, &'a str),
}

impl std::fmt::Display for Reach<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Ssh => f.write_str("ssh"),
            Reach::Tcp(p) => write!(f, "tcp:{p}"),
            Reach::Terminal => f.write_str("terminal"),
            Reach::Proxy(kind, key) => write!(f, "{kind}:{key}"),
        }
    }
}

/// Whether the caller may get into `w` (owned by `owner`): SSH, terminal, ports, apps. Its
/// owner may. Someone else's workspace: a user with the owner role, only on a server started
/// with `--allow-owner-workspace-access`, and audited (`workspace.connect`); without it, owners
/// (who can see the workspace) are refused with 403 saying why, audited too. Everyone else
/// gets the 404 of a workspace that is not theirs.
pub(super) fn may_connect(
    state: &AppState,
    auth: &AuthUser,
    owner: &str,
    w: &WorkspaceRow,
    reach: Reach<'_>,
) -> ApiResult<()> {
    use super::authz::{can, Right};
    if w.owner_id == auth.user.id && !auth.scoped() {
        return Ok(());
    }
    let target = format!("workspace:{owner}/{}", w.name);
    if auth.scoped() || !can(auth, Right::ReadAllWorkspaces) {
        return Err(ApiError::not_found(format!(
            "you have no workspace named {:?}; see `outpost list`",
            w.name
        )));
    }
    if !state.config.allow_owner_workspace_access {
        auth.record(
            "workspace.connect",
            "refused",
            &target,
            Some(&w.id),
            format!("{reach}: the server does not let owners into other users' workspaces"),
        );
        return Err(ApiError::forbidden(format!(
            "{owner}/{} is not yours: only its owner may connect to it. An operator can start the server with --allow-owner-workspace-access to let owners in (every connection is audited)",
            w.name
        )));
    }
    super::authz::require(
        auth,
        Right::ConnectAllWorkspaces,
        "workspace.connect",
        Some(&target),
    )?;
    auth.record(
        "workspace.connect",
        "ok",
        &target,
        Some(&w.id),
        reach.to_string(),
    );
    Ok(())
}

/// The workspace `name` (`NAME` or `OWNER/NAME`) names, for getting into it (see
/// [`may_connect`]).
pub(super) async fn connect_workspace(
    state: &AppState,
    auth: &AuthUser,
    name: &str,
    reach: Reach<'_>,
) -> ApiResult<WorkspaceRow> {
    let w = find_workspace(state, auth, name, Access::Read).await?;
    let owner = name
        .split_once('/')
        .map_or(auth.user.username.as_str(), |(o, _)| o);
    may_connect(state, auth, owner, &w, reach)?;
    Ok(w)
}
