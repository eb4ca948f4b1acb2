//! Who you are: sign-in, users, API tokens, SSH keys, the git key, and the audit log.

use anyhow::Context;
use outpost_api::*;

use super::ctx::*;
use crate::config::*;

pub(crate) async fn login(ctx: &Ctx, args: LoginArgs) -> anyhow::Result<()> {
    let url = args.server.trim_end_matches('/').to_string();
    let client = Client::new(&url, None);
    let username = match args.username {
        Some(u) => u,
        None => read_line("Username: ")?,
    };
    let resp: LoginResponse = if args.first_user {
        let setup_token = match args.setup_token {
            Some(t) => t,
            None => read_line("Setup token (printed by `outpost server`): ")?,
        };
        let password = read_password(args.password_stdin, "Choose a password: ")?;
        client
            .post(
                "/api/v1/setup",
                &SetupRequest {
                    setup_token,
                    username,
                    password,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        let password = read_password(args.password_stdin, "Password: ")?;
        client
            .post("/api/v1/login", &LoginRequest { username, password })
            .await?
    };
    ctx.save(&SavedLogin {
        url: url.clone(),
        token: resp.token.clone(),
    })?;
    let key_file = if args.create_ssh_key {
        Some(crate::sshcli::create_ssh_key()?)
    } else {
        args.ssh_key
    };
    if let Some(pubkey) = key_file {
        let authed = Client::new(&url, Some(resp.token.clone()));
        let line = std::fs::read_to_string(&pubkey)
            .with_context(|| format!("reading {}", pubkey.display()))?;
        let line = line.lines().next().unwrap_or_default().to_string();
        let name = line
            .split_whitespace()
            .nth(2)
            .unwrap_or("outpost")
            .to_string();
        match authed
            .post::<_, SshKey>(
                "/api/v1/users/me/keys",
                &AddSshKeyRequest {
                    name,
                    public_key: line,
                },
            )
            .await
        {
            Ok(k) => eprintln!("Uploaded SSH key {} ({})", k.fingerprint, pubkey.display()),
            Err(e) if e.status() == Some(409) => {
                eprintln!("SSH key {} is already uploaded", pubkey.display())
            }
            Err(e) => return Err(e.into()),
        }
    }
    ctx.print(&resp.user, || {
        println!(
            "Signed in to {url} as {}. Next: `outpost create dev --template base`",
            resp.user.username
        )
    })
}

pub(crate) async fn whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let me = ctx.client()?.me().await?;
    ctx.print(&me, || {
        println!(
            "{} ({}) at {}",
            me.username,
            if me.admin { "admin" } else { "member" },
            ctx.url.clone().unwrap_or_default()
        )
    })
}

pub(crate) async fn create_user(
    ctx: &Ctx,
    username: String,
    admin: bool,
    roles: Vec<Role>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let password = read_password(password_stdin, "Password for the new user: ")?;
    let u: User = ctx
        .client()?
        .post(
            "/api/v1/users",
            &CreateUserRequest {
                username,
                password,
                admin,
                roles,
            },
        )
        .await?;
    ctx.print(&u, || {
        println!("created user {} ({})", u.username, roles_str(&u.roles))
    })
}

/// `owner,auditor`; `member` (or nothing) for none.
pub(crate) fn parse_roles(s: &str) -> anyhow::Result<Vec<Role>> {
    let mut out = Vec::new();
    for r in s
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "member")
    {
        out.push(Role::parse(r).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown role {r:?}: use owner, user-admin, template-admin, auditor or member"
            )
        })?);
    }
    Ok(out)
}

