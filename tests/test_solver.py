"""Caffe's solver update rules and lr policies against hand-written reference formulas."""
import math

import numpy as np
import pytest
import torch

from openpose_train.caffe_layers import caffe_pb2
from openpose_train.training.solver import (CaffeSolver, LearnableParam, SolverConfigError, learning_rate,
                                            solver_type_name)


def solver_param(**kw):
    p = caffe_pb2.SolverParameter()
    p.base_lr = kw.pop("base_lr", 0.1)
    p.lr_policy = kw.pop("lr_policy", "fixed")
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


W0 = [np.array([1.0, -2.0, 0.5]), np.array([[0.3, -0.7], [2.0, 0.0]])]
GRADS = [  # three iterations of fixed gradients per param
    [np.array([0.5, -1.0, 0.25]), np.array([[1.0, 0.2], [-0.3, 0.4]])],
    [np.array([-0.2, 0.3, 1.5]), np.array([[0.1, -0.6], [0.7, 0.05]])],
    [np.array([0.4, 0.4, -0.9]), np.array([[-0.5, 0.25], [0.2, -1.1]])],
]
LR_MULT = [1.0, 2.0]
DECAY_MULT = [1.0, 0.0]


def run_solver(p, iterations=3, lr_mult=LR_MULT, decay_mult=DECAY_MULT, grads=GRADS):
    tensors = [torch.tensor(w, dtype=torch.float32) for w in W0]
    params = [LearnableParam(t, lr, dm, f"layer{i}", 0) for i, (t, lr, dm) in enumerate(zip(tensors, lr_mult, decay_mult))]
    solver = CaffeSolver(p, params)
    for it in range(iterations):
        for t, g in zip(tensors, grads[it]):
            t.grad = torch.tensor(g, dtype=torch.float32)
        solver.apply_update()
        solver.iter += 1
    return [t.numpy().astype(np.float64) for t in tensors], solver


def reference(kind, p, iterations=3, lr=0.1, wd=0.0, l1=False):
    """Textbook formulas in float64, written out per solver (as documented by Caffe)."""
    w = [x.copy() for x in W0]
    h = [np.zeros_like(x) for x in W0]
    h2 = [np.zeros_like(x) for x in W0]
    mom, delta = p.momentum, p.delta
    for it in range(iterations):
        for i in range(len(w)):
            g = GRADS[it][i].copy()
            dec = wd * DECAY_MULT[i]
            g = g + dec * (np.sign(w[i]) if l1 else w[i])
            a = lr * LR_MULT[i]
            if kind == "SGD":
                h[i] = mom * h[i] + a * g
                upd = h[i]
            elif kind == "Nesterov":
                prev = h[i]
                h[i] = mom * h[i] + a * g
                upd = (1 + mom) * h[i] - mom * prev
            elif kind == "AdaGrad":
                h[i] = h[i] + g * g
                upd = a * g / (np.sqrt(h[i]) + delta)
            elif kind == "RMSProp":
                h[i] = p.rms_decay * h[i] + (1 - p.rms_decay) * g * g
                upd = a * g / (np.sqrt(h[i]) + delta)
            elif kind == "AdaDelta":
                h[i] = mom * h[i] + (1 - mom) * g * g
                step = g * np.sqrt((h2[i] + delta) / (h[i] + delta))
                h2[i] = mom * h2[i] + (1 - mom) * step * step
                upd = a * step
            elif kind == "Adam":
                b1, b2, t = mom, p.momentum2, it + 1
                h[i] = b1 * h[i] + (1 - b1) * g
                h2[i] = b2 * h2[i] + (1 - b2) * g * g
                upd = a * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * h[i] / (np.sqrt(h2[i]) + delta)
            w[i] = w[i] - upd
    return w, h, h2


CASES = [
    ("SGD", dict(momentum=0.9)),
    ("Nesterov", dict(momentum=0.9)),
    ("AdaGrad", dict(delta=1e-3)),
    ("RMSProp", dict(rms_decay=0.95, delta=1e-4)),
    ("AdaDelta", dict(momentum=0.95, delta=1e-6)),
    ("Adam", dict(momentum=0.9, momentum2=0.999, delta=1e-8)),
]


