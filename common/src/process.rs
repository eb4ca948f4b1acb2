//! Signals to process groups (through nix's safe wrappers): how the agent ends a session's or a
//! script's whole tree, and how the local provisioner stops an agent.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Sends `sig` to every process of group `pgid` (to the process alone if it leads no group).
/// Nothing happens for pids 0 and 1.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid <= 1 {
        return;
    }
    if killpg(Pid::from_raw(pgid), sig).is_err() {
        let _ = kill(Pid::from_raw(pgid), sig);
    }
}

/// Is any process of group `pgid` alive (one we may not signal counts)?
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    match killpg(Pid::from_raw(pgid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_alive_until_signalled() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pgid = child.id() as i32;
        assert!(group_alive(pgid));
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait();
        assert!(!group_alive(pgid));
        assert!(!group_alive(1) && !group_alive(0));
    }
}
