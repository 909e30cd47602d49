"""The training loop: Caffe's ``Solver::Solve`` / ``Step`` on the torch engine.

Per iteration (as Caffe): clear diffs, maybe test, ``iter_size`` forward/backward passes (loss
averaged; with several processes DDP averages the gradients in the last pass's backward), smoothed
loss, display lines, ``ApplyUpdate``,
``iter += 1``, the signal-requested action, snapshot every ``snapshot`` iterations. After the
last iteration: snapshot (``snapshot_after_train``), a final display forward, ``Optimization Done.``

Snapshots are Caffe's files, ``<snapshot_prefix>_iter_N.caffemodel`` (NetParameter with blobs) and
``<snapshot_prefix>_iter_N.solverstate`` (SolverState: iter, learned_net, current_step, history),
plus our side file ``<snapshot_prefix>_iter_N.trainstate`` (JSON, training/trainstate.py: per rank,
the data-layer state and the torch / numpy / python RNG states) that Caffe never reads. Each file is written to a
temporary name and renamed; the solverstate goes last, so a solverstate on disk always has its
caffemodel (and trainstate) beside it. Resuming from a solverstate with its trainstate continues
bit for bit on CPU; without one (a Caffe-written snapshot) the weights and solver history resume
exactly and the data order starts afresh (a warning says so).

Paths: like Caffe, the solver's ``net:`` and ``snapshot_prefix`` are relative to the current
working directory. As a convenience, a ``net:`` that does not exist there but exists next to the
solver file is used (with a warning); ``learned_net`` in a solverstate is tried relative to the
CWD, then to the solverstate's folder.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from openpose_train.common.files import StagedFiles

from .data_sources import BatchSource, TrainingError
from .feed import DATA_WAIT_WARNING, BatchFeed
from .logging_utils import GlogLogger, MetricsWriter, Progress, truncate_metrics
from . import trainstate
from .snapshot_lock import prepare_snapshot_folder
from .solver import CaffeSolver, LearnableParam, format_float

# Caffe's SolverAction
ACTION_NONE, ACTION_SNAPSHOT, ACTION_STOP = 0, 1, 2
SIGNAL_EFFECTS = {"none": ACTION_NONE, "snapshot": ACTION_SNAPSHOT, "stop": ACTION_STOP}


class TrainingDiverged(TrainingError):
    """The loss became NaN or Inf; the message names the iteration and the last good snapshot."""

    def __init__(self, message: str, iteration: int, last_snapshot: Optional[str]):
        super().__init__(message)
        self.iteration = iteration
        self.last_snapshot = last_snapshot


class ProcessGroupLost(TrainingError):
    """Another process of a multi-process training died; the message names its rank and the last
    complete snapshot."""


def is_collective_failure(exc: BaseException) -> bool:
    """A collective (gloo / NCCL) that failed because a peer process went away."""
    if isinstance(exc, TrainingError):
        return False
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(word in text for word in ("gloo", "nccl", "connection closed",
                                                                          "connection reset", "broken pipe"))


@dataclass
class TrainOptions:
    """Everything the ``train`` command passes to the loop besides the solver itself."""

    max_iter: Optional[int] = None          # -iterations: overrides the solver's max_iter
    sigint_effect: str = "stop"              # Caffe's defaults
    sighup_effect: str = "snapshot"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False                    # torch.compile the training net
    compile_backend: str = "inductor"
    workers: int = 0
    metrics_path: Optional[str] = None       # default: <snapshot_prefix>_metrics.jsonl
    progress: bool = True
    progress_interval: float = 30.0          # seconds between progress lines when stderr is not a terminal
    install_signal_handlers: bool = True
    tensorboard: bool = False                # event files (training/tensorboard_log.py)
    tensorboard_dir: Optional[str] = None    # default: <snapshot_prefix>_tensorboard
    tensorboard_maps_every: int = 1          # predicted maps every K snapshots (0: never)


class SignalActions:
    """Caffe's SignalHandler: SIGINT (and SIGTERM) -> sigint_effect, SIGHUP -> sighup_effect."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot", install: bool = True):
        for name, value in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if value not in SIGNAL_EFFECTS:
                raise TrainingError(f"-{name} must be one of snapshot, stop, none (got {value!r})")
        self.effects = {signal.SIGINT: SIGNAL_EFFECTS[sigint_effect], signal.SIGTERM: SIGNAL_EFFECTS[sigint_effect]}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = SIGNAL_EFFECTS[sighup_effect]
        self.pending = ACTION_NONE
        self._previous = {}
        if install:
            for sig in self.effects:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread
                    pass

    def _handle(self, signum, frame):
        self.pending = max(self.pending, self.effects.get(signum, ACTION_NONE))

    def take(self) -> int:
        """The requested action since the last call (Caffe's GetRequestedAction)."""
        action, self.pending = self.pending, ACTION_NONE
        return action

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's ``SnapshotFilename``: ``<prefix>_iter_<N><ext>``."""
    return f"{prefix}_iter_{iteration}{extension}"


