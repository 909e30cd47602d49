"""Solver update speed: one Caffe ``ApplyUpdate`` of ``training.solver.CaffeSolver`` over BODY_25-sized params.

``value`` is the median time of ``CaffeSolver.apply_update`` (Caffe's Adam / SGD rules with weight decay,
lr_mult / decay_mult groups as in the generated nets); ``baseline`` is torch.optim (Adam / SGD with
momentum and weight_decay, its default foreach implementation) on the same params and gradients,
measured in the same run.

    python benchmarks/solver_update.py [--quick]
"""
import argparse
import json
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import torch  # noqa: E402

from openpose_train.caffe_layers import caffe_pb2  # noqa: E402
from openpose_train.training.solver import CaffeSolver, LearnableParam  # noqa: E402


def body25_like_shapes(scale: float):
    """Conv weight/bias shapes adding up to about 26M * scale parameters (BODY_25 has 26.2M)."""
    shapes = []
    for _ in range(max(1, int(60 * scale))):
        shapes += [(128, 128, 3, 3), (128,)]
    for _ in range(max(1, int(6 * scale))):
        shapes += [(512, 128, 7, 7), (512,)]
    return shapes


def timed(step, params, grads, repeats):
    times = []
    for _ in range(repeats):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small params, few repeats (smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    scale, repeats = (0.05, 3) if args.quick else (1.0, 7)
    shapes = body25_like_shapes(scale)
    torch.manual_seed(0)
    for kind in ("Adam", "SGD"):
        params = [torch.nn.Parameter(torch.randn(s) * 0.01) for s in shapes]
        grads = [torch.randn(s) * 0.01 for s in shapes]
        count = sum(p.numel() for p in params)
        # biases: lr_mult 2, decay_mult 0 (as the generated nets); weights: 1 / 1
        specs = [LearnableParam(p, 2.0 if p.dim() == 1 else 1.0, 0.0 if p.dim() == 1 else 1.0) for p in params]
        sp = caffe_pb2.SolverParameter(type=kind, base_lr=1e-4, momentum=0.9, momentum2=0.999, weight_decay=5e-4,
                                       lr_policy="fixed")
        solver = CaffeSolver(sp, specs)
        groups = [{"params": [p for p in params if p.dim() > 1], "lr": 1e-4, "weight_decay": 5e-4},
                  {"params": [p for p in params if p.dim() == 1], "lr": 2e-4, "weight_decay": 0.0}]
        opt = torch.optim.Adam(groups) if kind == "Adam" else torch.optim.SGD(groups, momentum=0.9)

        def ours():
            solver.apply_update()
            solver.iter += 1
        ours()
        opt.step()  # warm-up both (history allocation)
        value = timed(ours, params, grads, repeats)
        baseline = timed(opt.step, params, grads, repeats)
        print(json.dumps({"bench": "solver_update_ms", "case": f"{kind},params={count / 1e6:.1f}M,cpu",
                          "value": round(value * 1e3, 2), "unit": "ms", "baseline": round(baseline * 1e3, 2),
                          "baseline_name": f"torch.optim.{type(opt).__name__} (foreach)",
                          "threads": torch.get_num_threads(), "repeats": repeats}), flush=True)


if __name__ == "__main__":
    main()
