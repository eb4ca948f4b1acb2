//! Peers from outside Outpost that tests stand up: an ssh-agent, a git daemon, git itself,
//! and files handed to a workspace's user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{eventually, R};

/// An ssh-agent on a socket in `dir` holding `key`; killed when dropped.
pub struct SshAgent {
    child: Child,
    pub sock: PathBuf,
}

impl SshAgent {
    pub fn start(dir: &Path, key: &Path) -> R<SshAgent> {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()?;
        for _ in 0..50 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &sock)
            .status()?;
        anyhow::ensure!(st.success(), "ssh-add failed");
        Ok(SshAgent { child, sock })
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git's options for tests: a fixed identity and `main` as the default branch.
pub const GIT_IDENTITY: [&str; 6] = [
    "-c",
    "user.email=t@example.com",
    "-c",
    "user.name=t",
    "-c",
    "init.defaultBranch=main",
];

/// `git ARGS` in `dir` with [`GIT_IDENTITY`]; fails on error.
pub fn git(args: &[&str], dir: &Path) -> R {
    let o = Command::new("git")
        .args(GIT_IDENTITY)
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Gives `path` and everything under it to the owner of the workspace home `home`: what a test
/// puts into a home stands for what the workspace's user made there (with isolation the
/// workspace runs as a user of its own, and git refuses repositories of other owners).
pub fn give_to_home_owner(path: &Path, home: &Path) -> R {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(home)?;
    fn walk(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        if p.symlink_metadata()?.is_dir() {
            for e in std::fs::read_dir(p)?.flatten() {
                walk(&e.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(path, md.uid(), md.gid())?;
    Ok(())
}

/// `git daemon` serving the bare repositories in `base` read-only on loopback: a git host any
/// workspace user may clone from (`git://127.0.0.1:PORT/NAME.git`). Killed when dropped.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> R<GitDaemon> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // The daemon itself, not `git daemon`: killing the wrapper would leave it running.
        let exec_path = Command::new("git").arg("--exec-path").output()?;
        let daemon =
            Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(daemon)
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let d = GitDaemon { child, port };
        eventually(|| {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ()))
        })?;
        Ok(d)
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
