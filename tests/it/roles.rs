//! Roles, walked as a table: a user of each role (owner, user admin, template admin, auditor,
//! member) tries every right-gated action; exactly the roles the table grants succeed, every
//! other attempt is refused (403, or 404 for another user's build) with nothing changed.

use std::collections::BTreeSet;

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const ROLES: [&str; 5] = ["owner", "user-admin", "template-admin", "auditor", "member"];

/// An action: the CLI words (`{role}` is replaced to keep names apart), stdin, who may.
struct Case {
    args: &'static [&'static str],
    stdin: &'static str,
    allowed: &'static [&'static str],
    /// Undoes a success (as the first admin), so the next role starts from the same state.
    undo: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        args: &["users", "list"],
        stdin: "",
        allowed: &["owner", "user-admin", "template-admin", "auditor"],
        undo: &[],
    },
    Case {
        args: &["users", "create", "new-{role}", "--password-stdin"],
        stdin: "a-long-password-1\n",
        allowed: &["owner", "user-admin"],
        undo: &[],
    },
    Case {
        args: &[
            "users",
            "create",
            "boss-{role}",
            "--admin",
            "--password-stdin",
        ],
        stdin: "a-long-password-1\n",
        allowed: &["owner"],
        undo: &[],
    },
    Case {
        args: &["users", "suspend", "victim"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &["users", "unsuspend", "victim"],
    },
    Case {
        args: &["users", "roles", "victim", "--set", "auditor"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &["users", "roles", "victim", "--set", "member"],
    },
    Case {
        args: &["users", "roles", "victim", "--set", "owner"],
        stdin: "",
        allowed: &["owner"],
        undo: &["users", "roles", "victim", "--set", "member"],
    },
    Case {
        args: &["templates", "push", "{dir}", "--name", "t-{role}"],
        stdin: "",
        allowed: &["owner", "template-admin"],
        undo: &[],
    },
    Case {
        args: &["templates", "edit", "base", "--activity-bump", "2h"],
        stdin: "",
        allowed: &["owner", "template-admin"],
        undo: &["templates", "edit", "base", "--activity-bump", "1h"],
    },
    Case {
        args: &["audit"],
        stdin: "",
        allowed: &["owner", "auditor"],
        undo: &[],
    },
    Case {
        args: &["list", "--all"],
        stdin: "",
        allowed: &["owner", "auditor"],
        undo: &[],
    },
];

fn roles_table(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    Client::new_user(&s, "victim")?;
    let mut users = Vec::new();
    for role in ROLES {
        let name = format!("u-{}", role.replace('-', ""));
        let c = if role == "owner" {
            // A second owner, made by the first.
            let c = Client::new_user(&s, &name)?;
            admin.ok(&["users", "roles", &name, "--set", "owner"])?;
            c
        } else {
            let c = Client::new_user(&s, &name)?;
            if role != "member" {
                admin.ok(&["users", "roles", &name, "--set", role])?;
            }
            c
        };
        users.push((role, c));
    }
    let listed = admin.json(&["users", "list"])?;
    for (role, c) in &users {
        let u = listed
            .as_array()
            .and_then(|a| a.iter().find(|u| u["username"] == c.name.as_str()))
            .cloned()
            .unwrap_or_default();
        let want: Vec<&str> = if *role == "member" {
            vec![]
        } else {
            vec![role]
        };
        assert_eq!(u["roles"], serde_json::json!(want), "{u}");
    }
    let dir = s.dir.path().join("tpl");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\n",
    )?;

    for case in CASES {
        let mut succeeded = BTreeSet::new();
        for (role, c) in &users {
            let args: Vec<String> = case
                .args
                .iter()
                .map(|a| {
                    a.replace("{role}", &role.replace('-', ""))
                        .replace("{dir}", &dir.display().to_string())
                })
                .collect();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let before = s.db_snapshot()?;
            let o = run_with_stdin(c.command(&argv), case.stdin)?;
            if o.status.success() {
                succeeded.insert(*role);
                if !case.undo.is_empty() {
                    admin.ok(case.undo)?;
                }
            } else {
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    err.contains("HTTP 403") && err.contains("that takes the role"),
                    "`outpost {}` as {role}: {err}",
                    args.join(" ")
                );
                assert_eq!(
                    s.db_snapshot()?,
                    before,
                    "`outpost {}` as {role} changed the store",
                    args.join(" ")
                );
            }
        }
        let want: BTreeSet<&str> = case.allowed.iter().copied().collect();
        assert_eq!(succeeded, want, "`outpost {}`", case.args.join(" "));
    }

    // Another user's build: owners and auditors read it; everyone else gets 404, as if it did
    // not exist.
    admin.ok(&["create", "dev", "--no-wait"])?;
    let build = s.workspace("dev")?["latest_build"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for (role, c) in &users {
        let token: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(c.config_dir.join("session.json"))?)?;
        let (code, _) = http(
            "GET",
            &format!("{}/api/v1/builds/{build}", s.url),
            token["token"].as_str(),
            None,
        )?;
        let want = if matches!(*role, "owner" | "auditor") {
            200
        } else {
            404
        };
        assert_eq!(code, want, "{role} reading another user's build");
    }
    // The last owner keeps the role.
    for other in ["u-owner", "boss-owner"] {
        admin.ok(&["users", "roles", other, "--set", "member"])?;
    }
    let e = run_with_stdin(
        admin.command(&["users", "roles", "admin", "--set", "member"]),
        "",
    )?;
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("last owner"));
    Ok(())
}
both_backends!(roles_table);
