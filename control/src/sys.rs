//! The few system calls the CLI needs, behind safe functions.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Asks for a larger pipe buffer (Linux F_SETPIPE_SZ; capped by /proc/sys/fs/pipe-max-size).
/// Nothing happens when `fd` is not a pipe. With OpenSSH on the other end of a ProxyCommand,
/// bigger writes mean far fewer compactions of its output buffer.
pub fn grow_pipe(fd: &impl AsRawFd, bytes: i32) {
    // SAFETY: fcntl(F_SETPIPE_SZ) on a descriptor the caller holds open; no memory is passed.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes);
    }
}
