//! `outpost server backup FILE` and `outpost server restore FILE`: one tar file (0600) with
//! what a server's data dir holds that cannot be made again: the SQLite store (a consistent
//! online copy through SQLite's `VACUUM INTO`, taken while the server runs), the CA's files
//! (their keys sealed), and only when asked the secrets key that unseals them (by default it
//! stays apart, as it should: a backup alone opens nothing). On PostgreSQL the database is
//! backed up with `pg_dump` (README, "Backups") and this file carries the rest.
//!
//! A restore goes into a new (or empty) data dir and checks that the CA opens with the secrets
//! key it will run with before it is done; a failed restore leaves nothing behind.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::SecretsArgs;

/// `outpost server backup|restore`.
#[derive(Subcommand, Debug, Clone)]
pub enum ServerAction {
    /// Write a backup of the data dir to FILE, online (the server may be running).
    Backup {
        file: PathBuf,
        #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
        data_dir: PathBuf,
        /// The store is PostgreSQL: back it up with pg_dump; FILE gets the data dir's files.
        #[arg(long, env = "OUTPOST_POSTGRES_URL")]
        postgres_url: Option<String>,
        /// Put the secrets key in the backup too (then the file alone opens every secret: keep
        /// it as safe as the key).
        #[arg(long)]
        with_secrets_key: bool,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Restore a backup into a new or empty data dir, then start the server on it.
    Restore {
        file: PathBuf,
        #[arg(long, env = "OUTPOST_DATA_DIR", default_value = ".outpost")]
        data_dir: PathBuf,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
}

/// The CA files a data dir may hold (the signing CA, a staged next one, a retiring previous).
const CA_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "ca-next.crt",
    "ca-next.key",
    "ca-prev.crt",
];
const MANIFEST: &str = "outpost-backup.json";
const DB: &str = "outpost.db";
const KEY: &str = "secrets.key";

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: u32,
    version: String,
    created_at: i64,
    /// "sqlite" (the store is in the file) or "postgres" (it is not).
    store: String,
    files: Vec<String>,
}

/// What happened, for the CLI to print (or `--json`).
#[derive(serde::Serialize)]
pub struct Report {
    pub file: String,
    pub files: Vec<String>,
    pub message: String,
}

pub async fn run(action: ServerAction) -> anyhow::Result<Report> {
    match action {
        ServerAction::Backup {
            file,
            data_dir,
            postgres_url,
            with_secrets_key,
            secrets,
        } => {
            backup(
                &file,
                &data_dir,
                postgres_url.is_some(),
                with_secrets_key,
                &secrets,
            )
            .await
        }
        ServerAction::Restore {
            file,
            data_dir,
            secrets,
        } => restore(&file, &data_dir, &secrets),
    }
}

