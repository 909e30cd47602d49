"""Caffemodel write/read speed for a BODY_25-sized net (26,166,084 parameters).

Shapes come from ``param_shapes`` of OpenPose's BODY_25 deploy prototxt when the third-party sample data is present,
otherwise from a synthetic list of conv/PReLU blobs with the same total. ``value`` is the median
wall time of ``write_caffemodel`` (packed float32 bytes straight from numpy, atomic rename) and of
``read_caffemodel`` (hand-written wire reader, np.frombuffer). ``baseline`` is the naive protobuf
path measured in the same run: ``blob.data.extend(array.tolist())`` + ``SerializeToString`` for
writing, ``NetParameter.FromString`` + ``np.array(list(blob.data))`` for reading. ``--quick`` runs
each once and skips the (slow) baseline.

    python benchmarks/caffemodel_io.py [--quick]
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from openpose_train.caffe_layers import caffe_pb2
from openpose_train.caffe_layers.caffe_io import read_caffemodel, read_net_prototxt, write_caffemodel
from openpose_train.caffe_layers.shapes import param_shapes

BODY_25_PARAMS = 26_166_084
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OPENPOSE_TRAIN_SHARED", REPO.parent / "shared"))
BODY_25_DEPLOY = SHARED / "reference" / "openpose_models" / "pose" / "body_25" / "pose_deploy.prototxt"


def body25_shapes():
    """(source, OrderedDict[layer, [shapes]]) of a BODY_25-sized net."""
    if BODY_25_DEPLOY.exists():
        return "reference pose_deploy.prototxt", param_shapes(read_net_prototxt(BODY_25_DEPLOY))
    shapes = OrderedDict()
    total, i = 0, 0
    while total + 128 * 128 * 9 + 2 * 128 <= BODY_25_PARAMS:   # 3x3 128->128 convs with bias and PReLU
        shapes[f"conv{i}"] = [(128, 128, 3, 3), (128,)]
        shapes[f"prelu{i}"] = [(128,)]
        total += 128 * 128 * 9 + 2 * 128
        i += 1
    shapes["rest"] = [(BODY_25_PARAMS - total,)]
    return "synthetic", shapes


def naive_write(path, weights):
    net = caffe_pb2.NetParameter()
    for name, blobs in weights.items():
        layer = net.layer.add(name=name)
        for array in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(array.ravel().tolist())
    Path(path).write_bytes(net.SerializeToString())


def naive_read(path):
    net = caffe_pb2.NetParameter.FromString(Path(path).read_bytes())
    return OrderedDict((layer.name, [np.array(list(b.data), np.float32).reshape(tuple(b.shape.dim))
                                     for b in layer.blobs]) for layer in net.layer)


def median_s(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run each, no naive baseline")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats

    source, shapes = body25_shapes()
    rng = np.random.default_rng(0)
    weights = OrderedDict((name, [rng.standard_normal(s, dtype=np.float32) for s in blob_shapes])
                          for name, blob_shapes in shapes.items())
    params = int(sum(a.size for blobs in weights.values() for a in blobs))
    with tempfile.TemporaryDirectory(prefix="caffemodel_bench_") as tmp:
        fast_path, naive_path = os.path.join(tmp, "fast.caffemodel"), os.path.join(tmp, "naive.caffemodel")
        write_s = median_s(lambda: write_caffemodel(fast_path, weights), repeats)
        read_s = median_s(lambda: read_caffemodel(fast_path), repeats)
        size = os.path.getsize(fast_path)
        base_write = base_read = None
        if not args.quick:
            base_write = median_s(lambda: naive_write(naive_path, weights), max(1, repeats // 2))
            base_read = median_s(lambda: naive_read(naive_path), max(1, repeats // 2))
            if Path(naive_path).read_bytes() != Path(fast_path).read_bytes():
                raise SystemExit("fast and naive writers disagree")
    common = dict(case="BODY_25", unit="s", params=params, bytes=size, shapes=source, repeats=repeats,
                  target_s=0.5)
    print(json.dumps(dict(bench="caffemodel_write_s", value=round(write_s, 4),
                          baseline=None if base_write is None else round(base_write, 4),
                          baseline_name="protobuf blob.data.extend(array.tolist()) + SerializeToString",
                          **common)), flush=True)
    print(json.dumps(dict(bench="caffemodel_read_s", value=round(read_s, 4),
                          baseline=None if base_read is None else round(base_read, 4),
                          baseline_name="protobuf NetParameter.FromString + np.array(list(blob.data))",
                          **common)), flush=True)


if __name__ == "__main__":
    main()
