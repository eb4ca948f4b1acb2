//! Organizations, groups, template restrictions and quota usage.

use super::*;

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: String,
    pub organization_id: String,
    pub organization: String,
    pub name: String,
    pub quota_budget: Option<i64>,
    pub source: String,
    pub members: Vec<String>,
}

const GROUP_SELECT: &str =
    "SELECT g.id, g.organization_id, o.name AS organization, g.name, g.quota_budget, g.source \
     FROM user_groups g JOIN organizations o ON o.id = g.organization_id";

impl Store {
    async fn group_rows(
        &self,
        filter: &str,
        bind: Option<&str>,
        bind2: Option<&str>,
    ) -> Result<Vec<GroupRow>> {
        let sql = format!("{GROUP_SELECT} {filter} ORDER BY o.name, g.name");
        let mut q = sqlx::query(&sql);
        if let Some(b) = bind {
            q = q.bind(b.to_string());
        }
        if let Some(b) = bind2 {
            q = q.bind(b.to_string());
        }
        let rows = q.fetch_all(self.db()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            let members = sqlx::query(
                "SELECT u.username FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 ORDER BY u.username",
            )
            .bind(&id)
            .fetch_all(self.db())
            .await?
            .iter()
            .map(|m| m.try_get::<String, _>("username"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
            out.push(GroupRow {
                id,
                organization_id: r.try_get("organization_id")?,
                organization: r.try_get("organization")?,
                name: r.try_get("name")?,
                quota_budget: r.try_get("quota_budget")?,
                source: r.try_get("source")?,
                members,
            });
        }
        Ok(out)
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupRow>> {
        self.group_rows("", None, None).await
    }

    pub async fn group_by_name(&self, org_id: &str, name: &str) -> Result<Option<GroupRow>> {
        Ok(self
            .group_rows(
                "WHERE g.organization_id = $1 AND g.name = $2",
                Some(org_id),
                Some(name),
            )
            .await?
            .into_iter()
            .next())
    }

    /// The groups `user_id` belongs to.
    pub async fn groups_of(&self, user_id: &str) -> Result<Vec<GroupRow>> {
        self.group_rows(
            "WHERE g.id IN (SELECT group_id FROM group_members WHERE user_id = $1)",
            Some(user_id),
            None,
        )
        .await
    }

    pub async fn create_group(
        &self,
        org_id: &str,
        name: &str,
        quota_budget: Option<i64>,
        source: &str,
    ) -> Result<String> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO user_groups (id, organization_id, name, quota_budget, source, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(name)
        .bind(quota_budget)
        .bind(source)
        .bind(now_ms())
        .execute(self.db())
        .await
        .map_err(|e| unique_to_conflict(e, &format!("a group named {name:?} already exists")))?;
        Ok(id)
    }

    pub async fn set_group_budget(&self, group_id: &str, budget: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE user_groups SET quota_budget = $1 WHERE id = $2")
            .bind(budget)
            .bind(group_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM group_members WHERE group_id = $1",
            "DELETE FROM template_groups WHERE group_id = $1",
            "DELETE FROM user_groups WHERE id = $1",
        ] {
            sqlx::query(sql).bind(group_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// True when the membership changed.
    pub async fn set_group_member(
        &self,
        group_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool> {
        let res = if member {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(group_id)
            .bind(user_id)
            .execute(self.db())
            .await?
        } else {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(group_id)
                .bind(user_id)
                .execute(self.db())
                .await?
        };
        Ok(res.rows_affected() == 1)
    }

    /// Makes `user_id` a member of exactly these identity-provider groups of `org_id` (made as
    /// needed, source `oidc`); local groups are left alone.
    pub async fn set_idp_groups(
        &self,
        org_id: &str,
        user_id: &str,
        names: &[String],
    ) -> Result<()> {
        for name in names {
            if self.group_by_name(org_id, name).await?.is_none() {
                match self.create_group(org_id, name, None, "oidc").await {
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for g in self.groups_of(user_id).await? {
            if g.source == "oidc" && g.organization_id == org_id && !names.contains(&g.name) {
                self.set_group_member(&g.id, user_id, false).await?;
            }
        }
        for name in names {
            if let Some(g) = self.group_by_name(org_id, name).await? {
                self.set_group_member(&g.id, user_id, true).await?;
            }
        }
        Ok(())
    }

    /// The groups a template is restricted to (names); empty: none.
    pub async fn template_groups(&self, template_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT g.id, g.name FROM template_groups t JOIN user_groups g ON g.id = t.group_id WHERE t.template_id = $1 ORDER BY g.name",
        )
        .bind(template_id)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }

    pub async fn set_template_groups(&self, template_id: &str, group_ids: &[String]) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM template_groups WHERE template_id = $1")
            .bind(template_id)
            .execute(&mut *tx)
            .await?;
        for g in group_ids {
            sqlx::query("INSERT INTO template_groups (template_id, group_id) VALUES ($1, $2)")
                .bind(template_id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------ organizations

    /// (id, name) of every organization.
    pub async fn list_organizations(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, name FROM organizations ORDER BY name")
            .fetch_all(self.db())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }

    pub async fn organization_id(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT id FROM organizations WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn create_organization(&self, name: &str) -> Result<String> {
        let id = new_id();
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now_ms())
            .execute(self.db())
            .await
            .map_err(|e| {
                unique_to_conflict(e, &format!("an organization named {name:?} already exists"))
            })?;
        Ok(id)
    }

    pub async fn organization_members(&self, org_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT u.username FROM organization_members m JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1 ORDER BY u.username",
        )
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("username")?)).collect()
    }

    pub async fn set_organization_member(
        &self,
        org_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool> {
        let res = if member {
            sqlx::query(
                "INSERT INTO organization_members (organization_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(org_id)
            .bind(user_id)
            .execute(self.db())
            .await?
        } else {
            sqlx::query(
                "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            )
            .bind(org_id)
            .bind(user_id)
            .execute(self.db())
            .await?
        };
        Ok(res.rows_affected() == 1)
    }

    pub async fn organizations_of(&self, user_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT organization_id FROM organization_members WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(self.db())
                .await?;
        rows.iter()
            .map(|r| Ok(r.try_get("organization_id")?))
            .collect()
    }

    /// The organization (id, name) of a template.
    pub async fn template_organization(&self, template_id: &str) -> Result<(String, String)> {
        let r = sqlx::query(
            "SELECT o.id, o.name FROM templates t JOIN organizations o ON o.id = t.organization_id WHERE t.id = $1",
        )
        .bind(template_id)
        .fetch_one(self.db())
        .await?;
        Ok((r.try_get("id")?, r.try_get("name")?))
    }

    pub async fn set_template_organization(&self, template_id: &str, org_id: &str) -> Result<()> {
        sqlx::query("UPDATE templates SET organization_id = $1 WHERE id = $2")
            .bind(org_id)
            .bind(template_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ quota usage

    /// How many workspaces (not deleted) the user has.
    pub async fn workspace_count(&self, user_id: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM workspaces WHERE owner_id = $1 AND deleted = 0")
                .bind(user_id)
                .fetch_one(self.db())
                .await?
                .try_get::<i64, _>("n")?,
        )
    }

    /// (workspace id, manifest) of the user's workspaces running or starting.
    pub async fn running_manifests(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT w.id, v.manifest FROM workspaces w \
             JOIN workspace_builds b ON b.workspace_id = w.id \
                  AND b.number = (SELECT MAX(b2.number) FROM workspace_builds b2 WHERE b2.workspace_id = w.id) \
             JOIN provisioner_jobs j ON j.build_id = b.id \
             JOIN template_versions v ON v.id = b.template_version_id \
             WHERE w.owner_id = $1 AND w.deleted = 0 AND b.transition = 'start' \
               AND j.status IN ('pending', 'running', 'succeeded')",
        )
        .bind(user_id)
        .fetch_all(self.db())
        .await?;
        let manifests = rows
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("manifest")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(manifests)
    }
}
