"""Where a command writes: ``--out`` checked before any work, one run at a time per folder, and the
mode new files get (``file_mode``: 0o666 less the umask, for every atomic write of the package).

The commands' ``--out`` options run these checks through typer callbacks
(``vlexplain.commands._out``). They refuse, in one line, an ``--out`` that names an existing file where a folder is expected (or a
folder where a file is expected) and one in a place that cannot be written; the folder callback
also claims the folder for the command's lifetime, so a second run into the same ``--out``
is refused while the first one runs (instead of both overwriting each other's files).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import InputError

LOCK_SUFFIX = ".vlexplain-lock"


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc).

    Setting the umask to read it back would briefly change it for every thread of the process
    (the web explorer writes files from several threads).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode an ordinary new file gets: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_writable(p: Path, flag: str) -> None:
    """``p`` can be created: its nearest existing ancestor is a folder we can write in."""
    anc = _nearest_existing(p.parent)
    if not anc.is_dir():
        raise InputError(f"{flag} {p}: {anc} is a file, not a folder")
    try:  # a real probe: permissions, read-only file systems, /proc and the like
        with tempfile.TemporaryFile(dir=anc, prefix=".vlexplain-probe-"):
            pass
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise InputError(f"{flag} {p}: cannot write in {anc} ({reason.lower()})") from None


def check_out_dir(out: str | os.PathLike, flag: str = "--out") -> Path:
    """An output folder that is not an existing file and can be written (not created here)."""
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag} {p} is an existing file; give a folder (it is created if missing)")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {p}: cannot write in this folder (permission denied)")
    else:
        _check_writable(p, flag)
    return p


def check_out_file(out: str | os.PathLike, flag: str = "--out") -> Path:
    """An output file that is not an existing folder and can be written."""
    p = Path(out).expanduser()
    if p.is_dir():
        raise InputError(f"{flag} {p} is a folder; give a file name")
    _check_writable(p, flag)
    return p


class FolderClaim:
    """An exclusive claim on an output folder: ``.NAME.vlexplain-lock`` beside it, locked with flock.

    The lock dies with the process (a killed run leaves no stale claim); the file is removed on
    release. Under a multi-process launcher (``WORLD_SIZE`` > 1) the processes of one run share the
    folder, so no claim is taken.
    """

    def __init__(self, out: Path, flag: str = "--out"):
        self.out, self.flag = out, flag
        self.fd: int | None = None  # the lock file, while the folder is claimed
        full = Path(os.path.abspath(out))  # "." and "runs/.." get a real folder name
        self.path = full.parent / f".{full.name or 'root'}{LOCK_SUFFIX}"

    def acquire(self) -> FolderClaim:
        try:
            import fcntl
        except ImportError:  # no flock on this system: no claim
            return self
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the file may be removed by a run finishing between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise InputError(
                        f"{self.flag} {self.out} is being written by another vlexplain run "
                        f"({self._holder()}); wait for it to finish or choose another {self.flag}"
                    ) from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise InputError(f"{self.flag} {self.out}: could not claim the folder; try again")

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return "process unknown"
        return f"process {pid}" if pid else "process unknown"

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing releases the lock
        self.fd = None


def claim(out: str | os.PathLike, flag: str = "--out") -> FolderClaim:
    """Claim ``out`` for this process until ``FolderClaim.release`` (see ``FolderClaim``)."""
    return FolderClaim(Path(out).expanduser(), flag).acquire()
