"""One training per snapshot prefix: ``<snapshot_prefix>.lock`` holds the PID of the run writing there.

Two runs on the same prefix would overwrite each other's snapshots and metrics. The lock is an
``flock`` on the lock file (where ``fcntl`` exists): the kernel drops it when its process dies,
even by ``kill -9``, so a lock file left by a dead run is simply taken over. Elsewhere the file is
created exclusively and a file naming a PID that no longer runs is taken over.
"""
from __future__ import annotations

import errno
import os
import socket
from typing import Optional

from .data_sources import TrainingError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


def lock_path(snapshot_prefix: str) -> str:
    return f"{snapshot_prefix}.lock"


def prepare_snapshot_folder(snapshot_prefix: str, where: str) -> None:
    """Create the snapshot folder now, so a prefix under a regular file fails at the start, not at the
    first snapshot (``where`` names the solver file in the message)."""
    folder = os.path.dirname(snapshot_prefix)
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"{where}: snapshot_prefix {snapshot_prefix!r}: cannot create the folder {folder}: "
                            f"{exc.strerror or exc}") from None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class SnapshotLock:
    """``with SnapshotLock(prefix, where):`` -- refuses (TrainingError) while another live run holds it."""

    def __init__(self, snapshot_prefix: str, where: str):
        self.prefix = snapshot_prefix
        self.where = where
        self.path = lock_path(snapshot_prefix)
        self._fd: Optional[int] = None

    def _refuse(self, holder: str):
        raise TrainingError(f"{self.path}: another training ({holder}) is writing snapshots with the prefix "
                            f"{self.prefix!r} ({self.where}); stop it or choose another snapshot_prefix")

    def _holder(self) -> str:
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
            raise TrainingError(f"{self.path}: cannot create the snapshot lock: {exc.strerror or exc}") from None

    def acquire(self) -> "SnapshotLock":
        prepare_snapshot_folder(self.prefix, self.where)
        for _ in range(10):  # the file may be replaced between open and lock: retry
            fd = self._acquire_once()
            if fd is not None:
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                return self
        raise TrainingError(f"{self.path}: cannot take the snapshot lock (the file keeps changing)")

    def _acquire_once(self) -> Optional[int]:
        if fcntl is not None:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    self._refuse(self._holder())
                raise TrainingError(f"{self.path}: cannot lock: {exc.strerror or exc}") from None
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
            holder = self._holder()
            pid = holder.split()[1] if holder.startswith("PID ") else ""
            if pid.isdigit() and not _pid_running(int(pid)):
                try:
                    os.unlink(self.path)  # a dead run's lock
                except FileNotFoundError:
                    pass
                return None
            self._refuse(holder)

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
