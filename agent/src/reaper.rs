//! The agent as its own init, for a workspace that shares its Unix user with others (`local`
//! without isolation): the `outpost-agent` process the provisioner starts becomes a child
//! subreaper and runs the real agent as its child. Whatever the workspace starts, even a daemon
//! that double-forks away from its shell, stays below this process, so "a process of this
//! workspace" is "a descendant of the supervisor", a fact the kernel keeps, not one a process
//! can claim (see procs.rs). The supervisor reaps every orphan that ends and passes
//! SIGTERM, SIGINT and SIGHUP on to the agent; it exits with the agent's status.

use std::process::ExitCode;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Set in the agent's environment by its supervisor: this process is the worker.
pub const WORKER_ENV: &str = "OUTPOST_AGENT_SUPERVISED";

/// Whether this process is the worker under a supervisor (its parent is the supervisor).
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// The root of the workspace's process tree: the supervisor when there is one, else this
/// process.
pub fn tree_root() -> u32 {
    if is_worker() {
        nix::unistd::getppid().as_raw().unsigned_abs()
    } else {
        std::process::id()
    }
}

/// Runs this same program as the worker below a subreaper and waits for it. Never returns
/// before the worker ends.
pub fn supervise() -> ExitCode {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("outpost-agent: cannot become a child subreaper ({e}); running without one");
    }
    // Block the signals we wait for before the worker exists, so none is missed; the worker
    // starts with an empty mask (std resets it in the child).
    let mut waited = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        waited.add(s);
    }
    if let Err(e) = waited.thread_block() {
        eprintln!("outpost-agent: cannot block signals: {e}");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("outpost-agent: cannot find my own program: {e}");
            return ExitCode::from(2);
        }
    };
    let child = match std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(WORKER_ENV, "1")
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outpost-agent: cannot start the agent: {e}");
            return ExitCode::from(2);
        }
    };
    let worker = Pid::from_raw(child.id() as i32);
    // The worker is reaped below with every other child; `child` is only its handle.
    drop(child);
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(worker) {
                    return code;
                }
            }
            Ok(sig) => {
                let _ = kill(worker, sig);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every child that has ended; the worker's exit status once it has.
fn reap(worker: Pid) -> Option<ExitCode> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == worker => {
                return Some(ExitCode::from(u8::try_from(code).unwrap_or(1)));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == worker => {
                return Some(ExitCode::from(128u8.saturating_add(sig as u8)));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}
