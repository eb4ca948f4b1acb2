ALTER TABLE provisioner_jobs ADD COLUMN provisioner_tags TEXT NOT NULL DEFAULT '';
ALTER TABLE provisioner_jobs ADD COLUMN template_id TEXT;
UPDATE provisioner_jobs SET provisioner_tags = COALESCE((SELECT v.provisioner_tags FROM workspace_builds b JOIN template_versions v ON v.id = b.template_version_id WHERE b.id = provisioner_jobs.build_id), ''), template_id = (SELECT v.template_id FROM workspace_builds b JOIN template_versions v ON v.id = b.template_version_id WHERE b.id = provisioner_jobs.build_id)
;
CREATE INDEX provisioner_jobs_pending ON provisioner_jobs (created_at) WHERE status = 'pending'
