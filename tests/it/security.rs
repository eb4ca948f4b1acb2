//! Attacks on the edges between users, read as an attacker would: what a process inside a
//! workspace can do with the credentials it finds there (the CLI's workspace credential, the
//! agent's own certificate), and what a superseded agent certificate still opens. Each attack
//! runs against the real binaries, fails, changes nothing, and the legitimate use still works.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::clients::Client;
use crate::harness::*;

const T: Duration = Duration::from_secs(60);

fn running(w: &Value) -> bool {
    w["status"] == "running" && w["agent"]["status"] == "connected"
}

/// A shell script run inside the workspace over SSH: each line `NAME RC` is one attempt with
/// the CLI's workspace credential (what any process in the workspace gets from cli.sock).
const ATTEMPTS: &str = r#"
try() { name=$1; shift; "$@" >$HOME/attempt.out 2>&1; rc=$?; echo "$name $rc"; head -c 300 $HOME/attempt.out | tr "\n" " " | sed "s/^/# /"; echo; }
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl planted' > $HOME/planted.pub
try keys-add outpost keys add $HOME/planted.pub
try keys-list outpost keys list
try tokens-list outpost tokens list
try tokens-create outpost tokens create more
try publickey outpost publickey
try users-create sh -c 'echo password-123 | outpost users create eve --password-stdin'
try templates-list outpost templates list
try audit outpost audit
try show-other outpost show other
try stop-other outpost stop other --no-wait
try delete-other outpost delete other --no-wait
try start-self outpost start w --no-wait
try delete-self outpost delete w --no-wait
try ssh-other outpost ssh other -- true
try relay-raw python3 -c '
import json, os, socket, sys, urllib.request
s = socket.socket(socket.AF_UNIX); s.connect(os.environ["OUTPOST_AGENT_SOCKET"])
cred = json.loads(s.makefile().readline())
for path in ["/api/v1/workspaces/other/relay/tcp/22", "/api/v1/workspaces/other/relay/ssh", "/api/v1/users/me/gitsshkey", "/api/v1/workspaces/w/relay/ssh"]:
    req = urllib.request.Request(cred["url"] + path, headers={"Authorization": "Bearer " + cred["token"], "Connection": "upgrade", "Upgrade": "outpost-relay"})
    try:
        urllib.request.urlopen(req)
        sys.exit(0)
    except urllib.error.HTTPError as e:
        if e.code != 403:
            sys.exit(0)
sys.exit(1)
'
try show-self outpost --json show w
try list-self sh -c 'outpost --json list > $HOME/list.json'
"#;

