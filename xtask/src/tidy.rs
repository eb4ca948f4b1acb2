//! `cargo xtask tidy` (and the first step of `cargo xtask ci`): the structural rules a reviewer
//! would otherwise have to remember, as rust-analyzer's `xtask/src/tidy.rs` keeps them.
//!
//! - Crates depend only downward: `outpost-api` and `outpost-common` on neither side; control
//!   never on the agent (nor on the SSH, PTY and statistics crates only the agent needs); the
//!   agent never on control or the server's crates (sqlx, axum).
//! - No source file passes [`MAX_LINES`] lines unless [`LONG_FILES`] names it and says why (and
//!   an entry whose file has shrunk back must go).
//! - Every path that ARCHITECTURE.md's code map names exists.
//! - No two modules of the agent import each other, directly or around a loop (`crate::x` uses).

use std::path::Path;

use anyhow::{bail, Context};

pub const MAX_LINES: usize = 800;

/// Source files allowed past [`MAX_LINES`], each with the reason.
pub const LONG_FILES: &[(&str, &str)] = &[(
    "tests/it/ssh.rs",
    "the direct-listener SSH scenarios share one fixture (SshWs); each test is one scenario",
)];

/// What each crate must not depend on (directly or through another crate).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "outpost-control",
        &[
            "outpost-agent",
            "russh",
            "russh-sftp",
            "portable-pty",
            "vt100",
            "sysinfo",
        ],
    ),
    ("outpost-agent", &["outpost-control", "sqlx", "axum"]),
    (
        "outpost-common",
        &["outpost-agent", "outpost-control", "sqlx", "axum", "russh"],
    ),
    (
        "outpost-api",
        &[
            "outpost-agent",
            "outpost-control",
            "outpost-common",
            "sqlx",
            "axum",
            "russh",
        ],
    ),
];

/// Where the source files live (`target` and `node_modules` are skipped).
const SOURCE_DIRS: &[&str] = &["agent", "common", "control", "xtask", "tests"];

