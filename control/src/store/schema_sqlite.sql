CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    active_version_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE template_versions (
    id TEXT PRIMARY KEY,
    template_id TEXT NOT NULL REFERENCES templates(id),
    version INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    files TEXT NOT NULL,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (template_id, version)
);
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    template_id TEXT NOT NULL REFERENCES templates(id),
    parameters TEXT NOT NULL,
    provisioner_state TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX workspaces_owner_name ON workspaces (owner_id, name) WHERE deleted = 0;
CREATE TABLE workspace_builds (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    number INTEGER NOT NULL,
    transition TEXT NOT NULL,
    template_version_id TEXT NOT NULL REFERENCES template_versions(id),
    then_start INTEGER NOT NULL,
    initiator_id TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (workspace_id, number)
);
CREATE TABLE provisioner_jobs (
    id TEXT PRIMARY KEY,
    build_id TEXT NOT NULL UNIQUE REFERENCES workspace_builds(id),
    provisioner TEXT NOT NULL,
    status TEXT NOT NULL,
    daemon_id TEXT,
    lease_expires_at INTEGER,
    attempts INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER
);
CREATE INDEX provisioner_jobs_status ON provisioner_jobs (status, created_at);
CREATE TABLE build_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES provisioner_jobs(id),
    created_at INTEGER NOT NULL,
    stage TEXT NOT NULL,
    level TEXT NOT NULL,
    output TEXT NOT NULL
);
CREATE INDEX build_logs_job ON build_logs (job_id, id);
CREATE TABLE workspace_resources (
    id TEXT PRIMARY KEY,
    build_id TEXT NOT NULL REFERENCES workspace_builds(id),
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    persistent INTEGER NOT NULL,
    details TEXT NOT NULL
);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    build_id TEXT NOT NULL REFERENCES workspace_builds(id),
    created_at INTEGER NOT NULL,
    first_connected_at INTEGER,
    last_seen_at INTEGER,
    lifecycle TEXT NOT NULL,
    version TEXT,
    cert_serial TEXT,
    cert_expires_at INTEGER,
    stats TEXT,
    revoked_at INTEGER
);
CREATE INDEX agents_workspace ON agents (workspace_id, created_at);
CREATE TABLE bootstrap_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE agent_commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX agent_commands_agent ON agent_commands (agent_id, id);
