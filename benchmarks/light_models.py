"""The light model (preset ``mobilenet_v2``) against OpenPose's full BODY_25 net, side by side in one run.

Prints JSON lines (``benchmarks/`` convention; ``preset`` names what ``--preset`` takes, the baseline is
BODY_25's ``body_25`` preset measured in the same run):

* ``gflops`` ``BODY_25,368x368`` and ``BODY_25,656x368`` (width x height): forward FLOPs, 2 per
  multiply-accumulate of every convolution (``caffe_layers.shapes.count_flops``);
* ``params`` ``BODY_25``: learnable values of the deploy net (after folding for the light model);
* ``forward_ms`` ``BODY_25,368x368,threads=1`` / ``threads=2``: one CPU forward with our engine, and the
  same with ``,opencv`` (``cv2.dnn.readNetFromCaffe``), each on the folded export (what OpenPose loads)
  with random weights. The light and full nets alternate, so machine noise hits both; median of the runs.

Targets (issue 19): ``value <= baseline / 8`` for gflops, ``baseline / value >= 5`` for forward_ms. A
forward has no cheaper floor than the network itself; the full net in the same run is the reference.
``--quick``: 64x64, one thread, one run (a smoke test of the output lines).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import cv2
import numpy as np
import torch

from openpose_train.caffe_layers import caffe_io
from openpose_train.caffe_layers.fold import fold_batch_norm
from openpose_train.caffe_layers.net import CaffeNet
from openpose_train.caffe_layers.shapes import count_flops, count_params, random_weights
from openpose_train.generator.families import LIGHT_PRESET
from openpose_train.generator.render import render_deploy
from openpose_train.validation.inference import read_opencv_net

MODEL = "BODY_25"
FULL_PRESET = "body_25"


def deploy_net(preset: str):
    """The deploy of ``preset`` with random weights, BatchNorm folded as ``export`` writes it."""
    net = caffe_io.parse_prototxt(render_deploy(MODEL, preset), caffe_io.caffe_pb2.NetParameter())
    weights = random_weights(net, seed=0, input_shapes={None: (1, 3, 64, 64)})
    folded, weights, _ = fold_batch_norm(net, weights)
    return folded, weights


class Forward:
    """One net, runnable with our engine or OpenCV at a fixed input size."""

    def __init__(self, net, weights, folder: Path, name: str, size):
        self.x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3) + size).astype(np.float32)
        self.engine = CaffeNet(net, phase="TEST", input_shapes={"image": self.x.shape})
        self.engine.load_caffe_weights(weights, allow_missing=False)
        prototxt, model = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
        caffe_io.write_prototxt(net, prototxt)
        caffe_io.write_caffemodel(model, weights, net=net)
        self.opencv = read_opencv_net(prototxt, model)

    def run(self, backend: str) -> float:
        start = time.perf_counter()
        if backend == "opencv":
            self.opencv.setInput(self.x)
            self.opencv.forward()
        else:
            with torch.no_grad():
                self.engine.run({"image": torch.from_numpy(self.x)}, keep=["net_output"])
        return (time.perf_counter() - start) * 1000.0


def emit(bench, case, value, baseline, unit, **extra):
    row = {"bench": bench, "case": case, "preset": LIGHT_PRESET, "value": round(value, 4), "unit": unit,
           "baseline": round(baseline, 4), "baseline_name": f"{MODEL} ({FULL_PRESET} preset)",
           "ratio": round(baseline / value, 2) if value else None}
    row.update(extra)
    print(json.dumps(row), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64, one thread, one run: a smoke test")
    parser.add_argument("--runs", type=int, default=3, help="forward runs per case (median)")
    args = parser.parse_args(argv)
    light, full = deploy_net(LIGHT_PRESET), deploy_net(FULL_PRESET)
    sizes = {"368x368": (368, 368), "656x368": (368, 656)}
    for case, size in sizes.items():
        emit("gflops", f"{MODEL},{case}", count_flops(light[0], {None: (1, 3) + size}) / 1e9,
             count_flops(full[0], {None: (1, 3) + size}) / 1e9, "GFLOP")
    emit("params", MODEL, count_params(light[0], {None: (1, 3, 64, 64)}) / 1e6,
         count_params(full[0], {None: (1, 3, 64, 64)}) / 1e6, "M")
    size, label, runs = ((64, 64), "64x64", 1) if args.quick else ((368, 368), "368x368", args.runs)
    with TemporaryDirectory(prefix="light_models_") as tmp:
        nets = {"light": Forward(*light, Path(tmp), "light", size), "full": Forward(*full, Path(tmp), "full", size)}
        for threads in (1,) if args.quick else (1, 2):
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
            for backend in ("engine", "opencv"):
                times = {"light": [], "full": []}
                for net in nets.values():      # warm-up (first-call allocations, OpenCV's layer set-up)
                    net.run(backend)
                for _ in range(runs):
                    for name, net in nets.items():
                        times[name].append(net.run(backend))
                suffix = ",opencv" if backend == "opencv" else ""
                emit("forward_ms", f"{MODEL},{label},threads={threads}{suffix}", statistics.median(times["light"]),
                     statistics.median(times["full"]), "ms", engine=backend, runs=runs)


if __name__ == "__main__":
    main()
