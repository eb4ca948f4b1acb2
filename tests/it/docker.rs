//! The docker provisioner against the real Docker engine: a workspace is a container with its
//! home on a volume. Its life (home kept across stop, start, restart, update and a kill -9 of
//! control mid-build; no container while stopped; no volume after delete), its limits read
//! from the container's cgroup, and attacks from inside: the Docker socket, host paths,
//! control's data, the bootstrap token in `docker inspect`.
//!
//! The image is built locally (scripts/test-image.sh: debootstrap, import, then
//! templates/docker/Dockerfile on top), cached by tag. Without Docker these tests print
//! `SKIPPED (Docker): ...`; under `.ci/run` (OUTPOST_CI=1) a missing Docker fails.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(120);

/// The test image's tag, built once per run; None (with the reason printed) without Docker.
fn image() -> R<Option<String>> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    let r = IMAGE.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "docker info: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return Err(format!("no docker CLI: {e}")),
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-image.sh");
        let o = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    match r {
        Ok(tag) => Ok(Some(tag.clone())),
        Err(e) if std::env::var("OUTPOST_CI").is_ok_and(|v| v == "1") => {
            anyhow::bail!("Docker is required under .ci/run (OUTPOST_CI=1): {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (Docker): {e}. Start dockerd (scripts/ci-services.sh does).");
            Ok(None)
        }
    }
}

/// The Docker bridge's gateway address: where control listens for the containers' agents.
/// (Docker does not always record the gateway; the `docker0` address is it.)
fn bridge_gateway() -> R<String> {
    let o = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        ])
        .output()?;
    anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gw = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !gw.is_empty() {
        return Ok(gw);
    }
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no address on docker0: {text}"))
}

