//! Template apps' health checks, and the listening TCP ports of the workspace.

use std::sync::Arc;
use std::time::Duration;

use outpost_api::{AppHealth, AppSpec, ListeningPort};

use crate::state::Agent;

/// Starts one checker per app with a health check; apps without one are `disabled`. A check is an
/// HTTP GET that must answer below 400 within the interval (at most 10 s); the app is healthy
/// after a success and unhealthy after `threshold` failures in a row (initializing until then).
pub fn start_health_checks(
    apps: &[AppSpec],
    agent: &Arc<Agent>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no HTTP client for app health checks");
            return Vec::new();
        }
    };
    let mut tasks = Vec::new();
    for app in apps {
        let Some(hc) = app.healthcheck.clone() else {
            agent.set_app_health(&app.slug, AppHealth::Disabled);
            continue;
        };
        agent.set_app_health(&app.slug, AppHealth::Initializing);
        let slug = app.slug.clone();
        let client = client.clone();
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_secs(hc.interval_secs.max(1));
            let mut failures = 0u32;
            let mut ever_healthy = false;
            loop {
                let ok = client
                    .get(&hc.url)
                    .timeout(every.min(Duration::from_secs(10)))
                    .send()
                    .await
                    .map(|r| r.status().as_u16() < 400)
                    .unwrap_or(false);
                if ok {
                    failures = 0;
                    ever_healthy = true;
                    agent.set_app_health(&slug, AppHealth::Healthy);
                } else {
                    failures = failures.saturating_add(1);
                    if failures >= hc.threshold {
                        agent.set_app_health(&slug, AppHealth::Unhealthy);
                    } else if !ever_healthy {
                        agent.set_app_health(&slug, AppHealth::Initializing);
                    }
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    tasks
}

/// TCP ports in LISTEN state (IPv4 and IPv6) held by the workspace's processes (who they are:
/// [`crate::procs`]), with the program's name. The agent's own ports are left out, and so is
/// whatever else runs on the host (the local provisioner shares the host's network).
pub fn listening_ports(owners: crate::procs::PortOwners) -> Vec<ListeningPort> {
    crate::procs::workspace_ports(owners)
        .into_iter()
        .map(|(port, process)| ListeningPort { port, process })
        .collect()
}
