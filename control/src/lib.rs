//! Outpost control: the server (API, agent API, scheduler, embedded provisioners), the provisioner
//! daemon and the user CLI. `main.rs` only calls [`cli::main`].

pub mod ca;
pub mod store;
pub mod template;
