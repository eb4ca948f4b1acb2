//! One session channel: the pty and env requests, then the shell, command or subsystem, with
//! the session's environment, the login gate and the message of the day.

use super::*;

/// What kind of client a session is, from Outpost's marker or the IDEs' well-known commands.
pub(super) fn session_kind(marker: Option<&str>, command: Option<&str>) -> SessionKind {
    match marker {
        Some("vscode") => return SessionKind::Vscode,
        Some("jetbrains") => return SessionKind::Jetbrains,
        _ => {}
    }
    let c = command.unwrap_or("");
    if c.contains("vscode-server") || c.contains(".vscode") || c.contains("code-server") {
        SessionKind::Vscode
    } else if c.contains("jetbrains") || c.contains("remote-dev-server") || c.contains("JetBrains")
    {
        SessionKind::Jetbrains
    } else {
        SessionKind::Ssh
    }
}

/// The environment every session starts from: the user's identity, PATH, the template's
/// environment and the workspace's identity.
pub fn base_env(shared: &SshShared) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![
        ("HOME".into(), shared.home.display().to_string()),
        ("USER".into(), shared.user.clone()),
        ("LOGNAME".into(), shared.user.clone()),
        ("SHELL".into(), shared.shell.clone()),
        ("PATH".into(), crate::user::session_path()),
    ];
    vars.extend(shared.env.iter().cloned());
    vars
}

/// Environment variables a client may set (like Debian's sshd `AcceptEnv LANG LC_*`), plus
/// Outpost's session-kind marker.
pub(super) fn env_allowed(name: &str) -> bool {
    name == "LANG"
        || name.starts_with("LC_")
        || name == "OUTPOST_SESSION_KIND"
        || name == "OUTPOST_NO_WAIT"
        || name == "COLORTERM"
}

#[derive(Default)]
pub(super) struct PtyReq {
    pub(super) term: String,
    pub(super) cols: u32,
    pub(super) rows: u32,
}

pub(super) enum What {
    Shell,
    Exec(String),
    Sftp,
}

/// One session channel: collects pty/env requests, then runs the shell, command or subsystem.
pub(super) async fn run_session(
    mut channel: Channel<Msg>,
    shared: Arc<SshShared>,
    handle: Handle,
    peer: Option<SocketAddr>,
    symlinks: super::sftp::SymlinkOrder,
) -> anyhow::Result<()> {
    let id = channel.id();
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut agent_sock: Option<AgentSocket> = None;
    let what = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some(PtyReq {
                    term,
                    cols: col_width,
                    rows: row_height,
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if env_allowed(&variable_name) {
                    env.push((variable_name, variable_value));
                }
            }
            Some(ChannelMsg::AgentForward { .. }) => {
                if agent_sock.is_none() {
                    match AgentSocket::start(handle.clone(), shared.agent.clone()) {
                        Ok(s) => agent_sock = Some(s),
                        Err(e) => tracing::warn!(error = %e, "agent forwarding"),
                    }
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break What::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break What::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                if name == "sftp" {
                    break What::Sftp;
                }
            }
            Some(_) => {}
            None => return Ok(()),
        }
    };
    let mut vars = base_env(&shared);
    // As sshd sets them (relayed connections have no client address: 0.0.0.0 0).
    let (ip, port) = peer
        .map(|p| (p.ip().to_string(), p.port()))
        .unwrap_or_else(|| ("0.0.0.0".into(), 0));
    vars.push(("SSH_CONNECTION".into(), format!("{ip} {port} 127.0.0.1 22")));
    vars.push(("SSH_CLIENT".into(), format!("{ip} {port} 22")));
    if let Some(p) = &pty {
        vars.push((
            "TERM".into(),
            if p.term.is_empty() {
                "xterm".into()
            } else {
                p.term.clone()
            },
        ));
    }
    let marker = env
        .iter()
        .find(|(k, _)| k == "OUTPOST_SESSION_KIND")
        .map(|(_, v)| v.clone());
    let no_wait = env.iter().any(|(k, v)| k == "OUTPOST_NO_WAIT" && v == "1");
    // Blocking startup scripts hold new sessions back (and say so), unless told not to wait.
    let mut gate = shared.login_gate.clone();
    if !*gate.borrow() && !no_wait {
        let _ = handle
            .extended_data(
                id,
                1,
                bytes::Bytes::from_static(b"Waiting for the workspace's startup scripts to finish (they block login); `outpost ssh --no-wait` skips this.\r\n"),
            )
            .await;
        let _ = gate.wait_for(|open| *open).await;
    }
    vars.extend(env);
    if let Some(s) = &agent_sock {
        vars.push(("SSH_AUTH_SOCK".into(), s.path.display().to_string()));
    }
    let command = match &what {
        What::Exec(c) => Some(c.clone()),
        _ => None,
    };
    let _live = match what {
        What::Sftp => None,
        _ => Some(
            shared
                .agent
                .live(session_kind(marker.as_deref(), command.as_deref())),
        ),
    };
    // The message of the day for interactive login shells, unless ~/.hushlogin exists.
    if matches!(what, What::Shell) && pty.is_some() && !shared.home.join(".hushlogin").exists() {
        if let Ok(motd) = std::fs::read_to_string(shared.home.join(".outpost/motd"))
            .or_else(|_| std::fs::read_to_string("/etc/motd"))
        {
            if !motd.is_empty() {
                let _ = handle
                    .data(id, bytes::Bytes::from(motd.replace('\n', "\r\n")))
                    .await;
            }
        }
    }
    let code = match (what, pty) {
        (What::Sftp, _) => {
            run_sftp(&mut channel, &handle, id, shared.home.clone(), symlinks).await?
        }
        (What::Exec(cmd), None) => {
            run_piped(
                &mut channel,
                &handle,
                id,
                &shared.shell,
                &["-c", &cmd],
                &shared.home,
                &vars,
            )
            .await?
        }
        (What::Shell, None) => {
            run_piped(
                &mut channel,
                &handle,
                id,
                &shared.shell,
                &["-l"],
                &shared.home,
                &vars,
            )
            .await?
        }
        (what, Some(p)) => {
            let args: Vec<String> = match what {
                What::Exec(cmd) => vec!["-c".into(), cmd],
                _ => vec!["-l".into()],
            };
            run_pty(&mut channel, &handle, id, &shared, &args, &vars, p).await?
        }
    };
    match code {
        Ended::Code(c) => {
            let _ = handle.exit_status_request(id, c).await;
        }
        Ended::Signal(sig) => {
            let _ = handle
                .exit_signal_request(id, sig, false, String::new(), String::new())
                .await;
        }
    }
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
    Ok(())
}
