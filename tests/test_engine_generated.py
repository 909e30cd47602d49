"""The engine on the generator's training prototxt equals a hand-written torch module of the same network
(benchmarks/train_step.py's baseline): same losses and same gradients."""
import importlib.util
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def train_step(repo_root):
    spec = importlib.util.spec_from_file_location("train_step_bench", repo_root / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_generated_tiny_net_equals_hand_written(train_step):
    engine, hand, inputs = train_step.make_pair("tiny", 2, 64, "cpu")
    assert engine.input_blobs["label"] == (2, 156, 8, 8)   # COCO_25: 2 x (26 + 52) channels
    assert len(engine.loss_blobs) == 2
    loss_engine = engine.total_loss(engine(inputs))
    loss_hand = hand(inputs["image"], inputs["label"])
    assert loss_engine.item() == pytest.approx(loss_hand.item(), rel=1e-5)
    loss_engine.backward()
    loss_hand.backward()
    for entry in engine.param_specs():
        module = hand.convs[entry.layer_name] if entry.layer_name in hand.convs else hand.prelus[entry.layer_name]
        ref = module.weight.grad if entry.blob_index == 0 else module.bias.grad
        torch.testing.assert_close(entry.param.grad, ref, rtol=1e-4, atol=1e-6)


def test_benchmark_quick_prints_json_lines(train_step, capsys):
    import json
    train_step.main(["--quick", "--skip-body25-cpu", "--threads", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["bench"] == "engine_overhead_pct" and lines[0]["case"] == "tiny,batch=4,crop=128"
    assert set(lines[0]) >= {"bench", "case", "value", "unit", "baseline", "baseline_name"}
