//! The few system calls the agent needs, behind safe functions.
#![allow(unsafe_code)]

/// Asks the kernel to acknowledge received data at once (TCP_QUICKACK is not sticky, so callers
/// set it after each read). Clients that leave Nagle on (OpenSSH for non-interactive sessions)
/// would otherwise wait for our delayed ACK, about 40 ms, in the middle of a login.
pub fn quickack(fd: std::os::fd::RawFd) {
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
}

/// Sets `SO_RCVLOWAT`: the kernel reports the socket readable (wakes its reader) only once
/// `bytes` are queued, or the connection ends, or the receive window is about to close. A
/// non-blocking read still returns whatever is queued. Lowering it wakes the reader at once if
/// anything is queued (`tcp_set_rcvlowat` checks).
pub fn set_rcvlowat(fd: std::os::fd::RawFd, bytes: usize) {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes);
}

/// Sets an int socket option on `fd`, a socket the caller holds open. Failures are ignored:
/// the options set through here only tune, and the socket works without them.
fn set_int_option(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid, live int; `fd` is open
    // for the duration of the call (the caller holds its owner).
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A non-blocking duplicate of `fd` (a PTY master), registered with tokio for `interest` only.
/// A PTY master registered for writing too wakes its reader's thread every time the program
/// reads its input (the PTY reports room to write): one wake-up for nothing per keystroke.
pub fn async_dup(
    fd: std::os::fd::RawFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    let file = dup_nonblocking(fd)?;
    // SAFETY: the File owns a valid descriptor, which nothing replaces or closes while the
    // AsyncFd owns the File.
    Ok(unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, interest) }?)
}

/// A non-blocking duplicate of `fd`, not registered anywhere (write to it directly; see
/// [`async_dup`] for waiting until it has room).
pub fn dup_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<std::fs::File> {
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

/// glibc's malloc gives the top of its heap back to the kernel as soon as 128 KiB of it is free.
/// A bulk transfer queues up to a channel window of SSH packets, each in a fresh allocation, then
/// frees them, so the heap grows and shrinks by megabytes over and over and every byte lands on
/// a newly faulted, zeroed page: 12% of the agent's time in `ssh -L`. Keeping up to 32 MiB of
/// free heap (a window is 2 MiB, several channels at once) ends that; the memory is reused, not
/// leaked. Buffers up to 1 MiB (relay reads take 256 KiB) come from that heap rather than a
/// fresh mmap each time.
/// [`trim_heap`] gives the memory back when a session or forwarded channel ends.
pub fn keep_freed_heap() {
    // SAFETY: mallopt(3) only sets tuning parameters of the process's allocator (it takes the
    // allocator's own lock); no memory is touched.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

/// Returns the allocator's free memory to the kernel (after a transfer, so an idle agent stays
/// small).
pub fn trim_heap() {
    // SAFETY: malloc_trim(3) only releases free memory of the allocator, under its own lock.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
