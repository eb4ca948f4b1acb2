//! Workspace schedules against the real server, with control's clock moved by the test
//! (`--test-clock-file`) and the scheduler ticking every 250 ms: autostop with activity bumps
//! (SSH, a terminal, a port forward, app traffic), the autostop requirement in the owner's
//! quiet hours (daily across a DST change; every two weeks in step), quiet hours the server
//! refuses. Autostart, failure cleanup, dormancy, bad input and two servers: `schedule_rules.rs`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

pub(crate) const T: Duration = Duration::from_secs(60);
pub(crate) const MIN: i64 = 60_000;
pub(crate) const HOUR: i64 = 3_600_000;
pub(crate) const DAY: i64 = 86_400_000;

pub(crate) fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Control's clock, as the test moves it (`--test-clock-file`).
pub(crate) struct Clock {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    offset: std::cell::Cell<i64>,
}

impl Clock {
    pub(crate) fn new() -> R<Clock> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("clock");
        std::fs::write(&path, "0")?;
        Ok(Clock {
            _dir: dir,
            path,
            offset: 0.into(),
        })
    }
    pub(crate) fn now(&self) -> i64 {
        real_now() + self.offset.get()
    }
    /// Control's clock reads `at` now (and runs on from there).
    pub(crate) fn set(&self, at: i64) -> R {
        self.offset.set(at - real_now());
        std::fs::write(&self.path, self.offset.get().to_string())?;
        // The server re-reads the file every 20 ms; let it, and let a tick run.
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }
    pub(crate) fn advance(&self, ms: i64) -> R {
        self.set(self.now() + ms)
    }
}

/// Signs the admin in again: a jump of weeks outlives the CLI's session.
pub(crate) fn relogin(s: &Server) -> R {
    let o = s.cli_stdin(
        &["login", &s.url, "--username", "admin", "--password-stdin"],
        "admin-password\n",
    )?;
    anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(())
}

/// A server whose clock the test moves, ticking every 250 ms, agent certificates long enough
/// for a jump of a year.
pub(crate) fn server(backend: Backend, extra: &[&str]) -> R<(Server, Clock)> {
    let clock = Clock::new()?;
    let path = clock.path.display().to_string();
    let mut args = vec![
        "--test-clock-file",
        &path,
        "--schedule-interval",
        "250ms",
        "--agent-cert-lifetime-secs",
        "40000000",
    ];
    args.extend_from_slice(extra);
    let s = Server::start_with(backend, &args)?;
    Ok((s, clock))
}

pub(crate) fn ts(s: &str) -> i64 {
    // `YYYY-MM-DDTHH:MM:SSZ` to ms, with `date` (GNU coreutils).
    let o = Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse::<i64>()
        .expect("date output")
        * 1000
}

pub(crate) fn sched(s: &Server, ws: &str) -> R<Value> {
    Ok(s.workspace(ws)?["schedule"].clone())
}

pub(crate) fn wait_stopped_by(s: &Server, ws: &str, reason: &str) -> R<Value> {
    let (w, _) = s.wait_for(ws, T, |w| {
        w["status"] == "stopped" && w["latest_build"]["reason"] == reason
    })?;
    assert!(w["latest_build"]["initiator"].is_null(), "{w:#}");
    Ok(w)
}

pub(crate) fn still_running(s: &Server, ws: &str) -> R {
    // Two ticks and a liveness flush.
    std::thread::sleep(Duration::from_millis(700));
    let w = s.workspace(ws)?;
    assert_eq!(w["status"], "running", "{ws}: {:#}", w["schedule"]);
    Ok(())
}

pub(crate) fn cli_fails(s: &Server, args: &[&str]) -> R<String> {
    let o = s.cli(args)?;
    assert!(
        !o.status.success(),
        "`outpost {}` succeeded",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A template `name` whose start script serves HTTP on `port` (and the app `web` on it).
fn serving_template(s: &Server, name: &str, port: u16) -> R {
    push_local_template(
        s,
        name,
        &format!(
            "[[apps]]\nslug = \"web\"\nport = {port}\n\n[[scripts]]\nname = \"serve\"\nscript = \"nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &\"\n"
        ),
    )
}

fn wait_port(s: &Server, ws: &str, port: u16) -> R {
    s.wait_for(ws, T, |w| {
        w["agent"]["stats"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["port"] == port))
    })?;
    Ok(())
}

/// A web terminal session held open: the WebSocket upgrade, then nothing more.
fn open_terminal(s: &Server, ws: &str) -> R<std::net::TcpStream> {
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr)?;
    c.write_all(format!(
        "GET /api/v1/workspaces/{ws}/pty?session=held HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        s.token()?
    ).as_bytes())?;
    c.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    Ok(c)
}

