//! `[provisioner]` beyond `type`: the container image, the workspace user, CPU and memory
//! limits. Values may name a parameter as `${param.NAME}`; [`resolve`] fills them in with a
//! workspace's values at each build, and [`validate`] checks at push time what it can.

use std::collections::BTreeMap;

use outpost_api::{ParameterSpec, ProvisionerSettings};

use super::raw::RawProvisioner;
use super::{Manifest, TemplateError};

pub const DEFAULT_USER: &str = "dev";
pub const DEFAULT_UID: u32 = 1000;
/// Docker refuses less than this.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The settings of one build, placeholders filled in and limits parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub image: String,
    pub user: String,
    pub uid: u32,
    /// In billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
}

pub(super) fn validate(
    m: &Manifest,
    raw: &RawProvisioner,
    parameters: &[ParameterSpec],
) -> Result<ProvisionerSettings, TemplateError> {
    let kind = raw.kind.get_ref().as_str();
    let field = |f: &str| format!("provisioner.{f}");
    let mut s = ProvisionerSettings::default();
    let text = |v: &Option<toml::Spanned<toml::Value>>| {
        v.as_ref().map(|v| {
            let s = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            toml::Spanned::new(v.span(), s)
        })
    };
    let fields = [
        ("image", raw.image.clone()),
        ("user", raw.user.clone()),
        ("cpus", text(&raw.cpus)),
        ("memory", text(&raw.memory)),
    ];
    for (name, value) in fields {
        let Some(v) = value else { continue };
        if kind != "docker" {
            return Err(m.err(
                m.at(v.span()),
                Some(&field(name)),
                format!("only a `docker` provisioner takes `{name}`"),
            ));
        }
        for p in
            placeholders(v.get_ref()).map_err(|e| m.err(m.at(v.span()), Some(&field(name)), e))?
        {
            if !parameters.iter().any(|spec| spec.name == p) {
                return Err(m.err(
                    m.at(v.span()),
                    Some(&field(name)),
                    format!("${{param.{p}}} names no parameter of this template"),
                ));
            }
        }
        // A literal value is checked now; one with placeholders at each build.
        if !v.get_ref().contains("${") {
            let checked = match name {
                "user" => check_user(v.get_ref()),
                "cpus" => parse_cpus(v.get_ref()).map(|_| ()),
                "memory" => parse_memory(v.get_ref()).map(|_| ()),
                _ => check_image(v.get_ref()),
            };
            checked.map_err(|e| m.err(m.at(v.span()), Some(&field(name)), e))?;
        }
        let slot = match name {
            "image" => &mut s.image,
            "user" => &mut s.user,
            "cpus" => &mut s.cpus,
            _ => &mut s.memory,
        };
        *slot = Some(v.get_ref().clone());
    }
    if let Some(uid) = &raw.uid {
        if kind != "docker" {
            return Err(m.err(
                m.at(uid.span()),
                Some(&field("uid")),
                "only a `docker` provisioner takes `uid`".into(),
            ));
        }
        let u = *uid.get_ref();
        if !(1..=60000).contains(&u) {
            return Err(m.err(
                m.at(uid.span()),
                Some(&field("uid")),
                format!("{u}: the workspace user's uid is 1 to 60000 (never root)"),
            ));
        }
        s.uid = Some(u as u32);
    }
    if let Some(tags) = &raw.tags {
        let bad = tags
            .get_ref()
            .iter()
            .find(|(k, v)| !outpost_api::valid_tag_part(k) || !outpost_api::valid_tag_part(v));
        if let Some((k, v)) = bad {
            return Err(m.err(
                m.at(tags.span()),
                Some(&field("tags")),
                format!("{k:?} = {v:?}: a tag's key and value are 1-64 of A-Z a-z 0-9 _ . -"),
            ));
        }
        if tags.get_ref().len() > outpost_api::MAX_PROVISIONER_TAGS {
            return Err(m.err(
                m.at(tags.span()),
                Some(&field("tags")),
                format!("at most {} tags", outpost_api::MAX_PROVISIONER_TAGS),
            ));
        }
        s.tags = tags.get_ref().clone();
    }
    if kind == "docker" && s.image.is_none() {
        return Err(m.err(
            m.at(raw.kind.span()),
            Some(&field("image")),
            "a `docker` provisioner needs an `image` (e.g. image = \"outpost-dev:latest\")".into(),
        ));
    }
    Ok(s)
}

