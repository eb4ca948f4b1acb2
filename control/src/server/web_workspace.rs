//! The workspace page (`/@OWNER/WS`): status and health, the actions its state allows, how to
//! connect (SSH, VS Code, JetBrains Gateway), live statistics with the last hour's history, apps
//! and ports, the schedule, and the build and script logs. `control/web/app.js` fills it in.

use axum::extract::Request;
use axum::response::Response;

use super::web::{esc, page, page_workspace};
use super::AppState;

pub(super) async fn workspace_page(
    state: AppState,
    req: Request,
    owner: String,
    ws: String,
) -> Response {
    let (user, csrf, w) = match page_workspace(&state, req, &owner, &ws).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    use super::authz::{can, Right};
    let mine = w.owner_id == user.user.id;
    // What the page offers someone else's workspace: acting on it (owners), getting into it
    // (owners, when the server allows it), or only looking (auditors).
    let manage = mine || can(&user, Right::ManageAllWorkspaces);
    let connect = mine
        || (state.config.allow_owner_workspace_access && can(&user, Right::ConnectAllWorkspaces));
    let reference = if mine {
        ws.clone()
    } else {
        format!("{owner}/{ws}")
    };
    let (name, owner_html) = (esc(&ws), esc(&owner));
    let status = format!(
        concat!(
            "<h1>{name}</h1><section class=\"card\" aria-labelledby=\"status-heading\">",
            "<h2 id=\"status-heading\" class=\"sr-only\">Status</h2>",
            "<p>Status: <b id=\"status\">…</b> · Health: <span id=\"health\">…</span> · ",
            "Agent: <span id=\"agent\">…</span> · Lifecycle: <span id=\"lifecycle\">…</span> · ",
            "Template: <span id=\"template\">…</span></p>",
            "<p id=\"reasons\" class=\"error\"></p>",
            "<p id=\"build-state\" role=\"status\" aria-live=\"polite\"></p>",
            "<p class=\"actions\">",
            "<button type=\"button\" data-action=\"start\" hidden>Start</button> ",
            "<button type=\"button\" data-action=\"stop\" hidden>Stop</button> ",
            "<button type=\"button\" data-action=\"restart\" hidden>Restart</button> ",
            "<button type=\"button\" data-action=\"update\" hidden>Update</button> ",
            "<button type=\"button\" id=\"cancel-build\" hidden>Cancel build</button> ",
            "<button type=\"button\" data-action=\"delete\" class=\"danger\" hidden>Delete</button> ",
            "<a class=\"button\" id=\"open-terminal\" href=\"/@{owner}/{name}/terminal\" target=\"_blank\" rel=\"noopener\" hidden>Terminal</a>",
            "</p><p class=\"error\" id=\"error\" role=\"alert\"></p></section>",
        ),
        name = name,
        owner = owner_html,
    );
    // How to get in: only for those who may (the workspace's owner, or owners when allowed).
    let connect_card = if connect && mine {
        format!(
            concat!(
                "<section class=\"card\" id=\"connect\" aria-labelledby=\"connect-heading\">",
                "<h2 id=\"connect-heading\">Connect</h2>",
                "<p>Once, on your machine: <code id=\"config-ssh\">outpost config-ssh</code> ",
                "(writes an SSH config block for every workspace of yours).</p>",
                "<p>Then: <code id=\"ssh-command\">ssh {name}.outpost</code>; ",
                "<code>scp</code>, <code>sftp</code>, <code>rsync</code> and <code>git</code> take the same host.</p>",
                "<p><a class=\"button\" id=\"open-vscode\" role=\"link\" aria-disabled=\"true\">Open in VS Code</a> ",
                "<a class=\"button\" id=\"open-jetbrains\" role=\"link\" aria-disabled=\"true\">Open in JetBrains Gateway</a> ",
                "<span id=\"connect-note\" class=\"muted\">(once the agent has connected)</span></p>",
                "</section>",
            ),
            name = name,
        )
    } else {
        String::new()
    };
    let stats_card = concat!(
        "<section class=\"card\" id=\"stats\" aria-labelledby=\"stats-heading\">",
        "<h2 id=\"stats-heading\">Resources <span class=\"muted\">(the last hour)</span></h2>",
        "<div class=\"stats-grid\">",
        "<figure><figcaption>CPU <b id=\"stat-cpu\">–</b></figcaption><svg id=\"spark-cpu\" class=\"spark\" viewBox=\"0 0 120 30\" role=\"img\" aria-label=\"CPU over the last hour\"></svg></figure>",
        "<figure><figcaption>Memory <b id=\"stat-mem\">–</b></figcaption><svg id=\"spark-mem\" class=\"spark\" viewBox=\"0 0 120 30\" role=\"img\" aria-label=\"Memory over the last hour\"></svg></figure>",
        "<figure><figcaption>Home disk <b id=\"stat-disk\">–</b></figcaption><svg id=\"spark-disk\" class=\"spark\" viewBox=\"0 0 120 30\" role=\"img\" aria-label=\"Home disk over the last hour\"></svg></figure>",
        "<figure><figcaption>Load <b id=\"stat-load\">–</b></figcaption><svg id=\"spark-load\" class=\"spark\" viewBox=\"0 0 120 30\" role=\"img\" aria-label=\"Load over the last hour\"></svg></figure>",
        "</div><p>Sessions: <span id=\"sessions\">–</span></p></section>",
    );
    let body = format!(
        concat!(
            "{status}{connect}{stats}{schedule}",
            "<section class=\"card\"><h2>Apps</h2><ul id=\"apps\"><li class=\"muted\">none</li></ul>",
            "<h2>Listening ports</h2><ul id=\"ports\"><li class=\"muted\">none</li></ul></section>",
            "<section class=\"card\"><h2>Build log</h2><pre id=\"build-log\" role=\"log\" tabindex=\"0\" aria-label=\"Build log\"></pre></section>",
            "<section class=\"card\"><h2>Scripts' logs</h2><pre id=\"agent-log\" role=\"log\" tabindex=\"0\" aria-label=\"Scripts' logs\"></pre></section>",
            "<script src=\"/assets/workspace.js\"></script>",
        ),
        status = status,
        connect = connect_card,
        stats = stats_card,
        schedule = super::web_schedule::SCHEDULE_CARD,
    );
    let flag = |b: bool| if b { "1" } else { "" };
    page(
        &ws,
        "workspace",
        &[
            ("owner", &owner),
            ("workspace", &ws),
            ("ref", &reference),
            ("manage", flag(manage)),
            ("connect", flag(connect)),
        ],
        &csrf,
        Some(&user),
        &body,
    )
}
