"""``--backend caffe``: run a real ``caffe train`` (e.g. the OpenPose training fork) on the same files.

The binary is ``$CAFFE`` or ``caffe`` on PATH. Its log (glog on stderr) is streamed to our stderr and
log file unchanged, and parsed into the same progress bar and JSONL metrics as the torch engine.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import List, Optional

from .data_sources import TrainingError
from .logging_utils import CaffeLogFollower, GlogLogger, MetricsWriter, Progress, truncate_metrics


def find_caffe() -> str:
    """Path of the Caffe binary: $CAFFE (a file or a build folder with tools/caffe) or 'caffe' on PATH."""
    env = os.environ.get("CAFFE")
    if env:
        candidates = [env, os.path.join(env, "build", "tools", "caffe"), os.path.join(env, "tools", "caffe")]
        for c in candidates:
            if os.path.isfile(c) and os.access(c, os.X_OK):
                return c
        raise TrainingError(f"CAFFE={env}: no executable caffe binary there "
                            f"(tried {', '.join(candidates)}); unset CAFFE or use --backend torch")
    found = shutil.which("caffe")
    if not found:
        raise TrainingError("--backend caffe: no 'caffe' binary on PATH; set CAFFE=/path/to/caffe "
                            "(e.g. openpose_caffe_train/build/tools/caffe) or use --backend torch")
    return found


def caffe_command(binary: str, solver: str, weights: List[str], snapshot: Optional[str], gpu: str,
                  iterations: Optional[int], sigint_effect: str, sighup_effect: str) -> List[str]:
    """``caffe train`` argv with the same flags (gflags ``--flag=value`` form)."""
    cmd = [binary, "train", f"--solver={solver}"]
    if weights:
        cmd.append(f"--weights={','.join(weights)}")
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    if gpu:
        cmd.append(f"--gpu={gpu}")
    if iterations is not None:
        cmd.append(f"--iterations={iterations}")
    cmd += [f"--sigint_effect={sigint_effect}", f"--sighup_effect={sighup_effect}"]
    return cmd


def _solver_fields(solver: str):
    """(max_iter, snapshot_prefix) of the solver, or (None, None) when it does not parse."""
    try:
        from openpose_train.caffe_layers import caffe_io

        p = caffe_io.read_solver_prototxt(solver)
        return int(p.max_iter), p.snapshot_prefix or None
    except Exception:  # the binary reports solver errors itself
        return None, None


def _resumed_iteration(snapshot: Optional[str]) -> int:
    """The iteration a ``-snapshot`` resumes at (0 without one; Caffe itself reports a bad file)."""
    from openpose_train.caffe_layers import caffe_io

    if not snapshot:
        return 0
    try:
        return int(caffe_io.read_solverstate(snapshot).iter)
    except Exception:  # missing or corrupt: Caffe says so in its own words
        return 0


def run_caffe(solver: str, weights: List[str], snapshot: Optional[str], gpu: str, iterations: Optional[int],
              sigint_effect: str = "stop", sighup_effect: str = "snapshot", log_file: Optional[str] = None,
              metrics: Optional[str] = None, progress: bool = True) -> int:
    """Run the binary, stream and parse its log; returns its exit status."""
    binary = find_caffe()
    if not os.path.exists(solver):
        raise TrainingError(f"{solver}: solver file not found")
    cmd = caffe_command(binary, solver, weights, snapshot, gpu, iterations, sigint_effect, sighup_effect)
    logger = GlogLogger(log_file=log_file)
    follower = CaffeLogFollower()
    solver_max_iter, prefix = _solver_fields(solver)
    max_iter = iterations if iterations is not None else solver_max_iter
    if metrics is None:  # same place as the torch engine's
        metrics = f"{prefix}_metrics.jsonl" if prefix else os.path.splitext(solver)[0] + "_metrics.jsonl"
    start_iter = _resumed_iteration(snapshot)
    if start_iter:  # Caffe displays the resumed iterations again: drop their old records
        truncate_metrics(metrics, start_iter, warn=lambda text: logger.warning("solver.cpp:296", text))
    writer = MetricsWriter(metrics)
    bar = Progress(start_iter, max_iter or 0, enabled=progress and bool(max_iter))
    logger.progress = bar
    env = dict(os.environ, GLOG_logtostderr="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    except OSError as exc:
        raise TrainingError(f"cannot run {binary}: {exc}") from exc

    def forward(signum, frame):  # let Caffe's own handler decide (snapshot / stop / none)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            logger.raw(line)
            record = follower.feed(line)
            if record is not None:
                record["time"] = round(time.perf_counter() - t0, 6)
                writer.write(record)
                bar.update(record["iteration"], record["loss"], record["lr"])
        rc = proc.wait()
        record = follower.flush()
        if record is not None:
            record["time"] = round(time.perf_counter() - t0, 6)
            writer.write(record)
        return rc
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        bar.close()
        writer.close()
        logger.close()
