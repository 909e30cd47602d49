"""Post-processing speed: BODY_25 net_output maps -> people, on one core.

Maps are what OpenPose parses: the stride-8 net output of 368x368 / 656x368 inputs (drawn from
known upright people, 60-300 px tall, tilted up to 30 degrees), upsampled 8x to the net input
size with OpenPose's own resize (``inference.upsample_output``: the CUDA bicubic, Catmull-Rom).

Timed per call (``value`` = median ms, ``min_ms`` beside it): everything after the resize, i.e.
the per-block bounds of the heatmaps from the small net output
(``inference.heatmap_block_bounds``) + ``postprocess.parse_people`` (NMS on the full-resolution
maps, PAF scoring, greedy assembly, filtering). The resize itself is not included
(``resize_included: false``); it is timed separately as ``resize_ms`` (torch GEMM, one thread).
``full_scan_ms`` is ``parse_people`` without the bounds (every heatmap pixel scanned; same
output). ``baseline`` is the straightforward implementation (``postprocess_reference``:
whole-map NMS, per-candidate/per-sample Python loops, like the open Python implementations)
measured in the same run on the same maps.

``resize_merge_ms`` lines time the resize & merge itself (``inference.resize_and_merge``, one
scale, the 78 BODY_25 maps of one person's net output to 368x368 / 656x368; and 3 scales
merged at 656x368): the 4-tap
block-banded implementation against the dense matrix products it replaced
(``inference._resize_and_merge_dense``), calls interleaved so both see the same machine load;
both allocate their output (``value``); ``reused_out_ms`` writes into a kept buffer
(``out=``, as ``PoseEstimator.estimate`` does), without a fresh buffer's page faults;
``max_abs_diff`` between the maps of the two implementations; ``gather_fma_ms``: the literal
4-tap gather + multiply-add form in torch ops (why the resize uses block-banded GEMMs);
``output_fill_ms``: filling the kept output buffer with a constant, the memory-write floor.

Pin it to one core for stable figures: ``taskset -c 0 python benchmarks/postprocess.py [--quick]``
"""
import argparse
import json
import os
import statistics
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from openpose_train.generator.registry import get_model  # noqa: E402
from openpose_train.validation.groundtruth_maps import (  # noqa: E402
    BODY_25_UPRIGHT, render_ground_truth_maps)
from openpose_train.validation.inference import (  # noqa: E402
    _resize_and_merge_dense, cubic_taps, heatmap_block_bounds, resize_and_merge, scale_factor,
    scale_net_sizes, upsample_output)
from openpose_train.validation.postprocess import parse_people  # noqa: E402
from openpose_train.validation.postprocess_reference import parse_people_reference  # noqa: E402

STRIDE = 8
BENCHES = ("postprocess_ms", "resize_merge_ms")


def make_net_output(model, people, width, height, rng):
    """Stride-8 net_output maps of ``people`` random upright persons in a width x height input."""
    kps = []
    for _ in range(people):
        tall = rng.uniform(60, min(300, height - 10))
        angle = np.deg2rad(rng.uniform(-30, 30))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        xy = (BODY_25_UPRIGHT - [0, .5]) @ rot.T * tall
        lo, hi = xy.min(0), xy.max(0)
        centre = rng.uniform(-lo, [width, height] - hi)
        v = (rng.random(len(xy)) > 0.1).astype(float)
        kps.append(np.column_stack([xy + centre, v]))
    return render_ground_truth_maps(model, np.array(kps), height, width, sigma=7, paf_width=8,
                                    stride=STRIDE)


def time_ms(fn, repeats):
    """(min, median) milliseconds of ``repeats`` calls and the last result."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times), result


def time_interleaved_ms(fns, repeats):
    """{name: (min, median)} milliseconds, the functions called in turn ``repeats`` times."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def resize_gather_fma(outputs, scales, target):
    """The literal 4-tap form, for comparison only (``gather_fma_ms``): per axis
    ``sum_k w_k[i] * src[idx_k[i]]`` with torch ``index_select`` + ``addcmul_`` (each op a pass
    over the full-size maps)."""
    def along(x, dim, n_out, factor):
        taps, weights = cubic_taps(n_out, x.shape[dim], factor)
        shape = [1] * x.dim()
        shape[dim] = n_out
        w = torch.from_numpy(weights.astype(np.float32))
        out = x.index_select(dim, torch.from_numpy(taps[:, 0])).mul_(w[:, 0].view(shape))
        for k in range(1, 4):
            out.addcmul_(x.index_select(dim, torch.from_numpy(taps[:, k])), w[:, k].view(shape))
        return out
    merged = 0
    for output, s in zip(outputs, scales):
        f = STRIDE * scales[0] / s
        merged = merged + along(along(torch.from_numpy(output), 2, target[0], f), 1, target[1], f)
    return (merged / len(outputs)).numpy()


RESIZE_CASES = (((368, 368), 1), ((656, 368), 1), ((656, 368), 3))


