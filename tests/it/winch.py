# Runs ssh on a pseudo-terminal of 30x100, then resizes it to 40x120: prints what the remote
# `stty size` saw before and after (the window-change request).
import fcntl, os, pty, struct, sys, termios, time

args = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.execvp("ssh", ["ssh"] + args)
out = b""
deadline = time.time() + 20
resized = False
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not resized and b"30 100" in out:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        resized = True
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
