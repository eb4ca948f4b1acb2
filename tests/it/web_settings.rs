//! The user's settings page `/settings` in a real browser (issue 16): every control labelled and
//! every button named; an SSH key added by pasting it and removed; an API token created (its
//! secret shown once, and working) and revoked; the dotfiles repository set (a bad one refused
//! with nothing changed) and cleared; the password changed. Screenshots land in
//! `target/screenshots/`.

use serde_json::{json, Value};

use crate::both_backends;
use crate::browser::Browser;
use crate::harness::*;

both_backends!(settings_page);
fn settings_page(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let s = Server::start(backend)?;
    let url = s.url.clone();
    b.goto(&format!("{url}/login"))?;
    b.type_into("#username", "admin")?;
    b.type_into("#password", "admin-password")?;
    b.click("#signin")?;
    b.wait_js("document.body.dataset.page === 'home'", 30)?;
    b.click("#nav-settings")?;
    b.wait_js(
        "document.body.dataset.page === 'settings' && document.body.dataset.ready === '1'",
        30,
    )?;
    let unlabelled = b.exec(
        "return [...document.querySelectorAll('main input, main textarea, main select')].filter((i) => !i.labels || !i.labels.length).map((i) => i.id);",
        json!([]),
    )?;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    let unnamed = b.exec(
        "return [...document.querySelectorAll('button')].filter((x) => !(x.textContent.trim() || x.getAttribute('aria-label'))).map((x) => x.outerHTML);",
        json!([]),
    )?;
    assert_eq!(unnamed, json!([]), "buttons without a name");
    assert!(b.find("#schedule-link").is_ok());
    // Confirmations answer yes.
    b.exec("window.confirm = () => true;", json!([]))?;

    // ---- SSH keys: paste one, see it listed, remove it.
    let key = s.dir.path().join("web_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "web@test", "-f"])
        .arg(&key)
        .status()?;
    anyhow::ensure!(st.success(), "ssh-keygen");
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    b.set_input("#key-name", "laptop")?;
    b.set_input("#key-public", public.trim())?;
    b.click("#key-add")?;
    b.wait_text("saved", "Added the SSH key laptop")?;
    let keys = s.json(&["keys", "list"])?;
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let fp = keys[0]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    b.wait_text("keys-list", &fp)?;
    b.screenshot("settings-keys")?;
    b.click("button[aria-label='Remove key laptop']")?;
    b.wait_text("saved", "Removed the SSH key laptop")?;
    assert_eq!(s.json(&["keys", "list"])?, json!([]));
    // A bad key: the server's message, nothing added.
    b.set_input("#key-public", "ssh-ed25519 not-a-key")?;
    b.click("#key-add")?;
    b.wait_js(
        "document.getElementById('error').textContent.length > 0",
        30,
    )?;
    assert_eq!(s.json(&["keys", "list"])?, json!([]));

    // ---- Tokens: create one, its secret shown once and working; revoke it.
    b.set_input("#token-name", "ci")?;
    b.set_input("#token-lifetime", "12h")?;
    b.click("#token-create")?;
    let secret = b.wait_text("token-secret", "opt_")?;
    let (code, me) = http(
        "GET",
        &format!("{url}/api/v1/users/me"),
        Some(&secret),
        None,
    )?;
    assert_eq!((code, me["username"].clone()), (200, json!("admin")));
    let tokens = s.json(&["tokens", "list"])?;
    let ci: Vec<&Value> = tokens
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == "ci")
        .collect();
    assert_eq!(ci.len(), 1, "{tokens}");
    let lifetime =
        ci[0]["expires_at"].as_i64().unwrap_or(0) - ci[0]["created_at"].as_i64().unwrap_or(0);
    assert!((lifetime - 43_200_000).abs() < 5_000, "{lifetime}");
    b.screenshot("settings-token")?;
    b.click("#token-secret-done")?;
    assert_eq!(b.text("#token-secret")?, "");
    b.refresh()?;
    b.wait_js("document.body.dataset.ready === '1'", 30)?;
    let html = b.exec("return document.documentElement.outerHTML;", json!([]))?;
    assert!(
        !html.as_str().unwrap_or_default().contains(&secret),
        "the secret is shown again"
    );
    b.exec("window.confirm = () => true;", json!([]))?;
    b.click("button[aria-label='Revoke token ci']")?;
    b.wait_text("saved", "Revoked the token ci")?;
    let (code, _) = http(
        "GET",
        &format!("{url}/api/v1/users/me"),
        Some(&secret),
        None,
    )?;
    assert_eq!(code, 401);

    // ---- Dotfiles: set, a bad one refused with nothing changed, cleared.
    let repo = "https://git.example.com/admin/dotfiles.git";
    b.set_input("#dotfiles-input", repo)?;
    b.click("#dotfiles-save")?;
    b.wait_text("saved", "Saved: your dotfiles repository")?;
    assert_eq!(s.json(&["users", "dotfiles"])?["dotfiles_uri"], repo);
    b.wait_text("dotfiles-current", repo)?;
    b.set_input("#dotfiles-input", "-upload-pack=evil")?;
    b.click("#dotfiles-save")?;
    b.wait_text("error", "invalid dotfiles repository")?;
    assert_eq!(s.json(&["users", "dotfiles"])?["dotfiles_uri"], repo);
    b.screenshot("settings-dotfiles")?;
    b.click("#dotfiles-clear")?;
    b.wait_text("saved", "no dotfiles repository")?;
    assert_eq!(s.json(&["users", "dotfiles"])?["dotfiles_uri"], Value::Null);

    // ---- Password: changed here; this session stays, the CLI's sign-in ends.
    b.set_input("#password-current", "admin-password")?;
    b.set_input("#password-new", "admin-password-2")?;
    b.set_input("#password-repeat", "admin-password-2")?;
    b.click("#password-change")?;
    b.wait_text("saved", "Password changed")?;
    let login = |pw: &str| {
        post_json(
            &format!("{url}/api/v1/login"),
            None,
            &json!({"username": "admin", "password": pw}),
        )
        .map(|(c, _)| c)
    };
    assert_eq!(login("admin-password")?, 401);
    assert_eq!(login("admin-password-2")?, 200);
    assert!(!s.cli(&["whoami"])?.status.success());
    b.refresh()?;
    b.wait_js(
        "document.body.dataset.page === 'settings' && document.body.dataset.ready === '1'",
        30,
    )?;
    Ok(())
}
