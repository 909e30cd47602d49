"""OPData speed: labels per sample, whole samples with worker processes, batched GPU labels.

BODY_25 (fork model string COCO_25_17), 368x368 crop, stride 8 (46x46 grid), sigma 7.

* ``labels_ms`` (cases people=1/3/6/12 for BODY_25; BODY_135,people=1/3/6/12 for the fork's
  COCO_135_17 variant, hands and face unlabelled, and BODY_135_wholebody,people=1/3/6/12 for
  COCO_135_133, hands and face labelled): time of ``labels.render_labels`` for one sample on one core
  (the process pinned to its first CPU), the mean over the scenes of each scene's median (``min``: of
  each scene's fastest run); people are upright figures 60-300 px tall (the main one about 0.6 x
  368), some outside the crop. ``floor_ms``: allocating and filling a label of the same bytes
  (``np.empty(...).fill(0)``, the memset every label pays), timed right after each render in the same
  loop; ``ratio`` = value / floor_ms (``ratio_min`` from the fastest runs). ``baseline``: a
  straightforward full-grid numpy renderer (every Gaussian and every limb evaluated on the whole grid,
  one person and part at a time, as the open Python implementations do) on the same people; its
  heatmap/PAF/background targets are checked against ours before timing.
* ``samples_per_s`` (case workers=2): ``OPDataSource`` batches (batch 10) from an LMDB of raw
  640x480 datums (synthetic COCO-format data, background LMDB configured): read + decode +
  augment + labels + normalisation; median of 5 rounds (``max`` the best round), the machine's
  load average beside it. ``baseline``: the same source with ``num_workers=0`` (in the calling
  process) in the same run.
* ``gpu_labels_per_s`` (case batch=64): ``labels_torch.render_labels_batch`` on CUDA; baseline
  the CPU reference, sample by sample, in the same run. Skipped (said on stderr) without CUDA.

    python benchmarks/op_data.py [--quick] [--only labels|samples|gpu]
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

from openpose_train.caffe_layers import labels as L  # noqa: E402
from openpose_train.generator.registry import get_training_variant  # noqa: E402

CROP, STRIDE, SIGMA = 368, 8, 7.0
GRID = CROP // STRIDE
OP_MODEL = "COCO_25_17"

# BODY_25 figure: (x, y) in body heights, y down from the crown (feet parts 19-24 included)
FIGURE = np.array([
    (0.0, 0.07), (0.0, 0.18), (-0.12, 0.19), (-0.15, 0.34), (-0.16, 0.47), (0.12, 0.19), (0.15, 0.34),
    (0.16, 0.47), (0.0, 0.52), (-0.07, 0.52), (-0.08, 0.73), (-0.08, 0.94), (0.07, 0.52), (0.08, 0.73),
    (0.08, 0.94), (-0.03, 0.05), (0.03, 0.05), (-0.06, 0.06), (0.06, 0.06), (0.10, 0.99), (0.12, 0.985),
    (0.07, 0.96), (-0.10, 0.99), (-0.12, 0.985), (-0.07, 0.96)], np.float32)


def make_people(rng, count, num_parts=25):
    """(count, 25, 3): the main person centred about 0.6 crop tall, the others anywhere, 60-300 px."""
    people = np.zeros((count, num_parts, 3), np.float32)
    for i in range(count):
        tall = 0.6 * CROP * rng.uniform(0.8, 1.2) if i == 0 else rng.uniform(60, 300)
        angle = np.deg2rad(rng.uniform(-30, 30))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
        xy = (FIGURE - [0, 0.5]) @ rot.T * tall
        centre = [CROP / 2, CROP / 2] if i == 0 else rng.uniform(-40, CROP + 40, 2)
        people[i, :, :2] = xy + centre + rng.normal(0, 2, xy.shape)
        people[i, :, 2] = rng.choice([0, 1, 2], num_parts, p=[0.15, 0.75, 0.1])
        people[i, 19:, 2] = 4                               # COCO-17 data: no feet
    return people


def full_grid_labels(model, people, sigma=SIGMA):
    """Baseline: heatmaps, background and PAFs, every person/part/limb on the whole grid."""
    n_pafs, n_parts = model.num_pafs, model.num_parts
    c = 2 * n_pafs + n_parts + int(model.has_background)
    label = np.zeros((2 * c, GRID, GRID), np.float32)
    weights, targets = label[:c], label[c:]
    weights[:] = 1
    centres = STRIDE / 2 - 0.5 + np.arange(GRID, dtype=np.float32) * STRIDE
    xs, ys = np.meshgrid(centres, centres)
    sigmas = np.float32(sigma) * np.asarray(model.sigma_ratios, np.float32)
    for person in people:
        for j in range(n_parts):
            x, y, v = person[j]
            if v > 1:
                continue
            s = float(sigmas[j])
            e = ((xs - x) ** 2 + (ys - y) ** 2).astype(np.float64) / 2.0 / s / s
            g = np.where(e <= L.GAUSSIAN_CUTOFF, np.exp(-e), 0).astype(np.float32)
            targets[2 * n_pafs + j] = np.minimum(1, np.maximum(targets[2 * n_pafs + j], g))
    if model.has_background:
        targets[c - 1] = np.maximum(0, 1 - targets[2 * n_pafs:c - 1].max(0))
    gx, gy = np.meshgrid(np.arange(GRID, dtype=np.float32), np.arange(GRID, dtype=np.float32))
    for i, (a, b) in enumerate(model.paf_pairs):
        count = np.zeros((GRID, GRID), np.float32)
        for person in people:
            if person[a, 2] > 1 or person[b, 2] > 1:
                continue
            pa, pb = person[a, :2] / np.float32(STRIDE), person[b, :2] / np.float32(STRIDE)
            d = pb - pa
            norm = np.sqrt(d[0] * d[0] + d[1] * d[1])
            if norm == 0:
                continue
            u = d / norm
            lo = np.maximum(0, L.round_half_away(np.minimum(pa, pb) - 1))
            hi = np.minimum(GRID, L.round_half_away(np.maximum(pa, pb) + 1))
            on = ((gx >= lo[0]) & (gx < hi[0]) & (gy >= lo[1]) & (gy < hi[1])
                  & (np.abs((gx - pa[0]) * u[1] - (gy - pa[1]) * u[0]) <= 1))
            for k in (0, 1):
                targets[2 * i + k][on] = (targets[2 * i + k][on] * count[on] + u[k]) / (count[on] + 1)
            count[on] += 1
    return label


def times_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(fn, repeats):
    return statistics.median(times_ms(fn, repeats))


@contextlib.contextmanager
def one_core():
    """Pin this process to one CPU (the first it may use) while timing single-core figures."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    core = min(allowed)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, allowed)


