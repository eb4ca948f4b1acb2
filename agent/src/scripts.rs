//! Template scripts (start and stop), their lifecycle, and shipping their output to control as
//! agent logs: in batches, per source, in order, with timestamps, up to control's cap.

use outpost_common::LockExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_api::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, Notify};

use crate::session::ControlSession;
use outpost_common::clock::now_ms;

/// The agent's lifecycle, reported with the next heartbeat (sent at once on change).
#[derive(Default)]
pub struct Lifecycle {
    state: Mutex<Option<(AgentLifecycle, bool)>>,
    pub changed: Notify,
}

impl Lifecycle {
    pub fn set(&self, l: AgentLifecycle) {
        {
            let mut s = self.state.locked();
            *s = Some((l, true));
        }
        self.changed.notify_one();
    }
    /// The lifecycle to report, if it changed since the last successful report.
    pub fn pending(&self) -> Option<AgentLifecycle> {
        self.state
            .locked()
            .and_then(|(l, dirty)| dirty.then_some(l))
    }
    pub fn reported(&self, l: AgentLifecycle) {
        {
            let mut s = self.state.locked();
            if let Some((cur, dirty)) = s.as_mut() {
                if *cur == l {
                    *dirty = false;
                }
            }
        }
    }
    pub fn current(&self) -> Option<AgentLifecycle> {
        self.state.locked().map(|(l, _)| l)
    }
}

