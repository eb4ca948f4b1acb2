//! `cargo xtask bench agent-start [--count N] [--postgres-url URL]` (issue 19): how fast a
//! workspace's agent comes up on this machine. For N workspaces in turn on the local provisioner
//! (the real release server and agent): from the provisioner starting the agent process (the
//! build log's `started outpost-agent (pid N)` line, stamped by control) to the agent's first
//! accepted heartbeat (`first_connected_at`: after its bootstrap, the one-time token exchanged
//! for a certificate over TLS, and the mTLS connection it then uses), which is when the
//! workspace can be reached; and the agent process's own CPU time in its first second.
//! Bar (issue 19): under 50 ms. The start build itself succeeds as soon as the process is
//! started (it does not wait for the agent), so the workspace reads `running` before that: the
//! bench reports both.

use std::time::Duration;

use anyhow::Context;
use outpost_api::*;

use crate::bench::{first_user, pct, start_server, wait_status, write_results};

const BAR_MS: f64 = 50.0;

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut count = 20usize;
    let mut pg: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => count = it.next().context("--count N")?.parse()?,
            "--postgres-url" => pg = Some(it.next().context("--postgres-url URL")?.clone()),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    crate::cargo(&["build", "--release", "--bins"])?;
    let bin = crate::root().join("target/release");
    outpost_common::tls::install_provider();
    let tmp = std::env::temp_dir().join(format!("outpost-agent-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut extra: Vec<&str> = vec!["--isolation", "none"];
    if let Some(u) = &pg {
        extra.push("--postgres-url");
        extra.push(u);
    }
    let server = start_server(&bin, &tmp, ("127.0.0.1:0", "127.0.0.1:0"), &extra)?;
    let store = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut connect, mut running, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let token = first_user(&server.url, &server.data, "bench-password").await?;
        let c = Client::new(&server.url, Some(token));
        for i in 0..count {
            let name = format!("s{i}");
            let _: Workspace = c
                .post(
                    "/api/v1/workspaces",
                    &CreateWorkspaceRequest {
                        name: name.clone(),
                        template: "base".into(),
                        parameters: Default::default(),
                    },
                )
                .await?;
            wait_status(&c, &name, WorkspaceStatus::Running, Duration::from_secs(60)).await?;
            let w = c.workspace(&name).await?;
            let mut started: Option<(i64, u32)> = None;
            c.follow_build_logs_once(&w.latest_build.id, |l| {
                if let Some(rest) = l.output.strip_prefix("started outpost-agent (pid ") {
                    let pid = rest.split(')').next().and_then(|p| p.parse().ok());
                    if let Some(pid) = pid {
                        started = Some((l.created_at, pid));
                    }
                }
            })
            .await?;
            let (t0, pid) = started.context("no `started outpost-agent` line in the build log")?;
            let first = w
                .agent
                .as_ref()
                .and_then(|a| a.first_connected_at)
                .context("the agent has no first connection")?;
            let done = w
                .latest_build
                .completed_at
                .context("the build has no end")?;
            connect.push((first - t0) as f64);
            running.push((done - t0) as f64);
            // Its first second: wait until the process is a second old, then read its CPU.
            let age_ms = outpost_common::clock::now_ms() - t0;
            if age_ms < 1000 {
                tokio::time::sleep(Duration::from_millis((1000 - age_ms) as u64)).await;
            }
            if let Some(ms) = cpu_ms(pid) {
                cpu.push(ms);
            }
            let _: Build = c
                .post(
                    &format!("/api/v1/workspaces/{name}/builds"),
                    &BuildRequest {
                        action: WorkspaceAction::Delete,
                        parameters: Default::default(),
                    },
                )
                .await?;
            wait_status(&c, &name, WorkspaceStatus::Deleted, Duration::from_secs(60)).await?;
            eprint!("\r{}/{count} agents started", i + 1);
        }
        eprintln!();
        anyhow::Ok(())
    })?;
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
    let bar = Some(BAR_MS);
    let rows = [
        (
            "agent process start to its first accepted heartbeat (connected), p50",
            pct(&mut connect, 0.5),
            "ms",
            "bar (issue 19)",
            bar,
        ),
        (
            "agent process start to its first accepted heartbeat (connected), p90",
            pct(&mut connect, 0.9),
            "ms",
            "bar (issue 19)",
            bar,
        ),
        (
            "agent process start to the start build succeeding, p50",
            pct(&mut running, 0.5),
            "ms",
            "bar (issue 19)",
            bar,
        ),
        (
            "agent process start to the start build succeeding, p90",
            pct(&mut running, 0.9),
            "ms",
            "bar (issue 19)",
            bar,
        ),
        (
            "agent CPU in its first second, p50",
            pct(&mut cpu, 0.5),
            "ms",
            "none",
            None,
        ),
        (
            "agent CPU in its first second, max",
            pct(&mut cpu, 1.0),
            "ms",
            "none",
            None,
        ),
    ];
    write_results(
        "agent-start",
        &format!(
            "Agent start, {count} workspaces on the local provisioner, {store} ({})",
            crate::bench::machine()
        ),
        &rows,
    )
}

/// The process's CPU time so far in ms: the sum over its threads of the time they ran
/// (`/proc/PID/task/*/schedstat`, nanoseconds; `/proc/PID/stat`'s 10 ms ticks read 0 here).
fn cpu_ms(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = t.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(path).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e6)
}
