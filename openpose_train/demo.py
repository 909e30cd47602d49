"""``make demo``: the whole chain on a synthetic dataset, end to end, on a CPU in minutes.

    python -m openpose_train.demo --out out/demo [--images N] [--iterations N] [--quick]

Steps (from step 2 on, each one a real ``openpose-train`` command run in a subprocess, so the demo
proves the commands a user types; its output goes to ``OUT/logs/<step>.log``):

1. synthetic COCO-format stick-figure dataset, train + held-out val split (``dataset_tools.synth``)
2. ``lmdb``      the training images to an OpenPose LMDB
3. ``prototxt``  training files for BODY_25 topology with the reduced ``tiny`` preset, plus
   He-initialised starting weights (what VGG-19 weights are in the real workflow)
4. ``train -weights --val-interval``  our Caffe-compatible engine on the CPU (a progress bar follows
   the metrics file); every snapshot is scored on the held-out images during training and the best
   one is kept (``pose_best.caffemodel`` + ``pose_best.json``)
5. ``export --best``  the best snapshot into an OpenPose ``models/`` folder
6. OpenCV DNN loads the export; its output is compared with our engine's
7. ``validate``  COCO keypoint AP of the export on the held-out images (it must equal the score
   training logged for that snapshot) and of the random initial weights (the baseline), with the
   AP / loss plot; then a summary of where everything landed

Measured (2 shared CPU cores), before evaluation during training replaced ``validate-snapshots`` (the
same number of evaluations): 4.5 min for the defaults, training 255 s; AP 0.586 (AP50 0.917) of the
last snapshot on the held-out images vs 0.000 with the initial weights. Re-running overwrites the demo's own
sub-folders of ``--out`` (nothing else there is touched).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click

from openpose_train.common.files import write_atomic
from openpose_train.common.errors import OpenPoseTrainError, reports_errors
from openpose_train.common.processes import signal_on_parent_death

MODEL = "BODY_25"
PRESET = "tiny"          # the default; `make demo PRESET=mobilenet_v2` trains the light model instead
# What re-running removes inside --out (the demo's own outputs only).
DEMO_FOLDERS = ("data", "lmdb_coco", "model", "openpose_models", "validation", "logs")
DEMO_FILES = ("demo_summary.json",)


class DemoError(OpenPoseTrainError, RuntimeError):
    """A demo step failed; the message names the step and its log file."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything that shapes the demo run (the defaults are the tuned `make demo`)."""

    images: int = 480                 # synthetic images in total (train + val)
    val_fraction: float = 0.125       # held-out share for validation
    image_size: int = 192             # synthetic images are image_size x image_size
    max_people: int = 3
    person_height: Tuple[float, float] = (0.4, 0.75)   # fraction of the image height
    seed: int = 0
    crop: int = 128                   # training crop (multiple of 8)
    batch_size: int = 8
    iterations: int = 3000
    base_lr: Optional[float] = None   # Adam; None: the preset's Recipe.demo_base_lr (tiny: 1e-3, 3e-3 diverges)
    lr_drop_at: float = 2 / 3         # multistep: lr * lr_drop_gamma from this share of the iterations on
    lr_drop_gamma: float = 0.3
    snapshot_interval: int = 500      # every snapshot is validated during training (--val-interval)
    scale_min: float = 1.0            # OPData scale multiplier range (person height ~ 0.6 * crop * mult,
    scale_max: float = 1.8            # i.e. 77-138 px, the size of the validation people at -1x192)
    max_rotation: float = 20.0
    occlusions: int = 0               # OPData's random background patches over people (the preset: 2)
    net_resolution: str = "-1x192"    # validation input (the synthetic images' own size)
    min_ap_gain: float = 0.25         # trained AP must beat the random-weights AP by this much
                                      # (measured: 0.58 vs 0.00 with these defaults)
    check_learning: bool = True
    threads: Optional[int] = None     # torch threads for training (None: torch's default)
    preset: str = PRESET              # generator preset of the trained network


QUICK = DemoConfig(images=24, val_fraction=0.25, image_size=160, max_people=2, batch_size=2, iterations=4,
                   snapshot_interval=2, net_resolution="-1x160", check_learning=False)


