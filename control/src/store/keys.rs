//! SSH keys: users' public keys and the control-held git key.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SshKeyRow {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

impl Store {
    // ------------------------------------------------------------ git SSH keys

    /// The user's git SSH key (private, public), made by `make` on first use.
    pub async fn git_key(
        &self,
        user_id: &str,
        make: impl FnOnce() -> Option<(String, String)>,
    ) -> Result<(String, String)> {
        let get = || async {
            let row =
                sqlx::query("SELECT private_key, public_key FROM user_git_keys WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(self.db())
                    .await?;
            row.map(|r| Ok::<_, StoreError>((r.try_get("private_key")?, r.try_get("public_key")?)))
                .transpose()
        };
        if let Some(k) = get().await? {
            return Ok(k);
        }
        let (private, public) =
            make().ok_or_else(|| StoreError::Corrupt("cannot make a key".into()))?;
        // Two makers at once: the first insert wins and both read it back.
        sqlx::query(
            "INSERT INTO user_git_keys (user_id, private_key, public_key, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(private)
        .bind(public)
        .bind(now_ms())
        .execute(self.db())
        .await?;
        get().await?.ok_or(StoreError::NotFound)
    }

    /// Every user's git private key as stored (sealed, or plain from before sealing).
    pub async fn git_private_keys(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT user_id, private_key FROM user_git_keys")
            .fetch_all(self.db())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("user_id")?, r.try_get("private_key")?)))
            .collect()
    }

    /// Replaces a git private key's stored form, if it is still `old`.
    pub async fn set_git_private_key(&self, user_id: &str, old: &str, new: &str) -> Result<()> {
        sqlx::query(
            "UPDATE user_git_keys SET private_key = $1 WHERE user_id = $2 AND private_key = $3",
        )
        .bind(new)
        .bind(user_id)
        .bind(old)
        .execute(self.db())
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------ SSH

    pub async fn add_ssh_key(
        &self,
        user_id: &str,
        name: &str,
        public_key: &str,
        fingerprint: &str,
    ) -> Result<SshKeyRow> {
        let row = SshKeyRow {
            id: new_id_short(),
            name: name.to_string(),
            public_key: public_key.to_string(),
            fingerprint: fingerprint.to_string(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO user_ssh_keys (id, user_id, name, public_key, fingerprint, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(user_id)
        .bind(name)
        .bind(public_key)
        .bind(fingerprint)
        .bind(row.created_at)
        .execute(self.db())
        .await
        .map_err(|e| unique_to_conflict(e, &format!("you already added the key {fingerprint}")))?;
        Ok(row)
    }

    pub async fn ssh_keys(&self, user_id: &str) -> Result<Vec<SshKeyRow>> {
        let rows =
            sqlx::query("SELECT * FROM user_ssh_keys WHERE user_id = $1 ORDER BY created_at")
                .bind(user_id)
                .fetch_all(self.db())
                .await?;
        rows.iter().map(|r| Ok(SshKeyRow::from_row(r)?)).collect()
    }

    /// The SSH keys of every user with the owner role who may sign in (not suspended, not
    /// deleted), except `but`'s.
    pub async fn owner_ssh_keys(&self, but: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT k.public_key FROM user_ssh_keys k JOIN users u ON u.id = k.user_id \
             WHERE u.is_admin = 1 AND u.suspended_at IS NULL AND u.deleted_at IS NULL \
             AND u.id <> $1 ORDER BY k.created_at",
        )
        .bind(but)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("public_key")?))
            .collect()
    }

    pub async fn remove_ssh_key(&self, user_id: &str, id: &str) -> Result<()> {
        let res = sqlx::query(
            "DELETE FROM user_ssh_keys WHERE user_id = $1 AND (id = $2 OR fingerprint = $2)",
        )
        .bind(user_id)
        .bind(id)
        .execute(self.db())
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