def trainstate_path(solverstate_path: str) -> str:
    """The side file beside a solverstate."""
    base = solverstate_path[:-len(".solverstate")] if solverstate_path.endswith(".solverstate") else solverstate_path
    return base + ".trainstate"


def rng_state() -> Dict:
    """torch / numpy / python RNG states (what dropout, fillers and our own draws use)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def caffe_output_order(net) -> List[str]:
    """The net's output blobs as Caffe numbers them (``Train net output #k``): Caffe collects them in
    a std::set of blob names, so in name order, not layer order (docs/compatibility.md §Caffe files)."""
    return sorted(getattr(net, "output_blobs", None) or [n for n, _ in net.loss_blobs])


class Trainer:
    """Caffe's Solver over a CaffeNet-like net (see training/cli.py for how it is built).

    ``net`` needs: ``forward(inputs) -> {blob: tensor}``, ``loss_blobs`` ([(name, weight)]),
    ``total_loss(outputs)``, ``param_specs()``, ``caffe_weights()``, ``load_caffe_weights()``,
    and optionally ``output_blobs`` (names of the net's output blobs, default the loss blobs).
    ``net_param`` is the NetParameter written (with blobs) into snapshot caffemodels.
    """

    def __init__(self, solver_param, net, sources: Sequence[BatchSource], *, net_param=None,
                 options: Optional[TrainOptions] = None, logger: Optional[GlogLogger] = None,
                 device: Optional[torch.device] = None, dist=None,
                 test_net=None, test_sources: Sequence[Sequence[BatchSource]] = (), evaluator=None):
        self.param = solver_param
        self.net = net
        self.net_param = net_param
        self.sources = list(sources)
        self.options = options or TrainOptions()
        self.dist = dist  # training.distributed.DistContext or None
        self.rank = dist.rank if dist else 0
        self.world_size = dist.world_size if dist else 1
        self.is_root = self.rank == 0
        self.logger = logger or GlogLogger(enabled=self.is_root)
        self.device = device or torch.device("cpu")
        self.test_net = test_net
        self.test_sources = [list(s) for s in test_sources]
        self.max_iter = int(self.options.max_iter if self.options.max_iter is not None else solver_param.max_iter)
        self.solver = CaffeSolver(solver_param, self._learnable_params(), log=self.logger.info).to(self.device)
        self.smoothed_loss = 0.0
        self._losses: List[float] = []
        self.last_snapshot: Optional[str] = None
        self.requested_early_exit = False
        self.signals: Optional[SignalActions] = None
        self.metrics = None
        self.progress = None
        self.model = net            # what the training passes call: the net, or the net in DDP (compiled)
        self._ddp = None
        self.evaluator = evaluator if self.is_root else None  # training.evaluation.Evaluator (--val-*)
        self.tensorboard = None
        self._data_wait = 0.0   # seconds this iteration spent obtaining input batches (BatchFeed.wait_s)
        self._images = 0        # images this iteration (all iter_size passes, this rank)
        self.feed = BatchFeed(self.sources, self.device)

    # ---- set-up --------------------------------------------------------------------------------
    def _learnable_params(self) -> List[LearnableParam]:
        out = []
        for spec in self.net.param_specs():
            tensor, lr_mult, decay_mult, layer, idx = spec
            out.append(LearnableParam(tensor, float(lr_mult), float(decay_mult), layer, int(idx)))
        return out

    # ---- forward / backward --------------------------------------------------------------------
    def _inputs(self, sources: Sequence[BatchSource]) -> Dict[str, torch.Tensor]:
        inputs = {}
        for src in sources:
            for name, value in src.next_batch().items():
                inputs[name] = torch.as_tensor(value).to(self.device, non_blocking=True)
        return inputs

    def _train_inputs(self) -> Dict[str, torch.Tensor]:
        """The train sources' next batch (read ahead by the feed); counts the images for the metrics."""
        inputs = self.feed.next()
        first = next(iter(inputs.values()), None)
        self._images += int(first.shape[0]) if first is not None and first.dim() else 0
        return inputs

    @staticmethod
    def _forward(net, inputs):
        # bf16 autocast and channels_last live in the net (caffe_layers.net.configure_precision)
        return net.forward(inputs)

    def forward_backward(self, sync: bool = True):
        """One Caffe ``ForwardBackward``: returns (loss tensor, outputs).

        ``sync=False`` (the first ``iter_size - 1`` passes under DDP): gradients accumulate locally,
        the last pass averages the accumulated sum over the processes.
        """
        no_sync = self._ddp.no_sync() if self._ddp is not None and not sync else contextlib.nullcontext()
        with no_sync:
            outputs = self.model(self._train_inputs())
            loss = self.net.total_loss(outputs)
            if loss.requires_grad:
                loss.float().backward()
        return loss.detach().float(), outputs

    def _output_values(self, outputs) -> List[tuple]:
        """(name, [values], loss_weight) per net output blob, in Caffe's display order."""
        weights = dict(self.net.loss_blobs)
        out = []
        for name in caffe_output_order(self.net):
            t = outputs[name].detach().float().reshape(-1).cpu()
            out.append((name, [float(v) for v in t], float(weights.get(name, 0.0))))
        return out

    def _clear_grads(self):
        for lp in self.solver.params:
            lp.tensor.grad = None

    # ---- smoothed loss (Caffe's UpdateSmoothedLoss) ------------------------------------------
    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        average_loss = max(1, int(self.param.average_loss))
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            n = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (n - 1) + loss) / n
        else:
            idx = (self.solver.iter - start_iter) % average_loss
            self.smoothed_loss += (loss - self._losses[idx]) / average_loss
            self._losses[idx] = loss

    # ---- the loop -------------------------------------------------------------------------------
    def solve(self, resume_file: Optional[str] = None) -> int:
        """Caffe's ``Solver::Solve``: returns the final iteration."""
        log = self.logger.info
        log("solver.cpp:289", f"Solving {getattr(self.net, 'name', '') or 'net'}")
        log("solver.cpp:290", f"Learning Rate Policy: {self.param.lr_policy}")
        if resume_file:
            log("solver.cpp:295", f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        if self.dist is not None:  # after restore: DDP broadcasts rank 0's weights
            self.model = self._ddp = self.dist.wrap(self.net, self.device)
        if self.options.compile:
            self.model = torch.compile(self.model, backend=self.options.compile_backend)
        self.signals = SignalActions(self.options.sigint_effect, self.options.sighup_effect,
                                     install=self.options.install_signal_handlers)
        self._open_outputs(resumed=bool(resume_file))
        start_iter = self.solver.iter
        try:
            if self.evaluator is not None:
                self.evaluator.start(self, resumed=bool(resume_file))
            self.step(self.max_iter - self.solver.iter)
            return self._finish(start_iter)
        except RuntimeError as exc:         # a collective failed: another process died
            if self.dist is None or not is_collective_failure(exc):
                raise
            raise self._group_lost(exc) from None
        finally:
            self._close_outputs()

    def _open_outputs(self, resumed: bool) -> None:
        """The metrics file (cut back to the resumed iteration), the progress display, TensorBoard."""
        prefix = self.param.snapshot_prefix
        metrics_path = self.options.metrics_path or (f"{prefix}_metrics.jsonl" if prefix else None)
        if resumed and self.is_root and metrics_path:   # the resumed iterations are written again
            dropped = truncate_metrics(metrics_path, self.solver.iter,
                                       warn=lambda text: self.logger.warning("solver.cpp:296", text))
            if dropped:
                self.logger.info("solver.cpp:296", f"{metrics_path}: dropped {dropped} records of iteration "
                                 f"{self.solver.iter} and later (this run writes them again)")
        self.metrics = MetricsWriter(metrics_path, enabled=self.is_root)
        self.progress = Progress(self.solver.iter, self.max_iter, enabled=self.options.progress and self.is_root,
                                 interval=self.options.progress_interval)
        self.logger.progress = self.progress
        if self.is_root and self.options.tensorboard:
            from .tensorboard_log import TensorBoardLog

            try:
                # earlier events from this step on are dropped: all of them for a fresh run, those after
                # the snapshot for a resume (its step keeps the validation and maps not written again)
                self.tensorboard = TensorBoardLog(
                    self.options.tensorboard_dir or f"{prefix or 'train'}_tensorboard",
                    purge_step=self.solver.iter + 1 if resumed else self.solver.iter,
                    maps_every=self.options.tensorboard_maps_every, maps_source=self.evaluator)
            except TrainingError as exc:  # the package is missing: train on, say so once
                self.logger.warning("solver.cpp:292", f"no TensorBoard event files: {exc}")

    def _finish(self, start_iter: int) -> int:
        """After the last iteration (Caffe's end of ``Solve``): the final snapshot, display and test."""
        log = self.logger.info
        p = self.param
        if p.snapshot_after_train and (not p.snapshot or self.solver.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log("solver.cpp:310", "Optimization stopped early.")
            return self.solver.iter
        if p.display and self.solver.iter % p.display == 0:
            with torch.no_grad():
                outputs = self._forward(self.net, self.feed.next())
                loss = float(self.net.total_loss(outputs))
            self._update_smoothed_loss(loss, start_iter)
            log("solver.cpp:320", f"Iteration {self.solver.iter}, loss = {format_float(self.smoothed_loss)}")
        if self._has_test_net() and p.test_interval and self.solver.iter % p.test_interval == 0:
            self.test_all()
        if self.evaluator is not None:
            self.evaluator.close(wait=True)     # a background evaluation still running
        log("solver.cpp:326", "Optimization Done.")
        return self.solver.iter

    def _close_outputs(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close(wait=False)
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.progress.close()
        self.logger.progress = None
        self.metrics.close()
        self.signals.restore()

    def step(self, iters: int) -> None:
        """Caffe's ``Solver::Step``."""
        p = self.param
        log = self.logger.info
        start_iter = self.solver.iter
        stop_iter = self.solver.iter + iters
        self._losses = []
        self.smoothed_loss = 0.0
        timer = time.perf_counter()
        t0 = timer
        iterations_last = self.solver.iter
        wait_last = self.feed.wait_s
        iter_size = max(1, int(p.iter_size))
        while self.solver.iter < stop_iter:
            it = self.solver.iter
            iteration_start = time.perf_counter()     # images/s: this iteration's own work
            wait_start = self.feed.wait_s
            self._clear_grads()
            self._images = 0
            if (self._has_test_net() and p.test_interval and it % p.test_interval == 0
                    and (it > 0 or p.test_initialization)):
                self.test_all()
            display = bool(p.display) and it % p.display == 0
            loss_t = torch.zeros((), dtype=torch.float32, device=self.device)
            outputs = None
            for k in range(iter_size):
                l, outputs = self.forward_backward(sync=k == iter_size - 1)
                loss_t = loss_t + l
            loss_t = loss_t / iter_size
            if it + 1 < stop_iter:
                self.feed.prefetch()    # overlaps the device's backward (float(loss_t) waits for it)
            self._data_wait = self.feed.wait_s - wait_start
            loss = float(loss_t)
            self._check_finite(loss, it)
            self._update_smoothed_loss(loss, start_iter)
            out_values = self._output_values(outputs)
            if display:
                now = time.perf_counter()
                lapse = now - timer
                per_s = (it - iterations_last) / (lapse if lapse else 1.0)
                log("solver.cpp:218", f"Iteration {it} ({format_float(per_s)} iter/s, {format_float(lapse)}s/"
                    f"{p.display} iters), loss = {format_float(self.smoothed_loss)}")
                wait_fraction = (self.feed.wait_s - wait_last) / (lapse if lapse else 1.0)
                if it > iterations_last and wait_fraction > DATA_WAIT_WARNING:
                    self.logger.warning("solver.cpp:219", f"data_wait {wait_fraction:.3f}: the step waited on "
                                        f"data for {100 * wait_fraction:.1f}% of the last {it - iterations_last} "
                                        f"iterations' time (raise --workers)")
                timer = now
                iterations_last = it
                wait_last = self.feed.wait_s
                k = 0
                for name, values, weight in out_values:
                    for v in values:
                        extra = f" (* {format_float(weight)} = {format_float(weight * v)} loss)" if weight else ""
                        log("solver.cpp:237", f"    Train net output #{k}: {name} = {format_float(v)}{extra}")
                        k += 1
                log("solver.cpp:239", self.progress.summary(it))
            rate = self.solver.apply_update(display=display)
            self.solver.iter += 1
            now = time.perf_counter()
            record = {
                "iteration": it, "loss": loss, "smoothed_loss": self.smoothed_loss,
                "outputs": {name: (values[0] if len(values) == 1 else values) for name, values, _ in out_values},
                "lr": rate, "time": round(now - t0, 6),
                "images_per_s": round(self._images * self.world_size / max(now - iteration_start, 1e-9), 3),
                "data_wait_s": round(self._data_wait, 6)}
            self.metrics.write(record)
            if self.tensorboard is not None:
                self.tensorboard.iteration(record)
            self.progress.update(self.solver.iter, self.smoothed_loss, rate)
            action = self.signals.take() if self.signals else ACTION_NONE
            if self.dist is not None:
                action = self.dist.max_int(action)
            if (p.snapshot and self.solver.iter % p.snapshot == 0) or action == ACTION_SNAPSHOT:
                self.snapshot()
            if action == ACTION_STOP:
                self.requested_early_exit = True
                break
            if self.evaluator is not None:
                self.evaluator.after_iteration(self)

    def _check_finite(self, loss: float, iteration: int) -> None:
        bad = not math.isfinite(loss)
        if self.dist is not None:
            bad = bool(self.dist.max_int(int(bad)))
        if bad:
            where = (f"last good snapshot: {self.last_snapshot} (resume with -snapshot {self.last_snapshot})"
                     if self.last_snapshot else "no snapshot was written in this run")
            msg = f"Iteration {iteration}: loss is {loss} (not finite); training stopped, {where}"
            self.logger.error("solver.cpp:226", msg)
            raise TrainingDiverged(msg, iteration, self.last_snapshot)

    # ---- testing (test_iter / test_interval) ------------------------------------------------------
    def _has_test_net(self) -> bool:
        return self.test_net is not None and len(self.param.test_iter) > 0

    @torch.no_grad()
    def test_all(self) -> None:
        """Caffe's ``TestAll`` for one test net sharing the train net's weights."""
        if not self.is_root:
            return
        log = self.logger.info
        self.test_net.load_caffe_weights(self.net.caffe_weights())
        sources = self.test_sources[0] if self.test_sources else []
        log("solver.cpp:330", f"Iteration {self.solver.iter}, Testing net (#0)")
        sums: Dict[str, np.ndarray] = {}
        loss_total = 0.0
        n = int(self.param.test_iter[0])
        for _ in range(n):
            outputs = self._forward(self.test_net, self._inputs(sources))
            if self.param.test_compute_loss:
                loss_total += float(self.test_net.total_loss(outputs))
            for name in caffe_output_order(self.test_net):
                v = outputs[name].detach().float().reshape(-1).cpu().numpy().astype(np.float64)
                sums[name] = sums.get(name, 0) + v
        if self.param.test_compute_loss:
            log("solver.cpp:398", f"Test loss: {format_float(loss_total / n)}")
        weights = dict(self.test_net.loss_blobs)
        k = 0
        for name, total in sums.items():
            for v in total / n:
                w = float(weights.get(name, 0.0))
                extra = f" (* {format_float(w)} = {format_float(w * v)} loss)" if w else ""
                log("solver.cpp:414", f"    Test net output #{k}: {name} = {format_float(float(v))}{extra}")
                k += 1

    # ---- snapshots -------------------------------------------------------------------------------
    def snapshot(self) -> Optional[str]:
        """Write caffemodel, trainstate, solverstate (rank 0); returns the solverstate path."""
        # every rank's data-layer and RNG state (collective: all ranks take part)
        mine = {"data": self.feed.state_dicts(), "rng": rng_state()}
        ranks = self.dist.gather_objects(mine) if self.dist is not None else [mine]
        if not self.is_root:
            self.last_snapshot = snapshot_filename(self.param.snapshot_prefix, self.solver.iter, ".solverstate")
            return None
        return self._write_snapshot(ranks)

    def _write_snapshot(self, ranks: Optional[List[Dict]]) -> str:
        """The snapshot files of this iteration; ``ranks`` None: without the trainstate (the other
        processes are gone, their data-layer state with them)."""
        from openpose_train.caffe_layers import caffe_io

        prefix = self.param.snapshot_prefix
        it = self.solver.iter
        prepare_snapshot_folder(prefix, "the solver")
        model_path = snapshot_filename(prefix, it, ".caffemodel")
        state_path = snapshot_filename(prefix, it, ".solverstate")
        side_path = trainstate_path(state_path)
        weights = self.net.caffe_weights()
        history = self.solver.history_arrays()
        side = trainstate.dumps(it, self.world_size, ranks) if ranks is not None else b""
        self._check_free_space(state_path, weights, history, len(side))
        # a snapshot is the three files or nothing: each is written to a temporary name, and all are
        # renamed only once all are written, the solverstate last (it is what -snapshot names)
        self.logger.info("solver.cpp:464", f"Snapshotting to binary proto file {model_path}")
        try:
            with StagedFiles(fsync=True) as staged:
                caffe_io.write_caffemodel(staged.stage(model_path), weights, net=self.net_param)
                if ranks is not None:
                    staged.stage(side_path).write_bytes(side)
                elif os.path.exists(side_path):     # not the trainstate of these weights
                    os.unlink(side_path)
                self.logger.info("sgd_solver.cpp:284", f"Snapshotting solver state to binary proto file {state_path}")
                caffe_io.write_solverstate(staged.stage(state_path), iter=it, learned_net=model_path,
                                           history=history, current_step=self.solver.current_step)
        except OSError as exc:
            raise TrainingError(f"{state_path}: cannot write the snapshot of iteration {it}: "
                                f"{exc.strerror or exc}; nothing of it was kept ({self._last_snapshot_text()})") \
                from None
        self.last_snapshot = state_path
        if self.tensorboard is not None:
            self.tensorboard.snapshot(self)
        return state_path

    def _group_lost(self, exc: BaseException) -> "ProcessGroupLost":
        """Another process of the training died (a collective failed): rank 0 snapshots what it holds
        (weights and solver history are the same on every rank and consistent between iterations; the
        other ranks' data-layer state is gone), and every rank stops with one line naming the rank
        (docs/refusals.md §Processes)."""
        dead = self.dist.dead_ranks()
        who = f"rank {', '.join(map(str, dead))}" if dead else "another process (on another machine?)"
        if self.is_root and self.param.snapshot_prefix and self.solver.iter > 0:
            state_path = snapshot_filename(self.param.snapshot_prefix, self.solver.iter, ".solverstate")
            if self.last_snapshot != state_path:
                try:
                    self._write_snapshot(None)
                except TrainingError as write_error:
                    self.logger.error("solver.cpp:465", str(write_error))
        where = (f"last complete snapshot: {self.last_snapshot} (resume with -snapshot {self.last_snapshot})"
                 if self.last_snapshot else "no snapshot was written in this run")
        msg = (f"{who} of this {self.world_size}-process training stopped, so rank {self.rank} stops at iteration "
               f"{self.solver.iter}; {where}")
        self.logger.error("solver.cpp:227", f"{msg} ({str(exc).splitlines()[0][:200] if str(exc) else exc!r})")
        return ProcessGroupLost(msg)

    def _last_snapshot_text(self) -> str:
        return (f"the last complete snapshot is {self.last_snapshot}" if self.last_snapshot
                else "no snapshot was written in this run")

    def _check_free_space(self, state_path: str, weights, history, side_bytes: int) -> None:
        """Refuse a snapshot that cannot fit before writing any of it (the files hold the float32
        blobs plus small headers)."""
        needed = side_bytes + 4 * sum(a.size for blobs in weights.values() for a in blobs) \
            + 4 * sum(h.size for h in history)
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(state_path))).free
        if needed > free:
            raise TrainingError(f"{state_path}: the snapshot of iteration {self.solver.iter} needs "
                                f"{needed / 2**20:.2f} MiB, the disk has {free / 2**20:.2f} MiB free; free some "
                                f"space and resume ({self._last_snapshot_text()})")

    def restore(self, state_file: str) -> None:
        """Caffe's ``Restore``: weights from learned_net, iter, current_step, history; plus our side file.

        Every file is read and checked before any is applied; the log names the files loaded."""
        from openpose_train.caffe_layers import caffe_io

        check_resume_file(state_file)
        try:
            state = caffe_io.read_solverstate(state_file)
        except Exception as exc:  # a corrupt file: name it
            raise TrainingError(f"{state_file}: cannot read solverstate: {exc}") from exc
        model = learned_net_path(state_file, state.learned_net, self.logger) if state.learned_net else None
        side_path = trainstate_path(state_file)
        side = trainstate.load(side_path) if os.path.exists(side_path) else None
        if side is not None and side["iter"] != int(state.iter):
            raise TrainingError(f"{side_path}: iteration {side['iter']} does not match {state_file} ({state.iter})")
        if model is not None:
            load_weights(self.net, [model], self.logger)
        self.solver.iter = int(state.iter)
        self.solver.current_step = int(state.current_step)
        self.logger.info("sgd_solver.cpp:333", "SGDSolver: restoring history")
        self.solver.load_history(state.history, source=state_file)
        if side is None:
            side_text = "none"
            self.logger.warning("solver.cpp:300", f"no {side_path} beside the solverstate (a Caffe snapshot?): "
                                "weights and solver history resume exactly, the data order starts afresh")
        elif len(side["ranks"]) != self.world_size:
            side_text = f"none ({side_path} is of {len(side['ranks'])} processes)"
            self.logger.warning("solver.cpp:300", f"{side_path} was written by {len(side['ranks'])} processes, "
                                f"this run has {self.world_size}: data-layer state starts afresh")
        else:
            mine = side["ranks"][self.rank]
            try:
                self.feed.load_state_dicts(mine["data"])
                set_rng_state(mine["rng"])
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
                raise trainstate.TrainstateError(f"{side_path}: the state of rank {self.rank} does not fit this "
                                                 f"net's data layers and RNGs ({exc})") from None
            side_text = side_path
        self.logger.info("solver.cpp:301", f"Resumed at iteration {self.solver.iter}: weights {model or 'none'}, "
                         f"solver history {state_file}, data-layer and RNG state {side_text}")
        self.last_snapshot = state_file


def check_resume_file(path: str) -> None:
    """``-snapshot`` names an existing solverstate, not a caffemodel (nor another file): one line."""
    if path.endswith(".caffemodel"):
        raise TrainingError(f"-snapshot {path}: a caffemodel, not a solverstate; resume with -snapshot "
                            f"{path[:-len('.caffemodel')]}.solverstate, or start a new training from these "
                            f"weights with -weights {path}")
    if not os.path.exists(path):
        raise TrainingError(f"-snapshot {path}: solverstate not found")
    if not path.endswith(".solverstate"):
        raise TrainingError(f"-snapshot {path}: not a solverstate (Caffe names them <prefix>_iter_N.solverstate)")


def learned_net_path(state_file: str, learned_net: str, logger: Optional[GlogLogger] = None) -> str:
    """The caffemodel a solverstate's ``learned_net`` names: the one beside the solverstate first (a
    snapshot resumed from another folder pairs its own weights, never the working directory's file of
    the same relative name), else the path as written, relative to the working directory (Caffe)."""
    beside = os.path.join(os.path.dirname(state_file), os.path.basename(learned_net))
    if os.path.exists(beside):
        return beside
    if os.path.exists(learned_net):
        if logger is not None:
            logger.warning("solver.cpp:300", f"{state_file}: its caffemodel is not beside it ({beside}); using "
                           f"learned_net {learned_net} from the working directory {os.getcwd()}")
        return learned_net
    raise TrainingError(f"{state_file}: learned_net {learned_net!r} not found (looked beside the solverstate, "
                        f"{beside}, and in the working directory {os.getcwd()})")


# ---- caffe_io adapters ------------------------------------------------------------------------------
def load_weights(net, paths: Iterable[str], logger: Optional[GlogLogger] = None,
                 reinit_on_shape_mismatch: bool = False):
    """Copy layers by name from each caffemodel (Caffe's ``CopyTrainedLayersFrom``); returns the reports.

    A shape conflict stops with the layer and both shapes, unless ``reinit_on_shape_mismatch``
    (fine-tuning into a model with other keypoints/PAFs): then the layer keeps its initialisation
    and is reported as re-initialised.
    """
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.net import WeightShapeError

    reports = []
    for path in paths:
        if not os.path.exists(path):
            from openpose_train.generator.render import vgg_command

            raise TrainingError(f"{path}: weights file not found (the VGG-19 initialisation is made by "
                                f"`{vgg_command(path)}`; leave -weights out to start from random weights)")
        try:
            weights = caffe_io.read_caffemodel(path)
        except Exception as exc:  # a corrupt or truncated file: name it
            raise TrainingError(f"{path}: cannot read caffemodel: {exc}") from exc
        try:
            report = net.load_caffe_weights(weights, reinit_on_shape_mismatch=reinit_on_shape_mismatch)
        except WeightShapeError as exc:
            raise TrainingError(f"{path}: {exc} (fine-tuning into a changed model? "
                                f"--reinit-mismatched re-initialises such layers)") from exc
        if logger is not None:
            for name in report.unmatched:
                logger.info("net.cpp:761", f"Ignoring source layer {name}")
            logger.info("caffe.cpp:140", f"Copied weights from {path}: {report.summary()}")
            if report.matched:
                logger.info("caffe.cpp:141", f"  matched layers: {', '.join(report.matched)}")
            if report.reinitialised:
                logger.info("caffe.cpp:142", f"  re-initialised on shape mismatch: "
                            f"{', '.join(report.reinitialised)}")
            if report.missing:
                logger.info("caffe.cpp:142", f"  net layers not in {os.path.basename(path)} (keep their "
                            f"initialisation): {', '.join(report.missing)}")
        reports.append(report)
    return reports
