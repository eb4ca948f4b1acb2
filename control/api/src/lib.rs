//! Outpost wire types and a typed HTTP client.
//!
//! Shared by the control service, the agent and the CLI. This crate has no server dependencies and
//! does no I/O beyond its HTTP client.

mod client;
pub mod relay;
pub mod types;

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
