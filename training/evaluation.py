"""Evaluation during training: score the current weights on a held-out set every N iterations and
keep the best snapshot.

``openpose-train train ... --val-images DIR --val-annotations JSON --val-interval N`` runs, every
N iterations (after that iteration's snapshot), the same detection and evaluation as
``openpose-train validate --metrics M`` on the deploy net with the training weights (``--val-metric``
M: body, foot, wholebody, hand or face; see validation/metrics.py). The score goes

* into the log as Caffe's test lines, which ``tools/extra/parse_log.py`` reads as a test row::

      ... solver.cpp:330] Iteration 2000, Testing net (#0)
      ... solver.cpp:414]     Test net output #0: AP = 0.5123

* into the JSONL metrics as ``{"iteration": N, "validation": {"metric": ..., "AP": ..., ...}}``
  (no ``loss`` key, so loss readers skip it) and into TensorBoard (``val/<name>``);
* when it beats the best score so far: ``<snapshot_prefix>_best.caffemodel`` and
  ``<snapshot_prefix>_best.json`` (iteration, metric, score, sha256 of the caffemodel), both
  written to temporary names and renamed. A resumed run (``-snapshot``) keeps the best of the
  earlier run; a new training on a prefix that holds one is refused (training/snapshot_lock.py).

Where it runs: between iterations in the training process (``inline``, the CPU default), or in a
background ``openpose-train validate`` process on the snapshot's weights (``background``, the
default on CUDA), whose result is logged when it arrives; training waits for a still-running
evaluation before it starts the next one and before it exits.

The deploy net is the generator's ``pose_deploy.prototxt`` beside the training net (or
``--val-deploy``); the pose model comes from the OPData layer's model string through the
registry (or ``--val-model``). Detections per image and COCO results go to
``<snapshot_prefix>_validation/results_iter_N.json`` (+ ``_summary.json``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from openpose_train.common.digest import file_sha256
from openpose_train.common.files import StagedFiles

from .data_sources import TrainingError
from .logging_utils import validated_iterations

# --val-metric (validation/metrics.py's names) -> (summary key of the score, the keys printed after it
# as further test outputs (parse_log.py makes them columns), whether higher is better)
VAL_METRICS: Dict[str, tuple] = {
    "body": ("AP", ("AP50", "AR"), True),
    "foot": ("foot_ap", ("foot_ap50", "foot_ar"), True),
    "wholebody": ("wholebody_ap", ("wholebody_ap50", "wholebody_ar"), True),
    "hand": ("hand_pck", ("hand_auc",), True),
    "face": ("face_nme", (), False),
}
VAL_MODES = ("auto", "inline", "background")


@dataclass
class EvaluationConfig:
    """The ``--val-*`` flags of ``openpose-train train``."""

    images: str
    annotations: str
    interval: int
    metric: str = "body"
    net_resolution: str = "-1x368"
    deploy: Optional[str] = None        # default: pose_deploy.prototxt beside the training net
    model: Optional[str] = None         # default: the OPData layer's model string, via the registry
    limit: Optional[int] = None         # score only the first N images
    mode: str = "auto"                  # auto: background on CUDA, inline on the CPU


def check_config(cfg: EvaluationConfig) -> None:
    """Flag-level checks before anything is built (one line naming the flag)."""
    if cfg.interval is None or cfg.interval <= 0:
        raise TrainingError(f"--val-interval {cfg.interval}: must be a positive number of iterations")
    if cfg.metric not in VAL_METRICS:
        raise TrainingError(f"--val-metric {cfg.metric!r}: choose one of {', '.join(VAL_METRICS)}")
    if cfg.limit is not None and cfg.limit < 1:
        raise TrainingError(f"--val-limit {cfg.limit}: must be at least 1 (the number of images to score)")
    if cfg.mode not in VAL_MODES:
        raise TrainingError(f"--val-mode {cfg.mode!r}: choose one of {', '.join(VAL_MODES)}")
    if not os.path.isdir(cfg.images):
        raise TrainingError(f"--val-images {cfg.images}: folder not found")
    if not os.path.isfile(cfg.annotations):
        raise TrainingError(f"--val-annotations {cfg.annotations}: file not found")
    if cfg.deploy and not os.path.isfile(cfg.deploy):
        raise TrainingError(f"--val-deploy {cfg.deploy}: file not found")
    from openpose_train.validation.inference import InferenceError, parse_net_resolution
    try:
        parse_net_resolution(cfg.net_resolution)
    except InferenceError as exc:
        raise TrainingError(str(exc).replace("--net-resolution", "--val-net-resolution")) from None


def check_metric_applies(model, cfg: EvaluationConfig):
    """The model and the annotations can produce --val-metric, and the images chosen hold something to
    score (else one line, before any iteration is spent); returns the validation ImageList."""
    from openpose_train.validation.coco_eval import CocoEvalError, load_coco
    from openpose_train.validation.metrics import metric_reason
    from openpose_train.validation.metrics_coco import annotation_layout
    from openpose_train.validation.runner import check_something_to_score, list_images

    images = None
    try:
        coco = load_coco(cfg.annotations)
        reason = metric_reason(model, annotation_layout(coco.dataset), cfg.metric)
        if not reason:
            images = list_images(cfg.images, coco, cfg.limit)
            if not model.crop_net:
                check_something_to_score(coco, images, cfg.annotations, cfg.limit, option="--val-limit")
    except CocoEvalError as exc:
        raise TrainingError(f"--val-annotations: {exc}") from None
    if reason:
        raise TrainingError(f"--val-metric {reason}")
    return images


def pose_model_of(net_param, net_path: str, name: Optional[str] = None):
    """The registry PoseModel: ``name`` if given, else that of the train net's OPData model string."""
    from openpose_train.generator.registry import UnknownModelError, get_model, get_training_variant

    try:
        if name:
            return get_model(name)
        for layer in net_param.layer:
            if layer.type == "OPData":
                from openpose_train.caffe_layers.op_data import parse_layer

                op_model = parse_layer(layer).sources[0].op_model
                return get_training_variant(op_model)[0]
    except UnknownModelError as exc:
        raise TrainingError(f"--val-model: {exc.args[0] if exc.args else exc}") from None
    except ValueError as exc:  # OPDataError
        raise TrainingError(f"{net_path}: {exc}") from None
    raise TrainingError(f"{net_path} has no OPData layer to take the pose model from; give --val-model")


