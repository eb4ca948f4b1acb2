//! Users (issue 16): deleting a user (their SSH session ends, their token is refused, their
//! workspace's home is gone, they leave `users list`, the name is free again; user admins cannot
//! delete an owner, nobody deletes themselves or the last owner), password changes (own with
//! the current one, an admin's; other sessions end, this one stays; short ones change
//! nothing), and the account's dotfiles repository filling in templates' `dotfiles_uri`.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

fn token_of(c: &Client) -> R<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(c.config_dir.join("session.json"))?)?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

fn login(s: &Server, user: &str, password: &str) -> R<u16> {
    let (code, _) = post_json(
        &format!("{}/api/v1/login", s.url),
        None,
        &json!({"username": user, "password": password}),
    )?;
    Ok(code)
}

fn usernames(s: &Server) -> R<Vec<String>> {
    Ok(s.json(&["users", "list"])?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_string))
        .collect())
}

fn fails(c: &Client, args: &[&str], stdin: &str) -> R<String> {
    let o = run_with_stdin(c.command(args), stdin)?;
    anyhow::ensure!(
        !o.status.success(),
        "`outpost {}` as {} succeeded",
        args.join(" "),
        c.name
    );
    Ok(String::from_utf8_lossy(&o.stderr).into_owned())
}

both_backends!(delete_user);
fn delete_user(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    bob.ok(&["create", "dev"])?;
    let w = bob.json(&["show", "dev"])?;
    let home = home_of(&w);
    assert!(home.is_dir(), "{}", home.display());
    let token = token_of(&bob)?;
    let mut session = bob
        .ssh_command("dev", "echo connected; sleep 120")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut first = [0u8; 10];
    session
        .stdout
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?
        .read_exact(&mut first)?;
    assert_eq!(&first, b"connected\n");

    // A user admin cannot delete an owner; nobody deletes themselves (the last owner, here).
    let ua = Client::new_user(&s, "ua")?;
    s.ok(&["users", "roles", "ua", "--set", "user-admin"])?;
    let err = fails(&ua, &["users", "delete", "admin", "--yes"], "")?;
    assert!(err.contains("owner"), "{err}");
    let err = fails(&admin, &["users", "delete", "admin", "--yes"], "")?;
    assert!(err.contains("yourself"), "{err}");
    let err = fails(&bob, &["users", "delete", "ua", "--yes"], "")?;
    assert!(err.contains("may not"), "{err}");
    // Without --yes and no terminal: nothing happens.
    fails(&ua, &["users", "delete", "bob"], "")?;
    assert!(usernames(&s)?.contains(&"bob".to_string()));

    // The user admin deletes bob and waits for his workspace's delete.
    let o = run_with_stdin(ua.command(&["users", "delete", "bob", "--yes"]), "")?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("workspace dev: deleted"), "{err}");
    // His SSH session ended, his token is refused, his home is gone, he is not listed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while session.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = session.try_wait()?.is_some();
    let _ = session.kill();
    let _ = session.wait();
    assert!(ended, "the SSH session outlived the deletion");
    let (code, _) = http(
        "GET",
        &format!("{}/api/v1/workspaces", s.url),
        Some(&token),
        None,
    )?;
    assert_eq!(code, 401);
    assert!(!home.exists(), "{} is still there", home.display());
    assert!(!usernames(&s)?.contains(&"bob".to_string()));
    assert_eq!(login(&s, "bob", "bob-password-1")?, 401);
    // Deleting him again: no such user.
    let err = fails(&ua, &["users", "delete", "bob", "--yes"], "")?;
    assert!(err.contains("no user"), "{err}");
    // The name is free at once: a new bob is someone else, with nothing of the old one.
    let o = s.cli_stdin(
        &["users", "create", "bob", "--password-stdin"],
        "bob-password-2\n",
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, v) = post_json(
        &format!("{}/api/v1/login", s.url),
        None,
        &json!({"username": "bob", "password": "bob-password-2"}),
    )?;
    assert_eq!(code, 200);
    let (code, list) = http(
        "GET",
        &format!("{}/api/v1/workspaces", s.url),
        v["token"].as_str(),
        None,
    )?;
    assert_eq!((code, list), (200, json!([])));
    Ok(())
}

