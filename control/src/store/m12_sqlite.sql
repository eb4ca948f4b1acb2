CREATE TABLE organizations (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL);
INSERT INTO organizations (id, name, created_at) VALUES ('default', 'default', 0);
CREATE TABLE organization_members (organization_id TEXT NOT NULL REFERENCES organizations(id), user_id TEXT NOT NULL REFERENCES users(id), PRIMARY KEY (organization_id, user_id));
INSERT INTO organization_members (organization_id, user_id) SELECT 'default', id FROM users;
ALTER TABLE templates ADD COLUMN organization_id TEXT NOT NULL DEFAULT 'default';
CREATE TABLE user_groups (id TEXT PRIMARY KEY, organization_id TEXT NOT NULL REFERENCES organizations(id), name TEXT NOT NULL, quota_budget BIGINT, source TEXT NOT NULL, created_at BIGINT NOT NULL, UNIQUE (organization_id, name));
CREATE TABLE group_members (group_id TEXT NOT NULL REFERENCES user_groups(id), user_id TEXT NOT NULL REFERENCES users(id), PRIMARY KEY (group_id, user_id));
CREATE INDEX group_members_user ON group_members (user_id);
CREATE TABLE template_groups (template_id TEXT NOT NULL REFERENCES templates(id), group_id TEXT NOT NULL REFERENCES user_groups(id), PRIMARY KEY (template_id, group_id))
