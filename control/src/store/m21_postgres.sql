CREATE INDEX agent_commands_pending ON agent_commands (agent_id) WHERE delivered_at IS NULL;
CREATE INDEX agents_revoked ON agents (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX agents_renewed ON agents (prev_cert_until) WHERE prev_cert_until IS NOT NULL
