//! A real Unix account for a test, so the CLI and OpenSSH run as a user would run them: OpenSSH
//! reads `~/.ssh/config` and its default keys from the passwd entry's home, not from `$HOME`, so
//! a test that only sets `$HOME` never sees the user's ssh config and the CLI's options together.
//!
//! The account's passwd home is a fresh directory of the test's (0700, owned by the account); it
//! runs with a cleared environment, as a login would give it. Dropping the account removes it
//! and its home. Creating accounts needs root (as `.ci/run` has); elsewhere the tests that need
//! one say SKIPPED, except under `OUTPOST_CI`, where that is a failure.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::harness::*;

/// useradd and userdel lock /etc/passwd and fail rather than wait: one at a time.
static PASSWD: Mutex<()> = Mutex::new(());

pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    dir: Option<tempfile::TempDir>,
}

impl Account {
    /// A new account `ot<random>`, or None when this process cannot create one (not root).
    pub fn create() -> R<Option<Account>> {
        if !nix::unistd::geteuid().is_root() {
            if std::env::var_os("OUTPOST_CI").is_some() {
                anyhow::bail!("the real-account tests need root (OUTPOST_CI is set)");
            }
            eprintln!("SKIPPED (not root): tests that run the CLI and OpenSSH as a real account");
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("outpost-acct-").tempdir()?;
        let name = format!("ot{}", &uuid_like()[..10]);
        {
            let _g = PASSWD.lock().unwrap_or_else(|p| p.into_inner());
            let o = Command::new("useradd")
                .args(["--no-create-home", "--user-group", "--shell", "/bin/sh"])
                .arg("--home-dir")
                .arg(dir.path())
                .arg(&name)
                .output()?;
            anyhow::ensure!(
                o.status.success(),
                "useradd {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let u = nix::unistd::User::from_name(&name)?
            .ok_or_else(|| anyhow::anyhow!("{name} is not in the passwd database"))?;
        let acct = Account {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            dir: Some(dir),
        };
        anyhow::ensure!(u.dir == acct.home(), "passwd home is {}", u.dir.display());
        std::os::unix::fs::chown(acct.home(), Some(acct.uid), Some(acct.gid))?;
        std::fs::set_permissions(
            acct.home(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        Ok(Some(acct))
    }

    /// The passwd entry's home directory.
    pub fn home(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// `program` as the account: its uid and gid (no supplementary groups), a login's
    /// environment and nothing of ours, started in its home.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("HOME", self.home())
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("SHELL", "/bin/sh")
            .env("LANG", "C.UTF-8")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(self.home())
            .uid(self.uid)
            .gid(self.gid);
        c
    }

    /// The real `outpost` CLI as the account (a copy it can execute when the build directory
    /// is not open to other users).
    pub fn outpost(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(user_bin("outpost"));
        c.args(args);
        c
    }

    /// Runs `c` with `stdin`, returning its output.
    pub fn run(&self, c: Command, stdin: &str) -> R<Output> {
        run_with_stdin(c, stdin)
    }

    /// Runs `c`, requires success, returns stdout.
    pub fn ok(&self, c: Command) -> R<String> {
        let what = format!("{c:?}");
        let o = self.run(c, "")?;
        anyhow::ensure!(
            o.status.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Writes `text` to `rel` under the home, owned by the account.
    pub fn write(&self, rel: &str, text: &str) -> R {
        let path = self.home().join(rel);
        if let Some(dir) = path.parent() {
            self.mkdir(dir)?;
        }
        std::fs::write(&path, text)?;
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid))?;
        Ok(())
    }

    fn mkdir(&self, dir: &Path) -> R {
        if dir.starts_with(self.home()) && !dir.exists() {
            if let Some(p) = dir.parent() {
                self.mkdir(p)?;
            }
            std::fs::create_dir(dir)?;
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))?;
        }
        Ok(())
    }

    /// An ed25519 key pair at `~/.ssh/NAME`, made by the account's own ssh-keygen.
    pub fn keygen(&self, name: &str) -> R<PathBuf> {
        self.mkdir(&self.home().join(".ssh"))?;
        let path = self.home().join(".ssh").join(name);
        let mut c = self.cmd("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path);
        self.ok(c)?;
        Ok(path)
    }

    /// An ssh-agent of the account's, holding `keys`; killed (by pid) when dropped.
    pub fn ssh_agent(&self, keys: &[&Path]) -> R<AccountAgent> {
        let sock = self
            .home()
            .join(format!("agent-{}.sock", &uuid_like()[..8]));
        let mut c = self.cmd("ssh-agent");
        c.args(["-D", "-a"]).arg(&sock).stdout(Stdio::null());
        let child = c.spawn()?;
        let agent = AccountAgent {
            child,
            sock: sock.clone(),
        };
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for k in keys {
            let mut c = self.cmd("ssh-add");
            c.arg("-q").arg(k).env("SSH_AUTH_SOCK", &sock);
            self.ok(c)?;
        }
        Ok(agent)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _g = PASSWD.lock().unwrap_or_else(|p| p.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        // The home goes with the TempDir (we are root).
        drop(self.dir.take());
    }
}

pub struct AccountAgent {
    child: std::process::Child,
    pub sock: PathBuf,
}

impl Drop for AccountAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` from the build directory, or a copy in a directory every account can read when some
/// directory above the build is closed to other users.
pub fn user_bin(name: &str) -> PathBuf {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    let built = bin(name);
    let open = built.ancestors().all(|p| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o001 != 0)
            .unwrap_or(false)
    });
    if open {
        return built;
    }
    let dir = DIR.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("outpost-it-bin-")
            .tempdir()
            .ok()?;
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .ok()?;
        for b in ["outpost", "outpost-agent"] {
            std::fs::copy(bin(b), d.path().join(b)).ok()?;
        }
        Some(d)
    });
    dir.as_ref().map(|d| d.path().join(name)).unwrap_or(built)
}
