//! Prometheus metrics (`prometheus-client`), served at `/metrics` on a listener of their own
//! (`--metrics-listen`, off by default, never on the public one). Counted as things happen:
//! HTTP requests by route template, method and status with latency; relay streams open and
//! bytes by kind and direction; builds by transition and outcome with their durations; held
//! agent polls. Read from the store at scrape time: workspaces by status and template, agents
//! by lifecycle, provisioner jobs queued and leased, the oldest agent heartbeat. Every label
//! comes from a bounded set (route templates, not paths; template names, not workspaces).

use std::pin::Pin;
use std::sync::atomic::AtomicI64;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    kind: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    transition: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    transition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceLabels {
    status: String,
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    workspace: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScriptLabels {
    workspace: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    workspace: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceName {
    workspace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn build_histogram() -> Histogram {
    // 50 ms .. ~27 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    relay_open: Family<KindLabels, Gauge>,
    relay_bytes: Family<BytesLabels, Counter>,
    relay_ssh_paths: Family<PathLabels, Counter>,
    relay_pty_paths: Family<PathLabels, Counter>,
    tls_handshakes: Family<KindLabels, Counter>,
    builds: Family<BuildLabels, Counter>,
    build_seconds: Family<TransitionLabels, Histogram, fn() -> Histogram>,
    held_polls: Gauge<i64, AtomicI64>,
    workspaces: Family<WorkspaceLabels, Gauge>,
    agents: Family<StatusLabels, Gauge>,
    jobs: Family<StatusLabels, Gauge>,
    heartbeat_lag: Gauge<i64, AtomicI64>,
    sessions: Family<SessionLabels, Gauge>,
    cpu: Family<WorkspaceName, Gauge<f64, std::sync::atomic::AtomicU64>>,
    memory: Family<WorkspaceName, Gauge>,
    scripts: Family<ScriptLabels, Gauge>,
    forwarded_bytes: Family<DirectionLabels, Gauge>,
}

impl Metrics {
    /// The registry, with the store's query durations (kept by the store) among its metrics.
    pub fn new(store_queries: crate::store::timed::QueryTimes) -> Self {
        let mut registry = Registry::with_prefix("outpost");
        registry.register(
            "store_query_duration_seconds",
            "Time from asking the store a query to its last row, by the store module asking (queries outside transactions)",
            store_queries,
        );
        let m = Metrics {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(seconds_histogram),
            relay_open: Family::default(),
            relay_bytes: Family::default(),
            relay_ssh_paths: Family::default(),
            relay_pty_paths: Family::default(),
            tls_handshakes: Family::default(),
            builds: Family::default(),
            build_seconds: Family::new_with_constructor(build_histogram),
            held_polls: Gauge::default(),
            workspaces: Family::default(),
            agents: Family::default(),
            jobs: Family::default(),
            heartbeat_lag: Gauge::default(),
            sessions: Family::default(),
            cpu: Family::default(),
            memory: Family::default(),
            scripts: Family::default(),
            forwarded_bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "API requests by route template, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency by route template and method",
            m.http_seconds.clone(),
        );
        registry.register(
            "relay_streams_open",
            "Relayed streams open now, by kind (ssh, tcp)",
            m.relay_open.clone(),
        );
        registry.register(
            "relay_bytes",
            "Bytes relayed, by kind and direction (up: client to workspace)",
            m.relay_bytes.clone(),
        );
        registry.register(
            "relay_ssh_paths",
            "Relayed SSH connections by the path their bytes took (dial: the agent's own TCP \
             connection, spliced; tunnel: a stream on its TLS tunnel)",
            m.relay_ssh_paths.clone(),
        );
        registry.register(
            "agent_tls_handshakes",
            "TLS handshakes finished on the agent listener, by kind (full: certificates signed and \
             checked; resumed: a session ticket, the key exchange only)",
            m.tls_handshakes.clone(),
        );
        registry.register(
            "relay_pty_paths",
            "Web terminals by the path their bytes took (dial: the agent's own TLS connection; \
             tunnel: a stream on its TLS tunnel)",
            m.relay_pty_paths.clone(),
        );
        registry.register(
            "builds",
            "Builds ended, by transition and outcome",
            m.builds.clone(),
        );
        registry.register(
            "build_duration_seconds",
            "Time from a build's queueing to its end, by transition",
            m.build_seconds.clone(),
        );
        registry.register(
            "agent_polls_held",
            "Agent long polls held open by this replica",
            m.held_polls.clone(),
        );
        registry.register(
            "workspaces",
            "Workspaces (not deleted) by status and template",
            m.workspaces.clone(),
        );
        registry.register(
            "agents",
            "Live (unrevoked) agents by lifecycle",
            m.agents.clone(),
        );
        registry.register(
            "provisioner_jobs",
            "Provisioner jobs queued (pending) and leased (running)",
            m.jobs.clone(),
        );
        registry.register(
            "agent_heartbeat_lag_seconds",
            "Seconds since the stalest connected agent was last heard from",
            m.heartbeat_lag.clone(),
        );
        registry.register(
            "workspace_sessions",
            "Sessions in a workspace by kind (ssh, vscode, jetbrains, terminal, port_forward), from its agent's heartbeats",
            m.sessions.clone(),
        );
        registry.register(
            "workspace_cpu_percent",
            "A workspace's CPU use (percent of its cores), from its agent's heartbeats",
            m.cpu.clone(),
        );
        registry.register(
            "workspace_memory_used_bytes",
            "A workspace's memory in use, from its agent's heartbeats",
            m.memory.clone(),
        );
        registry.register(
            "workspace_script_runs",
            "Script runs (start, stop, cron, dotfiles) since the workspace's agent started, by outcome (succeeded, failed, timed_out), from its heartbeats",
            m.scripts.clone(),
        );
        registry.register(
            "workspace_forwarded_bytes",
            "Bytes the workspace's agent carried over forwarded channels since it started, by direction (in, out), from its heartbeats",
            m.forwarded_bytes.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn build_ended(&self, transition: &str, outcome: &str, queued_at_ms: i64) {
        self.builds
            .get_or_create(&BuildLabels {
                transition: transition.into(),
                outcome: outcome.into(),
            })
            .inc();
        let secs = (crate::store::now_ms() - queued_at_ms).max(0) as f64 / 1000.0;
        self.build_seconds
            .get_or_create(&TransitionLabels {
                transition: transition.into(),
            })
            .observe(secs);
    }

    /// Counts a held poll while the guard lives.
    pub fn poll_held(&self) -> HeldPoll {
        self.held_polls.inc();
        HeldPoll(self.held_polls.clone())
    }

    /// Counts an open relay stream of `kind` while the guard lives, and hands out the byte
    /// counters for its two directions.
    /// A relayed SSH connection went by `path` ("dial" or "tunnel").
    pub fn relay_ssh_path(&self, path: &str) {
        self.relay_ssh_paths
            .get_or_create(&PathLabels { path: path.into() })
            .inc();
    }

    /// A TLS handshake on the agent listener finished, resumed from a ticket or in full.
    pub fn agent_tls_handshake(&self, resumed: bool) {
        let kind = if resumed { "resumed" } else { "full" };
        self.tls_handshakes
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn relay_pty_path(&self, path: &str) {
        self.relay_pty_paths
            .get_or_create(&PathLabels { path: path.into() })
            .inc();
    }

    pub fn relay_opened(&self, kind: &str) -> (OpenStream, Counter, Counter) {
        let g = self
            .relay_open
            .get_or_create(&KindLabels { kind: kind.into() })
            .clone();
        g.inc();
        let bytes = |direction: &str| {
            self.relay_bytes
                .get_or_create(&BytesLabels {
                    kind: kind.into(),
                    direction: direction.into(),
                })
                .clone()
        };
        (OpenStream(g), bytes("up"), bytes("down"))
    }
}

pub struct HeldPoll(Gauge<i64, AtomicI64>);

impl Drop for HeldPoll {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An I/O half whose bytes are counted.
pub struct Counted<T> {
    pub inner: T,
    pub bytes: Counter,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.bytes.inc_by(n as u64);
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.bytes.inc_by(*n as u64);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Middleware on the API router: a request's route template, method, status and latency.
pub(super) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(dashboard or unmatched)".into());
    let method = req.method().as_str().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method: method.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    m.http_seconds
        .get_or_create(&RouteLabels { route, method })
        .observe(t.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics` (the metrics listener only): refreshes the store-read gauges, then encodes.
pub(super) async fn scrape(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    match state.store.metric_counts().await {
        Ok(c) => {
            m.workspaces.clear();
            for (status, template, n) in c.workspaces {
                m.workspaces
                    .get_or_create(&WorkspaceLabels { status, template })
                    .set(n);
            }
            m.agents.clear();
            for (status, n) in c.agents {
                m.agents.get_or_create(&StatusLabels { status }).set(n);
            }
            m.jobs.clear();
            for status in ["pending", "running"] {
                let n = c.jobs.iter().find(|(s, _)| s == status).map_or(0, |j| j.1);
                m.jobs
                    .get_or_create(&StatusLabels {
                        status: status.into(),
                    })
                    .set(n);
            }
            m.heartbeat_lag.set(c.heartbeat_lag_ms / 1000);
            m.sessions.clear();
            m.cpu.clear();
            m.memory.clear();
            m.scripts.clear();
            m.forwarded_bytes.clear();
            for (workspace, stats) in c.agent_stats {
                let Ok(st) = serde_json::from_str::<outpost_api::AgentStats>(&stats) else {
                    continue;
                };
                let s = &st.sessions;
                for (kind, n) in [
                    ("ssh", s.ssh),
                    ("vscode", s.vscode),
                    ("jetbrains", s.jetbrains),
                    ("terminal", s.pty),
                    ("port_forward", s.port_forward),
                ] {
                    m.sessions
                        .get_or_create(&SessionLabels {
                            workspace: workspace.clone(),
                            kind: kind.into(),
                        })
                        .set(i64::from(n));
                }
                let c = &st.scripts;
                for (outcome, n) in [
                    ("succeeded", c.succeeded),
                    ("failed", c.failed),
                    ("timed_out", c.timed_out),
                ] {
                    m.scripts
                        .get_or_create(&ScriptLabels {
                            workspace: workspace.clone(),
                            outcome: outcome.into(),
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                for (direction, n) in [("in", st.rx_bytes), ("out", st.tx_bytes)] {
                    m.forwarded_bytes
                        .get_or_create(&DirectionLabels {
                            workspace: workspace.clone(),
                            direction: direction.into(),
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                let w = WorkspaceName { workspace };
                m.cpu.get_or_create(&w).set(f64::from(st.cpu_percent));
                m.memory
                    .get_or_create(&w)
                    .set(i64::try_from(st.mem_used_bytes).unwrap_or(i64::MAX));
            }
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store did not answer: {e}\n"),
            )
                .into_response()
        }
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Serves `/metrics` on `--metrics-listen` until shutdown, when it is set.
pub(super) async fn start(
    state: &AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Some(addr) = state.config.metrics_listen.clone() else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { super::until_shutdown(&mut shutdown).await })
            .await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_up_and_down() {
        let m = Metrics::new(crate::store::timed::query_times());
        {
            let _p = m.poll_held();
            let (_s, up, _down) = m.relay_opened("ssh");
            up.inc_by(5);
            assert_eq!(m.held_polls.get(), 1);
        }
        assert_eq!(m.held_polls.get(), 0);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap_or_default();
        assert!(
            out.contains("outpost_relay_bytes_total{kind=\"ssh\",direction=\"up\"} 5"),
            "{out}"
        );
        assert!(
            out.contains("outpost_relay_streams_open{kind=\"ssh\"} 0"),
            "{out}"
        );
    }
}
