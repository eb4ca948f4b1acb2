//! The workspace user as their programs see them: the login shell and the PATH every session and
//! script starts with.

/// The login shell of the user running the agent.
pub fn login_shell() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.shell.display().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()))
}

/// PATH for sessions and scripts: the agent's own directory first (the `outpost` CLI ships next
/// to `outpost-agent`), then the agent's PATH.
pub fn session_path() -> String {
    let base = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    match std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.display().to_string()))
    {
        Some(dir) => format!("{dir}:{base}"),
        None => base,
    }
}
