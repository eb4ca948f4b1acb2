//! Agent status and workspace health, with the reasons users see; heartbeat statistics.

use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

const T: Duration = Duration::from_secs(30);

fn stats_and_disconnection(backend: Backend) -> R {
    let s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    // Real statistics arrive with the heartbeats (every second here).
    let (w, _) = s.wait_for("dev", T, |w| {
        w["agent"]["stats"]["cpu_cores"].as_u64().unwrap_or(0) > 0
            && w["agent"]["lifecycle"] == "ready"
    })?;
    let st = &w["agent"]["stats"];
    assert!(
        st["mem_total_bytes"].as_u64().unwrap_or(0)
            > st["mem_used_bytes"].as_u64().unwrap_or(u64::MAX)
    );
    assert!(
        st["home_disk_total_bytes"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    assert!(st["home_disk_used_bytes"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(st["system_uptime_secs"].as_u64().unwrap_or(0) > 0);
    assert!(
        st["agent_rss_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "{st}"
    );
    assert!(st["load1"].as_f64().is_some() && st["cpu_percent"].as_f64().is_some());
    assert_eq!(
        st["sessions"],
        serde_json::json!({"ssh": 0, "vscode": 0, "jetbrains": 0, "pty": 0, "port_forward": 0})
    );
    assert_eq!(w["agent"]["lifecycle"], "ready");
    let shown = s.ok(&["show", "dev"])?;
    assert!(shown.contains("Stats      cpu"), "{shown}");

    // A silent agent (frozen) is disconnected after 3 heartbeat intervals, with the reason.
    let pid = agent_pid(&w).expect("pid");
    signal(pid, libc::SIGSTOP);
    let (w, _) = s.wait_for("dev", T, |w| w["agent"]["status"] == "disconnected")?;
    assert_eq!(w["status"], "running");
    assert_eq!(w["health"]["healthy"], false);
    let reasons = w["health"]["reasons"].to_string();
    assert!(
        reasons.contains("agent disconnected: last heard from"),
        "{reasons}"
    );
    let list = s.ok(&["list"])?;
    assert!(
        list.contains("unhealthy") && list.contains("disconnected"),
        "{list}"
    );
    // Back again: connected and healthy.
    signal(pid, libc::SIGCONT);
    s.wait_for("dev", T, |w| {
        w["agent"]["status"] == "connected" && w["health"]["healthy"] == true
    })?;
    Ok(())
}
both_backends!(stats_and_disconnection);

fn connection_timeout(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--agent-binary", "/bin/true"])?;
    let dir = s.dir.path().join("quick");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\n[agent]\nconnection_timeout = \"2s\"\n",
    )?;
    s.ok(&["templates", "push", dir.to_str().unwrap_or_default()])?;
    s.json(&["create", "ws", "-t", "quick", "--no-wait"])?;
    let (w, _) = s.wait_for("ws", T, |w| w["latest_build"]["status"] == "succeeded")?;
    assert_eq!(w["agent"]["status"], "connecting");
    assert_eq!(
        w["health"]["healthy"], true,
        "still within its connection timeout"
    );
    let (w, _) = s.wait_for("ws", T, |w| w["agent"]["status"] == "timeout")?;
    assert_eq!(
        w["status"], "starting",
        "never running: the agent never polled"
    );
    let reasons = w["health"]["reasons"].to_string();
    assert!(reasons.contains("did not connect within 2s"), "{reasons}");
    // The CLI's create gives up on such a workspace with a clear message.
    let out = s.cli(&["create", "ws2", "-t", "quick"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the agent did not connect"));
    Ok(())
}
both_backends!(connection_timeout);
