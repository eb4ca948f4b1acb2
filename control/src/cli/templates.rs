//! Template commands: push a directory as a new version, list, show.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use outpost_api::*;

use super::ctx::*;
use crate::config::*;

pub(crate) async fn templates(ctx: &Ctx, cmd: TemplatesCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TemplatesCmd::Push {
            dir,
            name,
            no_activate,
            organization,
        } => {
            let name = match name {
                Some(n) => n,
                None => dir
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .context("cannot tell the template's name from the directory: pass --name")?,
            };
            let files = read_template_dir(&dir)?;
            let v: TemplateVersion = client
                .post(
                    "/api/v1/templates/push",
                    &PushTemplateRequest {
                        name,
                        files,
                        activate: !no_activate,
                        organization,
                    },
                )
                .await?;
            ctx.print(&v, || {
                println!(
                    "pushed {} v{}{} ({} files)",
                    v.template_name,
                    v.version,
                    if v.active { ", now active" } else { "" },
                    v.files.len()
                )
            })
        }
        TemplatesCmd::List => {
            let list: Vec<Template> = client.get("/api/v1/templates").await?;
            ctx.print(&list, || {
                let mut rows = vec![["NAME", "ACTIVE", "DESCRIPTION"].map(String::from).to_vec()];
                for t in &list {
                    rows.push(vec![
                        t.name.clone(),
                        t.active_version
                            .map(|v| format!("v{v}"))
                            .unwrap_or_else(|| "-".into()),
                        t.description.clone(),
                    ]);
                }
                print_table(rows);
            })
        }
        TemplatesCmd::Show { name } => {
            let d: TemplateDetail = client.get(&format!("/api/v1/templates/{name}")).await?;
            ctx.print(&d, || {
                println!("Template  {}: {}", d.template.name, d.template.description);
                println!(
                    "Access    organization {}{}",
                    d.template.organization,
                    if d.template.groups.is_empty() {
                        String::new()
                    } else {
                        format!(", groups {}", d.template.groups.join(", "))
                    }
                );
                super::schedule::print_template_schedule(&d.template.schedule);
                println!("Versions");
                for v in &d.versions {
                    println!(
                        "  v{}{}  by {}  provisioner={}  parameters: {}",
                        v.version,
                        if v.active { " (active)" } else { "" },
                        v.created_by.as_deref().unwrap_or("(built in)"),
                        v.manifest.provisioner,
                        v.manifest
                            .parameters
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            })
        }
        TemplatesCmd::Activate { name, number } => {
            let v: TemplateVersion = client
                .post(
                    &format!(
                        "/api/v1/templates/{}/versions/{number}/activate",
                        outpost_api::percent_encode(&name)
                    ),
                    &serde_json::json!({}),
                )
                .await?;
            ctx.print(&v, || {
                println!(
                    "template {name}: version {} is active; new workspaces use it, and `outpost update NAME` moves a workspace to it",
                    v.version
                )
            })
        }
        TemplatesCmd::Edit(_) => bail!("handled by `outpost templates edit`"),
        TemplatesCmd::Groups { name, groups } => {
            let groups: Vec<String> = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            let t: Template = client
                .put(
                    &format!(
                        "/api/v1/templates/{}/groups",
                        outpost_api::percent_encode(&name)
                    ),
                    &SetTemplateGroupsRequest { groups },
                )
                .await?;
            ctx.print(&t, || {
                if t.groups.is_empty() {
                    println!("{}: open to everyone in {}", t.name, t.organization)
                } else {
                    println!("{}: only for {}", t.name, t.groups.join(", "))
                }
            })
        }
    }
}

/// Reads a template directory (UTF-8 files, at most 8 MiB in all, no symlinks out of it).
pub(crate) fn read_template_dir(dir: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for e in entries {
            let e = e?;
            let path = e.path();
            let ft = e.file_type()?;
            let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            if rel.starts_with('.') || rel.contains("/.") {
                continue;
            }
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let content = std::fs::read_to_string(&path).with_context(|| {
                    format!("{}: template files must be UTF-8 text", path.display())
                })?;
                total += content.len();
                if total > crate::server::TEMPLATE_BODY_LIMIT / 2 {
                    bail!(
                        "the template directory is larger than {} bytes",
                        crate::server::TEMPLATE_BODY_LIMIT / 2
                    );
                }
                files.insert(rel, content);
            }
        }
    }
    if !files.contains_key(crate::template::MANIFEST_FILE) {
        bail!("{} has no template.toml", dir.display());
    }
    Ok(files)
}
