//! `cargo xtask bench ssh`: Debian's sshd (a temporary config on 127.0.0.1) beside the agent's
//! SSH server (direct listen, and through control's relay via `ssh WS.outpost`), the same client,
//! cipher, key exchange, login shell and (empty) environment, in one command.
//!
//! Beside them, what a team would run otherwise: an OpenSSH jump host (the agent's direct
//! listener reached through sshd with `ssh -W`, as `ssh -J` does), and, when PostgreSQL is
//! reachable (`OUTPOST_BENCH_POSTGRES_URL`, default the local `test` database), the relay through
//! a second control replica on the same database (the client on replica B, the agent's tunnel
//! on replica A; the agent dials B back for the SSH bytes). The relay rows are SSH by
//! dial-back: control splices the client's socket to the agent's dialed one.
//!
//! Both servers run commands for a dedicated user-less environment: sshd logs in a throwaway
//! account `outpost-bench` (bash, an empty home, created if missing), the agent runs with an empty
//! workspace home. Root's own `.bashrc` (pyenv, ~110 ms) would otherwise dominate one side.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::bench::{first_user, machine, pct, start_server, write_results};
use crate::cpustat::{measure, Cpu, Procs};

pub const BENCH_USER: &str = "outpost-bench";
const CIPHER: &str = "aes128-gcm@openssh.com";
const CHACHA: &str = "chacha20-poly1305@openssh.com";
const KEX: &str = "curve25519-sha256";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut gib = 1u64;
    let mut runs = 30usize;
    let mut rounds = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--gib" => gib = it.next().context("--gib N")?.parse()?,
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds N")?.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        bail!("Debian's sshd is the anchor: install it with `apt-get install openssh-server`");
    }
    crate::cargo(&["build", "--release", "--bins"])?;
    run(&crate::root().join("target/release"), gib, runs, rounds)
}

fn sh(cmd: &str) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("sh").arg("-c").arg(cmd).output()?)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) struct Kill(pub(crate) std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// sshd for a throwaway account, and an Outpost server with one running workspace `dev` whose
/// agent also listens directly; shared by `bench ssh` and `bench terminal`.
pub struct Rig {
    pub tmp: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub sshd_port: u16,
    pub agent_port: u16,
    pub ssh_config: std::path::PathBuf,
    pub cli_dir: std::path::PathBuf,
    pub token: String,
    pub bin: std::path::PathBuf,
    pub rt: tokio::runtime::Runtime,
    /// The server's Prometheus endpoint (`--metrics-listen`), `HOST:PORT`.
    pub metrics: String,
    /// A second replica on the same PostgreSQL (its API URL), when there is one.
    pub replica: Option<(crate::bench::ServerProc, String)>,
    /// The bench's own database, dropped at the end.
    pub database: Option<String>,
    // Dropped last: the server, then sshd.
    pub server: crate::bench::ServerProc,
    _sshd: Kill,
}

impl Rig {
    /// The value of a Prometheus counter or gauge line starting with `series` (name and
    /// labels, as the server prints them); 0 when absent.
    pub fn metric(&self, series: &str) -> anyhow::Result<f64> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&self.metrics)?;
        c.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics).as_bytes())?;
        let mut body = String::new();
        c.read_to_string(&mut body)?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    pub fn outpost(&self, args: &[&str]) -> anyhow::Result<String> {
        outpost_cli(&self.bin, &self.cli_dir, args)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The workspace's agent outlives a stopped server (by design), so delete the workspace
        // while the server is still up.
        let _ = self.outpost(&["delete", "dev"]);
        let _ = std::fs::remove_dir_all(&self.tmp);
        if let Some(url) = &self.database {
            if let Some((base, name)) = url.rsplit_once('/') {
                let _ = Command::new("psql")
                    .args([
                        "-X",
                        "-q",
                        &format!("{base}/postgres"),
                        "-c",
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ])
                    .output();
            }
        }
    }
}

