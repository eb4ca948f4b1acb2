//! `[agent]`: environment, connection timeout, the direct SSH listen address.

use std::collections::BTreeMap;

use outpost_api::AgentSettings;

use super::raw::RawAgent;
use super::{Manifest, TemplateError, DEFAULT_CONNECTION_TIMEOUT_SECS};

pub(super) fn validate(
    m: &Manifest,
    raw: Option<RawAgent>,
) -> Result<AgentSettings, TemplateError> {
    let mut agent = AgentSettings {
        env: BTreeMap::new(),
        connection_timeout_secs: DEFAULT_CONNECTION_TIMEOUT_SECS,
        ssh_listen: None,
    };
    if let Some(a) = raw {
        for k in a.env.keys() {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || k.starts_with("OUTPOST_") {
                return Err(m.err(
                    None,
                    Some(&format!("agent.env.{k}")),
                    "environment names are letters, digits and _, and OUTPOST_* is reserved".into(),
                ));
            }
        }
        agent.env = a.env;
        if let Some(l) = a.ssh_listen {
            if l.get_ref().parse::<std::net::SocketAddr>().is_err() {
                return Err(m.err(
                    m.at(l.span()),
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
                m.err(
                    m.at(t.span()),
                    Some("agent.connection_timeout"),
                    format!("{e} (write e.g. \"90s\" or \"5m\")"),
                )
            })?;
            if d.as_secs() == 0 || d.as_secs() > 24 * 3600 {
                return Err(m.err(
                    m.at(t.span()),
                    Some("agent.connection_timeout"),
                    "must be between 1s and 24h".into(),
                ));
            }
            agent.connection_timeout_secs = d.as_secs();
        }
    }

    Ok(agent)
}
