//! The dashboard's schedule pages (issue 15): the workspace page's Schedule card (markup only;
//! `control/web/app.js` fills it and drives the API), the user's schedule settings (quiet hours)
//! at `/settings/schedule`, and a template's schedule settings at `/templates/NAME/settings`
//! (admins). The pages are skeletons with labelled forms; the values come from the JSON API.

use super::error::ApiPath;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_api::WEEKDAYS;

use super::error::ApiError;
use super::web::{browser_user, esc, page};
use super::AppState;

/// The Schedule card of the workspace page (`web::workspace_page`).
pub(super) const SCHEDULE_CARD: &str = concat!(
    "<section class=\"card\" id=\"schedule\" aria-labelledby=\"schedule-title\"><h2 id=\"schedule-title\">Schedule</h2>",
    "<p id=\"next-action\" class=\"next-action\">…</p>",
    "<p id=\"deadline-line\" class=\"muted\"></p>",
    "<p id=\"required-stop\" class=\"muted\" hidden></p>",
    "<p id=\"build-reason\" class=\"notice\" hidden></p>",
    "<div id=\"dormant\" class=\"notice\" hidden><p id=\"dormant-text\"></p><button type=\"button\" id=\"activate\">Activate</button></div>",
    "<form id=\"autostart-form\" class=\"inline\">",
    "<label for=\"autostart-input\">Autostart (cron with its time zone)</label> ",
    "<input id=\"autostart-input\" name=\"autostart\" size=\"34\" autocomplete=\"off\" spellcheck=\"false\" placeholder=\"CRON_TZ=Europe/Berlin 30 8 * * 1-5\" aria-describedby=\"autostart-help\"> ",
    "<button id=\"autostart-save\">Save</button> <button type=\"button\" id=\"autostart-clear\">Clear</button> ",
    "<span id=\"autostart-help\" class=\"muted\">minute hour day-of-month month day-of-week; clear it to start the workspace by hand only</span>",
    "</form>",
    "<form id=\"autostop-form\" class=\"inline\">",
    "<label for=\"autostop-input\">Autostop after</label> ",
    "<input id=\"autostop-input\" name=\"autostop\" size=\"10\" autocomplete=\"off\" placeholder=\"8h\" aria-describedby=\"autostop-help\"> ",
    "<button id=\"autostop-save\">Save</button> ",
    "<span id=\"autostop-help\" class=\"muted\">without activity, like 8h or 30m; <code>default</code>: the template's; <code>manual</code>: never. <span id=\"autostop-current\"></span></span>",
    "</form>",
    "<form id=\"extend-form\" class=\"inline\">",
    "<label for=\"extend-input\">Extend the deadline by</label> ",
    "<input id=\"extend-input\" name=\"extend\" size=\"8\" value=\"1h\" autocomplete=\"off\"> ",
    "<button id=\"extend-button\">Extend</button>",
    "</form>",
    "<p id=\"schedule-note\" class=\"muted\" hidden></p>",
    "<p class=\"ok\" id=\"schedule-saved\" role=\"status\"></p>",
    "<p class=\"error\" id=\"schedule-error\" role=\"alert\"></p>",
    "</section>"
);

/// `GET /settings/schedule`: the signed-in user's quiet hours (and, for admins, links to the
/// templates' schedule settings).
pub(super) async fn settings_page(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let allowed = state.config.allow_custom_quiet_hours;
    let body = format!(
        concat!(
            "<h1>Schedule settings</h1>",
            "<section class=\"card\" aria-labelledby=\"quiet-title\"><h2 id=\"quiet-title\">Quiet hours</h2>",
            "<p class=\"muted\">When a template has an autostop requirement, your workspaces are stopped when your quiet hours begin, whatever their activity.</p>",
            "<dl class=\"facts\">",
            "<dt>In force</dt><dd><code id=\"quiet-schedule\">…</code></dd>",
            "<dt>Time zone</dt><dd id=\"quiet-timezone\">…</dd>",
            "<dt>Next begins</dt><dd id=\"quiet-next\">…</dd>",
            "<dt>Your own</dt><dd id=\"quiet-custom\">…</dd>",
            "</dl>",
            "<p id=\"quiet-not-allowed\" class=\"notice\"{hidden}>Custom quiet hours are not allowed by this server: everyone has its default ones, and this form is disabled.</p>",
            "<form id=\"quiet-form\" novalidate><fieldset id=\"quiet-fieldset\"{disabled}><legend>Your quiet hours</legend>",
            "<label for=\"quiet-input\">Quiet hours begin (<code>CRON_TZ=ZONE MINUTE HOUR * * *</code>)</label> ",
            "<input id=\"quiet-input\" name=\"schedule\" size=\"34\" autocomplete=\"off\" spellcheck=\"false\" placeholder=\"CRON_TZ=Europe/Berlin 0 22 * * *\"> ",
            "<button id=\"quiet-save\">Save</button> <button type=\"button\" id=\"quiet-default\">Use the default</button>",
            "</fieldset></form>",
            "<p class=\"ok\" id=\"saved\" role=\"status\"></p>",
            "<p class=\"error\" id=\"error\" role=\"alert\"></p>",
            "</section>",
            "<section class=\"card\" id=\"template-links\" aria-labelledby=\"templates-title\" hidden><h2 id=\"templates-title\">Templates' schedules</h2><ul id=\"templates-list\"></ul></section>",
        ),
        hidden = if allowed { " hidden" } else { "" },
        disabled = if allowed { "" } else { " disabled" },
    );
    page(
        "Schedule settings",
        "schedule-settings",
        &[
            ("owner", &user.user.username),
            (
                "admin",
                if super::authz::can(&user, super::authz::Right::ManageTemplates) {
                    "1"
                } else {
                    ""
                },
            ),
        ],
        &csrf,
        Some(&user),
        &body,
    )
}

