"""``openpose-train train``: Caffe's ``caffe train`` command line on the torch engine (or on a real Caffe).

Flags are Caffe's (gflags style: ``-solver S``, ``--solver=S`` and ``-solver=S`` all work), so the
generated ``train_pose.sh`` runs with either binary::

    openpose-train train -solver pose_solver.prototxt [-weights W1.caffemodel,W2...] [-snapshot X.solverstate]
                         [-gpu 0,1|all] [-iterations N] [-sigint_effect stop] [-sighup_effect snapshot]
                         [--backend torch|caffe] [--bf16] [--channels-last] [--compile] [--workers N]
                         [--labels auto|workers|device]
                         [--val-images DIR --val-annotations JSON --val-interval N [--val-metric body]]
                         [--no-tensorboard]

Paths in the solver (``net:``, ``snapshot_prefix``) are relative to the current working directory,
as in Caffe; a ``net:`` missing there but present next to the solver file is used with a warning.
``-iterations N`` overrides the solver's ``max_iter`` (``caffe train`` ignores it). Multi-GPU: see
training/distributed.py (``-gpu 0,1`` spawns one process per GPU; or launch with torchrun).
Evaluation during training and the best snapshot: training/evaluation.py; TensorBoard event
files: training/tensorboard_log.py.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import click

from openpose_train.common.errors import reports_errors

from .data_sources import TrainingError


def caffe_option(name: str, **kw):
    """A click option spelled the gflags ways: ``-name`` and ``--name`` (``=value`` accepted by click)."""
    return click.option(f"-{name}", f"--{name}", name.replace("-", "_"), **kw)


@dataclass
class TrainConfig:
    """The parsed command line, passed (pickled) to each worker process."""

    solver: str
    weights: List[str] = field(default_factory=list)
    reinit_mismatched: bool = False
    snapshot: Optional[str] = None
    gpus: List[int] = field(default_factory=list)
    iterations: Optional[int] = None
    sigint_effect: str = "stop"
    sighup_effect: str = "snapshot"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    workers: Optional[int] = None            # None: op_data.default_workers() in each process
    labels: str = "auto"                     # where OPData labels are rendered: auto, workers, device
    log_file: Optional[str] = None
    metrics: Optional[str] = None
    progress: bool = True
    progress_interval: float = 30.0
    cwd: str = field(default_factory=os.getcwd)
    evaluation: Optional[object] = None      # training.evaluation.EvaluationConfig (--val-*)
    tensorboard: bool = True
    tensorboard_maps_every: int = 1
    model_yamls: List[str] = field(default_factory=list)   # custom skeletons the data layer must know


def parse_gpus(text: Optional[str]) -> List[int]:
    """Caffe's ``-gpu``: '' (CPU), '0,1', or 'all' (every visible CUDA device)."""
    import torch

    if not text:
        return []
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if text.strip() == "all":
        if not available:
            raise TrainingError("-gpu all: no CUDA device is visible (torch.cuda.is_available() is False); "
                                "leave -gpu out to train on the CPU")
        return list(range(available))
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise TrainingError(f"-gpu {text!r}: expected a comma-separated list of device ids or 'all'") from None
    if not available:
        raise TrainingError(f"-gpu {text}: no CUDA device is visible (torch.cuda.is_available() is False); "
                            f"leave -gpu out to train on the CPU")
    bad = [g for g in gpus if g < 0 or g >= available]
    if bad:
        raise TrainingError(f"-gpu {text}: device {bad[0]} does not exist ({available} visible)")
    return gpus


def resolve_net_path(net: str, solver_path: str, logger=None) -> str:
    """Caffe resolves ``net:`` against the CWD; fall back to the solver's folder (with a warning)."""
    if os.path.isabs(net) or os.path.exists(net):
        return net
    beside = os.path.join(os.path.dirname(os.path.abspath(solver_path)), net)
    if os.path.exists(beside):
        if logger is not None:
            logger.warning("solver.cpp:102", f"net {net!r} is not in the working directory {os.getcwd()}; "
                           f"using {beside} next to the solver file")
        return beside
    raise TrainingError(f"{solver_path}: net file {net!r} not found (Caffe resolves it against the working "
                        f"directory {os.getcwd()}; also looked for {beside})")


def load_solver(path: str):
    """The SolverParameter of a solver prototxt, with a message naming the file on any error."""
    from openpose_train.caffe_layers import caffe_io

    if not os.path.exists(path):
        raise TrainingError(f"{path}: solver file not found")
    try:
        return caffe_io.read_solver_prototxt(path)
    except caffe_io.CaffeFormatError as exc:
        raise TrainingError(f"bad solver file: {exc}") from exc


