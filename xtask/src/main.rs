//! `cargo xtask`: ci, test, demo, bench.

mod agents;
mod bench;
mod sshbench;
mod termbench;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const USAGE: &str = "usage: cargo xtask <command>

  ci                  fmt --check, clippy -D warnings, build, every test (what .ci/run runs)
  test                build the binaries and run every test
  demo                run Outpost on its embedded defaults with a running workspace `dev`
  bench lifecycle     create/stop/start/delete timings and control's RSS with 100 workspaces
  bench agents        N simulated agents (bootstrap, long poll, heartbeats) against one server
  bench ssh           the agent's SSH (direct and relayed) beside Debian's sshd, same run
  bench terminal      web terminal keystroke latency beside `ssh -tt` to Debian's sshd
  bench rig           set up bench ssh's servers, print how to reach them, wait for Enter
                      (for profiling by hand: perf, strace)
";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench::main(&args[1..]),
        _ => {
            eprint!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `cargo run` gives us the variables it sets for xtask's own crate; build scripts (ring's)
    // watch some of them, so pass them on and every nested build would rebuild from scratch.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k.as_ref(),
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let st = cmd
        .args(args)
        .current_dir(root())
        .status()
        .context("running cargo")?;
    if !st.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    test()
}

fn test() -> anyhow::Result<()> {
    // The end-to-end tests drive the real binaries: build them first.
    cargo(&["build", "--workspace", "--bins"])?;
    cargo(&["test", "--workspace"])
}

fn demo() -> anyhow::Result<()> {
    cargo(&["build", "--bins"])?;
    let bin = root().join("target/debug");
    let data = std::env::var("OUTPOST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".outpost"));
    bench::demo(&bin, &data)
}
