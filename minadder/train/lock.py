"""One run per folder: the lock file ``.lock`` that a run holds while it writes into its folder.

Two runs writing into one folder would mix their checkpoints, so a run takes the folder's
lock before it writes anything there, and releases it when it ends, after an error or
Ctrl-C too. A second run into the same folder stops at once with one line naming the
owner; nothing of the first is touched.

The lock is the operating system's lock on the file ``.lock`` (``fcntl.flock``), which holds
the owner's pid, host and start time for the messages. The kernel releases the lock when
its process dies, however it dies, so a ``.lock`` file left behind by a killed run (or a
crashed machine) is known to be stale: the next run takes it over, with a note naming the
old owner. Where the file system cannot lock files, the owner's pid is checked instead: a
``.lock`` whose pid no longer runs on this host is stale.
"""
import datetime
import json
import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: the pid check below does the work
    fcntl = None

LOCK = ".lock"


class FolderInUse(RuntimeError):
    """Another run holds the folder's lock (the message names the folder and the owner)."""


def _owner_text():
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": datetime.datetime.now().isoformat(timespec="seconds")})


def _read_owner(fd):
    """The owner recorded in the open lock file (a dict), or None when it is empty or garbled."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        owner = json.loads(os.read(fd, 4096).decode("utf-8"))
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def describe(owner):
    """'pid 123 on host node7, started 2026-11-26T10:58:45' (or 'an unknown process')."""
    if not owner:
        return "an unknown process"
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}"


def _pid_runs_here(owner):
    """Whether the recorded owner may still run: its pid runs on this host, or it is on
    another host (which cannot be checked from here). Nobody recorded: not running."""
    if owner is None:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _try_lock(fd):
    """Lock the open file without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # a file system without locks
            pass
    return not _pid_runs_here(_read_owner(fd))


def _in_use(folder, owner):
    return FolderInUse(f"{folder} is in use by another run ({describe(owner)}); wait for it to finish, or choose "
                       f"another --output-dir (if no run is using it, delete {Path(folder) / LOCK})")


def check_not_in_use(folder):
    """Before any work: refuse a folder whose lock another run holds (takes nothing)."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if not _try_lock(fd):
            raise _in_use(folder, _read_owner(fd))
    finally:
        os.close(fd)  # closing releases a lock this check took


class RunLock:
    """The lock of a run folder, held from ``acquire`` until ``release`` (or the end of a
    ``with`` block). ``stale`` is the owner of a stale lock that was taken over, else None."""

    def __init__(self, folder):
        self.path, self.fd, self.stale = Path(folder) / LOCK, None, None

    def acquire(self):
        """Take the lock or raise FolderInUse; a stale lock is taken over (``stale``)."""
        for _ in range(10):  # the file can be replaced between open and lock: try again
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                owner = _read_owner(fd)
                os.close(fd)
                raise _in_use(self.path.parent, owner)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:  # its owner released it (deleting it) meanwhile
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise FolderInUse(f"{self.path}: could not take the lock (it keeps being replaced)")
        self.fd, self.stale = fd, _read_owner(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, _owner_text().encode("utf-8"))
        return self

    def release(self):
        """Delete the lock file, then drop the lock (in this order: no one can take the old file)."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
