//! `cargo xtask fuzz [--seconds N] [--sanitizer address|none] [TARGET...]`: runs the cargo-fuzz
//! targets in `fuzz/` (a crate of its own, outside the workspace) for a bounded time each, on the
//! stable toolchain with `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes nightly flags). Installs
//! cargo-fuzz when it is missing, seeds the corpora, reads libFuzzer's output for the number of
//! executions and a crash artifact, prints a table and writes `target/bench/fuzz.json`. Fails
//! when a target crashed. Not part of `cargo xtask ci`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

/// The targets, as `fuzz/Cargo.toml` names them.
pub const TARGETS: &[&str] = &["relay_frames", "template_parse", "terminal_input"];
const DEFAULT_SECONDS: u64 = 600;

struct Options {
    seconds: u64,
    sanitizer: String,
    targets: Vec<String>,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        seconds: DEFAULT_SECONDS,
        sanitizer: "address".into(),
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                o.seconds = v
                    .parse()
                    .with_context(|| format!("--seconds {v:?}: not a number"))?;
                if o.seconds == 0 {
                    bail!("--seconds must be at least 1");
                }
            }
            "--sanitizer" => {
                let v = it.next().context("--sanitizer needs address or none")?;
                if !matches!(v.as_str(), "address" | "none") {
                    bail!("--sanitizer {v:?}: address or none");
                }
                o.sanitizer = v.clone();
            }
            t if TARGETS.contains(&t) => o.targets.push(t.to_string()),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask fuzz [--seconds N] [--sanitizer address|none] [{}]...",
                TARGETS.join("|")
            ),
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(o)
}

/// What one run of a target came to.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    runs: Option<u64>,
    /// libFuzzer's own count of seconds (`Done N runs in S second(s)`).
    fuzz_seconds: Option<u64>,
    /// Inputs libFuzzer wrote because they crashed, leaked, timed out or ran out of memory.
    artifacts: Vec<String>,
}

impl Outcome {
    /// Reads one line of libFuzzer's (or cargo-fuzz's) output.
    fn line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Done ") {
            // `Done 123456 runs in 601 second(s)`
            let mut w = rest.split_whitespace();
            if let (Some(n), Some("runs"), Some("in"), Some(s)) =
                (w.next(), w.next(), w.next(), w.next())
            {
                if let (Ok(n), Ok(s)) = (n.parse(), s.parse()) {
                    self.runs = Some(n);
                    self.fuzz_seconds = Some(s);
                }
            }
        } else if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            if let Ok(n) = n.trim().parse() {
                self.runs = Some(n);
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            let path = path.trim().to_string();
            let name = Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // A slow unit is reported, not a failure.
            if !name.starts_with("slow-unit-") && !self.artifacts.contains(&path) {
                self.artifacts.push(path);
            }
        }
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let o = options(args)?;
    let root = crate::root();
    let fuzz_dir = root.join("fuzz");
    ensure_cargo_fuzz()?;
    // One build for every target first, so the clock below counts fuzzing only.
    run_cargo_fuzz(
        &root,
        &["build", "--fuzz-dir", "fuzz", "--sanitizer", &o.sanitizer],
    )?;

    let mut rows = Vec::new();
    for t in &o.targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        for (name, bytes) in seeds(&root, t)? {
            std::fs::write(corpus.join(&name), bytes)
                .with_context(|| format!("writing seed {name}"))?;
        }
        eprintln!("fuzz: {t} for {} s (sanitizer: {})", o.seconds, o.sanitizer);
        let started = Instant::now();
        let (outcome, ok) = run_target(&root, t, &corpus, &o)?;
        let wall = started.elapsed().as_secs_f64();
        let mut crashes = outcome.artifacts.len() as u64;
        if !ok && crashes == 0 {
            // libFuzzer stopped with a failure but wrote nothing we saw: still a failure.
            crashes = 1;
        }
        rows.push((t.clone(), outcome, crashes, wall));
    }

    let mut metrics = Vec::new();
    println!("\n| target | seconds | executions | execs/s | crashes |\n|---|---|---|---|---|");
    for (t, out, crashes, wall) in &rows {
        let secs = out.fuzz_seconds.map(|s| s as f64).unwrap_or(*wall).max(1.0);
        let runs = out.runs.unwrap_or(0);
        let rate = runs as f64 / secs;
        println!("| {t} | {secs:.0} | {runs} | {rate:.0} | {crashes} |");
        for (metric, value, unit) in [
            (format!("{t} executions"), runs as f64, "runs"),
            (
                format!("{t} execs/s"),
                (rate * 10.0).round() / 10.0,
                "runs/s",
            ),
            (format!("{t} seconds"), secs, "s"),
            (format!("{t} crashes"), *crashes as f64, "crashes"),
        ] {
            metrics.push(json!({"metric": metric, "value": value, "unit": unit, "anchor": null, "anchor_value": null, "ratio": null}));
        }
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let file = out.join("fuzz.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&metrics)?)?;
    eprintln!("fuzz: wrote {}", file.display());

    let crashed: Vec<_> = rows.iter().filter(|r| r.2 > 0).collect();
    for (t, out, _, _) in &crashed {
        for a in &out.artifacts {
            eprintln!("fuzz: {t} crashed; input: {a} (replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz {t} {a})");
        }
    }
    if !crashed.is_empty() {
        bail!("{} target(s) crashed", crashed.len());
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = crate::cargo_command()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        crate::cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    Ok(())
}

fn run_cargo_fuzz(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo fuzz {}", args.join(" "));
    let st = crate::cargo_command()
        .arg("fuzz")
        .args(args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root)
        .status()
        .context("running cargo fuzz")?;
    if !st.success() {
        bail!("`cargo fuzz {}` failed", args.join(" "));
    }
    Ok(())
}

/// Runs one target for `o.seconds`, passing its output through while reading it; whether it
/// ended well.
fn run_target(root: &Path, t: &str, corpus: &Path, o: &Options) -> anyhow::Result<(Outcome, bool)> {
    let args = [
        "fuzz".to_string(),
        "run".into(),
        "--fuzz-dir".into(),
        "fuzz".into(),
        "--sanitizer".into(),
        o.sanitizer.clone(),
        t.into(),
        corpus.to_string_lossy().into_owned(),
        "--".into(),
        format!("-max_total_time={}", o.seconds),
        "-print_final_stats=1".into(),
    ];
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo {}", args.join(" "));
    let mut child = crate::cargo_command()
        .args(&args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    // cargo-fuzz names the failing input on stdout, libFuzzer reports on stderr: read both.
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                lines.push(line);
            }
        }
        lines
    });
    let mut outcome = Outcome::default();
    if let Some(err) = child.stderr.take() {
        for line in lines_lossy(err) {
            eprintln!("{line}");
            outcome.line(&line);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    for line in reader.join().unwrap_or_default() {
        outcome.line(&line);
    }
    // Artifacts are named relative to the directory libFuzzer ran in (`fuzz/`).
    for a in &mut outcome.artifacts {
        let p = PathBuf::from(&*a);
        if p.is_relative() && !root.join(&p).exists() && root.join("fuzz").join(&p).exists() {
            *a = Path::new("fuzz").join(p).to_string_lossy().into_owned();
        }
    }
    Ok((outcome, status.success()))
}

/// The lines of `r`, bytes that are not UTF-8 replaced (libFuzzer prints inputs as they are).
fn lines_lossy(r: impl Read) -> impl Iterator<Item = String> {
    BufReader::new(r)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|l| String::from_utf8_lossy(&l).into_owned())
}

