"""Training-iteration time of the Caffe engine (CaffeNet built from the generator's training prototxt)
against a hand-written torch module of the same network and batch, measured in the same run.

One iteration = forward, the weighted per-stage Euclidean losses, backward, SGD step (momentum 0.9,
weight decay 5e-4) on random image/label tensors of the OPData shapes. The hand-written module gets the
engine's weights, and the two initial losses must agree (same network), before timing alternates between
the two so machine noise hits both alike; the figure is the median iteration.

Prints JSON lines (``benchmarks/`` convention):

* ``engine_overhead_pct`` ``tiny,batch=4,crop=128``: 100 * (engine / hand-written - 1) (target <= 5);
* ``iter_s`` ``BODY_25,368,cpu,batch=1``: engine s/iter, baseline the hand-written module;
* ``gpu_images_per_s`` ``BODY_25,368,batch=10,fp32`` and ``...,bf16`` (bf16 autocast + channels_last via
  ``configure_precision``), only where CUDA is available; baseline = the hand-written module, same precision.

``--quick`` runs few iterations (and BODY_25 on CPU at 184x184; the case name says so).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from openpose_train.caffe_layers.net import CaffeNet, configure_precision
from openpose_train.generator import families
from openpose_train.generator.registry import get_model
from openpose_train.generator.render import render_training


# ---------------------------------------------------------------------------------------------------------
# the hand-written network (BODY_25 family: VGG front end + CPM convs, PAF stages, then heatmap stages)


class HandWrittenPoseNet(nn.Module):
    """BODY_25-style pose net and its training losses written directly in torch.

    Layer names follow the Caffe files so that the engine's weights can be copied in."""

    def __init__(self, family: families.DenseFamily, heat_channels: int, paf_channels: int):
        super().__init__()
        front = family.front_end
        self.convs = nn.ModuleDict()
        self.prelus = nn.ModuleDict()
        self.front_plan: List[tuple] = []   # ("conv", name, act_name, act_kind) | ("pool",)
        cin = 3
        prelu_on = False
        for b, widths in enumerate(front.blocks, start=1):
            for i, width in enumerate(widths, start=1):
                name = f"conv{b}_{i}"
                self.convs[name] = nn.Conv2d(cin, width, 3, padding=1)
                prelu_on = prelu_on or name == front.prelu_from
                if prelu_on:
                    self.prelus[f"prelu{b}_{i}"] = nn.PReLU(width)
                    self.front_plan.append(("conv", name, f"prelu{b}_{i}"))
                else:
                    self.front_plan.append(("conv", name, None))
                cin = width
            if b <= 3:
                self.front_plan.append(("pool",))
        last = len(front.blocks)
        for i, (width, kernel) in enumerate(front.cpm, start=len(front.blocks[-1]) + 1):
            name = f"conv{last}_{i}_CPM"
            self.convs[name] = nn.Conv2d(cin, width, kernel, padding=kernel // 2)
            self.prelus[f"prelu{last}_{i}_CPM"] = nn.PReLU(width)
            self.front_plan.append(("conv", name, f"prelu{last}_{i}_CPM"))
            cin = width
        features = cin
        self.paf_stages, self.heat_stages = [], []
        for s, stage in enumerate(family.paf_stages):
            inputs = features + (paf_channels if s else 0)
            self.paf_stages.append(self._stage(s, "L2", inputs, stage, paf_channels))
        for s, stage in enumerate(family.heat_stages):
            inputs = features + (heat_channels if s else 0) + paf_channels
            self.heat_stages.append(self._stage(s, "L1", inputs, stage, heat_channels))
        self.paf_channels, self.heat_channels = paf_channels, heat_channels

    def _stage(self, s, branch, cin, stage, cout):
        names = []
        for c in range(1, stage.blocks + 1):
            block = []
            for j in range(3):
                conv = f"Mconv{c}_stage{s}_{branch}_{j}"
                self.convs[conv] = nn.Conv2d(cin if j == 0 else stage.width, stage.width, 3, padding=1)
                self.prelus[f"Mprelu{c}_stage{s}_{branch}_{j}"] = nn.PReLU(stage.width)
                block.append((conv, f"Mprelu{c}_stage{s}_{branch}_{j}"))
            names.append(block)
            cin = 3 * stage.width
        c = stage.blocks + 1
        self.convs[f"Mconv{c}_stage{s}_{branch}"] = nn.Conv2d(cin, stage.mid, 1)
        self.prelus[f"Mprelu{c}_stage{s}_{branch}"] = nn.PReLU(stage.mid)
        self.convs[f"Mconv{c + 1}_stage{s}_{branch}"] = nn.Conv2d(stage.mid, cout, 1)
        return names, (f"Mconv{c}_stage{s}_{branch}", f"Mprelu{c}_stage{s}_{branch}"), f"Mconv{c + 1}_stage{s}_{branch}"

    def _run_stage(self, plan, x):
        blocks, (mid, mid_act), out = plan
        for block in blocks:
            parts = []
            for conv, act in block:
                x = self.prelus[act](self.convs[conv](x))
                parts.append(x)
            x = torch.cat(parts, 1)
        x = self.prelus[mid_act](self.convs[mid](x))
        return self.convs[out](x)

    def forward(self, image, label):
        x = image
        for step in self.front_plan:
            if step[0] == "pool":
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            else:
                x = self.convs[step[1]](x)
                x = self.prelus[step[2]](x) if step[2] else F.relu(x)
        features = x
        p, h = self.paf_channels, self.heat_channels
        vec_weight, heat_weight = label[:, :p], label[:, p:p + h]
        label_vec = vec_weight * label[:, p + h:2 * p + h]
        label_heat = heat_weight * label[:, 2 * p + h:]
        n = image.shape[0]
        total = 0.0
        paf = None
        for s, plan in enumerate(self.paf_stages):
            paf = self._run_stage(plan, features if s == 0 else torch.cat([features, paf], 1))
            total = total + ((paf * vec_weight - label_vec).float() ** 2).sum() / (2 * n)
        heat = None
        for s, plan in enumerate(self.heat_stages):
            inputs = [features] + ([heat] if heat is not None else []) + [paf]
            heat = self._run_stage(plan, torch.cat(inputs, 1))
            total = total + ((heat * heat_weight - label_heat).float() ** 2).sum() / (2 * n)
        return total

    def copy_caffe_weights(self, weights: Dict[str, Sequence]):
        with torch.no_grad():
            for name, blobs in weights.items():
                module = self.convs[name] if name in self.convs else self.prelus[name]
                module.weight.copy_(torch.as_tensor(blobs[0]))
                if len(blobs) > 1:
                    module.bias.copy_(torch.as_tensor(blobs[1]))


# ---------------------------------------------------------------------------------------------------------
# timing


def make_pair(preset: str, batch: int, crop: int, device, bf16=False, channels_last=False):
    """(engine net, hand-written module, inputs) with the same weights."""
    from google.protobuf import text_format

    from openpose_train.caffe_layers import caffe_pb2
    net_param = caffe_pb2.NetParameter()
    text_format.Merge(render_training("BODY_25", preset=preset, batch_size=batch, crop_size=(crop, crop)),
                      net_param)
    model = get_model("BODY_25")
    engine = CaffeNet(net_param, phase="TRAIN", seed=1)
    hand = HandWrittenPoseNet(families.get_preset(preset).family,
                              model.num_parts + int(model.has_background), 2 * model.num_pafs)
    hand.copy_caffe_weights(engine.caffe_weights())
    g = torch.Generator().manual_seed(0)
    inputs = {name: torch.rand(tuple(shape), generator=g) for name, shape in engine.input_blobs.items()}
    inputs["image"] -= 0.5
    configure_precision(engine, device, bf16=bf16, channels_last=channels_last)
    hand.to(device)
    if channels_last:
        hand.to(memory_format=torch.channels_last)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    return engine, hand, inputs


def _hand_step(hand, inputs, bf16, channels_last):
    image = inputs["image"]
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    if bf16:
        with torch.autocast(image.device.type, dtype=torch.bfloat16):
            return hand(image, inputs["label"])
    return hand(image, inputs["label"])


@dataclass
class PairTiming:
    engine_s: float          # median seconds per iteration
    hand_s: float
    ratio: float             # median of the per-round engine / hand ratios (paired, noise-robust)
    engine_min_s: float
    hand_min_s: float


def time_pair(engine, hand, inputs, iterations, warmup=1, bf16=False, channels_last=False, check=True):
    """Seconds per iteration of the engine and the hand-written module, alternating the two."""
    device = inputs["image"].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opts = [torch.optim.SGD(engine.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4),
            torch.optim.SGD(hand.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4)]

    def engine_loss():
        return engine.total_loss(engine(inputs))

    def hand_loss():
        return _hand_step(hand, inputs, bf16, channels_last)

    if check:
        with torch.no_grad():
            a, b = float(engine_loss()), float(hand_loss())
        tol = 2e-2 if bf16 else 1e-4
        if abs(a - b) > tol * max(1.0, abs(b)):
            raise SystemExit(f"engine and hand-written losses differ: {a} vs {b} (not the same network)")
    steps = ((engine_loss, opts[0]), (hand_loss, opts[1]))
    times = ([], [])
    for it in range(warmup + iterations):
        # alternate which runs first, so slow drifts of a shared machine hit both alike
        order = (0, 1) if it % 2 == 0 else (1, 0)
        for k in order:
            fn, opt = steps[k]
            sync()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = fn()
            loss.backward()
            opt.step()
            sync()
            if it >= warmup:
                times[k].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(*times)]
    return PairTiming(statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios),
                      min(times[0]), min(times[1]))


