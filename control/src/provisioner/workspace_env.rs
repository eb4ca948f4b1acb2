//! What a workspace's agent starts with: a cleared environment plus an allowlist (nothing of
//! control's own environment, its database URL or provisioner key, reaches a workspace), and
//! the template's files, delivered read-only on every start.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Variables of control's environment a workspace may inherit: locale, time zone, PATH and the
/// agent's log settings. Nothing that could hold a secret.
const ALLOWED: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "OUTPOST_LOG",
    "OUTPOST_LOG_JSON",
    "RUST_BACKTRACE",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The allowlisted part of control's environment (PATH always set).
pub fn inherited() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ALLOWED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// The workspace's identity, which the agent passes on to everything it starts (stop and
/// start find leftovers by `OUTPOST_WORKSPACE_ID`).
pub fn identity(job: &outpost_api::ProvisionerJob) -> Vec<(String, String)> {
    vec![
        ("OUTPOST_WORKSPACE".into(), job.workspace_name.clone()),
        ("OUTPOST_WORKSPACE_ID".into(), job.workspace_id.clone()),
        ("OUTPOST_WORKSPACE_OWNER".into(), job.owner.clone()),
    ]
}

/// Writes the template's files under `dir` (replacing what an earlier start put there):
/// directories 0755, files 0444, or 0555 when they start with `#!`, owned by whoever runs
/// control, so the workspace may read and run them but not change them.
pub fn write_template_files(dir: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if dir.exists() {
        make_writable(dir);
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (rel, body) in files {
        // Paths were checked at push (relative, no `..`); check again: this writes as control.
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
            || rel.starts_with('/')
        {
            anyhow::bail!("template file {rel:?} has an unsafe path");
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file_mode(body)))?;
    }
    seal_dirs(dir)?;
    Ok(())
}

/// 0555 for a file that starts with `#!`, else 0444.
pub fn file_mode(body: &str) -> u32 {
    if body.starts_with("#!") {
        0o555
    } else {
        0o444
    }
}

fn seal_dirs(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() {
            seal_dirs(&e.path())?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))?;
    Ok(())
}

fn make_writable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_secrets_are_not_inherited() {
        let env = inherited();
        assert!(env.iter().all(|(k, _)| ALLOWED.contains(&k.as_str())));
        assert!(env.iter().any(|(k, _)| k == "PATH"));
    }

    #[test]
    fn template_files_are_read_only_and_replaced() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("template");
        let files = BTreeMap::from([
            ("template.toml".to_string(), "x".to_string()),
            ("scripts/a.sh".to_string(), "#!/bin/sh\necho".to_string()),
        ]);
        write_template_files(&t, &files).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&t.join("scripts/a.sh")), 0o555);
        assert_eq!(mode(&t.join("template.toml")), 0o444);
        assert_eq!(mode(&t.join("scripts")), 0o555);
        let fewer = BTreeMap::from([("b.txt".to_string(), "y".to_string())]);
        write_template_files(&t, &fewer).unwrap();
        assert!(!t.join("scripts").exists());
        assert!(t.join("b.txt").exists());
    }
}
