//! Workspace commands: create, list, show, start/stop/restart/update/delete, cancel, logs; the
//! build follower that streams a build's log and waits for the agent.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use outpost_api::*;

use super::ctx::*;
use crate::config::*;

pub(crate) async fn create(ctx: &Ctx, args: CreateArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let req = CreateWorkspaceRequest {
        name: args.name.clone(),
        template: args.template,
        parameters: parse_params(&args.params)?,
    };
    let ws: Workspace = client.post("/api/v1/workspaces", &req).await?;
    if !ctx.json {
        eprintln!(
            "Creating workspace {} from template {} (v{})",
            ws.name, ws.template, ws.template_version
        );
    }
    finish(ctx, &client, &args.name, &ws.latest_build, args.no_wait).await
}

pub(crate) async fn list(ctx: &Ctx, all: bool) -> anyhow::Result<()> {
    let list: Vec<Workspace> = if all {
        ctx.client()?.get("/api/v1/workspaces?all=true").await?
    } else {
        ctx.client()?.workspaces().await?
    };
    ctx.print(&list, || {
        if list.is_empty() {
            println!("No workspaces yet: create one with `outpost create NAME --template base`.");
            return;
        }
        let mut rows = vec![[
            "NAME",
            "OWNER",
            "STATUS",
            "HEALTH",
            "TEMPLATE",
            "AGENT",
            "LAST BUILD",
        ]
        .map(String::from)
        .to_vec()];
        for w in &list {
            rows.push(vec![
                w.name.clone(),
                w.owner.clone(),
                w.status.to_string(),
                if w.health.healthy {
                    "healthy".into()
                } else {
                    "unhealthy".into()
                },
                format!(
                    "{} v{}{}",
                    w.template,
                    w.template_version,
                    if w.outdated { " (outdated)" } else { "" }
                ),
                w.agent
                    .as_ref()
                    .map(|a| format!("{:?}", a.status).to_lowercase())
                    .unwrap_or_else(|| "-".into()),
                format!(
                    "#{} {} {}",
                    w.latest_build.number,
                    w.latest_build.transition.as_str(),
                    ago(w.latest_build.created_at)
                ),
            ]);
        }
        print_table(rows);
    })
}

pub(crate) async fn show(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let w = ctx.client()?.workspace(name).await?;
    ctx.print(&w, || print_workspace(&w))
}

pub(crate) async fn cancel(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let b: Build = ctx
        .client()?
        .post(
            &format!(
                "/api/v1/workspaces/{}/cancel",
                outpost_api::percent_encode(name)
            ),
            &serde_json::json!({}),
        )
        .await?;
    ctx.print(&b, || {
        println!("build #{} is {}", b.number, b.status.as_str())
    })
}

pub(crate) async fn logs(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<()> {
    crate::provisioner::sys::default_sigpipe();
    let client = ctx.client()?;
    if !args.build {
        let json = ctx.json;
        client
            .agent_logs(&args.name, args.source.as_deref(), args.follow, |l| {
                print_log(json, &l)
            })
            .await?;
        return Ok(());
    }
    let w = client.workspace(&args.name).await?;
    if args.follow {
        let json = ctx.json;
        client
            .follow_build_logs(&w.latest_build.id, |l| print_log(json, &l))
            .await?;
    } else {
        let lines: Vec<LogLine> = fetch_logs(&client, &w.latest_build.id).await?;
        for l in &lines {
            print_log(ctx.json, l);
        }
    }
    Ok(())
}

pub(crate) async fn fetch_logs(client: &Client, build_id: &str) -> anyhow::Result<Vec<LogLine>> {
    let mut out = Vec::new();
    client
        .follow_build_logs_once(build_id, |l| out.push(l))
        .await?;
    Ok(out)
}

pub(crate) fn print_log(json: bool, l: &LogLine) {
    if json {
        if let Ok(s) = serde_json::to_string(l) {
            println!("{s}");
        }
    } else {
        println!("[{}] {}", l.stage, l.output);
    }
}

pub(crate) fn print_workspace(w: &Workspace) {
    println!("Workspace  {} (owner {})", w.name, w.owner);
    println!("Status     {}", w.status);
    println!("Health     {}", health_str(w));
    println!(
        "Template   {} v{}{}",
        w.template,
        w.template_version,
        if w.outdated {
            " (outdated: `outpost update` moves it to the active version)"
        } else {
            ""
        }
    );
    let b = &w.latest_build;
    println!(
        "Build      #{} {} {} ({}){}",
        b.number,
        b.transition.as_str(),
        b.status.as_str(),
        match (&b.initiator, b.reason.as_str()) {
            (Some(who), "initiator") => format!("by {who}"),
            (None, "initiator") => "by control".to_string(),
            (_, reason) => format!("{reason}, by the scheduler"),
        },
        b.error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    match &w.agent {
        Some(a) => {
            println!(
                "Agent      {} ({:?}, lifecycle {:?}{})",
                a.id,
                a.status,
                a.lifecycle,
                a.last_seen_at
                    .map(|t| format!(", seen {}", ago(t)))
                    .unwrap_or_default()
            );
            if let Some(t) = a.cert_expires_at {
                let left = (t - crate::store::now_ms()) / 1000;
                if left > 0 {
                    println!(
                        "Identity   certificate expires in {}m{}s",
                        left / 60,
                        left % 60
                    );
                } else {
                    println!("Identity   certificate expired {}s ago", -left);
                }
            }
            if let Some(st) = &a.stats {
                println!(
                    "Stats      cpu {:.0}% of {} cores, load {:.2}, mem {} / {} MiB, home disk {} / {} GiB, agent up {}s",
                    st.cpu_percent,
                    st.cpu_cores,
                    st.load1,
                    st.mem_used_bytes >> 20,
                    st.mem_total_bytes >> 20,
                    st.home_disk_used_bytes >> 30,
                    st.home_disk_total_bytes >> 30,
                    st.agent_uptime_secs
                );
            }
        }
        None => println!("Agent      -"),
    }
    if let Some(i) = &w.isolation {
        println!("Isolation  {i}");
    }
    super::schedule::print_schedule(w);
    for (k, v) in &w.parameters {
        println!("Parameter  {k} = {v:?}");
    }
    for r in &w.resources {
        let details: Vec<String> = r.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "Resource   {} ({}, {}) {}",
            r.name,
            r.kind,
            if r.persistent {
                "persistent"
            } else {
                "ephemeral"
            },
            details.join(" ")
        );
    }
}

pub(crate) async fn action(ctx: &Ctx, a: ActionArgs, act: WorkspaceAction) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let req = BuildRequest {
        action: act,
        parameters: parse_params(&a.params)?,
    };
    let b: Build = client
        .post(
            &format!(
                "/api/v1/workspaces/{}/builds",
                outpost_api::percent_encode(&a.name)
            ),
            &req,
        )
        .await?;
    finish(ctx, &client, &a.name, &b, a.no_wait).await
}

