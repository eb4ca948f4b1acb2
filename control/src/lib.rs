//! Outpost control: the server (API, agent API, lease reaper, embedded provisioners), the
//! provisioner daemon and the user CLI. `main.rs` only calls [`cli::main`].

pub mod backup;
pub mod ca;
pub mod ca_share;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod config_templates;
pub mod provisioner;
pub mod schedule;
pub mod secrets;
pub mod server;
mod sshcli;
pub mod store;
mod sys;
pub mod template;
pub mod tls_tickets;
