//! `cargo xtask dist [--bin-dir DIR] [--out DIR]`: release binaries (built here unless
//! `--bin-dir` names built ones) packaged as a Debian package with `dpkg-deb`:
//! `/usr/bin/outpost`, `/usr/bin/outpost-agent`, a systemd unit that runs `outpost server` as
//! its own system user with its data in `/var/lib/outpost`, the server's config file in
//! `/etc/outpost/server.toml` (a conffile), and shell completions from the built binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const UNIT: &str = "[Unit]
Description=Outpost control service (API, dashboard, agent API, provisioners)
Documentation=https://github.com/outpost/outpost
Wants=network-online.target
After=network-online.target postgresql.service

[Service]
Type=simple
User=outpost
Group=outpost
ExecStart=/usr/bin/outpost server --config /etc/outpost/server.toml
# SIGTERM drains: no new connections or builds, open relays get --shutdown-grace.
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
StateDirectory=outpost
StateDirectoryMode=0700
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=/var/lib/outpost
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
";

const CONFIG: &str = "# outpost server settings: one key per flag of `outpost server --help`.
# A flag wins over its OUTPOST_* variable (e.g. in `systemctl edit outpost`), which wins over
# this file, which wins over the default. `outpost server --config /etc/outpost/server.toml
# --print-config` shows what is in effect.
data-dir = \"/var/lib/outpost\"
workspaces-dir = \"/var/lib/outpost/workspaces\"
listen = \"127.0.0.1:7080\"
agent-listen = \"0.0.0.0:7443\"
# access-url = \"https://outpost.example.com\"
# agent-url = \"https://outpost.example.com:7443\"
# postgres-url = \"postgres://outpost@db/outpost\"
# The unit runs as the `outpost` user, so `local` workspaces run as that user too: fine for
# one person. For a team, use Docker templates (add `outpost` to the docker group), or run the
# server as root (`systemctl edit outpost`: User=root) for a Unix user per workspace.
# allow-unisolated-users = true
";

const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ]; then
    if ! getent passwd outpost >/dev/null; then
        adduser --system --group --home /var/lib/outpost --no-create-home outpost >/dev/null
    fi
    mkdir -p /var/lib/outpost
    chown outpost:outpost /var/lib/outpost
    chmod 0700 /var/lib/outpost
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null || true
    fi
fi
exit 0
";

const POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
# The data in /var/lib/outpost stays, even on purge: delete it yourself when you mean to.
exit 0
";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut bin_dir: Option<PathBuf> = None;
    let mut out = crate::root().join("target/dist");
    let mut compress = "-Zxz";
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bin-dir" => bin_dir = Some(it.next().context("--bin-dir DIR")?.into()),
            "--out" => out = it.next().context("--out DIR")?.into(),
            // For checking a package's contents quickly (debug binaries are large).
            "--uncompressed" => compress = "-Znone",
            other => bail!("unknown flag {other} (usage: cargo xtask dist [--bin-dir DIR] [--out DIR] [--uncompressed])"),
        }
    }
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => {
            crate::cargo(&["build", "--release", "--bins"])?;
            crate::root().join("target/release")
        }
    };
    let deb = package(&bin_dir, &out, compress)?;
    println!("{}", deb.display());
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds `outpost_VERSION_ARCH.deb` in `out` from the binaries in `bin_dir`.
fn package(bin_dir: &Path, out: &Path, compress: &str) -> anyhow::Result<PathBuf> {
    let outpost = bin_dir.join("outpost");
    let agent = bin_dir.join("outpost-agent");
    for b in [&outpost, &agent] {
        if !b.exists() {
            bail!(
                "{} is missing: build the binaries first (cargo build --release --bins)",
                b.display()
            );
        }
    }
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let o = Command::new(&outpost).args(args).output()?;
        if !o.status.success() {
            bail!("outpost {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    // "outpost 0.1.0 (abc123)" -> "0.1.0+gabc123" (Debian's version syntax).
    let v = run(&["--version"])?;
    let mut words = v.split_whitespace().skip(1);
    let version = match (words.next(), words.next()) {
        (Some(v), Some(rev)) => format!("{v}+g{}", rev.trim_matches(|c| c == '(' || c == ')')),
        (Some(v), None) => v.to_string(),
        _ => bail!("cannot read the version from {v:?}"),
    };
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "amd64".into());

    let root = out.join(format!("outpost_{version}_{arch}"));
    let _ = std::fs::remove_dir_all(&root);
    for (from, to) in [
        (&outpost, "usr/bin/outpost"),
        (&agent, "usr/bin/outpost-agent"),
    ] {
        let dest = root.join(to);
        std::fs::create_dir_all(dest.parent().context("a parent")?)?;
        std::fs::copy(from, &dest).with_context(|| format!("copying {}", from.display()))?;
    }
    write(
        &root.join("lib/systemd/system/outpost.service"),
        UNIT,
        0o644,
    )?;
    write(&root.join("etc/outpost/server.toml"), CONFIG, 0o644)?;
    write(
        &root.join("usr/share/bash-completion/completions/outpost"),
        &run(&["completion", "bash"])?,
        0o644,
    )?;
    write(
        &root.join("usr/share/zsh/vendor-completions/_outpost"),
        &run(&["completion", "zsh"])?,
        0o644,
    )?;
    write(
        &root.join("usr/share/fish/vendor_completions.d/outpost.fish"),
        &run(&["completion", "fish"])?,
        0o644,
    )?;
    let size_kib: u64 = walk_size(&root)? / 1024;
    write(
        &root.join("DEBIAN/control"),
        &format!(
            "Package: outpost\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Outpost developers <outpost@localhost>\nInstalled-Size: {size_kib}\nDepends: adduser, openssh-client\nRecommends: postgresql-client\nSection: devel\nPriority: optional\nHomepage: https://github.com/outpost/outpost\nDescription: developer workspaces: control service, provisioner and CLI\n Outpost keeps users, templates and workspaces, provisions them and relays SSH,\n terminals, ports and apps to the agent (outpost-agent) in each workspace.\n"
        ),
        0o644,
    )?;
    write(
        &root.join("DEBIAN/conffiles"),
        "/etc/outpost/server.toml\n",
        0o644,
    )?;
    write(&root.join("DEBIAN/postinst"), POSTINST, 0o755)?;
    write(&root.join("DEBIAN/postrm"), POSTRM, 0o755)?;
    let deb = out.join(format!("outpost_{version}_{arch}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", compress])
        .arg(&root)
        .arg(&deb)
        .status()
        .context("running dpkg-deb (apt-get install dpkg-dev)")?;
    if !st.success() {
        bail!("dpkg-deb failed");
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(deb)
}

fn walk_size(dir: &Path) -> anyhow::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            walk_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}
