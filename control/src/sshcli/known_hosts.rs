//! The known_hosts file that `config-ssh` and `outpost ssh` point OpenSSH at. Control is the
//! source of truth for a workspace's host key (its agent reports it over mTLS), so the proxy
//! writes the current key of the host it is about to connect to before ssh reads the file: a
//! workspace made after `config-ssh`, or deleted and made again with a new key, is checked
//! strictly without a chore or a MITM warning.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// `host key` as one known_hosts line, or None when either is not what it claims to be: the
/// host a DNS name (what `config-ssh` makes), the key `TYPE BASE64` (its comment dropped). Text
/// from the server never adds a line, a marker (`@cert-authority`) or a control character.
fn entry(host: &str, key: &str) -> Option<String> {
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let key = outpost_common::sshkey::parse_public_key(key)
        .ok()?
        .canonical;
    host_ok.then(|| format!("{host} {key}"))
}

/// Replaces every line of `text` for `host` by `host key`; None when that is already so (or
/// when the entry is not a valid one).
fn with_host(text: &str, host: &str, key: &str) -> Option<String> {
    let wanted = entry(host, key)?;
    let mut out = String::with_capacity(text.len() + wanted.len() + 1);
    let mut present = false;
    let mut changed = false;
    for line in text.lines() {
        let names = line.split_whitespace().next().unwrap_or("");
        if names.split(',').any(|n| n == host) {
            if line == wanted && !present {
                present = true;
                out.push_str(line);
                out.push('\n');
            } else {
                changed = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !present {
        out.push_str(&wanted);
        out.push('\n');
        changed = true;
    }
    changed.then_some(out)
}

/// Makes `path` say `host key` (and nothing else for `host`), under a lock so concurrent proxies
/// (a hundred `ssh` at once) never lose each other's update, and with an atomic rename so ssh
/// never reads half a file. Writes nothing when the entry is already right.
pub(crate) fn set(path: &Path, host: &str, key: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::read_to_string(path).is_ok_and(|t| with_host(&t, host, key).is_none()) {
        return Ok(());
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .context("opening the known_hosts lock")?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking known_hosts")?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Some(new) = with_host(&text, host, key) {
        write_atomic(path, new.as_bytes())?;
    }
    Ok(())
}

/// Replaces the whole file (config-ssh: every workspace the user has).
pub(crate) fn replace_all(path: &Path, entries: &[(String, String)]) -> anyhow::Result<()> {
    let mut text = String::new();
    for line in entries.iter().filter_map(|(host, key)| entry(host, key)) {
        text.push_str(&line);
        text.push('\n');
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(path, text.as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        // A real key's public line, its comment dropped (what control stores).
        let (_, public) = outpost_common::sshkey::new_ed25519(&format!("k{n}")).expect("key");
        outpost_common::sshkey::parse_public_key(&public)
            .expect("parses")
            .canonical
    }

    #[test]
    fn adds_replaces_and_keeps_others() {
        let (k1, k2) = (&key(1), &key(2));
        let t = with_host("", "dev.outpost", k1).unwrap_or_default();
        assert_eq!(t, format!("dev.outpost {k1}\n"));
        assert_eq!(with_host(&t, "dev.outpost", k1), None, "already right");
        let t2 = with_host(&t, "dev2.outpost", k2).unwrap_or_default();
        assert_eq!(t2, format!("{t}dev2.outpost {k2}\n"));
        // A stale key (the workspace was made again) is replaced, the other host kept.
        let t3 = with_host(&t2, "dev.outpost", k2).unwrap_or_default();
        assert_eq!(t3, format!("dev2.outpost {k2}\ndev.outpost {k2}\n"));
        // Duplicates and comma lists naming the host go; a host that merely shares a prefix stays.
        let messy = format!("dev.outpost {k1}\nx.outpost,dev.outpost {k1}\ndev.outpost.evil {k1}\ndev.outpost {k2}\ndev.outpost {k2}\n");
        assert_eq!(
            with_host(&messy, "dev.outpost", k2).unwrap_or_default(),
            format!("dev.outpost.evil {k1}\ndev.outpost {k2}\n")
        );
    }

    #[test]
    fn server_text_never_adds_lines_or_markers() {
        let k = key(1);
        // A comment carrying a second line, a CA marker, control characters: only TYPE BASE64.
        let hostile = format!("{k} x\n@cert-authority * {k}\r\u{1b}[2J");
        assert_eq!(
            with_host("", "dev.outpost", &hostile).unwrap_or_default(),
            format!("dev.outpost {k}\n")
        );
        assert_eq!(with_host("", "dev.outpost", "@cert-authority * x"), None);
        assert_eq!(with_host("", "dev.outpost\n* ", &k), None);
        assert_eq!(with_host("", "*", &k), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        replace_all(
            &path,
            &[
                ("a.outpost".into(), hostile.clone()),
                ("b.outpost\n@revoked *".into(), k.clone()),
            ],
        )
        .expect("writes");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("a.outpost {k}\n")
        );
    }

    #[test]
    fn concurrent_setters_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let keys: Vec<String> = (0..16u8).map(key).collect();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                let k = keys[i].clone();
                std::thread::spawn(move || set(&path, &format!("w{i}.outpost"), &k))
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("set");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for (i, k) in keys.iter().enumerate() {
            assert!(text.contains(&format!("w{i}.outpost {k}\n")), "{text}");
        }
        assert_eq!(text.lines().count(), 16);
    }
}