@pytest.mark.parametrize("kind,extra", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("reg", ["none", "L2", "L1"])
def test_update_rules_match_reference(kind, extra, reg):
    wd = 0.0 if reg == "none" else 0.05
    kw = dict(type=kind, weight_decay=wd, **extra)
    if reg == "L1":
        kw["regularization_type"] = "L1"
    p = solver_param(**kw)
    got, solver = run_solver(p)
    want, h, h2 = reference(kind, p, wd=wd, l1=(reg == "L1"))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
    # history layout: Caffe's SolverState.history order, two sets for Adam / AdaDelta
    hist = solver.history_arrays()
    expected_hist = h + h2 if kind in ("Adam", "AdaDelta") else h
    assert len(hist) == len(expected_hist)
    for a, b in zip(hist, expected_hist):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_sgd_first_step_by_hand():
    # w = 1, g = 0.5, lr 0.1, momentum 0.9, wd 0.01: update = 0.1 * (0.5 + 0.01 * 1) = 0.051
    t = torch.tensor([1.0])
    solver = CaffeSolver(solver_param(type="SGD", momentum=0.9, weight_decay=0.01), [LearnableParam(t)])
    t.grad = torch.tensor([0.5])
    solver.apply_update()
    assert t.item() == pytest.approx(1.0 - 0.051, abs=1e-7)
    solver.iter += 1
    # second step: history = 0.9 * 0.051 + 0.1 * (0.5 + 0.01 * 0.949) = 0.096849
    t.grad = torch.tensor([0.5])
    solver.apply_update()
    assert t.item() == pytest.approx(0.949 - 0.096849, abs=1e-6)


def test_adam_first_step_is_lr_times_sign():
    # Caffe's bias correction makes the first Adam step lr * g / (|g| + eps) = lr * sign(g)
    t = torch.tensor([1.0, 1.0])
    solver = CaffeSolver(solver_param(type="Adam", momentum=0.9, momentum2=0.999, base_lr=0.01), [LearnableParam(t)])
    t.grad = torch.tensor([3.0, -0.5])
    solver.apply_update()
    np.testing.assert_allclose(t.numpy(), [0.99, 1.01], atol=1e-6)


def test_iter_size_divides_accumulated_gradient():
    a = torch.tensor([1.0])
    solver = CaffeSolver(solver_param(type="SGD", iter_size=4), [LearnableParam(a)])
    a.grad = torch.tensor([2.0])  # sum of 4 passes
    solver.apply_update()
    assert a.item() == pytest.approx(1.0 - 0.1 * 0.5)


def test_clip_gradients_global_norm():
    a, b = torch.tensor([3.0]), torch.tensor([4.0])  # grad norm 5
    logs = []
    solver = CaffeSolver(solver_param(type="SGD", base_lr=1.0, clip_gradients=1.0),
                         [LearnableParam(torch.zeros(1)), LearnableParam(torch.zeros(1))],
                         log=lambda where, msg: logs.append(msg))
    solver.params[0].tensor.grad, solver.params[1].tensor.grad = a, b
    solver.apply_update()
    np.testing.assert_allclose([solver.params[0].tensor.item(), solver.params[1].tensor.item()], [-0.6, -0.8], rtol=1e-6)
    assert any("Gradient clipping" in m and "scale factor 0.2" in m for m in logs)


def test_lr_mult_zero_param_does_not_move():
    t = torch.tensor([1.0])
    solver = CaffeSolver(solver_param(type="Adam", momentum=0.9, weight_decay=0.1), [LearnableParam(t, lr_mult=0.0)])
    t.grad = None  # a param that needs no backward: Caffe's diff stays 0
    solver.apply_update()
    assert t.item() == 1.0


LR_CASES = [
    ("fixed", {}, 1000, 0.01),
    ("step", dict(stepsize=10, gamma=0.1), 25, 0.01 * 0.1 ** 2),
    ("exp", dict(gamma=0.9), 3, 0.01 * 0.729),
    ("inv", dict(gamma=1e-4, power=0.75), 100, 0.01 * 1.01 ** -0.75),
    ("poly", dict(power=2.0, max_iter=100), 25, 0.01 * 0.75 ** 2),
    ("sigmoid", dict(gamma=0.1, stepsize=50), 50, 0.005),
    ("sigmoid", dict(gamma=0.1, stepsize=50), 60, 0.01 / (1 + math.exp(-1.0))),
]


@pytest.mark.parametrize("policy,kw,it,want", LR_CASES)
def test_lr_policies(policy, kw, it, want):
    p = solver_param(base_lr=0.01, lr_policy=policy, **kw)
    rate, _ = learning_rate(p, it, 0)
    assert rate == pytest.approx(want, rel=1e-6)


def test_multistep_matches_openpose_schedule():
    # openpose_train's solver: base 1e-4, gamma 0.5, the 10 stepvalues of pose_solver.prototxt
    steps = [200000, 300000, 360000, 420000, 480000, 540000, 600000, 700000, 800000, 900000]
    p = solver_param(base_lr=1e-4, lr_policy="multistep", gamma=0.5, stepvalue=steps)
    table = [(0, 1e-4), (199999, 1e-4), (200000, 5e-5), (299999, 5e-5), (300000, 2.5e-5), (360000, 1.25e-5),
             (420000, 6.25e-6), (480000, 3.125e-6), (540000, 1.5625e-6), (600000, 7.8125e-7),
             (700000, 3.90625e-7), (800000, 1.953125e-7), (900000, 9.765625e-8), (999999, 9.765625e-8)]
    step = 0
    for it, want in table:
        rate, step = learning_rate(p, it, step)
        assert rate == pytest.approx(want, rel=1e-6), it


def test_multistep_advances_one_step_per_call_like_caffe():
    p = solver_param(base_lr=1.0, lr_policy="multistep", gamma=0.5, stepvalue=[10, 20])
    rate, step = learning_rate(p, 25, 0)  # resumed far past two steps with current_step 0
    assert (rate, step) == (0.5, 1)
    rate, step = learning_rate(p, 26, step)
    assert (rate, step) == (0.25, 2)


def test_solver_type_enum_and_string():
    p = caffe_pb2.SolverParameter()
    assert solver_type_name(p) == "SGD"
    p.solver_type = caffe_pb2.SolverParameter.ADAM
    assert solver_type_name(p) == "Adam"
    p.type = "Adam"
    assert solver_type_name(p) == "Adam"
    p.type = "SGD"
    with pytest.raises(SolverConfigError, match="cannot both"):
        solver_type_name(p)
    with pytest.raises(SolverConfigError, match="unknown solver type"):
        solver_type_name(solver_param(type="Adamax"))


@pytest.mark.parametrize("kw,match", [
    (dict(type="AdaGrad", momentum=0.9), "momentum cannot be used"),
    (dict(lr_policy="cosine"), "unknown lr_policy"),
    (dict(regularization_type="L3"), "regularization_type"),
    (dict(lr_policy="multistep", stepvalue=[10, 5]), "strictly increasing"),
])
def test_bad_solver_values(kw, match):
    with pytest.raises(SolverConfigError, match=match):
        CaffeSolver(solver_param(**kw), [LearnableParam(torch.zeros(1))])


def test_history_restore_checks_count_and_shape():
    solver = CaffeSolver(solver_param(type="Adam"), [LearnableParam(torch.zeros(2, 3), layer_name="conv1")])
    with pytest.raises(SolverConfigError, match="incorrect length of history"):
        solver.load_history([np.zeros((2, 3))])
    with pytest.raises(SolverConfigError, match="conv1"):
        solver.load_history([np.zeros((2, 3)), np.zeros(5)])
    solver.load_history([np.ones((2, 3)), np.full((2, 3), 2.0)])
    assert solver.history[1].sum().item() == 12.0


def test_benchmark_quick_prints_json_lines():
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "solver_update.py"
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["case"].split(",")[0] for r in rows] == ["Adam", "SGD"]
    for r in rows:
        assert r["bench"] == "solver_update_ms" and r["unit"] == "ms"
        assert r["value"] > 0 and r["baseline"] > 0 and r["baseline_name"].startswith("torch.optim.")
