//! `cargo xtask bench agents --heap-profile`: where control's heap goes with its agents
//! connected. Control runs under heaptrack (Debian's `heaptrack`: an LD_PRELOAD that records
//! every allocation with its backtrace); at the end of the steady window it is killed and the
//! bytes it held at its peak are grouped by the crate that asked for them.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// SIGKILL to `pid`, a server this bench started (directly, or under its wrapper).
pub fn kill9(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Who asked for memory: the first frame from the allocation up that names one of these (so a
/// buffer rustls allocates for hyper counts as rustls's).
const OWNERS: &[(&str, &str)] = &[
    (
        "rustls",
        "rustls (TLS connections: record buffers, session state)",
    ),
    (
        "h2::",
        "h2 (HTTP/2 connections: frame buffers, stream state, HPACK tables)",
    ),
    ("hyper", "hyper (HTTP connection state, request futures)"),
    (
        "sqlx",
        "sqlx (the store's connections and statement caches)",
    ),
    ("libsqlite3", "SQLite (page cache)"),
    ("sqlite3", "SQLite (page cache)"),
    ("tokio::", "tokio (tasks, timers, I/O registrations)"),
    ("axum", "axum (routing, extractors)"),
    (
        "outpost_control",
        "outpost_control (its own maps: agent cache, liveness, wakers, limits)",
    ),
    ("ring::", "ring (keys)"),
    ("webpki", "webpki (certificate parsing)"),
];

/// Reads heaptrack's file in `dir`, groups the peak heap by owner and returns a Markdown
/// section: bytes at the peak per connected agent, by owner, and the largest call sites.
pub fn summary(dir: &Path, agents: usize, rss_kib: u64) -> anyhow::Result<String> {
    let file = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("heap") && !n.ends_with(".txt"))
        })
        .context("heaptrack wrote no file")?;
    // heaptrack's interpreter finishes writing after the process dies.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Kept for a closer look (`heaptrack_print -f target/bench/heap-agents.zst`, or heaptrack_gui).
    let kept = crate::root().join("target/bench/heap-agents.zst");
    std::fs::create_dir_all(crate::root().join("target/bench"))?;
    std::fs::copy(&file, &kept)?;
    let stacks = dir.join("heap-stacks.txt");
    let out = Command::new("heaptrack_print")
        .arg("-f")
        .arg(&file)
        .args(["--flamegraph-cost-type", "peak", "-F"])
        .arg(&stacks)
        .args(["--print-peaks", "1", "-n", "12", "-s", "2"])
        .args(["--print-allocators", "0", "--print-temporary", "0"])
        .output()
        .context("running heaptrack_print (apt-get install heaptrack)")?;
    if !out.status.success() {
        bail!(
            "heaptrack_print failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut by_owner: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut total = 0u64;
    for line in std::fs::read_to_string(&stacks)?.lines() {
        let Some((frames, bytes)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(bytes) = bytes.parse::<u64>() else {
            continue;
        };
        total += bytes;
        // Frames run from the outermost call to the allocation: look from the allocation up.
        let owner = frames
            .split(';')
            .rev()
            .find_map(|f| {
                OWNERS
                    .iter()
                    .find(|(k, _)| f.contains(k))
                    .map(|(_, label)| *label)
            })
            .unwrap_or("other (std, serde, the allocator's own)");
        *by_owner.entry(owner).or_default() += bytes;
    }
    let mut rows: Vec<(&str, u64)> = by_owner.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let per = |b: u64| b as f64 / 1024.0 / agents.max(1) as f64;
    let mut md = format!(
        "Heap profile (heaptrack, control's heap at its peak with {agents} agents connected): \
         {:.1} MiB of heap, {:.1} KiB per agent; RSS then {:.1} MiB, {:.1} KiB per agent (RSS \
         also holds the allocator's free pages, stacks and the binary).\n\n\
         | who asked for it (first named frame from the allocation up) | MiB | KiB per agent |\n|---|---|---|\n",
        total as f64 / 1048576.0,
        per(total),
        rss_kib as f64 / 1024.0,
        rss_kib as f64 / agents.max(1) as f64,
    );
    for (owner, b) in &rows {
        md.push_str(&format!(
            "| {owner} | {:.1} | {:.2} |\n",
            *b as f64 / 1048576.0,
            per(*b)
        ));
    }
    md.push_str(&format!(
        "\nThe largest call sites at the peak (`heaptrack_print --print-peaks`; the whole profile: `{}`):\n\n```\n",
        kept.display()
    ));
    let peaks: String = text
        .lines()
        .skip_while(|l| !l.starts_with("PEAK MEMORY CONSUMERS"))
        .take(60)
        .map(|l| format!("{l}\n"))
        .collect();
    md.push_str(&peaks);
    md.push_str("```\n");
    Ok(md)
}
