//! `template.toml`: parsing and validation into a [`TemplateManifest`], and parameter checks.
//!
//! Errors name the file, the line and the field. [`parse`] checks the files, then hands each
//! section to its validator: `agent.rs`, `parameters.rs` (also value checks), `scripts.rs`,
//! `apps.rs`; `raw.rs` holds the serde shapes.

mod agent;
mod apps;
mod parameters;
mod raw;
mod scripts;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt;

use outpost_api::TemplateManifest;

pub use parameters::{resolve_parameters, validate_value};

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

pub const PROVISIONERS: &[&str] = &["local", "docker"];
const MAX_FILES: usize = 256;
const DEFAULT_CONNECTION_TIMEOUT_SECS: u64 = 120;

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// The manifest's text, so a validator's error can name the line a span starts on.
struct Manifest<'a> {
    src: &'a str,
}

impl Manifest<'_> {
    fn at(&self, span: std::ops::Range<usize>) -> Option<usize> {
        Some(line_of(self.src, span.start))
    }

    fn err(&self, line: Option<usize>, field: Option<&str>, message: String) -> TemplateError {
        TemplateError {
            file: MANIFEST_FILE.to_string(),
            line,
            field: field.map(str::to_string),
            message,
        }
    }
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
    let raw: raw::Raw = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        // toml has no words for some syntax errors (a carriage return without a line feed, a
        // control character in a comment): say what such a line holds instead of nothing.
        let msg = match e.message().trim() {
            "" => "invalid TOML: a carriage return without a line feed, or a control character, on this line (save the file with Unix line endings and printable text)".to_string(),
            m => m.to_string(),
        };
        err(MANIFEST_FILE, line, None, msg)
    })?;
    let m = Manifest { src };

    let prov = raw.provisioner.get_ref();
    if !PROVISIONERS.contains(&prov.kind.get_ref().as_str()) {
        return Err(m.err(
            m.at(prov.kind.span()),
            Some("provisioner.type"),
            format!(
                "unknown provisioner {:?}; supported: {}",
                prov.kind.get_ref(),
                PROVISIONERS.join(", ")
            ),
        ));
    }

    let agent = agent::validate(&m, raw.agent)?;
    let parameters = parameters::validate(&m, raw.parameters)?;
    let provisioner_settings = settings::validate(&m, prov, &parameters)?;
    let scripts = scripts::validate(&m, raw.scripts, files)?;
    let apps = apps::validate(&m, raw.apps)?;
    let cost = match &raw.cost {
        Some(c) if !(0..=1_000_000).contains(c.get_ref()) => {
            return Err(m.err(
                m.at(c.span()),
                Some("cost"),
                "must be between 0 and 1000000 (quota units per running workspace)".into(),
            ));
        }
        Some(c) => *c.get_ref(),
        None => 0,
    };
    Ok(TemplateManifest {
        cost,
        scripts,
        apps,
        description: raw.description,
        provisioner: prov.kind.get_ref().clone(),
        provisioner_settings,
        agent,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(toml: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(MANIFEST_FILE.to_string(), toml.to_string())])
    }

    #[test]
    fn base_template_parses() {
        let m = parse(&files(include_str!(
            "../../../templates/base/template.toml"
        )));
        assert!(m.is_ok(), "{m:?}");
    }

    #[test]
    fn silent_toml_errors_get_words() {
        // Found by `cargo xtask fuzz` (template_parse): toml gives these no message.
        for src in ["\r", " \r", "#\r", "#\u{12}", "#\0"] {
            let e = parse(&files(src)).unwrap_err();
            assert!(e.message.contains("carriage return"), "{src:?}: {e}");
            assert_eq!(e.line, Some(1));
        }
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
        let e = parse(&files("[provisioner]\ntype = \"kubernetes\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("provisioner.type"));
        assert_eq!(e.line, Some(2));
        let e = parse(&files("[provisioner]\ntype = \"docker\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("provisioner.image"));
        let e = parse(&files("[provisioner]\ntype = \"local\"\nmemory = \"1g\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("provisioner.memory"));
        let e = parse(&files(
            "[provisioner]\ntype = \"docker\"\nimage = \"${param.nope}\"\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("names no parameter"), "{e}");
        assert_eq!(e.line, Some(3));
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
