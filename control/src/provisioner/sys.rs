//! The few system calls the local provisioner needs, behind safe functions.
#![allow(unsafe_code)]

/// Makes the child the leader of a new session (and process group) before it execs, so it
/// outlives control and gets no signal meant for control's terminal.
pub fn new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Dies quietly on a closed stdout (`outpost logs -f | head`), like other Unix tools, instead
/// of panicking in `println!`. Only for commands that do nothing but print.
pub fn default_sigpipe() {
    // SAFETY: restoring the default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
