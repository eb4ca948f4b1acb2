//! A workspace's processes and resources as tests see them: its live processes (by the
//! workspace marker in their environment), signals, its home and agent from `outpost show`.

use std::path::PathBuf;

use serde_json::Value;

/// Live processes whose environment carries `OUTPOST_WORKSPACE_ID=id`.
pub fn processes_of_workspace(id: &str) -> Vec<i32> {
    outpost_common::process::pids_with_env(&outpost_common::process::workspace_marker(id))
}

/// The command lines of a workspace's live processes.
pub fn commands_of_workspace(id: &str) -> Vec<String> {
    processes_of_workspace(id)
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

#[allow(unsafe_code)]
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Is the process alive (and not a zombie)?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn home_of(w: &Value) -> PathBuf {
    resource_path(w, "home").expect("workspace has a home resource")
}

pub fn resource_path(w: &Value, name: &str) -> Option<PathBuf> {
    w["resources"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["details"]["path"].as_str())
        .map(PathBuf::from)
}

pub fn agent_pid(w: &Value) -> Option<i32> {
    w["resources"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "agent")
        .and_then(|r| r["details"]["pid"].as_str())
        .and_then(|p| p.parse().ok())
}
