//! The `sftp` subsystem (russh-sftp): the workspace's filesystem as the workspace user sees it.
//! Relative paths start at the home directory, as with sshd.

use std::collections::HashMap;
use std::fs::{self, File as FsFile, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::Context;
use russh::server::Msg;
use russh::{Channel, ChannelId, ChannelMsg};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use tokio::io::AsyncWriteExt;

enum Open {
    File(FsFile),
    Dir(Option<Vec<File>>),
}

/// The order of SSH_FXP_SYMLINK's two paths. The draft (filexfer-02) sends the link's path,
/// then its target; OpenSSH's sftp sends them the other way round, and paramiko copies it. As
/// other servers that work with both do (asyncssh, ProFTPD), the client's version string decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymlinkOrder {
    /// (linkpath, targetpath), as the draft says.
    Draft,
    /// (targetpath, linkpath): OpenSSH and paramiko.
    OpenSsh,
}

impl SymlinkOrder {
    /// From the client's SSH identification string (`SSH-2.0-OpenSSH_9.2p1 ...`).
    pub fn of_client(sshid: &[u8]) -> Self {
        let id = String::from_utf8_lossy(sshid);
        if ["OpenSSH", "paramiko"].iter().any(|n| id.contains(n)) {
            SymlinkOrder::OpenSsh
        } else {
            SymlinkOrder::Draft
        }
    }
}

pub struct Sftp {
    home: PathBuf,
    handles: HashMap<String, Open>,
    next: u64,
    symlinks: SymlinkOrder,
}

impl Sftp {
    pub fn new(home: PathBuf, symlinks: SymlinkOrder) -> Self {
        Sftp {
            home,
            handles: HashMap::new(),
            next: 0,
            symlinks,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        if p.is_empty() || p == "." {
            self.home.clone()
        } else if p.starts_with('/') {
            PathBuf::from(p)
        } else {
            self.home.join(p)
        }
    }

    fn add(&mut self, o: Open) -> String {
        self.next += 1;
        let h = format!("h{}", self.next);
        self.handles.insert(h.clone(), o);
        h
    }
}

fn code(e: std::io::Error) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn apply_attrs(path: &Path, attrs: &FileAttributes) -> Result<(), StatusCode> {
    if let Some(mode) = attrs.permissions {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)).map_err(code)?;
    }
    if let Some(size) = attrs.size {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(size))
            .map_err(code)?;
    }
    if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
        let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
        let f = FsFile::options()
            .write(true)
            .open(path)
            .or_else(|_| FsFile::open(path))
            .map_err(code)?;
        f.set_times(
            fs::FileTimes::new()
                .set_accessed(t(atime))
                .set_modified(t(mtime)),
        )
        .map_err(code)?;
    }
    Ok(())
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _ext: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename);
        let mut o = OpenOptions::new();
        o.read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE));
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                o.create_new(true);
            } else {
                o.create(true);
            }
            o.mode(attrs.permissions.unwrap_or(0o644) & 0o7777);
        }
        let f = o.open(&path).map_err(code)?;
        Ok(Handle {
            id,
            handle: self.add(Open::File(f)),
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        self.handles.remove(&handle).ok_or(StatusCode::Failure)?;
        Ok(ok(id))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let mut buf = vec![0u8; len.min(256 * 1024) as usize];
        let n = f.read_at(&mut buf, offset).map_err(code)?;
        if n == 0 {
            return Err(StatusCode::Eof);
        }
        buf.truncate(n);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        f.write_all_at(&data, offset).map_err(code)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = fs::symlink_metadata(self.path(&path)).map_err(code)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&m),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = fs::metadata(self.path(&path)).map_err(code)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&m),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let m = f.metadata().map_err(code)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&m),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        apply_attrs(&self.path(&path), &attrs)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        if let Some(mode) = attrs.permissions {
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                .map_err(code)?;
        }
        if let Some(size) = attrs.size {
            f.set_len(size).map_err(code)?;
        }
        if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
            let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
            f.set_times(
                fs::FileTimes::new()
                    .set_accessed(t(atime))
                    .set_modified(t(mtime)),
            )
            .map_err(code)?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let dir = self.path(&path);
        let mut files = Vec::new();
        for name in [".", ".."] {
            if let Ok(m) = fs::metadata(dir.join(name)) {
                files.push(File::new(name, FileAttributes::from(&m)));
            }
        }
        for e in fs::read_dir(&dir).map_err(code)? {
            let e = e.map_err(code)?;
            if let Ok(m) = fs::symlink_metadata(e.path()) {
                files.push(File::new(
                    e.file_name().to_string_lossy(),
                    FileAttributes::from(&m),
                ));
            }
        }
        Ok(Handle {
            id,
            handle: self.add(Open::Dir(Some(files))),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Open::Dir(files)) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure);
        };
        match files.take() {
            Some(files) if !files.is_empty() => Ok(Name { id, files }),
            _ => Err(StatusCode::Eof),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        fs::remove_file(self.path(&filename)).map_err(code)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        // The mode goes through the umask, as with sshd's sftp-server.
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(attrs.permissions.unwrap_or(0o777) & 0o7777)
            .create(self.path(&path))
            .map_err(code)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        fs::remove_dir(self.path(&path)).map_err(code)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = self.path(&path);
        let real = fs::canonicalize(&p).unwrap_or(p);
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (self.path(&oldpath), self.path(&newpath));
        if to.symlink_metadata().is_ok() {
            // SSH_FXP_RENAME does not overwrite (sftp's `rename` says so).
            return Err(StatusCode::Failure);
        }
        fs::rename(from, to).map_err(code)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let t = fs::read_link(self.path(&path)).map_err(code)?;
        Ok(Name {
            id,
            files: vec![File::dummy(t.to_string_lossy())],
        })
    }

    /// russh-sftp names the two paths in the draft's order; see [`SymlinkOrder`].
    async fn symlink(
        &mut self,
        id: u32,
        first: String,
        second: String,
    ) -> Result<Status, Self::Error> {
        let (link, target) = match self.symlinks {
            SymlinkOrder::Draft => (first, second),
            SymlinkOrder::OpenSsh => (second, first),
        };
        std::os::unix::fs::symlink(&target, self.path(&link)).map_err(code)?;
        Ok(ok(id))
    }
}