/// The workspace credential reaches its own workspace (show, list, logs, stop, restart) and
/// nothing else: no keys, tokens, users, templates, audit, relays, or the owner's other
/// workspaces. The git key never leaves control: the agent's own certificate gets the public
/// key and signatures, never the private key.
fn workspace_credential_is_scoped(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    admin.ok(&["create", "other"])?;
    admin.ok(&["create", "w"])?;
    s.wait_for("w", T, running)?;
    let keys_before = admin.json(&["keys", "list"])?;
    let tokens_before = s.db_rows("SELECT COUNT(*) FROM api_tokens WHERE scope IS NULL")?;
    let out = admin.sh("w", ATTEMPTS)?;
    let rc: std::collections::HashMap<&str, &str> =
        out.lines().filter_map(|l| l.rsplit_once(' ')).collect();
    for refused in [
        "keys-add",
        "keys-list",
        "tokens-list",
        "tokens-create",
        "publickey",
        "users-create",
        "templates-list",
        "audit",
        "show-other",
        "stop-other",
        "delete-other",
        "start-self",
        "delete-self",
        "ssh-other",
        "relay-raw",
    ] {
        assert_ne!(
            rc.get(refused).copied(),
            Some("0"),
            "{refused} worked with a workspace credential:\n{out}"
        );
        assert!(rc.contains_key(refused), "{refused} did not run:\n{out}");
    }
    assert_eq!(rc.get("show-self").copied(), Some("0"), "{out}");
    assert_eq!(rc.get("list-self").copied(), Some("0"), "{out}");
    let listed: Value = serde_json::from_str(&admin.sh("w", "cat $HOME/list.json")?)?;
    let names: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|w| w["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["w"], "only its own workspace is listed");
    // The refusal says what to do.
    let err = admin.sh("w", "outpost keys list 2>&1 || true")?;
    assert!(err.contains("outpost login"), "{err}");

    // Nothing changed: the other workspace runs, no key, token or user was added.
    assert!(running(&s.workspace("other")?));
    assert_eq!(admin.json(&["keys", "list"])?, keys_before);
    assert_eq!(
        s.db_rows("SELECT COUNT(*) FROM api_tokens WHERE scope IS NULL")?,
        tokens_before
    );
    assert!(s
        .db_rows("SELECT id FROM users WHERE username = 'eve'")?
        .is_empty());
    eventually(|| {
        let refusals = s.json(&["audit", "--action", "token.scope", "--outcome", "rejected"])?;
        Ok((refusals.as_array().map(Vec::len).unwrap_or(0) >= 5).then_some(()))
    })?;

    // The agent's own certificate (readable by the workspace's user): the git key's public
    // half, and signatures, never the private key.
    let probe = admin.sh(
        "w",
        r#"python3 - <<'EOF'
import json, os, ssl, http.client
state = os.path.dirname(os.environ["OUTPOST_AGENT_SOCKET"])
c = json.load(open(os.path.join(state, "credentials.json")))
open(os.path.expanduser("~/c.pem"), "w").write(c["certificate_pem"] + c["ca_pem"])
open(os.path.expanduser("~/k.pem"), "w").write(c["key_pem"])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(os.path.expanduser("~/c.pem"), os.path.expanduser("~/k.pem"))
import urllib.parse
u = urllib.parse.urlparse(json.load(open(os.path.join(state, "bundle.json")))["agent_url"])
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
conn.request("GET", "/agent/v1/gitsshkey")
print(conn.getresponse().read().decode())
EOF"#,
    )?;
    let key: Value = serde_json::from_str(probe.trim())?;
    assert!(
        key["public_key"]
            .as_str()
            .unwrap_or("")
            .starts_with("ssh-ed25519 "),
        "{probe}"
    );
    assert!(
        key.get("private_key").is_none() && !probe.contains("PRIVATE KEY"),
        "the private key left control: {probe}"
    );

    // Its own stop, from inside, is allowed.
    let _ = admin.ssh("w", "outpost stop w --no-wait");
    s.wait_for("w", T, |w| w["status"] == "stopped")?;
    assert!(running(&s.workspace("other")?));
    Ok(())
}
both_backends!(workspace_credential_is_scoped);

/// Each renewal binds the agent to its new certificate: the one before it works for a short
/// overlap, anything older is refused at once (a copied certificate dies at the next renewal,
/// not at its expiry).
fn superseded_certificates_are_refused(backend: Backend) -> R {
    let s = Server::start(backend)?;
    s.ok(&["create", "ws"])?;
    let (w, _) = s.wait_for("ws", T, running)?;
    let run = resource_path(&w, "run").expect("run dir");
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(
        run.join("agent/credentials.json"),
    )?)?;
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("agent/bundle.json"))?)?;
    assert_eq!(bundle["token"], "", "the kept bundle has no token");
    assert!(
        !run.join("bootstrap.json").exists(),
        "the spent bootstrap bundle is deleted"
    );
    let chain = |c: &Value| {
        format!(
            "{}{}",
            c["certificate_pem"].as_str().unwrap_or(""),
            c["ca_pem"].as_str().unwrap_or("")
        )
    };
    let key_a = creds["key_pem"].as_str().unwrap_or("").to_string();
    let cert_a = chain(&creds);
    let manifest = |cert: &str, key: &str| -> R<u16> {
        Ok(agent_call(&bundle, "/agent/v1/manifest", None, Some((cert, key)))?.0)
    };
    assert_eq!(manifest(&cert_a, &key_a)?, 200);
    // Renew twice with fresh keys, as a copy of the certificate would.
    let renew = |cert: &str, key: &str| -> R<(String, String)> {
        let k = rcgen::KeyPair::generate()?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&k)?
            .pem()?;
        let (code, body) = agent_call(
            &bundle,
            "/agent/v1/renew",
            Some(json!({ "csr_pem": csr })),
            Some((cert, key)),
        )?;
        anyhow::ensure!(code == 200, "renew: {code} {body}");
        let r: Value = serde_json::from_str(&body)?;
        Ok((chain(&r), k.serialize_pem()))
    };
    let (cert_b, key_b) = renew(&cert_a, &key_a)?;
    assert_eq!(manifest(&cert_a, &key_a)?, 200, "the previous one, briefly");
    let (cert_c, key_c) = renew(&cert_b, &key_b)?;
    assert_eq!(
        manifest(&cert_a, &key_a)?,
        401,
        "two renewals back: refused, though not expired"
    );
    assert_eq!(manifest(&cert_b, &key_b)?, 200);
    assert_eq!(manifest(&cert_c, &key_c)?, 200);
    eventually(|| {
        let audit = s.json(&[
            "audit",
            "--action",
            "agent.manifest",
            "--outcome",
            "rejected",
        ])?;
        Ok(audit.to_string().contains("superseded").then_some(()))
    })?;
    Ok(())
}
both_backends!(superseded_certificates_are_refused);

