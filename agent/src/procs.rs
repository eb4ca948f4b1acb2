//! Which listening TCP ports belong to the workspace, read from /proc at the moment it is asked
//! (for the dashboard's port list and for each relayed `/tcp/PORT` connection).
//!
//! A port belongs to the workspace when a process that holds its listening socket is one of the
//! workspace's, and that is decided by what the kernel says, never by anything a process could
//! set for itself (its environment, its name):
//! - [`PortOwners::Uid`]: a process of the agent's own Unix user. That is the workspace when the
//!   workspace has a user (or a container) of its own: `docker`, `local` run as root.
//! - [`PortOwners::Tree`]: a process descending from the agent. That is what is left when the
//!   workspace shares its Unix user with control and everything else that user runs (`local`
//!   without isolation); a process that detached itself from the agent's tree (a daemon that
//!   double-forked) is not reachable then.
//!
//! The agent's own sockets (its SSH listener) are never counted.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Whose listening sockets the workspace's ports are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortOwners {
    #[default]
    Uid,
    Tree,
}

impl std::str::FromStr for PortOwners {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uid" => Ok(PortOwners::Uid),
            "tree" => Ok(PortOwners::Tree),
            _ => Err(format!("expected uid or tree, not {s:?}")),
        }
    }
}

/// A listening TCP socket from /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listener {
    port: u16,
    uid: u32,
    inode: u64,
}

/// The workspace's listening ports, each with the name of a process holding it.
pub fn workspace_ports(owners: PortOwners) -> BTreeMap<u16, Option<String>> {
    let listeners: Vec<Listener> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| parse_listening(&t))
        .collect();
    let me = std::process::id();
    let my_uid = nix::unistd::geteuid().as_raw();
    let own = socket_inodes(me);
    let wanted: HashMap<u64, u16> = listeners
        .iter()
        .filter(|l| l.uid == my_uid && !own.contains(&l.inode))
        .map(|l| (l.inode, l.port))
        .collect();
    let mut ports = BTreeMap::new();
    if wanted.is_empty() {
        return ports;
    }
    let candidates: Vec<u32> = match owners {
        // Only processes of our user can be ours (the owner of /proc/PID is its euid): a stat
        // each, and the fds of the workspace's own processes only.
        PortOwners::Uid => all_pids()
            .into_iter()
            .filter(|p| *p != me && owner_of(*p) == Some(my_uid))
            .collect(),
        PortOwners::Tree => descendants(crate::reaper::tree_root())
            .into_iter()
            .filter(|p| *p != me)
            .collect(),
    };
    for pid in candidates {
        let held: Vec<u16> = socket_inodes(pid)
            .iter()
            .filter_map(|i| wanted.get(i).copied())
            .collect();
        if held.is_empty() {
            continue;
        }
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|n| !n.is_empty());
        for port in held {
            let e = ports.entry(port).or_insert(None);
            if e.is_none() {
                *e = name.clone();
            }
        }
    }
    ports
}

/// Whether `port` is the workspace's right now (the relay's check, made at connect time).
pub fn is_workspace_port(owners: PortOwners, port: u16) -> bool {
    workspace_ports(owners).contains_key(&port)
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The effective uid of `pid` (the owner of its /proc directory).
fn owner_of(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The parent of `pid`, from /proc/PID/stat (the field after the command's closing paren).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live process below `root` in the process tree.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(pp) = parent_of(pid) {
            children.entry(pp).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    let mut seen = HashSet::new();
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut set = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                if let Some(i) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok())
                {
                    set.insert(i);
                }
            }
        }
    }
    set
}

/// The LISTEN (state 0A) rows of /proc/net/tcp or tcp6.
fn parse_listening(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            Some(Listener {
                port: u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?,
                uid: f[7].parse().ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_rows() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A0B2 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(
            parse_listening(text),
            vec![Listener {
                port: 8000,
                uid: 1000,
                inode: 4242
            }]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  0        0 99 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(
            parse_listening(v6),
            vec![Listener {
                port: 3000,
                uid: 0,
                inode: 99
            }]
        );
    }

    #[test]
    fn ppid_after_the_command_name() {
        assert_eq!(parse_ppid("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn own_children_ports_are_found_in_both_modes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        // This process's own sockets never count (the agent's SSH listener).
        assert!(!is_workspace_port(PortOwners::Tree, port));
        assert!(!is_workspace_port(PortOwners::Uid, port));
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("port");
        let child_port: u16 = line.trim().parse().expect("a port");
        assert!(is_workspace_port(PortOwners::Tree, child_port));
        assert!(is_workspace_port(PortOwners::Uid, child_port));
        assert_eq!(
            workspace_ports(PortOwners::Tree).get(&child_port),
            Some(&Some("python3".to_string()))
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
