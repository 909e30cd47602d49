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

Each ``resize_merge_ms`` line has its floor: ``floor_ms`` is ``cv2.resize`` INTER_CUBIC of the
same maps, planar (one call per channel into a fresh (C, H, W) array, as OpenPose's CPU build
resizes), timed interleaved with ``value``; ``floor_ratio`` = value / floor_ms. With several
scales the floor resizes each scale's maps (the merge is not in it). ``channels_last_resize_ms``:
one multi-channel ``cv2.resize`` of the (h, w, C) maps, for comparison (its output is not planar).

``postprocess_cpu_ms`` lines time OpenPose's CPU build (``--openpose-build cpu``) as
``PoseEstimator`` runs it: resize & merge (``postprocess_cpu.resize_and_merge_cpu`` into a kept
buffer), peaks (``inference.heatmap_block_bounds`` with the OpenCV kernel + ``find_peaks_cpu``),
connect (``assemble_people_cpu`` + the person filter + the output arrays); ``value`` = the median
of their sum per call, ``resize_merge_ms`` / ``peaks_ms`` / ``connect_ms`` the medians of each
stage. Cases ``people=N,image=640x480,net=656x368``: a 640x480 image fills 490x368 of the
656x368 net input, the rest is padding (background 1, everything else 0). ``floor_ms``: planar
``cv2.resize`` of the same maps into a kept buffer, interleaved; ``baseline``: the plain form
(``postprocess_cpu_reference``: channels-last resize with a transposed copy, every
above-threshold pixel's neighbours gathered, per-pair per-sample scoring, people scanned per
peak); ``same_result_as_baseline``: its parse of the same resized maps gives the same keypoints
(its channels-last resize differs from the planar one by float32 rounding).

``validate_ms_per_image`` lines run the whole ``openpose-train validate`` command (a fresh
process) on the shared minicoco images (``data/minicoco/images/train2017``, 30 real COCO photos)
with the shared demo model (``reference/openpose_cpu_outputs/model``, the small BODY_25 net the
OpenPose CPU fixtures were made with), ``--net-resolution -1x368``: once with ``--limit 1`` and
once on every image; ``value`` = (whole - one) / (images - 1), ``startup_ms`` = one - value (the
interpreter, imports, the model load and the first forward's one-time set-up). Skipped (a line on
stderr) where the shared folder is absent; ``OPENPOSE_TRAIN_SHARED`` names it.

Pin it to one core for stable figures: ``taskset -c 0 python benchmarks/postprocess.py [--quick]``
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
from openpose_train.validation.postprocess import (  # noqa: E402
    filter_people, parse_people, people_arrays)
from openpose_train.validation.postprocess_cpu import (  # noqa: E402
    assemble_people_cpu, find_peaks_cpu, resize_and_merge_cpu)
from openpose_train.validation.postprocess_cpu_reference import (  # noqa: E402
    parse_people_cpu_reference, resize_and_merge_cpu_reference)
from openpose_train.validation.postprocess_reference import parse_people_reference  # noqa: E402

STRIDE = 8
BENCHES = ("postprocess_ms", "resize_merge_ms", "postprocess_cpu_ms", "validate_ms_per_image")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("OPENPOSE_TRAIN_SHARED", os.path.join(os.path.dirname(REPO), "shared"))


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
        channels_last = [np.ascontiguousarray(o.transpose(1, 2, 0)) for o in smalls]
        timing = time_interleaved_ms({
            "fast": lambda: resize_and_merge(smalls, scales, target),
            "floor": lambda: [planar_cv2_resize(o, target) for o in smalls],
            "dense": lambda: _resize_and_merge_dense(smalls, scales, target),
            "reused": lambda: resize_and_merge(smalls, scales, target, out=buffer),
            "channels_last": lambda: [cv2.resize(o, target, interpolation=cv2.INTER_CUBIC)
                                      for o in channels_last],
            "fill": lambda: buffer.fill(1.0)}, repeats)
        (lo, value), (base_lo, base) = timing["fast"], timing["dense"]
        floor_lo, floor = timing["floor"]
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
            "speedup": round(base / value, 2), "floor_ms": round(floor, 3),
            "floor_min_ms": round(floor_lo, 3), "floor_ratio": round(value / floor, 3),
            "floor_name": "cv2.resize INTER_CUBIC of the same maps, planar (one call per channel)",
            "channels_last_resize_ms": round(timing["channels_last"][1], 3),
            "reused_out_ms": round(reused, 3),
            "reused_out_min_ms": round(reused_lo, 3), "gather_fma_ms": round(gather, 3),
            "gather_fma_min_ms": round(gather_lo, 3), "gather_fma_max_abs_diff": gather_diff,
            "output_fill_ms": round(fill, 3), "output_fill_min_ms": round(fill_lo, 3),
            "channels": int(smalls[0].shape[0]),
            "scales": scale_number, "max_abs_diff": diff, "repeats": repeats, "threads": 1}),
            flush=True)


