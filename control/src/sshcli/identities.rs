//! Which of the user's SSH keys Outpost accepts, found the way OpenSSH would find them: key files
//! in `~/.ssh` of the passwd entry's home (OpenSSH ignores `$HOME`), and keys held by the user's
//! ssh-agent. `outpost ssh` and `config-ssh` then name exactly those keys (`IdentityFile` with
//! `IdentitiesOnly yes`), so a key that is not one of OpenSSH's defaults is offered, and an agent
//! full of other keys cannot use up the server's authentication attempts first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use outpost_api::{Client, SshKey};

/// The home directory OpenSSH uses: the passwd entry's, not `$HOME` (`~` in ssh_config, and
/// `~/.ssh/config` itself, come from there). `$HOME` only when there is no passwd entry.
pub(crate) fn ssh_home() -> anyhow::Result<PathBuf> {
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
        if !u.dir.as_os_str().is_empty() {
            return Ok(u.dir);
        }
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("neither a passwd entry nor HOME names your home directory")
}

/// `TYPE BASE64` of an OpenSSH public key line (the comment dropped), or None.
fn key_id(line: &str) -> Option<String> {
    outpost_common::sshkey::parse_public_key(line)
        .ok()
        .map(|k| k.canonical)
}

/// [`find`], or none (ssh then falls back to its defaults) with a warning when the keys cannot
/// be listed: naming keys is a help, never a reason to refuse to connect.
pub(crate) async fn find_or_warn(client: &Client, agent_dir: &Path) -> Vec<PathBuf> {
    find(client, agent_dir).await.unwrap_or_else(|e| {
        eprintln!(
            "outpost: could not work out which SSH keys to offer ({e:#}); ssh uses its defaults"
        );
        Vec::new()
    })
}

/// The key files to offer, best first: private keys in `~/.ssh` whose public half is uploaded,
/// then uploaded keys that only the ssh-agent holds (their public halves are written to
/// `agent_dir`: OpenSSH signs with the agent's copy of a key named by a public-key file).
/// Empty when none of the user's keys is uploaded.
async fn find(client: &Client, agent_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let uploaded: Vec<SshKey> = client.get("/api/v1/users/me/keys").await?;
    let uploaded: HashSet<String> = uploaded
        .iter()
        .filter_map(|k| key_id(&k.public_key))
        .collect();
    if uploaded.is_empty() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    let mut found = HashSet::new();
    let dir = ssh_home()?.join(".ssh");
    let mut pubs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect()
        })
        .unwrap_or_default();
    // OpenSSH's default names first, then the rest in name order: stable output.
    pubs.sort_by_key(|p| {
        let name = p.file_stem().map(|s| s.to_string_lossy().into_owned());
        (
            !name.as_deref().is_some_and(|n| n.starts_with("id_")),
            p.clone(),
        )
    });
    for pubfile in pubs {
        let private = pubfile.with_extension("");
        let Some(id) = std::fs::read_to_string(&pubfile)
            .ok()
            .and_then(|t| t.lines().next().and_then(key_id))
        else {
            continue;
        };
        if private.is_file() && uploaded.contains(&id) && found.insert(id) {
            files.push(private);
        }
    }
    for line in agent_keys() {
        let Some(id) = key_id(&line) else { continue };
        if !uploaded.contains(&id) || !found.insert(id.clone()) {
            continue;
        }
        std::fs::create_dir_all(agent_dir)?;
        let file = agent_dir.join(format!("agent-{}.pub", short_hash(&id)));
        std::fs::write(&file, format!("{line}\n"))
            .with_context(|| format!("writing {}", file.display()))?;
        files.push(file);
    }
    Ok(files)
}

/// The public keys the user's ssh-agent holds (`ssh-add -L`), if there is an agent.
fn agent_keys() -> Vec<String> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        return Vec::new();
    }
    std::process::Command::new("ssh-add")
        .arg("-L")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A path as an ssh_config value: quoted, with `%` escaped (ssh expands `%` tokens in
/// IdentityFile, UserKnownHostsFile and ProxyCommand).
pub(crate) fn config_path(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('%', "%%"))
}

/// What to tell a user none of whose keys Outpost knows.
pub(crate) const NO_KEY_HINT: &str = "none of your SSH keys (in ~/.ssh or your ssh-agent) is uploaded to Outpost, so ssh will likely be refused: run `outpost keys add ~/.ssh/id_ed25519.pub` or `outpost login URL --create-ssh-key`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_ignore_comments_and_reject_junk() {
        let (_, public) = outpost_common::sshkey::new_ed25519("me@laptop").unwrap_or_default();
        let blob = public.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(key_id(&public), Some(format!("ssh-ed25519 {blob}")));
        assert_eq!(key_id("-----BEGIN OPENSSH PRIVATE KEY-----"), None);
        assert_eq!(key_id(""), None);
    }

    #[test]
    fn config_paths_are_quoted_and_escaped() {
        assert_eq!(
            config_path(Path::new("/home/a b/100%/k")),
            "\"/home/a b/100%%/k\""
        );
    }
}