both_backends!(change_password);
fn change_password(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    let bob = Client::new_user(&s, "bob")?;
    let other = bob.ok(&["tokens", "create", "script"])?.trim().to_string();
    let bob_session = token_of(&bob)?;

    // A short new password: 400, nothing changed.
    let (code, _) = http(
        "PUT",
        &format!("{}/api/v1/users/me/password", s.url),
        Some(&bob_session),
        Some((
            "application/json",
            json!({"current_password": "bob-password-1", "new_password": "short"})
                .to_string()
                .as_bytes(),
        )),
    )?;
    assert_eq!(code, 400);
    let (code, _) = http(
        "PUT",
        &format!("{}/api/v1/users/bob/password", s.url),
        Some(&s.token()?),
        Some((
            "application/json",
            json!({"new_password": "short"}).to_string().as_bytes(),
        )),
    )?;
    assert_eq!(code, 400);
    assert_eq!(login(&s, "bob", "bob-password-1")?, 200);
    // A wrong current password changes nothing.
    let err = fails(
        &bob,
        &["users", "password", "--password-stdin"],
        "not-my-password\nnew-password-2\n",
    )?;
    assert!(err.contains("current password"), "{err}");
    assert_eq!(login(&s, "bob", "bob-password-1")?, 200);
    // A member cannot change another's.
    let err = fails(
        &bob,
        &["users", "password", "admin", "--password-stdin"],
        "bob-owns-you-now\n",
    )?;
    assert!(err.contains("may not"), "{err}");
    assert_eq!(login(&s, "admin", "admin-password")?, 200);

    // Bob changes his own: the old password is refused, the new one works; his other token
    // ends, this CLI session stays.
    let o = run_with_stdin(
        bob.command(&["users", "password", "--password-stdin"]),
        "bob-password-1\nnew-password-2\n",
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(login(&s, "bob", "bob-password-1")?, 401);
    assert_eq!(login(&s, "bob", "new-password-2")?, 200);
    let (code, _) = http(
        "GET",
        &format!("{}/api/v1/users/me", s.url),
        Some(&other),
        None,
    )?;
    assert_eq!(code, 401);
    bob.ok(&["whoami"])?;

    // A user admin cannot change an owner's; an owner changes bob's, which ends all of his.
    let ua = Client::new_user(&s, "ua")?;
    s.ok(&["users", "roles", "ua", "--set", "user-admin"])?;
    fails(
        &ua,
        &["users", "password", "admin", "--password-stdin"],
        "ua-owns-you-now\n",
    )?;
    assert_eq!(login(&s, "admin", "admin-password")?, 200);
    let o = run_with_stdin(
        admin.command(&["users", "password", "bob", "--password-stdin"]),
        "set-by-admin-3\n",
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(login(&s, "bob", "new-password-2")?, 401);
    assert_eq!(login(&s, "bob", "set-by-admin-3")?, 200);
    fails(&bob, &["whoami"], "")?;
    Ok(())
}

both_backends!(dotfiles_setting);
fn dotfiles_setting(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let uri = format!("file://{}/no-such-dotfiles.git", s.dir.path().display());
    assert_eq!(s.json(&["users", "dotfiles"])?["dotfiles_uri"], Value::Null);
    for bad in ["-oops", "not a url", "nohost"] {
        let o = s.cli(&["users", "dotfiles", "--", bad])?;
        assert!(!o.status.success(), "{bad:?} was accepted");
    }
    assert_eq!(s.json(&["users", "dotfiles"])?["dotfiles_uri"], Value::Null);
    let v = s.json(&["users", "dotfiles", &uri])?;
    assert_eq!(v["dotfiles_uri"], uri.as_str());
    assert_eq!(
        s.json(&["users", "dotfiles"])?["dotfiles_uri"],
        uri.as_str()
    );

    // A new workspace of a template with the parameter gets the account's value...
    s.ok(&["create", "dev", "--no-wait"])?;
    assert_eq!(
        s.workspace("dev")?["parameters"]["dotfiles_uri"],
        uri.as_str()
    );
    // ...unless it is given one (even empty).
    s.ok(&["create", "nodot", "--no-wait", "-p", "dotfiles_uri="])?;
    assert_eq!(s.workspace("nodot")?["parameters"]["dotfiles_uri"], "");
    // A template without the parameter is untouched.
    push_local_template(&s, "plain", "")?;
    s.ok(&["create", "plainws", "--template", "plain", "--no-wait"])?;
    assert_eq!(s.workspace("plainws")?["parameters"], json!({}));

    s.ok(&["users", "dotfiles", "--clear"])?;
    assert_eq!(s.json(&["users", "dotfiles"])?["dotfiles_uri"], Value::Null);
    s.ok(&["create", "later", "--no-wait"])?;
    assert_eq!(s.workspace("later")?["parameters"]["dotfiles_uri"], "");
    Ok(())
}
