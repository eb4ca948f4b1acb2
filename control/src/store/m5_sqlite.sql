CREATE TABLE user_git_keys (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
)
