//! What Outpost's agent and control both need, and nothing that only one of them does. It sits
//! below both (they never depend on each other) and above `outpost-api` in nothing: the wire
//! types and the relay protocol live in `outpost-api`.

pub mod clock;
pub mod cron;
pub mod fdpass;
pub mod fs;
pub mod logs;
pub mod process;
pub mod pump;
pub mod sshkey;
pub mod tls;

/// The one way Outpost treats a poisoned lock: go on with the data. What these mutexes guard is
/// plain state that no holder leaves half-written (no await or fallible step inside), so a panic
/// elsewhere is no reason to stop serving.
pub trait LockExt<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> LockExt<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
