//! The `local` provisioner: a workspace is a directory on this machine.
//!
//! `WS/home/` is persistent; `WS/run/` is ephemeral and rebuilt on every start; `WS/template/`
//! holds the template's files, read-only, rewritten on every start. The agent runs in a session
//! of its own, from a cleared environment plus an allowlist, with `HOME` set to the home.
//!
//! Isolation: when control runs as root, each workspace has a Unix user of its own
//! (`users.rs`) that owns its home (0700) and runs its agent and everything under it; the
//! workspaces directory and each `WS/` are root's, 0711, so no workspace can list another's.
//! When control is not root there is no isolation: workspaces run as control's user, and say
//! so (`isolation: none`).
//!
//! Stop tells the agent to exit (control already queued the command), then SIGTERM, then
//! SIGKILL to its process group, and removes `run/`. Delete also removes `home/`, last
//! (reverse dependency order: agent, ephemeral, persistent), then the workspace's user.

pub mod users;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid};
use outpost_api::*;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{sys, workspace_env, JobLog};

/// Who a local workspace runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A Unix user per workspace (control must be root).
    User,
    /// Control's own user: one person's machine.
    None,
}

impl Isolation {
    /// `user` when this process is root, else `none`.
    pub fn detect() -> Isolation {
        if Uid::effective().is_root() {
            Isolation::User
        } else {
            Isolation::None
        }
    }

    pub fn parse(s: &str) -> Option<Isolation> {
        match s {
            "user" => Some(Isolation::User),
            "none" => Some(Isolation::None),
            _ => None,
        }
    }
}

pub struct LocalProvisioner {
    pub root: PathBuf,
    pub agent_binary: Option<PathBuf>,
    pub stop_grace: Duration,
    pub isolation: Isolation,
    /// Shared by the daemons of one process: copies of the agent binary.
    pub setup_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What control keeps for us between builds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalState {
    #[serde(default)]
    agent_pid: Option<i32>,
}

fn dir_resource(name: &str, path: &Path, persistent: bool) -> Resource {
    Resource {
        name: name.to_string(),
        kind: "local_dir".to_string(),
        persistent,
        details: BTreeMap::from([("path".to_string(), path.display().to_string())]),
    }
}

/// Who the workspace's processes run as.
struct RunAs {
    user: String,
    uid: Uid,
    gid: Gid,
    shell: String,
    /// For `outpost show`: `user ws-… (uid N)` or `none (…)`.
    isolation: String,
}

impl LocalProvisioner {
    /// Makes the workspaces directory. With user isolation it is root's, mode 0711, and every
    /// directory above it must let others through (or no workspace user reaches its home).
    pub fn prepare_root(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating the workspaces dir {}", self.root.display()))?;
        let mode = match self.isolation {
            Isolation::User => 0o711,
            Isolation::None => 0o700,
        };
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(mode))?;
        if self.isolation == Isolation::User {
            let abs = std::fs::canonicalize(&self.root)?;
            for dir in abs.ancestors().skip(1) {
                let m = std::fs::metadata(dir)?.permissions().mode();
                if m & 0o001 == 0 {
                    bail!(
                        "workspace users cannot reach {}: {} is mode {:o}; choose a --workspaces-dir whose parents others may pass through (e.g. /var/lib/outpost-workspaces)",
                        self.root.display(),
                        dir.display(),
                        m & 0o777
                    );
                }
            }
        }
        Ok(())
    }

    /// The agent binary as a workspace user can run it: the original when everyone may read
    /// it and pass through its directories, else a root-owned copy in `ROOT/.agent/` (made
    /// again when the original changes). The `outpost` CLI next to it goes along.
    async fn agent_binary_for(&self, run_as: &RunAs) -> anyhow::Result<PathBuf> {
        let bin = find_agent_binary(self.agent_binary.as_deref())?;
        if self.isolation == Isolation::None || reachable_by_others(&bin) {
            return Ok(bin);
        }
        let _held = self.setup_lock.lock().await;
        let dir = self.root.join(".agent");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let copy = dir.join("outpost-agent");
        copy_if_changed(&bin, &copy)?;
        if let Some(cli) = bin
            .parent()
            .map(|d| d.join("outpost"))
            .filter(|p| p.exists())
        {
            copy_if_changed(&cli, &dir.join("outpost"))?;
        }
        tracing::debug!(user = %run_as.user, copy = %copy.display(), "agent binary copied for workspace users");
        Ok(copy)
    }

