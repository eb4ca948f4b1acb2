//! Retention: audit events and agent logs are pruned by age and by count, on a timer
//! (`--audit-retention`, `--audit-max-events`, `--agent-log-retention`,
//! `--agent-log-max-lines`, `--retention-interval`), so neither grows without end.

use std::time::Duration;

use super::AppState;
use crate::store::now_ms;

/// How long and how many of each are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit_age: Duration,
    pub audit_max: i64,
    pub agent_log_age: Duration,
    pub agent_log_max: i64,
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit_age: Duration::from_secs(90 * 86400),
            audit_max: 1_000_000,
            agent_log_age: Duration::from_secs(30 * 86400),
            agent_log_max: 1_000_000,
            every: Duration::from_secs(3600),
        }
    }
}

/// One pass: what was deleted (audit events, agent log lines).
pub async fn prune_once(state: &AppState) -> anyhow::Result<(u64, u64)> {
    let r = state.config.retention;
    let now = now_ms();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let audit = state
        .store
        .prune_audit(now.saturating_sub(ms(r.audit_age)), r.audit_max)
        .await?;
    let logs = state
        .store
        .prune_agent_logs(now.saturating_sub(ms(r.agent_log_age)), r.agent_log_max)
        .await?;
    Ok((audit, logs))
}

/// Prunes every `every` until the server stops.
pub async fn run(state: AppState) {
    let every = state.config.retention.every.max(Duration::from_secs(1));
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = super::until_shutdown(&mut shutdown) => return,
        }
        if !state.cluster.is_leader() {
            continue;
        }
        match prune_once(&state).await {
            Ok((0, 0)) => {}
            Ok((audit, logs)) => {
                tracing::info!(
                    audit_events = audit,
                    agent_log_lines = logs,
                    "retention: pruned"
                )
            }
            Err(e) => tracing::warn!(error = %e, "retention: pruning failed"),
        }
    }
}
