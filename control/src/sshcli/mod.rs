//! `outpost ssh`, `outpost config-ssh` and `outpost port-forward`: everything rides on control's
//! relay (`/api/v1/workspaces/NAME/relay/...`), authorised by the user's API token.

mod identities;
mod known_hosts;
mod proxy;

use anyhow::{bail, Context};
use outpost_api::*;
use std::path::{Path, PathBuf};

use crate::cli::Ctx;
use crate::config::{ConfigSshArgs, PortForwardArgs, SshArgs};

const BEGIN: &str = "# ------------START-OUTPOST------------";
const END: &str = "# ------------END-OUTPOST------------";

fn workspace_name(s: &str) -> &str {
    s.split('.').next().unwrap_or(s)
}

fn known_hosts_path(ctx: &Ctx) -> PathBuf {
    ctx.config_dir.join("known_hosts")
}

/// Where exported public halves of agent-held keys go (see `identities::find_or_warn`).
fn agent_keys_dir(ctx: &Ctx) -> PathBuf {
    ctx.config_dir.join("agent-keys")
}

/// The ProxyCommand both `outpost ssh` and `config-ssh` give ssh: `%h` is the host as asked for,
/// so the proxy can bring that host's known_hosts entry up to date.
fn proxy_command(ctx: &Ctx, fdpass: bool, extra: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the outpost binary")?;
    Ok(format!(
        "{} --config-dir {} ssh --stdio{}{extra} %h",
        shell_quote(&exe.display().to_string()).replace('%', "%%"),
        shell_quote(&ctx.config_dir.display().to_string()).replace('%', "%%"),
        if fdpass { " --fdpass" } else { "" },
    ))
}

/// Over plain HTTP the CLI hands ssh the relay connection and leaves the data path.
fn fdpass_for(client: &Client) -> bool {
    client.base().starts_with("http://")
}

pub(crate) async fn ssh(ctx: &Ctx, a: SshArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let name = workspace_name(&a.workspace).to_string();
    if a.stdio {
        return proxy::run(
            &client,
            &a.workspace,
            &name,
            !a.no_start,
            a.fdpass,
            &known_hosts_path(ctx),
        )
        .await;
    }
    let mut patience = proxy::Patience::new(proxy::OUTAGE_WAIT);
    proxy::ensure_running(&client, &name, !a.no_start, &mut patience).await?;
    let identities = identities::find_or_warn(&client, &agent_keys_dir(ctx)).await;
    if identities.is_empty() {
        eprintln!("outpost: {}", identities::NO_KEY_HINT);
    }
    // Every option this command depends on is given on the command line, where it wins over the
    // user's ~/.ssh/config (which may hold config-ssh's block for the same hosts, or
    // IdentitiesOnly, or a ProxyUseFdpass that must match our ProxyCommand).
    let fdpass = fdpass_for(&client);
    let mut opts = vec![
        format!(
            "ProxyCommand={}",
            proxy_command(ctx, fdpass, " --no-start")?
        ),
        format!("ProxyUseFdpass={}", if fdpass { "yes" } else { "no" }),
        format!(
            "UserKnownHostsFile={}",
            identities::config_path(&known_hosts_path(ctx))
        ),
        "StrictHostKeyChecking=yes".into(),
        "CheckHostIP=no".into(),
    ];
    if !identities.is_empty() {
        opts.push("IdentitiesOnly=yes".into());
        opts.extend(
            identities
                .iter()
                .map(|f| format!("IdentityFile={}", identities::config_path(f))),
        );
    }
    if a.no_wait {
        opts.push("SetEnv=OUTPOST_NO_WAIT=1".into());
    }
    let mut cmd = std::process::Command::new("ssh");
    for o in opts {
        cmd.arg("-o").arg(o);
    }
    // `OWNER/NAME` (an owner getting into someone else's workspace, when the server allows
    // it) is the host `OWNER/NAME.outpost`; the login name is the workspace's.
    let login = name.rsplit('/').next().unwrap_or(&name);
    cmd.arg(format!("{login}@{name}.outpost"));
    if !a.command.is_empty() {
        cmd.arg("--").args(&a.command);
    }
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    bail!("cannot run ssh (install OpenSSH's client): {err}")
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub(crate) async fn config_ssh(ctx: &Ctx, a: ConfigSshArgs) -> anyhow::Result<()> {
    let path = match a.ssh_config {
        Some(p) => p,
        // OpenSSH reads ~/.ssh/config from the passwd entry's home, whatever $HOME says.
        None => identities::ssh_home()?.join(".ssh/config"),
    };
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let without = remove_block(&existing);
    if a.remove {
        write_config(&path, &without)?;
        return ctx.print(&serde_json::json!({"removed": path}), || {
            println!("removed Outpost's block from {}", path.display())
        });
    }
    let client = ctx.client()?;
    let written = write_block(ctx, &client, &path, &without, &a.suffix).await?;
    if written.identities.is_empty() {
        eprintln!("outpost: {}", identities::NO_KEY_HINT);
    }
    let (names, kh) = (written.hosts, written.known_hosts);
    ctx.print(
        &serde_json::json!({"config": path, "known_hosts": kh, "hosts": names, "identities": written.identities}),
        || {
            println!(
                "wrote {} (hosts: {}); try `ssh {}`; workspaces you create later are reachable the same way",
                path.display(),
                names.join(", "),
                names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("NAME.{}", a.suffix))
            );
        },
    )
}

