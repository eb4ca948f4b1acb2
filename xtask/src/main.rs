//! `cargo xtask`: ci, test, demo, bench, fuzz.

/// The load processes of `bench agents` run 16,000 agents each, as control serves them: the
/// allocator of control (`control/src/main.rs`), not of the one-per-workspace agent.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agents;
mod agents_many;
mod agents_replicas;
mod agentsim;
mod agentstart;
mod bench;
mod cpustat;
mod dist;
mod dockerbench;
mod fuzz;
mod heap;
mod schedbench;
mod sshbench;
mod termbench;
mod termhops;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const USAGE: &str = "usage: cargo xtask <command>

  ci                  fmt --check, tidy, clippy -D warnings, build, every test (what .ci/run
                      runs); ends with one line: N passed, M failed, K skipped
  tidy                crates depend only downward, no source file past 800 lines unexplained,
                      ARCHITECTURE.md's code map names only paths that exist
  test                build the binaries and run every test
  demo                run Outpost on its embedded defaults with a running workspace `dev`
  bench lifecycle     create/stop/start/delete timings and control's RSS with 100 workspaces
  bench agents        N simulated agents (bootstrap, long poll, heartbeats) against one server
  bench ssh           the agent's SSH (direct and relayed) beside Debian's sshd, same run
  bench terminal      web terminal keystroke latency beside `ssh -tt` to Debian's sshd
  bench schedule [--count N] [--postgres-url URL] [--no-postgres] [--no-sqlite] [--keep]
                      one scheduler tick over 100,000 workspaces, 1% past their deadline, on
                      SQLite and PostgreSQL (bar: under 1 s, every due stop queued)
  bench rig           set up bench ssh's servers, print how to reach them, wait for Enter
                      (for profiling by hand: perf, strace)
  dist [--bin-dir DIR] [--out DIR]
                      release binaries and a Debian package (target/dist/outpost_*.deb) with a
                      systemd unit running `outpost server` as the `outpost` user
  fuzz [--seconds N] [--sanitizer address|none] [TARGET...]
                      run the cargo-fuzz targets in fuzz/ (default: all, 600 s each) with
                      RUSTC_BOOTSTRAP=1; writes target/bench/fuzz.json, fails on a crash
";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::main(),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench::main(&args[1..]),
        Some("fuzz") => fuzz::main(&args[1..]),
        Some("dist") => dist::main(&args[1..]),
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
    let st = cargo_command()
        .args(args)
        .current_dir(root())
        .status()
        .context("running cargo")?;
    if !st.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// A `cargo` command without the variables `cargo run` set for xtask's own crate.
pub(crate) fn cargo_command() -> Command {
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
    cmd
}

fn ci() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    tidy::main()?;
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
    let counts = cargo_test(&["test", "--workspace", "--no-fail-fast"])?;
    // What each failing test said, without its backtrace, last: a log cut to its head and
    // tail still shows why.
    for (name, said) in &counts.said {
        println!("failed: {name}");
        for line in said {
            println!("    {line}");
        }
    }
    // One plain line that counts every test run (cargo's last lines are doc-test runs of 0).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    if counts.failed > 0 || !counts.ok {
        bail!("tests failed");
    }
    if counts.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    ok: bool,
    /// Each failing test's name and the first lines it printed before its backtrace.
    said: Vec<(String, Vec<String>)>,
    /// Whether the lines read now belong to the last of `said`.
    saying: bool,
}

/// How many lines of a failing test's output the digest keeps.
const SAID_LINES: usize = 12;

/// Runs `cargo ARGS` (a test run), passing its output through while adding up its
/// `test result:` lines.
fn cargo_test(args: &[&str]) -> anyhow::Result<Counts> {
    use std::io::BufRead;
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = cargo_command()
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo")?;
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            add_result_line(&mut counts, &line);
            add_failure_line(&mut counts, &line);
        }
    }
    counts.ok = child.wait()?.success();
    Ok(counts)
}

/// Adds `test result: ok. 3 passed; 1 failed; 2 ignored; ...` to `c`.
fn add_result_line(c: &mut Counts, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => c.passed += n,
            "failed" => c.failed += n,
            "ignored" => c.ignored += n,
            _ => {}
        }
    }
}

/// Keeps what a failing test printed (`---- NAME stdout ----` up to its backtrace, at most
/// [`SAID_LINES`] lines).
fn add_failure_line(c: &mut Counts, line: &str) {
    if let Some(name) = line
        .strip_prefix("---- ")
        .and_then(|l| l.strip_suffix(" stdout ----"))
    {
        c.said.push((name.to_string(), Vec::new()));
        c.saying = true;
        return;
    }
    if !c.saying {
        return;
    }
    let t = line.trim();
    if t.eq_ignore_ascii_case("stack backtrace:") || t == "failures:" {
        c.saying = false;
        return;
    }
    if let Some((_, said)) = c.said.last_mut() {
        if said.len() < SAID_LINES && !t.is_empty() {
            said.push(line.to_string());
        }
    }
}

fn demo() -> anyhow::Result<()> {
    cargo(&["build", "--bins"])?;
    let bin = root().join("target/debug");
    let data = std::env::var("OUTPOST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".outpost"));
    bench::demo(&bin, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_add_up() {
        let mut c = Counts::default();
        add_result_line(&mut c, "test result: ok. 13 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.18s");
        add_result_line(&mut c, "test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 3 filtered out; finished in 1s");
        add_result_line(&mut c, "running 6 tests");
        assert_eq!((c.passed, c.failed, c.ignored), (18, 1, 2));
    }

    #[test]
    fn failing_tests_are_digested_without_backtraces() {
        let mut c = Counts::default();
        for l in [
            "test a::b ... ok",
            "failures:",
            "",
            "---- docker::life::sqlite stdout ----",
            "Error: waiting for dev",
            "",
            "Caused by:",
            "    condition not reached within 20 s",
            "",
            "Stack backtrace:",
            "   0: anyhow::error::<impl anyhow::Error>::msg",
            "---- x::y stdout ----",
            "thread 'x::y' panicked at tests/it/x.rs:3:5:",
            "assertion failed",
            "",
            "failures:",
            "    docker::life::sqlite",
        ] {
            add_failure_line(&mut c, l);
        }
        assert_eq!(
            c.said,
            vec![
                (
                    "docker::life::sqlite".to_string(),
                    vec![
                        "Error: waiting for dev".to_string(),
                        "Caused by:".to_string(),
                        "    condition not reached within 20 s".to_string()
                    ]
                ),
                (
                    "x::y".to_string(),
                    vec![
                        "thread 'x::y' panicked at tests/it/x.rs:3:5:".to_string(),
                        "assertion failed".to_string()
                    ]
                ),
            ]
        );
    }
}