pub fn main() -> anyhow::Result<()> {
    let root = crate::root();
    let mut problems = Vec::new();
    for (krate, banned) in FORBIDDEN {
        let tree = cargo_tree(&root, krate)?;
        problems.extend(forbidden_deps(krate, &tree, banned));
    }
    problems.extend(long_files(&root)?);
    let arch =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    problems.extend(
        code_map_paths(&arch)
            .into_iter()
            .filter(|p| !root.join(p).exists())
            .map(|p| format!("ARCHITECTURE.md's code map names `{p}`, which does not exist")),
    );
    problems.extend(module_cycles(&root.join("agent/src"))?);
    problems.extend(vendored_patches(&root)?);
    if problems.is_empty() {
        eprintln!("tidy: crates depend only downward, no file past {MAX_LINES} lines unexplained, the code map is true, no module loops in the agent, each vendored crate is its release plus its patch");
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("tidy found {} problem(s)", problems.len())
}

/// Each vendored crate (`vendor/NAME`) has a patch named for its version
/// (`vendor/patches/NAME-VERSION-*.patch`) that reverses cleanly on it: the patch says what
/// the tree holds. (That nothing else differs from the release is shown by git: the release
/// was committed unchanged first, see vendor/README.md.)
fn vendored_patches(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let patches: Vec<String> = std::fs::read_dir(root.join("vendor/patches"))
        .context("reading vendor/patches")?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for e in std::fs::read_dir(root.join("vendor"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_dir() || name == "patches" {
            continue;
        }
        let manifest = std::fs::read_to_string(e.path().join("Cargo.toml"))
            .with_context(|| format!("reading vendor/{name}/Cargo.toml"))?;
        let version = manifest
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_default();
        let prefix = format!("{name}-{version}-");
        let Some(patch) = patches.iter().find(|p| p.starts_with(&prefix)) else {
            problems.push(format!(
                "vendor/{name} ({version}) has no vendor/patches/{prefix}*.patch: say what was changed, or depend on the release"
            ));
            continue;
        };
        let out = std::process::Command::new("git")
            .args(["apply", "--check", "-R"])
            .arg(root.join("vendor/patches").join(patch))
            .current_dir(root)
            .output()
            .context("running git apply")?;
        if !out.status.success() {
            problems.push(format!(
                "vendor/{name} is not {patch} applied to {name} {version}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(problems)
}

/// `cargo tree` of one package's normal dependencies, one crate name per line.
fn cargo_tree(root: &Path, krate: &str) -> anyhow::Result<String> {
    let out = crate::cargo_command()
        .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .current_dir(root)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {krate}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The banned crates that `tree` (cargo tree's `{p}` lines) shows `krate` depending on.
fn forbidden_deps(krate: &str, tree: &str, banned: &[&str]) -> Vec<String> {
    let mut found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| banned.contains(name))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
        .into_iter()
        .map(|b| format!("{krate} depends on {b} (see ARCHITECTURE.md: API boundaries)"))
        .collect()
}

fn long_files(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect_rs(&root.join(dir), &mut files)?;
    }
    for f in files {
        let rel = f
            .strip_prefix(root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        let lines = std::fs::read_to_string(&f)
            .with_context(|| format!("reading {rel}"))?
            .lines()
            .count();
        let allowed = LONG_FILES.iter().any(|(p, _)| *p == rel);
        if lines > MAX_LINES && !allowed {
            problems.push(format!(
                "{rel} has {lines} lines (more than {MAX_LINES}): split it by job, or add it to LONG_FILES in xtask/src/tidy.rs saying why"
            ));
        }
        if lines <= MAX_LINES && allowed {
            problems.push(format!(
                "{rel} is down to {lines} lines: take it out of LONG_FILES in xtask/src/tidy.rs"
            ));
        }
    }
    for (p, _) in LONG_FILES {
        if !root.join(p).exists() {
            problems.push(format!(
                "LONG_FILES names {p}, which does not exist: take it out"
            ));
        }
    }
    Ok(problems)
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let path = e.path();
        let name = e.file_name();
        if e.file_type()?.is_dir() {
            if name != "target" && name != "node_modules" {
                collect_rs(&path, out)?;
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loops among a crate's top-level modules (a directory module counts as one), found from
/// `crate::NAME` uses in each module's files.
fn module_cycles(src: &Path) -> anyhow::Result<Vec<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut files = Vec::new();
    collect_rs(src, &mut files)?;
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap_or(f);
        let Some(first) = rel.components().next() else {
            continue;
        };
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f)?;
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    Ok(find_cycles(&graph)
        .into_iter()
        .map(|c| {
            format!(
                "agent modules import each other in a loop: {}",
                c.join(" -> ")
            )
        })
        .collect())
}

/// Every loop in `graph`, each reported once (from where the search first meets it).
fn find_cycles(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<Vec<String>> {
    fn visit(
        u: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        state: &mut std::collections::BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        state.insert(u.to_string(), 1);
        stack.push(u.to_string());
        for v in graph.get(u).into_iter().flatten() {
            if !graph.contains_key(v) {
                continue;
            }
            match state.get(v.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|x| x == v).unwrap_or(0);
                    let mut c = stack[start..].to_vec();
                    c.push(v.clone());
                    out.push(c);
                }
                0 => visit(v, graph, state, stack, out),
                _ => {}
            }
        }
        stack.pop();
        state.insert(u.to_string(), 2);
    }
    let mut state = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for u in graph.keys() {
        if state.get(u.as_str()).copied().unwrap_or(0) == 0 {
            visit(u, graph, &mut state, &mut Vec::new(), &mut out);
        }
    }
    out
}

/// The repository paths named in backticks in ARCHITECTURE.md's "Code map" section: spans with a
/// slash that do not start with one (routes such as `/api/v1` do), with no spaces or patterns.
fn code_map_paths(arch: &str) -> Vec<String> {
    let mut in_map = false;
    let mut paths = Vec::new();
    for line in arch.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            in_map = h.trim() == "Code map";
            continue;
        }
        if !in_map {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            let path_like = !span.is_empty()
                && span.contains('/')
                && !span.starts_with('/')
                && !span.starts_with("http")
                && span
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
            if i % 2 == 1 && path_like {
                paths.push(span.trim_end_matches('/').to_string());
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendored_crate_must_be_its_patch() -> anyhow::Result<()> {
        let root = std::env::temp_dir().join(format!("tidy-vendor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("vendor/foo/src"))?;
        std::fs::create_dir_all(root.join("vendor/patches"))?;
        std::fs::write(
            root.join("vendor/foo/Cargo.toml"),
            "[package]\nname = \"foo\"\nversion = \"1.0.0\"\n",
        )?;
        // No patch for it: refused.
        std::fs::write(root.join("vendor/foo/src/lib.rs"), "b\n")?;
        let p = vendored_patches(&root)?;
        assert!(
            p.len() == 1 && p[0].contains("has no vendor/patches/foo-1.0.0-"),
            "{p:?}"
        );
        // The patch (a -> b) is what the tree holds: fine.
        std::fs::write(
            root.join("vendor/patches/foo-1.0.0-b.patch"),
            "diff --git a/vendor/foo/src/lib.rs b/vendor/foo/src/lib.rs\n--- a/vendor/foo/src/lib.rs\n+++ b/vendor/foo/src/lib.rs\n@@ -1 +1 @@\n-a\n+b\n",
        )?;
        assert!(vendored_patches(&root)?.is_empty());
        // A change the patch does not describe: refused.
        std::fs::write(root.join("vendor/foo/src/lib.rs"), "c\n")?;
        let p = vendored_patches(&root)?;
        assert!(
            p.len() == 1 && p[0].contains("is not foo-1.0.0-b.patch applied"),
            "{p:?}"
        );
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }

    #[test]
    fn finds_banned_crates_once_each() {
        let tree = "outpost-control v0.1.0 (/x/control)\nrussh v0.65.1\nsqlx v0.8.6\nrussh v0.65.1 (*)\nvt100 v0.16.2\n";
        assert_eq!(
            forbidden_deps("outpost-control", tree, &["russh", "vt100", "axum"]),
            vec![
                "outpost-control depends on russh (see ARCHITECTURE.md: API boundaries)",
                "outpost-control depends on vt100 (see ARCHITECTURE.md: API boundaries)",
            ]
        );
        assert!(forbidden_deps("outpost-agent", "tokio v1\n", &["sqlx"]).is_empty());
    }

    #[test]
    fn loops_are_found_and_chains_are_not() {
        let g = |edges: &[(&str, &str)]| {
            let mut m: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
                Default::default();
            for (a, b) in edges {
                m.entry(a.to_string()).or_default().insert(b.to_string());
                m.entry(b.to_string()).or_default();
            }
            m
        };
        assert!(find_cycles(&g(&[("run", "ssh"), ("ssh", "user"), ("run", "user")])).is_empty());
        assert_eq!(
            find_cycles(&g(&[("run", "ssh"), ("ssh", "pty"), ("pty", "run")])),
            vec![vec!["pty", "run", "ssh", "pty"]]
        );
    }

    #[test]
    fn code_map_paths_are_repository_paths_only() {
        let arch = "## Bird's-eye view\n`agent/not-here.rs`\n## Code map\n- `control/api/` (crate `outpost-api`): `/api/v1` routes, `run(listener)`, `agent/src/ssh.rs`\n## Invariants\n`x/y.rs`\n";
        assert_eq!(
            code_map_paths(arch),
            vec!["control/api".to_string(), "agent/src/ssh.rs".to_string()]
        );
    }
}