def train_net_param(solver_param, solver_path: str, logger=None):
    """The train net of a solver: ``net`` / ``net_param`` / ``train_net`` / ``train_net_param`` (exactly one)."""
    from openpose_train.caffe_layers import caffe_io

    p = solver_param
    given = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
    if len(given) != 1:
        raise TrainingError(f"{solver_path}: the solver must name exactly one train net "
                            f"(net, net_param, train_net or train_net_param); found {given or 'none'}")
    if given[0] in ("net_param", "train_net_param"):
        net = getattr(p, given[0])
        if not net.name:
            net.name = "net"
        return net, solver_path
    path = resolve_net_path(getattr(p, given[0]), solver_path, logger)
    try:
        return caffe_io.read_net_prototxt(path), path
    except caffe_io.CaffeFormatError as exc:
        raise TrainingError(f"bad net file: {exc}") from exc


def take_snapshot_lock(solver_path: str, resuming: bool, metrics: Optional[str] = None):
    """Lock the solver's snapshot_prefix for this run (training/snapshot_lock.py), then, for a new
    training, refuse a prefix holding an earlier run's files. None on ranks other than 0 (torchrun)
    and for a solver that writes no snapshots."""
    from .snapshot_lock import SnapshotLock, refuse_fresh_run_over

    if os.environ.get("RANK", "0") not in ("", "0"):
        return None
    prefix = load_solver(solver_path).snapshot_prefix
    if not prefix:
        return None
    lock = SnapshotLock(prefix, solver_path).acquire()
    try:
        if not resuming:
            refuse_fresh_run_over(prefix, solver_path, metrics)
    except BaseException:
        lock.release()
        raise
    return lock


def run_training(cfg: TrainConfig) -> int:
    """Build solver, nets, data and run Caffe's Solve in this process (one rank). Returns the last iteration.

    The steps are the functions below, in order; what each opens is closed once, by ``stack``, in
    reverse order, whether training ends or fails."""
    from openpose_train.caffe_layers.net import configure_precision

    from . import distributed
    from .logging_utils import GlogLogger
    from .loop import Trainer, load_weights

    skeletons = register_skeletons(cfg.model_yamls)
    os.chdir(cfg.cwd)
    solver_param = load_solver(cfg.solver)
    gpus, cpu_fallback = select_gpus(cfg.gpus, solver_param)
    with contextlib.ExitStack() as stack:
        ctx = stack.enter_context(distributed.process_group(bool(gpus)))
        rank, world = (ctx.rank, ctx.world_size) if ctx else (0, 1)
        logger = GlogLogger(log_file=cfg.log_file, enabled=rank == 0)
        stack.callback(logger.close)
        device = training_device(gpus, cpu_fallback, cfg.bf16, logger)
        check_solver(solver_param, cfg.solver, logger)
        net_param, net_path = train_net_param(solver_param, cfg.solver, logger)
        check_skeletons(net_path, skeletons)
        seed = seed_this_rank(solver_param, ctx)
        if gpus and solver_param.random_seed >= 0:
            # a seeded run repeats itself on the GPU too (reruns, exact resume): cuDNN's
            # deterministic kernels only (docs/compatibility.md §GPU numerics)
            import torch

            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            logger.info("caffe.cpp:241", "random_seed is set: cuDNN runs deterministic kernels only")
        logger.info("solver.cpp:91", f"Creating training net from net file: {net_path}")
        net, test_net = build_nets(net_param, net_path, solver_param, seed, skeletons)
        for built in (net, test_net):
            if built is not None:
                configure_precision(built, device, bf16=cfg.bf16 and bool(gpus), channels_last=cfg.channels_last)
        workers, label_device = data_settings(cfg, device)
        logger.info("caffe.cpp:240", f"data: {workers} worker processes per rank, labels rendered "
                    + ("in the workers" if label_device == "workers" else f"per batch on {label_device}"))
        sources, test_sources = build_sources(net, test_net, net_path, seed, rank, world, workers, label_device,
                                              stack, pin_memory=device.type == "cuda")
        if cfg.weights:
            load_weights(net, cfg.weights, logger, reinit_on_shape_mismatch=cfg.reinit_mismatched)
        evaluator = None
        if cfg.evaluation is not None and rank == 0:
            from .evaluation import build_evaluator

            evaluator = build_evaluator(cfg.evaluation, net_param, net_path, solver_param.snapshot_prefix,
                                        device, logger, resumed=bool(cfg.snapshot))
        trainer = Trainer(solver_param, net, sources, net_param=net_param, options=train_options(cfg, workers),
                          logger=logger, device=device, dist=ctx, test_net=test_net, test_sources=test_sources,
                          evaluator=evaluator)
        if cfg.snapshot:
            logger.info("caffe.cpp:253", f"Resuming from {cfg.snapshot}")
        logger.info("caffe.cpp:263", "Starting Optimization")
        return trainer.solve(resume_file=cfg.snapshot)