    async fn run_as(&self, job: &ProvisionerJob, home: &Path) -> anyhow::Result<RunAs> {
        match self.isolation {
            Isolation::User => {
                let u = users::ensure(&job.workspace_id, home).await?;
                Ok(RunAs {
                    isolation: format!("user {} (uid {})", u.name, u.uid),
                    user: u.name,
                    uid: u.uid,
                    gid: u.gid,
                    shell: u.shell,
                })
            }
            Isolation::None => {
                let uid = Uid::current();
                let me = nix::unistd::User::from_uid(uid).ok().flatten();
                Ok(RunAs {
                    user: me
                        .as_ref()
                        .map(|u| u.name.clone())
                        .unwrap_or_else(|| uid.to_string()),
                    uid,
                    gid: Gid::current(),
                    shell: me
                        .map(|u| u.shell.display().to_string())
                        .unwrap_or_else(|| "/bin/sh".into()),
                    isolation: "none".into(),
                })
            }
        }
    }

    pub async fn run(
        &self,
        job: &ProvisionerJob,
        log: &JobLog,
        cancel: watch::Receiver<bool>,
    ) -> anyhow::Result<(Vec<Resource>, serde_json::Value)> {
        let mut state: LocalState = serde_json::from_value(job.state.clone()).unwrap_or_default();
        let ws_dir = self.root.join(&job.workspace_id);
        // The pid file outlives a provisioner that died mid-build (its state never reached
        // control), so a retried build still finds the agent it started.
        let pid_file = ws_dir.join("agent.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            state.agent_pid = Some(pid);
        }
        let home = ws_dir.join("home");
        let run = ws_dir.join("run");
        let template = ws_dir.join("template");
        match job.transition {
            Transition::Start => {
                self.stop_agent(&state, log, Duration::ZERO, &cancel)
                    .await?;
                end_leftovers(&job.workspace_id, log).await;
                if *cancel.borrow() {
                    bail!("canceled before start");
                }
                self.prepare_root()?;
                std::fs::create_dir_all(&ws_dir)
                    .with_context(|| format!("creating {}", ws_dir.display()))?;
                let ws_mode = match self.isolation {
                    Isolation::User => 0o711,
                    Isolation::None => 0o700,
                };
                std::fs::set_permissions(&ws_dir, std::fs::Permissions::from_mode(ws_mode))?;
                log.info(
                    "provision",
                    format!("home (persistent): {}", home.display()),
                )
                .await;
                std::fs::create_dir_all(&home)
                    .with_context(|| format!("creating {}", home.display()))?;
                let run_as = self.run_as(job, &home).await?;
                own_tree(&home, &run_as)?;
                std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
                log.info("provision", format!("runs as: {}", run_as.isolation))
                    .await;
                remove_dir(&run)?;
                std::fs::create_dir_all(&run)
                    .with_context(|| format!("creating {}", run.display()))?;
                own(&run, &run_as)?;
                std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
                log.info(
                    "provision",
                    format!("run (ephemeral, rebuilt): {}", run.display()),
                )
                .await;
                workspace_env::write_template_files(&template, &job.files)?;
                log.info(
                    "provision",
                    format!(
                        "template files (read-only): {} ({} files)",
                        template.display(),
                        job.files.len()
                    ),
                )
                .await;
                let bundle = job
                    .bootstrap
                    .as_ref()
                    .context("start job without a bootstrap bundle")?;
                let bundle_path = run.join("bootstrap.json");
                crate::ca::write_private(&bundle_path, &serde_json::to_vec(bundle)?)?;
                own(&bundle_path, &run_as)?;
                let bin = self.agent_binary_for(&run_as).await?;
                let pid =
                    self.spawn_agent(job, &bin, &run_as, &home, &run, &template, &bundle_path)?;
                std::fs::write(&pid_file, pid.to_string())?;
                log.info(
                    "agent",
                    format!("started outpost-agent (pid {pid}); waiting for it to connect"),
                )
                .await;
                let isolated = |mut r: Resource| {
                    r.details
                        .insert("isolation".into(), run_as.isolation.clone());
                    r
                };
                let resources = vec![
                    isolated(dir_resource("home", &home, true)),
                    dir_resource("run", &run, false),
                    Resource {
                        name: "agent".into(),
                        kind: "process".into(),
                        persistent: false,
                        details: BTreeMap::from([
                            ("pid".to_string(), pid.to_string()),
                            ("user".to_string(), run_as.user.clone()),
                        ]),
                    },
                ];
                Ok((
                    resources,
                    serde_json::to_value(LocalState {
                        agent_pid: Some(pid),
                    })?,
                ))
            }
            Transition::Stop => {
                self.stop_agent(&state, log, self.stop_grace, &cancel)
                    .await?;
                end_leftovers(&job.workspace_id, log).await;
                remove_file(&pid_file)?;
                remove_dir(&run)?;
                log.info(
                    "provision",
                    format!("removed {}; {} is kept", run.display(), home.display()),
                )
                .await;
                let mut home_res = dir_resource("home", &home, true);
                home_res
                    .details
                    .insert("isolation".into(), self.stopped_isolation(job));
                Ok((vec![home_res], serde_json::to_value(LocalState::default())?))
            }
            Transition::Delete => {
                self.stop_agent(&state, log, self.stop_grace, &cancel)
                    .await?;
                end_leftovers(&job.workspace_id, log).await;
                remove_dir(&run)?;
                log.info("provision", format!("removed {}", run.display()))
                    .await;
                if template.exists() {
                    workspace_env::write_template_files(&template, &BTreeMap::new())?;
                    remove_dir(&template)?;
                }
                remove_dir(&home)?;
                log.info("provision", format!("removed {}", home.display()))
                    .await;
                if self.isolation == Isolation::User && users::remove(&job.workspace_id).await? {
                    log.info(
                        "provision",
                        format!("removed user {}", users::name_for(&job.workspace_id)),
                    )
                    .await;
                }
                remove_dir(&ws_dir)?;
                Ok((Vec::new(), serde_json::Value::Null))
            }
        }
    }