struct Written {
    hosts: Vec<String>,
    known_hosts: PathBuf,
    identities: Vec<PathBuf>,
}

/// Writes Outpost's block (for `*.SUFFIX`) at the end of `without` (the config minus any old
/// block) into `path`, and every workspace's host key into known_hosts.
async fn write_block(
    ctx: &Ctx,
    client: &Client,
    path: &Path,
    without: &str,
    suffix: &str,
) -> anyhow::Result<Written> {
    let workspaces = client.workspaces().await?;
    let kh = known_hosts_path(ctx);
    let entries: Vec<(String, String)> = workspaces
        .iter()
        .filter_map(|w| {
            let key = w.agent.as_ref()?.ssh_host_key.clone()?;
            Some((format!("{}.{suffix}", w.name), key))
        })
        .collect();
    known_hosts::replace_all(&kh, &entries)?;
    let identities = identities::find_or_warn(client, &agent_keys_dir(ctx)).await;
    let fdpass = fdpass_for(client);
    let mut block = format!(
        "{BEGIN}\n# Written by `outpost config-ssh`; `outpost config-ssh --remove` takes it out.\n# Host keys come from control: the ProxyCommand updates the known_hosts file before ssh reads it.\nHost *.{suffix}\n  ProxyCommand {proxy}\n  ProxyUseFdpass {fd}\n  UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n  CheckHostIP no\n  ConnectTimeout 0\n  ServerAliveInterval 30\n",
        proxy = proxy_command(ctx, fdpass, "")?,
        fd = if fdpass { "yes" } else { "no" },
        kh = identities::config_path(&kh),
    );
    // The keys Outpost accepts, by name: a key outside OpenSSH's defaults is offered, and an
    // agent full of other keys cannot use up the authentication attempts first.
    if !identities.is_empty() {
        block.push_str("  IdentitiesOnly yes\n");
        for f in &identities {
            block.push_str(&format!("  IdentityFile {}\n", identities::config_path(f)));
        }
    }
    block.push_str(END);
    block.push('\n');
    let mut content = without.trim_end().to_string();
    if !content.is_empty() {
        content.push_str("\n\n");
    }
    content.push_str(&block);
    write_config(path, &content)?;
    Ok(Written {
        hosts: workspaces
            .iter()
            .map(|w| format!("{}.{suffix}", w.name))
            .collect(),
        known_hosts: kh,
        identities,
    })
}

