//! `outpost provisioners list`, `outpost provisioners keys create|list|revoke`.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;
use outpost_api::*;

use super::ctx::*;

#[derive(Subcommand, Debug)]
pub enum ProvisionersCmd {
    /// Daemons seen in the last minute: their key, tags, version and current job.
    List,
    /// Keys for external daemons (`outpost provisioner start --key K`).
    #[command(subcommand)]
    Keys(ProvisionerKeysCmd),
}

#[derive(Subcommand, Debug)]
pub enum ProvisionerKeysCmd {
    /// Make a key (its secret is printed once). Its daemons take only jobs of templates in its
    /// scope whose `[provisioner] tags` they carry.
    Create {
        name: String,
        /// A tag its daemons carry, `KEY=VALUE` (repeat it; at most 6).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Only jobs of templates in this organization.
        #[arg(long = "org")]
        organization: Option<String>,
        /// Only jobs of this template (repeat it).
        #[arg(long = "template")]
        templates: Vec<String>,
    },
    List,
    /// Refuse the key at once; the jobs its daemons hold are retried elsewhere.
    Revoke {
        name: String,
    },
}

fn tags_text(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "(no tags)".into();
    }
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_key(k: &ProvisionerKey) {
    let mut scope = Vec::new();
    if let Some(o) = &k.organization {
        scope.push(format!("organization {o}"));
    }
    if !k.templates.is_empty() {
        scope.push(format!("templates {}", k.templates.join(",")));
    }
    println!(
        "{}  {}  {}{}",
        k.name,
        tags_text(&k.tags),
        if scope.is_empty() {
            "every template".to_string()
        } else {
            scope.join(", ")
        },
        if k.revoked_at.is_some() {
            "  (revoked)"
        } else {
            ""
        }
    );
}

pub(crate) async fn run(ctx: &Ctx, cmd: ProvisionersCmd) -> anyhow::Result<()> {
    let c = ctx.client()?;
    match cmd {
        ProvisionersCmd::List => {
            let ds: Vec<ProvisionerDaemon> = c.get("/api/v1/provisioners").await?;
            ctx.print(&ds, || {
                if ds.is_empty() {
                    println!("No provisioner daemon was seen in the last minute.");
                }
                for d in &ds {
                    println!(
                        "{}  key {}  {}  v{}  {}",
                        d.id,
                        d.key,
                        tags_text(&d.tags),
                        d.version,
                        d.current_job
                            .as_deref()
                            .map(|j| format!("running job {j}"))
                            .unwrap_or_else(|| "idle".into())
                    );
                }
            })
        }
        ProvisionersCmd::Keys(ProvisionerKeysCmd::Create {
            name,
            tags,
            organization,
            templates,
        }) => {
            let mut map = BTreeMap::new();
            for t in &tags {
                let (k, v) = t
                    .split_once('=')
                    .with_context(|| format!("--tag {t:?}: give KEY=VALUE, like env=prod"))?;
                map.insert(k.to_string(), v.to_string());
            }
            let k: ProvisionerKey = c
                .post(
                    "/api/v1/provisioner-keys",
                    &CreateProvisionerKey {
                        name,
                        tags: map,
                        organization,
                        templates,
                    },
                )
                .await?;
            ctx.print(&k, || {
                print_key(&k);
                println!(
                    "Key (shown once): {}\nStart a daemon with: outpost provisioner start --url {} --key KEY --workspaces-dir DIR",
                    k.key.as_deref().unwrap_or(""),
                    c.base()
                );
            })
        }
        ProvisionersCmd::Keys(ProvisionerKeysCmd::List) => {
            let ks: Vec<ProvisionerKey> = c.get("/api/v1/provisioner-keys").await?;
            ctx.print(&ks, || ks.iter().for_each(print_key))
        }
        ProvisionersCmd::Keys(ProvisionerKeysCmd::Revoke { name }) => {
            let k: ProvisionerKey = c
                .delete(&format!(
                    "/api/v1/provisioner-keys/{}",
                    outpost_api::percent_encode(&name)
                ))
                .await?;
            ctx.print(&k, || {
                println!(
                    "Revoked {}: its daemons are refused from now on; the jobs they held are retried elsewhere.",
                    k.name
                )
            })
        }
    }
}
