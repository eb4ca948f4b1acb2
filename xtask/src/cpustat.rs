//! CPU accounting for the SSH benchmark: per process (the client's children, the agent,
//! control) and for the whole machine, around one transfer.

use std::time::Instant;

pub struct Procs {
    pub agent: u32,
    pub control: u32,
}

/// CPU seconds (user + system) spent during one transfer.
#[derive(Default, Clone, Copy)]
pub struct Cpu {
    /// Our waited-for children: ssh, head or cat, the shell.
    pub client: f64,
    /// The agent itself (not the command it runs).
    pub agent: f64,
    pub control: f64,
    /// The whole machine (every process, kernel included): what a transfer costs the host.
    pub machine: f64,
}

/// CPU seconds the whole machine has spent (user, nice, system, irq, softirq; /proc/stat).
pub fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|i| f.get(*i).copied().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
}

/// utime + stime (own, or of waited-for children) of a process, in seconds.
pub fn cpu_secs(pid: &str, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17, i.e. 11-14 after the name.
    let (u, s) = if children { (13, 14) } else { (11, 12) };
    // USER_HZ is 100 on Linux.
    (f.get(u).copied().unwrap_or(0.0) + f.get(s).copied().unwrap_or(0.0)) / 100.0
}

pub fn measure(
    procs: &Procs,
    run: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Cpu)> {
    let snap = || Cpu {
        client: cpu_secs("self", true),
        agent: cpu_secs(&procs.agent.to_string(), false),
        control: cpu_secs(&procs.control.to_string(), false),
        machine: machine_cpu_secs(),
    };
    let a = snap();
    let t = Instant::now();
    run()?;
    let secs = t.elapsed().as_secs_f64();
    let b = snap();
    Ok((
        secs,
        Cpu {
            client: b.client - a.client,
            agent: b.agent - a.agent,
            control: b.control - a.control,
            machine: b.machine - a.machine,
        },
    ))
}
