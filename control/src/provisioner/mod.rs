//! Provisioner daemons: take jobs from control over the API (never the store), run them, stream
//! their logs while renewing the job's lease, and report the resources they made.
//! `outpost server` runs some in-process; `outpost provisioner start` runs one elsewhere.

pub mod docker;
pub mod local;
pub(crate) mod sys;
pub mod workspace_env;

use std::time::Duration;

use outpost_api::*;
use tokio::sync::{mpsc, watch};

/// A log sink for one job; lines are batched to control by the daemon.
#[derive(Clone)]
pub struct JobLog {
    tx: mpsc::Sender<NewLogLine>,
}

impl JobLog {
    pub async fn line(&self, stage: &str, level: &str, output: impl Into<String>) {
        let _ = self
            .tx
            .send(NewLogLine {
                stage: stage.to_string(),
                level: level.to_string(),
                output: output.into(),
            })
            .await;
    }
    pub async fn info(&self, stage: &str, output: impl Into<String>) {
        self.line(stage, "info", output).await
    }
}

pub struct Daemon {
    pub client: Client,
    pub id: String,
    pub local: std::sync::Arc<local::LocalProvisioner>,
    pub docker: std::sync::Arc<docker::DockerProvisioner>,
}

/// The provisioner types a daemon takes jobs for.
pub const TYPES: &[&str] = &["local", "docker"];

impl Daemon {
    /// Takes and runs jobs until `shutdown`. A job in hand is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let req = AcquireJobRequest {
                daemon_id: self.id.clone(),
                provisioners: TYPES.iter().map(|t| t.to_string()).collect(),
                version: Some(env!("CARGO_PKG_VERSION").to_string()),
            };
            let acquired = tokio::select! {
                r = self.client.post::<_, Option<ProvisionerJob>>("/api/v1/provisioner/acquire", &req) => r,
                _ = crate::server::until_shutdown(&mut shutdown) => return,
            };
            match acquired {
                Ok(Some(job)) => {
                    backoff = Duration::from_millis(200);
                    failures = 0;
                    self.execute(job).await;
                }
                Ok(None) => failures = 0,
                Err(e) => {
                    // The first failure in a row, then about once a minute: loud enough for an
                    // operator, not a flood.
                    if failures.is_multiple_of(12) {
                        tracing::warn!(error = %e, daemon = %self.id, server = %self.client.base(), "cannot take jobs from the server; retrying (check --url and --key)");
                    } else {
                        tracing::debug!(error = %e, daemon = %self.id, "acquire failed");
                    }
                    failures = failures.wrapping_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = crate::server::until_shutdown(&mut shutdown) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn execute(&self, job: ProvisionerJob) {
        tracing::info!(job = %job.job_id, transition = job.transition.as_str(), workspace = %job.workspace_name, "running job");
        let (tx, mut rx) = mpsc::channel::<NewLogLine>(4096);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let log = JobLog { tx };
        // Flusher: sends logs in batches and renews the lease at a third of its length.
        let client = self.client.clone();
        let daemon_id = self.id.clone();
        let job_id = job.job_id.clone();
        let renew = Duration::from_millis((job.lease_secs * 1000 / 3).max(100));
        let flusher = tokio::spawn(async move {
            let mut open = true;
            while open {
                let mut batch = Vec::new();
                let deadline = tokio::time::sleep(Duration::from_millis(100).min(renew));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        l = rx.recv() => match l {
                            Some(l) => { batch.push(l); if batch.len() >= 500 { break; } }
                            None => { open = false; break; }
                        },
                        _ = &mut deadline => break,
                    }
                }
                let req = JobUpdateRequest {
                    daemon_id: daemon_id.clone(),
                    logs: batch,
                };
                let path = format!("/api/v1/provisioner/jobs/{job_id}/update");
                match client.post::<_, JobUpdateResponse>(&path, &req).await {
                    Ok(r) if r.canceled => {
                        let _ = cancel_tx.send(true);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "job update failed"),
                }
            }
        });

        let ran = match job.manifest.provisioner.as_str() {
            "local" => self.local.run(&job, &log, cancel_rx.clone()).await,
            "docker" => self.docker.run(&job, &log, cancel_rx.clone()).await,
            other => Err(anyhow::anyhow!(
                "provisioner {other:?} is not supported by this daemon (it runs {})",
                TYPES.join(", ")
            )),
        };
        let outcome = match ran {
            Ok(_) if *cancel_rx.borrow() => JobOutcome::Canceled,
            Ok((resources, state)) => {
                log.info("done", format!("{} succeeded", job.transition.as_str()))
                    .await;
                JobOutcome::Succeeded { resources, state }
            }
            Err(e) if *cancel_rx.borrow() => {
                log.line("cancel", "warn", format!("canceled: {e:#}")).await;
                JobOutcome::Canceled
            }
            Err(e) => {
                log.line("error", "error", format!("{e:#}")).await;
                JobOutcome::Failed {
                    error: format!("{e:#}"),
                }
            }
        };
        drop(log);
        let _ = flusher.await;
        let req = CompleteJobRequest {
            daemon_id: self.id.clone(),
            outcome,
        };
        let path = format!("/api/v1/provisioner/jobs/{}/complete", job.job_id);
        // Retry completion for a while: control may be restarting. If it never lands, the lease
        // runs out and control retries or fails the job.
        for attempt in 0..20u32 {
            match self.client.post::<_, serde_json::Value>(&path, &req).await {
                Ok(_) => return,
                Err(e) if e.status() == Some(409) => return,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "job completion failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
                }
            }
        }
    }
}
