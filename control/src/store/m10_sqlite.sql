CREATE INDEX bootstrap_tokens_workspace ON bootstrap_tokens (workspace_id)
