//! Every route of control's API and dashboard, walked with a user of each role (issue 16): the
//! roles a route lets through are exactly the table's, every other attempt is refused (403, or
//! 404 where the caller may not even know the thing exists) and changes nothing in the store.
//! The table is checked against the router itself (`control/src/server/router.rs`), so a route
//! added without a row here fails this test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

const ROLES: [&str; 5] = ["owner", "user-admin", "template-admin", "auditor", "member"];
const ALL: &[&str] = &ROLES;
/// Who may list users and groups.
const STAFF: &[&str] = &["owner", "user-admin", "template-admin", "auditor"];
/// Users and groups.
const USERS: &[&str] = &["owner", "user-admin"];
/// Templates and their schedules.
const TEMPLATES: &[&str] = &["owner", "template-admin"];
/// Everyone's workspaces, builds and logs; the audit log.
const SEE: &[&str] = &["owner", "auditor"];
const OWNER: &[&str] = &["owner"];
const NONE: &[&str] = &[];

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Bearer,
    /// The dashboard's session cookie.
    Cookie,
    /// An upgrade (`outpost-relay` or `websocket`) with the bearer token.
    Upgrade(&'static str),
}

struct Case {
    method: &'static str,
    /// The route as the router names it.
    pattern: &'static str,
    /// The request's path; `{r}` is the role, `{me}` the user, `{key}`, `{tok}` one of theirs,
    /// `{build}` a build of someone else's workspace, `{gone}` a deleted user.
    path: &'static str,
    body: Option<String>,
    form: bool,
    via: Via,
    allowed: &'static [&'static str],
    /// What a refusal looks like.
    refused: &'static [u16],
    /// Requests (as the first owner) that undo a success, so every role starts from the same
    /// store.
    undo: Vec<(&'static str, &'static str, Option<Value>)>,
    /// The build route: wait for the stop, start again, wait for running.
    rebuild: bool,
    /// Answers past authorisation that say the state does not allow it (activating a
    /// workspace that is not dormant): a role that gets one was let through.
    state_says_no: &'static [u16],
    /// A workspace a success starts (`OWNER/NAME`): waited for until its agent is connected,
    /// so its build does not change the store under the next role's attempt.
    settle: Option<&'static str>,
}

fn case(method: &'static str, pattern: &'static str, allowed: &'static [&'static str]) -> Case {
    Case {
        method,
        pattern,
        path: pattern,
        body: None,
        form: false,
        via: Via::Bearer,
        allowed,
        refused: &[403, 404],
        undo: Vec::new(),
        rebuild: false,
        state_says_no: &[],
        settle: None,
    }
}

impl Case {
    fn at(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }
    fn json(mut self, v: Value) -> Self {
        self.body = Some(v.to_string());
        self
    }
    fn form(mut self, body: &str) -> Self {
        self.body = Some(body.to_string());
        self.form = true;
        self
    }
    fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }
    fn refused(mut self, codes: &'static [u16]) -> Self {
        self.refused = codes;
        self
    }
    fn settle(mut self, workspace: &'static str) -> Self {
        self.settle = Some(workspace);
        self
    }
    fn state_says_no(mut self, codes: &'static [u16]) -> Self {
        self.state_says_no = codes;
        self
    }
    fn undo(mut self, method: &'static str, path: &'static str, body: Option<Value>) -> Self {
        self.undo.push((method, path, body));
        self
    }
}

