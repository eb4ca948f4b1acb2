//! Outpost wire types and a typed HTTP client.
//!
//! Shared by the control service, the agent and the CLI. This crate has no server dependencies and
//! does no I/O beyond its HTTP client.

mod client;
pub mod relay;

/// The agent API's routes (on its own TLS listener; all but BOOTSTRAP need the agent's client
/// certificate). The agent's control session and control's router both use these.
pub mod agent_routes {
    pub const BOOTSTRAP: &str = "/agent/v1/bootstrap";
    pub const RENEW: &str = "/agent/v1/renew";
    pub const POLL: &str = "/agent/v1/poll";
    pub const HEARTBEAT: &str = "/agent/v1/heartbeat";
    pub const MANIFEST: &str = "/agent/v1/manifest";
    pub const SSH: &str = "/agent/v1/ssh";
    pub const GIT_SSH_KEY: &str = "/agent/v1/gitsshkey";
    pub const GIT_SIGN: &str = "/agent/v1/gitsign";
    pub const USER_TOKEN: &str = "/agent/v1/user-token";
    pub const LOGS: &str = "/agent/v1/logs";
    pub use crate::relay::TUNNEL_PATH as TUNNEL;
}
pub mod types;

/// The workspace environment variable naming the directory the template's files are delivered
/// to (read-only, on every start); `script = "./x.sh"` runs the file from there.
pub const TEMPLATE_DIR_ENV: &str = "OUTPOST_TEMPLATE_DIR";

/// The prefix of the environment variables carrying parameter values: `OUTPOST_PARAM_MEMORY`.
pub const PARAM_ENV_PREFIX: &str = "OUTPOST_PARAM_";

/// `OUTPOST_PARAM_<NAME>` for parameter `name` (parameter names are lowercase letters, digits
/// and `_`).
pub fn param_env_name(name: &str) -> String {
    format!("{PARAM_ENV_PREFIX}{}", name.to_ascii_uppercase())
}

pub use client::{Client, ClientError};

/// Percent-encodes `s` for a URL path segment or query value (RFC 3986 unreserved characters
/// stay as they are).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
pub use types::*;