fn docker_json(args: &[&str]) -> R<Value> {
    let o = Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// Names of the containers (all states) or volumes carrying the workspace's id label.
fn labelled(kind: &str, workspace_id: &str) -> R<Vec<String>> {
    let filter = format!("label=outpost.workspace_id={workspace_id}");
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        _ => vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
    };
    let o = Command::new("docker").args(&args).output()?;
    anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

fn server(backend: Backend) -> R<Server> {
    Server::start_opts(
        backend,
        Opts {
            agent_host: Some(bridge_gateway()?),
            ..Default::default()
        },
    )
}

fn push_template(s: &Server, a: &Client, image: &str) -> R {
    let t = s.dir.path().join("docker-tpl");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/docker");
    std::fs::create_dir_all(t.join("scripts"))?;
    // The repository's template, with the test image as the default and a test script.
    let manifest = std::fs::read_to_string(src.join("template.toml"))?
        .replace(
            "default = \"outpost-dev:latest\"",
            &format!("default = {image:?}"),
        )
        .replace("default = \"2g\"", "default = \"256m\"");
    std::fs::write(t.join("template.toml"), manifest)?;
    std::fs::copy(src.join("scripts/welcome.sh"), t.join("scripts/welcome.sh"))?;
    a.ok(&[
        "templates",
        "push",
        t.to_str().unwrap_or_default(),
        "--name",
        "docker",
    ])?;
    Ok(())
}

fn running(w: &Value) -> bool {
    w["status"] == "running" && w["agent"]["status"] == "connected"
}

/// The memory limit the container's cgroup enforces (v1 or v2), read from inside.
const CGROUP_MEMORY: &str =
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";

fn docker_workspace_life(backend: Backend) -> R {
    let Some(image) = image()? else { return Ok(()) };
    let s = server(backend)?;
    let a = Client::admin(&s)?;
    push_template(&s, &a, &image)?;
    let out = a
        .command(&["create", "dev", "-t", "docker", "-p", "cpus=1"])
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("home (persistent): created volume outpost-"),
        "{log}"
    );
    let (w, _) = s.wait_for("dev", T, running)?;
    let id = w["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(w["isolation"], "container");
    let res: Vec<(String, String, bool)> = w["resources"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").into(),
                r["kind"].as_str().unwrap_or("").into(),
                r["persistent"] == true,
            )
        })
        .collect();
    assert!(
        res.contains(&("container".into(), "docker_container".into(), false)),
        "{res:?}"
    );
    assert!(
        res.contains(&("home".into(), "docker_volume".into(), true)),
        "{res:?}"
    );
    let shown = a.ok(&["show", "dev"])?;
    assert!(
        shown.contains("Isolation  container")
            && shown.contains("memory=256 MiB")
            && shown.contains("cpus=1"),
        "{shown}"
    );

    // Inside: the workspace user, its home on the volume, the limits, parameters, files.
    let out = a.sh(
        "dev",
        "id -u; id -un; echo $HOME; echo keep > ~/keep.txt; stat -c %u ~; echo $OUTPOST_PARAM_MEMORY; cat $OUTPOST_TEMPLATE_DIR/scripts/welcome.sh | head -1; ",
    )?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..6],
        &["1000", "dev", "/home/dev", "1000", "256m", "#!/bin/sh"],
        "{out}"
    );
    assert_eq!(
        a.sh("dev", CGROUP_MEMORY)?.trim(),
        (256u64 << 20).to_string()
    );
    let cpu = a.sh("dev", "cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)")?;
    let f: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        f.len() == 2 && (f[0] / f[1] - 1.0).abs() < 0.01,
        "one CPU: {cpu}"
    );
    // The agent is the container's main process under Docker's init, which reaps zombies.
    let init = a.sh("dev", "tr '\\0' ' ' < /proc/1/cmdline")?;
    assert!(
        init.contains("docker-init") && init.contains("outpost-agent"),
        "{init}"
    );
    // The welcome script ran from the template's files.
    eventually(|| {
        let l = a
            .ok(&["logs", "dev", "--source", "welcome"])
            .unwrap_or_default();
        Ok(l.contains("workspace dev").then_some(()))
    })?;

    // docker inspect shows no token; the container has no Docker socket, publishes no port,
    // mounts nothing of the host but the agent binary, runs unprivileged.
    let c = &docker_json(&["inspect", &format!("outpost-{id}")])?[0];
    let text = c.to_string();
    assert!(
        !text.contains("obt_") && !text.contains("\"token\""),
        "no bootstrap token in inspect"
    );
    assert_eq!(c["Config"]["User"], "1000:1000");
    assert_eq!(c["HostConfig"]["Privileged"], false);
    assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    assert!(c["HostConfig"]["SecurityOpt"]
        .to_string()
        .contains("no-new-privileges"));
    assert!(c["HostConfig"]["PortBindings"]
        .as_object()
        .is_none_or(|m| m.is_empty()));
    for m in c["Mounts"].as_array().unwrap_or(&vec![]) {
        match m["Type"].as_str() {
            Some("volume") => assert_eq!(m["Destination"], "/home/dev"),
            Some("bind") => {
                assert_eq!(m["Destination"], "/opt/outpost/bin/outpost-agent");
                assert_eq!(m["RW"], false);
            }
            other => panic!("unexpected mount {other:?}: {m}"),
        }
    }
    for (k, v) in [
        ("outpost.workspace_id", id.as_str()),
        ("outpost.workspace", "dev"),
        ("outpost.owner", "admin"),
        ("outpost.template", "docker"),
    ] {
        assert_eq!(c["Config"]["Labels"][k], v);
    }

    // Attacks from inside, as the workspace's user.
    let data = s.data();
    let attack = |what: &str, cmd: &str| {
        format!("if ( {cmd} ) >/dev/null 2>&1; then echo \"LEAK: {what}\"; fi\n")
    };
    let mut script = String::new();
    script += &attack(
        "the Docker socket",
        "test -e /var/run/docker.sock || test -e /run/docker.sock",
    );
    script += &attack(
        "the Docker API over TCP",
        "curl -s -m 3 http://host.docker.internal:2375/version",
    );
    script += &attack("control's data dir", &format!("ls {}", data.display()));
    script += &attack("a host path", &format!("ls {}", s.dir.path().display()));
    script += &attack("root", "sudo -n true");
    script += &attack(
        "write the agent binary",
        "echo x >> /opt/outpost/bin/outpost-agent",
    );
    script += &attack(
        "change the template files",
        "echo x >> $OUTPOST_TEMPLATE_DIR/template.toml",
    );
    script += &attack(
        "the bootstrap token in the environment",
        "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q obt_",
    );
    script += &attack("another filesystem mounted from the host", "grep -v -e ' / ' -e /home/dev -e /opt/outpost/bin -e /etc/hosts -e /etc/hostname -e /etc/resolv.conf -e ' /proc' -e ' /dev' -e ' /sys' /proc/self/mountinfo | grep -q .");
    script += "echo attacks-done\n";
    let out = a.sh("dev", &script)?;
    assert!(
        out.contains("attacks-done") && !out.contains("LEAK"),
        "{out}"
    );

    // Another user's workspace, with a server on all its addresses: reachable from inside
    // it, not from A's (the workspaces' network has inter-container traffic off).
    let b = Client::new_user(&s, "bob")?;
    b.ok(&["create", "bobs", "-t", "docker"])?;
    let wb = b.json(&["show", "bobs"])?;
    assert!(running(&wb), "{wb}");
    b.sh(
        "bobs",
        "(setsid nohup python3 -m http.server 8766 --bind 0.0.0.0 --directory /tmp >/dev/null 2>&1 &)",
    )?;
    let cb = &docker_json(&[
        "inspect",
        &format!("outpost-{}", wb["id"].as_str().unwrap_or("")),
    ])?[0];
    let b_ip = cb["NetworkSettings"]["Networks"]["outpost-workspaces"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!b_ip.is_empty(), "on the workspaces' network: {cb}");
    let probe = format!("curl -s -o /dev/null -m 3 http://{b_ip}:8766/");
    eventually(|| Ok(b.ssh("bobs", &probe)?.status.success().then_some(())))?;
    let o = a.ssh("dev", &probe)?;
    assert!(!o.status.success(), "A reached B's port at {b_ip}:8766");
    b.ok(&["delete", "bobs"])?;

    // A server inside listens: it is listed as a port and reachable through control's proxy
    // as for a local workspace (nothing is published on the host).
    a.sh(
        "dev",
        "mkdir -p ~/www && echo '{\"from\": \"container\"}' > ~/www/marker.json && (setsid nohup python3 -m http.server 8765 --bind 127.0.0.1 --directory ~/www >/dev/null 2>&1 &)",
    )?;
    s.wait_for("dev", T, |w| {
        w["agent"]["stats"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["port"] == 8765))
    })?;
    let (st, body) = http(
        "GET",
        &format!("{}/@admin/dev/ports/8765/marker.json", s.url),
        Some(&s.token()?),
        None,
    )?;
    assert_eq!((st, body), (200, serde_json::json!({"from": "container"})));

    // Stop: no container, the volume stays. Start: the home is back.
    a.ok(&["stop", "dev"])?;
    assert!(
        labelled("container", &id)?.is_empty(),
        "a stopped workspace has no container"
    );
    assert_eq!(labelled("volume", &id)?, vec![format!("outpost-{id}-home")]);
    a.ok(&["start", "dev"])?;
    s.wait_for("dev", T, running)?;
    assert_eq!(a.sh("dev", "cat ~/keep.txt")?, "keep\n");
    // Restart with a new memory limit: rebuilt with it, home kept.
    a.ok(&["restart", "dev", "-p", "memory=320m"])?;
    s.wait_for("dev", T, running)?;
    assert_eq!(
        a.sh("dev", CGROUP_MEMORY)?.trim(),
        (320u64 << 20).to_string()
    );
    assert_eq!(a.sh("dev", "cat ~/keep.txt")?, "keep\n");
    // Update to a version with another image (the same image under another tag): home kept.
    // The tag is this workspace's own: the run on the other store removes its tag when done.
    let other = format!("{image}-retagged-{}", id.get(..8).unwrap_or("x"));
    let st = Command::new("docker")
        .args(["tag", &image, &other])
        .status()?;
    anyhow::ensure!(st.success());
    let t = s.dir.path().join("docker-tpl");
    let m = std::fs::read_to_string(t.join("template.toml"))?.replace(
        &format!("default = {image:?}"),
        &format!("default = {other:?}"),
    );
    std::fs::write(t.join("template.toml"), m)?;
    a.ok(&[
        "templates",
        "push",
        t.to_str().unwrap_or_default(),
        "--name",
        "docker",
    ])?;
    a.ok(&["update", "dev", "-p", &format!("image={other}")])?;
    let (w, _) = s.wait_for("dev", T, running)?;
    let c = &docker_json(&["inspect", &format!("outpost-{id}")])?[0];
    assert_eq!(c["Config"]["Image"], other.as_str(), "{w}");
    assert_eq!(a.sh("dev", "cat ~/keep.txt")?, "keep\n");

    // Delete: nothing left.
    a.ok(&["delete", "dev"])?;
    assert!(labelled("container", &id)?.is_empty());
    assert!(
        labelled("volume", &id)?.is_empty(),
        "delete leaves no volume"
    );
    let _ = Command::new("docker").args(["rmi", &other]).output();
    Ok(())
}
both_backends!(docker_workspace_life);