/// Follows the build (and the start build a restart or update queues after its stop) while
/// streaming logs, then waits for the agent when the workspace is starting. Fails when the
/// workspace ends failed or canceled.
pub(crate) async fn finish(
    ctx: &Ctx,
    client: &Client,
    name: &str,
    first: &Build,
    no_wait: bool,
) -> anyhow::Result<()> {
    if no_wait {
        return ctx.print(first, || {
            println!(
                "queued build #{} ({})",
                first.number,
                first.transition.as_str()
            )
        });
    }
    let json = ctx.json;
    let mut build = first.clone();
    let spinner = Spinner::new(!json && std::io::stderr().is_terminal());
    // Each build's log is streamed once: the loop below comes back here while it waits for the
    // agent, and following the same build again would print its lines again.
    let mut followed: Option<String> = None;
    let ws = loop {
        if followed.as_deref() != Some(build.id.as_str()) {
            let streamed = client
                .follow_build_logs(&build.id, |l| {
                    if !json {
                        spinner.clear();
                        eprintln!("[{}] {}", l.stage, l.output);
                    }
                })
                .await;
            match streamed {
                Ok(()) => {}
                // Too many log streams open already (other terminals): wait without one.
                Err(e) if e.status() == Some(429) => {
                    if !json {
                        spinner.clear();
                        eprintln!("(not streaming the build log: {e}; `outpost logs {name} --build` shows it)");
                    }
                }
                Err(e) => return Err(e.into()),
            }
            followed = Some(build.id.clone());
        }
        let w = match client.workspace(name).await {
            Ok(w) => w,
            Err(e) if e.status() == Some(404) && build.transition == Transition::Delete => {
                if !json {
                    spinner.clear();
                    eprintln!("Workspace {name} deleted.");
                } else {
                    println!("{}", serde_json::json!({"name": name, "status": "deleted"}));
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if w.latest_build.id != build.id {
            build = w.latest_build.clone();
            continue;
        }
        match w.status {
            WorkspaceStatus::Stopped if build.then_start => {
                // The follow-up start build is being queued.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            WorkspaceStatus::Starting if w.latest_build.status == JobStatus::Succeeded => {
                let agent_status = w.agent.as_ref().map(|a| a.status);
                if agent_status == Some(AgentStatus::Timeout) {
                    break w;
                }
                spinner.tick("waiting for the agent to connect");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            WorkspaceStatus::Pending
            | WorkspaceStatus::Starting
            | WorkspaceStatus::Stopping
            | WorkspaceStatus::Deleting
            | WorkspaceStatus::Canceling => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break w,
        }
    };
    spinner.clear();
    ctx.print(&ws, || {
        eprintln!(
            "Workspace {} is {} ({})",
            ws.name,
            ws.status,
            health_str(&ws)
        );
        if ws.status == WorkspaceStatus::Running {
            if let Some(home) = ws
                .resources
                .iter()
                .find(|r| r.name == "home")
                .and_then(|r| r.details.get("path"))
            {
                eprintln!("Its home directory is {home}");
            }
        }
    })?;
    match ws.status {
        WorkspaceStatus::Failed => bail!(
            "the build failed: {}; see `outpost logs {name}`",
            ws.latest_build.error.clone().unwrap_or_default()
        ),
        WorkspaceStatus::Canceled => bail!("the build was canceled"),
        WorkspaceStatus::Starting => bail!("the agent did not connect; see `outpost show {name}`"),
        _ => Ok(()),
    }
}

/// A one-line spinner on stderr (only on a terminal).
pub(crate) struct Spinner {
    on: bool,
    frame: std::cell::Cell<usize>,
}

impl Spinner {
    fn new(on: bool) -> Self {
        Spinner {
            on,
            frame: std::cell::Cell::new(0),
        }
    }
    fn tick(&self, msg: &str) {
        if !self.on {
            return;
        }
        const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
        let i = self.frame.get();
        self.frame.set(i + 1);
        eprint!("\r{} {msg}\x1b[K", FRAMES[i % 4]);
    }
    fn clear(&self) {
        if self.on && self.frame.get() > 0 {
            eprint!("\r\x1b[K");
        }
    }
}
