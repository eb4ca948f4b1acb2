//! Organizations, groups and quotas: templates restricted to groups and organizations are
//! invisible to everyone else; creating or starting past a quota is refused with the numbers,
//! audited, and changes nothing.

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn fails(c: &Client, args: &[&str]) -> R<String> {
    let o = run_with_stdin(c.command(args), "")?;
    assert!(
        !o.status.success(),
        "`outpost {}` succeeded",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Groups restrict templates; organizations scope them.
fn groups_and_organizations_scope_templates(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--allow-unisolated-users"])?;
    let admin = Client::admin(&s)?;
    let alice = Client::new_user(&s, "alice")?;
    let bob = Client::new_user(&s, "bob")?;
    let tina = Client::new_user(&s, "tina")?;
    admin.ok(&["users", "roles", "tina", "--set", "template-admin"])?;
    push_local_template(&s, "secret", "")?;
    admin.ok(&["groups", "create", "devs"])?;
    admin.ok(&["groups", "add", "devs", "alice"])?;
    let t = admin.json(&["templates", "groups", "secret", "--groups", "devs"])?;
    assert_eq!(t["groups"], serde_json::json!(["devs"]));
    assert!(names(&alice.json(&["templates", "list"])?).contains(&"secret".to_string()));
    assert!(!names(&bob.json(&["templates", "list"])?).contains(&"secret".to_string()));
    assert!(names(&tina.json(&["templates", "list"])?).contains(&"secret".to_string()));
    let e = fails(&bob, &["templates", "show", "secret"])?;
    assert!(e.contains("no template"), "{e}");
    let before = s.db_snapshot()?;
    let e = fails(&bob, &["create", "x", "-t", "secret", "--no-wait"])?;
    assert!(e.contains("no template"), "{e}");
    assert_eq!(s.db_snapshot()?, before);
    alice.ok(&["create", "a1", "-t", "secret", "--no-wait"])?;
    // Opened to the whole organization again.
    admin.ok(&["templates", "groups", "secret", "--groups", ""])?;
    assert!(names(&bob.json(&["templates", "list"])?).contains(&"secret".to_string()));

    // An organization of its own.
    let e = fails(&tina, &["orgs", "create", "research"])?;
    assert!(e.contains("HTTP 403"), "{e}");
    admin.ok(&["orgs", "create", "research"])?;
    let dir = s.dir.path().join("lab");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\n",
    )?;
    admin.ok(&[
        "templates",
        "push",
        &dir.display().to_string(),
        "--org",
        "research",
    ])?;
    assert_eq!(
        admin.json(&["templates", "show", "lab"])?["template"]["organization"],
        "research"
    );
    assert!(!names(&bob.json(&["templates", "list"])?).contains(&"lab".to_string()));
    admin.ok(&["orgs", "add", "research", "bob"])?;
    assert!(names(&bob.json(&["templates", "list"])?).contains(&"lab".to_string()));
    let orgs = bob.json(&["orgs", "list"])?;
    assert_eq!(names(&orgs), vec!["default", "research"]);
    // Groups list with members, for those who may list users.
    let groups = tina.json(&["groups", "list"])?;
    assert!(groups.to_string().contains("alice"), "{groups}");
    let e = fails(&bob, &["groups", "list"])?;
    assert!(e.contains("HTTP 403"), "{e}");
    Ok(())
}
both_backends!(groups_and_organizations_scope_templates);

/// A limit on workspaces per user, and a group budget of cost units against each template
/// version's cost: past either, create and start are refused with the numbers.
fn quotas_refuse_with_numbers(backend: Backend) -> R {
    let s = Server::start_with(backend, &["--allow-unisolated-users"])?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    // Default: no limit.
    let q = bob.json(&["quotas", "show"])?;
    assert!(
        q["workspaces_limit"].is_null() && q["budget"].is_null(),
        "{q}"
    );
    let e = fails(&bob, &["quotas", "set", "--workspaces-per-user", "9"])?;
    assert!(e.contains("HTTP 403"), "{e}");
    admin.ok(&["quotas", "set", "--workspaces-per-user", "1"])?;
    bob.ok(&["create", "one"])?;
    let before = s.db_snapshot()?;
    let e = fails(&bob, &["create", "two", "--no-wait"])?;
    assert!(
        e.contains("workspace number 2 and the limit is 1 per user"),
        "{e}"
    );
    assert_eq!(s.db_snapshot()?, before);
    admin.ok(&["quotas", "set", "--workspaces-per-user", "none"])?;

    // Cost units: a template of cost 2, a group with a budget of 3.
    let dir = s.dir.path().join("pricey");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "cost = 2\n\n[provisioner]\ntype = \"local\"\n",
    )?;
    admin.ok(&["templates", "push", &dir.display().to_string()])?;
    admin.ok(&["groups", "create", "team", "--budget", "3"])?;
    admin.ok(&["groups", "add", "team", "bob"])?;
    bob.ok(&["create", "p1", "-t", "pricey"])?;
    let q = bob.json(&["quotas", "show"])?;
    assert_eq!(
        (q["cost_in_use"].as_i64(), q["budget"].as_i64()),
        (Some(2), Some(3)),
        "{q}"
    );
    let before = s.db_snapshot()?;
    let e = fails(&bob, &["create", "p2", "-t", "pricey", "--no-wait"])?;
    assert!(
        e.contains("costs 2 quota units; your running workspaces use 2 of your groups' budget of 3, so 4 would be over it"),
        "{e}"
    );
    assert_eq!(s.db_snapshot()?, before);
    // A second group adds its budget.
    admin.ok(&["groups", "create", "extra", "--budget", "1"])?;
    admin.ok(&["groups", "add", "extra", "bob"])?;
    bob.ok(&["create", "p2", "-t", "pricey"])?;
    // Starting counts too: stop one, the other group's budget goes, then start is refused.
    bob.ok(&["stop", "p2"])?;
    admin.ok(&["groups", "delete", "extra"])?;
    let e = fails(&bob, &["start", "p2"])?;
    assert!(e.contains("would be over it"), "{e}");
    // Restarting a running one is not double-counted.
    bob.ok(&["restart", "p1"])?;
    let audit = admin.json(&["audit", "--action", "workspace.quota"])?;
    assert_eq!(audit.as_array().map(Vec::len), Some(3), "{audit:#}");
    Ok(())
}
both_backends!(quotas_refuse_with_numbers);
