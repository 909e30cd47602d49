"""An exclusive lock file for a job that writes one output, so that two runs on the same output (two
terminals) cannot interleave their writes: ``flock`` on ``<output>.lock`` (where ``fcntl`` exists), which
the kernel drops when the process dies, even by ``kill -9``, so a dead run's lock file is taken over.
The file holds the PID and host of the holder, named when another run is refused; it is removed on
release. Without ``fcntl`` the file is created exclusively, and one naming a PID that no longer runs
is taken over."""
from __future__ import annotations

import errno
import os
import socket
from typing import Callable, Optional

from .processes import process_running

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


class ExclusiveLock:
    """``with ExclusiveLock(path, busy):`` -- ``busy(holder)`` (e.g. ``"PID 123 on host"``) returns the
    exception raised while another live process holds ``path``; ``failed(text)`` the one for a lock
    file that cannot be created or written."""

    def __init__(self, path: str, busy: Callable[[str], Exception], failed: Callable[[str], Exception]):
        self.path = str(path)
        self.busy = busy
        self.failed = failed
        self._fd: Optional[int] = None

    def holder(self) -> str:
        try:
            with open(self.path) as f:
                fields = f.read().split()
        except OSError:
            fields = []
        return f"PID {fields[0]} on {fields[1]}" if len(fields) >= 2 else "PID unknown"

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise
        except OSError as exc:
            raise self.failed(f"{self.path}: cannot create the lock file: {exc.strerror or exc}") from None

    def _acquire_once(self) -> Optional[int]:
        if fcntl is not None:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self.busy(self.holder()) from None
                raise self.failed(f"{self.path}: cannot lock: {exc.strerror or exc}") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and removed) it between our open and lock
                os.close(fd)
                return None
            return fd
        try:
            return self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            holder = self.holder()
            pid = holder.split()[1] if holder.startswith("PID ") else ""
            if pid.isdigit() and not process_running(int(pid)):
                try:
                    os.unlink(self.path)  # a dead run's lock
                except FileNotFoundError:
                    pass
                return None
            raise self.busy(holder) from None

    def acquire(self) -> "ExclusiveLock":
        for _ in range(10):  # the file may be replaced between open and lock: retry
            fd = self._acquire_once()
            if fd is not None:
                self._fd = fd
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                except OSError as exc:      # a full disk
                    self.release()
                    raise self.failed(f"{self.path}: cannot write the lock file: {exc.strerror or exc}") from None
                return self
        raise self.failed(f"{self.path}: cannot take the lock (the file keeps changing)")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiting run then retries on a fresh file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