def select_gpus(gpus: List[int], solver_param) -> tuple:
    """``(GPUs, CPU fallback)``: ``-gpu``, else Caffe's rule (the solver's solver_mode, default GPU, and
    device_id choose); sets this process's GPU before NCCL starts (it binds to the current device)."""
    import torch

    from . import distributed

    gpus = list(gpus)
    cpu_fallback = False
    if not gpus and solver_param.solver_mode == solver_param.GPU:
        if not torch.cuda.is_available():
            cpu_fallback = True
        elif distributed.launched_by_torchrun():  # one device per local process
            gpus = list(range(torch.cuda.device_count()))
        else:
            gpus = [int(solver_param.device_id)]
    if gpus:
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed.launched_by_torchrun() else 0
        if local_rank >= len(gpus):
            raise TrainingError(f"local rank {local_rank} has no GPU: -gpu lists {len(gpus)} devices "
                                f"(start one process per listed GPU)")
        torch.cuda.set_device(gpus[local_rank])
    return gpus, cpu_fallback


def training_device(gpus: List[int], cpu_fallback: bool, bf16: bool, logger):
    """The torch device of this process, logged as Caffe does."""
    import torch

    if gpus:
        logger.info("caffe.cpp:248", f"Using GPUs {','.join(map(str, gpus))}")
        return torch.device("cuda", torch.cuda.current_device())
    if cpu_fallback:
        logger.warning("caffe.cpp:237", "the solver says solver_mode: GPU but no CUDA device is visible; "
                       "training on the CPU")
    logger.info("caffe.cpp:238", "Use CPU.")
    if bf16:
        logger.warning("caffe.cpp:239", "--bf16 is a GPU option; ignored on the CPU")
    return torch.device("cpu")


def check_solver(solver_param, solver_path: str, logger) -> None:
    """The solver's fields, checked before anything is built; logged; unsupported options said."""
    from .solver import SolverConfigError, check_solver_param

    try:
        check_solver_param(solver_param)
    except SolverConfigError as exc:
        raise TrainingError(f"{solver_path}: {exc}") from exc
    if not solver_param.snapshot_prefix and (solver_param.snapshot or solver_param.snapshot_after_train):
        raise TrainingError(f"{solver_path}: snapshot_prefix is not set (Caffe needs it to write snapshots)")
    logger.info("solver.cpp:48", "Initializing solver from parameters: \n" + _solver_text(solver_param))
    if solver_param.snapshot_format == solver_param.HDF5:
        logger.warning("solver.cpp:49", "snapshot_format: HDF5 is not written by this engine; snapshots are "
                       "binary protos (.caffemodel / .solverstate), which Caffe reads as well")
    if solver_param.snapshot_diff:
        logger.warning("solver.cpp:50", "snapshot_diff is ignored: snapshots hold weights only")


def seed_this_rank(solver_param, ctx) -> int:
    """Caffe seeds solver rank r with random_seed + r (a negative seed: one random draw for all ranks);
    seeds torch, numpy and Python's RNGs with it."""
    import numpy as np
    import torch

    seed = int(solver_param.random_seed)
    if seed < 0:
        seed = random.SystemRandom().randrange(2 ** 31)
        if ctx is not None:
            seed = ctx.gather_objects(seed)[0]
    seed += ctx.rank if ctx else 0
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)
    return seed


