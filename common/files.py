"""The one way to write a file: a temporary name in the same folder, then a rename, so a reader never
sees half a file and a failure (a full disk, an exception, Ctrl-C) leaves neither a half-written file
nor the temporary one (docs/architecture.md §Writing files). ``fsync=True`` also flushes the data and
the rename to the disk before returning: for what a crash must not lose (snapshots, metrics records).
A ``kill -9`` mid-write can leave a ``.<name>.*.partial`` file; the target itself is intact."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once: os.umask() is process-wide, flipping it later would race with threads
_UMASK = _read_umask()
DEFAULT_MODE = 0o666 & ~_UMASK     # what open() would have given a new file


def temporary_name(path: PathLike) -> Path:
    """A new, empty file beside ``path`` that nothing else uses: ``.<name>.<random>.partial<ext>``
    (the extension kept, for writers that choose the format by it, such as ``cv2.imwrite``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=str(path.parent))
    os.close(fd)
    return Path(tmp)


def _fsync_path(path: PathLike) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        _fsync_path(folder)


def _discard(tmp: PathLike) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, fsync: bool = False, mode: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (``torch.save``,
    ``savefig``, ``cv2.imwrite``); when the block ends normally it becomes ``path`` (permissions
    ``mode``, default those of a new file), otherwise it is removed and the exception passes on."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.chmod(tmp, DEFAULT_MODE if mode is None else mode)
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    if fsync:
        _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_file(path: PathLike, binary: bool = False, *, fsync: bool = False, mode: Optional[int] = None,
                newline: Optional[str] = None, encoding: Optional[str] = None):
    """Yield an open file (text, or ``binary``) whose content becomes ``path`` when the block ends
    normally; see :func:`atomic_path`."""
    with atomic_path(path, fsync=fsync, mode=mode) as tmp:
        with open(tmp, "wb" if binary else "w", newline=None if binary else newline,
                  encoding=None if binary else encoding) as f:
            yield f


def write_atomic(path: PathLike, text: str, *, fsync: bool = False, mode: Optional[int] = None,
                 newline: Optional[str] = None, encoding: Optional[str] = None) -> Path:
    """Write ``text`` to ``path`` through a temporary name and a rename; returns ``path``."""
    with atomic_file(path, fsync=fsync, mode=mode, newline=newline, encoding=encoding) as f:
        f.write(text)
    return Path(path)


def write_atomic_bytes(path: PathLike, data: bytes, *, fsync: bool = False, mode: Optional[int] = None) -> Path:
    """Write ``data`` to ``path`` through a temporary name and a rename; returns ``path``."""
    with atomic_file(path, binary=True, fsync=fsync, mode=mode) as f:
        f.write(data)
    return Path(path)


class StagedFiles:
    """Several files that appear together or not at all (a snapshot's caffemodel, trainstate and
    solverstate): :meth:`stage` gives each a temporary name; when the ``with`` block ends normally
    all are renamed into place in the order staged (put last the one whose presence says the set is
    complete), otherwise every temporary file is removed."""

    def __init__(self, fsync: bool = False):
        self.fsync = fsync
        self._staged: List[Tuple[Path, Path]] = []
        self._adopted: set = set()

    def stage(self, path: PathLike) -> Path:
        """A temporary path that becomes ``path`` when the block succeeds."""
        tmp = temporary_name(path)
        self._staged.append((tmp, Path(path)))
        return tmp

    def adopt(self, finished: PathLike, path: PathLike) -> None:
        """Move the already written file ``finished`` to ``path`` with the rest (on failure it stays)."""
        self._staged.append((Path(finished), Path(path)))
        self._adopted.add(Path(finished))

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            for tmp, _ in self._staged:
                if tmp not in self._adopted:
                    os.chmod(tmp, DEFAULT_MODE)
                if self.fsync:
                    _fsync_path(tmp)
            for tmp, path in self._staged:
                os.replace(tmp, path)
        except BaseException:
            self.discard()
            raise
        if self.fsync:
            for folder in {path.parent for _, path in self._staged}:
                _fsync_folder(folder)

    def discard(self) -> None:
        """Remove the temporary files staged so far (adopted files are left where they are)."""
        for tmp, _ in self._staged:
            if tmp not in self._adopted:
                _discard(tmp)
