CREATE TABLE user_identities (issuer TEXT NOT NULL, subject TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES users(id), created_at BIGINT NOT NULL, PRIMARY KEY (issuer, subject));
CREATE INDEX user_identities_user ON user_identities (user_id)
