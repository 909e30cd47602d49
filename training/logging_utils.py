"""Training output: Caffe's glog-style log lines, a progress bar with ETA, a JSONL metrics file.

The log lines carry glog's prefix (``I1124 23:49:38.123456 12345 solver.cpp:218] ...``) and
Caffe's wording, so Caffe's ``tools/extra/parse_log.py`` and users' plot scripts read our logs
unchanged. The progress bar lives on the terminal only (stderr, and only when it is a TTY); log
lines are printed through it so they never interleave with the bar. When stderr is not a TTY (e.g.
``train_pose.sh`` pipes it through ``tee``) a plain progress line is printed instead every
``interval`` seconds. Progress lines avoid the words Caffe's ``parse_log.py`` searches for
(``Iteration N``, ``lr = ``, ``Train net output``), so a tee'd log still parses.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import threading
import time
from typing import IO, Callable, Dict, Optional

from tqdm import tqdm

from openpose_train.caffe_layers.caffe_io import (
    RE_DISPLAY, RE_DISPLAY_OLD, RE_LR, RE_MAX_ITER, RE_SNAPSHOT, RE_TRAIN_OUTPUT)
from openpose_train.common.files import write_atomic
from openpose_train.common.jsonl import read_json_lines


def glog_prefix(severity: str = "I", where: str = "solver.cpp:0", now: Optional[_dt.datetime] = None,
                pid: Optional[int] = None) -> str:
    """glog's line prefix: ``Lmmdd hh:mm:ss.uuuuuu ttttt file:line] ``."""
    now = now or _dt.datetime.now()
    pid = os.getpid() if pid is None else pid
    return f"{severity}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {pid:5d} {where}] "


