"""One training per snapshot prefix: ``<snapshot_prefix>.lock`` holds the PID of the run writing there.

Two runs on the same prefix would overwrite each other's snapshots and metrics. The lock is an
``flock`` on the lock file (where ``fcntl`` exists): the kernel drops it when its process dies,
even by ``kill -9``, so a lock file left by a dead run is simply taken over. Elsewhere the file is
created exclusively and a file naming a PID that no longer runs is taken over.
"""
from __future__ import annotations

import os
from typing import List, Optional

from openpose_train.generator.output_paths import make_output_folder

from .data_sources import TrainingError


def lock_path(snapshot_prefix: str) -> str:
    return f"{snapshot_prefix}.lock"


def prepare_snapshot_folder(snapshot_prefix: str, where: str) -> Optional[str]:
    """Create the snapshot folder now, so a prefix under a regular file fails at the start, not at the
    first snapshot (``where`` names the solver file in the message). Returns the topmost folder this
    call created (None when the folder was there)."""
    folder = os.path.dirname(snapshot_prefix)
    if not folder:
        return None
    created = None
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        created, path = path, os.path.dirname(path)
    make_output_folder(folder, error=TrainingError, prefix=f"{where}: snapshot_prefix {snapshot_prefix!r}: ")
    return created


def remove_empty_folders(top: Optional[str]) -> None:
    """Remove ``top`` and the folders under it when no file is left in them (a run refused before
    writing anything leaves the working directory as it was)."""
    if not top or not os.path.isdir(top):
        return
    for folder, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(folder)
        except OSError:     # not empty: something was written there
            pass


class SnapshotLock:
    """``with SnapshotLock(prefix, where):`` -- refuses (TrainingError) while another live run holds it
    (common/locks.py: flock, a dead run's lock taken over)."""

    def __init__(self, snapshot_prefix: str, where: str):
        from openpose_train.common.locks import ExclusiveLock

        self.prefix = snapshot_prefix
        self.where = where
        self.path = lock_path(snapshot_prefix)
        self._lock = ExclusiveLock(self.path, busy=self._refusal, failed=TrainingError)
        self._created: Optional[str] = None     # the folder acquire() created, removed again if left empty

    def _refusal(self, holder: str) -> TrainingError:
        return TrainingError(f"{self.path}: another training ({holder}) is writing snapshots with the prefix "
                             f"{self.prefix!r} ({self.where}); stop it or choose another snapshot_prefix")

    def acquire(self) -> "SnapshotLock":
        self._created = prepare_snapshot_folder(self.prefix, self.where)
        try:
            self._lock.acquire()
        except TrainingError:
            remove_empty_folders(self._created)
            raise
        return self

    def release(self) -> None:
        if not self._lock.held:
            return
        self._lock.release()
        remove_empty_folders(self._created)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def earlier_run_files(snapshot_prefix: str, metrics_path: Optional[str] = None) -> List[str]:
    """The files an earlier training left under ``snapshot_prefix``: its snapshots, its metrics file
    (``metrics_path``, default ``<prefix>_metrics.jsonl``; an empty one does not count) and its best
    record, sorted (snapshots by iteration)."""
    import glob

    def iteration(path: str) -> int:
        digits = path.rsplit("_iter_", 1)[-1].split(".", 1)[0]
        return int(digits) if digits.isdigit() else -1
    pattern = glob.escape(snapshot_prefix) + "_iter_*"
    snapshots = sorted((p for p in glob.glob(pattern) if p.endswith((".caffemodel", ".solverstate", ".trainstate"))),
                       key=lambda p: (iteration(p), p))
    metrics = metrics_path or f"{snapshot_prefix}_metrics.jsonl"
    others = [p for p in (metrics, f"{snapshot_prefix}_best.json", f"{snapshot_prefix}_best.caffemodel")
              if os.path.isfile(p) and os.path.getsize(p) > 0]
    return snapshots + others


def refuse_fresh_run_over(snapshot_prefix: str, solver_path: str, metrics_path: Optional[str] = None) -> None:
    """A new training (no ``-snapshot``) on a prefix where an earlier run left snapshots, metrics or a
    best record would interleave both runs' records in one metrics file and mix their snapshots:
    refuse, naming the files, how to resume and how to start clean
    (docs/refusals.md §Resume and side files)."""
    found = earlier_run_files(snapshot_prefix, metrics_path)
    if not found:
        return
    states = [p for p in found if p.endswith(".solverstate")]
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    resume = f"resume it with -snapshot {states[-1]}, or " if states else ""
    raise TrainingError(f"{shown}: an earlier training's files are on the snapshot_prefix {snapshot_prefix!r} "
                        f"of {solver_path}; {resume}start clean by moving or deleting them (or another "
                        f"snapshot_prefix)")