/// The sftp subsystem over an in-memory pipe, so the channel ends like sshd's: exit-status 0
/// once the client is done (scp checks it).
pub(super) async fn run_sftp(
    channel: &mut Channel<Msg>,
    handle: &russh::server::Handle,
    id: ChannelId,
    home: PathBuf,
    symlinks: super::sftp::SymlinkOrder,
) -> anyhow::Result<super::exec::Ended> {
    let (ours, theirs) = tokio::io::duplex(512 * 1024);
    // The sftp server does its file I/O synchronously: it gets a thread and a runtime of its own,
    // so a slow disk never stalls the agent's other sessions, heartbeats or terminals.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let handler = Sftp::new(home, symlinks);
    std::thread::Builder::new()
        .name("sftp".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                russh_sftp::server::run(theirs, handler).await;
                // Until the session has ended (or its owner is gone).
                let _ = done_rx.await;
            });
        })
        .context("starting the sftp thread")?;
    let (rd, mut wr) = tokio::io::split(ours);
    let h = handle.clone();
    let out = tokio::spawn(async move {
        let mut rd = outpost_common::pump::ChunkReader::new(rd, 256 * 1024);
        while let Some(chunk) = rd.next().await {
            if h.data(id, chunk).await.is_err() {
                break;
            }
        }
    });
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            Some(ChannelMsg::Eof) | None => break,
            Some(_) => {}
        }
    }
    let _ = wr.shutdown().await;
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(5), out).await;
    let _ = done_tx.send(());
    crate::sys::trim_heap();
    Ok(super::exec::Ended::Code(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_order_follows_the_client() {
        for (id, order) in [
            (
                &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"[..],
                SymlinkOrder::OpenSsh,
            ),
            (b"SSH-2.0-OpenSSH_for_Windows_8.1", SymlinkOrder::OpenSsh),
            (b"SSH-2.0-paramiko_2.12.0", SymlinkOrder::OpenSsh),
            (b"SSH-2.0-AsyncSSH_2.10.1", SymlinkOrder::Draft),
            (b"SSH-2.0-russh_0.65.1", SymlinkOrder::Draft),
            (b"", SymlinkOrder::Draft),
        ] {
            assert_eq!(
                SymlinkOrder::of_client(id),
                order,
                "{}",
                String::from_utf8_lossy(id)
            );
        }
    }
}