/// `GET /@admin/WS/ports/PORT/PATH` as the owner: status and body.
fn through_ports_proxy(s: &Server, ws: &str, port: u16, path: &str) -> R<(u16, String)> {
    let url = format!("{}/@admin/{ws}/ports/{port}/{path}", s.url);
    let token = s.token()?;
    rt().block_on(async move {
        let r = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(20))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    })
}

/// The relay's `/tcp/PORT` (the ports proxy, `outpost port-forward`) reaches the workspace's own
/// listeners, a daemon that detached from its shell included, and nothing else on the machine:
/// not PostgreSQL on the host's loopback, not control's own port, not a host process of the
/// same user, not another user's workspace. Checked at connect time, from what the kernel says.
fn relay_reaches_only_own_ports(backend: Backend, isolation: &str) -> R {
    if isolation == "user" && !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED (relay ports, isolation user): needs root");
        return Ok(());
    }
    let s = Server::start_with(backend, &["--isolation", isolation])?;
    let admin = Client::admin(&s)?;
    admin.ok(&["create", "w"])?;
    s.wait_for("w", T, running)?;
    let own = free_port()?;
    admin.sh(
        "w",
        &format!("cd ~ && echo from-the-workspace > marker.txt && (setsid nohup python3 -m http.server {own} --bind 127.0.0.1 >/dev/null 2>&1 &)"),
    )?;
    s.wait_for("w", T, |w| {
        w["agent"]["stats"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["port"] == own))
    })?;
    let (code, body) = through_ports_proxy(&s, "w", own, "marker.txt")?;
    assert_eq!((code, body.trim()), (200, "from-the-workspace"));

    // A listener of the host (this test, control's user or root), control's own port and
    // PostgreSQL's (another user): refused, and the refusal says why.
    let host = std::net::TcpListener::bind("127.0.0.1:0")?;
    let host_port = host.local_addr()?.port();
    let api_port: u16 = s.url.rsplit(':').next().unwrap_or("0").parse()?;
    let mut targets = vec![host_port, api_port];
    if std::net::TcpStream::connect("127.0.0.1:5432").is_ok() {
        targets.push(5432);
    }
    for port in targets {
        let (code, body) = through_ports_proxy(&s, "w", port, "")?;
        assert_eq!(code, 403, "port {port}: {body}");
        assert!(
            body.contains("not listened on by a process of this workspace"),
            "{body}"
        );
    }
    if isolation == "user" {
        // Another user's workspace listener, same loopback: refused from admin's.
        let bob = Client::new_user(&s, "bob")?;
        bob.ok(&["create", "b"])?;
        let theirs = free_port()?;
        bob.sh(
            "b",
            &format!("(setsid nohup python3 -m http.server {theirs} --bind 127.0.0.1 >/dev/null 2>&1 &); sleep 1"),
        )?;
        let (code, _) = through_ports_proxy(&s, "w", theirs, "")?;
        assert_eq!(code, 403);
    }
    Ok(())
}

