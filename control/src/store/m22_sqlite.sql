CREATE INDEX agents_build ON agents (build_id);
CREATE INDEX workspace_resources_build ON workspace_resources (build_id);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
CREATE INDEX organization_members_user ON organization_members (user_id)
