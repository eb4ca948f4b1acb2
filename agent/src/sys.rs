//! The few system calls the agent needs, behind safe functions.
#![allow(unsafe_code)]

/// Sends `sig` to the process group led by `pgid` (falls back to the process).
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) on a process group this agent started.
    unsafe {
        if libc::kill(-pgid, sig) != 0 {
            libc::kill(pgid, sig);
        }
    }
}