fn cases() -> Vec<Case> {
    let local = json!({"template.toml": "[provisioner]\ntype = \"local\"\n"});
    vec![
        case("GET", "/healthz", ALL),
        case("GET", "/readyz", ALL),
        case("GET", "/api/v1/openapi.json", ALL),
        // Setup happens once, before any user exists: closed to everyone afterwards.
        case("POST", "/api/v1/setup", NONE)
            .json(json!({"setup_token": "x", "username": "x-{r}", "password": "a-long-password-1"}))
            .refused(&[403, 409]),
        case("POST", "/api/v1/login", ALL)
            .json(json!({"username": "{me}", "password": "{me}-password-1"})),
        case("GET", "/api/v1/users", STAFF),
        case("POST", "/api/v1/users", USERS)
            .json(json!({"username": "n-{r}", "password": "a-long-password-1"})),
        case("PUT", "/api/v1/users/{username}/roles", USERS)
            .at("/api/v1/users/plain/roles")
            .json(json!({"roles": ["auditor"]}))
            .undo(
                "PUT",
                "/api/v1/users/plain/roles",
                Some(json!({"roles": []})),
            ),
        case("GET", "/api/v1/users/me", ALL),
        case("POST", "/api/v1/users/{username}/suspend", USERS)
            .at("/api/v1/users/plain/suspend")
            .undo("POST", "/api/v1/users/plain/unsuspend", None),
        case("POST", "/api/v1/users/{username}/unsuspend", USERS)
            .at("/api/v1/users/plain/unsuspend"),
        case("DELETE", "/api/v1/users/{username}", USERS).at("/api/v1/users/del-{r}"),
        case("GET", "/api/v1/users/{username}/deletion", USERS).at("/api/v1/users/{gone}/deletion"),
        case("PUT", "/api/v1/users/{username}/password", USERS)
            .at("/api/v1/users/plain/password")
            .json(json!({"new_password": "a-long-password-2"})),
        case("GET", "/api/v1/users/me/dotfiles", ALL),
        case("PUT", "/api/v1/users/me/dotfiles", ALL)
            .json(json!({"dotfiles_uri": "https://git.example.com/dots.git"})),
        case("GET", "/api/v1/users/me/keys", ALL),
        case("POST", "/api/v1/users/me/keys", ALL)
            .json(json!({"name": "second", "public_key": "{pub}"})),
        case("DELETE", "/api/v1/users/me/keys/{id}", ALL).at("/api/v1/users/me/keys/{key}"),
        case("GET", "/api/v1/users/me/gitsshkey", ALL),
        case("GET", "/api/v1/users/me/quiet-hours", ALL),
        case("PUT", "/api/v1/users/me/quiet-hours", ALL)
            .json(json!({"schedule": "CRON_TZ=Europe/Berlin 30 2 * * *"})),
        case("GET", "/api/v1/tokens", ALL),
        case("POST", "/api/v1/tokens", ALL).json(json!({"name": "more"})),
        case("DELETE", "/api/v1/tokens/{id}", ALL).at("/api/v1/tokens/{tok}"),
        case("GET", "/api/v1/templates", ALL),
        case("POST", "/api/v1/templates/push", TEMPLATES)
            .json(json!({"name": "t-{r}", "files": local})),
        case("GET", "/api/v1/templates/{name}", ALL).at("/api/v1/templates/base"),
        // Activating the version that is already active: allowed or refused, nothing changes.
        case(
            "POST",
            "/api/v1/templates/{name}/versions/{version}/activate",
            TEMPLATES,
        )
        .at("/api/v1/templates/base/versions/1/activate"),
        case("PUT", "/api/v1/templates/{name}/groups", TEMPLATES)
            .at("/api/v1/templates/base/groups")
            .json(json!({"groups": ["crew"]}))
            .undo(
                "PUT",
                "/api/v1/templates/base/groups",
                Some(json!({"groups": []})),
            ),
        case("PATCH", "/api/v1/templates/{name}/schedule", TEMPLATES)
            .at("/api/v1/templates/base/schedule")
            .json(json!({"activity_bump_ms": 7_200_000}))
            .undo(
                "PATCH",
                "/api/v1/templates/base/schedule",
                Some(json!({"activity_bump_ms": 3_600_000})),
            ),
        case("GET", "/api/v1/groups", STAFF),
        case("POST", "/api/v1/groups", USERS).json(json!({"name": "g-{r}"})),
        case("DELETE", "/api/v1/groups/{name}", USERS).at("/api/v1/groups/gdel-{r}"),
        case("PUT", "/api/v1/groups/{name}/budget", USERS)
            .at("/api/v1/groups/crew/budget")
            .json(json!({"quota_budget": 5}))
            .undo(
                "PUT",
                "/api/v1/groups/crew/budget",
                Some(json!({"quota_budget": null})),
            ),
        case("POST", "/api/v1/groups/{name}/members", USERS)
            .at("/api/v1/groups/crew/members")
            .json(json!({"username": "plain"}))
            .undo("DELETE", "/api/v1/groups/crew/members/plain", None),
        case("DELETE", "/api/v1/groups/{name}/members/{username}", USERS)
            .at("/api/v1/groups/crew/members/victim")
            .undo(
                "POST",
                "/api/v1/groups/crew/members",
                Some(json!({"username": "victim"})),
            ),
        case("GET", "/api/v1/organizations", ALL),
        case("POST", "/api/v1/organizations", OWNER).json(json!({"name": "o-{r}"})),
        case("POST", "/api/v1/organizations/{name}/members", USERS)
            .at("/api/v1/organizations/side/members")
            .json(json!({"username": "victim"}))
            .undo("DELETE", "/api/v1/organizations/side/members/victim", None),
        case(
            "DELETE",
            "/api/v1/organizations/{name}/members/{username}",
            USERS,
        )
        .at("/api/v1/organizations/side/members/plain")
        .undo(
            "POST",
            "/api/v1/organizations/side/members",
            Some(json!({"username": "plain"})),
        ),
        // The limits are no secret: members see what they are held to.
        case("GET", "/api/v1/quotas", ALL),
        case("PUT", "/api/v1/quotas", OWNER)
            .json(json!({"workspaces_per_user": 7}))
            .undo(
                "PUT",
                "/api/v1/quotas",
                Some(json!({"workspaces_per_user": null})),
            ),
        case("GET", "/api/v1/quotas/me", ALL),
        case("GET", "/api/v1/replicas", SEE),
        case("GET", "/api/v1/provisioner-keys", TEMPLATES),
        case("POST", "/api/v1/provisioner-keys", TEMPLATES).json(json!({"name": "pk-{r}"})),
        case("DELETE", "/api/v1/provisioner-keys/{name}", TEMPLATES)
            .at("/api/v1/provisioner-keys/pkdel-{r}"),
        // Daemons: those who manage keys, and auditors.
        case(
            "GET",
            "/api/v1/provisioners",
            &["owner", "template-admin", "auditor"],
        ),
        case("PUT", "/api/v1/workspaces/{name}/autostart", OWNER)
            .at("/api/v1/workspaces/victim%2Fvw/autostart")
            .json(json!({"schedule": "CRON_TZ=UTC 0 9 * * 1-5"}))
            .undo(
                "PUT",
                "/api/v1/workspaces/victim%2Fvw/autostart",
                Some(json!({"schedule": null})),
            ),
        case("PUT", "/api/v1/workspaces/{name}/autostop", OWNER)
            .at("/api/v1/workspaces/victim%2Fvw/autostop")
            .json(json!({"autostop_ms": 7_200_000}))
            .undo(
                "PUT",
                "/api/v1/workspaces/victim%2Fvw/autostop",
                Some(json!({"autostop_ms": 28_800_000})),
            ),
        case("POST", "/api/v1/workspaces/{name}/extend", OWNER)
            .at("/api/v1/workspaces/victim%2Fvw/extend")
            .json(json!({"duration_ms": 3_600_000})),
        case("POST", "/api/v1/workspaces/{name}/activate", OWNER)
            .at("/api/v1/workspaces/victim%2Fvw/activate")
            .state_says_no(&[409]),
        case("GET", "/api/v1/workspaces", ALL),
        case("POST", "/api/v1/workspaces", ALL)
            .json(json!({"name": "w-{r}", "template": "base"}))
            .settle("{me}/w-{r}"),
        case("GET", "/api/v1/workspaces/{name}", SEE).at("/api/v1/workspaces/victim%2Fvw"),
        case("GET", "/api/v1/workspaces/{name}/stats", SEE)
            .at("/api/v1/workspaces/victim%2Fvw/stats"),
        Case {
            rebuild: true,
            ..case("POST", "/api/v1/workspaces/{name}/builds", OWNER)
                .at("/api/v1/workspaces/victim%2Fvw/builds")
                .json(json!({"action": "stop"}))
        },
        case("POST", "/api/v1/workspaces/{name}/cancel", OWNER)
            .at("/api/v1/workspaces/victim%2Fvw/cancel")
            .state_says_no(&[409]),
        // Into someone else's workspace: nobody, without --allow-owner-workspace-access.
        case("GET", "/api/v1/workspaces/{name}/relay/ssh", NONE)
            .at("/api/v1/workspaces/victim%2Fvw/relay/ssh")
            .via(Via::Upgrade("outpost-relay")),
        case("GET", "/api/v1/workspaces/{name}/relay/tcp/{port}", NONE)
            .at("/api/v1/workspaces/victim%2Fvw/relay/tcp/8080")
            .via(Via::Upgrade("outpost-relay")),
        case("GET", "/api/v1/workspaces/{name}/pty", NONE)
            .at("/api/v1/workspaces/victim%2Fvw/pty?session=s-{r}")
            .via(Via::Upgrade("websocket")),
        case("GET", "/api/v1/workspaces/{name}/agent-logs", SEE)
            .at("/api/v1/workspaces/victim%2Fvw/agent-logs"),
        case("GET", "/api/v1/builds/{id}", SEE).at("/api/v1/builds/{build}"),
        case("GET", "/api/v1/builds/{id}/logs", SEE).at("/api/v1/builds/{build}/logs"),
        case("GET", "/api/v1/audit", SEE),
        // Provisioner daemons use the provisioner key, never a user's token.
        case("POST", "/api/v1/provisioner/acquire", NONE)
            .json(json!({"daemon_id": "d", "provisioners": ["local"]}))
            .refused(&[401]),
        case("POST", "/api/v1/provisioner/jobs/{id}/update", NONE)
            .at("/api/v1/provisioner/jobs/j/update")
            .json(json!({"daemon_id": "d", "logs": []}))
            .refused(&[401]),
        case("POST", "/api/v1/provisioner/jobs/{id}/complete", NONE)
            .at("/api/v1/provisioner/jobs/j/complete")
            .json(json!({"daemon_id": "d", "outcome": {"kind": "succeeded"}}))
            .refused(&[401]),
        // Apps on their own hosts: this server has no --apps-domain.
        case("GET", "/api/v1/apps/auth", NONE)
            .at("/api/v1/apps/auth?app=x--vw--victim")
            .refused(&[400, 404]),
        // The dashboard, with the session cookie.
        case("GET", "/", ALL).via(Via::Cookie),
        case("GET", "/login", ALL).via(Via::Cookie),
        // Signing in and out need the form's and the page's CSRF tokens (the browser tests
        // have them): without, nobody's session changes.
        case("POST", "/login", ALL)
            .via(Via::Cookie)
            .form("username={me}&password={me}-password-1&csrf=forged&next=/"),
        case("POST", "/logout", NONE)
            .via(Via::Cookie)
            .form("csrf=forged")
            .refused(&[403]),
        // No OpenID Connect provider on this server.
        case("GET", "/oidc/login", NONE).via(Via::Cookie),
        case("GET", "/oidc/callback", NONE)
            .at("/oidc/callback?code=x&state=y")
            .via(Via::Cookie),
        case("GET", "/new", ALL).via(Via::Cookie),
        case("GET", "/settings", ALL).via(Via::Cookie),
        case("GET", "/settings/schedule", ALL).via(Via::Cookie),
        case("GET", "/audit", SEE).via(Via::Cookie),
        case("GET", "/templates", ALL).via(Via::Cookie),
        case("GET", "/templates/{name}", ALL)
            .at("/templates/base")
            .via(Via::Cookie),
        case("GET", "/templates/{name}/settings", TEMPLATES)
            .at("/templates/base/settings")
            .via(Via::Cookie),
        case("GET", "/assets/{name}", ALL)
            .at("/assets/app.js")
            .via(Via::Cookie),
        // Workspace pages (the router's fallback): someone else's.
        case("GET", "/@{owner}/{workspace}", SEE)
            .at("/@victim/vw")
            .via(Via::Cookie),
        case("GET", "/@{owner}/{workspace}/terminal", NONE)
            .at("/@victim/vw/terminal")
            .via(Via::Cookie),
        case("GET", "/@{owner}/{workspace}/ports/{port}/", NONE)
            .at("/@victim/vw/ports/8080/")
            .via(Via::Cookie),
        case("GET", "/@{owner}/{workspace}/apps/{slug}/", NONE)
            .at("/@victim/vw/apps/code/")
            .via(Via::Cookie),
        // Last: it changes the user's password.
        case("PUT", "/api/v1/users/me/password", ALL).json(
            json!({"current_password": "{me}-password-1", "new_password": "{me}-password-2"}),
        ),
    ]
}

