//! Heartbeat statistics from sysinfo: CPU, memory, load, the home volume's disk use, uptime.

use std::path::PathBuf;
use std::time::Instant;

use outpost_api::{AgentStats, SessionCounts};
use sysinfo::{Disks, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

pub struct StatsCollector {
    sys: System,
    disks: Disks,
    home: PathBuf,
    started: Instant,
}

impl StatsCollector {
    pub fn new(home: PathBuf) -> Self {
        let mut sys = System::new_with_specifics(RefreshKind::nothing());
        sys.refresh_cpu_usage();
        StatsCollector {
            sys,
            disks: Disks::new_with_refreshed_list(),
            home,
            started: Instant::now(),
        }
    }

    /// Measures now. CPU use is over the time since the previous call.
    pub fn collect(&mut self, sessions: SessionCounts) -> AgentStats {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let pid = sysinfo::get_current_pid().ok();
        if let Some(pid) = pid {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory(),
            );
        }
        self.disks.refresh(true);
        let load = System::load_average();
        // The disk whose mount point is the longest prefix of the home directory.
        let home = self
            .home
            .canonicalize()
            .unwrap_or_else(|_| self.home.clone());
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|d| home.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let (disk_total, disk_used) = disk
            .map(|d| {
                (
                    d.total_space(),
                    d.total_space().saturating_sub(d.available_space()),
                )
            })
            .unwrap_or((0, 0));
        AgentStats {
            agent_uptime_secs: self.started.elapsed().as_secs(),
            system_uptime_secs: System::uptime(),
            cpu_percent: self.sys.global_cpu_usage(),
            cpu_cores: self.sys.cpus().len() as u32,
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            mem_used_bytes: self.sys.used_memory(),
            mem_total_bytes: self.sys.total_memory(),
            home_disk_used_bytes: disk_used,
            home_disk_total_bytes: disk_total,
            agent_rss_bytes: pid
                .and_then(|p| self.sys.process(p))
                .map(|p| p.memory())
                .unwrap_or(0),
            sessions,
            rx_bytes: 0,
            tx_bytes: 0,
            ports: Vec::new(),
            apps: Vec::new(),
            scripts: Default::default(),
            home_dir: String::new(),
        }
    }
}
