//! Benchmarks and the demo: they drive the real `outpost` server through its API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use outpost_api::*;
use serde_json::json;

pub fn main(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("agents") => crate::agents::main(&args[1..]),
        Some("agents-load") => crate::agents_many::load_main(&args[1..]),
        Some("ssh") => crate::sshbench::main(&args[1..]),
        Some("terminal") => crate::termbench::main(&args[1..]),
        Some("rig") => crate::sshbench::hold(),
        Some("schedule") => crate::schedbench::main(&args[1..]),
        Some("agent-start") => crate::agentstart::main(&args[1..]),
        Some("lifecycle") => {
            let mut count = 20usize;
            let mut running = 100usize;
            let mut pg: Option<String> = None;
            let mut provisioner = "local".to_string();
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--count" => count = it.next().context("--count N")?.parse()?,
                    "--running" => running = it.next().context("--running N")?.parse()?,
                    "--postgres-url" => pg = Some(it.next().context("--postgres-url URL")?.clone()),
                    "--provisioner" => {
                        provisioner = it.next().context("--provisioner local|docker")?.clone()
                    }
                    other => bail!("unknown flag {other}"),
                }
            }
            anyhow::ensure!(
                provisioner == "local" || provisioner == "docker",
                "--provisioner local|docker"
            );
            crate::cargo(&["build", "--release", "--bins"])?;
            lifecycle(
                &crate::root().join("target/release"),
                count,
                running,
                pg,
                &provisioner,
            )
        }
        _ => bail!(
            "usage: cargo xtask bench lifecycle [--provisioner local|docker] [--count N] [--running N] [--postgres-url URL]\n       cargo xtask bench agents [--count N] [--steady-secs S] [--sample M] [--postgres-url URL] [--replicas N [--daemons 1,2,4] [--builds N]]\n       cargo xtask bench ssh [--gib N] [--runs N]\n       cargo xtask bench terminal [--keystrokes N]\n       cargo xtask bench schedule [--count N] [--postgres-url URL] [--no-postgres] [--no-sqlite] [--keep]\n       cargo xtask bench agent-start [--count N] [--postgres-url URL]"
        ),
    }
}

pub struct ServerProc {
    pub child: Child,
    pub url: String,
    /// Where agents reach it (`server.json`'s `agent_url`).
    pub agent_url: String,
    pub data: PathBuf,
}

impl ServerProc {
    /// The server's own pid: the child's, or, when it runs under a wrapper (heaptrack), the
    /// wrapper's child that is `outpost`.
    pub fn pid(&self) -> u32 {
        let me = self.child.id();
        let is_outpost = |pid: u32| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|p| p.file_name().is_some_and(|n| n == "outpost"))
        };
        if is_outpost(me) {
            return me;
        }
        std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|p| is_outpost(*p))
            .unwrap_or(me)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(
    bin: &Path,
    data: &Path,
    listen: (&str, &str),
    extra: &[&str],
) -> anyhow::Result<ServerProc> {
    start_server_q(bin, data, listen, extra, true, &[])
}

