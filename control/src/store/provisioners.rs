//! Provisioner keys (scoped to an organization or some templates, carrying tags), the daemons
//! seen using them, and what a daemon may take (`JobScope`, used by `acquire_job`).

use super::*;

#[derive(Debug, Clone)]
pub struct ProvisionerKeyRow {
    pub id: String,
    pub name: String,
    /// Canonical `k=v` lines (`outpost_api::canonical_tags`).
    pub tags: String,
    pub organization_id: Option<String>,
    /// Template names (JSON list in the row).
    pub templates: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ProvisionerKeyRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        let templates: String = r.try_get("templates")?;
        Ok(ProvisionerKeyRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            tags: r.try_get("tags")?,
            organization_id: r.try_get("organization_id")?,
            templates: serde_json::from_str(&templates)
                .map_err(|e| StoreError::Corrupt(format!("provisioner key templates: {e}")))?,
            created_at: r.try_get("created_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DaemonRow {
    pub id: String,
    pub key_name: Option<String>,
    pub tags: String,
    pub version: String,
    pub last_seen_at: i64,
    pub current_job: Option<String>,
}

/// What a daemon may take: jobs whose template version needs one of `tag_sets` (canonical
/// tag strings: every subset of the daemon's tags, `""` included), of templates in
/// `organization_id` and named in `templates` when those are set.
#[derive(Debug, Clone, Default)]
pub struct JobScope {
    pub tag_sets: Vec<String>,
    pub organization_id: Option<String>,
    pub templates: Vec<String>,
}

/// `s` as an SQL string literal. Only for values checked to be plain (tags, template names);
/// quotes are doubled all the same.
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl JobScope {
    /// The scope as SQL conditions on `j` (provisioner_jobs, which carry their tags and template).
    pub(super) fn sql(&self) -> String {
        let mut out = String::new();
        let sets: Vec<String> = self.tag_sets.iter().map(|s| literal(s)).collect();
        out.push_str(&format!(
            " AND j.provisioner_tags IN ({})",
            if sets.is_empty() {
                "''".to_string()
            } else {
                sets.join(",")
            }
        ));
        if let Some(org) = &self.organization_id {
            out.push_str(&format!(
                " AND j.template_id IN (SELECT id FROM templates WHERE organization_id = {})",
                literal(org)
            ));
        }
        if !self.templates.is_empty() {
            let names: Vec<String> = self.templates.iter().map(|s| literal(s)).collect();
            out.push_str(&format!(
                " AND j.template_id IN (SELECT id FROM templates WHERE name IN ({}))",
                names.join(",")
            ));
        }
        out
    }
}

impl Store {
    pub async fn create_provisioner_key(
        &self,
        name: &str,
        key_hash: &str,
        tags: &str,
        organization_id: Option<&str>,
        templates: &[String],
    ) -> Result<ProvisionerKeyRow> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO provisioner_keys (id, name, key_hash, tags, organization_id, templates, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(name)
        .bind(key_hash)
        .bind(tags)
        .bind(organization_id.map(str::to_string))
        .bind(serde_json::to_string(templates).unwrap_or_else(|_| "[]".into()))
        .bind(now_ms())
        .execute(self.db())
        .await
        .map_err(|e| unique_to_conflict(e, &format!("a provisioner key named {name:?} exists")))?;
        self.provisioner_key_by_name(name)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn provisioner_key_by_name(&self, name: &str) -> Result<Option<ProvisionerKeyRow>> {
        let row = sqlx::query("SELECT * FROM provisioner_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(ProvisionerKeyRow::from_row).transpose()
    }

    /// The live key with this hash.
    pub async fn provisioner_key_by_hash(&self, hash: &str) -> Result<Option<ProvisionerKeyRow>> {
        let row = sqlx::query(
            "SELECT * FROM provisioner_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(ProvisionerKeyRow::from_row).transpose()
    }

    pub async fn provisioner_keys(&self) -> Result<Vec<ProvisionerKeyRow>> {
        let rows = sqlx::query("SELECT * FROM provisioner_keys ORDER BY name")
            .fetch_all(self.db())
            .await?;
        rows.iter().map(ProvisionerKeyRow::from_row).collect()
    }

    /// Revokes the key; the jobs its daemons hold lose their lease now (the reaper retries
    /// them). Returns the key and how many jobs were let go.
    pub async fn revoke_provisioner_key(&self, name: &str) -> Result<(ProvisionerKeyRow, u64)> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "UPDATE provisioner_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let jobs = sqlx::query(
            "UPDATE provisioner_jobs SET lease_expires_at = $1 WHERE status IN ('running', 'canceling') \
             AND daemon_id IN (SELECT d.id FROM provisioner_daemons d JOIN provisioner_keys k ON k.id = d.key_id WHERE k.name = $2)",
        )
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        let key = self
            .provisioner_key_by_name(name)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok((key, jobs))
    }

    /// Records daemon `id` as seen now, using `key_id` (`None`: the server's own key). A
    /// daemon id already used with another key is refused: a key cannot act for another's
    /// daemons.
    pub async fn daemon_seen(
        &self,
        id: &str,
        key_id: Option<&str>,
        tags: &str,
        version: &str,
    ) -> Result<()> {
        let key = key_id.unwrap_or("");
        let res = sqlx::query(
            "INSERT INTO provisioner_daemons (id, key_id, tags, version, last_seen_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, version = excluded.version, last_seen_at = excluded.last_seen_at \
             WHERE provisioner_daemons.key_id = excluded.key_id",
        )
        .bind(id)
        .bind(key)
        .bind(tags)
        .bind(version)
        .bind(now_ms())
        .execute(self.db())
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the daemon id {id:?} belongs to another provisioner key; give this daemon its own id"
            )));
        }
        Ok(())
    }

    /// The key a daemon uses (`Some("")`: the server's own), if it was seen.
    pub async fn daemon_key(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT key_id FROM provisioner_daemons WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("key_id"))
            .transpose()?
            .map(Option::unwrap_or_default))
    }

    /// Daemons seen within `fresh_ms`, with their key's name and the job they hold.
    pub async fn daemons(&self, fresh_ms: i64) -> Result<Vec<DaemonRow>> {
        let rows = sqlx::query(
            "SELECT d.id, d.tags, d.version, d.last_seen_at, k.name AS key_name, \
             (SELECT j.id FROM provisioner_jobs j WHERE j.daemon_id = d.id AND j.status IN ('running', 'canceling') ORDER BY j.created_at LIMIT 1) AS current_job \
             FROM provisioner_daemons d LEFT JOIN provisioner_keys k ON k.id = d.key_id \
             WHERE d.last_seen_at >= $1 ORDER BY d.id",
        )
        .bind(now_ms() - fresh_ms)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DaemonRow {
                    id: r.try_get("id")?,
                    key_name: r.try_get("key_name")?,
                    tags: r.try_get("tags")?,
                    version: r.try_get("version")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    current_job: r.try_get("current_job")?,
                })
            })
            .collect()
    }
}
