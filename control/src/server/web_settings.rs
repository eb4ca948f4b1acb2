//! The user's own settings page `/settings`: SSH keys, API tokens, the account's dotfiles
//! repository, the password, and a link to the schedule settings (quiet hours). A skeleton of
//! labelled forms; `control/web/app.js` fills it from the JSON API and drives it.

use axum::extract::{Request, State};
use axum::response::Response;

use super::web::{browser_user, page};
use super::AppState;

const BODY: &str = concat!(
    "<h1>Settings</h1>",
    "<p class=\"ok\" id=\"saved\" role=\"status\"></p>",
    "<p class=\"error\" id=\"error\" role=\"alert\"></p>",
    // SSH keys
    "<section class=\"card\" id=\"keys\" aria-labelledby=\"keys-title\"><h2 id=\"keys-title\">SSH keys</h2>",
    "<p class=\"muted\">Your workspaces accept these keys over SSH.</p>",
    "<table id=\"keys-table\" aria-labelledby=\"keys-title\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Fingerprint</th><th scope=\"col\">Added</th><th scope=\"col\"><span class=\"sr-only\">Actions</span></th></tr></thead><tbody id=\"keys-list\"></tbody></table>",
    "<p id=\"keys-empty\" class=\"muted\" hidden>No SSH keys yet.</p>",
    "<form id=\"key-form\"><fieldset><legend>Add an SSH key</legend>",
    "<label for=\"key-name\">Name</label> <input id=\"key-name\" name=\"name\" size=\"20\" autocomplete=\"off\" placeholder=\"laptop\"><br>",
    "<label for=\"key-public\">Public key (paste the contents of a .pub file)</label><br>",
    "<textarea id=\"key-public\" name=\"public_key\" rows=\"3\" cols=\"70\" spellcheck=\"false\" placeholder=\"ssh-ed25519 AAAA… you@host\" required></textarea><br>",
    "<button id=\"key-add\">Add key</button>",
    "</fieldset></form></section>",
    // API tokens
    "<section class=\"card\" id=\"tokens\" aria-labelledby=\"tokens-title\"><h2 id=\"tokens-title\">API tokens</h2>",
    "<p class=\"muted\">Tokens sign scripts and other tools in as you (<code>Authorization: Bearer TOKEN</code>). Your browser sessions and CLI sign-ins are listed too.</p>",
    "<table id=\"tokens-table\" aria-labelledby=\"tokens-title\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Created</th><th scope=\"col\">Expires</th><th scope=\"col\">Last used</th><th scope=\"col\"><span class=\"sr-only\">Actions</span></th></tr></thead><tbody id=\"tokens-list\"></tbody></table>",
    "<form id=\"token-form\" class=\"inline\"><fieldset><legend>Create a token</legend>",
    "<label for=\"token-name\">Name</label> <input id=\"token-name\" name=\"name\" size=\"20\" autocomplete=\"off\" required> ",
    "<label for=\"token-lifetime\">Lifetime</label> <input id=\"token-lifetime\" name=\"lifetime\" size=\"8\" value=\"30d\" autocomplete=\"off\" aria-describedby=\"token-lifetime-help\"> ",
    "<span id=\"token-lifetime-help\" class=\"muted\">like 30d or 12h (at most a year)</span> ",
    "<button id=\"token-create\">Create token</button>",
    "</fieldset></form>",
    "<div id=\"token-secret-box\" class=\"notice\" hidden><p id=\"token-secret-label\">Your new token: copy it now, it is shown only once.</p>",
    "<p><code id=\"token-secret\" aria-labelledby=\"token-secret-label\"></code></p>",
    "<button type=\"button\" id=\"token-secret-done\">I have copied it</button></div>",
    "</section>",
    // Dotfiles
    "<section class=\"card\" id=\"dotfiles\" aria-labelledby=\"dotfiles-title\"><h2 id=\"dotfiles-title\">Dotfiles</h2>",
    "<p class=\"muted\">A git repository of your dotfiles: every template with dotfiles installs it in new workspaces (and on a start, when the workspace has none) unless you give one.</p>",
    "<p>Current: <code id=\"dotfiles-current\">…</code></p>",
    "<form id=\"dotfiles-form\" class=\"inline\">",
    "<label for=\"dotfiles-input\">Dotfiles repository</label> ",
    "<input id=\"dotfiles-input\" name=\"dotfiles_uri\" size=\"50\" autocomplete=\"off\" spellcheck=\"false\" placeholder=\"https://github.com/you/dotfiles\"> ",
    "<button id=\"dotfiles-save\">Save</button> <button type=\"button\" id=\"dotfiles-clear\">Clear</button>",
    "</form></section>",
    // Password
    "<section class=\"card\" id=\"password\" aria-labelledby=\"password-title\"><h2 id=\"password-title\">Password</h2>",
    "<p class=\"muted\">Changing it signs out your other browser sessions and revokes your other tokens; this session stays.</p>",
    "<form id=\"password-form\"><fieldset><legend>Change your password</legend>",
    "<label for=\"password-current\">Current password</label> <input type=\"password\" id=\"password-current\" name=\"current_password\" autocomplete=\"current-password\" required><br>",
    "<label for=\"password-new\">New password (8 to 256 characters)</label> <input type=\"password\" id=\"password-new\" name=\"new_password\" autocomplete=\"new-password\" minlength=\"8\" required><br>",
    "<label for=\"password-repeat\">New password again</label> <input type=\"password\" id=\"password-repeat\" name=\"repeat\" autocomplete=\"new-password\" minlength=\"8\" required><br>",
    "<button id=\"password-change\">Change password</button>",
    "</fieldset></form></section>",
    // Schedule
    "<section class=\"card\" aria-labelledby=\"schedule-link-title\"><h2 id=\"schedule-link-title\">Schedule</h2>",
    "<p><a href=\"/settings/schedule\" id=\"schedule-link\">Quiet hours and schedule settings</a></p></section>",
);

/// `GET /settings`: the signed-in user's own settings.
pub(super) async fn settings_page(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (user, csrf) = match browser_user(&parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    page(
        "Settings",
        "settings",
        &[("owner", &user.user.username)],
        &csrf,
        Some(&user),
        BODY,
    )
}