def emit(bench, case, value, unit, baseline, baseline_name, **extra):
    print(json.dumps({"bench": bench, "case": case, "value": round(value, 4), "unit": unit,
                      "baseline": None if baseline is None else round(baseline, 4),
                      "baseline_name": baseline_name, **extra}), flush=True)


def body135_people(rng, count, wholebody):
    """(count, 135, 3) BODY_135 people: the body of :func:`make_people`; with ``wholebody`` 2 x 20
    hand points around the wrists and 70 face points around the nose (COCO-WholeBody data, variant
    COCO_135_133), else hands and face not in the data (v = 4 at (0, 0), as remapped from COCO-17)."""
    people = np.zeros((count, 135, 3), np.float32)
    body = make_people(rng, count)
    people[:, :25] = body
    people[:, 25:, 2] = 4
    if wholebody:
        for i in range(count):
            tall = float(np.ptp(body[i, :, 1]))
            for first, n, anchor, spread in ((25, 20, 4, 0.03), (45, 20, 7, 0.03), (65, 70, 0, 0.02)):
                people[i, first:first + n, :2] = body[i, anchor, :2] + rng.normal(0, spread * tall, (n, 2))
                people[i, first:first + n, 2] = rng.choice([0, 1, 2], n, p=[0.1, 0.8, 0.1])
    return people


