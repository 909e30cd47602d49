"""Feeding the training step: labels rendered per batch on the device, default workers, the data-wait
warning, and the numerics options (--channels-last, --compile) against the eager fp32 engine."""
import json
import os
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from openpose_train.caffe_layers import caffe_io, caffe_pb2
from openpose_train.caffe_layers.net import CaffeNet, configure_precision
from openpose_train.training.cli import train
from openpose_train.training.data_sources import BatchSource, known_input_shapes
from openpose_train.training.loop import Trainer, TrainOptions


def run_train(cwd, *args):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(train, [str(a) for a in args] + ["--no-progress"], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert r.exit_code == 0, r.output
    return r.output


def metrics(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def tiny_opdata(tmp_path_factory):
    """Synthetic COCO -> LMDB -> generated COCO_18 'tiny' net (crop 64, batch 2), random_seed set."""
    pytest.importorskip("openpose_train.caffe_layers.op_data")
    from conftest import synthetic_training_folder

    out = synthetic_training_folder(tmp_path_factory.mktemp("feed"), 6, 96, "--preset", "tiny", "--crop-size", 64,
                                    "--batch-size", 2, "--display", 1, "--snapshot-interval", 0, "--max-iter", 3)
    solver = out / "pose_solver.prototxt"
    lines = [line for line in solver.read_text().splitlines() if not line.startswith("random_seed")]
    solver.write_text("\n".join(lines + ["random_seed: 5", "snapshot_after_train: false", ""]))
    return out


def test_device_labels_on_cpu_equal_worker_labels(tiny_opdata):
    """What the workers send for device labels (images, mask grids, keypoints) renders to the labels the
    workers render themselves, within 1e-5, through worker processes."""
    from openpose_train.caffe_layers.op_data import OPDataSource

    net = CaffeNet(caffe_io.read_net_prototxt(tiny_opdata / "pose_training.prototxt"), "TRAIN", seed=5)
    layer = net.data_layers[0]
    with OPDataSource(layer, seed=9, num_workers=1, label_device="workers") as a, \
            OPDataSource(layer, seed=9, num_workers=1, label_device="cpu") as b:
        for _ in range(3):
            x, y = next(a), next(b)
            assert torch.equal(x["image"], y["image"])
            assert y["label"].shape == x["label"].shape and float(x["label"].abs().sum()) > 0
            torch.testing.assert_close(y["label"], x["label"], atol=1e-5, rtol=0)


def test_train_labels_device_gives_the_same_loss(tiny_opdata, tmp_path, one_thread):
    losses = {}
    for mode in ("workers", "device"):
        out = run_train(tiny_opdata, "-solver", "pose_solver.prototxt", "--labels", mode, "--workers", 1,
                        "--metrics", tmp_path / f"{mode}.jsonl")
        # the generated solver says solver_mode: GPU, so a machine with CUDA trains (and renders) there
        on = "cuda" if torch.cuda.is_available() else "cpu"
        expected = "labels rendered in the workers" if mode == "workers" else f"labels rendered per batch on {on}"
        assert expected in out
        losses[mode] = [m["loss"] for m in metrics(tmp_path / f"{mode}.jsonl")]
    assert len(losses["device"]) == 3
    np.testing.assert_allclose(losses["device"], losses["workers"], rtol=1e-5)


NET = """
name: "small"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } shape { dim: 2 dim: 3 dim: 6 dim: 6 }
    data_filler { type: "gaussian" std: 1.0 } data_filler { type: "gaussian" std: 0.3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv2" bottom: "label" top: "loss" }
"""
SOLVER = """
net: "net.prototxt"
type: "SGD"
base_lr: 0.002
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
display: 2
max_iter: 4
snapshot: 0
snapshot_prefix: "model/small"
random_seed: 3
solver_mode: CPU
"""


@pytest.mark.slow
def test_channels_last_and_compile_train_like_the_eager_engine(tmp_path, one_thread):
    """`train --channels-last` and `train --compile` (aot_eager: torch.compile's graph capture and
    autograd without inductor's C++ code generation, minutes on 2 cores) end at the eager fp32 weights."""
    weights = {}
    for name, flags in (("eager", []), ("channels_last", ["--channels-last"]),
                        ("compile", ["--compile", "--compile-backend", "aot_eager"])):
        d = tmp_path / name
        d.mkdir()
        (d / "net.prototxt").write_text(NET)
        (d / "solver.prototxt").write_text(SOLVER)
        run_train(d, "-solver", "solver.prototxt", "--workers", 0, *flags)
        weights[name] = caffe_io.read_caffemodel(str(d / "model/small_iter_4.caffemodel"))
    param = caffe_io.parse_prototxt(NET, caffe_pb2.NetParameter())
    init = CaffeNet(param, seed=3, input_shapes=known_input_shapes(param))
    assert np.abs(weights["eager"]["conv1"][0] - init.caffe_weights()["conv1"][0]).max() > 1e-3
    for name in ("channels_last", "compile"):
        for layer, blobs in weights["eager"].items():
            for i, blob in enumerate(blobs):
                np.testing.assert_allclose(weights[name][layer][i], blob, atol=1e-5, rtol=0, err_msg=f"{name} {layer}")


@pytest.mark.slow
def test_tiny_preset_compiled_and_channels_last_equal_eager(one_thread):
    """The generated tiny net (BODY_25 tiny preset, crop 64): outputs and gradients of torch.compile
    (aot_eager) and of channels_last within 1e-5 of the eager fp32 engine."""
    from google.protobuf import text_format
    from openpose_train.generator.render import render_training

    param = caffe_pb2.NetParameter()
    text_format.Merge(render_training("BODY_25", preset="tiny", batch_size=2, crop_size=(64, 64)), param)
    g = torch.Generator().manual_seed(0)
    nets = {k: CaffeNet(param, phase="TRAIN", seed=1) for k in ("eager", "channels_last", "compile")}
    inputs = {n: torch.rand(tuple(s), generator=g) for n, s in nets["eager"].input_blobs.items()}
    configure_precision(nets["channels_last"], "cpu", channels_last=True)
    results = {}
    for name, net in nets.items():
        model = torch.compile(net, backend="aot_eager") if name == "compile" else net
        outputs = model(inputs)
        loss = net.total_loss(outputs)
        loss.backward()
        results[name] = (float(loss.detach()), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    ref_loss, ref_grads = results["eager"]
    assert ref_loss > 0 and len(ref_grads) > 10
    for name in ("channels_last", "compile"):
        loss, grads = results[name]
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        for n, grad in ref_grads.items():
            torch.testing.assert_close(grads[n], grad, atol=1e-5, rtol=1e-5, msg=f"{name} {n}")


def test_default_workers_from_affinity(monkeypatch):
    from openpose_train.caffe_layers import op_data

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert op_data.default_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")     # torchrun: 4 ranks share the node's cores
    assert op_data.default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert op_data.default_workers() == 0           # one core: read in the training process


def test_labels_render_on_the_device_by_default_on_cuda_only():
    from openpose_train.training.cli import TrainConfig, data_settings

    cfg = TrainConfig(solver="s.prototxt", workers=3)
    assert data_settings(cfg, torch.device("cuda", 1)) == (3, "cuda:1")    # workers send images + keypoints
    assert data_settings(cfg, torch.device("cpu")) == (3, "workers")
    cfg.labels = "device"
    assert data_settings(cfg, torch.device("cpu")) == (3, "cpu")
    cfg.labels = "workers"
    assert data_settings(cfg, torch.device("cuda", 0)) == (3, "workers")


class SlowSource(BatchSource):
    """Fixed batches that take ``delay`` seconds each (a data pipeline slower than the step)."""

    def __init__(self, delay):
        self.delay, self.calls = delay, 0

    def next_batch(self):
        time.sleep(self.delay)
        self.calls += 1
        rs = np.random.RandomState(self.calls)
        return {"data": torch.from_numpy(rs.randn(2, 3, 12, 12).astype(np.float32)),
                "label": torch.from_numpy(rs.randn(2, 3, 6, 6).astype(np.float32))}

    def state_dict(self):
        return {"calls": self.calls}


def test_log_warns_when_the_step_waits_on_data(tmp_path, one_thread):
    from openpose_train.training.logging_utils import GlogLogger

    data_layer = NET[NET.index('layer { name: "data"'):NET.index('layer { name: "conv1"')]
    net_text = NET.replace(data_layer, 'layer { name: "data" type: "Input" top: "data" top: "label" input_param {'
                           ' shape { dim: 2 dim: 3 dim: 12 dim: 12 } shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }\n')
    net = CaffeNet(caffe_io.parse_prototxt(net_text, caffe_pb2.NetParameter()), seed=3)
    sp = caffe_io.parse_prototxt(SOLVER.replace('net: "net.prototxt"', ""), caffe_pb2.SolverParameter())
    sp.max_iter = 6
    sp.snapshot_prefix = str(tmp_path / "model/small")
    log = tmp_path / "log.txt"
    logger = GlogLogger(log_file=str(log))
    Trainer(sp, net, [SlowSource(0.2)], logger=logger,
            options=TrainOptions(progress=False, install_signal_handlers=False,
                                 metrics_path=str(tmp_path / "m.jsonl"))).solve()
    logger.close()
    warnings = [line for line in log.read_text().splitlines() if "] data_wait " in line]
    assert warnings and warnings[0].startswith("W")
    fraction = float(warnings[0].split("data_wait ")[1].split(":")[0])
    assert 0.1 < fraction <= 1.0
    waits = [m["data_wait_s"] for m in metrics(tmp_path / "m.jsonl")]
    assert len(waits) == 6 and all(w >= 0.045 for w in waits[:-1])


@pytest.mark.slow
def test_train_throughput_benchmark_quick_prints_the_contract_lines(repo_root):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "train_throughput.py"), "--quick"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    by_bench = {}
    for line in lines:
        assert {"bench", "case", "value", "unit", "baseline", "baseline_name"} <= set(line)
        by_bench.setdefault(line["bench"], []).append(line)
    assert set(by_bench) == {"engine_images_per_s", "pipeline_images_per_s", "data_wait_pct",
                             "samples_per_s_per_core"}
    engine = by_bench["engine_images_per_s"][0]
    pipeline = by_bench["pipeline_images_per_s"][0]
    assert engine["value"] > 0 and pipeline["value"] > 0 and pipeline["case"] == engine["case"]
    assert pipeline["baseline"] == engine["value"] and 0 <= pipeline["data_wait_pct"] <= 100
    assert pipeline["workers"] == 1
    per_core = by_bench["samples_per_s_per_core"][0]
    assert per_core["case"].startswith("BODY_25,crop=368,") and per_core["value"] > 0 and per_core["baseline"] > 0