    fn stopped_isolation(&self, job: &ProvisionerJob) -> String {
        match self.isolation {
            Isolation::User => format!("user {}", users::name_for(&job.workspace_id)),
            Isolation::None => "none".into(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_agent(
        &self,
        job: &ProvisionerJob,
        bin: &Path,
        run_as: &RunAs,
        home: &Path,
        run: &Path,
        template: &Path,
        bundle: &Path,
    ) -> anyhow::Result<i32> {
        use std::os::unix::process::CommandExt;
        let log_path = run.join("agent.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        own(&log_path, run_as)?;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--bootstrap-file")
            .arg(bundle)
            .arg("--state-dir")
            .arg(run.join("agent"))
            // Sharing control's user, only the agent's own process tree is the workspace's.
            .arg("--port-owners")
            .arg(match self.isolation {
                Isolation::User => "uid",
                Isolation::None => "tree",
            })
            .current_dir(home)
            // Nothing of control's environment but the allowlist.
            .env_clear()
            .envs(workspace_env::inherited())
            .envs(workspace_env::identity(job))
            .env("HOME", home)
            .env("USER", &run_as.user)
            .env("LOGNAME", &run_as.user)
            .env("SHELL", &run_as.shell)
            .env(TEMPLATE_DIR_ENV, template)
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if self.isolation == Isolation::User {
            // std drops the supplementary groups when it changes the uid as root.
            cmd.uid(run_as.uid.as_raw()).gid(run_as.gid.as_raw());
        }
        sys::new_session(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id() as i32;
        // Reap it when it exits while we live; after a control restart init does.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// Waits `grace` for the agent's process group to exit by itself, then SIGTERM, then SIGKILL.
    /// A cancel during the grace period leaves the agent alone and ends the build.
    async fn stop_agent(
        &self,
        state: &LocalState,
        log: &JobLog,
        grace: Duration,
        cancel: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let Some(pgid) = state.agent_pid else {
            return Ok(());
        };
        if !outpost_common::process::group_alive(pgid) {
            return Ok(());
        }
        if !grace.is_zero() {
            log.info("agent", "waiting for the agent to shut down")
                .await;
            if wait_gone(pgid, grace, Some(cancel)).await {
                log.info("agent", "the agent exited").await;
                return Ok(());
            }
            if *cancel.borrow() {
                bail!("canceled while waiting for the agent to shut down");
            }
        }
        log.line(
            "agent",
            "warn",
            format!("sending SIGTERM to the agent's process group {pgid}"),
        )
        .await;
        outpost_common::process::signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
        if wait_gone(pgid, Duration::from_secs(3), None).await {
            return Ok(());
        }
        log.line(
            "agent",
            "warn",
            format!("sending SIGKILL to process group {pgid}"),
        )
        .await;
        outpost_common::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        if !wait_gone(pgid, Duration::from_secs(2), None).await {
            bail!("the agent's process group {pgid} survived SIGKILL");
        }
        Ok(())
    }
}

/// The `outpost-agent` binary: `given`, else next to this executable, else on PATH.
pub fn find_agent_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("outpost-agent");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("outpost-agent");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("cannot find the outpost-agent binary: put it next to `outpost` or on PATH, or pass --agent-binary")
}

/// Hands `path` to the workspace's user (a no-op without isolation).
fn own(path: &Path, run_as: &RunAs) -> anyhow::Result<()> {
    if Uid::effective().is_root() {
        nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid))
            .with_context(|| format!("giving {} to {}", path.display(), run_as.user))?;
    }
    Ok(())
}

/// Hands the home to the workspace's user, everything in it too when its top belongs to
/// someone else (a home made before isolation, or by an earlier user of the same name).
fn own_tree(home: &Path, run_as: &RunAs) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !Uid::effective().is_root() || std::fs::metadata(home)?.uid() == run_as.uid.as_raw() {
        return Ok(());
    }
    fn walk(p: &Path, uid: Uid, gid: Gid) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(uid.as_raw()), Some(gid.as_raw()))?;
        if p.symlink_metadata()?.is_dir() {
            for e in std::fs::read_dir(p)?.flatten() {
                walk(&e.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(home, run_as.uid, run_as.gid)
        .with_context(|| format!("giving {} to {}", home.display(), run_as.user))
}

/// May a user other than the owner read and run `path` (every directory above it passable)?
fn reachable_by_others(path: &Path) -> bool {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return false;
    };
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(&abs) & 0o005 == 0o005 && abs.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// Copies `from` to `to` (root's, 0755) unless `to` already holds the same size and mtime.
fn copy_if_changed(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let src = std::fs::metadata(from)?;
    let stamp = format!("{} {}.{}", src.len(), src.mtime(), src.mtime_nsec());
    let stamp_file = to.with_extension("stamp");
    if to.exists() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(());
    }
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, to)?;
    std::fs::write(&stamp_file, stamp)?;
    Ok(())
}

/// True once the group is gone; false at the deadline or on cancel.
/// Ends what the agent's process group did not hold: processes a session or script started in a
/// session of their own (`nohup ... &`, `setsid`), and an agent orphaned by a control crash
/// between starting it and recording its pid. They all carry the workspace's marker.
async fn end_leftovers(workspace_id: &str, log: &JobLog) {
    let marker = outpost_common::process::workspace_marker(workspace_id);
    let n = outpost_common::process::kill_all_with_env(&marker);
    if n > 0 {
        log.info(
            "agent",
            format!("ended {n} leftover process(es) of the workspace"),
        )
        .await;
    }
}

async fn wait_gone(pgid: i32, within: Duration, cancel: Option<&watch::Receiver<bool>>) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if !outpost_common::process::group_alive(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline || cancel.is_some_and(|c| *c.borrow()) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remove_file(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

fn remove_dir(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}
