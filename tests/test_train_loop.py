"""The training loop and `openpose-train train`: snapshots, exact resume, signals, NaN guard, logs, DDP."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from openpose_train.caffe_layers import caffe_io
from openpose_train.caffe_layers.net import CaffeNet
from openpose_train.training.cli import train
from openpose_train.training.data_sources import BatchSource
from openpose_train.training.loop import Trainer, TrainOptions

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } shape { dim: 2 dim: 3 dim: 6 dim: 6 }
    data_filler { type: "gaussian" std: 1.0 } data_filler { type: "constant" value: 0.2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv2" bottom: "label" top: "loss" }
"""

DEPLOY = """
name: "tiny"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 3 kernel_size: 1 } }
"""

SOLVER = """
net: "net.prototxt"
type: "Adam"
base_lr: 0.01
momentum: 0.9
momentum2: 0.999
weight_decay: 0.0005
lr_policy: "multistep"
gamma: 0.5
stepvalue: 7
stepvalue: 15
display: 5
average_loss: 3
max_iter: 20
snapshot: 10
snapshot_prefix: "model/pose"
random_seed: 3
"""


def make_dir(tmp_path, name="run", solver=SOLVER, net=NET):
    d = tmp_path / name
    d.mkdir()
    (d / "net.prototxt").write_text(net)
    (d / "solver.prototxt").write_text(solver)
    return d


def run_cli(args, cwd):
    """Run the click command in-process in ``cwd``; returns the click Result."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(train, args + ["--no-progress", "--workers", "0"], catch_exceptions=False)
    finally:
        os.chdir(old)


# ---- snapshots and exact resume -------------------------------------------------------------------
def test_exact_resume_20_equals_10_plus_10(tmp_path):
    straight = make_dir(tmp_path, "straight")
    r = run_cli(["-solver", "solver.prototxt"], straight)
    assert r.exit_code == 0, r.output
    split = make_dir(tmp_path, "split")
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "10"], split)
    assert r.exit_code == 0, r.output
    assert not (split / "model/pose_iter_20.caffemodel").exists()
    r = run_cli(["-solver", "solver.prototxt", "--snapshot=model/pose_iter_10.solverstate"], split)
    assert r.exit_code == 0, r.output
    a = caffe_io.read_caffemodel(straight / "model/pose_iter_20.caffemodel")
    b = caffe_io.read_caffemodel(split / "model/pose_iter_20.caffemodel")
    assert list(a) == list(b) == ["conv1", "conv2"]
    for layer in a:
        for x, y in zip(a[layer], b[layer]):
            assert np.array_equal(x, y), layer
    sa = caffe_io.read_solverstate(straight / "model/pose_iter_20.solverstate")
    sb = caffe_io.read_solverstate(split / "model/pose_iter_20.solverstate")
    assert sa.iter == sb.iter == 20 and sa.current_step == sb.current_step == 2
    assert all(np.array_equal(x, y) for x, y in zip(sa.history, sb.history))
    # weights moved, so equality is not vacuous
    init = caffe_io.read_caffemodel(straight / "model/pose_iter_10.caffemodel")
    assert not np.array_equal(init["conv1"][0], a["conv1"][0])


def test_resume_without_trainstate_warns_and_still_restores_weights(tmp_path):
    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d).exit_code == 0
    (d / "model/pose_iter_10.trainstate").unlink()
    # as written by Caffe on another machine: an absolute learned_net that does not exist here
    st = caffe_io.read_solverstate(d / "model/pose_iter_10.solverstate")
    caffe_io.write_solverstate(d / "model/pose_iter_10.solverstate", iter=st.iter, current_step=st.current_step,
                               learned_net="/home/gines/openpose_train/model/pose_iter_10.caffemodel", history=st.history)
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "model/pose_iter_10.solverstate"], d)
    assert r.exit_code == 0, r.output
    assert "the data order starts afresh" in r.output
    assert (d / "model/pose_iter_20.solverstate").exists()


def test_snapshot_files_are_caffe_files(tmp_path):
    cv2 = pytest.importorskip("cv2")
    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d).exit_code == 0
    state = caffe_io.read_solverstate(d / "model/pose_iter_10.solverstate")
    assert state.iter == 10 and state.learned_net == "model/pose_iter_10.caffemodel"
    # Adam: first moments then second moments, one per learnable blob (conv1 w, b, conv2 w, b)
    shapes = [h.shape for h in state.history]
    assert shapes == [(4, 2, 3, 3), (4,), (3, 4, 1, 1), (3,)] * 2
    assert np.all(state.history[4] >= 0) and np.any(state.history[4] > 0)
    # the caffemodel loads in OpenCV's independent Caffe reader and matches the torch engine
    (d / "deploy.prototxt").write_text(DEPLOY)
    cvnet = cv2.dnn.readNetFromCaffe(str(d / "deploy.prototxt"), str(d / "model/pose_iter_10.caffemodel"))
    x = np.random.RandomState(0).randn(1, 2, 6, 6).astype(np.float32)
    cvnet.setInput(x)
    ref = cvnet.forward("conv2")
    eng = CaffeNet(caffe_io.read_net_prototxt(d / "deploy.prototxt"), phase="TEST")
    eng.load_caffe_weights(str(d / "model/pose_iter_10.caffemodel"), allow_missing=False)
    with torch.no_grad():
        out = eng.forward({"data": torch.from_numpy(x)})["conv2"].numpy()
    assert np.abs(out - ref).max() < 1e-4


# ---- log lines, parse_log.py, metrics ------------------------------------------------------------------
def parse_log_like_caffe(path):
    """A re-implementation of Caffe's tools/extra/parse_log.py (its regexes and row logic)."""
    regex_iteration = re.compile(r'Iteration (\d+)')
    regex_train_output = re.compile(r'Train net output #(\d+): (\S+) = ([\.\deE+-]+)')
    regex_learning_rate = re.compile(r'lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)')

    def extract_datetime(line, year):
        line = line.strip().split()
        month, day = int(line[0][1:3]), int(line[0][3:5])
        timestamp = line[1]
        pos = timestamp.rfind('.')
        hour, minute, second = [int(x) for x in timestamp[:pos].split(':')]
        return datetime(year, month, day, hour, minute, second, int(timestamp[pos + 1:]))

    year = datetime.now().year
    lines = Path(path).read_text().splitlines()
    start = next(extract_datetime(l, year) for l in lines if 'Solving' in l)
    iteration, lr, rows, row = -1, float('NaN'), [], None
    for line in lines:
        m = regex_iteration.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        try:
            t = extract_datetime(line, year)
        except ValueError:
            continue
        seconds = (t - start).total_seconds()
        m = regex_learning_rate.search(line)
        if m:
            lr = float(m.group(1))
        m = regex_train_output.search(line)
        if m:
            if not row or row['NumIters'] != iteration:
                if row:
                    rows.append(row)
                row = OrderedDict([('NumIters', iteration), ('Seconds', seconds), ('LearningRate', lr)])
            row[m.group(2)] = float(m.group(3))
        if row and len(rows) >= 1 and len(row) == len(rows[0]):
            rows.append(row)
            row = None
    if row:
        rows.append(row)
    return rows


