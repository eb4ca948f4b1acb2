CREATE TABLE agent_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    source TEXT NOT NULL,
    level TEXT NOT NULL,
    output TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_logs_workspace ON agent_logs (workspace_id, id);
ALTER TABLE agents ADD COLUMN logs_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN logs_overflowed INTEGER NOT NULL DEFAULT 0