def bench_resize_merge(model, repeats, rng):
    """``resize_merge_ms`` lines: 4-tap resize & merge against the dense products (1 scale; and
    OpenPose's 3 scales, gap 0.25, of a 1000x560 image for the windows of factors 8 s0 / s_i)."""
    for (width, height), scale_number in RESIZE_CASES:
        target = (width, height)
        sizes = [size for _, size in scale_net_sizes(target, scale_number, 0.25)]
        scales = [scale_factor((1000, 560), size) for size in sizes] if scale_number > 1 else [1.0]
        smalls = [make_net_output(model, 1, w, h, rng) for w, h in sizes]
        fast = resize_and_merge(smalls, scales, target)          # warm-up: plans, scratch
        dense = _resize_and_merge_dense(smalls, scales, target)
        diff = float(np.abs(fast - dense).max())
        del fast, dense
        buffer = np.empty((smalls[0].shape[0], height, width), np.float32)
        timing = time_interleaved_ms({
            "fast": lambda: resize_and_merge(smalls, scales, target),
            "dense": lambda: _resize_and_merge_dense(smalls, scales, target),
            "reused": lambda: resize_and_merge(smalls, scales, target, out=buffer),
            "fill": lambda: buffer.fill(1.0)}, repeats)
        (lo, value), (base_lo, base) = timing["fast"], timing["dense"]
        reused_lo, reused = timing["reused"]
        fill_lo, fill = timing["fill"]
        gather_lo, gather, gathered = time_ms(lambda: resize_gather_fma(smalls, scales, target),
                                              max(repeats // 10, 1))
        gather_diff = float(np.abs(gathered - resize_and_merge(smalls, scales, target)).max())
        case = f"input={width}x{height}" + (f",scales={scale_number}" if scale_number > 1 else "")
        print(json.dumps({
            "bench": "resize_merge_ms", "case": case,
            "value": round(value, 3), "unit": "ms", "baseline": round(base, 3),
            "baseline_name": "dense (H, h) and (W, w) matrix products (the previous resize)",
            "statistic": "median", "min_ms": round(lo, 3), "baseline_min_ms": round(base_lo, 3),
            "speedup": round(base / value, 2), "reused_out_ms": round(reused, 3),
            "reused_out_min_ms": round(reused_lo, 3), "gather_fma_ms": round(gather, 3),
            "gather_fma_min_ms": round(gather_lo, 3), "gather_fma_max_abs_diff": gather_diff,
            "output_fill_ms": round(fill, 3), "output_fill_min_ms": round(fill_lo, 3),
            "channels": int(smalls[0].shape[0]),
            "scales": scale_number, "max_abs_diff": diff, "repeats": repeats, "threads": 1}),
            flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--only", choices=BENCHES, action="append",
                        help="run only these benches (repeatable); default: all, except that "
                             "--quick alone runs postprocess_ms only (what its smoke test reads)")
    args = parser.parse_args(argv)
    benches = args.only or (["postprocess_ms"] if args.quick else list(BENCHES))
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    model = get_model("BODY_25")
    repeats, base_repeats = (3, 1) if args.quick else (200, 5)
    rng = np.random.default_rng(0)
    if "resize_merge_ms" in benches:
        bench_resize_merge(model, 3 if args.quick else 40, np.random.default_rng(1))
    for width, height in ((368, 368), (656, 368)) if "postprocess_ms" in benches else ():
        for people in (1, 3, 6, 12):
            small = make_net_output(model, people, width, height, rng)
            resize_min, _, maps = time_ms(
                lambda: upsample_output(small, (width, height), STRIDE), max(repeats // 10, 1))

            def fast():
                bound = heatmap_block_bounds([small], [1.0], (width, height), model.num_parts)
                return parse_people(model, maps, block_bound=bound)

            fast()                                           # warm-up (caches, allocator)
            lo, value, (kp, _) = time_ms(fast, repeats)
            full_lo, full, (kp_full, _) = time_ms(lambda: parse_people(model, maps), repeats)
            base_lo, base, (kp_ref, _) = time_ms(lambda: parse_people_reference(model, maps),
                                                 base_repeats)
            print(json.dumps({
                "bench": "postprocess_ms", "case": f"people={people},input={width}x{height}",
                "value": round(value, 3), "unit": "ms", "baseline": round(base, 3),
                "baseline_name": "postprocess_reference (whole-map NMS + Python loops)",
                "statistic": "median", "min_ms": round(lo, 3),
                "baseline_min_ms": round(base_lo, 3), "speedup": round(base / value, 1),
                "full_scan_ms": round(full, 3), "full_scan_min_ms": round(full_lo, 3),
                "resize_included": False, "block_bounds_included": True,
                "resize_ms": round(resize_min, 3), "people_found": int(kp.shape[0]),
                "same_result_as_full_scan": bool(np.array_equal(kp, kp_full)),
                "same_result_as_baseline": bool(kp.shape == kp_ref.shape
                                                and np.allclose(kp, kp_ref, atol=1e-3)),
                "repeats": repeats, "baseline_repeats": base_repeats, "threads": 1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
