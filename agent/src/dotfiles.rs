//! Dotfiles: clone (or pull) a repository, then run its install script, or link its dotfiles into
//! the home keeping a `.bak` of what they replace. Used by the agent on start (the workspace
//! parameter `dotfiles_uri`) and by `outpost dotfiles URL` inside a workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Install scripts, in the order they are looked for (as Coder does).
pub const INSTALL_SCRIPTS: &[&str] = &[
    "install.sh",
    "install",
    "bootstrap.sh",
    "bootstrap",
    "script/bootstrap",
    "setup.sh",
    "setup",
    "script/setup",
];

/// Where the repository is checked out.
pub fn checkout_dir(home: &Path) -> PathBuf {
    home.join(".config/outpost/dotfiles")
}

fn run(cmd: &mut Command, log: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        log(l.to_string());
    }
    if !out.status.success() {
        bail!("{cmd:?} exited with {}", out.status);
    }
    Ok(())
}

/// Applies the dotfiles repository at `uri` to `home`.
pub fn apply(uri: &str, home: &Path, log: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let dir = checkout_dir(home);
    // Another repository than last time: start over.
    if dir.join(".git").exists() {
        let origin = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["remote", "get-url", "origin"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if origin != uri {
            log(format!(
                "the dotfiles repository changed ({origin} -> {uri}); cloning afresh"
            ));
            std::fs::remove_dir_all(&dir)?;
        }
    }
    if dir.join(".git").exists() {
        log(format!("pulling {uri} in {}", dir.display()));
        run(
            Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(["pull", "--ff-only"]),
            log,
        )?;
    } else {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        log(format!("cloning {uri} into {}", dir.display()));
        run(
            Command::new("git")
                .args(["clone", "--quiet", "--", uri])
                .arg(&dir),
            log,
        )?;
    }
    for name in INSTALL_SCRIPTS {
        let script = dir.join(name);
        if script.is_file() {
            log(format!("running {name}"));
            use std::os::unix::fs::PermissionsExt;
            let executable = std::fs::metadata(&script)?.permissions().mode() & 0o111 != 0;
            let mut cmd = if executable {
                Command::new(&script)
            } else {
                let mut c = Command::new("/bin/sh");
                c.arg(&script);
                c
            };
            return run(cmd.current_dir(&dir).env("HOME", home), log);
        }
    }
    // No install script: link the repository's dotfiles into the home.
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        if !name_s.starts_with('.')
            || name_s == ".git"
            || name_s == ".gitignore"
            || name_s == ".github"
        {
            continue;
        }
        let target = home.join(&name);
        if let Ok(existing) = std::fs::read_link(&target) {
            if existing == entry.path() {
                continue;
            }
        }
        if target.symlink_metadata().is_ok() {
            let bak = home.join(format!("{name_s}.bak"));
            std::fs::rename(&target, &bak)
                .with_context(|| format!("keeping {} as {}", target.display(), bak.display()))?;
            log(format!("kept the old {name_s} as {name_s}.bak"));
        }
        std::os::unix::fs::symlink(entry.path(), &target)?;
        log(format!("linked {name_s}"));
    }
    Ok(())
}