async fn backup(
    file: &Path,
    data_dir: &Path,
    postgres: bool,
    with_key: bool,
    secrets: &SecretsArgs,
) -> anyhow::Result<Report> {
    if !data_dir.join("ca.crt").exists() {
        bail!(
            "{} has no CA (ca.crt): is it a server's data dir? (--data-dir or OUTPOST_DATA_DIR)",
            data_dir.display()
        );
    }
    // Write next to the target, then rename: a failed backup leaves no half file.
    let tmp = file.with_extension("partial");
    let copy = file.with_extension("db-partial");
    let r = write_backup(file, &tmp, &copy, data_dir, postgres, with_key, secrets).await;
    let _ = std::fs::remove_file(&copy);
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn write_backup(
    file: &Path,
    tmp: &Path,
    copy: &Path,
    data_dir: &Path,
    postgres: bool,
    with_key: bool,
    secrets: &SecretsArgs,
) -> anyhow::Result<Report> {
    let mut files = Vec::new();
    if !postgres {
        let db = data_dir.join(DB);
        if !db.exists() {
            bail!(
                "{} has no {DB}; for a PostgreSQL store pass --postgres-url",
                data_dir.display()
            );
        }
        let _ = std::fs::remove_file(copy);
        crate::store::sqlite_snapshot(&db, copy)
            .await
            .with_context(|| format!("copying {} (online, through SQLite)", db.display()))?;
        files.push((DB.to_string(), copy.to_path_buf()));
    }
    for name in CA_FILES {
        let p = data_dir.join(name);
        if p.exists() {
            files.push((name.to_string(), p));
        }
    }
    if with_key {
        let key = secrets
            .key_file
            .clone()
            .unwrap_or_else(|| crate::secrets::Keyring::default_file(data_dir));
        if secrets.key.is_some() {
            bail!("the secrets key comes from OUTPOST_SECRETS_KEY: it lives in your secret manager, not in a backup (leave out --with-secrets-key)");
        }
        if !key.exists() {
            bail!("no secrets key at {}", key.display());
        }
        files.push((KEY.to_string(), key));
    }
    let manifest = Manifest {
        format: 1,
        version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: crate::store::now_ms(),
        store: if postgres { "postgres" } else { "sqlite" }.to_string(),
        files: files.iter().map(|(n, _)| n.clone()).collect(),
    };
    {
        let out = create_private(tmp)?;
        let mut tar = tar::Builder::new(out);
        let m = serde_json::to_vec_pretty(&manifest)?;
        let mut h = tar::Header::new_gnu();
        h.set_size(m.len() as u64);
        h.set_mode(0o600);
        h.set_mtime((manifest.created_at / 1000) as u64);
        h.set_cksum();
        tar.append_data(&mut h, MANIFEST, m.as_slice())?;
        for (name, path) in &files {
            let mut f =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            tar.append_file(name, &mut f)?;
        }
        tar.into_inner()?.sync_all()?;
    }
    std::fs::rename(tmp, file).with_context(|| format!("writing {}", file.display()))?;
    let mut message = format!(
        "backed up {} to {}",
        manifest.files.join(", "),
        file.display()
    );
    if postgres {
        message.push_str("; the PostgreSQL database is not in it: back it up with `pg_dump -Fc` (README, Backups)");
    }
    if !with_key {
        message.push_str("; the secrets key is not in it (keep it apart; a restore needs it: --secrets-key-file or OUTPOST_SECRETS_KEY)");
    }
    Ok(Report {
        file: file.display().to_string(),
        files: manifest.files,
        message,
    })
}

fn restore(file: &Path, data_dir: &Path, secrets: &SecretsArgs) -> anyhow::Result<Report> {
    let empty = match std::fs::read_dir(data_dir) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", data_dir.display())),
    };
    if !empty {
        bail!(
            "{} is not empty: restore into a new data dir (or move this one away first)",
            data_dir.display()
        );
    }
    let made = !data_dir.exists();
    let r = restore_into(file, data_dir, secrets);
    if r.is_err() {
        // Leave nothing behind: the dir as it was (absent, or empty).
        if made {
            let _ = std::fs::remove_dir_all(data_dir);
        } else if let Ok(d) = std::fs::read_dir(data_dir) {
            for e in d.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    r
}

fn restore_into(file: &Path, data_dir: &Path, secrets: &SecretsArgs) -> anyhow::Result<Report> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = tar::Archive::new(f);
    std::fs::create_dir_all(data_dir)?;
    std::fs::set_permissions(
        data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let mut manifest: Option<Manifest> = None;
    let mut files = Vec::new();
    let allowed: Vec<&str> = CA_FILES.iter().copied().chain([DB, KEY]).collect();
    for entry in archive.entries().with_context(|| {
        format!(
            "{} is not an Outpost backup (not a tar file)",
            file.display()
        )
    })? {
        let mut entry = entry.with_context(|| format!("{} is damaged", file.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == MANIFEST {
            let mut b = Vec::new();
            entry.by_ref().take(1 << 20).read_to_end(&mut b)?;
            manifest = Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("{} has a damaged manifest", file.display()))?,
            );
            continue;
        }
        // Only the names a backup writes, flat in the data dir: nothing else is unpacked.
        if !allowed.contains(&name.as_str()) {
            bail!(
                "{} holds {name:?}, which no Outpost backup has",
                file.display()
            );
        }
        let dest = data_dir.join(&name);
        let mut out = create_private(&dest)?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| format!("{} is damaged (at {name})", file.display()))?;
        out.sync_all()?;
        files.push(name);
    }
    let manifest = manifest.with_context(|| {
        format!(
            "{} is not an Outpost backup (no {MANIFEST})",
            file.display()
        )
    })?;
    if manifest.format != 1 {
        bail!("{} is a backup of format {}, newer than this outpost ({}): restore it with that version", file.display(), manifest.format, env!("CARGO_PKG_VERSION"));
    }
    for f in &manifest.files {
        if !files.contains(f) {
            bail!("{} is incomplete: {f} is missing", file.display());
        }
    }
    // The CA must open with the key the server will run with.
    let keys = secrets
        .keyring(data_dir)
        .context("loading the secrets key (--secrets-key-file or OUTPOST_SECRETS_KEY)")?;
    if let Err(e) = crate::ca::CaSet::load(data_dir, &keys) {
        bail!(
            "the backup's CA does not open with this secrets key ({e:#}): pass the key the backed-up server ran with (--secrets-key-file FILE or OUTPOST_SECRETS_KEY)"
        );
    }
    let mut message = format!("restored {} into {}", files.join(", "), data_dir.display());
    if manifest.store == "postgres" {
        message.push_str("; restore the database with `pg_restore` (README, Backups), then start the server with --postgres-url");
    } else {
        message.push_str(&format!(
            "; start it with `outpost server --data-dir {}`",
            data_dir.display()
        ));
    }
    Ok(Report {
        file: file.display().to_string(),
        files,
        message,
    })
}

/// A new file only its owner reads (0600), never through a symlink; a leftover at the path
/// (a failed earlier attempt) is replaced.
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}
