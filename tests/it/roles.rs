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
        args: &["users", "password", "victim", "--password-stdin"],
        stdin: "a-long-password-2\n",
        allowed: &["owner", "user-admin"],
        undo: &[],
    },
    Case {
        // Each role tries to delete a member of its own (`del-ROLE`).
        args: &["users", "delete", "del-{role}", "--yes"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &[],
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
        args: &["groups", "list"],
        stdin: "",
        allowed: &["owner", "user-admin", "template-admin", "auditor"],
        undo: &[],
    },
    Case {
        args: &["groups", "create", "g-{role}"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &[],
    },
    Case {
        args: &["groups", "add", "crew", "victim"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &["groups", "remove", "crew", "victim"],
    },
    Case {
        args: &["groups", "budget", "crew", "5"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &["groups", "budget", "crew", "none"],
    },
    Case {
        args: &["templates", "groups", "base", "--groups", "crew"],
        stdin: "",
        allowed: &["owner", "template-admin"],
        undo: &["templates", "groups", "base", "--groups", ""],
    },
    Case {
        args: &["orgs", "create", "o-{role}"],
        stdin: "",
        allowed: &["owner"],
        undo: &[],
    },
    Case {
        args: &["orgs", "add", "default", "victim"],
        stdin: "",
        allowed: &["owner", "user-admin"],
        undo: &[],
    },
    Case {
        args: &["quotas", "set", "--workspaces-per-user", "7"],
        stdin: "",
        allowed: &["owner"],
        undo: &["quotas", "set", "--workspaces-per-user", "none"],
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
    for role in ROLES {
        let o = s.cli_stdin(
            &[
                "users",
                "create",
                &format!("del-{}", role.replace('-', "")),
                "--password-stdin",
            ],
            "a-long-password-1\n",
        )?;
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    admin.ok(&["groups", "create", "crew"])?;
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

/// Owners act on anyone's workspace as `OWNER/NAME` (show, stop, start, delete; every build
/// audited with who asked), auditors only see it, members do not even see it; without
/// `--allow-owner-workspace-access` nobody gets into someone else's workspace: its SSH relay,
/// terminal, ports and apps stay its owner's (owners are told why, and the refusal audited).
fn owners_act_on_any_workspace(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    let aud = Client::new_user(&s, "aud")?;
    let mem = Client::new_user(&s, "mem")?;
    admin.ok(&["users", "roles", "aud", "--set", "auditor"])?;
    bob.ok(&["create", "dev"])?;
    let all = admin.json(&["list", "--all"])?;
    assert!(
        all.as_array()
            .is_some_and(|a| a.iter().any(|w| w["owner"] == "bob" && w["name"] == "dev")),
        "{all:#}"
    );
    assert_eq!(admin.json(&["show", "bob/dev"])?["owner"], "bob");
    assert_eq!(aud.json(&["show", "bob/dev"])?["status"], "running");
    let o = run_with_stdin(aud.command(&["stop", "bob/dev"]), "")?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("act on other users' workspaces"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for args in [["show", "bob/dev"], ["stop", "bob/dev"]] {
        let o = run_with_stdin(mem.command(&args), "")?;
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 404"));
    }
    // Into it: no (the server was not started with --allow-owner-workspace-access). Its page,
    // yes; its terminal and ports: 403 saying why, audited.
    let token = s.token()?;
    for (path, want) in [
        ("/@bob/dev/", 200),
        ("/@bob/dev/terminal", 403),
        ("/@bob/dev/ports/22/", 403),
    ] {
        let (url, cookie) = (
            format!("{}{path}", s.url),
            format!("outpost_session={token}"),
        );
        let code = rt().block_on(async move {
            let c = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            R::Ok(
                c.get(&url)
                    .header("cookie", cookie)
                    .send()
                    .await?
                    .status()
                    .as_u16(),
            )
        })?;
        assert_eq!(code, want, "{path}");
    }
    // The relay and the terminal, asked for as a client would (an upgrade).
    for (path, upgrade) in [
        ("/api/v1/workspaces/bob%2Fdev/relay/ssh", "Upgrade: outpost-relay\r\n"),
        (
            "/api/v1/workspaces/bob%2Fdev/pty?session=x",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
    ] {
        use std::io::{Read, Write};
        let addr = s.url.trim_start_matches("http://").to_string();
        let mut c = std::net::TcpStream::connect(&addr)?;
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\n{upgrade}\r\n")
                .as_bytes(),
        )?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf)?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 403"), "{path}: {head}");
    }
    // (Audit events are written in batches.)
    eventually(|| {
        let refused = admin.json(&["audit", "--action", "workspace.connect"])?;
        let n = refused
            .as_array()
            .map(|a| a.iter().filter(|e| e["outcome"] == "refused").count());
        anyhow::ensure!(n <= Some(4), "{refused:#}");
        Ok((n == Some(4)).then_some(()))
    })?;
    admin.ok(&["stop", "bob/dev"])?;
    assert_eq!(bob.json(&["show", "dev"])?["status"], "stopped");
    admin.ok(&["start", "bob/dev"])?;
    assert_eq!(bob.json(&["show", "dev"])?["status"], "running");
    let audit = admin.json(&["audit", "--action", "workspace.build"])?;
    let text = audit.to_string();
    assert!(
        text.contains("bob/dev: stop") && text.contains("\"admin\""),
        "{text}"
    );
    admin.ok(&["delete", "bob/dev"])?;
    let list = bob.json(&["list"])?;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list:#}");
    Ok(())
}
both_backends!(owners_act_on_any_workspace);
