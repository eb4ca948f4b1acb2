//! `cargo xtask dist` (issue 18): the Debian package holds both binaries, a systemd unit that
//! runs `outpost server` as its own system user on /var/lib/outpost with the shipped config
//! file, that config file (a conffile the server reads), completions, and maintainer scripts
//! that make the user; the packaged `outpost` runs and names its commit.

use std::process::Command;

use crate::harness::*;

fn out(c: &mut Command) -> R<String> {
    let o = c.output()?;
    anyhow::ensure!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn debian_package() -> R {
    let xtask = bin_dir().join("xtask");
    anyhow::ensure!(
        xtask.exists(),
        "{} is missing: `cargo build --workspace --bins` builds it",
        xtask.display()
    );
    if !std::path::Path::new("/usr/bin/dpkg-deb").exists() {
        anyhow::ensure!(
            std::env::var_os("OUTPOST_CI").is_none(),
            "dpkg-deb is missing"
        );
        eprintln!("SKIPPED: no dpkg-deb");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let deb = out(Command::new(&xtask)
        .args(["dist", "--bin-dir"])
        .arg(bin_dir())
        .arg("--out")
        .arg(dir.path())
        .arg("--uncompressed"))?;
    // The last line is the package's path (dpkg-deb says what it builds before it).
    let deb = std::path::PathBuf::from(deb.lines().last().unwrap_or("").trim());
    assert!(deb.exists(), "{}", deb.display());

    let field = |f: &str| -> R<String> {
        Ok(out(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(f))?
            .trim()
            .to_string())
    };
    assert_eq!(field("Package")?, "outpost");
    assert!(field("Depends")?.contains("adduser"));
    let version = out(Command::new(bin("outpost")).arg("--version"))?;
    let built = version.split_whitespace().nth(1).unwrap_or("");
    assert!(
        field("Version")?.starts_with(built),
        "{}",
        field("Version")?
    );

    let listing = out(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
    for f in [
        "./usr/bin/outpost",
        "./usr/bin/outpost-agent",
        "./lib/systemd/system/outpost.service",
        "./etc/outpost/server.toml",
        "./usr/share/bash-completion/completions/outpost",
        "./usr/share/zsh/vendor-completions/_outpost",
        "./usr/share/fish/vendor_completions.d/outpost.fish",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(f))
            .unwrap_or_else(|| panic!("{f} is not in the package:\n{listing}"));
        assert!(line.contains("root/root"), "{line}");
    }

    // Unpacked into a throwaway root: the binary runs, the unit and config fit together.
    let root = dir.path().join("root");
    out(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    out(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(root.join("DEBIAN")))?;
    let packaged = root.join("usr/bin/outpost");
    assert_eq!(out(Command::new(&packaged).arg("--version"))?, version);
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/outpost.service"))?;
    for l in [
        "User=outpost",
        "ExecStart=/usr/bin/outpost server --config /etc/outpost/server.toml",
        "StateDirectory=outpost",
        "KillSignal=SIGTERM",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|u| u == l), "no {l} in:\n{unit}");
    }
    let cfg = root.join("etc/outpost/server.toml");
    let printed = out(Command::new(&packaged)
        .args(["server", "--config"])
        .arg(&cfg)
        .arg("--print-config")
        .env_remove("OUTPOST_DATA_DIR"))?;
    assert!(
        printed
            .lines()
            .any(|l| l == "data-dir = \"/var/lib/outpost\"  # file"),
        "{printed}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("DEBIAN/conffiles"))?,
        "/etc/outpost/server.toml\n"
    );
    let postinst = root.join("DEBIAN/postinst");
    assert!(std::fs::read_to_string(&postinst)?.contains("adduser --system --group"));
    for script in [postinst, root.join("DEBIAN/postrm")] {
        out(Command::new("sh").arg("-n").arg(&script))?;
    }
    out(Command::new("bash")
        .arg("-n")
        .arg(root.join("usr/share/bash-completion/completions/outpost")))?;
    Ok(())
}
