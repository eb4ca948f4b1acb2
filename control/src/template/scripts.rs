//! `[[scripts]]`: names, when they run (start, stop, cron), timeouts, login blocking.

use std::collections::{BTreeMap, BTreeSet};

use outpost_api::{ScriptSpec, TEMPLATE_DIR_ENV as TEMPLATE_DIR_VAR};

use super::raw::RawScript;
use super::{Manifest, TemplateError};

pub(super) fn validate(
    m: &Manifest,
    raw: Vec<RawScript>,
    files: &BTreeMap<String, String>,
) -> Result<Vec<ScriptSpec>, TemplateError> {
    let mut scripts = Vec::new();
    let mut names = BTreeSet::new();
    for (i, s) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("scripts[{i}].{f}");
        let name = s.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 64
            || name.chars().any(char::is_control)
            || !names.insert(name.clone())
        {
            return Err(m.err(
                m.at(s.name.span()),
                Some(&field("name")),
                format!("{name:?}: script names are 1-64 printable characters and unique"),
            ));
        }
        let cron = match s.cron {
            Some(c) => {
                outpost_common::cron::Schedule::parse(c.get_ref())
                    .map_err(|e| m.err(m.at(c.span()), Some(&field("cron")), e))?;
                Some(c.into_inner())
            }
            None => None,
        };
        // A scheduled script does not also run on start unless asked to.
        let run_on_start = s.run_on_start.unwrap_or(cron.is_none());
        if !run_on_start && !s.run_on_stop && cron.is_none() {
            return Err(m.err(
                m.at(s.name.span()),
                Some(&field("run_on_start")),
                "a script runs on start, on stop, or both".into(),
            ));
        }
        let timeout_secs = match s.timeout {
            Some(t) => humantime::parse_duration(t.get_ref())
                .map_err(|e| {
                    m.err(
                        m.at(t.span()),
                        Some(&field("timeout")),
                        format!("{e} (write e.g. \"30s\" or \"5m\")"),
                    )
                })?
                .as_secs(),
            None => 0,
        };
        let script = match file_reference(&s.script) {
            Some(path) => {
                let Some(body) = files.get(path) else {
                    return Err(m.err(
                        m.at(s.name.span()),
                        Some(&field("script")),
                        format!("{:?} is not among the template's files (paths are relative to template.toml)", s.script.trim()),
                    ));
                };
                // Delivered files keep no mode: one with a #! line is made executable.
                if body.starts_with("#!") {
                    format!("exec \"${TEMPLATE_DIR_VAR}/{path}\"")
                } else {
                    format!("exec /bin/sh \"${TEMPLATE_DIR_VAR}/{path}\"")
                }
            }
            None => s.script,
        };
        scripts.push(ScriptSpec {
            name,
            script,
            run_on_start,
            run_on_stop: s.run_on_stop,
            timeout_secs,
            blocks_login: s.blocks_login,
            cron,
        });
    }

    Ok(scripts)
}

/// `./scripts/setup.sh`: a script that is one of the template's files, not inline text.
fn file_reference(script: &str) -> Option<&str> {
    let t = script.trim();
    let path = t.strip_prefix("./")?;
    let plain = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && !path.split('/').any(|c| c.is_empty() || c == "..");
    plain.then_some(path)
}