/// Activity keeps a workspace up past its autostop: an SSH session, a web terminal, a port
/// forward and app traffic each count; a workspace with none stops at its deadline; each of
/// the others stops an autostop after its activity ends.
fn activity_bumps_the_deadline(backend: Backend) -> R {
    let (s, clock) = server(backend, &["--terminal-idle-timeout-secs", "2"])?;
    let admin = Client::admin(&s)?;
    let (p1, p2) = (free_port()?, free_port()?);
    push_local_template(&s, "plain", "")?;
    serving_template(&s, "fwd-t", p1)?;
    serving_template(&s, "app-t", p2)?;
    for t in ["plain", "fwd-t", "app-t"] {
        s.ok(&[
            "templates",
            "edit",
            t,
            "--default-autostop",
            "1h",
            "--activity-bump",
            "1h",
        ])?;
    }
    let shown = s.json(&["templates", "show", "plain"])?;
    assert_eq!(shown["template"]["schedule"]["default_autostop_ms"], HOUR);
    for (ws, t) in [
        ("idle", "plain"),
        ("sshd", "plain"),
        ("term", "plain"),
        ("fwd", "fwd-t"),
        ("app", "app-t"),
    ] {
        s.ok(&["create", ws, "-t", t])?;
    }
    for ws in ["idle", "sshd", "term", "fwd", "app"] {
        s.wait_for(ws, T, |w| w["status"] == "running")?;
    }
    wait_port(&s, "fwd", p1)?;
    wait_port(&s, "app", p2)?;
    let sc = sched(&s, "idle")?;
    let deadline = sc["deadline"].as_i64().unwrap_or_default();
    assert!((deadline - (clock.now() + HOUR)).abs() < 2 * MIN, "{sc:#}");
    assert_eq!(sc["next"]["reason"], "autostop", "{sc:#}");
    assert_eq!(sc["next"]["action"], "stop");

    // The sessions.
    let mut ssh: Child = admin
        .ssh_command("sshd", "sleep 3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let term = open_terminal(&s, "term")?;
    let local = free_port()?;
    let mut forward = Command::new(bin("outpost"))
        .args(["port-forward", "fwd", "--tcp", &format!("{local}:{p1}")])
        .env("OUTPOST_CONFIG_DIR", s.config_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let held = eventually(|| Ok(std::net::TcpStream::connect(("127.0.0.1", local)).ok()))?;
    let app_url = format!("{}/@admin/app/apps/web/", s.url);
    let token = s.token()?;
    let app_get = || -> R<u16> {
        let (url, token) = (app_url.clone(), token.clone());
        rt().block_on(async move {
            Ok(reqwest::Client::new()
                .get(&url)
                .bearer_auth(token)
                .send()
                .await?
                .status()
                .as_u16())
        })
    };
    // Each session has reached its agent and been reported.
    eventually(|| {
        let w = s.workspace("sshd")?;
        Ok((w["agent"]["stats"]["sessions"]["ssh"].as_u64() == Some(1)).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(2));

    // 100 minutes in 20-minute steps: only `idle` stops, at its deadline.
    for _ in 0..5 {
        clock.advance(20 * MIN)?;
        assert_eq!(app_get()?, 200);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let w = wait_stopped_by(&s, "idle", "autostop")?;
    assert_eq!(w["latest_build"]["transition"], "stop");
    for ws in ["sshd", "term", "fwd", "app"] {
        let w = s.workspace(ws)?;
        assert_eq!(w["status"], "running", "{ws}: {:#}", w["schedule"]);
        let d = w["schedule"]["deadline"].as_i64().unwrap_or_default();
        assert!(
            d > clock.now() + 30 * MIN,
            "{ws}: deadline not bumped: {:#}",
            w["schedule"]
        );
    }
    let shown = s.ok(&["show", "idle"])?;
    assert!(shown.contains("autostop, by the scheduler"), "{shown}");

    // Activity ends: each stops an hour later.
    let _ = ssh.kill();
    let _ = ssh.wait();
    drop(term);
    drop(held);
    let _ = forward.kill();
    let _ = forward.wait();
    // The agents report the sessions gone (the terminal's after its idle timeout).
    eventually(|| {
        let all_quiet = ["sshd", "term", "fwd"].iter().all(|ws| {
            s.workspace(ws)
                .map(|w| {
                    let n = &w["agent"]["stats"]["sessions"];
                    ["ssh", "pty", "port_forward"]
                        .iter()
                        .all(|k| n[k].as_u64() == Some(0))
                })
                .unwrap_or(false)
        });
        Ok(all_quiet.then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    clock.advance(61 * MIN)?;
    for ws in ["sshd", "term", "fwd", "app"] {
        wait_stopped_by(&s, ws, "autostop")?;
    }
    let audit = s.json(&["audit", "--action", "workspace.autostop"])?;
    assert!(
        audit.as_array().map(Vec::len).unwrap_or(0) >= 5,
        "{audit:#}"
    );
    Ok(())
}
both_backends!(activity_bumps_the_deadline);

/// The autostop requirement (daily) stops a workspace at the start of its owner's quiet hours
/// in their time zone, `CRON_TZ=America/Chicago 30 2 * * *`: 02:30 CDT before the clocks fall
/// back, 02:30 CST after, whatever its open SSH session.
fn daily_requirement_in_quiet_hours(backend: Backend) -> R {
    let (s, clock) = server(backend, &[])?;
    let admin = Client::admin(&s)?;
    s.ok(&["users", "quiet-hours", "CRON_TZ=America/Chicago 30 2 * * *"])?;
    let q = s.json(&["users", "quiet-hours"])?;
    assert_eq!(q["schedule"], "CRON_TZ=America/Chicago 30 2 * * *", "{q:#}");
    s.ok(&[
        "templates",
        "edit",
        "base",
        "--autostop-requirement",
        "daily",
    ])?;
    // Friday 2027-11-05, noon in Chicago; the clocks fall back on Sunday 2027-11-07.
    clock.set(ts("2027-11-05T17:00:00Z"))?;
    relogin(&s)?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["status"] == "running")?;
    let sc = sched(&s, "dev")?;
    assert_eq!(sc["max_deadline"], ts("2027-11-06T07:30:00Z"), "{sc:#}");
    assert_eq!(sc["deadline"], ts("2027-11-06T07:30:00Z"), "{sc:#}");
    assert_eq!(sc["next"]["reason"], "autostop requirement", "{sc:#}");

    let mut ssh = admin
        .ssh_command("dev", "sleep 3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    eventually(|| {
        let w = s.workspace("dev")?;
        Ok((w["agent"]["stats"]["sessions"]["ssh"].as_u64() == Some(1)).then_some(()))
    })?;
    clock.set(ts("2027-11-06T07:29:00Z"))?;
    still_running(&s, "dev")?;
    clock.set(ts("2027-11-06T07:30:30Z"))?;
    wait_stopped_by(&s, "dev", "autostop requirement")?;
    // The SSH session ended with the workspace.
    eventually(|| Ok(ssh.try_wait()?.map(|_| ())))?;

    s.ok(&["start", "dev"])?;
    s.wait_for("dev", T, |w| w["status"] == "running")?;
    let sc = sched(&s, "dev")?;
    assert_eq!(
        sc["max_deadline"],
        ts("2027-11-07T08:30:00Z"),
        "after DST: {sc:#}"
    );
    // Changing the quiet hours, or the template's requirement, moves the running workspace's
    // required stop.
    s.ok(&["users", "quiet-hours", "CRON_TZ=America/Chicago 0 4 * * *"])?;
    assert_eq!(
        sched(&s, "dev")?["max_deadline"],
        ts("2027-11-06T09:00:00Z") // 04:00 CDT today, 90 minutes away
    );
    s.ok(&["templates", "edit", "base", "--autostop-requirement", "off"])?;
    let sc = sched(&s, "dev")?;
    assert!(
        sc["max_deadline"].is_null() && sc["deadline"].is_null(),
        "{sc:#}"
    );
    assert!(sc["next"].is_null(), "{sc:#}");
    s.ok(&[
        "templates",
        "edit",
        "base",
        "--autostop-requirement",
        "daily",
    ])?;
    s.ok(&["users", "quiet-hours", "CRON_TZ=America/Chicago 30 2 * * *"])?;
    assert_eq!(sched(&s, "dev")?["deadline"], ts("2027-11-07T08:30:00Z"));
    clock.set(ts("2027-11-07T08:29:00Z"))?;
    still_running(&s, "dev")?;
    clock.set(ts("2027-11-07T08:30:30Z"))?;
    wait_stopped_by(&s, "dev", "autostop requirement")?;
    let audit = s.json(&["audit", "--action", "workspace.autostop_requirement"])?;
    assert_eq!(audit.as_array().map(Vec::len), Some(2), "{audit:#}");
    Ok(())
}
both_backends!(daily_requirement_in_quiet_hours);

/// `saturday` every 2 weeks: two workspaces created in different weeks stop on the same
/// Saturday (the template's weeks are counted from one fixed Monday for all of them).
fn weekly_requirement_in_step(backend: Backend) -> R {
    let (s, clock) = server(backend, &[])?;
    s.ok(&[
        "templates",
        "edit",
        "base",
        "--autostop-requirement",
        "saturday",
        "--autostop-requirement-weeks",
        "2",
    ])?;
    // A Monday, at least a week ahead, in an odd week counted from Monday 1970-01-05 (day 4).
    let mut day = real_now() / DAY + 7;
    while (day - 4) % 7 != 0 || ((day - 4) / 7) % 2 != 1 {
        day += 1;
    }
    clock.set(day * DAY + 12 * HOUR)?;
    relogin(&s)?;
    s.ok(&["create", "first"])?;
    s.wait_for("first", T, |w| w["status"] == "running")?;
    clock.set((day + 7) * DAY + 12 * HOUR)?;
    relogin(&s)?;
    s.ok(&["create", "second"])?;
    s.wait_for("second", T, |w| w["status"] == "running")?;
    // The Saturday of the second (even) week, at the default quiet hours (00:00 UTC).
    let saturday = (day + 7 + 5) * DAY;
    for ws in ["first", "second"] {
        assert_eq!(sched(&s, ws)?["max_deadline"], saturday, "{ws}");
    }
    clock.set(saturday - MIN)?;
    still_running(&s, "first")?;
    clock.set(saturday + 30_000)?;
    for ws in ["first", "second"] {
        wait_stopped_by(&s, ws, "autostop requirement")?;
    }
    Ok(())
}
both_backends!(weekly_requirement_in_step);

/// `--allow-custom-quiet-hours=false`: users still see (and may store) their own quiet hours,
/// but the server's default decides when their workspaces must stop.
fn custom_quiet_hours_can_be_ignored(backend: Backend) -> R {
    let (s, _clock) = server(
        backend,
        &[
            "--allow-custom-quiet-hours=false",
            "--default-quiet-hours-schedule",
            "CRON_TZ=UTC 0 3 * * *",
        ],
    )?;
    let q = s.json(&["users", "quiet-hours", "CRON_TZ=America/Chicago 30 2 * * *"])?;
    assert_eq!(q["schedule"], "CRON_TZ=UTC 0 3 * * *", "{q:#}");
    assert_eq!(q["user_can_set"], false);
    assert_eq!(q["custom"], "CRON_TZ=America/Chicago 30 2 * * *");
    let text = s.ok(&["users", "quiet-hours"])?;
    assert!(text.contains("is ignored"), "{text}");
    s.ok(&[
        "templates",
        "edit",
        "base",
        "--autostop-requirement",
        "daily",
    ])?;
    s.ok(&["create", "dev"])?;
    s.wait_for("dev", T, |w| w["status"] == "running")?;
    let max = sched(&s, "dev")?["max_deadline"]
        .as_i64()
        .unwrap_or_default();
    assert_eq!(max % DAY, 3 * HOUR, "stops at 03:00 UTC, not 02:30 Chicago");
    Ok(())
}
both_backends!(custom_quiet_hours_can_be_ignored);
