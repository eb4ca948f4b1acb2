//! `template.toml`: parsing and validation into a [`TemplateManifest`], and parameter checks.
//!
//! Errors name the file, the line and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use outpost_api::{AgentSettings, ParameterSpec, ParameterType, TemplateManifest};
use serde::Deserialize;
use toml::Spanned;

pub const MANIFEST_FILE: &str = "template.toml";

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::error::Error for TemplateError {}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    description: String,
    provisioner: Spanned<RawProvisioner>,
    #[serde(default)]
    agent: Option<RawAgent>,
    #[serde(default)]
    parameters: Vec<RawParameter>,
    #[serde(default)]
    scripts: Vec<RawScript>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    slug: Spanned<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    share: Option<Spanned<String>>,
    #[serde(default)]
    healthcheck: Option<RawHealthcheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthcheck {
    url: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    threshold: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    name: Spanned<String>,
    script: String,
    #[serde(default)]
    run_on_start: Option<bool>,
    #[serde(default)]
    cron: Option<Spanned<String>>,
    #[serde(default)]
    run_on_stop: bool,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    blocks_login: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioner {
    #[serde(rename = "type")]
    kind: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    connection_timeout: Option<Spanned<String>>,
    #[serde(default)]
    ssh_listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParameter {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    default: Option<Spanned<toml::Value>>,
    #[serde(default = "yes")]
    mutable: bool,
    #[serde(default)]
    validation: Option<RawValidation>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    #[serde(default)]
    regex: Option<Spanned<String>>,
    #[serde(default)]
    min: Option<Spanned<f64>>,
    #[serde(default)]
    max: Option<Spanned<f64>>,
    #[serde(default)]
    options: Option<Spanned<Vec<String>>>,
}

pub const PROVISIONERS: &[&str] = &["local"];
const MAX_FILES: usize = 256;
const DEFAULT_CONNECTION_TIMEOUT_SECS: u64 = 120;

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// Parses and validates a template's files (`template.toml` plus scripts).
pub fn parse(files: &BTreeMap<String, String>) -> Result<TemplateManifest, TemplateError> {
    let err = |file: &str, line: Option<usize>, field: Option<&str>, msg: String| TemplateError {
        file: file.to_string(),
        line,
        field: field.map(str::to_string),
        message: msg,
    };
    if files.len() > MAX_FILES {
        return Err(err(
            "(template)",
            None,
            None,
            format!("more than {MAX_FILES} files"),
        ));
    }
    for path in files.keys() {
        let bad = path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || path.contains('\0');
        if bad {
            return Err(err(
                path,
                None,
                None,
                "file paths must be relative, without `..`".into(),
            ));
        }
    }
    let Some(src) = files.get(MANIFEST_FILE) else {
        return Err(err(
            MANIFEST_FILE,
            None,
            None,
            "missing: a template directory needs a template.toml".into(),
        ));
    };
    let raw: Raw = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        err(MANIFEST_FILE, line, None, e.message().trim().to_string())
    })?;
    let at = |span: std::ops::Range<usize>| Some(line_of(src, span.start));

    let prov = raw.provisioner.get_ref();
    if !PROVISIONERS.contains(&prov.kind.get_ref().as_str()) {
        return Err(err(
            MANIFEST_FILE,
            at(prov.kind.span()),
            Some("provisioner.type"),
            format!(
                "unknown provisioner {:?}; supported: {}",
                prov.kind.get_ref(),
                PROVISIONERS.join(", ")
            ),
        ));
    }

    let mut agent = AgentSettings {
        env: BTreeMap::new(),
        connection_timeout_secs: DEFAULT_CONNECTION_TIMEOUT_SECS,
        ssh_listen: None,
    };
    if let Some(a) = raw.agent {
        for k in a.env.keys() {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || k.starts_with("OUTPOST_") {
                return Err(err(
                    MANIFEST_FILE,
                    None,
                    Some(&format!("agent.env.{k}")),
                    "environment names are letters, digits and _, and OUTPOST_* is reserved".into(),
                ));
            }
        }
        agent.env = a.env;
        if let Some(l) = a.ssh_listen {
            if l.get_ref().parse::<std::net::SocketAddr>().is_err() {
                return Err(err(
                    MANIFEST_FILE,
                    at(l.span()),
                    Some("agent.ssh_listen"),
                    format!(
                        "{:?} is not an address like \"127.0.0.1:2222\" (port 0 picks one)",
                        l.get_ref()
                    ),
                ));
            }
            agent.ssh_listen = Some(l.into_inner());
        }
        if let Some(t) = a.connection_timeout {
            let d = humantime::parse_duration(t.get_ref()).map_err(|e| {
                err(
                    MANIFEST_FILE,
                    at(t.span()),
                    Some("agent.connection_timeout"),
                    format!("{e} (write e.g. \"90s\" or \"5m\")"),
                )
            })?;
            if d.as_secs() == 0 || d.as_secs() > 24 * 3600 {
                return Err(err(
                    MANIFEST_FILE,
                    at(t.span()),
                    Some("agent.connection_timeout"),
                    "must be between 1s and 24h".into(),
                ));
            }
            agent.connection_timeout_secs = d.as_secs();
        }
    }

    let mut parameters = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in raw.parameters.into_iter().enumerate() {
        let field = |f: &str| format!("parameters[{i}].{f}");
        let name = p.name.get_ref().clone();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(err(
                MANIFEST_FILE,
                at(p.name.span()),
                Some(&field("name")),
                format!("{name:?} is not a valid name: use lowercase letters, digits and _"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(err(
                MANIFEST_FILE,
                at(p.name.span()),
                Some(&field("name")),
                format!("duplicate parameter {name:?}"),
            ));
        }
        let kind = match p.kind.get_ref().as_str() {
            "string" => ParameterType::String,
            "number" => ParameterType::Number,
            "bool" => ParameterType::Bool,
            other => {
                return Err(err(
                    MANIFEST_FILE,
                    at(p.kind.span()),
                    Some(&field("type")),
                    format!("unknown type {other:?}; use string, number or bool"),
                ))
            }
        };
        let mut spec = ParameterSpec {
            name,
            description: p.description,
            kind,
            default: None,
            mutable: p.mutable,
            regex: None,
            min: None,
            max: None,
            options: Vec::new(),
        };
        if let Some(v) = p.validation {
            if let Some(r) = v.regex {
                if kind != ParameterType::String {
                    return Err(err(
                        MANIFEST_FILE,
                        at(r.span()),
                        Some(&field("validation.regex")),
                        "regex applies to string parameters only".into(),
                    ));
                }
                regex::Regex::new(r.get_ref()).map_err(|e| {
                    err(
                        MANIFEST_FILE,
                        at(r.span()),
                        Some(&field("validation.regex")),
                        format!("invalid regex: {e}"),
                    )
                })?;
                spec.regex = Some(r.into_inner());
            }
            for (bound, slot, fname) in [
                (v.min, &mut spec.min, "validation.min"),
                (v.max, &mut spec.max, "validation.max"),
            ] {
                if let Some(b) = bound {
                    if kind != ParameterType::Number {
                        return Err(err(
                            MANIFEST_FILE,
                            at(b.span()),
                            Some(&field(fname)),
                            "min and max apply to number parameters only".into(),
                        ));
                    }
                    *slot = Some(*b.get_ref());
                }
            }
            if let (Some(lo), Some(hi)) = (spec.min, spec.max) {
                if lo > hi {
                    return Err(err(
                        MANIFEST_FILE,
                        None,
                        Some(&field("validation")),
                        format!("min ({lo}) is greater than max ({hi})"),
                    ));
                }
            }
            if let Some(o) = v.options {
                if o.get_ref().is_empty() {
                    return Err(err(
                        MANIFEST_FILE,
                        at(o.span()),
                        Some(&field("validation.options")),
                        "options must not be empty".into(),
                    ));
                }
                spec.options = o.into_inner();
            }
        }
        if let Some(d) = p.default {
            let line = at(d.span());
            let s = match (kind, d.get_ref()) {
                (ParameterType::String, toml::Value::String(s)) => s.clone(),
                (ParameterType::Number, toml::Value::Integer(n)) => n.to_string(),
                (ParameterType::Number, toml::Value::Float(n)) => n.to_string(),
                (ParameterType::Bool, toml::Value::Boolean(b)) => b.to_string(),
                (_, other) => {
                    return Err(err(
                        MANIFEST_FILE,
                        line,
                        Some(&field("default")),
                        format!(
                            "a {} default is not a {}",
                            other.type_str(),
                            p.kind.get_ref()
                        ),
                    ));
                }
            };
            validate_value(&spec, &s)
                .map_err(|m| err(MANIFEST_FILE, line, Some(&field("default")), m))?;
            spec.default = Some(s);
        }
        parameters.push(spec);
    }

    let mut scripts = Vec::new();
    let mut names = BTreeSet::new();
    for (i, s) in raw.scripts.into_iter().enumerate() {
        let field = |f: &str| format!("scripts[{i}].{f}");
        let name = s.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 64
            || name.chars().any(char::is_control)
            || !names.insert(name.clone())
        {
            return Err(err(
                MANIFEST_FILE,
                at(s.name.span()),
                Some(&field("name")),
                format!("{name:?}: script names are 1-64 printable characters and unique"),
            ));
        }
        let cron = match s.cron {
            Some(c) => {
                outpost_common::cron::Schedule::parse(c.get_ref())
                    .map_err(|e| err(MANIFEST_FILE, at(c.span()), Some(&field("cron")), e))?;
                Some(c.into_inner())
            }
            None => None,
        };
        // A scheduled script does not also run on start unless asked to.
        let run_on_start = s.run_on_start.unwrap_or(cron.is_none());
        if !run_on_start && !s.run_on_stop && cron.is_none() {
            return Err(err(
                MANIFEST_FILE,
                at(s.name.span()),
                Some(&field("run_on_start")),
                "a script runs on start, on stop, or both".into(),
            ));
        }
        let timeout_secs = match s.timeout {
            Some(t) => humantime::parse_duration(t.get_ref())
                .map_err(|e| {
                    err(
                        MANIFEST_FILE,
                        at(t.span()),
                        Some(&field("timeout")),
                        format!("{e} (write e.g. \"30s\" or \"5m\")"),
                    )
                })?
                .as_secs(),
            None => 0,
        };
        scripts.push(outpost_api::ScriptSpec {
            name,
            script: s.script,
            run_on_start,
            run_on_stop: s.run_on_stop,
            timeout_secs,
            blocks_login: s.blocks_login,
            cron,
        });
    }

    let mut apps = Vec::new();
    let mut slugs = BTreeSet::new();
    for (i, a) in raw.apps.into_iter().enumerate() {
        let field = |f: &str| format!("apps[{i}].{f}");
        let slug = a.slug.get_ref().clone();
        let label_ok = !slug.is_empty()
            && slug.len() <= 32
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !slug.starts_with('-')
            && !slug.ends_with('-');
        if !label_ok || !slugs.insert(slug.clone()) {
            return Err(err(
                MANIFEST_FILE,
                at(a.slug.span()),
                Some(&field("slug")),
                format!("{slug:?}: app slugs are unique, 1-32 of a-z 0-9 - (not at either end)"),
            ));
        }
        let port = match &a.port {
            Some(p) => Some(
                u16::try_from(*p.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        err(
                            MANIFEST_FILE,
                            at(p.span()),
                            Some(&field("port")),
                            "a port is 1-65535".into(),
                        )
                    })?,
            ),
            None => None,
        };
        let url = match &a.url {
            Some(u) => {
                let s = u.get_ref();
                if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() > 2048 {
                    return Err(err(
                        MANIFEST_FILE,
                        at(u.span()),
                        Some(&field("url")),
                        "an app URL starts with http:// or https://".into(),
                    ));
                }
                Some(s.clone())
            }
            None => None,
        };
        if port.is_some() == url.is_some() {
            return Err(err(
                MANIFEST_FILE,
                at(a.slug.span()),
                Some(&field("port")),
                "an app has either a port inside the workspace or a url".into(),
            ));
        }
        let share = match &a.share {
            Some(s) => outpost_api::ShareLevel::parse(s.get_ref()).ok_or_else(|| {
                err(
                    MANIFEST_FILE,
                    at(s.span()),
                    Some(&field("share")),
                    format!("{:?}: share is owner, authenticated or public", s.get_ref()),
                )
            })?,
            None => outpost_api::ShareLevel::Owner,
        };
        let healthcheck = match a.healthcheck {
            Some(h) => {
                let u = h.url.get_ref();
                if !u.starts_with("http://") || u.len() > 2048 {
                    return Err(err(
                        MANIFEST_FILE,
                        at(h.url.span()),
                        Some(&field("healthcheck.url")),
                        "a health check URL is http://HOST:PORT/PATH inside the workspace".into(),
                    ));
                }
                let interval_secs = match &h.interval {
                    Some(t) => humantime::parse_duration(t.get_ref())
                        .ok()
                        .map(|d| d.as_secs())
                        .filter(|s| (1..=3600).contains(s))
                        .ok_or_else(|| {
                            err(
                                MANIFEST_FILE,
                                at(t.span()),
                                Some(&field("healthcheck.interval")),
                                "write an interval from \"1s\" to \"1h\"".into(),
                            )
                        })?,
                    None => 5,
                };
                let threshold = match &h.threshold {
                    Some(t) => u32::try_from(*t.get_ref())
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            err(
                                MANIFEST_FILE,
                                at(t.span()),
                                Some(&field("healthcheck.threshold")),
                                "a threshold is 1-100 failures".into(),
                            )
                        })?,
                    None => 3,
                };
                Some(outpost_api::HealthcheckSpec {
                    url: u.clone(),
                    interval_secs,
                    threshold,
                })
            }
            None => None,
        };
        apps.push(outpost_api::AppSpec {
            display_name: a.display_name.unwrap_or_else(|| slug.clone()),
            slug,
            port,
            url,
            share,
            healthcheck,
        });
    }

    Ok(TemplateManifest {
        scripts,
        apps,
        description: raw.description,
        provisioner: prov.kind.get_ref().clone(),
        agent,
        parameters,
    })
}

