//! The Outpost agent: runs inside a workspace, exchanges its one-time bootstrap token for a client
//! certificate, then long-polls control for commands and heartbeats over mTLS.
//!
//! `main.rs` only parses flags and calls [`run::run`].

pub mod run;
pub mod tls;

pub use run::{run, AgentConfig, Exit};
