"""LMDB build throughput and memory: synthetic 640x480 images, our writer vs a floor measured in the same run.

Floor (``baseline``, issue 3's "JPEG decode + raw datum write, no annotation work"): read and
JPEG-decode each image once and write ONE raw 3-channel datum of it, default LMDB settings, large
transactions, one thread. Also reported (``floor_same_datums``): the same decode, writing as many
raw 5-channel datums per image as our build does (image planes + two zero planes): ~2.8x the bytes.
Ours: ``build_lmdb`` with the defaults of ``openpose-train lmdb`` (plan, masks, one 5-channel
datum per main person, one decode thread beside the writing thread); for the large case also
``--encoded`` (case ``images=N,encoded``). Each measurement runs in a fresh subprocess so that its
peak RSS (VmHWM) belongs to that build alone; the modes run interleaved ``--repeats`` times and
``ratio`` is the median of the per-repeat ratios ours / floor (the machine is shared and noisy).
Prints JSON lines:

  lmdb_images_per_s   images=500 / images=2000   (baseline = the floor; value and baseline: medians)
  lmdb_peak_rss_mb    images=500 / images=2000   (max over repeats)
  lmdb_rss_growth_mb  500->2000                   (target < 100 MB)

``--quick``: 20 / 40 images, one repeat (smoke test); default 500 / 2000 images, 3 repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _subset_json(json_path: Path, n: int, out: Path) -> Path:
    doc = json.load(open(json_path))
    ids = {img["id"] for img in doc["images"][:n]}
    doc["images"] = doc["images"][:n]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
    out.write_text(json.dumps(doc))
    return out


def _record_counts(json_path: Path, out: Path) -> Path:
    """Records per image file that our build writes (the plan; not timed)."""
    from openpose_train.dataset_tools import coco
    dataset = coco.load_keypoint_json(json_path, "coco")
    counts = {}
    for plan in coco.plan_records(dataset):
        name = dataset.images[plan.image_index].file_name
        counts[name] = counts.get(name, 0) + 1
    out.write_text(json.dumps(counts))
    return out


def _child_floor(json_path, images_dir, out, counts_path=None):
    """Decode each image once and write raw datums: ``counts`` per image of C=5 (the records our
    build writes for it, image planes + two zero planes), or one 3-channel datum when no counts."""
    import cv2
    import lmdb
    import numpy as np

    from openpose_train.caffe_layers.datum import serialize_datum
    doc = json.load(open(json_path))
    counts = json.load(open(counts_path)) if counts_path else None
    start = time.perf_counter()
    env = lmdb.open(out, map_size=1 << 35, subdir=True, meminit=False, sync=False, readahead=False)  # as the writer
    txn, size, key = env.begin(write=True), 0, 0      # values go straight into the transaction, as the writer
    for img in doc["images"]:
        image = cv2.imread(os.path.join(images_dir, img["file_name"]), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        planes = image.transpose(2, 0, 1).tobytes()
        if counts is None:
            values = [serialize_datum(3, h, w, planes)]
        else:
            extra = np.zeros(2 * h * w, np.uint8)
            values = [serialize_datum(5, h, w, [planes, extra]) for _ in range(counts.get(img["file_name"], 0))]
        for value in values:
            txn.put(b"%07d" % key, value)
            key += 1
            size += len(value)
        if size >= 64 << 20:
            txn.commit()
            txn, size = env.begin(write=True), 0
    txn.commit()
    env.sync(True)
    env.close()
    return {"images": len(doc["images"]), "records": key, "seconds": time.perf_counter() - start}


def _child_build(json_path, images_dir, out, counts_path=None, encoded=False):
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
    start = time.perf_counter()
    # workers=1: the CLI's default
    summary = build_lmdb(json_path, images_dir, out, BuildOptions(progress=False, encoded=encoded, workers=1))
    seconds = time.perf_counter() - start
    n_images = len(json.load(open(json_path))["images"])     # the floor's denominator: every image
    return {"images": n_images, "records": summary.records_written, "seconds": seconds}


def _run_child(mode, json_path, images_dir, out, counts=None):
    extra = [str(counts)] if counts else []
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(json_path), str(images_dir), str(out)]
                          + extra,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"benchmark child {mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _line(bench, case, value, unit, baseline=None, baseline_name="", **extra):
    print(json.dumps({"bench": bench, "case": case, "value": round(value, 3), "unit": unit,
                      "baseline": None if baseline is None else round(baseline, 3),
                      "baseline_name": baseline_name, **extra}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3, --quick 1)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, json_path, images_dir, out, *counts = args.child
        if mode == "floor":
            result = _child_floor(json_path, images_dir, out, *counts)
        else:
            result = _child_build(json_path, images_dir, out, encoded=mode == "encoded")
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
        result["peak_rss_mb"] = _vm_hwm_mb()
        print(json.dumps(result))
        return
    from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset
    small, large = (20, 40) if args.quick else (500, 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="lmdb_bench_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        synth = make_synthetic_dataset(tmp / "synth", SynthConfig(images=large, seed=0, width=640, height=480))
        print(f"# synthesised {large} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        json_all, images = synth.splits["train2017"], synth.image_dirs["train2017"]
        peak_rss = {}
        for n in (small, large):
            subset = _subset_json(json_all, n, tmp / f"subset_{n}.json")
            counts_path = _record_counts(subset, tmp / f"counts_{n}.json")
            modes = [("floor", "floor", None), ("same", "floor", counts_path), ("ours", "build", None)]
            if n == large:
                modes.append(("encoded", "encoded", None))
            runs = {name: [] for name, _, _ in modes}
            for _ in range(repeats):
                for name, mode, counts in modes:
                    runs[name].append(_run_child(mode, subset, images, tmp / f"{name}_{n}", counts))
                    subprocess.run(["rm", "-rf", str(tmp / f"{name}_{n}")], check=False)
            rates = {k: [r["images"] / r["seconds"] for r in v] for k, v in runs.items()}
            rate = {k: statistics.median(v) for k, v in rates.items()}

            def ratios(name, floor="floor"):
                return [a / b for a, b in zip(rates[name], rates[floor])]

            ours = ratios("ours")
            _line("lmdb_images_per_s", f"images={n}", rate["ours"], "images/s", rate["floor"],
                  "floor: JPEG decode once per image + one raw 3-channel datum written per image, "
                  "default LMDB settings, no annotation work (one thread)",
                  ratio=round(statistics.median(ours), 3), ratio_min=round(min(ours), 3),
                  repeats=repeats, records=runs["ours"][0]["records"],
                  ours_runs=[round(r, 1) for r in rates["ours"]], floor_runs=[round(r, 1) for r in rates["floor"]],
                  floor_same_datums=round(rate["same"], 3),
                  ratio_vs_same_datums=round(statistics.median(ratios("ours", "same")), 3), cpus=os.cpu_count())
            if "encoded" in runs:
                enc = ratios("encoded")
                _line("lmdb_images_per_s", f"images={n},encoded", rate["encoded"], "images/s", rate["floor"],
                      "JPEG decode + one raw 3-channel datum per image, no annotation work (one thread)",
                      ratio=round(statistics.median(enc), 3), ratio_min=round(min(enc), 3),
                      records=runs["encoded"][0]["records"])
            peak_rss[n] = max(r["peak_rss_mb"] for r in runs["ours"])
            _line("lmdb_peak_rss_mb", f"images={n}", peak_rss[n], "MB",
                  max(r["peak_rss_mb"] for r in runs["floor"]), "floor process peak RSS (max over repeats)")
        _line("lmdb_rss_growth_mb", f"{small}->{large}", peak_rss[large] - peak_rss[small], "MB", None, "")


if __name__ == "__main__":
    main()