@dataclass(frozen=True)
class DemoPaths:
    """Where each step writes, under ``--out``."""

    out: Path
    data: Path
    lmdb: Path
    model: Path
    snapshots: Path
    openpose_models: Path
    initial_weights: Path
    logs: Path
    metrics: Path
    validation: Path
    summary: Path
    val_images: Path
    val_annotations: Path

    @classmethod
    def under(cls, out) -> "DemoPaths":
        out = Path(out)
        return cls(out=out, data=out / "data", lmdb=out / "lmdb_coco", model=out / "model",
                   snapshots=out / "model" / "snapshots", openpose_models=out / "openpose_models",
                   initial_weights=out / "model" / "initial_weights.caffemodel", logs=out / "logs",
                   metrics=out / "model" / "snapshots" / "pose_metrics.jsonl", validation=out / "validation",
                   summary=out / "demo_summary.json", val_images=out / "data" / "val2017",
                   val_annotations=out / "data" / "annotations" / "person_keypoints_val2017.json")


# ------------------------------------------------------------------------------------------ output
class Reporter:
    """Step headers with timings on stdout; the demo's own voice."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stdout
        self.index = 0
        self.started = time.perf_counter()
        self._step_start = None
        self.timings: Dict[str, float] = {}
        self._name = None

    def step(self, name: str, title: str) -> None:
        self._finish()
        self.index += 1
        self._name = name
        self._step_start = time.perf_counter()
        self.echo(f"\n[{self.index}/{self.total}] {title}")

    def _finish(self) -> None:
        if self._name is not None:
            dt = time.perf_counter() - self._step_start
            self.timings[self._name] = round(dt, 2)
            self.echo(f"      done in {dt:.1f} s")
            self._name = None

    def close(self) -> float:
        self._finish()
        return time.perf_counter() - self.started

    def echo(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _cli(*args: str) -> List[str]:
    """The ``openpose-train`` command line, run with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "openpose_train.cli", *[str(a) for a in args]]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_command(name: str, args: Sequence[str], log: Path, cwd: Optional[Path] = None,
                env: Optional[dict] = None, show: bool = True, on_poll=None) -> str:
    """Run one command with stdout+stderr into ``log``; return its stdout text.

    ``on_poll`` (called about twice a second while it runs) drives progress bars. A non-zero exit
    raises :class:`DemoError` with the log's tail.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, **(env or {}))
    with open(log, "w") as f:
        f.write("$ " + " ".join(str(a) for a in args) + "\n")
        f.flush()
        # a demo killed (timeout, kill -9) takes its step with it: no training left running unseen
        proc = subprocess.Popen(list(args), cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=signal_on_parent_death(signal.SIGTERM))
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if on_poll is not None:
                        on_poll()
        except KeyboardInterrupt:
            proc.terminate()       # the train command snapshots on SIGTERM; give it a moment
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if on_poll is not None:
        on_poll()
    text = log.read_text(errors="replace")
    if rc != 0:
        raise DemoError(f"step '{name}' failed (exit status {rc}); log: {log}\n{_tail(log)}")
    if show:
        for line in text.splitlines()[1:]:
            if line.strip():
                print("      " + line, flush=True)
    return text


# ------------------------------------------------------------------------------------------ steps
def clean_outputs(paths: DemoPaths) -> None:
    """Remove the demo's previous outputs (only its own folders and files)."""
    for name in DEMO_FOLDERS:
        shutil.rmtree(paths.out / name, ignore_errors=True)
    for name in DEMO_FILES:
        (paths.out / name).unlink(missing_ok=True)
    paths.out.mkdir(parents=True, exist_ok=True)


def make_dataset(paths: DemoPaths, cfg: DemoConfig) -> None:
    """The synthetic dataset through the Python API (the ``synth`` command has no person-size flags)."""
    from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset

    config = SynthConfig(images=cfg.images, seed=cfg.seed, width=cfg.image_size, height=cfg.image_size,
                         max_people=cfg.max_people, val_fraction=cfg.val_fraction,
                         min_person_height=cfg.person_height[0], max_person_height=cfg.person_height[1])
    result = make_synthetic_dataset(paths.data, config, progress=sys.stderr.isatty())
    for split in result.splits:
        print(f"      {split}: {result.num_images[split]} images in {result.image_dirs[split]}", flush=True)
    print(f"      {result.num_people} people", flush=True)


def make_lmdb(paths: DemoPaths, cfg: DemoConfig) -> None:
    run_command("lmdb", _cli("lmdb", "--json", paths.data / "annotations" / "person_keypoints_train2017.json",
                             "--images", paths.data / "train2017", "--out", paths.lmdb, "--dataset", "coco",
                             "--seed", cfg.seed, "--workers", 1, "--overwrite", "--quiet"),
                paths.logs / "lmdb.log")