fn relay_ports_with_a_user_per_workspace(backend: Backend) -> R {
    relay_reaches_only_own_ports(backend, "user")
}
both_backends!(relay_ports_with_a_user_per_workspace);

fn relay_ports_without_isolation(backend: Backend) -> R {
    relay_reaches_only_own_ports(backend, "none")
}
both_backends!(relay_ports_without_isolation);

/// What an agent reports ends up in users' known_hosts: a process in the workspace holding the
/// agent's certificate reports its host key with a second line (a CA marker for every host) and
/// control characters. Control keeps `TYPE BASE64` only; the client's known_hosts gets one line
/// for the workspace and SSH still checks the real key.
fn agent_reported_text_is_normalised(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let admin = Client::admin(&s)?;
    admin.ok(&["create", "w"])?;
    let (w, _) = s.wait_for("w", T, |w| {
        running(w) && w["agent"]["ssh_host_key"].is_string()
    })?;
    let real = w["agent"]["ssh_host_key"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let hostile = format!("{real} x\n@cert-authority * {real}\n\u{1b}]0;owned\u{7}");
    let script = format!(
        r#"python3 - <<'EOF'
import json, os, ssl, http.client, urllib.parse
state = os.path.dirname(os.environ["OUTPOST_AGENT_SOCKET"])
c = json.load(open(os.path.join(state, "credentials.json")))
open(os.path.expanduser("~/c.pem"), "w").write(c["certificate_pem"] + c["ca_pem"])
open(os.path.expanduser("~/k.pem"), "w").write(c["key_pem"])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(os.path.expanduser("~/c.pem"), os.path.expanduser("~/k.pem"))
u = urllib.parse.urlparse(json.load(open(os.path.join(state, "bundle.json")))["agent_url"])
for key in [{key}, "not a key\n@revoked * x"]:
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
    conn.request("POST", "/agent/v1/ssh", json.dumps({{"host_key": key, "listen": None}}), {{"content-type": "application/json"}})
    print(conn.getresponse().status)
EOF"#,
        key = serde_json::to_string(&hostile)?
    );
    let out = admin.sh("w", &script)?;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["200", "400"],
        "{out}"
    );
    let stored = s.workspace("w")?["agent"]["ssh_host_key"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(stored, real, "only TYPE BASE64 is kept");
    // The client writes known_hosts before ssh reads it: one clean line for the workspace,
    // and the connection is checked against the real key.
    let o = std::process::Command::new("ssh")
        .args([
            "-o",
            &format!("ProxyCommand={} ssh --stdio %h", bin("outpost").display()),
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            admin.config_dir.join("known_hosts").display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-i",
        ])
        .arg(&admin.key)
        .args(["admin@w", "echo checked"])
        .env("OUTPOST_CONFIG_DIR", &admin.config_dir)
        .stdin(std::process::Stdio::null())
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "checked",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let kh = std::fs::read_to_string(admin.config_dir.join("known_hosts"))?;
    assert_eq!(kh, format!("w {real}\n"), "{kh:?}");
    Ok(())
}
both_backends!(agent_reported_text_is_normalised);

/// The setup token is printed to a terminal only: a server whose output is a log file (as under
/// a service manager) prints the command reading the 0600 file instead.
fn setup_token_stays_out_of_logs(backend: Backend) -> R {
    let s = Server::start(backend)?;
    let log = s.log();
    assert!(log.contains("--setup-token \"$(cat "), "{log}");
    let data = s.data();
    let path = data.join("setup-token");
    // The harness used the token to make the admin, so it is gone; a fresh server with no users
    // shows the file's mode.
    assert!(!path.exists(), "a used setup token is deleted");
    assert!(
        !log.lines().any(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "--setup-token")
                .nth(1)
                .is_some_and(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        }),
        "{log}"
    );
    Ok(())
}
both_backends!(setup_token_stays_out_of_logs);

