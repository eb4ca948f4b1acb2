//! Wire types for `/api/v1` (users, templates, workspaces, builds, provisioners) and `/agent/v1`.
//!
//! Request types reject unknown fields. Timestamps are Unix milliseconds.

mod agent;
mod provisioner;
mod schedule;
mod teams;
mod templates;
mod users;
mod workspaces;

pub use agent::*;
pub use provisioner::*;
pub use schedule::*;
pub use teams::*;
pub use templates::*;
pub use users::*;
pub use workspaces::*;

use serde::{Deserialize, Serialize};

/// Error body: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The answer to deleting an SSH key: `{"removed": ID}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Removed {
    pub removed: String,
}

/// The answer to revoking a token: `{"revoked": ID}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revoked {
    pub revoked: String,
}

/// The answer to a provisioner's job completion: the job's final status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatusAnswer {
    pub status: JobStatus,
}
