//! What Outpost's agent and control both need, and nothing that only one of them does. It sits
//! below both (they never depend on each other) and above `outpost-api` in nothing: the wire
//! types and the relay protocol live in `outpost-api`.

pub mod clock;
pub mod cron;
pub mod fs;
pub mod process;
pub mod pump;
pub mod sshkey;
pub mod tls;
