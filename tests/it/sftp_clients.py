#!/usr/bin/env python3
"""Every SFTP v3 operation against the agent's sftp subsystem, with a client that is not
OpenSSH's: paramiko (which sends SSH_FXP_SYMLINK in OpenSSH's swapped order) or asyncssh (which
sends the draft's order to a server that is not OpenSSH). Host keys are checked strictly.

usage: sftp_clients.py paramiko|asyncssh PORT USER KEY KNOWN_HOSTS

Prints "ok OPERATION" per operation; leaves LIB-final/ (a file and a symlink to it) for the
caller to inspect on disk; exits non-zero on the first failure.
"""
import stat
import sys

LIB, PORT, USER, KEY, KNOWN = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
BASE = f"{LIB}-ops"
FINAL = f"{LIB}-final"
DATA = b"hello sftp " * 1000


def ok(op):
    print(f"ok {op}", flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run_paramiko():
    import paramiko

    c = paramiko.SSHClient()
    c.load_host_keys(KNOWN)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect("127.0.0.1", port=PORT, username=USER, key_filename=KEY,
              look_for_keys=False, allow_agent=False)
    s = c.open_sftp()
    home = s.normalize(".")
    check(home.startswith("/"), home)
    ok("realpath")
    s.mkdir(BASE, 0o755)
    ok("mkdir")
    with s.open(f"{BASE}/a.txt", "wb") as f:
        f.write(DATA)
    ok("open+write+close")
    with s.open(f"{BASE}/a.txt", "rb") as f:
        check(f.read() == DATA, "read back")
        check(f.stat().st_size == len(DATA), "fstat size")
    ok("read")
    ok("fstat")
    check(s.stat(f"{BASE}/a.txt").st_size == len(DATA), "stat size")
    ok("stat")
    s.chmod(f"{BASE}/a.txt", 0o640)
    check(stat.S_IMODE(s.stat(f"{BASE}/a.txt").st_mode) == 0o640, "chmod")
    s.utime(f"{BASE}/a.txt", (1000000, 2000000))
    check(int(s.stat(f"{BASE}/a.txt").st_mtime) == 2000000, "utime")
    ok("setstat")
    with s.open(f"{BASE}/a.txt", "r+b") as f:
        f.truncate(10)
    check(s.stat(f"{BASE}/a.txt").st_size == 10, "truncate")
    ok("fsetstat")
    s.symlink("a.txt", f"{BASE}/link")
    check(s.readlink(f"{BASE}/link") == "a.txt", "readlink")
    ok("symlink")
    ok("readlink")
    check(stat.S_ISLNK(s.lstat(f"{BASE}/link").st_mode), "lstat")
    check(s.stat(f"{BASE}/link").st_size == 10, "stat follows")
    ok("lstat")
    s.rename(f"{BASE}/a.txt", f"{BASE}/b.txt")
    ok("rename")
    names = sorted(n for n in s.listdir(BASE) if n not in (".", ".."))
    check(names == ["b.txt", "link"], names)
    ok("opendir+readdir")
    try:
        s.stat(f"{BASE}/missing")
        check(False, "stat of a missing file succeeded")
    except FileNotFoundError:
        ok("no-such-file")
    s.remove(f"{BASE}/link")
    s.remove(f"{BASE}/b.txt")
    ok("remove")
    s.rmdir(BASE)
    ok("rmdir")
    s.mkdir(FINAL)
    with s.open(f"{FINAL}/target.txt", "wb") as f:
        f.write(b"target\n")
    s.symlink("target.txt", f"{FINAL}/link")
    s.close()
    c.close()


def run_asyncssh():
    import asyncio
    import asyncssh

    async def main():
        async with asyncssh.connect("127.0.0.1", port=PORT, username=USER, client_keys=[KEY],
                                    known_hosts=KNOWN, agent_path=None) as conn:
            async with conn.start_sftp_client() as s:
                home = await s.realpath(".")
                check(home.startswith("/"), home)
                ok("realpath")
                await s.mkdir(BASE)
                ok("mkdir")
                async with s.open(f"{BASE}/a.txt", "wb") as f:
                    await f.write(DATA)
                ok("open+write+close")
                async with s.open(f"{BASE}/a.txt", "rb") as f:
                    check(await f.read() == DATA, "read back")
                    check((await f.stat()).size == len(DATA), "fstat size")
                ok("read")
                ok("fstat")
                check((await s.stat(f"{BASE}/a.txt")).size == len(DATA), "stat size")
                ok("stat")
                await s.chmod(f"{BASE}/a.txt", 0o640)
                check(stat.S_IMODE((await s.stat(f"{BASE}/a.txt")).permissions) == 0o640, "chmod")
                await s.utime(f"{BASE}/a.txt", (1000000, 2000000))
                check((await s.stat(f"{BASE}/a.txt")).mtime == 2000000, "utime")
                ok("setstat")
                async with s.open(f"{BASE}/a.txt", "r+b") as f:
                    await f.truncate(10)
                check((await s.stat(f"{BASE}/a.txt")).size == 10, "truncate")
                ok("fsetstat")
                await s.symlink("a.txt", f"{BASE}/link")
                check(await s.readlink(f"{BASE}/link") == "a.txt", "readlink")
                ok("symlink")
                ok("readlink")
                check(stat.S_ISLNK((await s.lstat(f"{BASE}/link")).permissions), "lstat")
                check((await s.stat(f"{BASE}/link")).size == 10, "stat follows")
                ok("lstat")
                await s.rename(f"{BASE}/a.txt", f"{BASE}/b.txt")
                ok("rename")
                names = sorted(n for n in await s.listdir(BASE) if n not in (".", ".."))
                check(names == ["b.txt", "link"], names)
                ok("opendir+readdir")
                try:
                    await s.stat(f"{BASE}/missing")
                    check(False, "stat of a missing file succeeded")
                except asyncssh.SFTPNoSuchFile:
                    ok("no-such-file")
                await s.remove(f"{BASE}/link")
                await s.remove(f"{BASE}/b.txt")
                ok("remove")
                await s.rmdir(BASE)
                ok("rmdir")
                await s.mkdir(FINAL)
                async with s.open(f"{FINAL}/target.txt", "wb") as f:
                    await f.write(b"target\n")
                await s.symlink("target.txt", f"{FINAL}/link")

    asyncio.run(main())


{"paramiko": run_paramiko, "asyncssh": run_asyncssh}[LIB]()
print("done", flush=True)