def test_log_parses_with_caffe_parse_log_and_metrics_agree(tmp_path):
    d = make_dir(tmp_path)
    r = run_cli(["-solver", "solver.prototxt", "--log", "training_log.txt"], d)
    assert r.exit_code == 0, r.output
    log_text = (d / "training_log.txt").read_text()
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ solver\.cpp:218\] Iteration 5 \([\d.e+-]+ iter/s, "
                     r"[\d.e+-]+s/5 iters\), loss = [\d.e+-]+$", log_text, re.M)
    assert "Snapshotting to binary proto file model/pose_iter_10.caffemodel" in log_text
    assert "Optimization Done." in log_text
    rows = parse_log_like_caffe(d / "training_log.txt")
    assert [r_['NumIters'] for r_ in rows] == [0, 5, 10, 15]
    # parse_log attaches the lr printed most recently, as with Caffe's logs (NaN before the first one)
    assert np.isnan(rows[0]['LearningRate'])
    assert [r_["LearningRate"] for r_ in rows[1:]] == [0.01, 0.01, 0.005]
    metrics = [json.loads(l) for l in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(20))
    by_iter = {m["iteration"]: m for m in metrics}
    for row in rows:
        m = by_iter[int(row['NumIters'])]
        assert row['loss'] == pytest.approx(m["outputs"]["loss"], rel=1e-5)
    # smoothed loss over average_loss = 3 iterations, as Caffe's UpdateSmoothedLoss
    assert by_iter[5]["smoothed_loss"] == pytest.approx(np.mean([by_iter[i]["loss"] for i in (3, 4, 5)]), rel=1e-6)
    assert by_iter[7]["lr"] == pytest.approx(0.005) and by_iter[6]["lr"] == pytest.approx(0.01)