/// What control reads from an agent is capped: a process holding the agent's certificate
/// opens its own relay tunnel and answers every stream with an error and an endless body.
/// Control reads a few KiB of it, answers the user at once with a short error, and its memory
/// does not grow.
fn hostile_agent_bodies_are_capped(backend: Backend) -> R {
    use http_body_util::BodyExt;
    let s = Server::start(backend)?;
    s.ok(&["create", "w"])?;
    let (w, _) = s.wait_for("w", T, running)?;
    let AgentCreds { bundle, chain, key } = agent_creds(&w)?;
    let pins: Vec<String> = bundle["ca_pins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut cfg = outpost_common::tls::client_config(&pins, Some((&chain, &key)))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let authority = s.agent_url.trim_start_matches("https://").to_string();
    // The real agent, paused, cannot take its tunnel back (it reconnects when replaced) while
    // the hostile one answers; it goes on when the test ends, however it ends.
    struct Paused(i32);
    impl Drop for Paused {
        fn drop(&mut self) {
            signal(self.0, libc::SIGCONT);
        }
    }
    let agent = agent_pid(&w).ok_or_else(|| anyhow::anyhow!("no agent pid: {w:#}"))?;
    signal(agent, libc::SIGSTOP);
    let _paused = Paused(agent);
    // The hostile tunnel: every stream gets a 500 and a body that never ends.
    rt().spawn(async move {
        let run = async {
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
                .connect(name, tcp)
                .await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            let req = hyper::Request::get(outpost_api::relay::TUNNEL_PATH)
                .header("host", authority.as_str())
                .header("connection", "upgrade")
                .header("upgrade", outpost_api::relay::UPGRADE_TUNNEL)
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            anyhow::ensure!(resp.status() == 101, "{}", resp.status());
            let upgraded = hyper::upgrade::on(resp).await?;
            let svc =
                hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                    let endless = futures_util::stream::repeat_with(move || {
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
                    });
                    let body = http_body_util::StreamBody::new(endless).boxed();
                    let mut r = hyper::Response::new(body);
                    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok::<_, std::convert::Infallible>(r)
                });
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(upgraded, svc)
                .await?;
            anyhow::Ok(())
        };
        let _ = run.await;
    });
    let pid = s.pid().expect("server pid");
    let token = s.token()?;
    let get_within = |token: String, within: Duration| -> R<(u16, String)> {
        let url = format!("{}/@admin/w/ports/9/", s.url);
        rt().block_on(async move {
            let r = reqwest::Client::new()
                .get(&url)
                .bearer_auth(token)
                .timeout(within)
                .send()
                .await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        })
    };
    let get = |token: String| get_within(token, Duration::from_secs(30));
    // Until the hostile tunnel has taken the agent's place, a request goes to the paused agent
    // and waits (or, sent before the pause, gets its 403: port 9 is not the workspace's).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get_within(token.clone(), Duration::from_secs(2)).map_or(0, |r| r.0) < 500 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the hostile tunnel never took over"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = rss_kib(pid);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let (code, body) = get(token.clone())?;
        assert!(code >= 500, "{code}: the real agent answered");
        assert!(
            body.len() < 8 * 1024,
            "{} bytes of an agent's body reached the user",
            body.len()
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "control grew from {before} to {after} KiB"
    );
    Ok(())
}
both_backends!(hostile_agent_bodies_are_capped);
