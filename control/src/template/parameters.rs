//! `[[parameters]]`: names, types, validation rules and defaults; and checking values against
//! them when a workspace is created or updated.

use std::collections::{BTreeMap, BTreeSet};

use outpost_api::{ParameterSpec, ParameterType, TemplateManifest};

use super::raw::RawParameter;
use super::{Manifest, TemplateError};

pub(super) fn validate(
    m: &Manifest,
    raw: Vec<RawParameter>,
) -> Result<Vec<ParameterSpec>, TemplateError> {
    let mut parameters = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("parameters[{i}].{f}");
        let name = p.name.get_ref().clone();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(m.err(
                m.at(p.name.span()),
                Some(&field("name")),
                format!("{name:?} is not a valid name: use lowercase letters, digits and _"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(m.err(
                m.at(p.name.span()),
                Some(&field("name")),
                format!("duplicate parameter {name:?}"),
            ));
        }
        let kind = match p.kind.get_ref().as_str() {
            "string" => ParameterType::String,
            "number" => ParameterType::Number,
            "bool" => ParameterType::Bool,
            other => {
                return Err(m.err(
                    m.at(p.kind.span()),
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
                    return Err(m.err(
                        m.at(r.span()),
                        Some(&field("validation.regex")),
                        "regex applies to string parameters only".into(),
                    ));
                }
                regex::Regex::new(r.get_ref()).map_err(|e| {
                    m.err(
                        m.at(r.span()),
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
                        return Err(m.err(
                            m.at(b.span()),
                            Some(&field(fname)),
                            "min and max apply to number parameters only".into(),
                        ));
                    }
                    *slot = Some(*b.get_ref());
                }
            }
            if let (Some(lo), Some(hi)) = (spec.min, spec.max) {
                if lo > hi {
                    return Err(m.err(
                        None,
                        Some(&field("validation")),
                        format!("min ({lo}) is greater than max ({hi})"),
                    ));
                }
            }
            if let Some(o) = v.options {
                if o.get_ref().is_empty() {
                    return Err(m.err(
                        m.at(o.span()),
                        Some(&field("validation.options")),
                        "options must not be empty".into(),
                    ));
                }
                spec.options = o.into_inner();
            }
        }
        if let Some(d) = p.default {
            let line = m.at(d.span());
            let s = match (kind, d.get_ref()) {
                (ParameterType::String, toml::Value::String(s)) => s.clone(),
                (ParameterType::Number, toml::Value::Integer(n)) => n.to_string(),
                (ParameterType::Number, toml::Value::Float(n)) => n.to_string(),
                (ParameterType::Bool, toml::Value::Boolean(b)) => b.to_string(),
                (_, other) => {
                    return Err(m.err(
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
            validate_value(&spec, &s).map_err(|msg| m.err(line, Some(&field("default")), msg))?;
            spec.default = Some(s);
        }
        parameters.push(spec);
    }

    Ok(parameters)
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
    // Values that fill the provisioner's settings must make sense there too (a memory
    // limit, an image name): a value that would fail the build never reaches one.
    if manifest.provisioner == "docker" {
        super::settings::resolve(&manifest.provisioner_settings, &out)?;
    }
    Ok(out)
}
