//! One CA for every replica on a PostgreSQL database: agents started by one replica present
//! their certificates to another, and replicas prove themselves to each other with certificates
//! of that CA. The CA's files (`ca.crt`, the sealed `ca.key`, and a staged `ca-next.*` or a
//! trusted `ca-prev.crt`) live in the store as one setting with a generation number; each data
//! dir keeps a copy and the generation it holds (`ca.generation`). At start a replica takes
//! the newer side: the store's, or its own after `outpost ca rotate|promote|retire` (which bump
//! the local generation). Key files stay sealed with the secrets key, which replicas share.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::store::Store;

const SETTING: &str = "cluster.ca";
const FILES: [&str; 5] = [
    "ca.crt",
    "ca.key",
    "ca-next.crt",
    "ca-next.key",
    "ca-prev.crt",
];
const GENERATION: &str = "ca.generation";

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Shared {
    generation: u64,
    files: BTreeMap<String, String>,
}

/// The generation of the CA files in `dir` (0: never shared).
pub fn local_generation(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(GENERATION))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The CA files in `dir` changed (a rotation step): the next start shares them.
pub fn bump_generation(dir: &Path) -> anyhow::Result<()> {
    let next = local_generation(dir) + 1;
    std::fs::write(dir.join(GENERATION), next.to_string())
        .with_context(|| format!("writing {}", dir.join(GENERATION).display()))
}

fn read_local(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for name in FILES {
        let p = dir.join(name);
        if p.exists() {
            files.insert(
                name.to_string(),
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
            );
        }
    }
    Ok(files)
}

fn write_local(dir: &Path, shared: &Shared) -> anyhow::Result<()> {
    for name in FILES {
        let p = dir.join(name);
        match shared.files.get(name) {
            Some(body) => crate::ca::write_private(&p, body.as_bytes())?,
            None if p.exists() => {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?
            }
            None => {}
        }
    }
    std::fs::write(dir.join(GENERATION), shared.generation.to_string())?;
    Ok(())
}

/// Brings `dir`'s CA files and the store's to the same generation (PostgreSQL only; call
/// after the CA exists in `dir`). Several replicas starting at once take turns.
pub async fn sync(store: &Store, dir: &Path) -> anyhow::Result<()> {
    let _turn = store.cluster_turn().await?;
    let local = Shared {
        generation: local_generation(dir),
        files: read_local(dir)?,
    };
    let stored: Option<Shared> = match store.setting(SETTING).await? {
        Some(v) => Some(serde_json::from_str(&v).context("the shared CA in the store")?),
        None => None,
    };
    match stored {
        None => {
            // The first replica (or a server that ran alone until now) shares its CA.
            let first = Shared {
                generation: local.generation.max(1),
                files: local.files,
            };
            store
                .set_setting(SETTING, &serde_json::to_string(&first)?)
                .await?;
            std::fs::write(dir.join(GENERATION), first.generation.to_string())?;
            tracing::info!(generation = first.generation, "shared this replica's CA");
        }
        Some(s) if local.generation > s.generation => {
            let mine = Shared {
                generation: local.generation,
                files: local.files,
            };
            store
                .set_setting(SETTING, &serde_json::to_string(&mine)?)
                .await?;
            tracing::info!(
                generation = mine.generation,
                "shared this replica's CA change (restart the other replicas to take it)"
            );
        }
        Some(s) if s != local => {
            if local.generation == 0 && !local.files.is_empty() {
                tracing::warn!(
                    "this data dir's own CA is replaced by the one the other replicas share"
                );
            }
            write_local(dir, &s)?;
            tracing::info!(generation = s.generation, "took the replicas' shared CA");
        }
        Some(_) => {}
    }
    Ok(())
}