/// [`start_server`] run by `wrapper` (a command and its flags, such as heaptrack's).
/// Control's agent-listener TLS handshakes so far, (full, resumed), from its `/metrics` on
/// `addr` (`--metrics-listen`).
pub async fn tls_handshakes(addr: &str) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let count = |kind: &str| {
        let head = format!("outpost_agent_tls_handshakes_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&head))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((count("full"), count("resumed")))
}

pub fn start_server_wrapped(
    bin: &Path,
    data: &Path,
    listen: (&str, &str),
    extra: &[&str],
    wrapper: &[String],
) -> anyhow::Result<ServerProc> {
    start_server_q(bin, data, listen, extra, true, wrapper)
}

fn start_server_q(
    bin: &Path,
    data: &Path,
    listen: (&str, &str),
    extra: &[&str],
    quiet: bool,
    wrapper: &[String],
) -> anyhow::Result<ServerProc> {
    std::fs::create_dir_all(data)?;
    let _ = std::fs::remove_file(data.join("server.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))?;
    let mut cmd = match wrapper.split_first() {
        Some((w, flags)) => {
            let mut c = Command::new(w);
            c.args(flags).arg(bin.join("outpost"));
            c
        }
        None => Command::new(bin.join("outpost")),
    };
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", listen.0, "--agent-listen", listen.1])
        .args(extra)
        .stdin(Stdio::null());
    if quiet {
        cmd.stdout(log.try_clone()?).stderr(log);
    }
    let child = cmd.spawn().context("starting outpost server")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::fs::read(data.join("server.json")) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                let url = v["api_url"].as_str().unwrap_or_default().to_string();
                let agent_url = v["agent_url"].as_str().unwrap_or_default().to_string();
                return Ok(ServerProc {
                    child,
                    url,
                    agent_url,
                    data: data.to_path_buf(),
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not start; see {}",
                data.join("server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn first_user(url: &str, data: &Path, password: &str) -> anyhow::Result<String> {
    let setup_token = std::fs::read_to_string(data.join("setup-token"))
        .context("no setup token: this data dir already has users")?;
    let c = Client::new(url, None);
    let r: LoginResponse = c
        .post(
            "/api/v1/setup",
            &SetupRequest {
                setup_token: setup_token.trim().into(),
                username: "admin".into(),
                password: password.into(),
            },
        )
        .await?;
    Ok(r.token)
}

pub(crate) async fn wait_status(
    c: &Client,
    name: &str,
    want: WorkspaceStatus,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match c.workspace(name).await {
            Ok(w) if w.status == want => return Ok(()),
            Ok(w) if w.status == WorkspaceStatus::Failed => {
                bail!("{name} failed: {:?}", w.latest_build.error)
            }
            Err(e) if e.status() == Some(404) && want == WorkspaceStatus::Deleted => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if Instant::now() > deadline {
            bail!("{name} did not become {want} in {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn action(c: &Client, name: &str, action: WorkspaceAction) -> anyhow::Result<()> {
    let _: Build = c
        .post(
            &format!("/api/v1/workspaces/{name}/builds"),
            &BuildRequest {
                action,
                parameters: Default::default(),
            },
        )
        .await?;
    Ok(())
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {} GiB RAM", mem / 1024 / 1024)
}

fn lifecycle(
    bin: &Path,
    count: usize,
    running: usize,
    pg: Option<String>,
    provisioner: &str,
) -> anyhow::Result<()> {
    outpost_common::tls::install_provider();
    let docker = provisioner == "docker";
    // The docker run measures the anchor first, side by side with ours in the same command.
    let (image, mut anchor_run) = if docker {
        let image = crate::dockerbench::image()?;
        eprintln!("anchor: docker run --rm {image} true, {count} times");
        let a = crate::dockerbench::anchor(&image, count)?;
        (Some(image), a)
    } else {
        (None, Vec::new())
    };
    let running = if docker { 0 } else { running };
    let tmp = std::env::temp_dir().join(format!("outpost-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut extra: Vec<&str> = vec!["--provisioner-daemons", "4"];
    if let Some(u) = &pg {
        extra.push("--postgres-url");
        extra.push(u);
    }
    let agent_listen = if docker {
        format!("{}:0", crate::dockerbench::bridge_gateway()?)
    } else {
        "127.0.0.1:0".to_string()
    };
    let server = start_server_q(bin, &tmp, ("127.0.0.1:0", &agent_listen), &extra, true, &[])?;
    let template = if docker { "docker" } else { "base" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let result = rt.block_on(async {
        let token = first_user(&server.url, &server.data, "bench-password").await?;
        let c = Client::new(&server.url, Some(token));
        if let Some(image) = &image {
            let _: serde_json::Value = c
                .post(
                    "/api/v1/templates/push",
                    &PushTemplateRequest {
                        name: "docker".into(),
                        files: crate::dockerbench::template_files(image)?,
                        activate: true,
                        organization: None,
                    },
                )
                .await?;
        }
        let (mut create, mut stop, mut start, mut delete) = (vec![], vec![], vec![], vec![]);
        for i in 0..count {
            let name = format!("b{i}");
            let t = Instant::now();
            let _: Workspace = c
                .post(
                    "/api/v1/workspaces",
                    &CreateWorkspaceRequest {
                        name: name.clone(),
                        template: template.into(),
                        parameters: Default::default(),
                    },
                )
                .await?;
            wait_status(&c, &name, WorkspaceStatus::Running, Duration::from_secs(60)).await?;
            create.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            action(&c, &name, WorkspaceAction::Stop).await?;
            wait_status(&c, &name, WorkspaceStatus::Stopped, Duration::from_secs(60)).await?;
            stop.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            action(&c, &name, WorkspaceAction::Start).await?;
            wait_status(&c, &name, WorkspaceStatus::Running, Duration::from_secs(60)).await?;
            start.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            action(&c, &name, WorkspaceAction::Delete).await?;
            wait_status(&c, &name, WorkspaceStatus::Deleted, Duration::from_secs(60)).await?;
            delete.push(t.elapsed().as_secs_f64() * 1000.0);
            eprint!(
                "\r{}/{count} workspaces through create, stop, start, delete",
                i + 1
            );
        }
        eprintln!();
        // Control's memory with `running` workspaces up.
        let rss_idle = rss_kib(server.child.id());
        let t = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..running {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("r{i}");
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
                wait_status(
                    &c,
                    &name,
                    WorkspaceStatus::Running,
                    Duration::from_secs(180),
                )
                .await
            }));
        }
        for t in tasks {
            t.await??;
        }
        let all_up = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = rss_kib(server.child.id());
        let agents = c.workspaces().await?;
        let mut agent_rss = 0u64;
        let mut n = 0u64;
        for w in &agents {
            if let Some(pid) = w
                .resources
                .iter()
                .find(|r| r.name == "agent")
                .and_then(|r| r.details.get("pid"))
                .and_then(|p| p.parse::<u32>().ok())
            {
                agent_rss += rss_kib(pid);
                n += 1;
            }
        }
        // Clean up: delete them all.
        let mut tasks = Vec::new();
        for w in agents {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                action(&c, &w.name, WorkspaceAction::Delete).await?;
                wait_status(
                    &c,
                    &w.name,
                    WorkspaceStatus::Deleted,
                    Duration::from_secs(180),
                )
                .await
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>((
            create,
            stop,
            start,
            delete,
            rss_idle,
            rss,
            all_up,
            agent_rss / n.max(1),
        ))
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
    let (mut create, mut stop, mut start, mut delete, rss_idle, rss, all_up, agent_rss) = result?;

    let mut metrics = Vec::new();
    let mut md = format!(
        "### bench lifecycle ({provisioner}, {store}), {}\n\nMachine: {}. {count} workspaces through create, stop, start, delete, one at a time{}.\n\n| metric | value | anchor | anchor value | ratio |\n|---|---|---|---|---|\n",
        date(),
        machine(),
        if docker {
            format!("; the anchor, `docker run --rm {} true`, {count} times in the same run", image.as_deref().unwrap_or(""))
        } else {
            format!("; then {running} created at once")
        }
    );
    let mut row = |metric: &str,
                   value: f64,
                   unit: &str,
                   anchor: &str,
                   anchor_value: Option<f64>| {
        let ratio = anchor_value.map(|a| value / a);
        metrics.push(json!({"metric": metric, "value": round(value), "unit": unit, "anchor": anchor, "anchor_value": anchor_value.map(round), "ratio": ratio.map(round)}));
        md.push_str(&format!(
            "| {metric} | {:.1} {unit} | {anchor} | {} | {} |\n",
            value,
            anchor_value
                .map(|a| format!("{a:.1} {unit}"))
                .unwrap_or_else(|| "-".into()),
            ratio
                .map(|r| format!("{r:.3}x"))
                .unwrap_or_else(|| "-".into())
        ));
    };
    let docker_run = (!anchor_run.is_empty()).then(|| pct(&mut anchor_run, 0.5));
    for (name, v) in [
        ("create->running", &mut create),
        ("stop", &mut stop),
        ("start->running", &mut start),
        ("delete", &mut delete),
    ] {
        let median = pct(v, 0.5);
        match (name, docker_run) {
            ("create->running" | "start->running", Some(a)) => row(
                &format!("{name} median"),
                median,
                "ms",
                "docker run --rm IMAGE true (median)",
                Some(a),
            ),
            ("create->running", None) => row(
                &format!("{name} median"),
                median,
                "ms",
                "bar: 100 ms (issue 13)",
                Some(100.0),
            ),
            _ => row(&format!("{name} median"), median, "ms", "-", None),
        }
        row(&format!("{name} p95"), pct(v, 0.95), "ms", "-", None);
    }
    if let Some(a) = docker_run {
        let c = pct(&mut create, 0.5);
        row(
            "create->running median minus the anchor (bar: <= 500 ms)",
            c - a,
            "ms",
            "bar",
            Some(500.0),
        );
        eprintln!(
            "bar create->running <= docker run + 500 ms: {} ({:.0} ms vs {:.0} + 500 ms)",
            if c <= a + 500.0 { "met" } else { "MISSED" },
            c,
            a
        );
    }
    if docker {
        println!("{md}");
        let out = crate::root().join("target/bench");
        std::fs::create_dir_all(&out)?;
        let file = out.join(if pg.is_some() {
            "lifecycle-docker-postgres.json"
        } else {
            "lifecycle-docker.json"
        });
        std::fs::write(&file, serde_json::to_vec_pretty(&metrics)?)?;
        std::fs::write(file.with_extension("md"), md)?;
        eprintln!("wrote {}", file.display());
        return Ok(());
    }
    row(
        "control RSS, idle after the runs",
        rss_idle as f64 / 1024.0,
        "MiB",
        "-",
        None,
    );
    row(
        &format!("control RSS, {running} workspaces running"),
        rss as f64 / 1024.0,
        "MiB",
        "-",
        None,
    );
    row(
        &format!("all {running} created concurrently -> running"),
        all_up,
        "s",
        "-",
        None,
    );
    row(
        "agent RSS (mean)",
        agent_rss as f64 / 1024.0,
        "MiB",
        "-",
        None,
    );
    println!("{md}");
    let out = crate::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let file = out.join(if pg.is_some() {
        "lifecycle-postgres.json"
    } else {
        "lifecycle.json"
    });
    std::fs::write(&file, serde_json::to_vec_pretty(&metrics)?)?;
    std::fs::write(file.with_extension("md"), md)?;
    eprintln!("wrote {}", file.display());
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `cargo xtask demo`: the embedded defaults (SQLite, the local provisioner), the first admin,
/// a running workspace `dev`, and the server left in the foreground.
pub fn demo(bin: &Path, data: &Path) -> anyhow::Result<()> {
    outpost_common::tls::install_provider();
    let fresh = !data.join("outpost.db").exists();
    let mut server = start_server_q(
        bin,
        data,
        ("127.0.0.1:7080", "127.0.0.1:7443"),
        &[],
        true,
        &[],
    )?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")?;
    let config_dir = std::env::var_os("OUTPOST_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config/outpost"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outpost = bin.join("outpost");
    let run_cli = |args: &[&str]| -> anyhow::Result<bool> {
        let st = Command::new(&outpost)
            .args(args)
            .env("OUTPOST_CONFIG_DIR", &config_dir)
            .status()?;
        Ok(st.success())
    };
    let mut password = None;
    if fresh || data.join("setup-token").exists() {
        let pw = format!("demo-{}", std::process::id());
        let token = rt.block_on(first_user(&server.url, data, &pw))?;
        std::fs::create_dir_all(&config_dir)?;
        std::fs::write(
            config_dir.join("session.json"),
            serde_json::to_vec_pretty(&json!({"url": server.url, "token": token}))?,
        )?;
        password = Some(pw);
    }
    let exists = Command::new(&outpost)
        .args(["show", "dev"])
        .env("OUTPOST_CONFIG_DIR", &config_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    let ok = if exists {
        // Start it if it is not running (a failed start just reports).
        let _ = run_cli(&["start", "dev"]);
        true
    } else {
        run_cli(&["create", "dev", "--template", "base"])?
    };
    if !ok {
        bail!(
            "creating the workspace failed; the server log is {}",
            data.join("server.log").display()
        );
    }
    // SSH: upload the user's key (making one for Outpost if there is none), then config-ssh so
    // `ssh dev.outpost` works.
    let ssh_dir = home.join(".ssh");
    let existing = [
        "id_ed25519.pub",
        "id_ecdsa.pub",
        "id_rsa.pub",
        "outpost_ed25519.pub",
    ]
    .iter()
    .map(|f| ssh_dir.join(f))
    .find(|p| p.exists());
    let pubkey = match existing {
        Some(p) => Some(p),
        None => {
            let _ = std::fs::create_dir_all(&ssh_dir);
            let key = ssh_dir.join("outpost_ed25519");
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "outpost", "-f"])
                .arg(&key)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then(|| key.with_extension("pub"))
        }
    };
    if let Some(p) = pubkey {
        let _ = Command::new(&outpost)
            .args(["keys", "add"])
            .arg(&p)
            .env("OUTPOST_CONFIG_DIR", &config_dir)
            .stderr(Stdio::null())
            .status();
        let _ = run_cli(&["config-ssh"]);
    }
    let _ = run_cli(&["list"]);
    println!(
        "\nOutpost is running at {} (data in {}).",
        server.url,
        data.display()
    );
    if let Some(pw) = password {
        println!(
            "Signed in as admin (password {pw}); the session is saved in {}.",
            config_dir.display()
        );
    }
    println!(
        "In a browser: {}/@admin/dev (sign in as admin; Terminal opens a shell in the workspace).\nIn another terminal:\n    ssh dev.outpost         # or: scp, rsync, git, VS Code Remote-SSH to dev.outpost\n    export PATH={}:$PATH\n    outpost ssh dev         # the same through the CLI\n    outpost show dev        # status, health, the home directory\n    outpost stop dev && outpost start dev\nPress Ctrl-C to stop the server (workspace agents keep running and reconnect when it is back).",
        server.url,
        bin.display()
    );
    let _ = server.child.wait();
    Ok(())
}

/// Prints a results table and writes `target/bench/NAME.json` (and `.md`): one row per metric
/// with its anchor (a bar from the issue, or a measured or published reference) and the ratio.
pub fn write_results(
    name: &str,
    title: &str,
    rows: &[(&str, f64, &str, &str, Option<f64>)],
) -> anyhow::Result<()> {
    let mut metrics = Vec::new();
    let mut md = format!(
        "### {title}\n\n| metric | value | anchor | anchor value | ratio |\n|---|---|---|---|---|\n"
    );
    for (metric, value, unit, anchor, anchor_value) in rows {
        let ratio = anchor_value.map(|a| value / a);
        metrics.push(json!({"metric": metric, "value": round(*value), "unit": unit, "anchor": anchor, "anchor_value": anchor_value, "ratio": ratio.map(round)}));
        md.push_str(&format!(
            "| {metric} | {value:.1} {unit} | {anchor} | {} | {} |\n",
            anchor_value
                .map(|a| {
                    if a.abs() < 100.0 {
                        format!("{a:.1} {unit}")
                    } else {
                        format!("{a:.0} {unit}")
                    }
                })
                .unwrap_or_else(|| "-".into()),
            ratio
                .map(|r| format!("{r:.3}x"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    println!("{md}");
    let out = crate::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let file = out.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&metrics)?)?;
    std::fs::write(file.with_extension("md"), md)?;
    eprintln!("wrote {}", file.display());
    Ok(())
}

/// A fresh PostgreSQL database `outpost_bench_TAG_PID` on the server of
/// `$OUTPOST_BENCH_POSTGRES_URL` (default: this machine's, database `test`), or None when there is
/// no PostgreSQL (saying what is left out for lack of one).
pub fn fresh_database(tag: &str, without: &str) -> anyhow::Result<Option<String>> {
    let admin = std::env::var("OUTPOST_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("outpost_bench_{tag}_{}", std::process::id());
    let o = Command::new("psql")
        .args(["-X", "-q", &admin, "-c", &format!("CREATE DATABASE {name}")])
        .output();
    match o {
        Ok(o) if o.status.success() => {
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            Ok(Some(format!("{base}/{name}")))
        }
        _ => {
            eprintln!("no PostgreSQL at {admin}: {without}");
            Ok(None)
        }
    }
}

/// Drops a database [`fresh_database`] made (`url` names it), forcing its connections out.
pub fn drop_database(url: &str) {
    let admin = std::env::var("OUTPOST_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    let _ = Command::new("psql")
        .args([
            "-X",
            "-q",
            &admin,
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}