fn roles_str(roles: &[Role]) -> String {
    if roles.is_empty() {
        "member".into()
    } else {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) async fn list_users(ctx: &Ctx) -> anyhow::Result<()> {
    let users: Vec<User> = ctx.client()?.get("/api/v1/users").await?;
    ctx.print(&users, || {
        let mut rows = vec![["USERNAME", "ROLES", "STATUS"].map(String::from).to_vec()];
        for u in &users {
            rows.push(vec![
                u.username.clone(),
                roles_str(&u.roles),
                if u.suspended { "suspended" } else { "active" }.into(),
            ]);
        }
        print_table(rows);
    })
}

pub(crate) async fn roles(ctx: &Ctx, username: &str, set: Option<&str>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let u: User = match set {
        Some(s) => {
            client
                .put(
                    &format!(
                        "/api/v1/users/{}/roles",
                        outpost_api::percent_encode(username)
                    ),
                    &SetRolesRequest {
                        roles: parse_roles(s)?,
                    },
                )
                .await?
        }
        None => {
            let all: Vec<User> = client.get("/api/v1/users").await?;
            all.into_iter()
                .find(|u| u.username == username)
                .ok_or_else(|| anyhow::anyhow!("no user {username:?}; see `outpost users list`"))?
        }
    };
    ctx.print(&u, || println!("{}: {}", u.username, roles_str(&u.roles)))
}

pub(crate) async fn suspend(ctx: &Ctx, username: &str, suspend: bool) -> anyhow::Result<()> {
    let verb = if suspend { "suspend" } else { "unsuspend" };
    let u: User = ctx
        .client()?
        .post(
            &format!(
                "/api/v1/users/{}/{verb}",
                outpost_api::percent_encode(username)
            ),
            &serde_json::json!({}),
        )
        .await?;
    ctx.print(&u, || {
        if suspend {
            println!(
                "suspended {}: their tokens are revoked, their connections ended, their workspaces stopping",
                u.username
            )
        } else {
            println!("{} may sign in again", u.username)
        }
    })
}

pub(crate) async fn publickey(ctx: &Ctx) -> anyhow::Result<()> {
    let k: GitSshKey = ctx.client()?.get("/api/v1/users/me/gitsshkey").await?;
    ctx.print(&k, || {
        println!("{}", k.public_key);
        eprintln!("Add this key to your git host; git inside your workspaces signs with it.");
    })
}

pub(crate) async fn tokens(ctx: &Ctx, cmd: TokensCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TokensCmd::Create { name, lifetime } => {
            let lifetime_secs = lifetime
                .map(|l| humantime::parse_duration(&l).map(|d| d.as_secs()))
                .transpose()
                .context("--lifetime takes a duration like 30d or 12h")?;
            let r: CreateTokenResponse = client
                .post(
                    "/api/v1/tokens",
                    &CreateTokenRequest {
                        name,
                        lifetime_secs,
                    },
                )
                .await?;
            ctx.print(&r, || {
                println!("{}", r.token);
                eprintln!(
                    "token {} ({}); it is shown only once",
                    r.info.id, r.info.name
                );
            })
        }
        TokensCmd::List => {
            let list: Vec<TokenInfo> = client.get("/api/v1/tokens").await?;
            ctx.print(&list, || {
                let mut rows = vec![["ID", "NAME", "CREATED", "EXPIRES", "LAST USED"]
                    .map(String::from)
                    .to_vec()];
                let now = crate::store::now_ms();
                for t in &list {
                    rows.push(vec![
                        t.id.clone(),
                        t.name.clone(),
                        ago(t.created_at),
                        format!("in {}d", (t.expires_at - now).max(0) / 86_400_000),
                        t.last_used_at.map(ago).unwrap_or_else(|| "never".into()),
                    ]);
                }
                print_table(rows);
            })
        }
        TokensCmd::Revoke { id } => {
            let v: serde_json::Value = client.delete(&format!("/api/v1/tokens/{id}")).await?;
            ctx.print(&v, || println!("revoked token {id}"))
        }
    }
}

/// `--since`/`--until`: a duration ago (`1h`), a time (RFC 3339) or ms since 1970, as ms.
fn audit_time(flag: &str, s: &str) -> anyhow::Result<i64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().context("a time in ms since 1970 is too large");
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(crate::store::now_ms() - d.as_millis() as i64);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    anyhow::bail!(
        "{flag} takes a duration ago like 1h or 30m, a time like 2025-01-31T12:00:00Z, or ms since 1970"
    )
}

/// Events newest first, a page at a time (`before_id`), each handed to `each` until `limit`.
async fn audit_pages(
    client: &Client,
    query: &[(String, String)],
    limit: Option<u64>,
    mut each: impl FnMut(AuditEventView) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut before: Option<i64> = None;
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let page = left.min(1000);
        let mut q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", outpost_api::percent_encode(v)))
            .collect();
        q.push(format!("limit={page}"));
        if let Some(b) = before {
            q.push(format!("before_id={b}"));
        }
        let events: Vec<AuditEventView> = client
            .get(&format!("/api/v1/audit?{}", q.join("&")))
            .await?;
        let n = events.len() as u64;
        before = events.last().map(|e| e.id);
        for e in events {
            each(e)?;
        }
        left = left.saturating_sub(n);
        if n < page {
            break;
        }
    }
    Ok(())
}

