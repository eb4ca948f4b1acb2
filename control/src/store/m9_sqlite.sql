ALTER TABLE templates ADD COLUMN schedule TEXT;
ALTER TABLE users ADD COLUMN quiet_hours TEXT;
ALTER TABLE workspaces ADD COLUMN autostart TEXT;
ALTER TABLE workspaces ADD COLUMN autostop_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN next_start_at BIGINT;
ALTER TABLE workspaces ADD COLUMN deadline BIGINT;
ALTER TABLE workspaces ADD COLUMN max_deadline BIGINT;
ALTER TABLE workspaces ADD COLUMN last_used_at BIGINT;
ALTER TABLE workspaces ADD COLUMN dormant_at BIGINT;
ALTER TABLE workspace_builds ADD COLUMN reason TEXT;
UPDATE workspaces SET last_used_at = created_at;
CREATE INDEX workspaces_deadline ON workspaces (deadline);
CREATE INDEX workspaces_next_start ON workspaces (next_start_at);
CREATE INDEX workspaces_last_used ON workspaces (template_id, last_used_at);
CREATE INDEX workspaces_dormant ON workspaces (template_id, dormant_at)