# ---- weights, bad files -------------------------------------------------------------------------------
def test_weights_copy_by_name_and_report(tmp_path):
    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d).exit_code == 0
    w = caffe_io.read_caffemodel(d / "model/pose_iter_10.caffemodel")
    w["extra_layer"] = [np.zeros(3, np.float32)]
    caffe_io.write_caffemodel(d / "init.caffemodel", w)
    d2 = make_dir(tmp_path, "ft", solver=SOLVER.replace("snapshot: 10", "snapshot: 0").replace("max_iter: 20", "max_iter: 0"))
    r = run_cli(["-solver", "solver.prototxt", "-weights", "../run/init.caffemodel"], d2)
    assert r.exit_code == 0, r.output
    assert "Ignoring source layer extra_layer" in r.output
    assert "matched layers: conv1, conv2" in r.output
    got = caffe_io.read_caffemodel(d2 / "model/pose_iter_0.caffemodel")
    assert np.array_equal(got["conv1"][0], w["conv1"][0])


def test_weights_shape_mismatch_names_both_shapes(tmp_path):
    d = make_dir(tmp_path)
    caffe_io.write_caffemodel(d / "bad.caffemodel", {"conv1": [np.zeros((5, 2, 3, 3), np.float32), np.zeros(5, np.float32)]})
    r = run_cli(["-solver", "solver.prototxt", "-weights", "bad.caffemodel"], d)
    assert r.exit_code != 0
    assert "bad.caffemodel" in r.output and "conv1" in r.output
    assert "5" in r.output and "4" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("case", ["missing_solver", "solver_syntax", "missing_net", "net_syntax", "unknown_layer",
                                  "unknown_bottom", "bad_policy", "snapshot_and_weights", "missing_snapshot",
                                  "corrupt_snapshot", "no_data_layer"])
def test_bad_files_give_clear_errors(tmp_path, case):
    d = make_dir(tmp_path)
    args = ["-solver", "solver.prototxt"]
    expect = "solver.prototxt"
    if case == "missing_solver":
        args = ["-solver", "nope.prototxt"]
        expect = "nope.prototxt: solver file not found"
    elif case == "solver_syntax":
        (d / "solver.prototxt").write_text("base_lr: 0.1\nmax_itr: 3\n")
        expect = "solver.prototxt:2"
    elif case == "missing_net":
        (d / "net.prototxt").unlink()
        expect = "net file 'net.prototxt' not found"
    elif case == "net_syntax":
        (d / "net.prototxt").write_text("layer { name: 'a' type: }\n")
        expect = "net.prototxt:1"
    elif case == "unknown_layer":
        (d / "net.prototxt").write_text(NET.replace('type: "ReLU"', 'type: "Swish"'))
        expect = "relu1"
    elif case == "unknown_bottom":
        (d / "net.prototxt").write_text(NET.replace('bottom: "conv2" bottom: "label"', 'bottom: "conv3" bottom: "label"'))
        expect = "conv3"
    elif case == "bad_policy":
        (d / "solver.prototxt").write_text(SOLVER.replace('"multistep"', '"cosine"'))
        expect = "unknown lr_policy 'cosine'"
    elif case == "snapshot_and_weights":
        args += ["-snapshot", "a.solverstate", "-weights", "b.caffemodel"]
        expect = "not both"
    elif case == "missing_snapshot":
        args += ["-snapshot", "model/nothing.solverstate"]
        expect = "model/nothing.solverstate: solverstate not found"
    elif case == "corrupt_snapshot":
        (d / "x.solverstate").write_bytes(b"\x08\x0a\x12\xff\xff")
        args += ["-snapshot", "x.solverstate"]
        expect = "x.solverstate"
    elif case == "no_data_layer":
        (d / "net.prototxt").write_text(NET.replace('type: "DummyData"', 'type: "Input"').replace(
            "dummy_data_param", "input_param").replace('data_filler { type: "gaussian" std: 1.0 } data_filler { type: "constant" value: 0.2 }', ""))
        expect = "cannot read inputs"
    r = run_cli(args, d)
    assert r.exit_code != 0, r.output
    assert expect in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_gpu_flag_without_cuda_is_a_clear_error(tmp_path):
    d = make_dir(tmp_path)
    r = run_cli(["-solver", "solver.prototxt", "-gpu", "0"], d)
    assert r.exit_code != 0 and "no CUDA device" in r.output


