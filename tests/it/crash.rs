//! Control crashes (SIGKILL): agents keep running and reconnect; builds in flight are never stuck.

use std::time::Duration;

use crate::both_backends;
use crate::harness::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn agent_survives_control_crash(backend: Backend) -> R {
    let mut s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    let w = s.workspace("dev")?;
    let pid = agent_pid(&w).expect("agent pid");
    std::fs::write(home_of(&w).join("data.txt"), "precious")?;

    s.kill();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(pid), "the agent keeps running while control is down");

    let restarted = now_ms();
    s.restart()?;
    let (w, _) = s.wait_for("dev", Duration::from_secs(30), |w| {
        w["status"] == "running"
            && w["agent"]["status"] == "connected"
            && w["agent"]["last_seen_at"].as_i64().unwrap_or(0) > restarted
    })?;
    assert_eq!(
        agent_pid(&w),
        Some(pid),
        "the same agent process reconnected"
    );
    assert_eq!(
        std::fs::read_to_string(home_of(&w).join("data.txt"))?,
        "precious"
    );
    // And it still obeys: stop works after the restart.
    s.ok(&["stop", "dev"])?;
    assert!(!alive(pid));
    Ok(())
}
both_backends!(agent_survives_control_crash);

/// After a restart (kill -9) the agent's TLS session resumes from the ticket the previous run
/// gave it (ticket keys come from the secrets key, not the process): no certificate signature
/// made or checked again (`tls_tickets.rs`'s unit tests: another secrets key opens none).
fn agent_resumes_its_tls_session_after_a_crash(backend: Backend) -> R {
    use crate::metrics::{scrape, value};
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut s = Server::start_with(backend, &["--metrics-listen", &addr])?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", Duration::from_secs(30), |w| {
        w["agent"]["status"] == "connected"
    })?;
    let first = scrape(port)?;
    let handshakes = |m: &prometheus_parse::Scrape, kind: &str| {
        value(m, "outpost_agent_tls_handshakes_total", &[("kind", kind)]).unwrap_or(0.0)
    };
    assert!(
        handshakes(&first, "full") >= 1.0,
        "the bootstrap and first connection are full"
    );

    s.kill();
    let restarted = now_ms();
    s.restart()?;
    s.wait_for("dev", Duration::from_secs(30), |w| {
        w["agent"]["status"] == "connected"
            && w["agent"]["last_seen_at"].as_i64().unwrap_or(0) > restarted
    })?;
    let after = scrape(port)?;
    assert!(
        handshakes(&after, "resumed") >= 1.0,
        "the reconnected agent resumed: full {}, resumed {}",
        handshakes(&after, "full"),
        handshakes(&after, "resumed")
    );
    // And it is served as itself: stop reaches it.
    s.ok(&["stop", "dev"])?;
    Ok(())
}
both_backends!(agent_resumes_its_tls_session_after_a_crash);

fn build_in_flight_is_not_stuck(backend: Backend) -> R {
    let mut s = Server::start(backend)?;
    s.ok(&["create", "dev"])?;
    let w = s.workspace("dev")?;
    let pid = agent_pid(&w).expect("agent pid");
    // A frozen agent does not answer the stop command: the stop build waits out its grace period.
    signal(pid, libc::SIGSTOP);
    s.json(&["stop", "dev", "--no-wait"])?;
    s.wait_for("dev", Duration::from_secs(30), |w| {
        w["latest_build"]["status"] == "running"
    })?;
    s.kill();
    s.restart()?;
    // The dead daemon's lease runs out; the build is retried (or failed), never left running.
    let (w, _) = s.wait_for("dev", Duration::from_secs(90), |w| {
        let st = w["latest_build"]["status"].as_str().unwrap_or("");
        st == "succeeded" || st == "failed"
    })?;
    assert_eq!(w["status"], "stopped", "the retried stop completed: {w}");
    assert!(!alive(pid), "the frozen agent was killed");
    let log = s.ok(&["logs", "dev", "--build"])?;
    assert!(log.contains("stopped responding; retrying"), "{log}");
    // The home is intact and the workspace starts again.
    s.ok(&["start", "dev"])?;
    Ok(())
}
both_backends!(build_in_flight_is_not_stuck);

fn create_racing_a_crash(backend: Backend) -> R {
    let mut s = Server::start(backend)?;
    for (i, delay) in [0u64, 30, 120].iter().enumerate() {
        let name = format!("w{i}");
        s.json(&["create", &name, "--no-wait"])?;
        std::thread::sleep(Duration::from_millis(*delay));
        s.kill();
        s.restart()?;
        let (w, _) = s.wait_for(&name, Duration::from_secs(60), |w| {
            w["status"] == "running" || w["status"] == "failed"
        })?;
        assert_eq!(w["status"], "running", "{w}");
    }
    Ok(())
}
both_backends!(create_racing_a_crash);
