//! The Outpost agent: runs inside a workspace, exchanges its one-time bootstrap token for a client
//! certificate, then long-polls control for commands, heartbeats with statistics and renews its
//! certificate over mTLS.
//!
//! `main.rs` only parses flags and calls [`run::run`].

pub mod apps;
pub mod credentials;
pub mod dotfiles;
pub mod handoff;
pub mod procs;
pub mod reaper;
pub mod run;
pub mod scripts;
pub mod session;
pub mod ssh;
pub mod state;
pub mod stats;
mod sys;
pub mod terminal;
pub use sys::keep_freed_heap;
pub mod tunnel;
mod user;

pub use run::{run, AgentConfig, Exit};