def planar_cv2_resize(output, target, out=None):
    """``cv2.resize`` INTER_CUBIC of (C, h, w) maps one channel at a time into a planar
    (C, H, W) array (fresh, or ``out``): the floor of both builds' resize."""
    tw, th = target
    if out is None:
        out = np.empty((output.shape[0], th, tw), np.float32)
    for c in range(output.shape[0]):
        cv2.resize(output[c], target, dst=out[c], interpolation=cv2.INTER_CUBIC)
    return out


CPU_BUILD_PEOPLE = (1, 6, 24)
IMAGE_SIZE, NET_SIZE = (640, 480), (656, 368)


def make_cpu_build_output(model, people, rng):
    """Stride-8 net output of a 640x480 image at a 656x368 net input: people in the image's
    part (490x368 of the input), padding elsewhere (background 1, everything else 0)."""
    used = [int(scale_factor(IMAGE_SIZE, NET_SIZE) * d + 0.5) for d in IMAGE_SIZE]
    inside = make_net_output(model, people, used[0], used[1], rng)
    out = np.zeros((inside.shape[0], NET_SIZE[1] // STRIDE, NET_SIZE[0] // STRIDE), np.float32)
    if model.has_background:
        out[model.num_parts] = 1
    out[:, :inside.shape[1], :inside.shape[2]] = inside
    return out


def bench_postprocess_cpu(model, repeats, base_repeats, rng):
    """``postprocess_cpu_ms`` lines (module docstring)."""
    t = model.thresholds
    for people in CPU_BUILD_PEOPLE:
        small = make_cpu_build_output(model, people, rng)
        buffer = np.empty((small.shape[0], NET_SIZE[1], NET_SIZE[0]), np.float32)
        floor_buffer = np.empty_like(buffer)
        stages = {"resize_merge_ms": [], "peaks_ms": [], "connect_ms": [], "total": []}

        def pipeline():
            t0 = time.perf_counter()
            maps = resize_and_merge_cpu([small], NET_SIZE, out=buffer)
            t1 = time.perf_counter()
            bound = heatmap_block_bounds([small], [1.0], NET_SIZE, model.num_parts,
                                         kernel="opencv")
            peaks = find_peaks_cpu(maps[:model.num_parts], t.nms_threshold, 0.5, t.max_peaks,
                                   bound, flat=maps.reshape(-1))
            t2 = time.perf_counter()
            found = filter_people(assemble_people_cpu(maps, model, peaks, t), model, t)
            result = people_arrays(found, peaks, model, 1.0)
            t3 = time.perf_counter()
            for name, ms in (("resize_merge_ms", t1 - t0), ("peaks_ms", t2 - t1),
                             ("connect_ms", t3 - t2), ("total", t3 - t0)):
                stages[name].append(ms * 1e3)
            return result

        def baseline():
            maps = resize_and_merge_cpu_reference([small], NET_SIZE)
            return parse_people_cpu_reference(model, maps)

        kp, _ = pipeline()                           # warm-up: caches, buffers
        plain_kp, _ = parse_people_cpu_reference(model, buffer)     # the same maps
        for values in stages.values():
            values.clear()
        timing = time_interleaved_ms({
            "pipeline": pipeline,
            "floor": lambda: planar_cv2_resize(small, NET_SIZE, out=floor_buffer)}, repeats)
        base_lo, base, _ = time_ms(baseline, base_repeats)
        value = statistics.median(stages["total"])
        floor_lo, floor = timing["floor"]
        print(json.dumps({
            "bench": "postprocess_cpu_ms",
            "case": f"people={people},image={IMAGE_SIZE[0]}x{IMAGE_SIZE[1]},"
                    f"net={NET_SIZE[0]}x{NET_SIZE[1]}",
            "value": round(value, 3), "unit": "ms", "baseline": round(base, 3),
            "baseline_name": "postprocess_cpu_reference (the plain form it replaced)",
            "statistic": "median", "min_ms": round(min(stages["total"]), 3),
            "baseline_min_ms": round(base_lo, 3),
            "floor_ms": round(floor, 3), "floor_min_ms": round(floor_lo, 3),
            "floor_ratio": round(value / floor, 3),
            "floor_name": "cv2.resize INTER_CUBIC of the same maps, planar, into a kept buffer",
            **{name: round(statistics.median(stages[name]), 3)
               for name in ("resize_merge_ms", "peaks_ms", "connect_ms")},
            "people_found": int(kp.shape[0]),
            "same_result_as_baseline": bool(np.array_equal(kp, plain_kp)),
            "repeats": repeats, "baseline_repeats": base_repeats, "threads": 1}), flush=True)


def bench_validate(quick):
    """``validate_ms_per_image`` lines (module docstring)."""
    model_folder = os.path.join(SHARED, "reference", "openpose_cpu_outputs", "model")
    images = os.path.join(SHARED, "data", "minicoco", "images", "train2017")
    if not (os.path.isdir(model_folder) and os.path.isdir(images)):
        print(f"validate_ms_per_image: skipped, shared data not found under {SHARED} "
              f"(set OPENPOSE_TRAIN_SHARED)", file=sys.stderr)
        return
    count = len([n for n in os.listdir(images) if n.lower().endswith((".jpg", ".png"))])
    cli = os.path.join(os.path.dirname(sys.executable), "openpose-train")
    command = [cli] if os.path.isfile(cli) else [sys.executable, "-m", "openpose_train"]
    cases = [("cpu", "torch")] if quick else [("cpu", "torch"), ("cuda", "torch"),
                                              ("cpu", "opencv")]
    for build, backend in cases:
        seconds = {}
        with tempfile.TemporaryDirectory() as tmp:
            for limit in (1, count):
                run = command + ["validate", "--model-folder", model_folder, "--model", "BODY_25",
                                 "--images", images, "--net-resolution", "-1x368",
                                 "--openpose-build", build, "--backend", backend,
                                 "--device", "cpu", "--limit", str(limit), "--quiet",
                                 "--out", os.path.join(tmp, f"results_{limit}.json")]
                t0 = time.perf_counter()
                subprocess.run(run, check=True, stdout=subprocess.DEVNULL)
                seconds[limit] = time.perf_counter() - t0
        per_image = (seconds[count] - seconds[1]) / (count - 1)
        print(json.dumps({
            "bench": "validate_ms_per_image",
            "case": f"build={build},backend={backend},net=-1x368,images={count}",
            "value": round(per_image * 1e3, 1), "unit": "ms", "baseline": None,
            "baseline_name": "none run here (OpenPose itself is not installed)",
            "startup_ms": round((seconds[1] - per_image) * 1e3, 1),
            "whole_run_s": round(seconds[count], 2), "one_image_run_s": round(seconds[1], 2),
            "threads": int(os.environ["OMP_NUM_THREADS"])}), flush=True)


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
    if "postprocess_cpu_ms" in benches:
        bench_postprocess_cpu(model, 3 if args.quick else 40, 1 if args.quick else 3,
                              np.random.default_rng(2))
    if "validate_ms_per_image" in benches:
        bench_validate(args.quick)
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