def demo_base_lr(cfg: DemoConfig) -> float:
    """The demo's learning rate: ``cfg.base_lr``, else the preset's measured one (its recipe)."""
    if cfg.base_lr is not None:
        return cfg.base_lr
    from openpose_train.generator.families import PRESETS

    preset = PRESETS.get(cfg.preset)
    if preset is None:
        raise DemoError(f"--preset {cfg.preset}: no such generator preset (python generate_prototxt.py --help)")
    return preset.recipe.demo_base_lr


def make_training_files(paths: DemoPaths, cfg: DemoConfig) -> Dict[str, Path]:
    run_command("prototxt", _cli(
        "prototxt", "--model", MODEL, "--preset", cfg.preset, "--out", paths.model,
        "--crop-size", cfg.crop, "--batch-size", cfg.batch_size, "--lmdb", paths.lmdb.resolve(),
        "--scale-min", cfg.scale_min, "--scale-max", cfg.scale_max, "--max-rotation", cfg.max_rotation,
        "--occlusions", cfg.occlusions,
        "--base-lr", demo_base_lr(cfg), "--lr-policy", "multistep",
        "--stepvalue", max(1, int(cfg.iterations * cfg.lr_drop_at)), "--gamma", cfg.lr_drop_gamma, "--max-iter", cfg.iterations,
        "--snapshot-interval", cfg.snapshot_interval, "--snapshot-prefix", (paths.snapshots / "pose").resolve(),
        "--display", max(1, min(50, cfg.iterations // 10)), "--gpus", "", "--vgg-weights", ""),
        paths.logs / "prototxt.log")
    files = {"deploy": paths.model / "pose_deploy.prototxt", "training": paths.model / "pose_training.prototxt",
             "solver": paths.model / "pose_solver.prototxt"}
    for kind, path in files.items():
        if not path.is_file():
            raise DemoError(f"step 'prototxt' did not write the {kind} file {path}")
    write_initial_weights(files["deploy"], paths.initial_weights, cfg.seed)
    print(f"      initial weights (He initialisation, seed {cfg.seed}): {paths.initial_weights}", flush=True)
    return files


def _read_metrics(path: Path) -> List[dict]:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass        # a line being written
    except OSError:
        pass
    return rows


def train(paths: DemoPaths, cfg: DemoConfig) -> Path:
    """Train with ``openpose-train train``; a bar follows the JSONL metrics. Returns the last caffemodel."""
    from tqdm import tqdm

    paths.metrics.unlink(missing_ok=True)
    bar = tqdm(total=cfg.iterations, unit="it", desc="      train", dynamic_ncols=True, file=sys.stderr,
               disable=None, mininterval=1.0)
    state = {"done": 0, "last_print": time.perf_counter()}

    def poll():
        rows = [r for r in _read_metrics(paths.metrics) if "loss" in r]   # not the validation records
        if not rows:
            return
        done = rows[-1]["iteration"] + 1
        if done > state["done"]:
            bar.update(done - state["done"])
            state["done"] = done
            bar.set_postfix(loss=f"{rows[-1]['smoothed_loss']:.4g}", refresh=False)
            if bar.disable and time.perf_counter() - state["last_print"] > 30:   # not a terminal
                print(f"      iteration {done}/{cfg.iterations}, loss {rows[-1]['smoothed_loss']:.4g}", flush=True)
                state["last_print"] = time.perf_counter()

    env = {"OMP_NUM_THREADS": str(cfg.threads)} if cfg.threads else None
    try:
        run_command("train", _cli("train", "-solver", "pose_solver.prototxt", "-weights", paths.initial_weights.resolve(),
                                  "--workers", 1, "--val-images", paths.val_images.resolve(),
                                  "--val-annotations", paths.val_annotations.resolve(),
                                  "--val-interval", cfg.snapshot_interval, "--val-net-resolution", cfg.net_resolution),
                    paths.logs / "train.log", cwd=paths.model, env=env, show=False, on_poll=poll)
    finally:
        bar.close()
    rows = _read_metrics(paths.metrics)
    losses = [r for r in rows if "loss" in r]
    if losses:
        print(f"      loss {losses[0]['loss']:.4g} (iteration 0) -> {losses[-1]['smoothed_loss']:.4g} "
              f"(iteration {losses[-1]['iteration']}, smoothed); log {paths.logs / 'train.log'}", flush=True)
    for r in rows:
        if "validation" in r:
            v = r["validation"]
            print(f"      iteration {r['iteration']:>5}: AP {v['AP']:.3f}  AP50 {v['AP50']:.3f}  AR {v['AR']:.3f}"
                  f"  (best so far: iteration {v['best_iteration']})", flush=True)
    best = paths.snapshots / "pose_best.json"
    if not best.is_file():
        raise DemoError(f"training finished without {best}; log: {paths.logs / 'train.log'}")
    return best


def export(paths: DemoPaths, net_resolution: str) -> dict:
    """``export --best``: the best snapshot of the training folder into the OpenPose models folder."""
    text = run_command("export", _cli("export", "--best", paths.snapshots, "--model", MODEL,
                                      "--deploy", paths.model / "pose_deploy.prototxt",
                                      "--to", paths.openpose_models, "--net-resolution", net_resolution),
                       paths.logs / "export.log")
    from openpose_train.generator.registry import get_model

    model = get_model(MODEL)
    folder = paths.openpose_models / model.model_folder
    result = {"prototxt": folder / model.deploy_name, "caffemodel": folder / model.caffemodel_name,
              "command": next((ln.strip() for ln in text.splitlines() if "openpose.bin" in ln), "")}
    for key in ("prototxt", "caffemodel"):
        if not result[key].is_file():
            raise DemoError(f"step 'export' did not write {result[key]}")
    return result


def compare_opencv(prototxt: Path, caffemodel: Path, image_path: Path, net_resolution: str) -> dict:
    """OpenCV DNN and our engine on one preprocessed val image: max |difference| of ``net_output``."""
    import cv2
    import numpy as np

    from openpose_train.validation.inference import (OpenCVBackend, TorchBackend, net_input_size,
                                                     parse_net_resolution, preprocess)
    image = cv2.imread(str(image_path))
    if image is None:
        raise DemoError(f"cannot read {image_path}")
    size = net_input_size((image.shape[1], image.shape[0]), parse_net_resolution(net_resolution))
    x = preprocess(image, size)[0][None]
    ours = TorchBackend(prototxt, caffemodel, device="cpu").forward(x)
    theirs = OpenCVBackend(prototxt, caffemodel).forward(x)
    diff = float(np.abs(ours - theirs).max())
    return {"max_abs_diff": diff, "output_shape": list(ours.shape), "max_abs_output": float(np.abs(ours).max()),
            "image": str(image_path)}


def write_initial_weights(deploy: Path, path: Path, seed: int) -> Path:
    """He-initialised weights for every convolution: the demo's stand-in for the VGG-19 start.

    Written to a file (rather than left to the prototxt's fillers) so that the same weights are
    also validated: the random-weights AP baseline. Convolutions feeding a
    ReLU/PReLU/Clip (through their BatchNorm+Scale, in place) get std sqrt(2 / fan_in), the others (the
    stage outputs) a small sqrt(1 / fan_in) / 10 so that the first predictions are near 0. BatchNorm
    statistics start as an untrained Caffe layer's would be used: mean 0, variance 1, factor 1.
    """
    import numpy as np

    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.net import CaffeNet

    net_param = caffe_io.read_net_prototxt(str(deploy))
    rectified = {layer.bottom[0] for layer in net_param.layer if layer.type in ("ReLU", "PReLU", "Clip")}
    batch_norms = {layer.name for layer in net_param.layer if layer.type == "BatchNorm"}
    conv_tops = {layer.name: layer.top[0] for layer in net_param.layer if layer.type == "Convolution"}
    rng = np.random.default_rng(seed)
    weights = CaffeNet(net_param, phase="TEST", seed=seed).caffe_weights()
    for name, blobs in weights.items():
        if name in batch_norms:
            weights[name] = [np.zeros_like(blobs[0]), np.ones_like(blobs[1]), np.ones_like(blobs[2])]
            continue
        if name not in conv_tops:
            continue                      # PReLU slopes and Scale layers keep their filler values
        fan_in = int(np.prod(blobs[0].shape[1:]))
        std = np.sqrt(2.0 / fan_in) if conv_tops[name] in rectified else 0.1 * np.sqrt(1.0 / fan_in)
        blobs[0] = rng.normal(0.0, std, blobs[0].shape).astype(np.float32)
        for b in blobs[1:]:
            b[...] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    caffe_io.write_caffemodel(str(path), weights, net=net_param)
    return path


def _validate_args(paths: DemoPaths, cfg: DemoConfig) -> List[str]:
    return ["--model", MODEL, "--images", paths.val_images, "--annotations", paths.val_annotations,
            "--net-resolution", cfg.net_resolution, "--backend", "torch", "--device", "cpu", "--quiet"]


def validate_model(paths: DemoPaths, cfg: DemoConfig, name: str, model_args: Sequence, **extra) -> dict:
    """``openpose-train validate`` of one model on the held-out images; returns its summary JSON."""
    results = paths.validation / f"results_{name}.json"
    run_command(f"validate {name}", _cli("validate", *model_args, *_validate_args(paths, cfg), "--out", results,
                                         *[a for k, v in extra.items() for a in (f"--{k}", v)]),
                paths.logs / f"validate_{name}.log", show=False)
    return json.loads(results.with_name(results.stem + "_summary.json").read_text())


def ap_curve(paths: DemoPaths, random_stats: dict) -> List[dict]:
    """AP per validated iteration: the random weights at 0, then every evaluation training logged
    in its metrics JSONL (each row with all of its summary's numbers)."""
    from openpose_train.validation.runner import ap_table_row, summary_path_for

    curve = [ap_table_row(0, random_stats)]
    for record in _read_metrics(paths.metrics):
        if "validation" in record:
            summary = json.loads(Path(summary_path_for(record["validation"]["results"])).read_text())
            curve.append(ap_table_row(record["iteration"], summary))
    return curve


def plot_curve(paths: DemoPaths, curve: List[dict]) -> Path:
    from openpose_train.validation.plots import plot_ap_and_loss, read_loss_curve

    png = paths.validation / "ap_vs_iteration.png"
    plot_ap_and_loss(curve, {"training loss": read_loss_curve(str(paths.metrics))}, str(png),
                     title=f"{MODEL}: COCO keypoint AP during training (iteration 0: initial weights)")
    return png


def _write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def run_demo(out, cfg: DemoConfig = DemoConfig(), stream=None) -> dict:
    """Run every step into ``out``; returns the summary (also written to ``out/demo_summary.json``).

    Raises :class:`DemoError` when a step fails or, with ``cfg.check_learning``, when the trained
    network is not clearly better than the same network with random weights.
    """
    cfg = replace(cfg, base_lr=demo_base_lr(cfg))      # checked before any step; the summary holds it
    paths = DemoPaths.under(out)
    rep = Reporter(total=7, stream=stream)
    rep.echo(f"openpose-train demo: {MODEL} topology (preset {cfg.preset}) on {cfg.images} synthetic images, "
             f"{cfg.iterations} iterations -> {paths.out}")
    clean_outputs(paths)

    rep.step("synth", f"Synthetic COCO-format dataset: {cfg.images} images of {cfg.image_size}x{cfg.image_size} "
                      f"px, up to {cfg.max_people} people, {cfg.val_fraction:.0%} held out for validation")
    make_dataset(paths, cfg)

    rep.step("lmdb", "Training images -> OpenPose LMDB (datum: image | metadata | mask_miss)")
    make_lmdb(paths, cfg)

    rep.step("prototxt", f"Training files for {MODEL} (preset {cfg.preset}, crop {cfg.crop}, batch {cfg.batch_size})")
    files = make_training_files(paths, cfg)

    rep.step("train", f"Training {cfg.iterations} iterations on the CPU with our engine "
                      f"(openpose-train train -solver pose_solver.prototxt)")
    best_json = train(paths, cfg)
    best = json.loads(best_json.read_text())

    rep.step("export", f"Export the best snapshot (iteration {best['iteration']}, AP {best['score']:.3f}) to an "
                       f"OpenPose models folder: {paths.openpose_models}")
    exported = export(paths, cfg.net_resolution)

    rep.step("opencv", "OpenCV DNN (cv2.dnn.readNetFromCaffe) loads the export; output vs our engine")
    first_val = sorted(paths.val_images.glob("*.jpg"))
    if not first_val:
        raise DemoError(f"no validation images in {paths.val_images}")
    parity = compare_opencv(exported["prototxt"], exported["caffemodel"], first_val[0], cfg.net_resolution)
    rep.echo(f"      net_output {parity['output_shape']}: max |OpenCV - engine| = {parity['max_abs_diff']:.2e} "
             f"(outputs up to {parity['max_abs_output']:.3g})")
    if parity["max_abs_diff"] > 1e-4:
        raise DemoError(f"OpenCV's output differs from the engine's by {parity['max_abs_diff']:.3g} (> 1e-4) "
                        f"on {parity['image']}")

    rep.step("validate", f"COCO keypoint AP on the {paths.val_images} images (net resolution "
                         f"{cfg.net_resolution}): the exported best snapshot, and the random initial weights")
    trained = validate_model(paths, cfg, "exported", ["--model-folder", paths.openpose_models],
                             render=paths.validation / "rendered")
    random_stats = validate_model(paths, cfg, "initial_weights", [
        "--prototxt", paths.model / "pose_deploy.prototxt", "--caffemodel", paths.initial_weights])
    if abs(trained["AP"] - best["score"]) > 0.005:      # same weights; only float summation order may differ
        raise DemoError(f"the exported best snapshot scores AP {trained['AP']:.6f}, training logged "
                        f"{best['score']:.6f} for iteration {best['iteration']}")
    curve = ap_curve(paths, random_stats)
    if curve[-1]["iteration"] != cfg.iterations:
        raise DemoError(f"training did not validate its last iteration: {[r['iteration'] for r in curve]}")
    rep.echo(f"      exported best snapshot (iteration {best['iteration']}): AP {trained['AP']:.3f}  "
             f"AP50 {trained['AP50']:.3f}  AR {trained['AR']:.3f}  (random initial weights: AP {random_stats['AP']:.3f})")
    plot = plot_curve(paths, curve)
    total = rep.close()
    summary = {
        "model": MODEL, "preset": cfg.preset, "config": asdict(cfg), "wall_s": round(total, 1),
        "step_s": rep.timings, "openpose_models": paths.openpose_models, "prototxt": exported["prototxt"],
        "caffemodel": exported["caffemodel"], "openpose_command": exported["command"],
        "opencv_parity": parity, "trained": trained, "random_weights": random_stats, "ap_curve": curve,
        "best": best,
        "plot": plot, "rendered": paths.validation / "rendered", "logs": paths.logs,
        "training_log": paths.logs / "train.log", "metrics": paths.metrics, "snapshots": paths.snapshots,
    }
    learned = trained["AP"] >= random_stats["AP"] + cfg.min_ap_gain
    summary["learned"] = learned
    _write_json(paths.summary, summary)
    rep.echo(f"\nDone in {total / 60:.1f} min. Everything is under {paths.out}:")
    rep.echo(f"  OpenPose model folder  {paths.openpose_models}  ({exported['caffemodel'].relative_to(paths.out)})")
    rep.echo(f"  COCO AP (held out)     {trained['AP']:.3f} (best snapshot, iteration {best['iteration']} of "
             f"{cfg.iterations})  vs  {random_stats['AP']:.3f} with the random initial weights")
    rep.echo(f"  TensorBoard            tensorboard --logdir {paths.snapshots}")
    rep.echo(f"  loss / AP plot         {plot}")
    rep.echo(f"  detections drawn       {paths.validation / 'rendered'}")
    rep.echo(f"  training log, metrics  {paths.logs / 'train.log'}, {paths.metrics}")
    rep.echo(f"  snapshots              {paths.snapshots}")
    rep.echo(f"  summary                {paths.summary}")
    rep.echo("Run it with OpenPose (CPU or GPU build):")
    rep.echo(f"  {exported['command']}")
    if cfg.check_learning and not learned:
        raise DemoError(f"the network did not learn: AP {trained['AP']:.3f} is not {cfg.min_ap_gain} above the "
                        f"random-weights AP {random_stats['AP']:.3f}; see {plot} and {paths.logs / 'train.log'}")
    return summary


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (its demo sub-folders are replaced on every run).")
@click.option("--images", type=click.IntRange(min=8), help=f"Synthetic images [{DemoConfig.images}].")
@click.option("--iterations", type=click.IntRange(min=1), help=f"Training iterations [{DemoConfig.iterations}].")
@click.option("--quick", is_flag=True, help="A seconds-long smoke run (tiny data, a few iterations; "
              "no learning check).")
@click.option("--preset", default=PRESET, show_default=True,
              help="Generator preset of the trained network, e.g. mobilenet_v2 (the light model).")
@reports_errors
def main(out, images, iterations, quick, preset):
    """Run the whole openpose-train chain on a synthetic dataset and print where everything landed."""
    cfg = replace(QUICK if quick else DemoConfig(), preset=preset)
    if images:
        cfg = replace(cfg, images=images)
    if iterations:
        cfg = replace(cfg, iterations=iterations, snapshot_interval=max(1, min(cfg.snapshot_interval,
                                                                                iterations)))
    run_demo(out, cfg)


if __name__ == "__main__":
    main()
