//! The API's and dashboard's routes (`/api/v1/...`, `/healthz`, `/readyz`, the pages, the
//! assets and the `/@OWNER/WS/...` fallback), and the middleware they share: metrics, app hosts
//! and the body limit. `tests/it/routes.rs` checks every route here against its roles table, and
//! `tests/it/openapi.rs` every `/api/v1` route against the OpenAPI description.

use axum::extract::DefaultBodyLimit;
use axum::Router;

use super::*;

const API_BODY_LIMIT: usize = 1 << 20;
/// Log streams (`follow=true`) one user may hold open at once.
pub const FOLLOWS_PER_USER: usize = 16;
pub const TEMPLATE_BODY_LIMIT: usize = 8 << 20;

/// Every route of the API and the dashboard, with the middleware they share.
pub(super) fn api_router(state: AppState) -> Router {
    use axum::routing::{delete, get, post};
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/setup", post(users::setup))
        .route("/api/v1/login", post(users::login))
        .route(
            "/api/v1/users",
            get(users::list_users).post(users::create_user),
        )
        .route(
            "/api/v1/users/{username}/roles",
            axum::routing::put(users::set_roles),
        )
        .route("/api/v1/users/me", get(users::me))
        .route("/api/v1/users/{username}/suspend", post(users::suspend))
        .route("/api/v1/users/{username}/unsuspend", post(users::unsuspend))
        .route("/api/v1/users/{username}", delete(account::delete_user))
        .route("/api/v1/users/{username}/deletion", get(account::deletion))
        .route(
            "/api/v1/users/{username}/password",
            axum::routing::put(account::change_password),
        )
        .route(
            "/api/v1/users/me/password",
            axum::routing::put(account::change_own_password),
        )
        .route(
            "/api/v1/users/me/dotfiles",
            get(account::get_dotfiles).put(account::set_dotfiles),
        )
        .route(
            "/api/v1/users/me/keys",
            get(keys::list_ssh_keys).post(keys::add_ssh_key),
        )
        .route("/api/v1/users/me/keys/{id}", delete(keys::remove_ssh_key))
        .route("/api/v1/users/me/gitsshkey", get(keys::git_ssh_key))
        .route(
            "/api/v1/users/me/quiet-hours",
            get(schedule::get_quiet_hours).put(schedule::set_quiet_hours),
        )
        .route(
            "/api/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(tokens::revoke_token))
        .route("/api/v1/templates", get(templates::list_templates))
        .route(
            "/api/v1/templates/push",
            post(templates::push_template).layer(DefaultBodyLimit::max(TEMPLATE_BODY_LIMIT)),
        )
        .route("/api/v1/templates/{name}", get(templates::show_template))
        .route(
            "/api/v1/templates/{name}/versions/{version}/activate",
            post(templates::activate_version),
        )
        .route(
            "/api/v1/templates/{name}/groups",
            axum::routing::put(teams::set_template_groups),
        )
        .route(
            "/api/v1/groups",
            get(teams::list_groups).post(teams::create_group),
        )
        .route("/api/v1/groups/{name}", delete(teams::delete_group))
        .route(
            "/api/v1/groups/{name}/budget",
            axum::routing::put(teams::set_budget),
        )
        .route("/api/v1/groups/{name}/members", post(teams::add_member))
        .route(
            "/api/v1/groups/{name}/members/{username}",
            delete(teams::remove_member),
        )
        .route(
            "/api/v1/organizations",
            get(teams::list_orgs).post(teams::create_org),
        )
        .route(
            "/api/v1/organizations/{name}/members",
            post(teams::add_org_member),
        )
        .route(
            "/api/v1/organizations/{name}/members/{username}",
            delete(teams::remove_org_member),
        )
        .route(
            "/api/v1/quotas",
            get(teams::get_quotas).put(teams::set_quotas),
        )
        .route("/api/v1/quotas/me", get(teams::my_usage))
        .route("/api/v1/replicas", get(cluster::list_replicas))
        .route(
            "/api/v1/provisioner-keys",
            get(provisioner_keys::list_keys).post(provisioner_keys::create_key),
        )
        .route(
            "/api/v1/provisioner-keys/{name}",
            delete(provisioner_keys::revoke_key),
        )
        .route("/api/v1/provisioners", get(provisioner_keys::list_daemons))
        .route(
            "/api/v1/templates/{name}/schedule",
            axum::routing::patch(schedule::edit_template_schedule),
        )
        .route(
            "/api/v1/workspaces/{name}/autostart",
            axum::routing::put(schedule::set_autostart),
        )
        .route(
            "/api/v1/workspaces/{name}/autostop",
            axum::routing::put(schedule::set_autostop),
        )
        .route("/api/v1/workspaces/{name}/extend", post(schedule::extend))
        .route(
            "/api/v1/workspaces/{name}/activate",
            post(schedule::activate),
        )
        .route(
            "/api/v1/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route("/api/v1/workspaces/{name}", get(workspaces::show))
        .route(
            "/api/v1/workspaces/{name}/stats",
            get(workspace_stats::stats_history),
        )
        .route("/api/v1/workspaces/{name}/builds", post(workspaces::build))
        .route("/api/v1/workspaces/{name}/cancel", post(workspaces::cancel))
        .route("/api/v1/workspaces/{name}/relay/ssh", get(relay::relay_ssh))
        .route("/api/v1/workspaces/{name}/pty", get(web::pty))
        .route("/", get(web::home))
        .route("/login", get(web::login_page).post(web::login_submit))
        .route("/logout", post(web::logout))
        .route("/oidc/login", get(oidc::login))
        .route("/oidc/callback", get(oidc::callback))
        .route("/new", get(web::new_page))
        .route("/settings", get(web_settings::settings_page))
        .route("/settings/schedule", get(web_schedule::settings_page))
        .route("/audit", get(web_audit::audit_page))
        .route("/templates", get(web_templates::templates_page))
        .route("/templates/{name}", get(web_templates::template_page))
        .route(
            "/templates/{name}/settings",
            get(web_schedule::template_settings_page),
        )
        .route("/assets/{name}", get(web::asset))
        .route(
            "/api/v1/workspaces/{name}/agent-logs",
            get(logs::agent_logs),
        )
        .route(
            "/api/v1/workspaces/{name}/relay/tcp/{port}",
            get(relay::relay_tcp),
        )
        .route("/api/v1/builds/{id}", get(workspaces::get_build))
        .route("/api/v1/builds/{id}/logs", get(logs::build_logs))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/provisioner/acquire", post(provisioner::acquire))
        .route(
            "/api/v1/provisioner/jobs/{id}/update",
            post(provisioner::update),
        )
        .route(
            "/api/v1/provisioner/jobs/{id}/complete",
            post(provisioner::complete),
        )
        .route("/api/v1/apps/auth", get(apps_domain::auth_start))
        .fallback(web::at_path)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            apps_domain::route_app_hosts,
        ))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .with_state(state)
}
