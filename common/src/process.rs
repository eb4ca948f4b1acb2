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

/// The environment entry every process of a workspace carries: the agent gets it from the
/// provisioner and passes it to everything it starts, orphans included.
pub fn workspace_marker(workspace_id: &str) -> String {
    format!("OUTPOST_WORKSPACE_ID={workspace_id}")
}

/// Does process `pid` carry `entry` (`NAME=VALUE`) in its environment?
pub fn has_env(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|e| e.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
        .unwrap_or(false)
}

/// Live processes (not zombies) whose environment carries `entry`, this process excepted.
pub fn pids_with_env(entry: &str) -> Vec<i32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && has_env(*pid, entry) && !zombie(*pid))
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// SIGKILLs every live process carrying `entry`; returns how many there were.
pub fn kill_all_with_env(entry: &str) -> usize {
    let pids = pids_with_env(entry);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    pids.len()
}

/// SIGKILLs every live process whose real uid is `uid` (never root's); returns how many.
pub fn kill_all_of_uid(uid: u32) -> usize {
    if uid == 0 {
        return 0;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        let zombie = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if real == Some(uid) && !zombie {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            n += 1;
        }
    }
    n
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

    #[test]
    fn processes_are_found_and_ended_by_their_environment() {
        let marker = workspace_marker(&format!("test-{}", std::process::id()));
        let (k, v) = marker.split_once('=').unwrap_or_default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(k, v)
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        // Until the child has exec'd, /proc shows the parent's environment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pids_with_env(&marker).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(pids_with_env(&marker), vec![pid]);
        assert_eq!(kill_all_with_env(&marker), 1);
        let _ = child.wait();
        assert!(pids_with_env(&marker).is_empty());
    }
}
