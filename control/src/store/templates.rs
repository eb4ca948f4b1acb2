//! Templates and their immutable versions.

use super::*;

pub(super) const TEMPLATE_SELECT: &str =
    "SELECT t.id, t.name, t.description, t.active_version_id, t.created_at, t.schedule, t.organization_id, v.version AS active_version \
     FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub active_version_id: Option<String>,
    pub active_version: Option<i64>,
    pub created_at: i64,
    /// The template's schedule settings as JSON (`NULL`: the defaults).
    pub schedule: Option<String>,
    pub organization_id: String,
}

pub(super) const VERSION_SELECT: &str =
    "SELECT v.id, v.template_id, v.version, v.manifest, v.files, v.created_at, t.name AS template_name, \
            t.active_version_id AS active_version_id, u.username AS created_by \
     FROM template_versions v JOIN templates t ON t.id = v.template_id \
     LEFT JOIN users u ON u.id = v.created_by";

#[derive(Debug, Clone)]
pub struct TemplateVersionRow {
    pub id: String,
    pub template_id: String,
    pub template_name: String,
    pub version: i64,
    pub active: bool,
    pub manifest: String,
    pub files: String,
    pub created_at: i64,
    /// The username of who pushed it (none for the built-in templates).
    pub created_by: Option<String>,
}

impl TemplateVersionRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        let id: String = r.try_get("id")?;
        let active: Option<String> = r.try_get("active_version_id")?;
        Ok(TemplateVersionRow {
            active: active.as_deref() == Some(id.as_str()),
            id,
            template_id: r.try_get("template_id")?,
            template_name: r.try_get("template_name")?,
            version: r.try_get("version")?,
            manifest: r.try_get("manifest")?,
            files: r.try_get("files")?,
            created_at: r.try_get("created_at")?,
            created_by: r.try_get("created_by")?,
        })
    }
}

impl Store {
    // ------------------------------------------------------------ templates

    pub async fn template_by_name(&self, name: &str) -> Result<Option<TemplateRow>> {
        let row = sqlx::query(&format!("{TEMPLATE_SELECT} WHERE t.name = $1"))
            .bind(name)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| TemplateRow::from_row(&r)).transpose()?)
    }

    pub async fn template_by_id(&self, id: &str) -> Result<Option<TemplateRow>> {
        let row = sqlx::query(&format!("{TEMPLATE_SELECT} WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| TemplateRow::from_row(&r)).transpose()?)
    }

    pub async fn list_templates(&self) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query(&format!("{TEMPLATE_SELECT} ORDER BY t.name"))
            .fetch_all(self.db())
            .await?;
        Ok(rows
            .iter()
            .map(TemplateRow::from_row)
            .collect::<sqlx::Result<_>>()?)
    }

    /// Adds an immutable version to template `name` (creating the template), optionally making
    /// it the active version. Returns the new version.
    #[allow(clippy::too_many_arguments)]
    pub async fn push_template_version(
        &self,
        name: &str,
        description: &str,
        manifest_json: &str,
        files_json: &str,
        provisioner_tags: &str,
        activate: bool,
        created_by: Option<&str>,
    ) -> Result<TemplateVersionRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let existing = sqlx::query("SELECT id FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let template_id: String = match existing {
            Some(r) => r.try_get("id")?,
            None => {
                let id = new_id();
                sqlx::query(
                    "INSERT INTO templates (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(name)
                .bind(description)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| unique_to_conflict(e, "template was created concurrently; retry"))?;
                id
            }
        };
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM template_versions WHERE template_id = $1",
        )
        .bind(&template_id)
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = row.try_get::<i64, _>("v")? + 1;
        let id = new_id();
        sqlx::query(
            "INSERT INTO template_versions (id, template_id, version, manifest, files, created_by, created_at, provisioner_tags) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&template_id)
        .bind(version)
        .bind(manifest_json)
        .bind(files_json)
        .bind(created_by.map(str::to_string))
        .bind(now)
        .bind(provisioner_tags)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_to_conflict(e, "a version was pushed concurrently; retry"))?;
        if activate {
            sqlx::query(
                "UPDATE templates SET active_version_id = $1, description = $2 WHERE id = $3",
            )
            .bind(&id)
            .bind(description)
            .bind(&template_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.template_version(&id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Makes version `version` of the template its active one; the version, or `NotFound`.
    pub async fn activate_template_version(
        &self,
        template_id: &str,
        version: i64,
    ) -> Result<TemplateVersionRow> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM template_versions WHERE template_id = $1 AND version = $2",
        )
        .bind(template_id)
        .bind(version)
        .fetch_optional(self.db())
        .await?;
        let id = id.ok_or(StoreError::NotFound)?;
        let v = self
            .template_version(&id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let manifest: serde_json::Value =
            serde_json::from_str(&v.manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let description = manifest["description"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        sqlx::query("UPDATE templates SET active_version_id = $1, description = $2 WHERE id = $3")
            .bind(&id)
            .bind(description)
            .bind(template_id)
            .execute(self.db())
            .await?;
        self.template_version(&id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// The template's workspaces (not deleted) whose latest build used another version than the
    /// active one: (owner's username, workspace name, version).
    pub async fn outdated_workspaces(
        &self,
        template_id: &str,
    ) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT u.username AS owner, w.name AS name, v.version AS version \
             FROM workspaces w JOIN users u ON u.id = w.owner_id \
             JOIN templates t ON t.id = w.template_id \
             JOIN workspace_builds b ON b.workspace_id = w.id \
               AND b.number = (SELECT MAX(number) FROM workspace_builds WHERE workspace_id = w.id) \
             JOIN template_versions v ON v.id = b.template_version_id \
             WHERE w.template_id = $1 AND w.deleted = 0 \
               AND t.active_version_id IS NOT NULL AND b.template_version_id <> t.active_version_id \
             ORDER BY u.username, w.name LIMIT 1000",
        )
        .bind(template_id)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("owner")?,
                    r.try_get("name")?,
                    r.try_get("version")?,
                ))
            })
            .collect()
    }

    pub async fn template_version(&self, id: &str) -> Result<Option<TemplateVersionRow>> {
        let row = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| TemplateVersionRow::from_row(&r)).transpose()
    }

    pub async fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersionRow>> {
        let rows = sqlx::query(&format!(
            "{VERSION_SELECT} WHERE v.template_id = $1 ORDER BY v.version"
        ))
        .bind(template_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(TemplateVersionRow::from_row).collect()
    }
}