/// Checks one parameter value against its spec.
pub fn validate_value(spec: &ParameterSpec, value: &str) -> Result<(), String> {
    if value.len() > 4096 {
        return Err("value is longer than 4096 bytes".into());
    }
    match spec.kind {
        ParameterType::String => {
            if let Some(r) = &spec.regex {
                let re = regex::Regex::new(r).map_err(|e| e.to_string())?;
                if !re.is_match(value) {
                    return Err(format!("{value:?} does not match {r}"));
                }
            }
        }
        ParameterType::Number => {
            let n: f64 = value
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| format!("{value:?} is not a number"))?;
            if let Some(lo) = spec.min {
                if n < lo {
                    return Err(format!("{n} is less than the minimum {lo}"));
                }
            }
            if let Some(hi) = spec.max {
                if n > hi {
                    return Err(format!("{n} is greater than the maximum {hi}"));
                }
            }
        }
        ParameterType::Bool => {
            if value != "true" && value != "false" {
                return Err(format!("{value:?} is not true or false"));
            }
        }
    }
    if !spec.options.is_empty() && !spec.options.iter().any(|o| o == value) {
        return Err(format!(
            "{value:?} is not one of: {}",
            spec.options.join(", ")
        ));
    }
    Ok(())
}

/// Resolves the parameters of a new workspace or a new build: given values are validated,
/// missing ones take the previous value or the default; immutable ones cannot change.
pub fn resolve_parameters(
    manifest: &TemplateManifest,
    given: &BTreeMap<String, String>,
    previous: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, String> {
    for k in given.keys() {
        if !manifest.parameters.iter().any(|p| &p.name == k) {
            return Err(format!("unknown parameter {k:?}"));
        }
    }
    let mut out = BTreeMap::new();
    for spec in &manifest.parameters {
        let prev = previous.and_then(|p| p.get(&spec.name));
        let value = match (given.get(&spec.name), prev) {
            (Some(v), Some(p)) if !spec.mutable && v != p => {
                return Err(format!("parameter {:?} is immutable", spec.name));
            }
            (Some(v), _) => v.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => match &spec.default {
                Some(d) => d.clone(),
                None => return Err(format!("parameter {:?} is required", spec.name)),
            },
        };
        validate_value(spec, &value).map_err(|m| format!("parameter {:?}: {m}", spec.name))?;
        out.insert(spec.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(toml: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(MANIFEST_FILE.to_string(), toml.to_string())])
    }

    #[test]
    fn base_template_parses() {
        let m = parse(&files(include_str!("../../templates/base/template.toml")));
        assert!(m.is_ok(), "{m:?}");
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = parse(&files(
            "[provisioner]\ntype = \"local\"\n\n[[parameters]]\nname = \"x\"\ntype = \"number\"\ndefault = 5\n[parameters.validation]\nmax = 3\n",
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(7));
        assert_eq!(e.field.as_deref(), Some("parameters[0].default"));
        let e = parse(&files("[provisioner]\ntype = \"local\"\nbogus = 1\n")).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = parse(&files("[provisioner]\ntype = \"docker\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("provisioner.type"));
        assert_eq!(e.line, Some(2));
        let e = parse(&files(
            "[provisioner]\ntype = \"local\"\n[[parameters]]\nname = \"r\"\ntype = \"string\"\n[parameters.validation]\nregex = \"([\"\n",
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("parameters[0].validation.regex"));
        assert_eq!(e.line, Some(7));
    }

    #[test]
    fn apps_validate_with_lines() {
        let m = parse(&files(
            "[provisioner]\ntype = \"local\"\n[[apps]]\nslug = \"code\"\ndisplay_name = \"VS Code\"\nport = 8080\nshare = \"authenticated\"\nhealthcheck = { url = \"http://127.0.0.1:8080/healthz\", interval = \"2s\", threshold = 5 }\n[[apps]]\nslug = \"docs\"\nurl = \"https://example.com/docs\"\n",
        ))
        .unwrap();
        assert_eq!(m.apps.len(), 2);
        assert_eq!(m.apps[0].share, outpost_api::ShareLevel::Authenticated);
        let hc = m.apps[0].healthcheck.as_ref().unwrap();
        assert_eq!((hc.interval_secs, hc.threshold), (2, 5));
        assert_eq!(m.apps[1].share, outpost_api::ShareLevel::Owner);
        assert_eq!(m.apps[1].display_name, "docs");
        let bad = |body: &str| {
            parse(&files(&format!(
                "[provisioner]\ntype = \"local\"\n[[apps]]\n{body}"
            )))
            .unwrap_err()
        };
        let e = bad("slug = \"Bad Slug\"\nport = 1\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(4), Some("apps[0].slug"))
        );
        let e = bad("slug = \"a\"\nport = 70000\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(5), Some("apps[0].port"))
        );
        let e = bad("slug = \"a\"\nport = 1\nurl = \"https://x\"\n");
        assert_eq!(e.field.as_deref(), Some("apps[0].port"));
        let e = bad("slug = \"a\"\nurl = \"javascript:alert(1)\"\n");
        assert_eq!(e.field.as_deref(), Some("apps[0].url"));
        let e = bad("slug = \"a\"\nport = 1\nshare = \"everyone\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(6), Some("apps[0].share"))
        );
        let e = bad("slug = \"a\"\nport = 1\nhealthcheck = { url = \"file:///etc/passwd\" }\n");
        assert_eq!(e.field.as_deref(), Some("apps[0].healthcheck.url"));
        let e = bad("slug = \"a\"\nport = 1\n[[apps]]\nslug = \"a\"\nport = 2\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(7), Some("apps[1].slug"))
        );
    }

    #[test]
    fn parameters_resolve_and_validate() {
        let m = parse(&files(
            "[provisioner]\ntype = \"local\"\n[[parameters]]\nname = \"region\"\ntype = \"string\"\ndefault = \"eu\"\nmutable = false\n[parameters.validation]\noptions = [\"eu\", \"us\"]\n[[parameters]]\nname = \"cpus\"\ntype = \"number\"\n[parameters.validation]\nmin = 1\nmax = 8\n",
        ))
        .unwrap();
        let given = BTreeMap::from([("cpus".to_string(), "4".to_string())]);
        let r = resolve_parameters(&m, &given, None).unwrap();
        assert_eq!(r["region"], "eu");
        assert!(resolve_parameters(&m, &BTreeMap::new(), None).is_err());
        let bad = BTreeMap::from([("cpus".to_string(), "9".to_string())]);
        assert!(resolve_parameters(&m, &bad, None).is_err());
        let change = BTreeMap::from([("region".to_string(), "us".to_string())]);
        assert!(resolve_parameters(&m, &change, Some(&r))
            .unwrap_err()
            .contains("immutable"));
    }
}
