CREATE TABLE stats_samples (
    workspace_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    cpu_percent REAL NOT NULL,
    cpu_cores INTEGER NOT NULL,
    mem_used_bytes INTEGER NOT NULL,
    mem_total_bytes INTEGER NOT NULL,
    home_disk_used_bytes INTEGER NOT NULL,
    home_disk_total_bytes INTEGER NOT NULL,
    load1 REAL NOT NULL,
    PRIMARY KEY (workspace_id, at)
);
CREATE INDEX stats_samples_at ON stats_samples (at)
