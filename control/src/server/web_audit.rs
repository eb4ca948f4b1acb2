//! The dashboard's audit page (`GET /audit`, owners and auditors; anyone else gets a 403 page):
//! a skeleton with filter inputs (actor, action, target, outcome) and an empty table that
//! `control/web/app.js` fills from `GET /api/v1/audit`, a page at a time ("Older").

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::authz::{can, Right};
use super::web::{browser_user, esc, page};
use super::AppState;

/// A filter input: id, the API's parameter, label, placeholder.
const FILTERS: [(&str, &str, &str, &str); 4] = [
    ("filter-actor", "actor", "Actor", "alice"),
    (
        "filter-action",
        "action",
        "Action",
        "template. or user.login",
    ),
    (
        "filter-target",
        "target",
        "Target",
        "user:bob or workspace:alice/",
    ),
    (
        "filter-outcome",
        "outcome",
        "Outcome",
        "ok, rejected, refused",
    ),
];

/// `GET /audit`.
pub(super) async fn audit_page(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !can(&user, Right::ReadAudit) {
        user.record(
            "audit.read",
            "refused",
            "",
            None,
            "the audit page: may not read the audit log",
        );
        let body = concat!(
            "<h1>Not allowed</h1>",
            "<p class=\"error\" id=\"error\" role=\"alert\">Only owners and auditors can read the audit log.</p>",
            "<p><a href=\"/\">Back to your workspaces</a></p>"
        );
        return (
            StatusCode::FORBIDDEN,
            page("Not allowed", "refused", &[], &csrf, Some(&user), body),
        )
            .into_response();
    }
    let inputs: String = FILTERS
        .iter()
        .map(|(id, name, label, hint)| {
            format!(
                "<label for=\"{id}\">{label} <input id=\"{id}\" name=\"{name}\" size=\"18\" autocomplete=\"off\" spellcheck=\"false\" placeholder=\"{}\"></label> ",
                esc(hint)
            )
        })
        .collect();
    let body = format!(
        concat!(
            "<h1>Audit log</h1>",
            "<form id=\"audit-filters\" class=\"card inline\" role=\"search\" aria-label=\"Filter events\">",
            "{inputs}",
            "<button id=\"audit-apply\">Filter</button> <button type=\"button\" id=\"audit-clear\">Clear</button>",
            "<p class=\"muted\">An action or target may end in <code>.</code>, <code>:</code> or <code>/</code> to match all that begin with it.</p>",
            "</form>",
            "<p class=\"error\" id=\"error\" role=\"alert\"></p>",
            "<table id=\"audit\"><caption class=\"muted\" id=\"audit-count\"></caption>",
            "<thead><tr><th scope=\"col\">When (UTC)</th><th scope=\"col\">Action</th><th scope=\"col\">Outcome</th><th scope=\"col\">Actor</th>",
            "<th scope=\"col\">Target</th><th scope=\"col\">Source</th><th scope=\"col\">Details</th></tr></thead><tbody></tbody></table>",
            "<p><button type=\"button\" id=\"audit-more\" hidden>Older events</button></p>",
        ),
        inputs = inputs,
    );
    page("Audit log", "audit", &[], &csrf, Some(&user), &body)
}
