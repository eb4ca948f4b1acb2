//! The `local` provisioner: a workspace is a directory. `home/` is persistent; `run/` is
//! ephemeral and rebuilt on every start; the agent runs in a session of its own with `HOME` set
//! to the home directory. Stop tells the agent to exit (control already queued the command),
//! then SIGTERM, then SIGKILL to its process group, and removes `run/`. Delete also removes
//! `home/`, last (reverse dependency order: agent, ephemeral, persistent).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use outpost_api::*;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{sys, JobLog};

pub struct LocalProvisioner {
    pub root: PathBuf,
    pub agent_binary: Option<PathBuf>,
    pub stop_grace: Duration,
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

impl LocalProvisioner {
    fn agent_binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.agent_binary {
            return Ok(p.clone());
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

    pub async fn run(
        &self,
        job: &ProvisionerJob,
        log: &JobLog,
        cancel: watch::Receiver<bool>,
    ) -> anyhow::Result<(Vec<Resource>, serde_json::Value)> {
        if job.manifest.provisioner != "local" {
            bail!(
                "provisioner {:?} is not supported by this daemon",
                job.manifest.provisioner
            );
        }
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
        match job.transition {
            Transition::Start => {
                self.stop_agent(&state, log, Duration::ZERO, &cancel)
                    .await?;
                end_leftovers(&job.workspace_id, log).await;
                if *cancel.borrow() {
                    bail!("canceled before start");
                }
                log.info(
                    "provision",
                    format!("home (persistent): {}", home.display()),
                )
                .await;
                std::fs::create_dir_all(&home)
                    .with_context(|| format!("creating {}", home.display()))?;
                std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
                remove_dir(&run)?;
                std::fs::create_dir_all(&run)
                    .with_context(|| format!("creating {}", run.display()))?;
                std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
                log.info(
                    "provision",
                    format!("run (ephemeral, rebuilt): {}", run.display()),
                )
                .await;
                let bundle = job
                    .bootstrap
                    .as_ref()
                    .context("start job without a bootstrap bundle")?;
                let bundle_path = run.join("bootstrap.json");
                crate::ca::write_private(&bundle_path, &serde_json::to_vec(bundle)?)?;
                let pid = self.spawn_agent(job, &home, &run, &bundle_path)?;
                std::fs::write(&pid_file, pid.to_string())?;
                log.info(
                    "agent",
                    format!("started outpost-agent (pid {pid}); waiting for it to connect"),
                )
                .await;
                let resources = vec![
                    dir_resource("home", &home, true),
                    dir_resource("run", &run, false),
                    Resource {
                        name: "agent".into(),
                        kind: "process".into(),
                        persistent: false,
                        details: BTreeMap::from([("pid".to_string(), pid.to_string())]),
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
                Ok((
                    vec![dir_resource("home", &home, true)],
                    serde_json::to_value(LocalState::default())?,
                ))
            }
            Transition::Delete => {
                self.stop_agent(&state, log, self.stop_grace, &cancel)
                    .await?;
                end_leftovers(&job.workspace_id, log).await;
                remove_dir(&run)?;
                log.info("provision", format!("removed {}", run.display()))
                    .await;
                remove_dir(&home)?;
                log.info("provision", format!("removed {}", home.display()))
                    .await;
                remove_dir(&ws_dir)?;
                Ok((Vec::new(), serde_json::Value::Null))
            }
        }
    }

    fn spawn_agent(
        &self,
        job: &ProvisionerJob,
        home: &Path,
        run: &Path,
        bundle: &Path,
    ) -> anyhow::Result<i32> {
        let bin = self.agent_binary()?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join("agent.log"))?;
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("--bootstrap-file")
            .arg(bundle)
            .arg("--state-dir")
            .arg(run.join("agent"))
            .current_dir(home)
            .env("HOME", home)
            .env("OUTPOST_WORKSPACE", &job.workspace_name)
            // Everything of the workspace carries it (the agent passes it on): how stop and
            // start find what a previous run left behind.
            .env("OUTPOST_WORKSPACE_ID", &job.workspace_id)
            .env("OUTPOST_WORKSPACE_OWNER", &job.owner)
            .env_remove("OUTPOST_BOOTSTRAP")
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
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