pub(crate) async fn audit(ctx: &Ctx, a: AuditArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut q: Vec<(String, String)> = Vec::new();
    for (k, v) in [
        ("action", a.action),
        ("actor", a.actor),
        ("target", a.target),
        ("outcome", a.outcome),
    ] {
        if let Some(v) = v {
            q.push((k.into(), v));
        }
    }
    if let Some(w) = a.workspace {
        // A name of one of your workspaces, or an id.
        let id = match client.workspace(&w).await {
            Ok(ws) => ws.id,
            Err(_) => w,
        };
        q.push(("workspace".into(), id));
    }
    if let Some(s) = a.since {
        q.push(("since".into(), audit_time("--since", &s)?.to_string()));
    }
    if let Some(s) = a.until {
        q.push(("until".into(), audit_time("--until", &s)?.to_string()));
    }
    if a.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1");
    }
    if a.format == Some(AuditFormat::Ndjson) {
        // Streamed: a page at a time, never all of it in memory.
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        audit_pages(&client, &q, a.limit, |e| {
            serde_json::to_writer(&mut out, &e)?;
            out.write_all(b"\n")?;
            Ok(())
        })
        .await?;
        out.flush()?;
        return Ok(());
    }
    let mut events = Vec::new();
    audit_pages(&client, &q, Some(a.limit.unwrap_or(100)), |e| {
        events.push(e);
        Ok(())
    })
    .await?;
    if a.format == Some(AuditFormat::Json) {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    ctx.print(&events, || {
        let mut rows = vec![[
            "WHEN", "ACTION", "OUTCOME", "ACTOR", "TARGET", "SOURCE", "DETAILS",
        ]
        .map(String::from)
        .to_vec()];
        for e in &events {
            rows.push(vec![
                ago(e.created_at),
                e.action.clone(),
                e.outcome.clone(),
                e.actor.clone(),
                e.target.clone().unwrap_or_else(|| "-".into()),
                e.remote_addr.clone().unwrap_or_else(|| "-".into()),
                e.details.clone(),
            ]);
        }
        print_table(rows);
    })
}

pub(crate) async fn keys(ctx: &Ctx, cmd: KeysCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        KeysCmd::Add { file, name } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .context("the key file is empty")?;
            let name = name
                .or_else(|| line.split_whitespace().nth(2).map(str::to_string))
                .unwrap_or_else(|| "key".into());
            let k: SshKey = client
                .post(
                    "/api/v1/users/me/keys",
                    &AddSshKeyRequest {
                        name,
                        public_key: line.to_string(),
                    },
                )
                .await?;
            ctx.print(&k, || println!("added {} ({})", k.fingerprint, k.name))?;
            crate::sshcli::refresh_after_key_change(ctx).await;
            Ok(())
        }
        KeysCmd::List => {
            let list: Vec<SshKey> = client.get("/api/v1/users/me/keys").await?;
            ctx.print(&list, || {
                let mut rows = vec![["ID", "NAME", "FINGERPRINT", "ADDED"]
                    .map(String::from)
                    .to_vec()];
                for k in &list {
                    rows.push(vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.fingerprint.clone(),
                        ago(k.created_at),
                    ]);
                }
                print_table(rows);
            })
        }
        KeysCmd::Remove { id } => {
            let v: serde_json::Value = client
                .delete(&format!("/api/v1/users/me/keys/{id}"))
                .await?;
            ctx.print(&v, || println!("removed {id}"))?;
            crate::sshcli::refresh_after_key_change(ctx).await;
            Ok(())
        }
    }
}

