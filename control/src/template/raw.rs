//! `template.toml` as written: serde shapes with spans, for messages that name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default)]
    pub(super) description: String,
    pub(super) provisioner: Spanned<RawProvisioner>,
    #[serde(default)]
    pub(super) agent: Option<RawAgent>,
    #[serde(default)]
    pub(super) parameters: Vec<RawParameter>,
    #[serde(default)]
    pub(super) scripts: Vec<RawScript>,
    #[serde(default)]
    pub(super) apps: Vec<RawApp>,
    /// Quota cost units per running workspace.
    #[serde(default)]
    pub(super) cost: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub(super) slug: Spanned<String>,
    #[serde(default)]
    pub(super) display_name: Option<String>,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) url: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) share: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) healthcheck: Option<RawHealthcheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthcheck {
    pub(super) url: Spanned<String>,
    #[serde(default)]
    pub(super) interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) threshold: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScript {
    pub(super) name: Spanned<String>,
    pub(super) script: String,
    #[serde(default)]
    pub(super) run_on_start: Option<bool>,
    #[serde(default)]
    pub(super) cron: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) run_on_stop: bool,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) blocks_login: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvisioner {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) image: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) user: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) uid: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) cpus: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) memory: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) tags: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) connection_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ssh_listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParameter {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) description: String,
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) default: Option<Spanned<toml::Value>>,
    #[serde(default = "yes")]
    pub(super) mutable: bool,
    #[serde(default)]
    pub(super) validation: Option<RawValidation>,
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    #[serde(default)]
    pub(super) regex: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) min: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) max: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) options: Option<Spanned<Vec<String>>>,
}
