//! `/healthz` and `/readyz` (issue 18): readiness follows the store and the provisioners, with
//! the failing check and what to do in the answer; the process stays healthy throughout.

use crate::both_backends;
use crate::harness::*;
use crate::provisioners::{daemon, make_key};
use crate::replica_rig::PrivatePg;
use serde_json::Value;

fn readyz(s: &Server) -> R<(u16, Value)> {
    http("GET", &format!("{}/readyz", s.url), None, None)
}

fn healthz(s: &Server) -> R<u16> {
    Ok(http("GET", &format!("{}/healthz", s.url), None, None)?.0)
}

/// No daemon anywhere: not ready, saying how to start one; an external daemon connects: ready.
fn readiness_follows_the_provisioners(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--provisioner-daemons", "0"])?;
    assert_eq!(healthz(&s)?, 200);
    let (code, v) = readyz(&s)?;
    assert_eq!(code, 503, "{v:#}");
    assert_eq!(v["status"], "not ready");
    assert_eq!(v["checks"]["store"]["ok"], true, "{v:#}");
    assert_eq!(v["checks"]["migrations"]["ok"], true, "{v:#}");
    assert_eq!(v["checks"]["provisioners"]["ok"], false, "{v:#}");
    let detail = v["checks"]["provisioners"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("outpost provisioner start"), "{detail}");
    // Nothing in the answer needs a token, and nothing secret is in it.
    assert!(!v.to_string().contains("postgres://"), "{v:#}");

    let key = make_key(&s, "k-ready", &[])?;
    let _d = daemon(&s, &key, "d-ready")?;
    let v = eventually(|| {
        let (code, v) = readyz(&s)?;
        Ok((code == 200).then_some(v))
    })?;
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["provisioners"]["ok"], true, "{v:#}");
    // A server with its own daemons is ready at once.
    let t = match &s.backend {
        Backend::Sqlite => Server::start(Backend::Sqlite)?,
        pg => crate::replica_rig::replica_of(&s, pg.clone(), &[])?,
    };
    let (code, v) = readyz(&t)?;
    assert_eq!(code, 200, "{v:#}");
    Ok(())
}
both_backends!(readiness_follows_the_provisioners);

/// The database goes away: `/readyz` says the store is unreachable (a load balancer takes the
/// replica out) while `/healthz` stays up (no restart wanted); it comes back: ready again, the
/// same process.
#[test]
fn readiness_follows_the_database() -> R {
    let Some(pg) = PrivatePg::start()? else {
        return Ok(());
    };
    let s = Server::start(Backend::Postgres(pg.url()))?;
    let pid = s.pid();
    assert_eq!(readyz(&s)?.0, 200);
    pg.ctl(&["stop"])?;
    let v = eventually(|| {
        let (code, v) = readyz(&s)?;
        Ok((code == 503).then_some(v))
    })?;
    assert_eq!(v["checks"]["store"]["ok"], false, "{v:#}");
    let detail = v["checks"]["store"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("--postgres-url"), "{detail}");
    assert_eq!(healthz(&s)?, 200);
    pg.ctl(&["start"])?;
    eventually(|| Ok((readyz(&s)?.0 == 200).then_some(())))?;
    assert_eq!(s.pid(), pid);
    Ok(())
}
