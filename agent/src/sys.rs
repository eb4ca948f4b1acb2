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

/// Asks the kernel to acknowledge received data at once (TCP_QUICKACK is not sticky, so callers
/// set it after each read). Clients that leave Nagle on (OpenSSH for non-interactive sessions)
/// would otherwise wait for our delayed ACK, about 40 ms, in the middle of a login.
pub fn quickack(fd: std::os::fd::RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket this process owns, with a valid int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
