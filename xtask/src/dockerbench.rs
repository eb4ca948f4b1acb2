//! The docker side of `cargo xtask bench lifecycle --provisioner docker`: the image (built
//! locally by scripts/test-image.sh), the template pushed for it, the address containers reach
//! control at, and the anchor: `docker run --rm IMAGE true`, timed in the same run.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

/// The locally built development image's tag.
pub fn image() -> anyhow::Result<String> {
    let o = Command::new("bash")
        .arg(crate::root().join("scripts/test-image.sh"))
        .output()
        .context("running scripts/test-image.sh")?;
    anyhow::ensure!(
        o.status.success(),
        "scripts/test-image.sh: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The `docker0` address: control's agent API listens there for the containers.
pub fn bridge_gateway() -> anyhow::Result<String> {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .context("no address on docker0: is dockerd running?")
}

/// The repository's docker template with `image` as its default image.
pub fn template_files(image: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let dir = crate::root().join("templates/docker");
    let manifest = std::fs::read_to_string(dir.join("template.toml"))?.replace(
        "default = \"outpost-dev:latest\"",
        &format!("default = {image:?}"),
    );
    Ok(BTreeMap::from([
        ("template.toml".to_string(), manifest),
        (
            "scripts/welcome.sh".to_string(),
            std::fs::read_to_string(dir.join("scripts/welcome.sh"))?,
        ),
    ]))
}

/// `docker run --rm IMAGE true`, `n` times, in milliseconds.
pub fn anchor(image: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let st = Command::new("docker")
            .args(["run", "--rm", image, "true"])
            .status()?;
        anyhow::ensure!(st.success(), "docker run --rm {image} true failed");
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(v)
}
