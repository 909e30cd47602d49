"""End-to-end training throughput: `openpose-train train` on a synthetic LMDB (data + labels + forward +
backward + update) against the engine alone on a fixed batch, measured in the same run.

A synthetic COCO-format dataset (640x480, up to 6 people) becomes a raw-datum LMDB and a background
LMDB; `openpose-train prototxt --model BODY_25` writes each case's net (``--preset tiny`` or
``--preset body_25``, with those LMDBs). Then, per case:

* ``pipeline_images_per_s``: `openpose-train train --workers W` run as a subprocess, as a user runs it;
  images/s from its metrics file (``time`` per iteration) after the warm-up iterations, for W = 1, 2
  and all usable cores (``os.sched_getaffinity``). ``baseline``: ``engine_images_per_s`` of the same run;
  ``ratio`` = pipeline / engine (target >= 0.95: data never the bottleneck), ``data_wait_pct`` beside it.
* ``engine_images_per_s``: the same net, solver and training loop in this process on one fixed OPData
  batch (no data reading): the ceiling the pipeline can reach; run before and after the pipeline runs
  (``before``, ``after``), the better one reported.
* ``data_wait_pct``: 100 x the time the loop spent obtaining batches (metrics ``data_wait_s``) over the
  wall time of the same iterations.
* the step runs on ``--threads`` torch threads (default 1 on the CPU) in both, so the workers have the
  other cores;
* ``samples_per_s_per_core`` (``BODY_25,crop=368,batch=10,cpu``): the OPData layer alone of the generated
  BODY_25 net (368x368, the preset's default augmentation, background LMDB) with one worker per
  usable core, samples/s divided by the cores; ``baseline``: the same layer in the calling process
  (``num_workers=0``, one core).

CPU cases: ``tiny,crop=128,batch=8,cpu`` and ``BODY_25,crop=184,batch=2,cpu``. ``--device cuda``: BODY_25
368 batch 10, fp32 / bf16 / bf16+channels_last / bf16+channels_last+compile with labels on the GPU, and
fp32 with the workers' CPU labels; a 2-process DDP run (``-gpu 0,1``) when two GPUs are visible.

    python benchmarks/train_throughput.py [--quick] [--device cpu|cuda]

``--quick``: a smoke run (few iterations, one worker count, smaller dataset and data-layer batch).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_RATIO = 0.95


def emit(bench, case, value, unit, baseline, baseline_name, **extra):
    print(json.dumps({"bench": bench, "case": case, "value": round(value, 4), "unit": unit,
                      "baseline": None if baseline is None else round(baseline, 4), "baseline_name": baseline_name,
                      **extra}), flush=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cli(*args, cwd=None):
    """`openpose-train ARGS` in a subprocess (what a user runs); stops the benchmark on failure."""
    cmd = [sys.executable, "-m", "openpose_train.cli"] + [str(a) for a in args]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd[2:])} failed:\n{run.stderr[-3000:]}")
    return run


def make_lmdbs(tmp: Path, images: int):
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
    from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset
    res = make_synthetic_dataset(tmp / "data", SynthConfig(images=images, width=640, height=480, max_people=6,
                                                          seed=0))
    json_path, folder = res.splits["train2017"], res.image_dirs["train2017"]
    build_lmdb(json_path, folder, tmp / "lmdb_coco", BuildOptions(workers=1, progress=False))
    build_lmdb(json_path, folder, tmp / "lmdb_background", BuildOptions(workers=1, progress=False, background=True))
    return tmp / "lmdb_coco", tmp / "lmdb_background"


def make_net(tmp: Path, name: str, preset: str, crop: int, batch: int, lmdbs, iterations: int) -> Path:
    out = tmp / name
    args = ["prototxt", "--model", "BODY_25", "--preset", preset, "--out", out, "--batch-size", batch,
            "--lmdb", lmdbs[0], "--background-lmdb", lmdbs[1], "--no-vgg", "--display", 0,
            "--snapshot-interval", 0, "--max-iter", iterations, "--random-seed", 1, "--base-lr", 1e-5]
    if crop:
        args += ["--crop-size", crop]
    cli(*args)
    solver = out / "pose_solver.prototxt"
    solver.write_text(solver.read_text() + "snapshot_after_train: false\n")
    return out


def steady_rate(metrics_path: Path, batch: int, warmup: int):
    """(images/s, data-wait %) over the iterations after ``warmup`` (per-iteration ``time`` stamps)."""
    records = [json.loads(line) for line in open(metrics_path) if line.strip()]
    records = [r for r in records if "loss" in r]
    if len(records) <= warmup + 1:
        raise SystemExit(f"{metrics_path}: {len(records)} iterations, need more than {warmup + 1}")
    timed = records[warmup + 1:]
    elapsed = timed[-1]["time"] - records[warmup]["time"]
    wait = sum(r.get("data_wait_s", 0.0) for r in timed)
    return batch * len(timed) / elapsed, 100.0 * wait / elapsed


def train_pipeline(net_dir: Path, workers: int, iterations: int, flags=()):
    metrics = net_dir / f"metrics_w{workers}_{'_'.join(f.strip('-') for f in flags) or 'plain'}.jsonl"
    if metrics.exists():
        metrics.unlink()
    cli("train", "-solver", "pose_solver.prototxt", "-iterations", iterations, "--workers", workers,
        "--no-progress", "--no-tensorboard", "--metrics", metrics, *flags, cwd=net_dir)
    return metrics


class FixedBatch:
    """A BatchSource returning one batch forever (the engine alone)."""

    def __init__(self, batch):
        self.batch = batch

    def next_batch(self):
        return self.batch

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def close(self):
        pass


def engine_alone(net_dir: Path, iterations: int, device="cpu", bf16=False, channels_last=False, compile_net=False):
    """The training loop of `train` on one fixed OPData batch, in this process; returns the metrics path."""
    import torch
    from openpose_train.caffe_layers.net import CaffeNet, configure_precision
    from openpose_train.caffe_layers.op_data import OPDataSource
    from openpose_train.training.cli import load_solver, train_net_param
    from openpose_train.training.data_sources import known_input_shapes
    from openpose_train.training.logging_utils import GlogLogger
    from openpose_train.training.loop import Trainer, TrainOptions

    solver_path = net_dir / "pose_solver.prototxt"
    sp = load_solver(str(solver_path))
    net_param, _ = train_net_param(sp, str(solver_path))
    sp.max_iter, sp.snapshot, sp.snapshot_after_train, sp.display = iterations, 0, False, 0
    net = CaffeNet(net_param, "TRAIN", seed=1, input_shapes=known_input_shapes(net_param, "TRAIN"))
    with OPDataSource(net.data_layers[0], seed=1, num_workers=0) as src:
        batch = {k: v.to(device) for k, v in next(src).items()}
    configure_precision(net, torch.device(device), bf16=bf16, channels_last=channels_last)
    metrics = net_dir / f"engine_{int(bf16)}{int(channels_last)}{int(compile_net)}.jsonl"
    if metrics.exists():
        metrics.unlink()
    options = TrainOptions(progress=False, install_signal_handlers=False, metrics_path=str(metrics),
                           compile=compile_net, tensorboard=False)
    Trainer(sp, net, [FixedBatch(batch)], options=options, device=torch.device(device),
            logger=GlogLogger(enabled=False)).solve()
    return metrics


def bench_case(case, net_dir, batch, iterations, warmup, worker_counts):
    """The engine alone before and after the pipeline runs (the better of the two is the ceiling: a busy
    machine slows one or the other), then `train` per worker count."""
    before, _ = steady_rate(engine_alone(net_dir, iterations), batch, warmup)
    results = []
    for workers in worker_counts:
        rate, wait_pct = steady_rate(train_pipeline(net_dir, workers, iterations), batch, warmup)
        results.append((workers, rate, wait_pct, round(os.getloadavg()[0], 2)))
    after, _ = steady_rate(engine_alone(net_dir, iterations), batch, warmup)
    engine = max(before, after)
    emit("engine_images_per_s", case, engine, "images/s", None, "the ceiling: engine alone on a fixed batch",
         before=round(before, 4), after=round(after, 4), iterations=iterations, warmup=warmup)
    for workers, rate, wait_pct, load in results:
        extra = dict(workers=workers, iterations=iterations, warmup=warmup, cores=usable_cores(), load_average=load)
        emit("pipeline_images_per_s", case, rate, "images/s", engine, "engine alone on a fixed batch (same run)",
             ratio=round(rate / engine, 4), target_ratio=TARGET_RATIO, data_wait_pct=round(wait_pct, 2), **extra)
        emit("data_wait_pct", case, wait_pct, "%", 0.0, "no wait (data never the bottleneck)", **extra)


def bench_data_layer(tmp, lmdbs, batch, n_batches, rounds):
    """OPData alone at 368 with the BODY_25 preset's augmentation: samples/s per usable core."""
    from openpose_train.caffe_layers import caffe_io
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from op_data import _samples_per_s          # benchmarks/op_data.py's steady-state timing
    net_dir = make_net(tmp, "data_layer", "body_25", 0, batch, lmdbs, 1)
    net_param = caffe_io.read_net_prototxt(str(net_dir / "pose_training.prototxt"))
    layer = next(lp for lp in net_param.layer if lp.type == "OPData")
    cores = usable_cores()

    def rate(workers, warmup):
        return statistics.median(_samples_per_s(layer, workers, n_batches, warmup, rounds))

    one_core = rate(0, 1)
    all_cores = rate(cores, 1 + 2 * cores)
    crop = layer.op_transform_param.crop_size_x
    emit("samples_per_s_per_core", f"BODY_25,crop={crop},batch={batch},cpu", all_cores / cores, "samples/s/core",
         one_core, "the same layer in the calling process (num_workers=0, one core; same run)", workers=cores,
         cores=cores, samples_per_s=round(all_cores, 2), rounds=rounds, batches_per_round=n_batches,
         load_average=round(os.getloadavg()[0], 2))