# ---- NaN guard ------------------------------------------------------------------------------------------
def test_nan_loss_stops_with_iteration_and_last_snapshot(tmp_path):
    solver = SOLVER.replace('type: "Adam"', 'type: "SGD"').replace("base_lr: 0.01", "base_lr: 50").replace(
        "snapshot: 10", "snapshot: 2").replace("max_iter: 20", "max_iter: 200")
    d = make_dir(tmp_path, solver=solver)
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert r.exit_code != 0
    m = re.search(r"Iteration (\d+): loss is (nan|inf).*last good snapshot: (\S+\.solverstate)", r.output)
    assert m, r.output
    it, snap = int(m.group(1)), m.group(3)
    assert (d / snap).exists()
    assert caffe_io.read_solverstate(d / snap).iter == it // 2 * 2
    metrics = [json.loads(l) for l in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["iteration"] == it - 1 and np.isfinite(metrics[-1]["loss"])


# ---- signals (a real process) -----------------------------------------------------------------------------
def spawn_endless_training(tmp_path, snapshot_interval, project=None, workers=0):
    """`openpose-train train` in a subprocess on a never-ending solver, logging every iteration: the
    DummyData net, or a copy of ``project`` (a generated folder, e.g. tiny_project) with ``workers``."""
    if project is None:
        d, solver_file = make_dir(tmp_path), "solver.prototxt"
    else:
        import shutil
        d, solver_file = tmp_path / "run", "pose_solver.prototxt"
        shutil.copytree(project, d, ignore=shutil.ignore_patterns("model"))
    solver = (d / solver_file).read_text()
    for name, value in (("max_iter", 100000000), ("snapshot", snapshot_interval), ("display", 1)):
        solver = re.sub(rf"^{name}: .*$", f"{name}: {value}", solver, flags=re.M)
    (d / solver_file).write_text(solver)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([PY, "-m", "openpose_train.cli", "train", "-solver", solver_file, "--workers",
                             str(workers)], cwd=d, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    return d, proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_snapshots_then_exits(tmp_path, sig):
    d, proc = spawn_endless_training(tmp_path, 0)
    lines = []
    deadline = time.time() + 60
    for line in proc.stderr:
        lines.append(line)
        if "Iteration 3 " in line or time.time() > deadline:
            break
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "Optimization stopped early." in out
    snaps = sorted(d.glob("model/pose_iter_*.solverstate"))
    assert len(snaps) == 1, out
    n = int(re.search(r"_iter_(\d+)\.solverstate", snaps[0].name).group(1))
    assert n >= 4
    state = caffe_io.read_solverstate(snaps[0])
    assert state.iter == n and (d / state.learned_net).exists()
    assert not list(d.glob("model/*.tmp*")) and not list(d.glob("model/.*.tmp"))


def test_kill_9_loses_at_most_one_snapshot_interval(tmp_path):
    d, proc = spawn_endless_training(tmp_path, 2)
    reached = 0
    deadline = time.time() + 60
    for line in proc.stderr:
        m = re.search(r"\] Iteration (\d+) \(", line)
        if m:
            reached = int(m.group(1))
        if reached >= 9 or time.time() > deadline:
            break
    proc.kill()
    proc.wait(timeout=30)
    states = sorted(d.glob("model/pose_iter_*.solverstate"), key=lambda p: int(re.search(r"_iter_(\d+)", p.name).group(1)))
    assert states
    last = int(re.search(r"_iter_(\d+)", states[-1].name).group(1))
    assert reached - last <= 2, (reached, last)
    r = run_cli(["-solver", "solver.prototxt", "-iterations", str(last + 2), "-snapshot", f"model/{states[-1].name}"], d)
    assert r.exit_code == 0, r.output
    assert caffe_io.read_solverstate(d / f"model/pose_iter_{last + 2}.solverstate").iter == last + 2


# ---- external caffe binary ----------------------------------------------------------------------------------
FAKE_CAFFE = """#!/usr/bin/env python3
import sys
args = sys.argv[1:]
assert args[0] == "train", args
print("I1124 23:49:38.000001 12345 caffe.cpp:218] args " + " ".join(args[1:]), file=sys.stderr)
print("I1124 23:49:38.100000 12345 solver.cpp:289] Solving fake", file=sys.stderr)
for it, loss, lr in ((0, 2.5, 0.001), (20, 1.25, 0.001), (40, 0.625, 0.0005)):
    print(f"I1124 23:49:39.{it:06d} 12345 solver.cpp:218] Iteration {it} (3.2 iter/s, 6.2s/20 iters), loss = {loss}", file=sys.stderr)
    print(f"I1124 23:49:39.{it:06d} 12345 solver.cpp:237]     Train net output #0: loss_stage0_L1 = {loss / 2} (* 1 = {loss / 2} loss)", file=sys.stderr)
    print(f"I1124 23:49:39.{it:06d} 12345 solver.cpp:237]     Train net output #1: loss_stage0_L2 = {loss / 2} (* 1 = {loss / 2} loss)", file=sys.stderr)
    print(f"I1124 23:49:39.{it:06d} 12345 sgd_solver.cpp:105] Iteration {it}, lr = {lr}", file=sys.stderr)
print("I1124 23:49:40.000000 12345 solver.cpp:464] Snapshotting to binary proto file model/pose_iter_60.caffemodel", file=sys.stderr)
print("I1124 23:49:40.000000 12345 caffe.cpp:259] Optimization Done.", file=sys.stderr)
sys.exit(0)
"""


def test_caffe_backend_streams_and_parses_log(tmp_path, monkeypatch):
    d = make_dir(tmp_path)
    fake = tmp_path / "caffe"
    fake.write_text(FAKE_CAFFE)
    fake.chmod(0o755)
    monkeypatch.setenv("CAFFE", str(fake))
    r = run_cli(["-solver", "solver.prototxt", "-weights", "a.caffemodel,b.caffemodel", "--metrics", "m.jsonl"], d)
    assert r.exit_code == 0, r.output
    assert "args --solver=solver.prototxt --weights=a.caffemodel,b.caffemodel --sigint_effect=stop" in r.output
    assert "Optimization Done." in r.output
    recs = [json.loads(l) for l in (d / "m.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in recs] == [0, 20, 40]
    assert [x["lr"] for x in recs] == [0.001, 0.001, 0.0005]
    assert recs[2]["loss"] == 0.625 and recs[2]["outputs"] == {"loss_stage0_L1": 0.3125, "loss_stage0_L2": 0.3125}
    # default metrics path: beside the snapshots, as with the torch engine
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert r.exit_code == 0 and len((d / "model/pose_metrics.jsonl").read_text().splitlines()) == 3


def test_caffe_backend_missing_binary(tmp_path, monkeypatch):
    d = make_dir(tmp_path)
    monkeypatch.delenv("CAFFE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = run_cli(["-solver", "solver.prototxt", "--backend", "caffe"], d)
    assert r.exit_code != 0 and "no 'caffe' binary on PATH" in r.output
    monkeypatch.setenv("CAFFE", str(tmp_path / "nothing/caffe"))
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert r.exit_code != 0 and "no executable caffe binary" in r.output


# ---- multi-process (gloo) equals one process with the doubled batch -------------------------------------------
DDP_NET = """
name: "ddp"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: %d dim: 3 dim: 5 dim: 5 } shape { dim: %d dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv2" bottom: "label" top: "loss" }
"""
DDP_SOLVER = dict(type="SGD", base_lr=0.05, momentum=0.9, weight_decay=0.001, lr_policy="fixed", max_iter=4,
                  display=0, snapshot=0, snapshot_after_train=False)


class ArraySource(BatchSource):
    """Rows [lo, hi) of a fixed per-iteration dataset (the 2B-row batch of iteration i)."""

    def __init__(self, lo, hi):
        self.lo, self.hi, self.i = lo, hi, 0

    def next_batch(self):
        rs = np.random.RandomState(100 + self.i)
        data = rs.randn(4, 3, 5, 5).astype(np.float32)
        label = rs.randn(4, 2, 5, 5).astype(np.float32)
        self.i += 1
        return {"data": torch.from_numpy(data[self.lo:self.hi]), "label": torch.from_numpy(label[self.lo:self.hi])}

    def state_dict(self):
        return {"i": self.i}


class PassRowsSource(ArraySource):
    """Iteration i's 4 rows split into ``iter_size`` passes, each pass's rows split over ``world`` ranks:
    rank r's call k gets its share of pass k % iter_size of iteration k // iter_size."""

    def __init__(self, iter_size=1, rank=0, world=1):
        self.per_pass = 4 // iter_size
        self.iter_size, self.share, self.rank, self.calls = iter_size, self.per_pass // world, rank, 0
        super().__init__(0, 0)

    def next_batch(self):
        it, k = divmod(self.calls, self.iter_size)
        self.calls += 1
        self.i = it
        self.lo = k * self.per_pass + self.rank * self.share
        self.hi = self.lo + self.share
        return ArraySource.next_batch(self)


# (iter_size, clip_gradients): the Caffe rule is N processes x batch b == 1 process x batch N*b, same
# iter_size and clip_gradients (clipping sees the accumulated sum, before the / iter_size normalisation)
DDP_CASES = [(1, -1.0), (2, -1.0), (1, 0.05), (2, 0.05)]


def _ddp_train(batch, source, out_path, dist_ctx=None, iter_size=1, clip=-1.0):
    from openpose_train.caffe_layers import caffe_pb2
    from openpose_train.training.logging_utils import GlogLogger

    sp = caffe_pb2.SolverParameter(iter_size=iter_size, clip_gradients=clip, **DDP_SOLVER)
    net = CaffeNet(caffe_io.parse_prototxt(DDP_NET % (batch, batch), caffe_pb2.NetParameter()), seed=11)
    opts = TrainOptions(progress=False, install_signal_handlers=False)
    trainer = Trainer(sp, net, [source], options=opts, dist=dist_ctx, logger=GlogLogger(enabled=False))
    trainer.solve()
    if dist_ctx is None or dist_ctx.rank == 0:
        ddp = type(trainer.model).__name__
        np.savez(out_path, model_class=ddp,
                 **{f"{k}_{i}": v for k, b in net.caffe_weights().items() for i, v in enumerate(b)})


def _ddp_worker(out_dir):
    from openpose_train.training import distributed

    torch.set_num_threads(1)
    with distributed.process_group(use_cuda=False) as ctx:
        for iter_size, clip in DDP_CASES:
            batch = 2 // iter_size
            out_path = os.path.join(out_dir, f"two_{iter_size}_{clip}.npz")
            _ddp_train(batch, PassRowsSource(iter_size, ctx.rank, 2), out_path, ctx, iter_size, clip)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_double_batch(tmp_path):
    from openpose_train.caffe_layers import caffe_pb2
    from openpose_train.training import distributed

    distributed.spawn(_ddp_worker, 2, (str(tmp_path),))
    init = CaffeNet(caffe_io.parse_prototxt(DDP_NET % (4, 4), caffe_pb2.NetParameter()), seed=11).caffe_weights()
    for iter_size, clip in DDP_CASES:
        one = tmp_path / f"one_{iter_size}_{clip}.npz"
        _ddp_train(4 // iter_size, PassRowsSource(iter_size), one, iter_size=iter_size, clip=clip)
        a, b = np.load(one), np.load(tmp_path / f"two_{iter_size}_{clip}.npz")
        assert str(b["model_class"]) == "DistributedDataParallel"
        assert sorted(a.files) == sorted(b.files) == ["conv1_0", "conv1_1", "conv2_0", "conv2_1", "model_class"]
        for k in ("conv1_0", "conv1_1", "conv2_0", "conv2_1"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=f"iter_size {iter_size} clip {clip}")
        # the runs really trained (weights differ from the seed-11 initialisation)
        moved = max(np.abs(init["conv1"][0] - a["conv1_0"]).max(), np.abs(init["conv2"][0] - a["conv2_0"]).max())
        assert moved > 1e-4
    # clipping really acted (the clipped runs differ from the unclipped ones)
    for iter_size in (1, 2):
        a, b = np.load(tmp_path / f"one_{iter_size}_-1.0.npz"), np.load(tmp_path / f"one_{iter_size}_0.05.npz")
        assert np.abs(a["conv1_0"] - b["conv1_0"]).max() > 1e-4


# ---- end to end: generated tiny net, synthetic LMDB, OPData, snapshot in cv2.dnn -----------------------------------
@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """Synthetic COCO dataset -> LMDB -> generated COCO_18 'tiny' net (crop 128, batch 2, 50 iterations)."""
    for mod in ("openpose_train.generator.cli", "openpose_train.dataset_tools.cli", "openpose_train.caffe_layers.op_data"):
        pytest.importorskip(mod)
    from conftest import synthetic_training_folder

    return synthetic_training_folder(tmp_path_factory.mktemp("tiny"), 12, 160, "--preset", "tiny", "--crop-size", 128,
                                     "--batch-size", 2, "--display", 10, "--snapshot-interval", 50, "--max-iter", 50,
                                     "--base-lr", 1e-3, "--random-seed", 5)


def test_generated_tiny_net_trains_on_synthetic_lmdb(tiny_project, one_thread):
    cv2 = pytest.importorskip("cv2")
    from openpose_train.caffe_layers.op_data import OPDataSource

    out = tiny_project
    t0 = time.time()
    r = run_cli(["-solver", "pose_solver.prototxt"], out)
    assert r.exit_code == 0, r.output
    assert "Optimization Done." in r.output
    train_seconds = time.time() - t0
    model = out / "model/pose_iter_50.caffemodel"
    assert model.exists() and (out / "model/pose_iter_50.solverstate").exists()

    # loss on fixed held-out batches: the seed-5 initialisation against the trained snapshot
    net_param = caffe_io.read_net_prototxt(out / "pose_training.prototxt")
    init = CaffeNet(net_param, "TRAIN", seed=5)
    final = CaffeNet(net_param, "TRAIN", seed=5)
    final.load_caffe_weights(str(model), allow_missing=False)
    it = iter(OPDataSource(init.data_layers[0], "TRAIN", seed=123, num_workers=0))
    batches = [next(it) for _ in range(4)]
    with torch.no_grad():
        loss_init = np.mean([float(init.total_loss(init(b))) for b in batches])
        loss_final = np.mean([float(final.total_loss(final(b))) for b in batches])
    assert loss_final < 0.85 * loss_init, (loss_init, loss_final, train_seconds)

    # the snapshot loads in OpenCV's Caffe importer with the deploy prototxt and matches the engine
    deploy = next(out.glob("pose_deploy*.prototxt"))
    cvnet = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    x = np.random.RandomState(1).uniform(-0.5, 0.5, (1, 3, 128, 128)).astype(np.float32)
    cvnet.setInput(x)
    ref = cvnet.forward()
    eng = CaffeNet(caffe_io.read_net_prototxt(deploy), phase="TEST", input_shapes={"image": (1, 3, 128, 128)})
    eng.load_caffe_weights(str(model), allow_missing=False)
    with torch.no_grad():
        outputs = eng({"image": torch.from_numpy(x)})
    got = outputs[eng.output_blobs[-1]].numpy()
    assert got.shape == ref.shape == (1, 57, 16, 16)
    assert np.abs(got - ref).max() < 1e-4


class HalvesSource(ArraySource):
    """Call k returns half k % 2 of iteration k // 2's 4-row batch (for iter_size 2)."""

    def next_batch(self):
        k = self.i
        self.i = k // 2
        half = k % 2
        self.lo, self.hi = 2 * half, 2 * half + 2
        batch = ArraySource.next_batch(self)
        self.i = k + 1
        return batch


def test_iter_size_two_half_batches_equal_one_full_batch(tmp_path):
    from openpose_train.caffe_layers import caffe_pb2
    from openpose_train.training.logging_utils import GlogLogger

    full = tmp_path / "full.npz"
    _ddp_train(4, ArraySource(0, 4), full)
    sp = caffe_pb2.SolverParameter(iter_size=2, **DDP_SOLVER)
    net = CaffeNet(caffe_io.parse_prototxt(DDP_NET % (2, 2), caffe_pb2.NetParameter()), seed=11)
    Trainer(sp, net, [HalvesSource(0, 2)], options=TrainOptions(progress=False, install_signal_handlers=False),
            logger=GlogLogger(enabled=False)).solve()
    a = np.load(full)
    got = net.caffe_weights()
    for layer in ("conv1", "conv2"):
        for i in range(2):
            np.testing.assert_allclose(got[layer][i], a[f"{layer}_{i}"], rtol=1e-5, atol=1e-6)


TEST_NET = NET.replace('layer { name: "data" type: "DummyData"', 'layer { name: "data" type: "DummyData" include { phase: TRAIN }') \
    .replace('layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param { dropout_ratio: 0.3 } }', "") + """
layer { name: "testdata" type: "DummyData" top: "data" top: "label" include { phase: TEST }
  dummy_data_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } shape { dim: 1 dim: 3 dim: 6 dim: 6 }
    data_filler { type: "constant" value: 0.7 } data_filler { type: "constant" value: -0.1 } } }
"""


def test_test_net_every_test_interval(tmp_path):
    # the test data layer comes after the loss in the file: move it first so bottoms resolve
    body = TEST_NET.split('layer { name: "testdata"')
    net_text = 'layer { name: "testdata"' + body[1] + body[0]
    solver = SOLVER.replace("display: 5", "display: 5\ntest_iter: 2\ntest_interval: 5\ntest_compute_loss: true")
    d = make_dir(tmp_path, solver=solver, net=net_text)
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d)
    assert r.exit_code == 0, r.output
    for it in (0, 5, 10):
        assert f"Iteration {it}, Testing net (#0)" in r.output
    values = [float(v) for v in re.findall(r"Test net output #0: loss = ([\d.e+-]+) \(\* 1 = ", r.output)]
    assert len(values) == 3
    # iteration 0: the seed-3 initial weights on the constant test batch
    from openpose_train.training.data_sources import known_input_shapes
    net_param = caffe_io.parse_prototxt(net_text, __import__("openpose_train.caffe_layers.caffe_pb2",
                                                             fromlist=["x"]).NetParameter())
    test_net = CaffeNet(net_param, "TEST", seed=3, input_shapes=known_input_shapes(net_param, "TEST"))
    batch = {"data": torch.full((1, 2, 6, 6), 0.7), "label": torch.full((1, 3, 6, 6), -0.1)}
    with torch.no_grad():
        assert values[0] == pytest.approx(float(test_net(batch)["loss"]), rel=1e-5)
        # iteration 10: the test net shares the trained weights (those of the iteration-10 snapshot)
        test_net.load_caffe_weights(str(d / "model/pose_iter_10.caffemodel"))
        assert values[2] == pytest.approx(float(test_net(batch)["loss"]), rel=1e-5)
    assert values[2] != values[0]


def test_sighup_snapshot_effect_keeps_training(tmp_path):
    from openpose_train.training.loop import ACTION_NONE, ACTION_SNAPSHOT, ACTION_STOP, SignalActions

    actions = SignalActions("none", "snapshot")
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert actions.take() == ACTION_SNAPSHOT and actions.take() == ACTION_NONE
        os.kill(os.getpid(), signal.SIGINT)  # sigint_effect none: ignored, no KeyboardInterrupt
        assert actions.take() == ACTION_NONE
    finally:
        actions.restore()
    actions = SignalActions("stop", "none")
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert actions.take() == ACTION_STOP
    finally:
        actions.restore()


def test_gpu_options_are_noops_with_a_warning_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU behaviour")
    d = make_dir(tmp_path)
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "5", "--bf16", "--channels-last"], d)
    assert r.exit_code == 0, r.output
    assert "--bf16 is a GPU option; ignored on the CPU" in r.output
    assert "--channels-last" not in r.output   # a memory layout, honoured on the CPU (tests/test_train_feed.py)


def test_generated_net_resumes_exactly_with_opdata_state(tiny_project, tmp_path, one_thread):
    import shutil

    runs = {}
    for name in ("straight", "split"):
        d = tmp_path / name
        shutil.copytree(tiny_project, d, ignore=shutil.ignore_patterns("model"))
        text = (d / "pose_solver.prototxt").read_text()
        (d / "pose_solver.prototxt").write_text(text.replace("snapshot: 50", "snapshot: 6"))
        runs[name] = d
    assert run_cli(["-solver", "pose_solver.prototxt", "-iterations", "12"], runs["straight"]).exit_code == 0
    r = run_cli(["-solver", "pose_solver.prototxt", "-iterations", "6"], runs["split"])
    assert r.exit_code == 0, r.output
    r = run_cli(["-solver", "pose_solver.prototxt", "-iterations", "12", "-snapshot", "model/pose_iter_6.solverstate"],
                runs["split"])
    assert r.exit_code == 0, r.output
    a = (runs["straight"] / "model/pose_iter_12.caffemodel").read_bytes()
    b = (runs["split"] / "model/pose_iter_12.caffemodel").read_bytes()
    assert a == b
    a6 = (runs["straight"] / "model/pose_iter_6.caffemodel").read_bytes()
    assert a6 != a


class FakeTTY:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def isatty(self):
        return True

    def text(self):
        return "".join(self.parts)


def test_progress_bar_on_terminal_only_and_log_file_without_it(tmp_path):
    from openpose_train.training.logging_utils import GlogLogger, Progress

    term = FakeTTY()
    logger = GlogLogger(stream=term, log_file=str(tmp_path / "log.txt"))
    bar = Progress(10, 110, stream=term)
    logger.progress = bar
    for it in range(11, 31):
        bar.update(it, loss=1.0 / it, lr=0.001)
    logger.info("solver.cpp:218", "Iteration 30 (1 iter/s, 1s/20 iters), loss = 0.5")
    bar.close()
    logger.close()
    shown = term.text()
    assert "30/110" in shown and "<" in shown  # tqdm's count and ETA
    assert "Iteration 30 (1 iter/s" in shown
    logged = (tmp_path / "log.txt").read_text()
    assert logged.count("\n") == 1 and "30/110" not in logged and "solver.cpp:218] Iteration 30" in logged
    # not a terminal (e.g. piped through tee): no bar at all
    with open(tmp_path / "pipe.txt", "w") as pipe:
        assert not Progress(0, 10, stream=pipe).active
