//! `[[apps]]`: slugs, a port inside the workspace or a URL, share levels, health checks.

use std::collections::BTreeSet;

use outpost_api::{AppSpec, HealthcheckSpec, ShareLevel};

use super::raw::RawApp;
use super::{Manifest, TemplateError};

pub(super) fn validate(m: &Manifest, raw: Vec<RawApp>) -> Result<Vec<AppSpec>, TemplateError> {
    let mut apps = Vec::new();
    let mut slugs = BTreeSet::new();
    for (i, a) in raw.into_iter().enumerate() {
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
            return Err(m.err(
                m.at(a.slug.span()),
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
                        m.err(
                            m.at(p.span()),
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
                    return Err(m.err(
                        m.at(u.span()),
                        Some(&field("url")),
                        "an app URL starts with http:// or https://".into(),
                    ));
                }
                Some(s.clone())
            }
            None => None,
        };
        if port.is_some() == url.is_some() {
            return Err(m.err(
                m.at(a.slug.span()),
                Some(&field("port")),
                "an app has either a port inside the workspace or a url".into(),
            ));
        }
        let share = match &a.share {
            Some(s) => ShareLevel::parse(s.get_ref()).ok_or_else(|| {
                m.err(
                    m.at(s.span()),
                    Some(&field("share")),
                    format!("{:?}: share is owner, authenticated or public", s.get_ref()),
                )
            })?,
            None => ShareLevel::Owner,
        };
        let healthcheck = match a.healthcheck {
            Some(h) => {
                let u = h.url.get_ref();
                if !u.starts_with("http://") || u.len() > 2048 {
                    return Err(m.err(
                        m.at(h.url.span()),
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
                            m.err(
                                m.at(t.span()),
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
                            m.err(
                                m.at(t.span()),
                                Some(&field("healthcheck.threshold")),
                                "a threshold is 1-100 failures".into(),
                            )
                        })?,
                    None => 3,
                };
                Some(HealthcheckSpec {
                    url: u.clone(),
                    interval_secs,
                    threshold,
                })
            }
            None => None,
        };
        apps.push(AppSpec {
            display_name: a.display_name.unwrap_or_else(|| slug.clone()),
            slug,
            port,
            url,
            share,
            healthcheck,
        });
    }

    Ok(apps)
}