def bench_cpu(tmp, quick):
    lmdbs = make_lmdbs(tmp, 12 if quick else 24)
    cores = usable_cores()
    if quick:   # smoke run: the tiny net at a smaller crop and batch (the case name says so), one worker
        tiny = make_net(tmp, "tiny", "tiny", 64, 2, lmdbs, 1)
        bench_case("tiny,crop=64,batch=2,cpu,quick", tiny, 2, 4, 1, [1])
        bench_data_layer(tmp, lmdbs, 2, 2, 1)
        return
    workers = sorted({1, 2, cores})
    tiny = make_net(tmp, "tiny", "tiny", 128, 8, lmdbs, 1)
    bench_case("tiny,crop=128,batch=8,cpu", tiny, 8, 16, 3, workers)
    body = make_net(tmp, "body_25", "body_25", 184, 2, lmdbs, 1)
    bench_case("BODY_25,crop=184,batch=2,cpu", body, 2, 8, 2, workers)
    bench_data_layer(tmp, lmdbs, 10, 4, 3)


def bench_cuda(tmp, quick):
    import torch
    if not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible")
    lmdbs = make_lmdbs(tmp, 16 if quick else 64)
    iterations, warmup = (8, 3) if quick else (60, 15)
    net_dir = make_net(tmp, "body_25_cuda", "body_25", 368, 10, lmdbs, 1)
    case = "BODY_25,crop=368,batch=10,cuda"
    cores = usable_cores()
    device = dict(device_name=torch.cuda.get_device_name(0), cores=cores)
    settings = [("fp32", (), {}), ("bf16", ("--bf16",), dict(bf16=True)),
                ("bf16+channels_last", ("--bf16", "--channels-last"), dict(bf16=True, channels_last=True)),
                ("bf16+channels_last+compile", ("--bf16", "--channels-last", "--compile"),
                 dict(bf16=True, channels_last=True, compile_net=True))]
    for name, flags, kw in settings:
        try:
            engine, _ = steady_rate(engine_alone(net_dir, iterations, "cuda", **kw), 10, warmup)
        except Exception as exc:  # e.g. compile unavailable: say so, go on with the other settings
            print(f"{name}: engine alone failed: {exc}", file=sys.stderr)
            continue
        emit("engine_images_per_s", f"{case},{name}", engine, "images/s", None, "engine alone on a fixed batch",
             **device)
        label_modes = ("device", "workers") if name in ("fp32", "bf16+channels_last") else ("device",)
        for labels in label_modes:
            metrics = train_pipeline(net_dir, cores, iterations, ("-gpu", "0", "--labels", labels) + flags)
            rate, wait_pct = steady_rate(metrics, 10, warmup)
            emit("pipeline_images_per_s", f"{case},{name},labels={labels}", rate, "images/s", engine,
                 "engine alone on a fixed batch (same run, same precision)", ratio=round(rate / engine, 4),
                 data_wait_pct=round(wait_pct, 2), workers=cores, target_images_per_s=400, **device)
    if torch.cuda.device_count() >= 2:
        metrics = train_pipeline(net_dir, max(1, cores // 2 - 1), iterations,
                                 ("-gpu", "0,1", "--bf16", "--channels-last"))
        rate, wait_pct = steady_rate(metrics, 10, warmup)
        emit("pipeline_images_per_s", f"{case},bf16+channels_last,ddp=2", 2 * rate, "images/s", None,
             "2 processes (DDP, NCCL); value = 2 x rank 0's images/s", data_wait_pct=round(wait_pct, 2), **device)
    else:
        print("DDP case skipped: fewer than 2 CUDA devices", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few iterations, one worker count")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the training step, in `train` and in the engine alone alike "
                             "(default: 1 on the CPU, so that the workers have the other cores; torch's own "
                             "default on CUDA)")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else None)
    if threads:
        import torch
        os.environ["OMP_NUM_THREADS"] = str(threads)      # the `train` subprocesses
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        (bench_cuda if args.device == "cuda" else bench_cpu)(Path(tmp), args.quick)


if __name__ == "__main__":
    main()
