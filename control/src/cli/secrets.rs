//! `outpost secrets rotate`: a new key-encryption key, every sealed secret re-sealed with it.
//!
//! Crash-safe: the key file first holds the new key and the old one (either opens what it
//! finds), then every git key in the store and every CA key file is re-sealed, then the old key
//! is dropped from the file. Run it with the server stopped.

use std::path::Path;

use anyhow::Context;

use crate::config::SecretsArgs;
use crate::store::Store;

#[derive(serde::Serialize)]
pub(crate) struct Rotated {
    pub key_id: String,
    pub git_keys: usize,
    pub ca_keys: usize,
    pub message: String,
}

/// Refuses while a server seems to run on this data dir: one holds the data dir's lock (a
/// SQLite server, or replicas sharing the data dir), or the pid in `server.json` is alive.
fn refuse_if_running(data_dir: &Path) -> anyhow::Result<()> {
    if let Ok(f) = std::fs::File::open(data_dir.join("server.lock")) {
        if nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err() {
            anyhow::bail!(
                "a server runs on {}: stop it first (every replica, where replicas share it), then rotate, then start it again",
                data_dir.display()
            );
        }
    }
    let Ok(text) = std::fs::read_to_string(data_dir.join("server.json")) else {
        return Ok(());
    };
    let pid = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["pid"].as_i64())
        .and_then(|p| i32::try_from(p).ok());
    if let Some(pid) = pid {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let ours = pid as u32 == std::process::id();
        if alive && !ours {
            anyhow::bail!(
                "a server (pid {pid}) runs on {}: stop it first, then rotate, then start it again",
                data_dir.display()
            );
        }
    }
    Ok(())
}

pub(crate) async fn rotate(
    data_dir: &Path,
    postgres_url: Option<&str>,
    args: &SecretsArgs,
) -> anyhow::Result<Rotated> {
    refuse_if_running(data_dir)?;
    let mut keys = args.keyring(data_dir)?;
    let from_env = args.key.as_deref().is_some_and(|k| !k.trim().is_empty());
    let new_key = std::env::var("OUTPOST_NEW_SECRETS_KEY").ok();
    if from_env && new_key.is_none() {
        anyhow::bail!(
            "the key comes from OUTPOST_SECRETS_KEY: put the new one (base64 of 32 bytes, e.g. `head -c32 /dev/urandom | base64`) in OUTPOST_NEW_SECRETS_KEY and run this again"
        );
    }
    let url = match postgres_url {
        Some(u) => u.to_string(),
        None => format!("sqlite://{}?mode=rw", data_dir.join("outpost.db").display()),
    };
    let store = Store::connect(&url).await.with_context(|| {
        format!(
            "opening the store ({})",
            postgres_url
                .map(|_| "PostgreSQL")
                .unwrap_or("SQLite in the data dir")
        )
    })?;
    keys.rotate(new_key.as_deref())?;
    let git_keys = crate::secrets::reseal_store(&store, &keys).await?;
    let mut ca_keys = 0;
    for f in crate::ca::key_files(data_dir) {
        let stored =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let plain = keys
            .open(&stored)
            .with_context(|| format!("opening {}", f.display()))?;
        crate::ca::write_private(&f, keys.seal(&plain).as_bytes())?;
        ca_keys += 1;
    }
    if ca_keys > 0 {
        // The CA the replicas share is re-sealed too: this copy is the newer one now.
        crate::ca_share::bump_generation(data_dir)?;
        if store.dialect() == crate::store::Dialect::Postgres {
            crate::ca_share::sync(&store, data_dir)
                .await
                .context("sharing the re-sealed CA with the other replicas")?;
        }
    }
    keys.retire_old()?;
    let message = if from_env {
        format!(
            "re-sealed {git_keys} git key(s) and {ca_keys} CA key(s) with key {}; now set OUTPOST_SECRETS_KEY to the new key (OUTPOST_NEW_SECRETS_KEY) and start the server",
            keys.current_id()
        )
    } else {
        format!(
            "re-sealed {git_keys} git key(s) and {ca_keys} CA key(s) with a new key {} in {}; start the server",
            keys.current_id(),
            keys.source
        )
    };
    Ok(Rotated {
        key_id: keys.current_id().to_string(),
        git_keys,
        ca_keys,
        message,
    })
}
