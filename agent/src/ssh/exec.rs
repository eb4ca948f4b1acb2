//! A session's process: with pipes or on a PTY, its exit status or signal, and signals from the
//! client to its process group.

use super::*;

pub(super) enum Ended {
    Code(u32),
    Signal(Sig),
}

pub(super) fn sig_from_name(name: &str) -> Sig {
    match name.trim_start_matches("SIG") {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

/// Signal names as SSH spells them, and their numbers here.
pub(super) const SIGNALS: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("TERM", libc::SIGTERM),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("WINCH", libc::SIGWINCH),
];

/// The number of a signal a client sent (unknown ones: TERM).
/// Sends signal number `n` to process group `pgid`.
pub(super) fn signal_group(pgid: i32, n: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(n) {
        outpost_common::process::signal_group(pgid, sig);
    }
}

pub(super) fn sig_number(sig: &Sig) -> i32 {
    let name = match sig {
        Sig::Custom(s) => s.clone(),
        known => format!("{known:?}"),
    };
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap_or(libc::SIGTERM)
}

/// The SSH name of a signal that ended a process.
pub(super) fn sig_of_number(n: i32) -> Sig {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(name, _)| sig_from_name(name))
        .unwrap_or_else(|| Sig::Custom(n.to_string()))
}

/// A process with pipes: stdin from the channel, stdout and stderr back, EOF passed on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_piped(
    channel: &mut Channel<Msg>,
    handle: &Handle,
    id: ChannelId,
    program: &str,
    args: &[&str],
    home: &Path,
    vars: &[(String, String)],
) -> anyhow::Result<Ended> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(home)
        .env_clear()
        .envs(vars.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    let pid = child.id().map(|p| p as i32);
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (h1, h2) = (handle.clone(), handle.clone());
    let out_task = tokio::spawn(async move {
        let mut rd = outpost_common::pump::ChunkReader::new(stdout, 64 * 1024);
        while let Some(chunk) = rd.next().await {
            if h1.data(id, chunk).await.is_err() {
                break;
            }
        }
    });
    let err_task = tokio::spawn(async move {
        let mut rd = outpost_common::pump::ChunkReader::new(stderr, 64 * 1024);
        while let Some(chunk) = rd.next().await {
            if h2.extended_data(id, 1, chunk).await.is_err() {
                break;
            }
        }
    });
    let status = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(ChannelMsg::Eof) => {
                    stdin = None;
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(p) = pid {
                        signal_group(p, sig_number(&signal));
                    }
                }
                Some(_) => {}
                None => {
                    // The client went away: end the process group.
                    if let Some(p) = pid {
                        signal_group(p, libc::SIGHUP);
                    }
                    let _ = child.kill().await;
                    return Ok(Ended::Code(255));
                }
            },
            st = child.wait() => break st?,
        }
    };
    let _ = out_task.await;
    let _ = err_task.await;
    crate::sys::trim_heap();
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Code(c as u32),
        (None, Some(s)) => Ended::Signal(sig_of_number(s)),
        _ => Ended::Code(255),
    })
}

/// Starts the user's shell with `args` in the home on a new PTY, with exactly `vars` as its
/// environment; the slave side is closed here (else the master never sees EOF).
pub fn spawn_in_pty(
    shared: &SshShared,
    size: portable_pty::PtySize,
    args: &[String],
    vars: &[(String, String)],
) -> anyhow::Result<(
    Box<dyn portable_pty::MasterPty + Send>,
    Box<dyn portable_pty::Child + Send + Sync>,
)> {
    let pair = portable_pty::native_pty_system()
        .openpty(size)
        .context("opening a PTY")?;
    let mut cmd = portable_pty::CommandBuilder::new(&shared.shell);
    cmd.args(args);
    cmd.cwd(&shared.home);
    cmd.env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let child = pair
        .slave
        .spawn_command(cmd)
        .context("starting the shell")?;
    drop(pair.slave);
    Ok((pair.master, child))
}

/// A process on a PTY (portable-pty, blocking: a reader thread and a writer thread).
pub(super) async fn run_pty(
    channel: &mut Channel<Msg>,
    handle: &Handle,
    id: ChannelId,
    shared: &SshShared,
    args: &[String],
    vars: &[(String, String)],
    req: PtyReq,
) -> anyhow::Result<Ended> {
    use portable_pty::PtySize;
    let size = |cols: u32, rows: u32| PtySize {
        rows: rows.clamp(1, 1000) as u16,
        cols: cols.clamp(1, 1000) as u16,
        pixel_width: 0,
        pixel_height: 0,
    };
    let (master, mut child) = spawn_in_pty(
        shared,
        size(
            if req.cols == 0 { 80 } else { req.cols },
            if req.rows == 0 { 24 } else { req.rows },
        ),
        args,
        vars,
    )?;
    let pid = child.process_id().map(|p| p as i32);
    let mut reader = master.try_clone_reader()?;
    let mut writer = master.take_writer()?;
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        while let Ok(data) = in_rx.recv() {
            if writer.write_all(&data).is_err() {
                break;
            }
            let _ = writer.flush();
        }
    });
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let h = handle.clone();
    let pump = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            if h.data(id, bytes::Bytes::from(data)).await.is_err() {
                break;
            }
        }
    });
    let status = loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    let tx = in_tx.clone();
                    let _ = tokio::task::spawn_blocking(move || tx.send(data.to_vec())).await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let _ = master.resize(size(col_width, row_height));
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(p) = pid {
                        signal_group(p, sig_number(&signal));
                    }
                }
                Some(_) => {}
                None => {
                    if let Some(p) = pid {
                        signal_group(p, libc::SIGHUP);
                    }
                    return Ok(Ended::Code(255));
                }
            },
            st = &mut exit_rx => break st.ok().and_then(|r| r.ok()),
        }
    };
    drop(in_tx);
    // Drain what the program wrote before it exited (background jobs may hold the PTY open:
    // stop after a quiet moment).
    drop(master);
    let _ = tokio::time::timeout(Duration::from_millis(500), pump).await;
    Ok(match status {
        Some(s) => match s.signal() {
            Some(name) => Ended::Signal(sig_from_name(&signal_short(name))),
            None => Ended::Code(s.exit_code()),
        },
        None => Ended::Code(255),
    })
}

/// portable-pty reports signals by description ("Terminated"); map the common ones back.
pub(super) fn signal_short(desc: &str) -> String {
    match desc {
        "Terminated" => "TERM".into(),
        "Killed" => "KILL".into(),
        "Hangup" => "HUP".into(),
        "Interrupt" => "INT".into(),
        "Quit" => "QUIT".into(),
        "Aborted" => "ABRT".into(),
        "Segmentation fault" => "SEGV".into(),
        other => other.to_uppercase(),
    }
}
