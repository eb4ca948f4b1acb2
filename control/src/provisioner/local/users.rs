//! One Unix user per workspace (when control runs as root): `ws-<workspace id prefix>`, made by
//! `useradd` on the first start, kept across stop and start (it owns the persistent home),
//! removed by `userdel` on delete after every process of it has ended and what it left in the
//! shared temporary directories is gone.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

/// Marks the accounts Outpost made, so it never takes over or removes anyone else's.
const COMMENT_PREFIX: &str = "outpost workspace ";

#[derive(Debug, Clone)]
pub struct WorkspaceUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub shell: String,
}

/// `ws-` and the first 20 hex digits of the workspace id (user names stop at 32 characters;
/// the account's comment holds the whole id, so a clash is an error, never a shared account).
pub fn name_for(workspace_id: &str) -> String {
    let hex: String = workspace_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("ws-{hex}")
}

/// Finds the workspace's account, or makes it with `home` as its home directory.
pub async fn ensure(workspace_id: &str, home: &Path) -> anyhow::Result<WorkspaceUser> {
    let name = name_for(workspace_id);
    if let Some(u) = lookup(&name, workspace_id)? {
        return Ok(u);
    }
    let shell = ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|s| Path::new(s).exists())
        .unwrap_or("/bin/sh");
    let comment = format!("{COMMENT_PREFIX}{workspace_id}");
    let home_arg = home.display().to_string();
    run_locked(
        "useradd",
        &[
            "--no-create-home",
            "--home-dir",
            &home_arg,
            "--shell",
            shell,
            "--user-group",
            "--comment",
            &comment,
            &name,
        ],
    )
    .await?;
    lookup(&name, workspace_id)?.with_context(|| format!("useradd made no user {name}"))
}

/// The uid of the workspace's account, when Outpost made one for it.
pub fn existing_uid(workspace_id: &str) -> Option<u32> {
    lookup(&name_for(workspace_id), workspace_id)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

fn lookup(name: &str, workspace_id: &str) -> anyhow::Result<Option<WorkspaceUser>> {
    let Some(u) = User::from_name(name).with_context(|| format!("looking up user {name}"))? else {
        return Ok(None);
    };
    let comment = u.gecos.to_string_lossy().to_string();
    if comment != format!("{COMMENT_PREFIX}{workspace_id}") || u.uid.is_root() {
        bail!("a user named {name} exists that Outpost did not make for this workspace ({comment:?}); remove or rename it");
    }
    Ok(Some(WorkspaceUser {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
        shell: u.shell.display().to_string(),
    }))
}

/// Removes the workspace's account: ends its processes, removes what it left in /tmp,
/// /var/tmp and /dev/shm (a later account may get the same uid), then `userdel`.
pub async fn remove(workspace_id: &str) -> anyhow::Result<bool> {
    let name = name_for(workspace_id);
    let Some(u) = lookup(&name, workspace_id)? else {
        return Ok(false);
    };
    for _ in 0..50 {
        if outpost_common::process::kill_all_of_uid(u.uid.as_raw()) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
        remove_owned_by(Path::new(dir), u.uid.as_raw());
    }
    run_locked("userdel", &[&name]).await?;
    Ok(true)
}

fn remove_owned_by(dir: &Path, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        if md.uid() == uid {
            let _ = if md.is_dir() {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
}

/// Runs useradd/userdel, retrying while another process holds the password file's lock
/// (several servers or daemons on one machine).
async fn run_locked(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(20);
    for _ in 0..30 {
        let out = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .await
            .with_context(|| format!("running {program} (is the passwd package installed?)"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !err.contains("lock") && !err.contains("try again") {
            bail!("{program} {}: {err}", args.join(" "));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    }
    bail!("{program}: the password file stayed locked; try again")
}