/// The parameter names a value refers to as `${param.NAME}`.
fn placeholders(v: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = v;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{v:?}: unclosed `${{` (write ${{param.NAME}})"))?;
        let inner = after[..end].trim();
        let name = inner
            .strip_prefix("param.")
            .ok_or_else(|| format!("{v:?}: `${{{inner}}}`: placeholders are ${{param.NAME}}"))?;
        names.push(name.to_string());
        rest = &after[end + 1..];
    }
    Ok(names)
}

fn fill(v: &str, params: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{v:?}: unclosed `${{`"))?;
        let name = after[..end].trim().trim_start_matches("param.");
        let value = params
            .get(name)
            .ok_or_else(|| format!("parameter {name:?} has no value"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// This build's settings: placeholders filled with `params`, then checked.
pub fn resolve(
    s: &ProvisionerSettings,
    params: &BTreeMap<String, String>,
) -> Result<Resolved, String> {
    let get = |name: &str, v: &Option<String>| -> Result<Option<String>, String> {
        v.as_deref()
            .map(|v| fill(v, params).map_err(|e| format!("provisioner.{name}: {e}")))
            .transpose()
    };
    let image = get("image", &s.image)?.unwrap_or_default();
    check_image(&image).map_err(|e| format!("provisioner.image: {e}"))?;
    let user = get("user", &s.user)?.unwrap_or_else(|| DEFAULT_USER.to_string());
    check_user(&user).map_err(|e| format!("provisioner.user: {e}"))?;
    let nano_cpus = match get("cpus", &s.cpus)? {
        Some(c) => Some(parse_cpus(&c).map_err(|e| format!("provisioner.cpus: {e}"))?),
        None => None,
    };
    let memory_bytes = match get("memory", &s.memory)? {
        Some(m) => Some(parse_memory(&m).map_err(|e| format!("provisioner.memory: {e}"))?),
        None => None,
    };
    Ok(Resolved {
        image,
        user,
        uid: s.uid.unwrap_or(DEFAULT_UID),
        nano_cpus,
        memory_bytes,
    })
}

fn check_image(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not an image reference like \"outpost-dev:latest\""
        ))
    }
}

fn check_user(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if v == "root" {
        return Err("the workspace user is never root".into());
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a Unix user name (lowercase letters, digits, _ and -)"
        ))
    }
}

/// `"1.5"` CPUs as billionths of a CPU.
pub fn parse_cpus(v: &str) -> Result<i64, String> {
    let c: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a number of CPUs like \"2\" or \"0.5\""))?;
    if !(0.01..=1024.0).contains(&c) {
        return Err(format!("{v:?}: CPUs are between 0.01 and 1024"));
    }
    Ok((c * 1e9).round() as i64)
}

/// `"512m"`, `"2g"`, `"1048576"` (bytes) as bytes.
pub fn parse_memory(v: &str) -> Result<i64, String> {
    let t = v.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a size like \"512m\" or \"2g\""))?;
    let bytes = n * mult as f64;
    if !(MIN_MEMORY as f64..=(1i64 << 50) as f64).contains(&bytes) {
        return Err(format!("{v:?}: memory is at least 6m"));
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
    }

    #[test]
    fn placeholders_fill_from_parameters() {
        let s = ProvisionerSettings {
            image: Some("outpost-dev:${param.tag}".into()),
            memory: Some("${param.memory}".into()),
            ..Default::default()
        };
        let params = BTreeMap::from([
            ("tag".to_string(), "v2".to_string()),
            ("memory".to_string(), "256m".to_string()),
        ]);
        let r = resolve(&s, &params).unwrap();
        assert_eq!(r.image, "outpost-dev:v2");
        assert_eq!(r.memory_bytes, Some(256 << 20));
        assert_eq!(r.user, "dev");
        assert_eq!(r.uid, 1000);
        let bad = BTreeMap::from([
            ("tag".to_string(), "v2; rm -rf /".to_string()),
            ("memory".to_string(), "256m".to_string()),
        ]);
        assert!(resolve(&s, &bad).unwrap_err().contains("provisioner.image"));
        assert!(placeholders("${env.HOME}").is_err());
        assert!(placeholders("${param.x").is_err());
    }
}