fn outpost_cli(bin: &Path, cli_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let o = Command::new(bin.join("outpost"))
        .args(args)
        .env("OUTPOST_CONFIG_DIR", cli_dir)
        .output()?;
    if !o.status.success() {
        bail!("outpost {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub fn setup(bin: &Path, tag: &str) -> anyhow::Result<Rig> {
    outpost_common::tls::install_provider();
    let tmp = std::env::temp_dir().join(format!("outpost-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let key = tmp.join("id_ed25519");
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {}",
        key.display()
    ))?;

    // The anchor: sshd on 127.0.0.1 for a throwaway user with an empty home.
    let bench_home = tmp.join("bench-home");
    std::fs::create_dir_all(bench_home.join(".ssh"))?;
    if !sh(&format!("id -u {BENCH_USER}"))?.status.success() {
        let o = sh(&format!(
            "useradd --system --no-create-home --shell /bin/bash {BENCH_USER}"
        ))?;
        if !o.status.success() {
            bail!(
                "cannot create the bench user: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    // A home of its own; a `*` password: no password login, but not a locked account (sshd
    // refuses locked ones even for keys).
    sh(&format!(
        "usermod -d {} -p '*' {BENCH_USER}",
        bench_home.display()
    ))?;
    std::fs::copy(
        key.with_extension("pub"),
        bench_home.join(".ssh/authorized_keys"),
    )?;
    sh(&format!("chown -R {BENCH_USER} {}", bench_home.display()))?;
    let sshd_port = free_port()?;
    let host_key = tmp.join("sshd_host_ed25519_key");
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {}",
        host_key.display()
    ))?;
    let cfg = tmp.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {tmp}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\nPrintMotd no\nPrintLastLog no\nUseDNS no\nSubsystem sftp internal-sftp\nAllowTcpForwarding yes\n",
            hk = host_key.display(),
            tmp = tmp.display()
        ),
    )?;
    // sshd insists on its privilege separation directory.
    std::fs::create_dir_all("/run/sshd")?;
    let sshd_log = std::fs::File::create(tmp.join("sshd.log"))?;
    let sshd = Kill(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stderr(sshd_log)
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", sshd_port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "sshd did not start: {}",
                std::fs::read_to_string(tmp.join("sshd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Outpost: server, user, key, a workspace with a direct SSH listener.
    let data = tmp.join("outpost");
    // On PostgreSQL when `bench ssh` can have a second replica beside the first.
    let pg = if tag == "ssh" {
        crate::bench::fresh_database("ssh", "the second-replica rows are left out")?
    } else {
        None
    };
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut extra: Vec<&str> = vec!["--metrics-listen", &metrics];
    if let Some(url) = &pg {
        extra.extend(["--postgres-url", url]);
    }
    let server = start_server(bin, &data, ("127.0.0.1:0", "127.0.0.1:0"), &extra)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let token = rt.block_on(first_user(&server.url, &server.data, "bench-password"))?;
    // The second replica after the first user (a replica of an empty store makes its own
    // setup token).
    let replica = match &pg {
        Some(url) => {
            let key = data.join("secrets.key").display().to_string();
            let b = start_server(
                bin,
                &tmp.join("outpost-b"),
                ("127.0.0.1:0", "127.0.0.1:0"),
                &[
                    "--postgres-url",
                    url,
                    "--secrets-key-file",
                    &key,
                    "--provisioner-daemons",
                    "0",
                ],
            )?;
            let url = b.url.clone();
            Some((b, url))
        }
        None => None,
    };
    let cli_dir = tmp.join("cli");
    std::fs::create_dir_all(&cli_dir)?;
    std::fs::write(
        cli_dir.join("session.json"),
        serde_json::to_vec(&serde_json::json!({"url": server.url, "token": token}))?,
    )?;
    let outpost = |args: &[&str]| outpost_cli(bin, &cli_dir, args);
    outpost(&[
        "keys",
        "add",
        &key.with_extension("pub").display().to_string(),
    ])?;
    let tdir = tmp.join("tpl");
    std::fs::create_dir_all(&tdir)?;
    std::fs::write(
        tdir.join("template.toml"),
        "[provisioner]\ntype = \"local\"\n[agent]\nssh_listen = \"127.0.0.1:0\"\n",
    )?;
    outpost(&[
        "templates",
        "push",
        &tdir.display().to_string(),
        "--name",
        "bench",
    ])?;
    outpost(&["create", "dev", "-t", "bench"])?;
    let mut agent_addr = String::new();
    for _ in 0..100 {
        let w: serde_json::Value = serde_json::from_str(&outpost(&["--json", "show", "dev"])?)?;
        if let Some(a) = w["agent"]["ssh_addr"].as_str() {
            agent_addr = a.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent_port: u16 = agent_addr.rsplit(':').next().unwrap_or("0").parse()?;
    let ssh_config = tmp.join("ssh_config");
    outpost(&[
        "config-ssh",
        "--ssh-config",
        &ssh_config.display().to_string(),
    ])?;

    Ok(Rig {
        tmp,
        key,
        sshd_port,
        agent_port,
        ssh_config,
        cli_dir,
        token,
        bin: bin.to_path_buf(),
        rt,
        metrics,
        replica,
        database: pg,
        server,
        _sshd: sshd,
    })
}

/// `bench rig`: the servers of `bench ssh`, held up until Enter, for profiling by hand.
pub fn hold() -> anyhow::Result<()> {
    if !Path::new("/usr/sbin/sshd").exists() {
        bail!("Debian's sshd is the anchor: install it with `apt-get install openssh-server`");
    }
    crate::cargo(&["build", "--release", "--bins"])?;
    let rig = setup(&crate::root().join("target/release"), "rig")?;
    let common = format!(
        "-F {cfg} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o Ciphers={CIPHER} -i {key}",
        cfg = rig.ssh_config.display(),
        key = rig.key.display()
    );
    println!("export OUTPOST_CONFIG_DIR={}", rig.cli_dir.display());
    println!(
        "SSHD='ssh {common} -p {} {BENCH_USER}@127.0.0.1'",
        rig.sshd_port
    );
    println!("DIRECT='ssh {common} -p {} dev@127.0.0.1'", rig.agent_port);
    println!("RELAY='ssh {common} dev.outpost'");
    println!("SERVER_PID={}", rig.server.child.id());
    eprintln!("rig up: press Enter to tear it down");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

fn run(bin: &Path, gib: u64, runs: usize, rounds: usize) -> anyhow::Result<()> {
    let rig = setup(bin, "ssh")?;
    let Rig {
        tmp,
        key,
        sshd_port,
        agent_port,
        ssh_config,
        cli_dir,
        ..
    } = &rig;
    let (sshd_port, agent_port) = (*sshd_port, *agent_port);
    let outpost = |args: &[&str]| rig.outpost(args);
    let common = format!(
        "-F {cfg} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o Ciphers={CIPHER} -o KexAlgorithms={KEX} -o ControlMaster=no -i {key}",
        cfg = ssh_config.display(),
        key = key.display()
    );
    let relay = format!(
        "ssh {common} -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} dev.outpost",
        cli_dir.join("known_hosts").display()
    );
    let mut targets = vec![
        (
            "sshd",
            format!("ssh {common} -p {sshd_port} {BENCH_USER}@127.0.0.1"),
        ),
        (
            "agent (direct)",
            format!("ssh {common} -p {agent_port} dev@127.0.0.1"),
        ),
        ("agent (relay: ssh dev.outpost)", relay.clone()),
        // What `ssh -J` does: a second ssh through sshd, `-W` to the agent's listener (its
        // port in an ssh:// URI, so sftp's `-p` to `-P` rewrite leaves it alone).
        (
            "jump host (sshd, ssh -W)",
            format!(
                "ssh {common} -o ProxyCommand='ssh {common} -W %h:%p ssh://{BENCH_USER}@127.0.0.1:{sshd_port}' -p {agent_port} dev@127.0.0.1"
            ),
        ),
    ];
    if let Some((_, url)) = &rig.replica {
        targets.push((
            "relay via a 2nd replica",
            format!("env OUTPOST_URL={url} {relay}"),
        ));
    }
    let n = targets.len();
    let env_cli = format!("OUTPOST_CONFIG_DIR={}", cli_dir.display());

    // 1. connect + `true`, median of `runs` fresh connections.
    let mut connect = Vec::new();
    for (name, ssh) in &targets {
        // Warm up once (and check it works).
        let o = sh(&format!("{env_cli} {ssh} true"))?;
        if !o.status.success() {
            bail!("{name}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let mut v = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let o = sh(&format!("{env_cli} {ssh} true"))?;
            if !o.status.success() {
                bail!("{name}: {}", String::from_utf8_lossy(&o.stderr));
            }
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        eprintln!(
            "{name}: connect+true median {:.1} ms",
            pct(&mut v.clone(), 0.5)
        );
        connect.push(pct(&mut v, 0.5));
    }

    // 2. Bulk transfer, each way, with AES-GCM and with chacha20-poly1305.
    // Where the CPU goes: the client (ssh, head/cat: our children), the agent, control.
    let w: serde_json::Value = serde_json::from_str(&outpost(&["--json", "show", "dev"])?)?;
    let agent_pid: u32 = w["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["name"] == "agent"))
        .and_then(|x| x["details"]["pid"].as_str())
        .and_then(|p| p.parse().ok())
        .context("the agent's pid")?;
    let procs = Procs {
        agent: agent_pid,
        control: rig.server.child.id(),
    };
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut up_chacha = Vec::new();
    let mut down_chacha = Vec::new();
    let mut cpu = Vec::new();
    for (name, ssh) in targets.iter().cycle().take(n * rounds) {
        cpu.push(bulk(&env_cli, name, ssh, gib, &procs, &mut up, &mut down)?);
    }
    for (name, ssh) in targets.iter().cycle().take(n * rounds) {
        let ssh = ssh.replace(&format!("Ciphers={CIPHER}"), &format!("Ciphers={CHACHA}"));
        bulk(
            &env_cli,
            name,
            &ssh,
            gib,
            &procs,
            &mut up_chacha,
            &mut down_chacha,
        )?;
    }

    // 3. sftp put and get of the same file (sshd runs its internal-sftp).
    let blob = tmp.join("blob.bin");
    sh(&format!("head -c {gib}G /dev/zero > {}", blob.display()))?;
    let mut sftp_put = Vec::new();
    let mut sftp_get = Vec::new();
    for (name, ssh) in targets.iter().cycle().take(n * rounds) {
        let sftp = ssh.replacen("ssh ", "sftp ", 1).replace(" -p ", " -P ");
        let batch = tmp.join("put.batch");
        std::fs::write(&batch, format!("put {} sftp-blob.bin\n", blob.display()))?;
        let t = Instant::now();
        let o = sh(&format!(
            "{env_cli} {sftp_cmd}",
            sftp_cmd = sftp_batch(&sftp, &batch)
        ))?;
        if !o.status.success() {
            bail!("{name} sftp put: {}", String::from_utf8_lossy(&o.stderr));
        }
        sftp_put.push(gib as f64 * 1024.0 / t.elapsed().as_secs_f64());
        std::fs::write(
            &batch,
            format!(
                "get sftp-blob.bin {}\nrm sftp-blob.bin\n",
                tmp.join("got.bin").display()
            ),
        )?;
        let t = Instant::now();
        let o = sh(&format!("{env_cli} {}", sftp_batch(&sftp, &batch)))?;
        if !o.status.success() {
            bail!("{name} sftp get: {}", String::from_utf8_lossy(&o.stderr));
        }
        sftp_get.push(gib as f64 * 1024.0 / t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(tmp.join("got.bin"));
        eprintln!(
            "{name}: sftp put {:.0} MiB/s, get {:.0} MiB/s",
            sftp_put.last().unwrap_or(&0.0),
            sftp_get.last().unwrap_or(&0.0)
        );
    }
    let _ = std::fs::remove_file(&blob);

    // 4. The agent's memory, idle and with 100 sessions open.
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = crate::bench::rss_kib(agent_pid) as f64 / 1024.0;
    let sessions: Vec<Kill> = (0..100)
        .map(|_| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("exec {} 'sleep 20'", targets[1].1))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(Kill)
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(5));
    let rss_100 = crate::bench::rss_kib(agent_pid) as f64 / 1024.0;
    drop(sessions);
    eprintln!("agent RSS idle {rss_idle:.1} MiB, with 100 sessions {rss_100:.1} MiB");

    // 5. Port forwarding (-L) throughput to a sink on this machine.
    let sink = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sink_port = sink.local_addr()?.port();
    std::thread::spawn(move || {
        for c in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                let _ = c.write_all(b"k");
            });
        }
    });
    let mut fwd = Vec::new();
    for (name, ssh) in targets.iter().cycle().take(n * rounds) {
        let lport = free_port()?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec env {env_cli} {ssh} -N -L {lport}:127.0.0.1:{sink_port}"
            ))
            .spawn()?;
        let _k = Kill(child);
        let mut conn = None;
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
                conn = Some(c);
                break;
            }
        }
        let mut c = conn.with_context(|| format!("{name}: the forward did not come up"))?;
        let chunk = vec![0u8; 1 << 20];
        let t = Instant::now();
        for _ in 0..(gib * 1024) {
            c.write_all(&chunk)?;
        }
        c.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 1];
        let _ = c.read(&mut ack);
        fwd.push(gib as f64 * 1024.0 / t.elapsed().as_secs_f64());
        eprintln!("{name}: -L {:.0} MiB/s", fwd.last().unwrap_or(&0.0));
    }

    let title = format!(
        "bench ssh, {}\n\nMachine: {}. OpenSSH client for all; cipher {CIPHER} (and {CHACHA} for the chacha20 rows), kex {KEX}, ed25519 keys; bash with an empty home on both sides. connect+true: median of {runs} fresh connections. Transfers: {gib} GiB each way (`head -c | ssh 'cat > /dev/null'`, `ssh 'head -c' > /dev/null`); -L: {gib} GiB through a forwarded port. Every transfer {rounds} times, the targets taking turns; the median of each is shown (CPU: the mean).",
        crate::bench::date(),
        machine()
    );
    let s = "sshd (same run)";
    let d = "agent direct (same run)";
    // Each measured three ways: sshd (the anchor), the agent directly, the agent via the relay.
    let mut rows: Vec<(String, f64, &str, &str, Option<f64>)> = Vec::new();
    let j = "jump host (same run)";
    let r = "relay, one replica (same run)";
    let mut trio = |what: &str, unit: &'static str, v: &[f64]| {
        rows.push((format!("{what}, sshd"), v[0], unit, "-", None));
        rows.push((format!("{what}, agent direct"), v[1], unit, s, Some(v[0])));
        rows.push((format!("{what}, relay"), v[2], unit, s, Some(v[0])));
        rows.push((format!("{what}, jump host"), v[3], unit, s, Some(v[0])));
        rows.push((
            format!("{what}, relay vs jump host"),
            v[2],
            unit,
            j,
            Some(v[3]),
        ));
        if let Some(b) = v.get(4) {
            rows.push((
                format!("{what}, relay via 2nd replica"),
                *b,
                unit,
                r,
                Some(v[2]),
            ));
        }
    };
    // The spread: each round's worst ratio against sshd in that same round (issue 19's `-L`
    // bar holds for the worst of five, issue 17's relay bars both ways).
    let mut worst = Vec::new();
    for (what, v) in [("upload", &up), ("download", &down), ("-L forward", &fwd)] {
        for (t, who) in [(1, "agent direct"), (2, "relay")] {
            let (rate, anchor) = worst_round(v, n, t);
            worst.push((
                format!("{what}, {who}, worst of {rounds} rounds"),
                rate,
                anchor,
            ));
        }
    }
    // Transfers ran `rounds` times, the three targets taking turns: the median of each.
    let (up, down, up_chacha, down_chacha, fwd, sftp_put, sftp_get) = (
        per_target_median(&up, n),
        per_target_median(&down, n),
        per_target_median(&up_chacha, n),
        per_target_median(&down_chacha, n),
        per_target_median(&fwd, n),
        per_target_median(&sftp_put, n),
        per_target_median(&sftp_get, n),
    );
    let cpu: Vec<[Cpu; 2]> = (0..n)
        .map(|t| {
            let mine: Vec<&[Cpu; 2]> = cpu.iter().skip(t).step_by(n).collect();
            let avg = |i: usize| {
                let n = mine.len().max(1) as f64;
                let sum = |f: fn(&Cpu) -> f64| mine.iter().map(|c| f(&c[i])).sum::<f64>() / n;
                Cpu {
                    client: sum(|c| c.client),
                    agent: sum(|c| c.agent),
                    control: sum(|c| c.control),
                    machine: sum(|c| c.machine),
                }
            };
            [avg(0), avg(1)]
        })
        .collect();
    trio("connect+true", "ms", &connect);
    trio("upload", "MiB/s", &up);
    trio("download", "MiB/s", &down);
    trio("upload chacha20", "MiB/s", &up_chacha);
    trio("download chacha20", "MiB/s", &down_chacha);
    trio("-L forward", "MiB/s", &fwd);
    trio("sftp put", "MiB/s", &sftp_put);
    trio("sftp get", "MiB/s", &sftp_get);
    for (what, rate, anchor) in worst {
        rows.push((what, rate, "MiB/s", "sshd (same round)", Some(anchor)));
    }
    for (what, v) in [("upload", &up), ("download", &down), ("-L", &fwd)] {
        rows.push((
            format!("relay/direct, {what}"),
            v[2],
            "MiB/s",
            d,
            Some(v[1]),
        ));
    }
    // The whole machine's CPU per GiB: the relay against the jump host (both two layers).
    for (i, what) in [(0, "upload"), (1, "download")] {
        let per = |c: &Cpu| c.machine / gib as f64;
        rows.push((
            format!("{what} CPU/GiB (machine), jump host"),
            per(&cpu[3][i]),
            "s",
            "-",
            None,
        ));
        rows.push((
            format!("{what} CPU/GiB (machine), relay"),
            per(&cpu[2][i]),
            "s",
            j,
            Some(per(&cpu[3][i])),
        ));
        if let Some(b) = cpu.get(4) {
            rows.push((
                format!("{what} CPU/GiB (machine), relay via 2nd replica"),
                per(&b[i]),
                "s",
                r,
                Some(per(&cpu[2][i])),
            ));
        }
    }
    // CPU seconds per GiB moved (aes128-gcm), summed over the processes that carry the bytes:
    // on this machine every core is busy in a transfer, so rate follows total CPU.
    for (i, what) in [(0, "upload"), (1, "download")] {
        let (direct, relay) = (&cpu[1][i], &cpu[2][i]);
        let per = |c: f64| c / gib as f64;
        rows.push((
            format!("{what} CPU/GiB, direct: ssh client + agent"),
            per(direct.client + direct.agent),
            "s",
            "-",
            None,
        ));
        rows.push((
            format!("{what} CPU/GiB, relay: ssh client + control + agent"),
            per(relay.client + relay.control + relay.agent),
            "s",
            "agent direct (same run)",
            Some(per(direct.client + direct.agent)),
        ));
        rows.push((
            format!("{what} CPU/GiB, relay: control (SSH spliced, its TCP)"),
            per(relay.control),
            "s",
            "-",
            None,
        ));
        rows.push((
            format!("{what} CPU/GiB, relay: agent"),
            per(relay.agent),
            "s",
            "agent direct (same run)",
            Some(per(direct.agent)),
        ));
    }
    rows.push(("agent RSS, idle".into(), rss_idle, "MiB", "-", None));
    rows.push(("agent RSS, 100 sessions".into(), rss_100, "MiB", "-", None));
    let rows: Vec<(&str, f64, &str, &str, Option<f64>)> = rows
        .iter()
        .map(|(a, b, c, d, e)| (a.as_str(), *b, *c, *d, *e))
        .collect();
    write_results("ssh", &title, &rows)
}

/// `v` holds rounds of [sshd, direct, relay, ...]: target `t`'s rate in the round where it did
/// worst against sshd, and sshd's rate in that round.
fn worst_round(v: &[f64], n: usize, t: usize) -> (f64, f64) {
    v.chunks(n)
        .filter(|c| c.len() > t && c[0] > 0.0)
        .map(|c| (c[t], c[0]))
        .min_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)))
        .unwrap_or((0.0, 0.0))
}

