//! Outpost wire types and a typed HTTP client.
//!
//! Shared by the control service, the agent and the CLI. This crate has no server dependencies and
//! does no I/O beyond its HTTP client.

mod client;
pub mod relay;
pub mod types;

pub use client::{Client, ClientError};
pub use types::*;