/// A missing image that cannot be pulled fails the build with a readable reason; a kill -9 of
/// control mid-build leaves no orphan container or volume, and the home survives.
fn docker_failures_and_crashes(backend: Backend) -> R {
    let Some(image) = image()? else { return Ok(()) };
    // DOCKER_HOST is honoured: an engine that is not there fails the build and says where.
    let lost = Server::start_opts(
        fresh(&backend),
        Opts {
            env: &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
            ..Default::default()
        },
    )?;
    let la = Client::admin(&lost)?;
    push_template(&lost, &la, &image)?;
    let o = la.command(&["create", "x", "-t", "docker"]).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot reach Docker at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    drop(lost);

    let mut s = server(backend)?;
    let a = Client::admin(&s)?;
    push_template(&s, &a, &image)?;

    // A registry on loopback that refuses: the pull fails fast, and says what to do.
    let o = a
        .command(&[
            "create",
            "nope",
            "-t",
            "docker",
            "-p",
            "image=127.0.0.1:9/outpost/none:1",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("pulling image 127.0.0.1:9/outpost/none:1"),
        "{err}"
    );
    assert!(
        err.contains("could not be pulled") && err.contains("templates/docker"),
        "{err}"
    );
    let w = a.json(&["show", "nope"])?;
    assert_eq!(w["status"], "failed");
    a.ok(&["delete", "nope"])?;

    // kill -9 of control while a start build runs; the retried build reuses or removes
    // what the first made.
    a.ok(&["create", "dev", "-t", "docker"])?;
    let (w, _) = s.wait_for("dev", T, running)?;
    let id = w["id"].as_str().unwrap_or_default().to_string();
    a.sh("dev", "echo precious > ~/data.txt")?;
    a.ok(&["stop", "dev"])?;
    a.json(&["start", "dev", "--no-wait"])?;
    eventually(|| Ok((!labelled("container", &id)?.is_empty()).then_some(())))?;
    s.kill();
    s.restart()?;
    let (w, _) = s.wait_for("dev", T, |w| {
        running(w) || w["status"] == "failed" || w["status"] == "stopped"
    })?;
    if !running(&w) {
        a.ok(&["start", "dev"])?;
        s.wait_for("dev", T, running)?;
    }
    assert_eq!(a.sh("dev", "cat ~/data.txt")?, "precious\n");
    assert_eq!(
        labelled("container", &id)?.len(),
        1,
        "one container, no orphans"
    );
    assert_eq!(labelled("volume", &id)?.len(), 1);
    a.ok(&["delete", "dev"])?;
    assert!(labelled("container", &id)?.is_empty());
    assert!(labelled("volume", &id)?.is_empty());
    Ok(())
}
both_backends!(docker_failures_and_crashes);

/// A missing image is pulled, with the pull's progress in the build log: from a registry on
/// loopback (`registry.py`) serving the test image, under a tag this run made up.
fn docker_pulls_a_missing_image(backend: Backend) -> R {
    let Some(image) = image()? else { return Ok(()) };
    let s = server(backend)?;
    let a = Client::admin(&s)?;
    push_template(&s, &a, &image)?;
    let saved = s.dir.path().join("image.tar");
    let st = Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(&image)
        .status()?;
    anyhow::ensure!(st.success(), "docker save");
    let tag = format!("t{}", uuid_like());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("it/registry.py");
    let mut registry = Killed(
        Command::new("python3")
            .arg(&script)
            .arg(&saved)
            .args(["outpost/pulled", &tag])
            .stdout(std::process::Stdio::piped())
            .spawn()?,
    );
    let mut port = String::new();
    if let Some(out) = registry.0.stdout.as_mut() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut port)?;
    }
    let reference = format!("127.0.0.1:{}/outpost/pulled:{tag}", port.trim());
    // The pulled image goes when the test ends, however it ends.
    let _pulled = RemovedImage(reference.clone());
    let result = (|| -> R {
        let o = a
            .command(&[
                "create",
                "pulled",
                "-t",
                "docker",
                "-p",
                &format!("image={reference}"),
            ])
            .output()?;
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        assert!(log.contains(&format!("pulling image {reference}")), "{log}");
        assert!(
            log.contains("Pulling fs layer") && log.contains("Pull complete"),
            "each layer's progress in the build log: {log}"
        );
        s.wait_for("pulled", T, running)?;
        assert_eq!(
            a.sh("pulled", "id -un; cat /etc/outpost-pulled")?,
            format!("dev\noutpost/pulled:{tag}\n")
        );
        a.ok(&["delete", "pulled"])?;
        Ok(())
    })();
    drop(registry);
    result
}
both_backends!(docker_pulls_a_missing_image);

/// A child process killed (and reaped) when dropped, a failed assertion included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An image removed from the engine when dropped.
struct RemovedImage(String);

impl Drop for RemovedImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}
