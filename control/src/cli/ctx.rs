//! The signed-in context of a user command (server URL, token, config dir, `--json`) and the
//! helpers every command group prints and prompts with.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use outpost_api::*;

#[derive(serde::Serialize, serde::Deserialize, Default)]
/// What `outpost login` keeps in the config dir (`session.json`): the server and the API token.
pub(crate) struct SavedLogin {
    pub(crate) url: String,
    pub(crate) token: String,
}

/// The server URL of the saved login in `dir` (default ~/.config/outpost), if any.
pub(crate) fn saved_url(dir: Option<&std::path::Path>) -> Option<String> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config/outpost"),
    };
    let b = std::fs::read(dir.join("session.json")).ok()?;
    serde_json::from_slice::<SavedLogin>(&b).ok().map(|s| s.url)
}

pub(crate) struct Ctx {
    pub(crate) json: bool,
    pub(crate) config_dir: PathBuf,
    pub(crate) url: Option<String>,
    token: Option<String>,
}

impl Ctx {
    pub(crate) fn new(
        json: bool,
        url: Option<String>,
        token: Option<String>,
        dir: Option<PathBuf>,
    ) -> anyhow::Result<Ctx> {
        let config_dir = match dir {
            Some(d) => d,
            None => {
                let home =
                    std::env::var_os("HOME").context("HOME is not set; pass --config-dir")?;
                PathBuf::from(home).join(".config").join("outpost")
            }
        };
        let mut saved: Option<SavedLogin> = std::fs::read(config_dir.join("session.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        // Inside a workspace, without a session of its own: the agent hands out a short-lived,
        // workspace-scoped credential (nothing is written to disk).
        if saved.is_none() && (url.is_none() || token.is_none()) {
            if let Some(sock) = std::env::var_os("OUTPOST_AGENT_SOCKET") {
                saved = workspace_credential(std::path::Path::new(&sock));
            }
        }
        Ok(Ctx {
            json,
            url: url.or_else(|| saved.as_ref().map(|s| s.url.clone())),
            token: token.or_else(|| saved.map(|s| s.token)),
            config_dir,
        })
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let url = self.url.as_deref().context(
            "not signed in: run `outpost login URL` first (or set OUTPOST_URL and OUTPOST_TOKEN)",
        )?;
        Ok(Client::new(url, self.token.clone()))
    }

    pub(crate) fn save(&self, session: &SavedLogin) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.config_dir)?;
        crate::ca::write_private(
            &self.config_dir.join("session.json"),
            &serde_json::to_vec_pretty(session)?,
        )
    }

    pub(crate) fn print<T: serde::Serialize>(
        &self,
        v: &T,
        human: impl FnOnce(),
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            human();
        }
        Ok(())
    }
}

pub(crate) fn workspace_credential(sock: &std::path::Path) -> Option<SavedLogin> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let c: WorkspaceCredential = serde_json::from_str(buf.trim()).ok()?;
    Some(SavedLogin {
        url: c.url,
        token: c.token,
    })
}

pub(crate) fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("parameter {p:?} must be NAME=VALUE"))
        })
        .collect()
}

pub(crate) fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(rpassword::prompt_password(prompt)?)
}

pub(crate) fn read_line(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

pub(crate) fn ago(ms: i64) -> String {
    let now = crate::store::now_ms();
    let s = ((now - ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub(crate) fn health_str(w: &Workspace) -> String {
    if w.health.healthy {
        "healthy".into()
    } else {
        format!("unhealthy: {}", w.health.reasons.join("; "))
    }
}

pub(crate) fn print_table(rows: Vec<Vec<String>>) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
