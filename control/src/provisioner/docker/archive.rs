//! What the docker provisioner puts into a container before it starts, as one tar archive
//! uploaded through the Engine API: the workspace user in `/etc/passwd` and `/etc/group`, the
//! home's top directory owned by that user, `/opt/outpost/run/` with the bootstrap bundle
//! (a file, never the environment or command line), the template's files (read-only), and the
//! agent binary when it is not mounted.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

pub const OPT: &str = "opt/outpost";
pub const AGENT_PATH: &str = "/opt/outpost/bin/outpost-agent";
pub const RUN_DIR: &str = "/opt/outpost/run";
pub const TEMPLATE_DIR: &str = "/opt/outpost/template";

/// The account lines to add to the image's files, or an error when the image already gives
/// the name or the uid to someone else.
pub fn account_lines(
    passwd: &str,
    group: &str,
    user: &str,
    uid: u32,
    shell: &str,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let home = format!("/home/{user}");
    let mut add_passwd = true;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let this_uid = f[2].parse::<u32>().ok();
        if f[0] == user {
            if this_uid != Some(uid) {
                bail!(
                    "the image has a user {user} with uid {}; set `uid = {}` in the template's [provisioner]",
                    f[2],
                    f[2]
                );
            }
            if f[5] != home {
                bail!("the image's user {user} has home {}, not {home}", f[5]);
            }
            add_passwd = false;
        } else if this_uid == Some(uid) {
            bail!(
                "uid {uid} belongs to {:?} in the image; set `user = {:?}` (or another uid) in the template's [provisioner]",
                f[0],
                f[0]
            );
        }
    }
    let add_group = !group.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.len() >= 3 && (f[0] == user || f[2].parse::<u32>().ok() == Some(uid))
    });
    let with_newline = |s: &str| {
        if s.is_empty() || s.ends_with('\n') {
            s.to_string()
        } else {
            format!("{s}\n")
        }
    };
    Ok((
        add_passwd.then(|| {
            format!(
                "{}{user}:x:{uid}:{uid}:Outpost workspace user:{home}:{shell}\n",
                with_newline(passwd)
            )
        }),
        add_group.then(|| format!("{}{user}:x:{uid}:\n", with_newline(group))),
    ))
}

/// Builds the archive. `agent` is the agent binary's bytes when it is uploaded (not mounted).
pub struct Archive {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Archive {
    fn default() -> Self {
        Self::new()
    }
}

impl Archive {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Archive { tar }
    }

    pub fn dir(&mut self, path: &str, uid: u32, mode: u32) -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(mode);
        h.set_uid(uid.into());
        h.set_gid(uid.into());
        h.set_mtime(0);
        self.tar
            .append_data(
                &mut h,
                format!("{}/", path.trim_end_matches('/')),
                std::io::empty(),
            )
            .with_context(|| format!("adding {path}"))?;
        Ok(())
    }

    pub fn file(&mut self, path: &str, uid: u32, mode: u32, body: &[u8]) -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid.into());
        h.set_gid(uid.into());
        h.set_mtime(0);
        self.tar
            .append_data(&mut h, path, body)
            .with_context(|| format!("adding {path}"))?;
        Ok(())
    }

    /// The template's files under `opt/outpost/template/`: directories 0555, files 0444 (0555
    /// with a `#!` line), root's.
    pub fn template(&mut self, files: &BTreeMap<String, String>) -> anyhow::Result<()> {
        let root = format!("{OPT}/template");
        self.dir(&root, 0, 0o555)?;
        let mut dirs = std::collections::BTreeSet::new();
        for rel in files.keys() {
            if rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                bail!("template file {rel:?} has an unsafe path");
            }
            let parts: Vec<&str> = rel.split('/').collect();
            for i in 1..parts.len() {
                dirs.insert(parts[..i].join("/"));
            }
        }
        for d in dirs {
            self.dir(&format!("{root}/{d}"), 0, 0o555)?;
        }
        for (rel, body) in files {
            let mode = crate::provisioner::workspace_env::file_mode(body);
            self.file(&format!("{root}/{rel}"), 0, mode, body.as_bytes())?;
        }
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<Vec<u8>> {
        Ok(self.tar.into_inner()?)
    }
}

/// The first file in a tar archive (what the Engine API returns for one path).
pub fn first_file(tar_bytes: &[u8]) -> anyhow::Result<String> {
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries()? {
        let mut e = e?;
        if e.header().entry_type().is_file() {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s)?;
            return Ok(s);
        }
    }
    bail!("the archive holds no file")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn the_workspace_user_is_added_once() {
        let (p, g) = account_lines(PASSWD, "root:x:0:\n", "dev", 1000, "/bin/bash").unwrap();
        let p = p.unwrap();
        assert!(p.ends_with("dev:x:1000:1000:Outpost workspace user:/home/dev:/bin/bash\n"));
        assert!(g.unwrap().ends_with("dev:x:1000:\n"));
        let (p2, g2) =
            account_lines(&p, "root:x:0:\ndev:x:1000:\n", "dev", 1000, "/bin/bash").unwrap();
        assert!(p2.is_none() && g2.is_none());
    }

    #[test]
    fn a_taken_name_or_uid_is_a_clear_error() {
        let e = account_lines(PASSWD, "", "nobody", 1000, "/bin/sh").unwrap_err();
        assert!(e.to_string().contains("uid = 65534"), "{e}");
        let e = account_lines(PASSWD, "", "dev", 65534, "/bin/sh").unwrap_err();
        assert!(e.to_string().contains("user = \"nobody\""), "{e}");
    }

    #[test]
    fn archives_round_trip() {
        let mut a = Archive::new();
        a.file("etc/passwd", 0, 0o644, PASSWD.as_bytes()).unwrap();
        let bytes = a.finish().unwrap();
        assert_eq!(first_file(&bytes).unwrap(), PASSWD);
    }
}
