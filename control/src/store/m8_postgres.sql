ALTER TABLE agents ADD COLUMN prev_cert_serial TEXT;
ALTER TABLE agents ADD COLUMN prev_cert_until BIGINT;
ALTER TABLE users ADD COLUMN suspended_at BIGINT;
CREATE INDEX agent_logs_time ON agent_logs (created_at)
