//! Sign-in through an identity provider (issue 16) against a real OpenID Connect provider:
//! `oidc-provider` from npm (installed once into the target directory), run with node, a client
//! registered for the server's callback and an account `alice` in groups `devs` and `ops`. In
//! Chromium: "Sign in with SSO", the provider's login, back signed in; the user is created with
//! the groups (source `oidc`), a second sign-in reuses it, and a tampered `state` is refused.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::browser::Browser;
use crate::harness::*;

const SECRET: &str = "outpost-test-client-secret";

/// `oidc-provider@8` from the npm registry, installed once beside the build (like xterm.js in
/// `control/build.rs`); `None` (skipped) without npm, except in CI.
fn provider_package() -> R<Option<PathBuf>> {
    let dir = bin_dir()
        .parent()
        .map(|p| p.join("oidc-provider-npm"))
        .unwrap_or_else(|| PathBuf::from("target/oidc-provider-npm"));
    let entry = dir.join("node_modules/oidc-provider/lib/index.js");
    if entry.exists() {
        return Ok(Some(entry));
    }
    std::fs::create_dir_all(&dir)?;
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg("oidc-provider@8")
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && entry.exists() => Ok(Some(entry)),
        other => {
            if std::env::var_os("OUTPOST_CI").is_some() {
                anyhow::bail!("`npm install oidc-provider@8` failed: {other:?}");
            }
            eprintln!("skipped: cannot install oidc-provider from npm ({other:?})");
            Ok(None)
        }
    }
}

const PROVIDER_JS: &str = r#"
const [entry, port, redirect, secret] = process.argv.slice(2);
const { default: Provider } = await import(entry);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'outpost',
    client_secret: secret,
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  cookies: { keys: ['outpost-test-cookie-key'] },
  claims: {
    openid: ['sub', 'groups'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: id,
          email: `${id}@example.test`,
          email_verified: true,
          groups: ['devs', 'ops'],
        };
      },
    };
  },
  // A first-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const id = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (id) return ctx.oidc.provider.Grant.find(id);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email');
    await grant.save();
    return grant;
  },
});
provider.listen(Number(port), '127.0.0.1', () => console.log('listening'));
"#;

/// The provider process, killed when dropped.
struct Idp(Child);

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_provider(
    dir: &std::path::Path,
    entry: &std::path::Path,
    port: u16,
    redirect: &str,
) -> R<Idp> {
    let script = dir.join("provider.mjs");
    std::fs::write(&script, PROVIDER_JS)?;
    let log = std::fs::File::create(dir.join("provider.log"))?;
    let child = Command::new("node")
        .arg(&script)
        .arg(format!("file://{}", entry.display()))
        .arg(port.to_string())
        .arg(redirect)
        .arg(SECRET)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let idp = Idp(child);
    let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(http("GET", &url, None, None), Ok((200, _))) {
            return Ok(idp);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the provider did not start: {}",
            std::fs::read_to_string(dir.join("provider.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// From the sign-in page through the provider's login form, back on the dashboard.
fn sso_sign_in(b: &Browser, url: &str, who: &str) -> R {
    b.goto(&format!("{url}/"))?;
    b.wait_find("#sso")?;
    b.click("#sso")?;
    b.wait_find("input[name=login]")?;
    b.type_into("input[name=login]", who)?;
    b.type_into("input[name=password]", "any-password")?;
    b.click("button[type=submit]")?;
    b.wait_js("document.body.dataset.page === 'home'", 30)?;
    Ok(())
}

fn users(s: &Server) -> R<Vec<Value>> {
    Ok(s.json(&["users", "list", "--json"])?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn oidc_sign_in(backend: Backend) -> R {
    let Some(b) = Browser::start()? else {
        return Ok(());
    };
    let Some(entry) = provider_package()? else {
        return Ok(());
    };
    let port = free_port()?;
    let issuer = format!("http://127.0.0.1:{port}");
    // The provider starts after the server (it needs the server's callback URL): discovery at
    // start fails and the first sign-in retries it.
    let s = Server::start_opts(
        backend,
        Opts {
            extra: &["--oidc-issuer-url", &issuer, "--oidc-client-id", "outpost"],
            env: &[("OUTPOST_OIDC_CLIENT_SECRET", SECRET)],
            ..Default::default()
        },
    )?;
    let url = s.url.clone();
    let _idp = start_provider(s.dir.path(), &entry, port, &format!("{url}/oidc/callback"))?;

    sso_sign_in(&b, &url, "alice")?;
    let who = b.text(".who")?;
    assert_eq!(who, "alice", "signed in as {who:?}");
    b.screenshot("oidc-signed-in")?;

    let all = users(&s)?;
    let alice: Vec<&Value> = all.iter().filter(|u| u["username"] == "alice").collect();
    assert_eq!(alice.len(), 1, "{all:?}");
    let alice_id = alice[0]["id"].clone();
    let groups = s.json(&["groups", "list", "--json"])?;
    for name in ["devs", "ops"] {
        let g = groups
            .as_array()
            .and_then(|a| a.iter().find(|g| g["name"] == name))
            .unwrap_or_else(|| panic!("no group {name}: {groups}"));
        assert_eq!(g["source"], "oidc", "{g}");
        assert_eq!(g["members"], json!(["alice"]), "{g}");
    }
    // An SSO user has no password that works.
    let (status, _) = post_json(
        &format!("{url}/api/v1/login"),
        None,
        &json!({"username": "alice", "password": "!oidc"}),
    )?;
    assert_eq!(status, 401);

    // A second sign-in (a fresh browser session, the provider's too) is the same user.
    b.delete_cookies()?;
    sso_sign_in(&b, &url, "alice")?;
    let all = users(&s)?;
    let again: Vec<&Value> = all.iter().filter(|u| u["username"] == "alice").collect();
    assert_eq!(again.len(), 1, "{all:?}");
    assert_eq!(again[0]["id"], alice_id);

    // A tampered state is refused, and nothing is created.
    let before = users(&s)?.len();
    let rt = rt();
    let (status, body) = rt.block_on(async {
        let c = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let r = c.get(format!("{url}/oidc/login?next=/")).send().await?;
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_string();
        assert!(location.starts_with(&issuer), "{location}");
        assert!(
            location.contains("code_challenge_method=S256"),
            "{location}"
        );
        assert!(cookie.starts_with("outpost_oidc="), "{cookie}");
        let state = cookie.trim_start_matches("outpost_oidc=").to_string();
        let tampered = format!("{}x", &state[..state.len() - 1]);
        let r = c
            .get(format!("{url}/oidc/callback?code=abc&state={tampered}"))
            .header("cookie", &cookie)
            .send()
            .await?;
        let status = r.status().as_u16();
        anyhow::Ok((status, r.text().await?))
    })?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("start again"), "{body}");
    // No cookie at all, however right the state looks: refused too.
    let (status, _) = http(
        "GET",
        &format!("{url}/oidc/callback?code=abc&state=x"),
        None,
        None,
    )?;
    assert_eq!(status, 400);
    assert_eq!(users(&s)?.len(), before);
    Ok(())
}
both_backends!(oidc_sign_in);
