"""LMDB build throughput and memory: synthetic 640x480 images, our writer vs a floor measured in the same run.

Floor (``baseline``): read + JPEG-decode each image once and write as many raw 5-channel
datums of the same size as our build writes for it (image planes + zero planes), large
transactions, no annotation work (no selection, masks or metadata), one process. Also reported:
``floor_one_3ch_datum_per_image`` (one 3-channel datum per image; it writes ~1/3 of the bytes,
so on a disk-bound machine it mostly measures the difference in bytes). Ours: ``build_lmdb``
(plan, masks, one 5-channel datum per main person, in-process); for the large case also with
``--encoded`` (case ``images=N,encoded``, compared with the one-datum-per-image floor). Each measurement runs in a fresh
subprocess so that peak RSS (ru_maxrss of the writer process; workers reported apart) belongs to
that build alone. Prints JSON lines:

  lmdb_images_per_s   images=500 / images=2000   (baseline = floor on the same images)
  lmdb_peak_rss_mb    images=500 / images=2000
  lmdb_rss_growth_mb  500->2000                   (target < 100 MB)

``--quick``: 20 / 40 images (smoke test); default 500 / 2000.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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

    from openpose_train.dataset_tools.datum import serialize_datum
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
    summary = build_lmdb(json_path, images_dir, out, BuildOptions(progress=False, encoded=encoded))
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
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
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
        result["workers_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(result))
        return
    from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset
    small, large = (20, 40) if args.quick else (500, 2000)
    with tempfile.TemporaryDirectory(prefix="lmdb_bench_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        synth = make_synthetic_dataset(tmp / "synth", SynthConfig(images=large, seed=0, width=640, height=480))
        print(f"# synthesised {large} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        json_all, images = synth.splits["train2017"], synth.image_dirs["train2017"]
        results = {}
        for n in (small, large):
            subset = _subset_json(json_all, n, tmp / f"subset_{n}.json")
            counts_path = _record_counts(subset, tmp / f"counts_{n}.json")
            runs = {}
            modes = [("floor", "floor", counts_path), ("floor1", "floor", None), ("ours", "build", None)]
            if n == large:
                modes.append(("encoded", "encoded", None))
            for name, mode, counts in modes:
                runs[name] = _run_child(mode, subset, images, tmp / f"{name}_{n}", counts)
                subprocess.run(["rm", "-rf", str(tmp / f"{name}_{n}")], check=False)
            floor, ours = runs["floor"], runs["ours"]
            results[n] = ours
            rate = {k: v["images"] / v["seconds"] for k, v in runs.items()}
            _line("lmdb_images_per_s", f"images={n}", rate["ours"], "images/s", rate["floor"],
                  "floor: JPEG decode once per image + the same number of raw 5-channel datums written, "
                  "no annotation work (one process)",
                  ratio=round(rate["ours"] / rate["floor"], 3), records=ours["records"],
                  floor_one_3ch_datum_per_image=round(rate["floor1"], 3),
                  ratio_vs_one_datum_per_image=round(rate["ours"] / rate["floor1"], 3), cpus=os.cpu_count())
            if "encoded" in runs:
                _line("lmdb_images_per_s", f"images={n},encoded", rate["encoded"], "images/s", rate["floor1"],
                      "JPEG decode + one raw 3-channel datum per image, no annotation work (one process)",
                      ratio=round(rate["encoded"] / rate["floor1"], 3), records=runs["encoded"]["records"])
            _line("lmdb_peak_rss_mb", f"images={n}", ours["peak_rss_mb"], "MB", floor["peak_rss_mb"],
                  "floor process peak RSS", workers_peak_rss_mb=round(ours["workers_peak_rss_mb"], 1))
        growth = results[large]["peak_rss_mb"] - results[small]["peak_rss_mb"]
        _line("lmdb_rss_growth_mb", f"{small}->{large}", growth, "MB", None, "",
              workers_growth_mb=round(results[large]["workers_peak_rss_mb"] - results[small]["workers_peak_rss_mb"], 1))


if __name__ == "__main__":
    main()