def build_nets(net_param, net_path: str, solver_param, seed: int, skeletons: dict) -> tuple:
    """``(train net, test net or None)`` (a test net when the solver has test_iter)."""
    from openpose_train.caffe_layers.layers import LayerConfigError, UnsupportedLayerError
    from openpose_train.caffe_layers.net import CaffeNet, NetDefinitionError

    from .data_sources import known_input_shapes

    try:
        net = CaffeNet(net_param, phase="TRAIN", seed=seed, input_shapes=known_input_shapes(net_param, "TRAIN"))
        test_net = (CaffeNet(net_param, phase="TEST", seed=seed, input_shapes=known_input_shapes(net_param, "TEST"))
                    if len(solver_param.test_iter) else None)
    except (NetDefinitionError, LayerConfigError, UnsupportedLayerError) as exc:
        hint = (f" (is {', '.join(path for path, _ in skeletons.values())} the skeleton this net was generated "
                "from? regenerate it after editing the YAML)" if skeletons else "")
        raise TrainingError(f"bad net file {net_path}: {exc}{hint}") from exc
    return net, test_net


def build_sources(net, test_net, net_path: str, seed: int, rank: int, world: int, workers: int, label_device,
                  stack: contextlib.ExitStack, pin_memory: bool = False) -> tuple:
    """``(train sources, [test sources])``; each is closed by ``stack`` (its worker processes end).
    ``pin_memory``: batches in page-locked memory (training on a GPU)."""
    from .data_sources import make_sources

    def made(*args):
        try:
            sources = make_sources(*args, workers, label_device, pin_memory)
        except TrainingError as exc:  # name the net file too: the message names the layer
            raise TrainingError(f"{net_path}: {exc}") from exc
        for source in sources:
            stack.callback(source.close)
        return sources
    sources = made(net, "TRAIN", seed, rank, world)
    return sources, ([made(test_net, "TEST", seed, 0, 1)] if test_net is not None else [])


def train_options(cfg: TrainConfig, workers: int):
    """The loop's options from the command line."""
    from .loop import TrainOptions

    return TrainOptions(max_iter=cfg.iterations, sigint_effect=cfg.sigint_effect, sighup_effect=cfg.sighup_effect,
                        bf16=cfg.bf16, channels_last=cfg.channels_last, compile=cfg.compile,
                        compile_backend=cfg.compile_backend, workers=workers, metrics_path=cfg.metrics,
                        progress=cfg.progress, progress_interval=cfg.progress_interval,
                        tensorboard=cfg.tensorboard, tensorboard_maps_every=cfg.tensorboard_maps_every)


def _evaluation_config(images, annotations, interval, metric, net_resolution, deploy, model, limit, mode):
    """The --val-* flags as an EvaluationConfig, or None without them (the three main ones go together)."""
    given = {"--val-images": images, "--val-annotations": annotations, "--val-interval": interval}
    if not any(v is not None for v in given.values()):
        return None
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise TrainingError(f"evaluation during training needs --val-images, --val-annotations and "
                            f"--val-interval; missing {', '.join(missing)}")
    from .evaluation import EvaluationConfig, check_config

    cfg = EvaluationConfig(images=os.path.abspath(images), annotations=os.path.abspath(annotations),
                           interval=interval, metric=metric, net_resolution=net_resolution,
                           deploy=os.path.abspath(deploy) if deploy else None, model=model, limit=limit, mode=mode)
    check_config(cfg)
    return cfg


def data_settings(cfg: TrainConfig, device):
    """(worker processes, OPData label device) for this process: ``--labels auto`` renders on the
    device on CUDA (workers send images, mask grids and keypoints) and in the workers on the CPU."""
    from openpose_train.caffe_layers.op_data import default_workers

    workers = default_workers() if cfg.workers is None else int(cfg.workers)
    if cfg.labels == "workers" or (cfg.labels == "auto" and device.type != "cuda"):
        return workers, "workers"
    return workers, str(device)


def _solver_text(p) -> str:
    from openpose_train.caffe_layers import caffe_io

    return caffe_io.prototxt_string(p)


def register_skeletons(paths) -> dict:
    """Register custom YAML skeletons so that the OPData layer knows their training model strings
    (the generator's train_pose.sh passes the YAML it was made from); returns {model name: (path, model)}."""
    from openpose_train.generator.registry import SkeletonError, load_skeleton_yaml
    loaded = {}
    for path in paths:
        try:
            model = load_skeleton_yaml(path, register_model=True)
        except SkeletonError as exc:
            raise TrainingError(str(exc)) from None
        if model.name in loaded and loaded[model.name][1].skeleton_digest != model.skeleton_digest:   # would replace it
            raise TrainingError(f"--model-yaml {path} and {loaded[model.name][0]} both define a model "
                                f"'{model.name}'; give each skeleton its own name")
        loaded[model.name] = (path, model)
    return loaded


