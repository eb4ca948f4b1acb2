//! What grows with use stays bounded: log streams one user may follow, the store reads a
//! follower makes (its own workspace's changes only), and the audit log and agent logs, pruned
//! by age and count.

use std::time::Duration;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

use crate::harness::push_local_template as push;

/// Opens a follow stream (status only; the response is kept open until dropped).
fn follow(url: &str, token: &str) -> R<(u16, reqwest::Response)> {
    let (url, token) = (url.to_string(), token.to_string());
    rt().block_on(async move {
        let r = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await?;
        Ok((r.status().as_u16(), r))
    })
}

/// One user may follow 16 log streams at once (the 17th is refused, others are not); a
/// follower of one workspace's logs does not read the store while another workspace's
/// scripts pour out lines.
fn log_followers_are_bounded(backend: Backend) -> R {
    let s = Server::start(backend)?;
    push(
        &s,
        "noisy",
        "[[scripts]]\nname = \"noise\"\nscript = \"sleep 4; for i in $(seq 1 3000); do echo noise-line-$i; done; sleep 1; for i in $(seq 1 3000); do echo more-$i; done\"\ntimeout = \"120s\"\n",
    )?;
    s.ok(&["create", "quiet"])?;
    let quiet = s.workspace("quiet")?;
    let quiet_id = quiet["id"].as_str().unwrap_or_default().to_string();
    let admin = s.token()?;
    let url = format!("{}/api/v1/workspaces/quiet/agent-logs?follow=true", s.url);
    let mut held = Vec::new();
    for _ in 0..16 {
        let (code, r) = follow(&url, &admin)?;
        assert_eq!(code, 200);
        held.push(r);
    }
    let (code, _) = follow(&url, &admin)?;
    assert_eq!(code, 429, "a 17th follower");
    // Another user is not affected.
    let bob = Client::new_user(&s, "bob")?;
    bob.ok(&["create", "b"])?;
    let bob_token = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(
        bob.config_dir.join("session.json"),
    )?)?["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (code, bob_follow) = follow(
        &format!("{}/api/v1/workspaces/b/agent-logs?follow=true", s.url),
        &bob_token,
    )?;
    assert_eq!(code, 200);
    drop(bob_follow);
    // Closing one frees a place.
    held.pop();
    let mut code = 0;
    for _ in 0..50 {
        let (c, r) = follow(&url, &admin)?;
        code = c;
        if c == 200 {
            held.push(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, 200);

    // Another workspace's scripts pour out 6,000 lines: the quiet workspace's 16 followers
    // are not woken to read the store for them.
    let reads = |s: &Server| {
        s.log()
            .lines()
            .filter(|l| l.contains("agent log follower reads the store") && l.contains(&quiet_id))
            .count()
    };
    let before = reads(&s);
    assert!(
        before >= 16,
        "each follower reads once when it opens ({before})"
    );
    // The CLI's create would follow its build log too: with no place left it waits without.
    let out = s.cli(&["create", "loud", "-t", "noisy"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not streaming the build log"));
    s.wait_for("loud", T, |w| w["agent"]["lifecycle"] == "ready")?;
    // The script's lines are shipped in batches after it ends.
    eventually(|| {
        let lines = s.db_rows(
            "SELECT COUNT(*) FROM agent_logs l JOIN workspaces w ON w.id = l.workspace_id WHERE w.name = 'loud'",
        )?;
        Ok((lines[0][0].parse::<u64>().unwrap_or(0) >= 6000).then_some(()))
    })?;
    let after = reads(&s);
    // Each follower may re-check once on its own timer (every 15 s); never per batch of noise.
    assert!(
        after - before <= 2 * 16,
        "{} store reads by followers of a quiet workspace",
        after - before
    );
    drop(held);
    Ok(())
}
both_backends!(log_followers_are_bounded);

/// Audit events and agent log lines are pruned by count and by age on the retention timer;
/// the flags are in `outpost server --help`.
fn audit_and_agent_logs_are_pruned(backend: Backend) -> R {
    let help = std::process::Command::new(bin("outpost"))
        .args(["server", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--audit-retention",
        "--audit-max-events",
        "--agent-log-retention",
        "--agent-log-max-lines",
        "--retention-interval",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let s = Server::start_with(
        backend,
        &[
            "--audit-max-events",
            "40",
            "--agent-log-max-lines",
            "30",
            "--audit-retention",
            "8s",
            "--agent-log-retention",
            "8s",
            "--retention-interval",
            "1s",
        ],
    )?;
    push(
        &s,
        "chatty",
        "[[scripts]]\nname = \"chat\"\nscript = \"for i in $(seq 1 200); do echo chat-$i; done\"\n",
    )?;
    s.ok(&["create", "w", "-t", "chatty"])?;
    s.wait_for("w", T, |w| w["agent"]["lifecycle"] == "ready")?;
    // 60 audited sign-in failures.
    for i in 0..60 {
        let _ = post_json(
            &format!("{}/api/v1/login", s.url),
            None,
            &serde_json::json!({"username": format!("nobody-{i}"), "password": "xxxxxxxx"}),
        )?;
    }
    let count = |sql: &str| -> R<u64> { Ok(s.db_rows(sql)?[0][0].parse().unwrap_or(u64::MAX)) };
    // By count, within a few ticks.
    eventually(|| {
        let audit = count("SELECT COUNT(*) FROM audit_events")?;
        let logs = count("SELECT COUNT(*) FROM agent_logs")?;
        Ok((audit <= 40 && logs <= 30).then_some(()))
    })?;
    // The newest are the ones kept.
    let newest = s.db_rows("SELECT details, actor FROM audit_events ORDER BY id DESC LIMIT 1")?;
    assert!(!newest.is_empty());
    // By age: after 8 s nothing older is left.
    std::thread::sleep(Duration::from_secs(10));
    let old = count(&format!(
        "SELECT COUNT(*) FROM audit_events WHERE created_at < {}",
        outpost_now_ms() - 9_000
    ))?;
    assert_eq!(old, 0);
    let old_logs = count(&format!(
        "SELECT COUNT(*) FROM agent_logs WHERE created_at < {}",
        outpost_now_ms() - 9_000
    ))?;
    assert_eq!(old_logs, 0);
    // The server still works.
    assert_eq!(s.workspace("w")?["status"], "running");
    Ok(())
}
both_backends!(audit_and_agent_logs_are_pruned);

fn outpost_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