/// What the shipper is handed: a line, or a request to send what it holds now and say so.
enum Shipped {
    Line(AgentLogLine),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where script output goes: a bounded queue drained by the shipper ([`start_shipper`]), and
/// the tally of how script runs ended (the heartbeat reports it).
#[derive(Clone)]
pub struct LogSink(mpsc::Sender<Shipped>, Arc<ScriptTally>);

/// Script runs by outcome, since the agent started.
#[derive(Default)]
pub struct ScriptTally {
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

impl LogSink {
    /// Counts one script run's outcome.
    pub fn ended(&self, o: &Outcome) {
        let c = match o {
            Outcome::Ok => &self.1.succeeded,
            Outcome::Failed(_) => &self.1.failed,
            Outcome::TimedOut(_) => &self.1.timed_out,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn script_counts(&self) -> outpost_api::ScriptCounts {
        outpost_api::ScriptCounts {
            succeeded: self.1.succeeded.load(Ordering::Relaxed),
            failed: self.1.failed.load(Ordering::Relaxed),
            timed_out: self.1.timed_out.load(Ordering::Relaxed),
        }
    }

    pub async fn line(&self, source: &str, level: &str, output: String) {
        let _ = self
            .0
            .send(Shipped::Line(AgentLogLine {
                source: source.to_string(),
                level: level.to_string(),
                output,
                created_at: now_ms(),
            }))
            .await;
    }

    /// Returns once every line queued before it has been sent to control (or given up on), or
    /// after `within`: the last lines of a stop reach control before the agent exits.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.0.send(Shipped::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

/// Starts the shipper: batches of up to 1000 lines, every 250 ms. Once control says the cap is
/// reached, lines are read and dropped (a noisy script never blocks on its pipe).
pub fn start_shipper(session: ControlSession) -> LogSink {
    let (tx, mut rx) = mpsc::channel::<Shipped>(10_000);
    tokio::spawn(async move {
        let mut over = false;
        let mut batch: Vec<AgentLogLine> = Vec::new();
        let mut flushed: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
        loop {
            let deadline = tokio::time::sleep(Duration::from_millis(250));
            tokio::pin!(deadline);
            let mut open = true;
            let mut bytes = 0usize;
            // At most 1000 lines or 256 KiB of output a batch (control takes 1 MiB bodies).
            while batch.len() < 1000 && bytes < 256 * 1024 {
                tokio::select! {
                    l = rx.recv() => match l {
                        Some(Shipped::Line(l)) => if !over {
                            bytes += l.output.len() + l.source.len() + 64;
                            batch.push(l);
                        },
                        Some(Shipped::Flush(ack)) => { flushed.push(ack); break; }
                        None => { open = false; break; }
                    },
                    _ = &mut deadline => break,
                }
            }
            if !batch.is_empty() {
                let req = AgentLogsRequest {
                    lines: std::mem::take(&mut batch),
                    lifecycle: None,
                };
                for attempt in 0..5u32 {
                    match session.client_post_logs(&req).await {
                        Ok(r) => {
                            over = r.over_limit;
                            break;
                        }
                        Err(e) if e.status().is_some_and(|s| s < 500) => break,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1)))
                                .await
                        }
                    }
                }
            }
            for ack in flushed.drain(..) {
                let _ = ack.send(());
            }
            if !open {
                return;
            }
        }
    });
    LogSink(tx, Arc::default())
}

pub enum Outcome {
    Ok,
    Failed(String),
    TimedOut(String),
}

/// Runs the scripts marked for start (or stop) concurrently, each in a process group of its own.
pub async fn run_all(
    scripts: &[ScriptSpec],
    on_start: bool,
    home: &Path,
    state_dir: &Path,
    env: &[(String, String)],
    sink: &LogSink,
) -> Outcome {
    let chosen: Vec<ScriptSpec> = scripts
        .iter()
        .filter(|s| {
            if on_start {
                s.run_on_start
            } else {
                s.run_on_stop
            }
        })
        .cloned()
        .collect();
    let mut tasks = Vec::new();
    for s in chosen {
        let (home, state_dir, env, sink) = (
            home.to_path_buf(),
            state_dir.to_path_buf(),
            env.to_vec(),
            sink.clone(),
        );
        tasks.push(tokio::spawn(async move {
            run_one(&s, &home, &state_dir, &env, &sink).await
        }));
    }
    let mut outcome = Outcome::Ok;
    for t in tasks {
        let o = t
            .await
            .unwrap_or(Outcome::Failed("a script task panicked".into()));
        sink.ended(&o);
        match o {
            Outcome::Ok => {}
            o @ Outcome::TimedOut(_) => outcome = o,
            o @ Outcome::Failed(_) => {
                if matches!(outcome, Outcome::Ok) {
                    outcome = o;
                }
            }
        }
    }
    outcome
}

async fn run_one(
    s: &ScriptSpec,
    home: &Path,
    state_dir: &Path,
    env: &[(String, String)],
    sink: &LogSink,
) -> Outcome {
    let data_dir = state_dir.join("scripts").join(sanitize(&s.name));
    let bin_dir = state_dir.join("bin");
    let _ = std::fs::create_dir_all(&data_dir);
    let _ = std::fs::create_dir_all(&bin_dir);
    let path = format!("{}:{}", bin_dir.display(), crate::user::session_path());
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&s.script)
        .current_dir(home)
        .envs(env.iter().cloned())
        .env("HOME", home)
        .env("PATH", path)
        .env("OUTPOST_SCRIPT_NAME", &s.name)
        .env("OUTPOST_SCRIPT_DATA_DIR", &data_dir)
        .env("OUTPOST_SCRIPT_BIN_DIR", &bin_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            sink.line(
                &s.name,
                "error",
                format!("[outpost] cannot start the script: {e}"),
            )
            .await;
            return Outcome::Failed(s.name.clone());
        }
    };
    let pgid = child.id().map(|p| p as i32);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(
            out,
            s.name.clone(),
            "info",
            sink.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(
            err,
            s.name.clone(),
            "error",
            sink.clone(),
        )));
    }
    let waited = if s.timeout_secs > 0 {
        tokio::time::timeout(Duration::from_secs(s.timeout_secs), child.wait()).await
    } else {
        Ok(child.wait().await)
    };
    let outcome = match waited {
        Err(_) => {
            if let Some(p) = pgid {
                outpost_common::process::signal_group(p, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            sink.line(
                &s.name,
                "error",
                format!(
                    "[outpost] timed out after {}s; its process group was killed",
                    s.timeout_secs
                ),
            )
            .await;
            Outcome::TimedOut(s.name.clone())
        }
        Ok(Ok(st)) if st.success() => Outcome::Ok,
        Ok(Ok(st)) => {
            sink.line(&s.name, "error", format!("[outpost] exited with {st}"))
                .await;
            Outcome::Failed(s.name.clone())
        }
        Ok(Err(e)) => {
            sink.line(&s.name, "error", format!("[outpost] {e}")).await;
            Outcome::Failed(s.name.clone())
        }
    };
    // Background children may keep the pipes open: read what is there, then stop waiting.
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), r)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    outcome
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    r: R,
    source: String,
    level: &'static str,
    sink: LogSink,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                sink.line(&source, level, line).await;
            }
        }
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Shared by the agent's tasks.
pub struct Scripts {
    /// Open (true) unless a start script that blocks login runs.
    pub login_gate: tokio::sync::watch::Sender<bool>,
    pub lifecycle: Arc<Lifecycle>,
    pub sink: LogSink,
    /// The scripts and environment learned at start (stop runs them without asking control).
    #[allow(clippy::type_complexity)]
    pub cached: Mutex<Option<(Vec<ScriptSpec>, Vec<(String, String)>)>>,
}

/// Reports a shutdown lifecycle through the logs route (heartbeats are refused once revoked).
pub async fn report_shutdown(session: &ControlSession, lifecycle: AgentLifecycle) {
    let req = AgentLogsRequest {
        lines: Vec::new(),
        lifecycle: Some(lifecycle),
    };
    let _ = session.client_post_logs(&req).await;
}
