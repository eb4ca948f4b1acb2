//! What the replica tests share: the CLI against one replica, a second replica of a server, a
//! terminal WebSocket, a TCP balancer of the tests' own, a PostgreSQL cluster of their own.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// `outpost ARGS` against the replica at `url`, as the first admin.
pub fn on(url: &str, token: &str, args: &[&str]) -> R<Output> {
    let mut c = Command::new(bin("outpost"));
    c.args(args)
        .env("OUTPOST_URL", url)
        .env("OUTPOST_TOKEN", token)
        .env("OUTPOST_CONFIG_DIR", "/nonexistent-outpost-config");
    run_with_stdin(c, "")
}

pub fn json_on(url: &str, token: &str, args: &[&str]) -> R<Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = on(url, token, &a)?;
    anyhow::ensure!(
        o.status.success(),
        "`outpost {}` on {url}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// The first of several replicas on `backend`: on SQLite, a server whose data dir others may
/// serve too (`--shared-data-dir`).
pub fn first_replica(backend: Backend, extra: &[&str]) -> R<Server> {
    let mut flags = extra.to_vec();
    if matches!(backend, Backend::Sqlite) {
        flags.push("--shared-data-dir");
    }
    Server::start_with(backend, &flags)
}

/// A second replica of `a`'s database and secrets key: on PostgreSQL a server of its own
/// data dir; on SQLite one serving `a`'s data dir (`--shared-data-dir`).
pub fn replica_of(a: &Server, backend: Backend, extra: &[&str]) -> R<Server> {
    let key = a.data().join("secrets.key").display().to_string();
    let mut flags = extra.to_vec();
    let data_dir = match backend {
        Backend::Sqlite => {
            flags.push("--shared-data-dir");
            Some(a.data())
        }
        Backend::Postgres(_) => {
            flags.extend(["--secrets-key-file", &key]);
            None
        }
    };
    Server::start_opts(
        backend,
        Opts {
            extra: &flags,
            joins_existing: true,
            data_dir,
            ..Default::default()
        },
    )
}

/// A terminal WebSocket to workspace `dev` through the replica at `url` (session `session`).
pub fn terminal(url: &str, token: &str, session: &str) -> R<std::net::TcpStream> {
    terminal_at(
        url,
        token,
        &format!("/api/v1/workspaces/dev/pty?session={session}"),
    )
}

pub fn terminal_at(url: &str, token: &str, path: &str) -> R<std::net::TcpStream> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut c = std::net::TcpStream::connect(addr)?;
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            .as_bytes(),
    )?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            c.read(&mut b)? == 1,
            "closed: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Ok(c)
}

/// Types `cmd` and reads until `expect` shows.
pub fn type_and_wait(c: &mut std::net::TcpStream, cmd: &str, expect: &str) -> R {
    send_input(c, format!("{cmd}\r").as_bytes())?;
    wait_for(c, expect)
}

/// `data` as one message of terminal input: a masked binary WebSocket frame, as a browser
/// sends (a paste of any size included).
pub fn send_input(c: &mut std::net::TcpStream, data: &[u8]) -> R {
    use std::io::Write;
    let len = data.len() + 1; // the input kind first
    let mut frame = vec![0x82u8];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0, 0]); // mask (zero), then the input kind
    frame.extend_from_slice(data);
    c.write_all(&frame)?;
    Ok(())
}

/// Reads the terminal until `expect` shows (10 s at most).
pub fn wait_for(c: &mut std::net::TcpStream, expect: &str) -> R {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(expect) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {expect:?}: {}",
            String::from_utf8_lossy(&out)
        );
        let n = c.read(&mut buf)?;
        anyhow::ensure!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// A TCP balancer of the test's own in front of the replicas' agent listeners: each connection
/// goes to the first backend that accepts it.
pub struct Balancer {
    pub port: u16,
    backends: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Balancer {
    /// Each connection to the first backend that accepts it (`rotate`: starting from the next
    /// backend each time, spreading connections).
    pub fn start(rotate: bool) -> R<Balancer> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let backends: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let list = backends.clone();
        std::thread::spawn(move || {
            for (i, conn) in l.incoming().enumerate() {
                let Ok(conn) = conn else { continue };
                let mut list = list.lock().map(|l| l.clone()).unwrap_or_default();
                if rotate && !list.is_empty() {
                    let n = list.len();
                    list.rotate_left(i % n);
                }
                std::thread::spawn(move || {
                    for b in list {
                        let Ok(addr) = b.parse() else { continue };
                        if let Ok(up) =
                            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                        {
                            let _ = pipe(conn, up);
                            return;
                        }
                    }
                });
            }
        });
        Ok(Balancer { port, backends })
    }

    pub fn set(&self, backends: &[&str]) {
        if let Ok(mut b) = self.backends.lock() {
            *b = backends.iter().map(|s| s.to_string()).collect();
        }
    }
}

pub fn pipe(a: std::net::TcpStream, b: std::net::TcpStream) -> R {
    let (mut a2, mut b2) = (a.try_clone()?, b.try_clone()?);
    let (mut a, mut b) = (a, b);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Both);
        let _ = a.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut b2, &mut a2);
    let _ = a2.shutdown(std::net::Shutdown::Both);
    let _ = b2.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
    Ok(())
}

/// [`terminal`] to workspace `ws`.
pub fn terminal_to(url: &str, token: &str, ws: &str, session: &str) -> R<std::net::TcpStream> {
    terminal_at(
        url,
        token,
        &format!("/api/v1/workspaces/{ws}/pty?session={session}"),
    )
}

/// A PostgreSQL of this test's own (initdb into a temporary dir, on a free port), so it can be
/// restarted without touching the machine's.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    pub fn start() -> R<Option<PrivatePg>> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .find(|b| b.join("initdb").exists())
        });
        let Some(bin) = bin else {
            anyhow::ensure!(
                std::env::var_os("OUTPOST_CI").is_none(),
                "PostgreSQL's server binaries (initdb, pg_ctl) are missing"
            );
            eprintln!("SKIPPED: no initdb under /usr/lib/postgresql");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        // PostgreSQL refuses to run as root: as root, the cluster is the postgres user's.
        let as_postgres = nix::unistd::Uid::effective().is_root();
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()?;
            anyhow::ensure!(st.success(), "chown");
        }
        let pg = PrivatePg {
            dir,
            bin,
            port: free_port()?,
            as_postgres,
        };
        pg.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-D",
                &pg.data(),
            ],
        )?;
        pg.ctl(&["start"])?;
        Ok(Some(pg))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> R {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let o = c.args(args).stdin(Stdio::null()).output()?;
        anyhow::ensure!(
            o.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    }

    pub fn ctl(&self, what: &[&str]) -> R {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-o", &opts, "-l", &log, "-w", "-m", "fast"];
        args.extend_from_slice(what);
        self.run("pg_ctl", &args)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

/// `outpost port-forward WS --tcp L:PORT` through the replica at `url` (as the CLI session in
/// `config_dir`), then `curl` on the local end: the page.
pub fn fetch_through_forward(
    config_dir: &std::path::Path,
    url: &str,
    ws: &str,
    port: u16,
) -> R<String> {
    let local = free_port()?;
    let mut fwd = Command::new(bin("outpost"))
        .args(["port-forward", ws, "--tcp", &format!("{local}:{port}")])
        .env("OUTPOST_CONFIG_DIR", config_dir)
        .env("OUTPOST_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let page = eventually(|| {
        let o = Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{local}/"),
            ])
            .output()?;
        Ok(o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned()))
    });
    let _ = fwd.kill();
    let _ = fwd.wait();
    page
}