/// A duration field of the template form: id, label, what it does.
const DURATION_FIELDS: [(&str, &str, &str); 5] = [
    (
        "default-autostop",
        "Default autostop",
        "a running workspace stops after this long without activity",
    ),
    (
        "activity-bump",
        "Activity bump",
        "activity pushes the deadline this far from now",
    ),
    (
        "failure-cleanup",
        "Failure cleanup",
        "a failed workspace is stopped after this long",
    ),
    (
        "dormancy-threshold",
        "Dormancy threshold",
        "a workspace nobody used for this long becomes dormant",
    ),
    (
        "dormancy-auto-deletion",
        "Dormancy auto-deletion",
        "a dormant workspace is deleted, with its home, after this long",
    ),
];

/// `GET /templates/NAME/settings` (admins): the template's schedule settings.
pub(super) async fn template_settings_page(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let refusal = |status: StatusCode, title: &str, message: &str| {
        let body = format!(
            "<h1>{}</h1><p class=\"error\" id=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Back to your workspaces</a></p>",
            esc(title),
            esc(message)
        );
        (
            status,
            page(title, "refused", &[], &csrf, Some(&user), &body),
        )
            .into_response()
    };
    if !super::authz::can(&user, super::authz::Right::ManageTemplates) {
        return refusal(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Only admins can change a template's schedule.",
        );
    }
    match state.store.template_by_name(&name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return refusal(
                StatusCode::NOT_FOUND,
                "No such template",
                &format!("There is no template named {name:?}."),
            )
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let durations: String = DURATION_FIELDS
        .iter()
        .map(|(id, label, help)| {
            format!(
                "<label for=\"{id}\">{label} <input id=\"{id}\" name=\"{id}\" size=\"10\" autocomplete=\"off\" aria-describedby=\"{id}-help\"> <span id=\"{id}-help\" class=\"muted\">{help}</span></label>"
            )
        })
        .collect();
    let days: String = WEEKDAYS
        .iter()
        .map(|d| {
            let mut title = d.to_string();
            title[..1].make_ascii_uppercase();
            format!(
                "<label for=\"day-{d}\"><input type=\"checkbox\" id=\"day-{d}\" name=\"autostart_day\" value=\"{d}\"> {title}</label>"
            )
        })
        .collect();
    let body = format!(
        concat!(
            "<h1>Template <code>{name}</code>: schedule</h1>",
            "<form id=\"template-schedule\" class=\"card\" novalidate>",
            "<p class=\"muted\">Write durations like <code>8h</code>, <code>30m</code>, <code>7d</code> or <code>1h30m</code>; <code>off</code> (or 0) turns a setting off.</p>",
            "{durations}",
            "<fieldset><legend>Autostop requirement</legend>",
            "<label for=\"requirement-days\">Stop in the owner's quiet hours on <select id=\"requirement-days\" name=\"requirement-days\">",
            "<option value=\"off\">off</option><option value=\"daily\">daily</option><option value=\"saturday\">saturday</option><option value=\"sunday\">sunday</option>",
            "</select></label>",
            "<label for=\"requirement-weeks\">every <input type=\"number\" id=\"requirement-weeks\" name=\"requirement-weeks\" min=\"1\" max=\"16\" step=\"1\" size=\"4\"> weeks <span class=\"muted\">(1 to 16; saturday or sunday only)</span></label>",
            "</fieldset>",
            "<fieldset class=\"days\"><legend>Autostart may start workspaces on</legend>{days}</fieldset>",
            "<fieldset><legend>Users may set</legend>",
            "<label for=\"allow-user-autostart\"><input type=\"checkbox\" id=\"allow-user-autostart\" name=\"allow-user-autostart\"> their workspace's autostart schedule</label>",
            "<label for=\"allow-user-autostop\"><input type=\"checkbox\" id=\"allow-user-autostop\" name=\"allow-user-autostop\"> their workspace's autostop (else the default applies)</label>",
            "</fieldset>",
            "<button id=\"save-schedule\">Save</button>",
            "<p class=\"ok\" id=\"saved\" role=\"status\"></p>",
            "<p class=\"error\" id=\"error\" role=\"alert\"></p>",
            "</form>",
            "<section class=\"card\" aria-labelledby=\"current-title\"><h2 id=\"current-title\">Saved schedule</h2><dl class=\"facts\" id=\"current-schedule\"></dl></section>",
        ),
        name = esc(&name),
        durations = durations,
        days = days,
    );
    page(
        &format!("{name} schedule"),
        "template-settings",
        &[("template", &name)],
        &csrf,
        Some(&user),
        &body,
    )
}
