//! Users and API tokens.

use super::*;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub admin: bool,
    pub created_at: i64,
    /// Set by an admin: no sign-in, no token works, no workspace runs.
    pub suspended_at: Option<i64>,
    /// The user's own quiet hours (`CRON_TZ=ZONE MIN HOUR * * *`), when set.
    pub quiet_hours: Option<String>,
    /// Roles beyond member's (`owner` exactly when `admin`).
    pub roles: Vec<outpost_api::Role>,
    /// Deleted by an admin (the row stays, renamed `deleted-ID`, while their workspaces go).
    pub deleted_at: Option<i64>,
    /// The account's dotfiles repository: the `dotfiles_uri` of templates that have one when
    /// the user gives none.
    pub dotfiles_uri: Option<String>,
}

/// Roles as stored: comma-separated names.
fn roles_text(roles: &[outpost_api::Role]) -> String {
    let mut r: Vec<outpost_api::Role> = roles.to_vec();
    r.sort();
    r.dedup();
    r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

impl UserRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(UserRow {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            password_hash: r.try_get("password_hash")?,
            admin: flag(r, "is_admin")?,
            created_at: r.try_get("created_at")?,
            suspended_at: r.try_get("suspended_at")?,
            quiet_hours: r.try_get("quiet_hours")?,
            roles: r
                .try_get::<String, _>("roles")?
                .split(',')
                .filter_map(outpost_api::Role::parse)
                .collect(),
            deleted_at: r.try_get("deleted_at")?,
            dotfiles_uri: r.try_get("dotfiles_uri")?,
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// `workspace:<id>` for the short-lived tokens agents hand to the CLI inside a workspace.
    pub scope: Option<String>,
}

impl Store {
    // ------------------------------------------------------------ users and tokens

    pub async fn count_users(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.db())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user. With `only_if_first`, fails with Conflict unless there are no users yet
    /// (atomically: two concurrent setups cannot both win).
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        admin: bool,
        only_if_first: bool,
    ) -> Result<UserRow> {
        let id = new_id();
        let now = now_ms();
        let sql = if only_if_first {
            "INSERT INTO users (id, username, password_hash, is_admin, created_at, roles) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM users)"
        } else {
            "INSERT INTO users (id, username, password_hash, is_admin, created_at, roles) VALUES ($1, $2, $3, $4, $5, $6)"
        };
        let roles = if admin {
            vec![outpost_api::Role::Owner]
        } else {
            Vec::new()
        };
        let res = sqlx::query(sql)
            .bind(&id)
            .bind(username)
            .bind(password_hash)
            .bind(b(admin))
            .bind(now)
            .bind(roles_text(&roles))
            .execute(self.db())
            .await
            .map_err(|e| unique_to_conflict(e, &format!("user {username:?} already exists")))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict("the first user already exists".into()));
        }
        // Every user belongs to the default organization.
        sqlx::query(
            "INSERT INTO organization_members (organization_id, user_id) VALUES ('default', $1) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .execute(self.db())
        .await?;
        Ok(UserRow {
            id,
            username: username.to_string(),
            password_hash: password_hash.to_string(),
            admin,
            created_at: now,
            suspended_at: None,
            quiet_hours: None,
            roles,
            deleted_at: None,
            dotfiles_uri: None,
        })
    }

    /// Suspends (`Some(now)`) or reinstates (`None`) a user; a suspension also revokes every
    /// token the user has. False when there is no such user.
    pub async fn set_suspended(&self, user_id: &str, at: Option<i64>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let res = sqlx::query("UPDATE users SET suspended_at = $1 WHERE id = $2")
            .bind(at)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if let Some(t) = at {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(t)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// Sets a user's roles (`owner` also sets the admin flag).
    pub async fn set_roles(&self, user_id: &str, roles: &[outpost_api::Role]) -> Result<bool> {
        let res = sqlx::query("UPDATE users SET roles = $1, is_admin = $2 WHERE id = $3")
            .bind(roles_text(roles))
            .bind(b(roles.contains(&outpost_api::Role::Owner)))
            .bind(user_id)
            .execute(self.db())
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks a user deleted: the row is renamed `deleted-ID` (so the name is free at once; a
    /// real username has at most 32 characters, so it never collides), and every token is
    /// revoked. False when there is no such live user.
    pub async fn mark_user_deleted(&self, user_id: &str, now: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "UPDATE users SET deleted_at = $1, username = $2 WHERE id = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(format!("deleted-{user_id}"))
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// Sets a user's password hash and revokes every token of theirs but `keep` (the caller's
    /// own, when they change their own password).
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3",
        )
        .bind(now_ms())
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or clears) the account's dotfiles repository.
    pub async fn set_dotfiles(&self, user_id: &str, uri: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET dotfiles_uri = $1 WHERE id = $2")
            .bind(uri.map(str::to_string))
            .bind(user_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Every user not deleted, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query("SELECT * FROM users WHERE deleted_at IS NULL ORDER BY username")
            .fetch_all(self.db())
            .await?;
        rows.iter().map(UserRow::from_row).collect()
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| UserRow::from_row(&r)).transpose()
    }

    /// The user linked to an identity-provider identity (`issuer` + `subject`).
    pub async fn user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query(
            "SELECT u.* FROM user_identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| UserRow::from_row(&r)).transpose()
    }

    /// Links an identity-provider identity to a user (Conflict when it is linked already).
    pub async fn link_identity(&self, issuer: &str, subject: &str, user_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(user_id)
        .bind(now_ms())
        .execute(self.db())
        .await
        .map_err(|e| unique_to_conflict(e, "this identity is linked to another user"))?;
        Ok(())
    }

    pub async fn create_token(
        &self,
        user_id: &str,
        name: &str,
        secret_hash: &str,
        expires_at: i64,
    ) -> Result<TokenRow> {
        let row = TokenRow {
            id: new_id_short(),
            user_id: user_id.to_string(),
            name: name.to_string(),
            secret_hash: secret_hash.to_string(),
            created_at: now_ms(),
            expires_at,
            last_used_at: None,
            revoked_at: None,
            scope: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.user_id)
        .bind(&row.name)
        .bind(&row.secret_hash)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(self.db())
        .await?;
        Ok(row)
    }

    /// The token and its user, whatever the token's state (the caller checks expiry/revocation).
    pub async fn token_with_user(&self, token_id: &str) -> Result<Option<(TokenRow, UserRow)>> {
        let row = sqlx::query(
            "SELECT t.id AS t_id, t.user_id AS t_user_id, t.name AS t_name, t.secret_hash AS t_secret_hash, \
                    t.created_at AS t_created_at, t.expires_at AS t_expires_at, t.last_used_at AS t_last_used_at, \
                    t.revoked_at AS t_revoked_at, t.scope AS t_scope, u.* \
             FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
        )
        .bind(token_id)
        .fetch_optional(self.db())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let t = TokenRow {
            id: r.try_get("t_id")?,
            user_id: r.try_get("t_user_id")?,
            name: r.try_get("t_name")?,
            secret_hash: r.try_get("t_secret_hash")?,
            created_at: r.try_get("t_created_at")?,
            expires_at: r.try_get("t_expires_at")?,
            last_used_at: r.try_get("t_last_used_at")?,
            revoked_at: r.try_get("t_revoked_at")?,
            scope: r.try_get("t_scope")?,
        };
        Ok(Some((t, UserRow::from_row(&r)?)))
    }

    /// Marks a token as scoped to a workspace (its own user's operations only: no admin rights,
    /// no new tokens).
    pub async fn scope_token(&self, token_id: &str, scope: &str) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET scope = $1 WHERE id = $2")
            .bind(scope)
            .bind(token_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn touch_token(&self, token_id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT * FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(user_id)
        .fetch_all(self.db())
        .await?;
        Ok(rows
            .iter()
            .map(TokenRow::from_row)
            .collect::<sqlx::Result<_>>()?)
    }

    pub async fn revoke_token(&self, user_id: &str, token_id: &str) -> Result<()> {
        let res = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(token_id)
        .bind(user_id)
        .execute(self.db())
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