/// `v` holds rounds of [sshd, direct, relay]: the median of each target's values.
fn per_target_median(v: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|t| {
            let mut mine: Vec<f64> = v.iter().skip(t).step_by(n).copied().collect();
            pct(&mut mine, 0.5)
        })
        .collect()
}

/// 1 GiB (or `gib`) up (`head -c | ssh 'cat > /dev/null'`) and down; rates pushed in MiB/s,
/// the CPU each took returned.
fn bulk(
    env_cli: &str,
    name: &str,
    ssh: &str,
    gib: u64,
    procs: &Procs,
    up: &mut Vec<f64>,
    down: &mut Vec<f64>,
) -> anyhow::Result<[Cpu; 2]> {
    let cmds = [
        (
            "upload",
            format!("head -c {gib}G /dev/zero | {env_cli} {ssh} 'cat > /dev/null'"),
        ),
        (
            "download",
            format!("{env_cli} {ssh} 'head -c {gib}G /dev/zero' > /dev/null"),
        ),
    ];
    let mut rates = [0.0; 2];
    let mut cpu = [Cpu::default(); 2];
    for (i, (what, cmd)) in cmds.iter().enumerate() {
        let (secs, c) = measure(procs, || {
            let o = sh(cmd)?;
            if !o.status.success() {
                bail!("{name} {what}: {}", String::from_utf8_lossy(&o.stderr));
            }
            Ok(())
        })?;
        rates[i] = gib as f64 * 1024.0 / secs;
        cpu[i] = c;
    }
    up.push(rates[0]);
    down.push(rates[1]);
    eprintln!(
        "{name} ({}): up {:.0} MiB/s, down {:.0} MiB/s",
        if ssh.contains(CHACHA) {
            "chacha20"
        } else {
            "aes128-gcm"
        },
        rates[0],
        rates[1]
    );
    Ok(cpu)
}

/// `sftp ... -b BATCH DEST` from an `ssh ... DEST` command line (the destination goes last).
fn sftp_batch(sftp: &str, batch: &Path) -> String {
    let (opts, dest) = sftp.rsplit_once(' ').unwrap_or((sftp, ""));
    format!("{opts} -b {} {dest}", batch.display())
}
