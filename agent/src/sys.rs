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

/// A non-blocking duplicate of `fd` (a PTY master), registered with tokio.
pub fn async_dup(
    fd: std::os::fd::RawFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    let file = dup_nonblocking(fd)?;
    // SAFETY: the File owns a valid descriptor, which nothing replaces or closes while the
    // AsyncFd owns the File.
    Ok(unsafe { tokio::io::unix::AsyncFd::register(file) }?)
}

fn dup_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<std::fs::File> {
    // SAFETY: `fd` is open for the duration of this call (the caller holds its owner); the
    // duplicate is a new descriptor owned by the returned File.
    let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&owned);
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(std::fs::File::from(owned))
}
