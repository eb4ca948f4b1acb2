CREATE TABLE stats_samples (
    workspace_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    cpu_percent DOUBLE PRECISION NOT NULL,
    cpu_cores BIGINT NOT NULL,
    mem_used_bytes BIGINT NOT NULL,
    mem_total_bytes BIGINT NOT NULL,
    home_disk_used_bytes BIGINT NOT NULL,
    home_disk_total_bytes BIGINT NOT NULL,
    load1 DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workspace_id, at)
);
CREATE INDEX stats_samples_at ON stats_samples (at)
