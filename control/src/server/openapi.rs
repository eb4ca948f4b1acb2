//! The OpenAPI 3.1 description of `/api/v1` (issue 18), generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types' `ToSchema`; served at
//! `/api/v1/openapi.json` and committed as `docs/openapi.json` (a unit test keeps the two equal:
//! `UPDATE_OPENAPI=1 cargo test -p outpost-control openapi` rewrites the file).
//!
//! The agent's own API (`/agent/v1`, mTLS on the agent listener) is not part of it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    account, apps_domain, audit, cluster, keys, logs, provisioner, provisioner_keys, relay,
    schedule, teams, templates, tokens, users, web, workspace_stats, workspaces,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost API",
        description = "Control's HTTP API. Authenticate with `Authorization: Bearer TOKEN` \
            (`outpost login`, `outpost tokens create`, or `POST /api/v1/login`); the dashboard's \
            session cookie works too. Errors are `{\"error\":{\"code\",\"message\"}}`. \
            Timestamps are Unix milliseconds.",
        license(name = "Apache-2.0"),
    ),
    paths(
        users::setup, users::login, users::list_users, users::create_user, users::set_roles,
        users::me, users::suspend, users::unsuspend,
        account::delete_user, account::deletion, account::change_password,
        account::change_own_password, account::get_dotfiles, account::set_dotfiles,
        keys::list_ssh_keys, keys::add_ssh_key, keys::remove_ssh_key, keys::git_ssh_key,
        schedule::get_quiet_hours, schedule::set_quiet_hours,
        tokens::list_tokens, tokens::create_token, tokens::revoke_token,
        templates::list_templates, templates::push_template, templates::show_template,
        templates::activate_version,
        teams::set_template_groups, schedule::edit_template_schedule,
        teams::list_groups, teams::create_group, teams::delete_group, teams::set_budget,
        teams::add_member, teams::remove_member,
        teams::list_orgs, teams::create_org, teams::add_org_member, teams::remove_org_member,
        teams::get_quotas, teams::set_quotas, teams::my_usage,
        cluster::list_replicas,
        provisioner_keys::list_keys, provisioner_keys::create_key, provisioner_keys::revoke_key,
        provisioner_keys::list_daemons,
        schedule::set_autostart, schedule::set_autostop, schedule::extend, schedule::activate,
        workspaces::list, workspaces::create, workspaces::show, workspaces::build,
        workspaces::cancel, workspaces::get_build, workspace_stats::stats_history,
        logs::build_logs, logs::agent_logs,
        relay::relay_ssh, relay::relay_tcp, web::pty,
        audit::audit,
        provisioner::acquire, provisioner::update, provisioner::complete,
        apps_domain::auth_start,
    ),
    components(schemas(outpost_api::ErrorBody, outpost_api::ErrorDetail)),
    modifiers(&Common),
)]
struct ApiDoc;

/// What every operation shares: the error answers and how to authenticate.
struct Common;

/// Operations anyone may call (no token).
const PUBLIC: &[&str] = &["/api/v1/setup", "/api/v1/login", "/api/v1/apps/auth"];

/// The error statuses an operation may answer with, beyond its own success.
fn errors(path: &str, method: &str, has_body: bool) -> Vec<(&'static str, &'static str)> {
    let mut e = vec![
        (
            "400",
            "The request is malformed or asks for something invalid",
        ),
        ("404", "No such thing (or one the caller may not know of)"),
        (
            "429",
            "Too many requests; `Retry-After` says when to try again",
        ),
        ("503", "The store is unreachable; try again"),
    ];
    if !PUBLIC.contains(&path) {
        e.push(("401", "No valid token or session"));
        e.push(("403", "The caller's roles do not allow it"));
    } else {
        e.push(("401", "Wrong credentials"));
        e.push(("403", "Refused (a suspended user, setup already done)"));
    }
    if method != "get" {
        e.push((
            "409",
            "The state does not allow it (a name taken, a build running)",
        ));
    }
    if has_body {
        e.push(("413", "The body is too large"));
        e.push(("415", "The body is not `application/json`"));
        e.push(("422", "The JSON does not have the expected fields"));
    }
    e
}

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token, a session token from /api/v1/login, or (provisioner \
                         routes) a provisioner key",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("outpost_session"))),
        );
        for (path, item) in api.paths.paths.iter_mut() {
            let ops: [(&str, &mut Option<Operation>); 5] = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op.as_mut() else { continue };
                let has_body = op.request_body.is_some();
                for (status, description) in errors(path, method, has_body) {
                    if op.responses.responses.contains_key(status) {
                        continue;
                    }
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build();
                    op.responses
                        .responses
                        .insert(status.to_string(), response.into());
                }
                if !PUBLIC.contains(&path.as_str()) {
                    op.security = Some(vec![
                        utoipa::openapi::security::SecurityRequirement::new(
                            "token",
                            Vec::<String>::new(),
                        ),
                        utoipa::openapi::security::SecurityRequirement::new(
                            "session",
                            Vec::<String>::new(),
                        ),
                    ]);
                }
            }
        }
    }
}

/// The description as pretty JSON, with a trailing newline (the committed file's form).
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// `GET /api/v1/openapi.json`: anyone may read it.
pub(super) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
    }

    #[test]
    fn committed_openapi_is_current() {
        let now = openapi_json();
        let path = committed_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &now).expect("writing docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == now,
            "docs/openapi.json is not what the code describes; run \
             `UPDATE_OPENAPI=1 cargo test -p outpost-control openapi` and commit it"
        );
    }

    #[test]
    fn openapi_is_3_1_with_every_operation_answering_errors_as_json() {
        let v: serde_json::Value = serde_json::from_str(&openapi_json()).expect("json");
        assert_eq!(v["openapi"], "3.1.0");
        let paths = v["paths"].as_object().expect("paths");
        assert!(paths.len() >= 50, "{} paths", paths.len());
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("item") {
                let r = &op["responses"];
                assert_eq!(
                    r["404"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
            }
        }
    }
}
