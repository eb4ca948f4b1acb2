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

/// Sends descriptor `fd` over the Unix socket `sock` (SCM_RIGHTS, with one byte of data), as
/// OpenSSH's `ProxyUseFdpass` expects from its ProxyCommand.
pub fn send_fd(sock: &impl AsRawFd, fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let int = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(int) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the sendmsg call, and
    // the control buffer is CMSG_SPACE bytes, room for one header and one descriptor.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(std::io::Error::other("no room for the descriptor"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(int) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        loop {
            if libc::sendmsg(sock.as_raw_fd(), &msg, 0) >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