/// `outpost users delete NAME`: asks first (unless `--yes`), then follows the deletes of the
/// user's workspaces until none is left.
pub(crate) async fn delete_user(
    ctx: &Ctx,
    username: &str,
    yes: bool,
    no_wait: bool,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let client = ctx.client()?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "deleting a user deletes every workspace of theirs: pass --yes to confirm"
            );
        }
        let answer = read_line(&format!(
            "Delete user {username}, end their sessions and delete every workspace of theirs with its home? Type the username to confirm: "
        ))?;
        if answer != username {
            anyhow::bail!("not deleted");
        }
    }
    let d: UserDeletion = client
        .delete(&format!(
            "/api/v1/users/{}",
            outpost_api::percent_encode(username)
        ))
        .await?;
    if !ctx.json {
        eprintln!(
            "Deleted user {username}: their tokens are revoked and their connections ended; {} workspace(s) deleting",
            d.workspaces.len()
        );
    }
    if no_wait || d.workspaces.is_empty() {
        return ctx.print(&d, || {
            for w in &d.workspaces {
                println!("{}: {}", w.name, w.status);
            }
        });
    }
    // Follow the deletes: a line per change, until none is left or every one left failed.
    let path = format!(
        "/api/v1/users/{}/deletion",
        outpost_api::percent_encode(&d.user.username)
    );
    let mut seen: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut current = d;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30 * 60);
    loop {
        let now: std::collections::BTreeMap<String, String> = current
            .workspaces
            .iter()
            .map(|w| (w.name.clone(), w.status.to_string()))
            .collect();
        if !ctx.json {
            for (name, status) in &now {
                if seen.get(name) != Some(status) {
                    eprintln!("workspace {name}: {status}");
                }
            }
            for name in seen.keys().filter(|n| !now.contains_key(*n)) {
                eprintln!("workspace {name}: deleted");
            }
        }
        seen = now;
        let failed: Vec<&DeletingWorkspace> = current
            .workspaces
            .iter()
            .filter(|w| {
                w.deleting
                    && matches!(
                        w.status,
                        WorkspaceStatus::Failed | WorkspaceStatus::Canceled
                    )
            })
            .collect();
        if current.workspaces.is_empty() || failed.len() == current.workspaces.len() {
            ctx.print(&current, || {
                if current.workspaces.is_empty() {
                    println!("user {username} and every workspace of theirs are deleted");
                }
            })?;
            if !failed.is_empty() {
                let names: Vec<String> = failed
                    .iter()
                    .map(|w| {
                        format!(
                            "{} ({})",
                            w.name,
                            w.error.clone().unwrap_or_else(|| w.status.to_string())
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "some workspaces were not deleted: {}; an owner can retry with `outpost delete {}/NAME`",
                    names.join(", "),
                    current.user.username
                );
            }
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the workspaces' deletes are still running; see `outpost list --all`");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        current = client.get(&path).await?;
    }
}

/// `outpost users password [NAME]`.
pub(crate) async fn password(
    ctx: &Ctx,
    username: Option<&str>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let (path, req) = match username {
        Some(name) => {
            let new_password =
                read_new_password(password_stdin, &format!("New password for {name}: "))?;
            (
                format!(
                    "/api/v1/users/{}/password",
                    outpost_api::percent_encode(name)
                ),
                ChangePasswordRequest {
                    current_password: None,
                    new_password,
                },
            )
        }
        None => {
            let current = read_password(password_stdin, "Current password: ")?;
            let new_password = read_new_password(password_stdin, "New password: ")?;
            (
                "/api/v1/users/me/password".to_string(),
                ChangePasswordRequest {
                    current_password: Some(current),
                    new_password,
                },
            )
        }
    };
    let u: User = client.put(&path, &req).await?;
    ctx.print(&u, || match username {
        Some(_) => println!(
            "changed the password of {}: their sessions and tokens are revoked",
            u.username
        ),
        None => println!(
            "changed your password: your other sessions and tokens are revoked (this sign-in stays)"
        ),
    })
}

/// A new password: one line from standard input, or asked twice on a terminal.
fn read_new_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let first = read_password(from_stdin, prompt)?;
    if !from_stdin && std::io::stdin().is_terminal() {
        let again = read_password(false, "Again: ")?;
        if again != first {
            anyhow::bail!("the passwords differ; nothing changed");
        }
    }
    Ok(first)
}

/// `outpost users dotfiles [URI|--clear]`.
pub(crate) async fn dotfiles(ctx: &Ctx, uri: Option<String>, clear: bool) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let d: DotfilesSetting = if clear || uri.is_some() {
        client
            .put(
                "/api/v1/users/me/dotfiles",
                &DotfilesSetting { dotfiles_uri: uri },
            )
            .await?
    } else {
        client.get("/api/v1/users/me/dotfiles").await?
    };
    ctx.print(&d, || match &d.dotfiles_uri {
        Some(u) => println!("{u}"),
        None => println!("no dotfiles repository (set one with `outpost users dotfiles URL`)"),
    })
}
