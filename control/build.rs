//! Embeds the dashboard's third-party browser code (xterm.js, its fit and web-links addons) from the npm
//! registry: `npm ci` in `control/web` when `node_modules` is missing, then the files are copied
//! into OUT_DIR for `include_bytes!`. Nothing from npm is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: &[(&str, &str)] = &[
    ("@xterm/xterm/lib/xterm.js", "xterm.js"),
    ("@xterm/xterm/css/xterm.css", "xterm.css"),
    ("@xterm/addon-fit/lib/addon-fit.js", "addon-fit.js"),
    (
        "@xterm/addon-web-links/lib/addon-web-links.js",
        "addon-web-links.js",
    ),
];

/// Installed for the browser tests (tests/it read them from node_modules), not embedded.
const TEST_FILES: &[&str] = &["axe-core/axe.min.js"];

fn main() {
    version();
    let web =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("web");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    let modules = web.join("node_modules");
    let present = FILES.iter().all(|(src, _)| modules.join(src).exists())
        && TEST_FILES.iter().all(|src| modules.join(src).exists());
    if !present {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&web)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!(
                "the dashboard needs xterm.js from the npm registry: `npm ci` in {} failed ({other:?}); install Node.js/npm (apt-get install npm) and make sure registry.npmjs.org is reachable",
                web.display()
            ),
        }
    }
    for (src, dst) in FILES {
        copy(&modules.join(src), &out.join(dst));
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        panic!("copying {} to {}: {e}", from.display(), to.display());
    }
}

/// `OUTPOST_VERSION`: the package version and the git commit it was built from, or the version
/// alone outside a git checkout.
fn version() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if root.join(f).exists() {
            println!("cargo:rerun-if-changed={}", root.join(f).display());
        }
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let pkg = env!("CARGO_PKG_VERSION");
    let v = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => format!("{pkg} ({rev})"),
        None => pkg.to_string(),
    };
    println!("cargo:rustc-env=OUTPOST_VERSION={v}");
}
