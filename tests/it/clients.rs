//! Users of a test server as their own CLI sessions (config dir and SSH key each), reaching
//! their workspaces over SSH through control's relay, as `ssh` with `outpost ssh --stdio` as
//! its ProxyCommand.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::harness::*;

pub struct Client {
    pub name: String,
    pub config_dir: PathBuf,
    pub key: PathBuf,
}

impl Client {
    /// The server's first admin, with a fresh SSH key uploaded.
    pub fn admin(s: &Server) -> R<Client> {
        let c = Client {
            name: "admin".into(),
            config_dir: s.config_dir(),
            key: s.dir.path().join("admin_ed25519"),
        };
        c.add_key()?;
        Ok(c)
    }

    /// A new (non-admin) user, signed in, with a fresh SSH key uploaded.
    pub fn new_user(s: &Server, name: &str) -> R<Client> {
        let password = format!("{name}-password-1");
        let o = s.cli_stdin(
            &["users", "create", name, "--password-stdin"],
            &format!("{password}\n"),
        )?;
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c = Client {
            name: name.into(),
            config_dir: s.dir.path().join(format!("cli-{name}")),
            key: s.dir.path().join(format!("{name}_ed25519")),
        };
        let o = run_with_stdin(
            c.command(&["login", &s.url, "--username", name, "--password-stdin"]),
            &format!("{password}\n"),
        )?;
        anyhow::ensure!(
            o.status.success(),
            "login: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        c.add_key()?;
        Ok(c)
    }

    fn add_key(&self) -> R {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&self.key)
            .status()?;
        anyhow::ensure!(st.success(), "ssh-keygen");
        self.ok(&["keys", "add", &format!("{}.pub", self.key.display())])?;
        Ok(())
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("outpost"));
        c.args(args)
            .env("OUTPOST_CONFIG_DIR", &self.config_dir)
            .env_remove("OUTPOST_URL")
            .env_remove("OUTPOST_TOKEN");
        c
    }

    /// `outpost ARGS` as this user; fails unless it succeeds; stdout.
    pub fn ok(&self, args: &[&str]) -> R<String> {
        let o = run_with_stdin(self.command(args), "")?;
        anyhow::ensure!(
            o.status.success(),
            "`outpost {}` as {}: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    pub fn json(&self, args: &[&str]) -> R<serde_json::Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        Ok(serde_json::from_str(&self.ok(&a)?)?)
    }

    /// Runs `cmd` in workspace `ws` over SSH through the relay, as a user would (the
    /// ProxyCommand waits for an agent that is still connecting, and starts a stopped one).
    pub fn ssh(&self, ws: &str, cmd: &str) -> R<Output> {
        Ok(self
            .ssh_command(ws, cmd)
            .stdin(std::process::Stdio::null())
            .output()?)
    }

    /// The `ssh` command [`Client::ssh`] runs (to spawn a session that stays open).
    pub fn ssh_command(&self, ws: &str, cmd: &str) -> Command {
        let mut c = self.ssh_with(&[], ws);
        c.arg(cmd);
        c
    }

    /// `ssh -W TARGET` to the workspace: stdin and stdout are a TCP connection to TARGET
    /// (HOST:PORT) made by the workspace's agent.
    pub fn ssh_stdio_forward(&self, ws: &str, target: &str) -> Command {
        self.ssh_with(&["-W", target], ws)
    }

    fn ssh_with(&self, extra: &[&str], ws: &str) -> Command {
        let proxy = format!("{} ssh --stdio %h", bin("outpost").display());
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            &format!("ProxyCommand={proxy}"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ])
        .arg(&self.key)
        .args(extra)
        .arg(format!("{}@{ws}", self.name))
        .env("OUTPOST_CONFIG_DIR", &self.config_dir);
        c
    }

    /// `ssh` that must succeed; its stdout.
    pub fn sh(&self, ws: &str, cmd: &str) -> R<String> {
        let o = self.ssh(ws, cmd)?;
        anyhow::ensure!(
            o.status.success(),
            "ssh {ws} {cmd:?} as {} ({}): {}{}",
            self.name,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}