def check_skeletons(net_path: str, skeletons: dict) -> None:
    """A train net generated from a YAML skeleton trains with that skeleton, unchanged since: one line
    instead of a tensor-size error later (docs/refusals.md §YAML skeletons)."""
    from openpose_train.generator.skeleton import generated_from_problem

    try:
        with open(net_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:       # read (and reported) with the net already; nothing recorded to compare
        return
    problem = generated_from_problem(net_path, text, skeletons)
    if problem:
        raise TrainingError(problem)


def check_skeletons_first(solver_path: str, model_yamls) -> None:
    """The --model-yaml files and the skeleton the train net was generated from, checked before the snapshot
    folder is locked or looked at: a wrong skeleton is the first thing to hear about."""
    skeletons = register_skeletons(model_yamls)
    p = load_solver(solver_path)
    for name in ("net", "train_net"):
        if p.HasField(name):
            path = resolve_net_path(getattr(p, name), solver_path)
            if os.path.isfile(path):      # a missing net file is reported with the net, later
                check_skeletons(path, skeletons)


def _worker(cfg: TrainConfig) -> None:
    run_training(cfg)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@caffe_option("solver", required=True, help="The solver definition protocol buffer text file.")
@caffe_option("weights", default="", help="Comma-separated caffemodels to initialise from (by layer name).")
@caffe_option("snapshot", default="", help="A .solverstate to resume training from.")
@caffe_option("gpu", default="", help="GPU ids, comma-separated, or 'all'. Empty: CPU.")
@caffe_option("iterations", type=click.IntRange(min=0), default=None, help="Override the solver's max_iter.")
@caffe_option("sigint_effect", default="stop", type=click.Choice(["snapshot", "stop", "none"]),
              help="Action on SIGINT/SIGTERM (Caffe: snapshot, stop, none). 'stop' snapshots, then exits.")
@caffe_option("sighup_effect", default="snapshot", type=click.Choice(["snapshot", "stop", "none"]),
              help="Action on SIGHUP.")
@click.option("--reinit-mismatched", "reinit_mismatched", is_flag=True,
              help="Fine-tuning into a changed model: layers whose shapes differ from -weights keep their "
                   "filler initialisation (reported) instead of stopping.")
@click.option("--backend", type=click.Choice(["torch", "caffe"]), default=None,
              help="torch (default) or an external Caffe binary ($CAFFE or 'caffe' on PATH; $CAFFE selects it).")
@click.option("--bf16", is_flag=True, help="bf16 autocast on CUDA (ignored on the CPU).")
@click.option("--channels-last", "channels_last", is_flag=True, help="channels_last activations (memory layout).")
@click.option("--compile", "compile_net", is_flag=True, help="Run the training net through torch.compile.")
@click.option("--compile-backend", default="inductor", show_default=True,
              help="torch.compile backend for --compile (aot_eager: graph capture without code generation).")
@click.option("--workers", type=int, default=None,
              help="Data-loading worker processes per rank (default: the usable cores of this node, shared by "
                   "its ranks, less one).")
@click.option("--labels", type=click.Choice(["auto", "workers", "device"]), default="auto", show_default=True,
              help="Where OPData labels are rendered: device = per batch on the training device (labels_torch), "
                   "workers = numpy in the workers; auto = device on CUDA, workers on the CPU.")
@click.option("--log", "log_file", default=None, help="Also append the glog-style log to this file.")
@click.option("--metrics", default=None, help="JSONL metrics file (default <snapshot_prefix>_metrics.jsonl).")
@click.option("--model-yaml", "model_yamls", multiple=True, type=click.Path(dir_okay=False),
              help="Custom skeleton YAML whose training model strings the data layer reads (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar (or progress lines).")
@click.option("--progress-interval", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between progress lines when stderr is not a terminal (e.g. piped through tee).")
@click.option("--val-images", default=None, type=click.Path(file_okay=False),
              help="Held-out image folder scored every --val-interval iterations (with --val-annotations).")
@click.option("--val-annotations", default=None, type=click.Path(dir_okay=False),
              help="COCO keypoint JSON of --val-images.")
@click.option("--val-interval", type=int, default=None,
              help="Score the weights every N iterations (after the snapshot); keeps <prefix>_best.caffemodel.")
@click.option("--val-metric", default="body", show_default=True,
              help="What is scored and kept best: body, foot, wholebody (COCO OKS AP), hand (PCK@0.2), "
                   "face (NME, lower is better).")
@click.option("--val-net-resolution", default="-1x368", show_default=True, help="Validation net input size.")
@click.option("--val-deploy", default=None, type=click.Path(dir_okay=False),
              help="Deploy prototxt (default: pose_deploy.prototxt beside the training net).")
@click.option("--val-model", default=None,
              help="Registry model of the outputs (default: from the OPData layer's model string).")
@click.option("--val-limit", type=int, default=None, help="Score only the first N validation images.")
@click.option("--val-mode", type=click.Choice(["auto", "inline", "background"]), default="auto", show_default=True,
              help="inline: between iterations; background: an 'openpose-train validate' process; "
                   "auto: background on CUDA, inline on the CPU.")
@click.option("--no-tensorboard", is_flag=True,
              help="No TensorBoard event files (default: <snapshot_prefix>_tensorboard/).")
@click.option("--tensorboard-maps-every", type=int, default=1, show_default=True,
              help="Predicted heatmaps/PAFs on the first validation image every K snapshots (0: never).")
@reports_errors
def train(solver, weights, snapshot, gpu, iterations, sigint_effect, sighup_effect, reinit_mismatched, backend,
          bf16, channels_last, compile_net, compile_backend, workers, labels, log_file, metrics, model_yamls, no_progress,
          progress_interval, val_images, val_annotations, val_interval, val_metric, val_net_resolution, val_deploy,
          val_model, val_limit, val_mode, no_tensorboard, tensorboard_maps_every):
    """Train a net like `caffe train` (same flags), writing Caffe snapshots.

    \b
    Paths in the solver (net:, snapshot_prefix) are relative to the current directory, as in Caffe.
    Without -gpu, the solver's solver_mode/device_id choose the device (CPU when CUDA is absent).
    Several machines: torchrun --nnodes N --nproc_per_node G -m openpose_train.cli train -solver S -gpu all
    """
    backend = backend or ("caffe" if os.environ.get("CAFFE") else "torch")
    weight_list = [w for w in weights.split(",") if w]
    lock = None
    try:
        if snapshot and weight_list:
            raise TrainingError("give -snapshot to resume training or -weights to fine-tune, not both")
        if snapshot:
            from .loop import check_resume_file

            check_resume_file(snapshot)
        evaluation = _evaluation_config(val_images, val_annotations, val_interval, val_metric, val_net_resolution,
                                        val_deploy, val_model, val_limit, val_mode)
        if backend == "caffe" and evaluation is not None:
            raise TrainingError("--val-* (evaluation during training) needs the torch backend; with Caffe, "
                                "run 'openpose-train validate-snapshots' on its snapshots")
        check_skeletons_first(solver, model_yamls)
        lock = take_snapshot_lock(solver, resuming=bool(snapshot), metrics=metrics)
        if backend == "caffe":
            from .caffe_backend import run_caffe

            rc = run_caffe(solver=solver, weights=weight_list, snapshot=snapshot or None, gpu=gpu,
                           iterations=iterations, sigint_effect=sigint_effect, sighup_effect=sighup_effect,
                           log_file=log_file, metrics=metrics, progress=not no_progress)
            if rc != 0:
                raise click.ClickException(f"caffe exited with status {rc}")
            return
        cfg = TrainConfig(solver=solver, weights=weight_list, reinit_mismatched=reinit_mismatched,
                          snapshot=snapshot or None, gpus=parse_gpus(gpu),
                          iterations=iterations, sigint_effect=sigint_effect, sighup_effect=sighup_effect,
                          bf16=bf16, channels_last=channels_last, compile=compile_net,
                          compile_backend=compile_backend, workers=workers, labels=labels, log_file=log_file,
                          metrics=metrics, progress=not no_progress, progress_interval=progress_interval,
                          evaluation=evaluation, tensorboard=not no_tensorboard,
                          tensorboard_maps_every=tensorboard_maps_every, model_yamls=list(model_yamls))
        from . import distributed

        if len(cfg.gpus) > 1 and not distributed.launched_by_torchrun():
            click.echo(f"spawning {len(cfg.gpus)} worker processes (one per GPU); for several machines use "
                       f"torchrun --nnodes ... -m openpose_train.cli train ...", err=True)
            try:
                distributed.spawn(_worker, len(cfg.gpus), (cfg,))
            except distributed.SpawnedRankFailed as exc:
                if exc.reported:                # a rank printed its own line
                    raise click.exceptions.Exit(1) from None
                raise
        else:
            run_training(cfg)
    finally:
        if lock is not None:
            lock.release()