#: labels_ms scenes: (case prefix, fork model string, people maker, target ratio to the floor per count)
LABEL_CASES = (
    ("", OP_MODEL, make_people, {1: 2.0, 12: 3.0}),
    ("BODY_135,", "COCO_135_17", lambda rng, n: body135_people(rng, n, False), {}),
    ("BODY_135_wholebody,", "COCO_135_133", lambda rng, n: body135_people(rng, n, True), {}),
)


def bench_labels(quick):
    """``value``: mean over the scenes of the median time per scene; ``min``: the same with the
    fastest time per scene (the machine may be shared: the minimum is the least disturbed figure).
    ``floor_ms``: ``np.empty(label shape).fill(0)`` timed right after each render (interleaved)."""
    rng = np.random.default_rng(0)
    with one_core() as core:
        for prefix, op_model, maker, targets in LABEL_CASES:
            model, variant = get_training_variant(op_model)
            c = model.num_channels
            shape = (2 * c, GRID, GRID)
            repeats = 10 if quick else (300 if model.num_parts <= 25 else 100)
            for count in (1, 3, 6, 12):
                samples = [maker(rng, count) for _ in range(3 if quick else 8)]
                for people in samples:                 # same targets as the baseline before timing
                    ours = L.render_labels(model, variant, people, None, (GRID, GRID), STRIDE, SIGMA)[c:]
                    ref = full_grid_labels(model, people)[c:]
                    np.testing.assert_allclose(ours, ref, atol=1e-5)
                ours = [[] for _ in samples]
                floor = [[] for _ in samples]
                for _ in range(repeats):
                    for k, p in enumerate(samples):
                        t0 = time.perf_counter()
                        L.render_labels(model, variant, p, None, (GRID, GRID), STRIDE, SIGMA)
                        t1 = time.perf_counter()
                        np.empty(shape, np.float32).fill(0)
                        t2 = time.perf_counter()
                        ours[k].append((t1 - t0) * 1e3)
                        floor[k].append((t2 - t1) * 1e3)
                base = [times_ms(lambda: full_grid_labels(model, p), max(3, repeats // 100)) for p in samples]
                value = float(np.mean([statistics.median(t) for t in ours]))
                fastest = float(np.mean([min(t) for t in ours]))
                floor_ms = float(np.mean([statistics.median(t) for t in floor]))
                floor_min = float(np.mean([min(t) for t in floor]))
                extra = {"target_ratio": targets[count]} if count in targets else {}
                emit("labels_ms", f"{prefix}people={count}", value, "ms",
                     float(np.mean([statistics.median(t) for t in base])), "full-grid numpy renderer (same run)",
                     floor_ms=round(floor_ms, 4), ratio=round(value / floor_ms, 2),
                     floor_name="np.empty(label shape, float32).fill(0), interleaved", median=round(value, 4),
                     min=round(fastest, 4), floor_min=round(floor_min, 4), ratio_min=round(fastest / floor_min, 2),
                     **extra, baseline_min=round(float(np.mean([min(t) for t in base])), 4), repeats=repeats,
                     scenes=len(samples), pinned_cpu=core, model=model.name, op_model=op_model, crop=CROP,
                     stride=STRIDE, label_mb=round(4 * int(np.prod(shape)) / 2 ** 20, 3),
                     load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)


def _layer(coco, bg, batch):
    from openpose_train.caffe_layers import caffe_pb2
    lp = caffe_pb2.LayerParameter(name="data", type="OPData", top=["image", "label"])
    lp.data_param.batch_size = batch
    tp = lp.op_transform_param
    tp.stride, tp.crop_size_x, tp.crop_size_y, tp.target_dist = STRIDE, CROP, CROP, 0.6
    tp.scale_prob, tp.scale_mins, tp.scale_maxs = 1, "0.333333", "1.5"
    tp.center_perterb_max, tp.max_degree_rotations, tp.number_max_occlusions = 40, "45", "2"
    tp.models, tp.sources, tp.probabilities = OP_MODEL, str(coco), "1"
    tp.source_background = str(bg)
    return lp


def _samples_per_s(lp, workers, n_batches, warmup, rounds=1):
    """Steady-state samples/s of each of ``rounds`` runs of ``n_batches``: ``warmup`` batches
    first (worker start-up, and enough batches to drain the prefetch slots filled meanwhile, since
    reading is faster than producing), then timed."""
    from openpose_train.caffe_layers.op_data import OPDataSource
    rates = []
    with OPDataSource(lp, seed=0, num_workers=workers, prefetch=4) as src:
        for _ in range(warmup):
            next(src)
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(n_batches):
                next(src)
            rates.append(n_batches * lp.data_param.batch_size / (time.perf_counter() - t0))
    return rates


def bench_samples(quick):
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
    from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res = make_synthetic_dataset(tmp / "data", SynthConfig(images=12 if quick else 40, width=640, height=480,
                                                              max_people=6, seed=0))
        json_path, images = res.splits["train2017"], res.image_dirs["train2017"]
        build_lmdb(json_path, images, tmp / "coco", BuildOptions(workers=1, progress=False))
        build_lmdb(json_path, images, tmp / "bg", BuildOptions(workers=1, progress=False, background=True))
        lp = _layer(tmp / "coco", tmp / "bg", 10)
        n, rounds = (2, 1) if quick else (10, 5)
        base = _samples_per_s(lp, 0, max(2, n // 2), 1, rounds)
        rates = _samples_per_s(lp, 2, n, 1 if quick else 8, rounds)
        value = statistics.median(rates)
        emit("samples_per_s", "workers=2", value, "samples/s", statistics.median(base),
             "same source, num_workers=0 (same run)", median=round(value, 2), max=round(max(rates), 2),
             baseline_max=round(max(base), 2), rounds=rounds, batches_per_round=n, batch=10,
             datum="raw 640x480", crop=CROP, cpu_count=os.cpu_count(),
             load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)


def bench_gpu(quick):
    import torch
    if not torch.cuda.is_available():
        print("gpu_labels_per_s: skipped, no CUDA device", file=sys.stderr)
        return
    from openpose_train.caffe_layers.labels_torch import render_labels_batch
    model, variant = get_training_variant(OP_MODEL)
    rng = np.random.default_rng(1)
    items = [(make_people(rng, int(rng.integers(1, 7))), None, True) for _ in range(64)]
    render_labels_batch(model, variant, items, (GRID, GRID), STRIDE, SIGMA, device="cuda")
    torch.cuda.synchronize()
    repeats = 5 if quick else 50
    ms = median_ms(lambda: (render_labels_batch(model, variant, items, (GRID, GRID), STRIDE, SIGMA, device="cuda"),
                            torch.cuda.synchronize()), repeats)
    cpu_ms = median_ms(lambda: [L.render_labels(model, variant, p, m, (GRID, GRID), STRIDE, SIGMA)
                                for p, m, _ in items], max(2, repeats // 5))
    emit("gpu_labels_per_s", "batch=64", 64 / ms * 1e3, "samples/s", 64 / cpu_ms * 1e3,
         "CPU reference renderer, one core (same run)", device=torch.cuda.get_device_name(0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--only", choices=("labels", "samples", "gpu"), help="run one group of rows")
    args = parser.parse_args()
    for name, bench in (("labels", bench_labels), ("samples", bench_samples), ("gpu", bench_gpu)):
        if args.only in (None, name):
            bench(args.quick)


if __name__ == "__main__":
    main()