/// Starting inputs for a target's corpus: each template under `templates/` as one input of
/// `template_parse` (`template.toml`, then NUL, path, newline, contents for every other file),
/// a sample attach query and frames for `terminal_input`.
fn seeds(root: &Path, target: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    match target {
        "template_parse" => {
            let dir = root.join("templates");
            let mut templates: Vec<_> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("template.toml").is_file())
                .collect();
            templates.sort();
            for t in templates {
                let mut input = std::fs::read(t.join("template.toml"))?;
                let mut files = Vec::new();
                collect_files(&t, &mut files)?;
                files.sort();
                for f in files {
                    let rel = f
                        .strip_prefix(&t)
                        .unwrap_or(&f)
                        .to_string_lossy()
                        .into_owned();
                    if rel == "template.toml" {
                        continue;
                    }
                    input.push(0);
                    input.extend_from_slice(rel.as_bytes());
                    input.push(b'\n');
                    input.extend_from_slice(&std::fs::read(&f)?);
                }
                let name = t
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((format!("seed-{name}"), input));
            }
        }
        "terminal_input" => {
            let mut input = b"id=ab-1&cols=100&rows=30&command=top%20-d+1\n".to_vec();
            input.push(7);
            input.extend_from_slice(&outpost_api::relay::pty::encode(
                outpost_api::relay::pty::KIND_RESIZE,
                &[0, 120, 0, 40],
            ));
            input.extend_from_slice(&outpost_api::relay::pty::encode(
                outpost_api::relay::pty::KIND_INPUT,
                b"ls -l\r",
            ));
            out.push(("seed-attach".into(), input));
        }
        _ => {}
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            collect_files(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_output() {
        let mut o = Outcome::default();
        for l in [
            "#1048576\tpulse  cov: 412 ft: 1290 corp: 210/9Kb exec/s: 349525 rss: 61Mb",
            "Done 2097152 runs in 6 second(s)",
            "stat::number_of_executed_units: 2097153",
            "artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/slow-unit-ab",
        ] {
            o.line(l);
        }
        assert_eq!(o.runs, Some(2097153));
        assert_eq!(o.fuzz_seconds, Some(6));
        assert!(o.artifacts.is_empty());
        o.line("artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-0a1b");
        o.line("Done x runs in y second(s)");
        assert_eq!(
            o.artifacts,
            vec!["/w/fuzz/artifacts/x/crash-0a1b".to_string()]
        );
        assert_eq!((o.runs, o.fuzz_seconds), (Some(2097153), Some(6)));
    }

    #[test]
    fn options_default_to_every_target() {
        let o = options(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (o.seconds, o.targets.len()),
            (DEFAULT_SECONDS, TARGETS.len())
        );
        let args: Vec<String> = ["--seconds", "5", "relay_frames"]
            .map(String::from)
            .to_vec();
        let o = options(&args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (o.seconds, o.targets),
            (5, vec!["relay_frames".to_string()])
        );
        assert!(options(&["nope".to_string()]).is_err());
    }
}
