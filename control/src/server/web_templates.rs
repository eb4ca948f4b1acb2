//! The templates pages: `/templates` (the templates one may use) and `/templates/NAME` (its
//! versions with who pushed them and when, the active version's parameters and their
//! validation, the outdated workspaces, and for template admins activating another version).
//! `control/web/templates.js` fills them in from the API.

use axum::extract::{Request, State};
use axum::response::Response;

use super::error::ApiPath;
use super::web::{browser_user, esc, page};
use super::AppState;

pub(super) async fn templates_page(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = concat!(
        "<h1>Templates</h1>",
        "<table id=\"templates\"><thead><tr><th>Name</th><th>Description</th><th>Active version</th>",
        "<th>Organization</th><th>Groups</th></tr></thead>",
        "<tbody><tr><td colspan=\"5\">Loading…</td></tr></tbody></table>",
        "<p class=\"error\" id=\"error\" role=\"alert\"></p>",
        "<script src=\"/assets/templates.js\"></script>",
    );
    page("Templates", "templates", &[], &csrf, Some(&user), body)
}

pub(super) async fn template_page(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let manage = super::authz::can(&user, super::authz::Right::ManageTemplates);
    let n = esc(&name);
    let body = format!(
        concat!(
            "<h1>Template {n}</h1><p id=\"template-description\"></p>",
            "<p class=\"error\" id=\"error\" role=\"alert\"></p>",
            "<p id=\"activated\" role=\"status\" aria-live=\"polite\"></p>",
            "{settings}",
            "<section class=\"card\"><h2>Versions</h2>",
            "<table id=\"versions\"><thead><tr><th>Version</th><th>State</th><th>Pushed by</th>",
            "<th>Pushed</th><th>Files</th><th><span class=\"sr-only\">Actions</span></th></tr></thead>",
            "<tbody></tbody></table></section>",
            "<section class=\"card\"><h2>Parameters <span class=\"muted\">(the active version)</span></h2>",
            "<table id=\"parameters\"><thead><tr><th>Name</th><th>Type</th><th>Default</th>",
            "<th>Validation</th><th>Changeable</th><th>Description</th></tr></thead>",
            "<tbody></tbody></table></section>",
            "<section class=\"card\"><h2>Outdated workspaces</h2><ul id=\"outdated\"></ul></section>",
            "<script src=\"/assets/templates.js\"></script>",
        ),
        n = n,
        settings = if manage {
            format!("<p><a href=\"/templates/{n}/settings\" id=\"template-settings\">Schedule settings</a></p>")
        } else {
            String::new()
        },
    );
    let flag = if manage { "1" } else { "" };
    page(
        &format!("Template {name}"),
        "template",
        &[("template", &name), ("manage", flag)],
        &csrf,
        Some(&user),
        &body,
    )
}