/// The routes the router declares: (METHOD, PATH) from `.route("PATH", get(..).post(..))`.
pub(crate) fn declared_routes() -> R<BTreeSet<(String, String)>> {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/src/server/router.rs"),
    )?;
    let start = src
        .find("fn api_router")
        .ok_or_else(|| anyhow::anyhow!("no api_router"))?;
    let body = &src[start..];
    let end = body.find(".fallback(").unwrap_or(body.len());
    let mut out = BTreeSet::new();
    for chunk in body[..end].split(".route(").skip(1) {
        let path = chunk
            .split('"')
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("a route without a path: {chunk}"))?;
        for m in ["get", "post", "put", "patch", "delete"] {
            let calls =
                chunk.matches(&format!("{m}(")).count() - chunk.matches(&format!("_{m}(")).count();
            if calls > 0 {
                out.insert((m.to_uppercase(), path.to_string()));
            }
        }
    }
    anyhow::ensure!(out.len() > 50, "parsed only {} routes", out.len());
    Ok(out)
}

/// One request as `token`'s holder; the response's status.
fn send(s: &Server, c: &Case, path: &str, body: Option<&str>, token: &str) -> R<u16> {
    let addr = s.url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(addr)?;
    let mut head = format!("{} {path} HTTP/1.1\r\nHost: {addr}\r\n", c.method);
    match c.via {
        Via::Bearer => head.push_str(&format!(
            "Authorization: Bearer {token}\r\nConnection: close\r\n"
        )),
        Via::Cookie => head.push_str(&format!(
            "Cookie: outpost_session={token}\r\nOrigin: {}\r\nConnection: close\r\n",
            s.url.trim_end_matches('/')
        )),
        Via::Upgrade(kind) => {
            head.push_str(&format!(
                "Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: {kind}\r\n"
            ));
            if kind == "websocket" {
                head.push_str(
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                );
            }
        }
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(c.method, "POST" | "PUT" | "PATCH") {
        let ct = if c.form {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        head.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 256 {
        if conn.read(&mut b)? == 0 {
            break;
        }
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{} {path}: no status line: {text:?}", c.method))
}

fn token_of(c: &Client) -> R<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(c.config_dir.join("session.json"))?)?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

fn as_admin(s: &Server, method: &str, path: &str, body: Option<&Value>) -> R<Value> {
    let (code, v) = http(
        method,
        &format!("{}{path}", s.url.trim_end_matches('/')),
        Some(&s.token()?),
        body.map(|b| ("application/json", b.to_string().into_bytes()))
            .as_ref()
            .map(|(ct, b)| (*ct, b.as_slice())),
    )?;
    anyhow::ensure!((200..300).contains(&code), "{method} {path}: {code} {v}");
    Ok(v)
}

fn every_route_with_every_role(backend: Backend) -> R {
    // The table covers the router exactly.
    let table: BTreeSet<(String, String)> = cases()
        .iter()
        .filter(|c| !c.pattern.starts_with("/@"))
        .map(|c| (c.method.to_string(), c.pattern.to_string()))
        .collect();
    let declared = declared_routes()?;
    let missing: Vec<_> = declared.difference(&table).collect();
    let stale: Vec<_> = table.difference(&declared).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "routes without a row: {missing:?}; rows without a route: {stale:?}"
    );

    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    let victim = Client::new_user(&s, "victim")?;
    // A deadline to extend.
    admin.ok(&["templates", "edit", "base", "--default-autostop", "8h"])?;
    victim.ok(&["create", "vw"])?;
    s.wait_for("victim/vw", T, |w| w["status"] == "running")?;
    for name in [
        "plain",
        "gone",
        "del-owner",
        "del-useradmin",
        "del-templateadmin",
        "del-auditor",
        "del-member",
    ] {
        let o = s.cli_stdin(
            &["users", "create", name, "--password-stdin"],
            "a-long-password-1\n",
        )?;
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    admin.ok(&["groups", "create", "crew"])?;
    admin.ok(&["groups", "add", "crew", "victim"])?;
    admin.ok(&["orgs", "create", "side"])?;
    for r in ["owner", "useradmin", "templateadmin", "auditor", "member"] {
        admin.ok(&["provisioners", "keys", "create", &format!("pkdel-{r}")])?;
    }
    admin.ok(&["orgs", "add", "side", "plain"])?;
    // A deleted user (`deleted-ID`), to ask after.
    let gone = as_admin(&s, "DELETE", "/api/v1/users/gone", None)?["user"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let build = s.workspace("victim/vw")?["latest_build"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    struct Who {
        role: &'static str,
        short: String,
        name: String,
        token: String,
        vars: BTreeMap<&'static str, String>,
    }
    let mut people = Vec::new();
    for role in ROLES {
        let short = role.replace('-', "");
        let name = format!("u-{short}");
        let c = Client::new_user(&s, &name)?;
        if role != "member" {
            admin.ok(&["users", "roles", &name, "--set", role])?;
        }
        admin.ok(&["groups", "create", &format!("gdel-{short}")])?;
        let token = token_of(&c)?;
        let (_, keys) = http(
            "GET",
            &format!("{}/api/v1/users/me/keys", s.url),
            Some(&token),
            None,
        )?;
        let (code, tok) = post_json(
            &format!("{}/api/v1/tokens", s.url),
            Some(&token),
            &json!({"name": "pre"}),
        )?;
        anyhow::ensure!(code == 201 || code == 200, "token: {code} {tok}");
        let second = s.dir.path().join(format!("second-{short}"));
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&second)
            .status()?;
        anyhow::ensure!(st.success(), "ssh-keygen");
        let public = std::fs::read_to_string(second.with_extension("pub"))?;
        let vars = BTreeMap::from([
            (
                "{key}",
                keys[0]["id"].as_str().unwrap_or_default().to_string(),
            ),
            (
                "{tok}",
                tok["info"]["id"].as_str().unwrap_or_default().to_string(),
            ),
            ("{pub}", public.trim().to_string()),
        ]);
        people.push(Who {
            role,
            short,
            name,
            token,
            vars,
        });
    }

    let up = |w: &Value| w["status"] == "running" && w["agent"]["status"] == "connected";
    let mut report = Vec::new();
    for c in cases() {
        let mut let_through = BTreeSet::new();
        for who in &people {
            let fill = |t: &str| {
                let mut t = t
                    .replace("{r}", &who.short)
                    .replace("{me}", &who.name)
                    .replace("{build}", &build)
                    .replace("{gone}", &gone);
                for (k, v) in &who.vars {
                    t = t.replace(k, v);
                }
                t
            };
            let path = fill(c.path);
            let body = c.body.as_deref().map(fill);
            let before = s.db_snapshot()?;
            let code = send(&s, &c, &path, body.as_deref(), &who.token)?;
            let what = format!("{} {path} as {}", c.method, who.role);
            assert!(code < 500, "{what}: {code}");
            if c.refused.contains(&code) {
                assert_eq!(
                    s.db_snapshot()?,
                    before,
                    "{what} was refused but changed the store"
                );
                continue;
            }
            assert!(
                (200..400).contains(&code) || c.state_says_no.contains(&code),
                "{what}: {code}, neither a success nor one of the refusals {:?}",
                c.refused
            );
            let_through.insert(who.role);
            for (m, p, b) in &c.undo {
                as_admin(&s, m, p, b.as_ref())?;
            }
            if c.rebuild {
                s.wait_for("victim/vw", T, |w| w["status"] == "stopped")?;
                as_admin(
                    &s,
                    "POST",
                    "/api/v1/workspaces/victim%2Fvw/builds",
                    Some(&json!({"action": "start"})),
                )?;
                s.wait_for("victim/vw", T, up)?;
            }
            if let Some(w) = c.settle {
                s.wait_for(&fill(w), T, up)?;
            }
        }
        let want: BTreeSet<&str> = c.allowed.iter().copied().collect();
        assert_eq!(let_through, want, "{} {}", c.method, c.pattern);
        report.push(format!("{} {}: {:?}", c.method, c.pattern, c.allowed));
    }
    eprintln!(
        "{} routes x {} roles:\n{}",
        report.len(),
        ROLES.len(),
        report.join("\n")
    );
    Ok(())
}
both_backends!(every_route_with_every_role);
