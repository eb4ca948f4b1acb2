CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    created_at BIGINT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor TEXT NOT NULL,
    workspace_id TEXT,
    agent_id TEXT,
    remote_addr TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (created_at);
CREATE INDEX audit_events_action ON audit_events (action, created_at)
