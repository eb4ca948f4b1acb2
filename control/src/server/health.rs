//! `/healthz` (the process answers) and `/readyz` (it can do its work: the store answers, its
//! migrations are done, a provisioner daemon is there to take builds). Neither needs a token:
//! load balancers and service managers call them. `/readyz` answers 503 with the failing check
//! and what to do about it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// How recently an external daemon must have asked for work to count as connected.
const DAEMON_SEEN_MS: i64 = 60_000;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (store, migrations) = match state.store.schema_version().await {
        Ok(v) => {
            let want = crate::store::LATEST_MIGRATION;
            (
                check(true, "answering"),
                if v >= want {
                    check(true, &format!("version {v}"))
                } else {
                    check(
                        false,
                        &format!("at version {v} of {want}: another server is migrating the database, or this one's migrations failed (see its log)"),
                    )
                },
            )
        }
        Err(e) => (
            check(
                false,
                &format!("unreachable ({e}): check the database server and --postgres-url, or the data dir's disk"),
            ),
            check(false, "unknown (the store is unreachable)"),
        ),
    };
    let built_in = state.config.provisioner_daemons;
    let external = state
        .store
        .daemons(DAEMON_SEEN_MS)
        .await
        .map(|d| d.len())
        .unwrap_or(0);
    let provisioners = if built_in + external > 0 {
        check(
            true,
            &format!("{built_in} built in, {external} external seen in the last minute"),
        )
    } else {
        check(
            false,
            "no provisioner daemon: builds wait until one runs (`outpost provisioner start --key KEY`, or start the server with --provisioner-daemons N)",
        )
    };
    let ready = [&store, &migrations, &provisioners]
        .iter()
        .all(|c| c["ok"] == true);
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "replica": state.cluster.id,
            "version": env!("CARGO_PKG_VERSION"),
            "checks": {"store": store, "migrations": migrations, "provisioners": provisioners},
        })),
    )
}

fn check(ok: bool, detail: &str) -> Value {
    json!({"ok": ok, "detail": detail})
}
