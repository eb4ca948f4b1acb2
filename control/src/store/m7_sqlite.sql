ALTER TABLE bootstrap_tokens ADD COLUMN used_key TEXT
