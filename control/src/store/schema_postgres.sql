CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
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
    created_at BIGINT NOT NULL
);
CREATE TABLE template_versions (
    id TEXT PRIMARY KEY,
    template_id TEXT NOT NULL REFERENCES templates(id),
    version BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    files TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (template_id, version)
);
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    template_id TEXT NOT NULL REFERENCES templates(id),
    parameters TEXT NOT NULL,
    provisioner_state TEXT NOT NULL,
    deleted BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX workspaces_owner_name ON workspaces (owner_id, name) WHERE deleted = 0;
CREATE TABLE workspace_builds (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    number BIGINT NOT NULL,
    transition TEXT NOT NULL,
    template_version_id TEXT NOT NULL REFERENCES template_versions(id),
    then_start BIGINT NOT NULL,
    initiator_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, number)
);
CREATE TABLE provisioner_jobs (
    id TEXT PRIMARY KEY,
    build_id TEXT NOT NULL UNIQUE REFERENCES workspace_builds(id),
    provisioner TEXT NOT NULL,
    status TEXT NOT NULL,
    daemon_id TEXT,
    lease_expires_at BIGINT,
    attempts BIGINT NOT NULL,
    cancel_requested BIGINT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT
);
CREATE INDEX provisioner_jobs_status ON provisioner_jobs (status, created_at);
CREATE TABLE build_logs (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES provisioner_jobs(id),
    created_at BIGINT NOT NULL,
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
    persistent BIGINT NOT NULL,
    details TEXT NOT NULL
);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    build_id TEXT NOT NULL REFERENCES workspace_builds(id),
    created_at BIGINT NOT NULL,
    first_connected_at BIGINT,
    last_seen_at BIGINT,
    lifecycle TEXT NOT NULL,
    version TEXT,
    cert_serial TEXT,
    cert_expires_at BIGINT,
    stats TEXT,
    revoked_at BIGINT
);
CREATE INDEX agents_workspace ON agents (workspace_id, created_at);
CREATE TABLE bootstrap_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE agent_commands (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX agent_commands_agent ON agent_commands (agent_id, id);
