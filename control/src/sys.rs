//! The few system calls the CLI needs, behind nix's safe wrappers.

use std::os::fd::AsFd;

/// Asks for a larger pipe buffer (Linux F_SETPIPE_SZ; capped by /proc/sys/fs/pipe-max-size).
/// Nothing happens when `fd` is not a pipe. With OpenSSH on the other end of a ProxyCommand,
/// bigger writes mean far fewer compactions of its output buffer.
pub fn grow_pipe(fd: &impl AsFd, bytes: i32) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes));
}
