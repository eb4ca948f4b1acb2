//! Files only their owner may read.

use std::path::Path;

use anyhow::Context;

/// Writes a file readable only by its owner, atomically: a fresh temporary file (created here
/// with mode 0600, never an existing one, never through a symlink someone planted), synced,
/// then renamed over `path` (a symlink at `path` is replaced, not followed).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A leftover (or planted) temporary file goes first; remove_file never follows a symlink.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn planted_symlinks_are_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let path = dir.path().join("secret.json");
        // Both the temporary name and the target point at the victim.
        std::os::unix::fs::symlink(&victim, dir.path().join("secret.tmp")).expect("symlink");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        write_private(&path, b"s3cret").expect("writes");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"s3cret");
        // A file that existed with wider permissions gets a fresh mode.
        std::fs::write(dir.path().join("secret.tmp"), "x").expect("write");
        std::fs::set_permissions(
            dir.path().join("secret.tmp"),
            std::fs::Permissions::from_mode(0o666),
        )
        .expect("chmod");
        write_private(&path, b"again").expect("writes");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}