def emit(bench, case, value, unit, baseline, baseline_name, **extra):
    print(json.dumps({"bench": bench, "case": case, "value": round(value, 6), "unit": unit,
                      "baseline": None if baseline is None else round(baseline, 6),
                      "baseline_name": baseline_name, **extra}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--skip-body25-cpu", action="store_true", help="leave out the BODY_25 CPU case")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a loaded machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    threads = torch.get_num_threads()

    tiny_iters = 4 if args.quick else 40
    engine, hand, inputs = make_pair("tiny", 4, 128, "cpu")
    t = time_pair(engine, hand, inputs, tiny_iters, warmup=1 if args.quick else 3)
    emit("engine_overhead_pct", "tiny,batch=4,crop=128", 100.0 * (t.ratio - 1.0), "%", 0.0,
         "hand-written torch module (0 = no overhead)", engine_s=t.engine_s, hand_s=t.hand_s,
         engine_min_s=t.engine_min_s, hand_min_s=t.hand_min_s, iterations=tiny_iters, threads=threads,
         quick=args.quick, target_max=5.0)

    if not args.skip_body25_cpu:
        crop = 184 if args.quick else 368
        engine, hand, inputs = make_pair("body_25", 1, crop, "cpu")
        iters = 1 if args.quick else 4
        t = time_pair(engine, hand, inputs, iters, warmup=0 if args.quick else 1)
        emit("iter_s", f"BODY_25,{crop},cpu,batch=1", t.engine_s, "s/iter", t.hand_s, "hand-written torch module",
             engine_min_s=t.engine_min_s, hand_min_s=t.hand_min_s, iterations=iters, threads=threads,
             quick=args.quick, reference_s=3.6 if crop == 368 else None)
        del engine, hand

    if torch.cuda.is_available():
        iters = 3 if args.quick else 20
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            engine, hand, inputs = make_pair("body_25", 10, 368, "cuda", bf16=bf16, channels_last=bf16)
            t = time_pair(engine, hand, inputs, iters, warmup=3, bf16=bf16, channels_last=bf16)
            emit("gpu_images_per_s", f"BODY_25,368,batch=10,{precision}", 10 / t.engine_s, "images/s",
                 10 / t.hand_s, "hand-written torch module, same precision", iterations=iters,
                 device=torch.cuda.get_device_name(0), channels_last=bf16, quick=args.quick)
            del engine, hand, inputs
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
