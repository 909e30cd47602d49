"""Post-processing speed: BODY_25 net_output maps -> people, on one core.

Maps are what OpenPose parses: the stride-8 net output of 368x368 / 656x368 inputs, upsampled
8x with INTER_CUBIC to the net input size (here drawn from known upright people, 60-300 px
tall, tilted up to 30 degrees). ``value`` is the median time of
``openpose_train.validation.postprocess.parse_people``; ``baseline`` is the straightforward
implementation (``postprocess_reference``: whole-map NMS, per-candidate/per-sample Python loops,
like the open Python implementations) measured in the same run on the same maps.

    python benchmarks/postprocess.py [--quick]
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

from openpose_train.generator.registry import get_model  # noqa: E402
from openpose_train.validation.groundtruth_maps import (  # noqa: E402
    BODY_25_UPRIGHT, render_ground_truth_maps)
from openpose_train.validation.postprocess import parse_people  # noqa: E402
from openpose_train.validation.postprocess_reference import parse_people_reference  # noqa: E402

def make_maps(model, people, width, height, rng):
    """Upsampled (8x, INTER_CUBIC) stride-8 maps of ``people`` random upright persons."""
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
    small = render_ground_truth_maps(model, np.array(kps), height, width, sigma=7, paf_width=8,
                                     stride=8)
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC)
                     for c in small])


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    model = get_model("BODY_25")
    repeats, base_repeats = (3, 1) if args.quick else (30, 3)
    rng = np.random.default_rng(0)
    for width, height in ((368, 368), (656, 368)):
        for people in (1, 3, 6, 12):
            maps = make_maps(model, people, width, height, rng)
            parse_people(model, maps)                      # warm-up
            value, (kp, _) = median_ms(lambda: parse_people(model, maps), repeats)
            base, (kp_ref, _) = median_ms(lambda: parse_people_reference(model, maps),
                                          base_repeats)
            print(json.dumps({
                "bench": "postprocess_ms", "case": f"people={people},input={width}x{height}",
                "value": round(value, 3), "unit": "ms", "baseline": round(base, 3),
                "baseline_name": "postprocess_reference (whole-map NMS + Python loops)",
                "speedup": round(base / value, 1), "people_found": int(kp.shape[0]),
                "same_result_as_baseline": bool(kp.shape == kp_ref.shape
                                                and np.allclose(kp, kp_ref, atol=1e-3)),
                "repeats": repeats, "threads": 1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
