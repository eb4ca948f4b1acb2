//! Template apps' health checks, and the listening TCP ports of the workspace.

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// TCP ports in LISTEN state (IPv4 and IPv6) held by the workspace's processes (those started
/// by its sessions and scripts, which inherit `OUTPOST_WORKSPACE_ID`, orphans included), with the
/// program's name. The agent's own ports are left out, and so is whatever else runs on the host
/// (the local provisioner shares the host's network).
pub fn listening_ports(workspace_id: &str) -> Vec<ListeningPort> {
    let marker = outpost_common::process::workspace_marker(workspace_id);
    let mut by_inode: HashMap<u64, u16> = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            for (port, inode) in parse_listening(&text) {
                by_inode.insert(inode, port);
            }
        }
    }
    let own = socket_inodes(std::process::id());
    let mut owners: HashMap<u64, String> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let inodes = socket_inodes(pid);
            if inodes.iter().any(|i| by_inode.contains_key(i))
                && outpost_common::process::has_env(pid, &marker)
            {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                for i in inodes {
                    owners.entry(i).or_insert_with(|| name.clone());
                }
            }
        }
    }
    let mut ports: BTreeMap<u16, Option<String>> = BTreeMap::new();
    for (inode, port) in by_inode {
        if own.contains(&inode) {
            continue;
        }
        let Some(name) = owners.get(&inode).cloned() else {
            continue;
        };
        let name = Some(name).filter(|n| !n.is_empty());
        let e = ports.entry(port).or_insert(None);
        if e.is_none() {
            *e = name;
        }
    }
    ports
        .into_iter()
        .map(|(port, process)| ListeningPort { port, process })
        .collect()
}

fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut set = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                if let Some(i) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok())
                {
                    set.insert(i);
                }
            }
        }
    }
    set
}

/// (port, inode) of the LISTEN (state 0A) rows of /proc/net/tcp or tcp6.
fn parse_listening(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            let inode = f[9].parse().ok()?;
            Some((port, inode))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_rows() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A0B2 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(parse_listening(text), vec![(8000, 4242)]);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 99 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_listening(v6), vec![(3000, 99)]);
        assert!(parse_listening("garbage\nmore garbage").is_empty());
    }

    #[tokio::test]
    async fn ports_of_the_workspaces_processes_only() {
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own_port = own.local_addr().unwrap().port();
        let listener = |ws: &str| {
            let mut child = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)",
                ])
                .env("OUTPOST_WORKSPACE_ID", ws)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            (child, line.trim().parse::<u16>().unwrap())
        };
        let (mut ours, port) = listener("ws-1");
        let (mut theirs, other_port) = listener("ws-2");
        let ports = listening_ports("ws-1");
        let _ = ours.kill();
        let _ = theirs.kill();
        assert!(
            ports
                .iter()
                .any(|p| p.port == port && p.process.as_deref() == Some("python3")),
            "{ports:?}"
        );
        assert!(!ports.iter().any(|p| p.port == other_port), "{ports:?}");
        assert!(!ports.iter().any(|p| p.port == own_port), "{ports:?}");
    }
}
