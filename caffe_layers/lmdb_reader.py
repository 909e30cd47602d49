"""Read OpenPose training LMDBs: ours (raw or encoded datums) and the original pipeline's.

Keys are :func:`record_key` record numbers; values are Caffe ``Datum`` bytes decoded by
:func:`openpose_train.caffe_layers.datum.read_datum`.

py-lmdb refuses to open one LMDB twice in a process ("already open in this process"), yet one
process may read an LMDB through several readers (two sources of one data layer on one file, the
TRAIN and TEST layers, a test beside the layer): readers of one file in one process share its
environment, which closes with the last of them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import lmdb

from openpose_train.common.errors import OpenPoseTrainError

from .datum import Record, read_datum


def record_key(index: int) -> bytes:
    """The LMDB key of record ``index``: ``%07d``, as the original pipeline and our writer store them."""
    return b"%07d" % index


class LmdbReadError(OpenPoseTrainError, OSError):
    """The path is not a readable LMDB (message names it)."""


class LmdbTruncatedError(LmdbReadError):
    """``data.mdb`` ends before its last committed page (message names the file)."""


def open_lmdb(path, readahead: bool = False) -> lmdb.Environment:
    """Open an LMDB directory (or single file) read-only, without a lock file.

    Every reader of an LMDB opens it here. A ``data.mdb`` shorter than its last committed page
    (a copy cut short, a full disk) is refused: LMDB maps the file, and reading a page past its
    end kills the process with SIGBUS instead of raising."""
    path = Path(path)
    if not path.exists():
        raise LmdbReadError(f"{path}: no such LMDB")
    data_file = path / "data.mdb" if path.is_dir() else path
    if not data_file.is_file():
        raise LmdbReadError(f"{path}: not an LMDB (no {data_file.name})")
    if data_file.stat().st_size == 0:
        raise LmdbReadError(f"{data_file}: empty file, not an LMDB")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=readahead,
                        subdir=path.is_dir(), max_readers=256)
    except lmdb.Error as exc:
        raise LmdbReadError(f"{path}: not a readable LMDB ({exc})") from None
    try:
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    except lmdb.Error as exc:
        env.close()
        raise LmdbReadError(f"{path}: not a readable LMDB ({exc})") from None
    size = data_file.stat().st_size
    if size < used:
        env.close()
        raise LmdbTruncatedError(f"{data_file}: truncated LMDB ({size} bytes, its pages need {used}); "
                            "copy or build it again")
    return env


_SHARED: Dict[Tuple[int, str], List] = {}    # (pid, real path) -> [environment, readers]


def _open_shared(path: Path) -> lmdb.Environment:
    key = (os.getpid(), os.path.realpath(path))    # after a fork the parent's entries are not ours
    entry = _SHARED.get(key)
    if entry is None:
        entry = _SHARED[key] = [open_lmdb(path), 0]
    entry[1] += 1
    return entry[0]


def _close_shared(env: lmdb.Environment) -> None:
    for key, entry in list(_SHARED.items()):
        if entry[0] is env and key[0] == os.getpid():
            entry[1] -= 1
            if entry[1] <= 0:
                env.close()
                del _SHARED[key]
            return


class LmdbReader:
    """Random and sequential access to the records of one LMDB.

    ``reader[i]`` is the record stored under key ``'%07d' % i``; iteration follows key order,
    which is how the OPData layer reads (it wraps at the end).
    """

    def __init__(self, path, num_lmdb_parts: Optional[int] = None):
        self.path = Path(path)
        self.num_lmdb_parts = num_lmdb_parts
        self.env = _open_shared(self.path)

    def __len__(self) -> int:
        return int(self.env.stat()["entries"])

    def _corrupted(self, exc: lmdb.Error) -> LmdbReadError:
        return LmdbReadError(f"{self.path}: corrupted LMDB ({exc}); copy or build it again")

    def raw(self, index: int) -> bytes:
        try:
            with self.env.begin(buffers=False) as txn:
                value = txn.get(record_key(index))
        except lmdb.Error as exc:       # pages that are not what the tree says (MDB_CORRUPTED ...)
            raise self._corrupted(exc) from None
        if value is None:
            raise KeyError(f"{self.path}: no record {index:07d}")
        return value

    def __getitem__(self, index: int) -> Record:
        return self.read(index)

    def read(self, index: int, interleaved: bool = False, decode_meta: bool = True) -> Record:
        """Record ``index`` decoded straight from the LMDB map: no copy of the 1.5 MB value of a
        640x480 datum (``read_datum`` copies out what the record keeps). ``interleaved``: see
        :func:`~.datum.read_datum`."""
        try:
            with self.env.begin(buffers=True) as txn:
                value = txn.get(record_key(index))
                if value is None:
                    raise KeyError(f"{self.path}: no record {index:07d}")
                return read_datum(value, self.num_lmdb_parts, decode_meta=decode_meta, interleaved=interleaved)
        except lmdb.Error as exc:
            raise self._corrupted(exc) from None

    def first_value(self) -> Optional[bytes]:
        """The first value in key order, None without records."""
        try:
            with self.env.begin(buffers=False) as txn:
                cursor = txn.cursor()
                return cursor.value() if cursor.first() else None
        except lmdb.Error as exc:
            raise self._corrupted(exc) from None

    def items(self, decode: bool = True) -> Iterator[Tuple[bytes, object]]:
        """(key, Record or raw bytes) in key order."""
        with self.env.begin(buffers=False) as txn:
            entries = None
            while True:
                try:
                    entries = entries or iter(txn.cursor())     # positioning reads pages too
                    key, value = next(entries)
                except StopIteration:
                    return
                except lmdb.Error as exc:
                    raise self._corrupted(exc) from None
                yield key, (read_datum(value, num_lmdb_parts=self.num_lmdb_parts) if decode else value)

    def __iter__(self) -> Iterator[Record]:
        for _, record in self.items():
            yield record

    def close(self):
        if self.env is not None:
            _close_shared(self.env)
            self.env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_records(path, num_lmdb_parts: Optional[int] = None, decode: bool = True):
    """(key, Record) pairs of the LMDB at ``path`` in key order (raw bytes with ``decode=False``)."""
    with LmdbReader(path, num_lmdb_parts) as reader:
        yield from reader.items(decode=decode)