/// After the user's uploaded keys changed: rewrite the block in ~/.ssh/config, if config-ssh put
/// one there, so plain ssh offers the keys Outpost now accepts. Says so on stderr; a failure
/// here only warns (the key change itself succeeded).
pub(crate) async fn refresh_after_key_change(ctx: &Ctx) {
    let res: anyhow::Result<Option<PathBuf>> = async {
        let path = identities::ssh_home()?.join(".ssh/config");
        let Ok(existing) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let Some(suffix) = block_suffix(&existing) else {
            return Ok(None);
        };
        let client = ctx.client()?;
        write_block(ctx, &client, &path, &remove_block(&existing), &suffix).await?;
        Ok(Some(path))
    }
    .await;
    match res {
        Ok(Some(path)) if !ctx.json => eprintln!(
            "Updated Outpost's block in {} (the keys ssh offers)",
            path.display()
        ),
        Ok(_) => {}
        Err(e) => {
            eprintln!("outpost: could not update your ssh config: {e:#}; run `outpost config-ssh`")
        }
    }
}

/// The SUFFIX of `Host *.SUFFIX` inside Outpost's block, if there is a block.
fn block_suffix(config: &str) -> Option<String> {
    let mut inside = false;
    for line in config.lines() {
        match line.trim() {
            l if l == BEGIN => inside = true,
            l if l == END => inside = false,
            l if inside => {
                if let Some(s) = l.strip_prefix("Host *.") {
                    return Some(s.trim().to_string());
                }
            }
            _ => {}
        }
    }
    None
}

fn remove_block(s: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in s.lines() {
        if line.trim() == BEGIN {
            inside = true;
            continue;
        }
        if line.trim() == END {
            inside = false;
            continue;
        }
        if !inside {
            out.push(line);
        }
    }
    let mut r = out.join("\n").trim_end().to_string();
    if !r.is_empty() {
        r.push('\n');
    }
    r
}

fn write_config(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("outpost-tmp");
    std::fs::write(&tmp, content)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) async fn port_forward(ctx: &Ctx, a: PortForwardArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let name = workspace_name(&a.workspace).to_string();
    let mut patience = proxy::Patience::new(proxy::OUTAGE_WAIT);
    proxy::ensure_running(&client, &name, true, &mut patience).await?;
    let mut tasks = Vec::new();
    for spec in &a.tcp {
        let (l, r) = spec
            .split_once(':')
            .context("--tcp takes LOCAL:REMOTE, e.g. 8080:3000")?;
        let local: u16 = l.parse().context("the local port must be a number")?;
        let remote: u16 = r.parse().context("the remote port must be a number")?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| {
                format!("cannot listen on 127.0.0.1:{local}; pick another local port")
            })?;
        let bound = listener.local_addr()?;
        eprintln!("Forwarding {bound} -> {name}:{remote}");
        let (client, name) = (client.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (client, name) = (client.clone(), name.clone());
                tokio::spawn(async move {
                    match client
                        .relay(&format!(
                            "/api/v1/workspaces/{}/relay/tcp/{remote}",
                            outpost_api::percent_encode(&name)
                        ))
                        .await
                    {
                        Ok(mut up) => {
                            let _ = tcp.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut tcp,
                                &mut up,
                                256 * 1024,
                                256 * 1024,
                            )
                            .await;
                        }
                        Err(e) => eprintln!("forward to {name}:{remote} failed: {e}"),
                    }
                });
            }
        }));
    }
    if !ctx.json {
        eprintln!("Press Ctrl-C to stop.");
    }
    tokio::signal::ctrl_c().await?;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// `~/.ssh/outpost_ed25519` (made with ssh-keygen when missing); returns the public key's path.
pub(crate) fn create_ssh_key() -> anyhow::Result<PathBuf> {
    // Where OpenSSH looks: the passwd entry's home.
    let dir = identities::ssh_home()?.join(".ssh");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("outpost_ed25519");
    if !key.exists() {
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "outpost", "-f"])
            .arg(&key)
            .status()
            .context("running ssh-keygen (install OpenSSH's client)")?;
        if !st.success() {
            bail!("ssh-keygen failed");
        }
        eprintln!("Made an SSH key: {}", key.display());
    }
    Ok(key.with_extension("pub"))
}