def default_deploy(net_path: str) -> str:
    """The generator writes ``pose_deploy.prototxt`` beside ``pose_training.prototxt``."""
    path = os.path.join(os.path.dirname(os.path.abspath(net_path)), "pose_deploy.prototxt")
    if not os.path.isfile(path):
        raise TrainingError(f"validation during training needs the deploy prototxt: {path} not found "
                            f"(give --val-deploy)")
    return path


def best_paths(prefix: str) -> tuple:
    """``(<prefix>_best.caffemodel, <prefix>_best.json)``."""
    return f"{prefix}_best.caffemodel", f"{prefix}_best.json"


# the fields a best-snapshot record must have, with their JSON types (docs/refusals.md §Resume and side files)
BEST_FIELDS = {"iteration": (int,), "metric": (str,), "score": (int, float), "caffemodel": (str,)}


def read_best(json_path: str) -> dict:
    """The best-snapshot record; TrainingError naming the file and the field when it is unreadable,
    not an object, or a field is missing or of the wrong type."""
    try:
        with open(json_path) as f:
            record = json.load(f)
    except OSError as exc:
        raise TrainingError(f"{json_path}: cannot read the best-snapshot record ({exc.strerror})") from None
    except ValueError as exc:
        raise TrainingError(f"{json_path}: not a JSON best-snapshot record ({exc})") from None
    if not isinstance(record, dict):
        raise TrainingError(f"{json_path}: not a best-snapshot record (a JSON object with "
                            f"{', '.join(BEST_FIELDS)}; found {json.dumps(record)[:40]})")
    for key, kinds in BEST_FIELDS.items():
        if key not in record:
            raise TrainingError(f"{json_path}: field '{key}' is missing")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, kinds) or value == "" \
                or (isinstance(value, float) and not np.isfinite(value)):
            wanted = {"iteration": "an iteration number", "score": "a finite number"}.get(key, "a non-empty string")
            raise TrainingError(f"{json_path}: field '{key}' is {json.dumps(value)[:40]}, not {wanted}")
    if record.get("sha256") is not None and not isinstance(record["sha256"], str):
        raise TrainingError(f"{json_path}: field 'sha256' is {json.dumps(record['sha256'])[:40]}, not a hex digest")
    return record