class GlogLogger:
    """Writes glog-style lines to a stream (stderr, like Caffe with GLOG_logtostderr) and a log file.

    ``enabled=False`` silences it (non-zero ranks). ``progress`` is an optional :class:`Progress`
    through which terminal lines are written.
    """

    def __init__(self, stream: Optional[IO[str]] = None, log_file: Optional[str] = None,
                 enabled: bool = True):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.progress: Optional["Progress"] = None
        self.log_file = log_file
        self._file = _open_log(log_file) if (log_file and enabled) else None
        self._lock = threading.Lock()

    def log(self, where: str, msg: str, severity: str = "I") -> None:
        if not self.enabled:
            return
        line = glog_prefix(severity, where) + msg
        self.raw(line)

    def info(self, where: str, msg: str) -> None:
        self.log(where, msg, "I")

    def warning(self, where: str, msg: str) -> None:
        self.log(where, msg, "W")

    def error(self, where: str, msg: str) -> None:
        self.log(where, msg, "E")

    def raw(self, line: str) -> None:
        """Write one already formatted line (used to stream an external Caffe's log)."""
        if not self.enabled:
            return
        with self._lock:
            if self.progress is not None and self.progress.active:
                self.progress.write(line, self.stream)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()
            if self._file is not None:
                try:
                    self._file.write(line + "\n")
                except OSError as exc:  # e.g. a full disk: keep training, say so once on the stream
                    self._file = None
                    self.stream.write(glog_prefix("W", "logging.cc:0") + f"log file {self.log_file}: "
                                      f"{exc.strerror or exc}; no longer written\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def format_duration(seconds: Optional[float]) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        return "?"
    return str(_dt.timedelta(seconds=int(round(seconds))))


def progress_summary(start_iter: int, iteration: int, max_iter: int, elapsed: float) -> str:
    """``Progress: N/M iters (p%), r iter/s, elapsed H:MM:SS, remaining H:MM:SS`` over this run's
    iterations since ``start_iter`` (a resumed run's rate counts only what it ran itself)."""
    done = iteration - start_iter
    rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
    remaining = max(0, max_iter - iteration) / rate if rate else (0.0 if iteration >= max_iter else None)
    percent = 100.0 * iteration / max_iter if max_iter else 100.0
    return (f"Progress: {iteration}/{max_iter} iters ({percent:.1f}%), {rate:.3g} iter/s, "
            f"elapsed {format_duration(elapsed)}, remaining {format_duration(remaining)}")


class Progress:
    """Progress over [start_iter, max_iter) on stderr: a tqdm bar with ETA on a terminal; otherwise
    (a pipe, a file) one plain line every ``interval`` seconds, the first after the first iteration."""

    def __init__(self, start_iter: int, max_iter: int, enabled: bool = True, stream: Optional[IO[str]] = None,
                 interval: float = 30.0, clock=time.monotonic):
        stream = sys.stderr if stream is None else stream
        self.active = bool(enabled and hasattr(stream, "isatty") and stream.isatty())
        self.line_mode = bool(enabled and not self.active)
        self._bar = (tqdm(total=max_iter, initial=start_iter, file=stream, unit="it", dynamic_ncols=True,
                          desc="train") if self.active else None)
        self._stream, self._interval, self._clock = stream, float(interval), clock
        self.start_iter, self.max_iter = start_iter, max_iter
        self._t0 = clock()
        self._next_line: Optional[float] = None
        self._last = start_iter

    def summary(self, iteration: int) -> str:
        """The ETA line for ``iteration`` (rate, elapsed and remaining time of this run)."""
        return progress_summary(self.start_iter, iteration, self.max_iter, self._clock() - self._t0)

    def _line(self, iteration: int, loss: Optional[float], lr: Optional[float]) -> None:
        now = self._clock()
        if self._next_line is not None and now < self._next_line and iteration < self.max_iter:
            return
        self._next_line = now + self._interval
        extra = (f", smoothed loss {loss:.4g}" if loss is not None else "") + (f", lr {lr:.3g}" if lr is not None else "")
        self._stream.write(glog_prefix("I", "solver.cpp:239") + self.summary(iteration) + extra + "\n")
        self._stream.flush()

    def update(self, iteration: int, loss: Optional[float] = None, lr: Optional[float] = None) -> None:
        if self._bar is None:
            if self.line_mode:
                self._line(iteration, loss, lr)
            return
        if iteration > self._last:
            self._bar.update(iteration - self._last)
            self._last = iteration
        post = {}
        if loss is not None:
            post["loss"] = f"{loss:.4g}"
        if lr is not None:
            post["lr"] = f"{lr:.3g}"
        if post:
            self._bar.set_postfix(post, refresh=False)

    def write(self, line: str, stream) -> None:
        tqdm.write(line, file=stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.active = self.line_mode = False


def _open_log(path: str):
    """The --log file for appending (a one-line TrainingError naming it when it cannot be)."""
    from openpose_train.generator.output_paths import make_parent_folder

    from .data_sources import TrainingError
    make_parent_folder(path, TrainingError, label="--log")
    try:
        return open(path, "a", buffering=1)
    except OSError as exc:
        raise TrainingError(f"--log {path}: cannot write ({exc.strerror or exc})") from None


class MetricsWriter:
    """Appends one JSON object per line: iteration, loss, smoothed_loss, outputs, lr, time."""

    def __init__(self, path: Optional[str], enabled: bool = True):
        from openpose_train.generator.output_paths import make_parent_folder

        from .data_sources import TrainingError
        self.path = path if path and enabled else None
        self._f = None
        if self.path:   # the folder now (a bad path fails at the start); the file at the first record,
            #             so that a run refused before its first iteration leaves no empty file
            make_parent_folder(self.path, TrainingError, label="metrics file")

    def write(self, record: Dict) -> None:
        if self.path is not None:
            try:
                if self._f is None:
                    self._f = open(self.path, "a", buffering=1)
                self._f.write(json.dumps(record, sort_keys=False) + "\n")
            except OSError as exc:  # a full disk: name the file (the CLI prints one line)
                self._abandon()
                from .data_sources import TrainingError
                raise TrainingError(f"{self.path}: cannot write the metrics: {exc.strerror or exc}") from None

    def _abandon(self) -> None:
        """Close after a failed write, dropping what the buffer still holds: a second attempt to flush it
        would fail the same way (and, from ``close`` in a ``finally``, chain a second traceback)."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError as exc:
                self._f = None
                from .data_sources import TrainingError
                raise TrainingError(f"{self.path}: cannot write the metrics: {exc.strerror or exc}") from None
            self._f = None


def truncate_metrics(path: str, iteration: int, warn: Optional[Callable[[str], None]] = None) -> int:
    """Drop the records of ``iteration`` and later from a metrics file (a resumed run replays them),
    and the torn last line of a killed run (``warn`` names it); writes a temporary file and renames
    it. Returns the number of records dropped. A validation record of ``iteration`` itself stays: it
    scored the weights of that snapshot, which the resumed run starts from and does not score again.
    Any other line that is not JSON stops with the file and line (common/jsonl.py)."""
    if not path or not os.path.exists(path):
        return 0
    records = read_json_lines(path, warn=warn, repair=True)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    kept = [lines[number - 1] for number, record in records
            if not (isinstance(record, dict) and isinstance(record.get("iteration"), int)
                    and record["iteration"] >= iteration + ("validation" in record))]
    dropped = len(records) - len(kept)
    if dropped:
        write_atomic(path, "".join(kept), fsync=True)
    return dropped


def validated_iterations(path: Optional[str]) -> set:
    """The iterations a metrics file holds a validation record of (``{"iteration", "validation"}``)."""
    if not path or not os.path.exists(path):
        return set()
    return {record["iteration"] for _, record in read_json_lines(path)
            if isinstance(record, dict) and "validation" in record and isinstance(record.get("iteration"), int)}


# ---- reading Caffe logs (the external-binary backend; the line patterns are in caffe_io) ---------


class CaffeLogFollower:
    """Turns a stream of Caffe log lines into metrics records (one per displayed iteration)."""

    def __init__(self):
        self.iteration: Optional[int] = None
        self.loss: Optional[float] = None
        self.lr: Optional[float] = None
        self.outputs: Dict[str, float] = {}
        self.snapshots = []
        self.max_iter: Optional[int] = None

    def feed(self, line: str) -> Optional[Dict]:
        """Consume one line; returns a finished record when an iteration's block completes."""
        done = None
        m = RE_DISPLAY.search(line) or RE_DISPLAY_OLD.search(line)
        if m:
            done = self.flush()
            self.iteration, self.loss = int(m.group(1)), _to_float(m.group(2))
            self.outputs = {}
            return done
        m = RE_TRAIN_OUTPUT.search(line)
        if m:
            self.outputs[m.group(2)] = _to_float(m.group(3))
            return None
        m = RE_LR.search(line)
        if m:
            self.lr = _to_float(m.group(2))
            return self.flush()
        m = RE_SNAPSHOT.search(line)
        if m:
            self.snapshots.append(m.group(1))
            return None
        m = RE_MAX_ITER.search(line)
        if m and self.max_iter is None:
            self.max_iter = int(m.group(1))
        return None

    def flush(self) -> Optional[Dict]:
        if self.iteration is None:
            return None
        rec = {"iteration": self.iteration, "loss": self.loss, "smoothed_loss": self.loss,
               "outputs": dict(self.outputs), "lr": self.lr}
        self.iteration = None
        return rec


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")
