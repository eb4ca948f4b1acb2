//! Prometheus metrics (issue 18): `/metrics` on `--metrics-listen` only (not the public
//! listener), parsed with a Prometheus text parser after a workspace's life (create, SSH through
//! the relay, stop): requests by route, builds by transition and outcome, relay bytes, held
//! polls, workspaces by status and template, jobs queued all moved as they should.

use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

pub fn scrape(port: u16) -> R<prometheus_parse::Scrape> {
    let body = rt().block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await
    })?;
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Ok(prometheus_parse::Scrape::parse(lines)?)
}

pub fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|m| m.metric == name)
        .find(|m| labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
        .map(|m| match &m.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

fn metrics_after_a_workspace_life(backend: Backend) -> R {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let s = Server::start_with(backend, &["--metrics-listen", &addr])?;
    // Not on the public listener.
    let (code, _) = http("GET", &format!("{}/metrics", s.url), None, None)?;
    assert_ne!(code, 200);

    let before = scrape(port)?;
    assert_eq!(
        value(
            &before,
            "outpost_provisioner_jobs",
            &[("status", "pending")]
        ),
        Some(0.0)
    );
    let admin = crate::clients::Client::admin(&s)?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["agent"]["status"] == "connected")?;
    let o = admin.ssh("dev", "head -c 300000 /dev/zero")?;
    assert_eq!(o.stdout.len(), 300_000);
    let m = eventually(|| {
        let m = scrape(port)?;
        Ok((value(&m, "outpost_agent_polls_held", &[]) >= Some(1.0)).then_some(m))
    })?;
    assert_eq!(
        value(
            &m,
            "outpost_workspaces",
            &[("status", "running"), ("template", "base")]
        ),
        Some(1.0)
    );
    let down = value(
        &m,
        "outpost_relay_bytes_total",
        &[("kind", "ssh"), ("direction", "down")],
    )
    .unwrap_or(0.0);
    assert!(down >= 300_000.0, "{down}");
    assert!(
        value(
            &m,
            "outpost_relay_bytes_total",
            &[("kind", "ssh"), ("direction", "up")]
        ) > Some(0.0)
    );
    // The session is over: its stream closes (asynchronously, so: soon).
    eventually(|| {
        let m = scrape(port)?;
        Ok(
            (value(&m, "outpost_relay_streams_open", &[("kind", "ssh")]) == Some(0.0))
                .then_some(()),
        )
    })?;
    assert!(
        value(
            &m,
            "outpost_http_requests_total",
            &[
                ("route", "/api/v1/workspaces"),
                ("method", "POST"),
                ("status", "201")
            ]
        )
        .or_else(|| value(
            &m,
            "outpost_http_requests_total",
            &[
                ("route", "/api/v1/workspaces"),
                ("method", "POST"),
                ("status", "200")
            ]
        )) >= Some(1.0),
        "{:?}",
        m.samples
            .iter()
            .filter(|x| x.metric == "outpost_http_requests_total")
            .map(|x| (&x.labels, &x.value))
            .collect::<Vec<_>>()
    );
    assert!(
        value(
            &m,
            "outpost_builds_total",
            &[("transition", "start"), ("outcome", "succeeded")]
        ) >= Some(1.0)
    );
    assert!(
        value(&m, "outpost_agents", &[]).is_some(),
        "no agents gauge"
    );

    // The agent's own figures, re-exported per workspace: an open SSH session counted.
    let mut open = admin
        .ssh_command("dev", "sleep 60")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    eventually(|| {
        let m = scrape(port)?;
        Ok((value(
            &m,
            "outpost_workspace_sessions",
            &[("workspace", "admin/dev"), ("kind", "ssh")],
        ) == Some(1.0))
        .then_some(()))
    })?;
    let m = scrape(port)?;
    assert!(
        value(
            &m,
            "outpost_workspace_memory_used_bytes",
            &[("workspace", "admin/dev")]
        ) > Some(0.0)
    );
    // Bytes the agent forwarded: `ssh -W` to a listener here that sends 200,000 bytes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let target = listener.local_addr()?.to_string();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        std::io::Write::write_all(&mut c, &[7u8; 200_000])
    });
    let fwd = admin
        .ssh_stdio_forward("dev", &target)
        .stdin(std::process::Stdio::null())
        .output()?;
    let _ = sender.join();
    assert_eq!(
        fwd.stdout.len(),
        200_000,
        "{}",
        String::from_utf8_lossy(&fwd.stderr)
    );
    eventually(|| {
        let m = scrape(port)?;
        let into_workspace = value(
            &m,
            "outpost_workspace_forwarded_bytes",
            &[("workspace", "admin/dev"), ("direction", "in")],
        );
        let out_of = value(
            &m,
            "outpost_workspace_forwarded_bytes",
            &[("workspace", "admin/dev"), ("direction", "out")],
        );
        Ok((into_workspace.unwrap_or(0.0) + out_of.unwrap_or(0.0) >= 200_000.0).then_some(()))
    })?;
    // Script runs by outcome: `scripted` runs one start script that succeeds and one that fails.
    let dir = s.dir.path().join("scripted");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\n\n[[scripts]]\nname = \"fine\"\nscript = \"true\"\n\n[[scripts]]\nname = \"broken\"\nscript = \"exit 3\"\n",
    )?;
    s.ok(&["templates", "push", dir.to_str().unwrap_or_default()])?;
    s.ok(&["create", "scripted", "--template", "scripted"])?;
    eventually(|| {
        let m = scrape(port)?;
        let n = |outcome| {
            value(
                &m,
                "outpost_workspace_script_runs",
                &[("workspace", "admin/scripted"), ("outcome", outcome)],
            )
        };
        Ok(
            (n("succeeded") == Some(1.0)
                && n("failed") == Some(1.0)
                && n("timed_out") == Some(0.0))
            .then_some(()),
        )
    })?;
    let _ = open.kill();
    let _ = open.wait();
    s.ok(&["stop", "dev"])?;
    let m = eventually(|| {
        let m = scrape(port)?;
        Ok((value(
            &m,
            "outpost_workspaces",
            &[("status", "stopped"), ("template", "base")],
        ) == Some(1.0))
        .then_some(m))
    })?;
    assert!(
        value(
            &m,
            "outpost_builds_total",
            &[("transition", "stop"), ("outcome", "succeeded")]
        ) >= Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "outpost_workspaces",
            &[("status", "running"), ("template", "base")]
        ),
        None
    );
    assert_eq!(
        value(&m, "outpost_provisioner_jobs", &[("status", "running")]),
        Some(0.0)
    );
    // Latency histograms are there, with a +Inf bucket counting every request.
    assert!(m
        .samples
        .iter()
        .any(|x| x.metric == "outpost_http_request_duration_seconds"));
    // Store query latency, by the store module that asked: workspaces were read and agents
    // heard from.
    for area in ["workspaces", "agents", "users"] {
        assert!(
            value(
                &m,
                "outpost_store_query_duration_seconds",
                &[("area", area)]
            ) >= Some(1.0),
            "no timed {area} queries: {:?}",
            m.samples
                .iter()
                .filter(|x| x.metric == "outpost_store_query_duration_seconds")
                .map(|x| &x.labels)
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}
both_backends!(metrics_after_a_workspace_life);