def check_best(json_path: str) -> tuple:
    """``(caffemodel path, record)`` of a best-snapshot record whose caffemodel (beside it) exists and
    has the recorded sha256; TrainingError naming what is missing or inconsistent."""
    record = read_best(json_path)
    model_path = os.path.join(os.path.dirname(json_path), os.path.basename(record["caffemodel"]))
    if not os.path.isfile(model_path):
        raise TrainingError(f"{json_path}: its caffemodel {model_path} is missing")
    if record.get("sha256") and file_sha256(model_path) != record["sha256"]:
        raise TrainingError(f"{model_path} is not the snapshot {json_path} describes (sha256 differs: the training "
                            f"was interrupted while replacing the best snapshot?)")
    return model_path, record


def _in_memory_backend(net, device):
    """A validation TorchBackend over an already built deploy CaffeNet (weights loaded by the caller)."""
    import torch

    from openpose_train.validation.inference import TorchBackend

    backend = TorchBackend.__new__(TorchBackend)
    backend.torch, backend.net, backend.device = torch, net, device
    backend.input_name = next(iter(net.input_blobs))
    return backend


class Evaluator:
    """Runs the ``--val-*`` evaluation for a :class:`training.loop.Trainer` (rank 0 only)."""

    def __init__(self, cfg: EvaluationConfig, model, deploy: str, prefix: str, net_param, device,
                 logger, model_arg: Optional[str] = None):
        import torch

        from openpose_train.caffe_layers import caffe_io
        from openpose_train.caffe_layers.net import CaffeNet

        self.cfg = cfg
        self.model = model
        self.deploy = deploy
        self.prefix = prefix
        self.net_param = net_param          # written into best.caffemodel, as in snapshots
        self.device = torch.device(device)
        self.logger = logger
        self.model_arg = model_arg or model.name
        self.key, self.extra_keys, self.higher_is_better = VAL_METRICS[cfg.metric]
        self.out_dir = f"{prefix}_validation"
        self.best_model, self.best_json = best_paths(prefix)
        self.best: Optional[dict] = None
        self.background = cfg.mode == "background" or (cfg.mode == "auto" and self.device.type == "cuda")
        if self.background and not model.upstream:
            # the 'validate' process knows registry models only (a YAML skeleton is registered here)
            logger.warning("solver.cpp:300", f"{model.name} is a custom skeleton: validation runs between "
                           f"iterations instead of in a background process")
            self.background = False
        self._job = None    # (iteration, Popen, results path, (weights fd, watch pipe fd, pending path), log file)
        try:
            self.deploy_net = CaffeNet(caffe_io.read_net_prototxt(deploy), phase="TEST")
        except Exception as exc:  # a broken deploy file: name it
            raise TrainingError(f"bad deploy prototxt {deploy}: {exc}") from None
        self.deploy_net.to(self.device).eval()
        self.metrics = None                 # the trainer's MetricsWriter (set in start)
        self.tensorboard = None

    # ---- life cycle --------------------------------------------------------------------------------
    def start(self, trainer, resumed: bool) -> None:
        """Called by ``Trainer.solve``: picks up the trainer's sinks and, on a resume, the best so far."""
        self.metrics = trainer.metrics
        self.tensorboard = getattr(trainer, "tensorboard", None)
        os.makedirs(self.out_dir, exist_ok=True)
        self.remove_stale_weights()
        if self.best is not None:
            self.logger.info("solver.cpp:300", f"best snapshot so far: iteration {self.best['iteration']}, "
                             f"{self.best['metric']} {self.key} = {self.best['score']} ({self.best_model})")
        if resumed:
            self._score_unrecorded(trainer)

    def _score_unrecorded(self, trainer) -> None:
        """On a resume, score every interval up to the resumed iteration that has no validation record
        (the earlier run was killed during its evaluation, a background one was cut while later
        snapshots were written, it failed, or the earlier run did not validate), the earlier ones from
        their snapshot caffemodels: every interval is scored once, and the best is the best of all."""
        from openpose_train.caffe_layers import caffe_io

        from .loop import snapshot_filename

        iteration = trainer.solver.iter
        done = validated_iterations(getattr(self.metrics, "path", None))
        gone = []
        for k in range(self.cfg.interval, iteration + 1, self.cfg.interval):
            if k in done:
                continue
            if k == iteration:
                weights = trainer.net.caffe_weights()
            else:
                snapshot = snapshot_filename(self.prefix, k, ".caffemodel")
                if not os.path.exists(snapshot):
                    gone.append(k)
                    continue
                try:
                    weights = caffe_io.read_caffemodel(snapshot)
                except (OSError, ValueError) as exc:
                    self.logger.warning("solver.cpp:300", f"iteration {k} has no validation record and its "
                                        f"snapshot cannot be read ({exc}); it stays unscored")
                    continue
            self.logger.info("solver.cpp:300", f"iteration {k} has no validation record (the earlier run "
                             f"stopped, or failed, before its score was recorded): scoring it now")
            self.evaluate_weights(k, weights)
        if gone:
            self.logger.warning("solver.cpp:300", f"iteration(s) {', '.join(map(str, gone))} have no validation "
                                f"record and no snapshot caffemodel left: not scored")

    def load_best(self) -> None:
        """A resume keeps the earlier run's best: read and check ``<prefix>_best.json`` (and its
        caffemodel) now, before any work, and refuse a record of another metric."""
        if not os.path.isfile(self.best_json):
            return
        _, record = check_best(self.best_json)
        if record["metric"] != self.cfg.metric:
            raise TrainingError(f"{self.best_json}: the best so far is by --val-metric {record['metric']}, this run "
                                f"scores {self.cfg.metric}; resume with --val-metric {record['metric']}, or move the "
                                f"record and its caffemodel away to keep a new best by {self.cfg.metric}")
        self.best = record

    def after_iteration(self, trainer) -> None:
        """Called after each iteration's snapshot: collect a finished background job; start a new one."""
        self._poll(wait=False)
        if trainer.solver.iter % self.cfg.interval == 0:
            self.evaluate(trainer)

    def close(self, wait: bool = True) -> None:
        """End of training: wait for (or, after an error, stop) a background evaluation."""
        if self._job is None:
            return
        if wait:
            self._poll(wait=True)
        else:
            self._job[1].kill()
            self._job[1].wait()
            self._discard_job()

    # ---- one evaluation ----------------------------------------------------------------------------
    def evaluate(self, trainer) -> None:
        """Score the current weights; a failure is logged and training goes on (hours of training
        are not lost to an unreadable image or a full disk in the validation folder)."""
        self.evaluate_weights(trainer.solver.iter, trainer.net.caffe_weights())

    def evaluate_weights(self, it: int, weights) -> None:
        """:meth:`evaluate` on the weights of iteration ``it``."""
        try:
            if self.background:
                self._poll(wait=True)           # one at a time
                self._start_job(it, weights)
                return
            summary = self.score_inline(it, weights)
            self._record(it, summary, weights=weights)
        except (TrainingError, ValueError, OSError) as exc:
            self._failed(it, exc)

    def _failed(self, iteration: int, exc: BaseException) -> None:
        self.logger.error("solver.cpp:331", f"validation of iteration {iteration} failed: {exc}; training goes on")

    def score_inline(self, iteration: int, weights) -> dict:
        from openpose_train.validation.inference import InferenceSettings, PoseEstimator
        from openpose_train.validation.runner import run_validation

        self.deploy_net.load_caffe_weights(weights, allow_missing=False)
        estimator = PoseEstimator(self.model, _in_memory_backend(self.deploy_net, self.device),
                                  InferenceSettings(net_resolution=self.cfg.net_resolution))
        return run_validation(estimator, self.cfg.images, self._results_path(iteration), self.cfg.annotations,
                              limit=self.cfg.limit, progress=False, metrics=[self.cfg.metric])

    def _results_path(self, iteration: int) -> str:
        return os.path.join(self.out_dir, f"results_iter_{iteration}.json")

    def _start_job(self, iteration: int, weights) -> None:
        """``openpose-train validate`` in a child process that dies with this one (training/background_validate.py)
        on the weights of ``iteration``, passed as an open file that is already deleted where the
        system allows (Linux): a killed training leaves no temporary caffemodel behind."""
        from openpose_train.caffe_layers import caffe_io
        from openpose_train.common.processes import parent_watch_pipe

        pending = os.path.join(self.out_dir, f"weights_iter_{iteration}.caffemodel")
        caffe_io.write_caffemodel(pending, weights, net=self.net_param)
        weights_fd = os.open(pending, os.O_RDONLY)
        caffemodel = pending
        if os.path.isdir("/proc/self/fd"):
            os.unlink(pending)
            caffemodel = f"/proc/self/fd/{weights_fd}"     # the child's own descriptor (same number)
        results = self._results_path(iteration)
        args = ["validate", "--prototxt", self.deploy,
                "--caffemodel", caffemodel, "--model", self.model_arg, "--images", self.cfg.images,
                "--annotations", self.cfg.annotations, "--net-resolution", self.cfg.net_resolution,
                "--device", str(self.device), "--out", results, "--metrics", self.cfg.metric, "--quiet"]
        if self.cfg.limit:
            args += ["--limit", str(self.cfg.limit)]
        watch_r, watch_w = parent_watch_pipe()
        log = open(os.path.join(self.out_dir, f"validate_iter_{iteration}.log"), "w")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "openpose_train.training.background_validate",
                                     str(os.getpid()), str(watch_r), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                    pass_fds=(watch_r, weights_fd))
        except OSError:
            for fd in (watch_r, watch_w, weights_fd):
                os.close(fd)
            log.close()
            raise
        finally:
            if os.path.exists(pending) and caffemodel != pending:
                os.unlink(pending)
        os.close(watch_r)
        self._job = (iteration, proc, results, (weights_fd, watch_w, pending), log)
        self.logger.info("solver.cpp:330", f"Iteration {iteration}, validation started in process {proc.pid} "
                         f"(log {log.name})")

    def _poll(self, wait: bool) -> None:
        if self._job is None:
            return
        iteration, proc, results, (weights_fd, _, _), log = self._job
        if (proc.wait() if wait else proc.poll()) is None:
            return
        rc = proc.returncode
        summary_path = os.path.splitext(results)[0] + "_summary.json"
        try:
            if rc != 0:
                raise TrainingError(f"'openpose-train validate' exited with status {rc} (log: {log.name})")
            try:
                with open(summary_path) as f:
                    summary = json.load(f)
            except ValueError as exc:
                raise TrainingError(f"{summary_path}: not a JSON summary ({exc})") from None
            self._record(iteration, summary, weights_fd=weights_fd)
        except (TrainingError, ValueError, OSError) as exc:
            self._failed(iteration, exc)
        finally:
            self._discard_job()

    def _discard_job(self) -> None:
        _, _, _, (weights_fd, watch_w, pending), log = self._job
        log.close()
        for fd in (weights_fd, watch_w):
            os.close(fd)
        if os.path.exists(pending):
            os.unlink(pending)
        self._job = None

    def remove_stale_weights(self) -> None:
        """Weights of a background evaluation that a killed training of an older version left behind."""
        import glob

        for path in glob.glob(os.path.join(glob.escape(self.out_dir), "weights_iter_*.caffemodel")):
            os.unlink(path)

    # ---- results -----------------------------------------------------------------------------------
    def _record(self, iteration: int, summary: dict, weights=None, weights_fd: Optional[int] = None) -> None:
        from .solver import format_float

        value = summary.get(self.key)
        if value is None:
            why = summary.get("metric_notes", {}).get(self.cfg.metric) or summary.get("note") or "nothing to score"
            raise TrainingError(f"no {self.key} in the summary ({why})")
        value = float(value)
        log = self.logger.info
        log("solver.cpp:330", f"Iteration {iteration}, Testing net (#0)")
        outputs = [(self.key, value)] + [(k, float(summary[k])) for k in self.extra_keys
                                         if summary.get(k) is not None]
        for k, (name, v) in enumerate(outputs):
            log("solver.cpp:414", f"    Test net output #{k}: {name} = {format_float(v)}")
        record = {"metric": self.cfg.metric, **dict(outputs),
                  "images": summary.get("images_evaluated"), "results": summary.get("results")}
        improved = self.best is None or (value > self.best["score"] if self.higher_is_better
                                         else value < self.best["score"])
        if improved:
            self._write_best(iteration, value, weights, weights_fd)
            log("solver.cpp:415", f"    new best {self.cfg.metric} {self.key} = {format_float(value)}: "
                f"{self.best_model} (iteration {iteration})")
        record["best_iteration"] = self.best["iteration"]
        record["best_score"] = self.best["score"]
        if self.metrics is not None:
            self.metrics.write({"iteration": iteration, "validation": record})
        if self.tensorboard is not None:
            self.tensorboard.validation(iteration, dict(outputs), best=self.best["score"])

    def _write_best(self, iteration: int, value: float, weights, weights_fd: Optional[int]) -> None:
        """best.caffemodel and best.json: both to temporary names, then renamed (the JSON last). The
        caffemodel is ``weights``, or the open file a background evaluation scored (``weights_fd``)."""
        import shutil

        from openpose_train.caffe_layers import caffe_io

        with StagedFiles(fsync=True) as staged:
            model_file = staged.stage(self.best_model)
            if weights_fd is not None:
                os.lseek(weights_fd, 0, os.SEEK_SET)
                with os.fdopen(os.dup(weights_fd), "rb") as src, open(model_file, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            else:
                caffe_io.write_caffemodel(model_file, weights, net=self.net_param)
            record = {"iteration": iteration, "metric": self.cfg.metric, "key": self.key, "score": value,
                      "higher_is_better": self.higher_is_better, "caffemodel": os.path.basename(self.best_model),
                      "sha256": file_sha256(model_file), "deploy": os.path.abspath(self.deploy),
                      "model": self.model.name, "net_resolution": self.cfg.net_resolution,
                      "images": os.path.abspath(self.cfg.images),
                      "annotations": os.path.abspath(self.cfg.annotations)}
            staged.stage(self.best_json).write_text(json.dumps(record, indent=2))
        self.best = record

    # ---- TensorBoard maps --------------------------------------------------------------------------
    def first_image(self) -> Optional[str]:
        """The fixed image whose predicted maps TensorBoard shows: the first annotated image found."""
        from openpose_train.validation.coco_eval import load_coco
        from openpose_train.validation.runner import list_images

        try:
            entries = list_images(self.cfg.images, load_coco(self.cfg.annotations), limit=1).entries
        except ValueError:
            return None
        return entries[0].path if entries else None

    def predicted_maps(self, weights, image_path: str):
        """``(maps, grey)``: the deploy net's output (C, h, w) at stride 8 with ``weights`` on one
        image, and that image as the net saw it, grey in [0, 1] at (h, w); None if unreadable."""
        import cv2

        from openpose_train.validation.inference import (net_input_size, parse_net_resolution,
                                                         preprocess)
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if image is None:
            return None
        size = net_input_size((image.shape[1], image.shape[0]), parse_net_resolution(self.cfg.net_resolution))
        x = preprocess(image, size)[0]
        self.deploy_net.load_caffe_weights(weights, allow_missing=False)
        maps = _in_memory_backend(self.deploy_net, self.device).forward(x[None])[0]
        grey = x.mean(axis=0) + 0.5         # undo OpenPose's pixel / 256 - 0.5
        grey = cv2.resize(grey, (maps.shape[2], maps.shape[1]), interpolation=cv2.INTER_AREA)
        return maps, np.clip(grey, 0.0, 1.0)


def build_evaluator(cfg: EvaluationConfig, net_param, net_path: str, prefix: str, device, logger,
                    resumed: bool = False) -> Evaluator:
    """An :class:`Evaluator` for ``train``'s ``--val-*`` flags (checks them first, and on a resume the
    earlier run's best record)."""
    check_config(cfg)
    if not prefix:
        raise TrainingError("--val-interval needs the solver's snapshot_prefix (the best snapshot goes beside it)")
    model = pose_model_of(net_param, net_path, cfg.model)
    images = check_metric_applies(model, cfg)
    deploy = cfg.deploy or default_deploy(net_path)
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt
    from openpose_train.validation.inference import (InferenceError, InferenceSettings, check_memory,
                                                     check_output_channels)
    try:       # a deploy of another model would score nothing at every evaluation
        deploy_param = read_net_prototxt(deploy)
        check_output_channels(deploy, deploy_param, model)
    except (InferenceError, ValueError, OSError) as exc:
        raise TrainingError(f"--val-deploy: {exc}") from None
    try:       # the validation net must fit beside the training
        check_memory(deploy_param, InferenceSettings(net_resolution=cfg.net_resolution), model.num_channels,
                     device=str(device), option="--val-net-resolution")
    except InferenceError as exc:
        raise TrainingError(str(exc)) from None
    for line in images.problems():      # absent or repeated images: said once, with counts
        logger.warning("solver.cpp:300", f"--val-images: {line}")
    evaluator = Evaluator(cfg, model, deploy, prefix, net_param, device, logger, model_arg=cfg.model)
    if resumed:
        evaluator.load_best()
    return evaluator


def find_best(training_dir: str) -> tuple:
    """``(best caffemodel path, best record)`` of a training folder: its ``*_best.json`` (or one in a
    sub-folder, the generator's ``model/`` layout; or the JSON itself), checked against the
    caffemodel's sha256. TrainingError names what is missing or inconsistent."""
    import glob

    if os.path.isfile(training_dir) and training_dir.endswith(".json"):
        found = [training_dir]
    elif os.path.isdir(training_dir):
        found = sorted(glob.glob(os.path.join(training_dir, "*_best.json"))) or \
            sorted(glob.glob(os.path.join(training_dir, "*", "*_best.json")))
    else:
        raise TrainingError(f"--best {training_dir}: no such training folder")
    if not found:
        raise TrainingError(f"--best {training_dir}: no *_best.json (train with --val-interval to keep the best "
                            f"snapshot)")
    if len(found) > 1:
        raise TrainingError(f"--best {training_dir}: several best-snapshot records ({', '.join(found)}); "
                            f"give one of them")
    return check_best(found[0])
