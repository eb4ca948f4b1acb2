ALTER TABLE agents ADD COLUMN prev_cert_serial TEXT;
ALTER TABLE agents ADD COLUMN prev_cert_until BIGINT;
ALTER TABLE users ADD COLUMN suspended_at BIGINT
