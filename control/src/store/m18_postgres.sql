ALTER TABLE template_versions ADD COLUMN provisioner_tags TEXT NOT NULL DEFAULT '';
CREATE TABLE provisioner_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL UNIQUE, tags TEXT NOT NULL, organization_id TEXT, templates TEXT NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE TABLE provisioner_daemons (id TEXT PRIMARY KEY, key_id TEXT, tags TEXT NOT NULL, version TEXT NOT NULL, last_seen_at BIGINT NOT NULL)
