//! `GET /api/v1/workspaces/{name}/stats`: the workspace's statistics over the last hour, for the
//! dashboard's sparklines (sampled by `liveness.rs` from the agent's heartbeats).

use axum::extract::State;
use axum::Json;
use outpost_api::StatsSample;

use super::auth::AuthUser;
use super::error::{ApiPath, ApiResult};
use super::lookup::{find_workspace, Access};
use super::AppState;
use crate::store::{now_ms, STATS_KEEP_MS};

#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{name}/stats",
    tag = "workspaces",
    summary = "The workspace's CPU, memory, disk and load over the last hour (a sample a minute)",
    params(
        ("name" = String, Path, description = "A workspace: NAME, or OWNER/NAME (URL-encoded) for someone else's"),
    ),
    responses((status = 200, description = "OK", body = Vec<StatsSample>)),
)]
pub(super) async fn stats_history(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<StatsSample>>> {
    let w = find_workspace(&state, &auth, &name, Access::Read).await?;
    let rows = state
        .store
        .stats_samples(&w.id, now_ms() - STATS_KEEP_MS)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| StatsSample {
                at: r.at,
                cpu_percent: r.cpu_percent,
                cpu_cores: r.cpu_cores,
                mem_used_bytes: r.mem_used_bytes,
                mem_total_bytes: r.mem_total_bytes,
                home_disk_used_bytes: r.home_disk_used_bytes,
                home_disk_total_bytes: r.home_disk_total_bytes,
                load1: r.load1,
            })
            .collect(),
    ))
}
