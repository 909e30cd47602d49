"""`openpose-train time`: layer-by-layer timing reproduces the net's gradients and prints caffe time's lines."""
import re

import torch
from click.testing import CliRunner
from google.protobuf import text_format

from openpose_train.caffe_layers import caffe_pb2
from openpose_train.caffe_layers.net import CaffeNet
from openpose_train.training.time_cli import random_inputs, time_cmd, time_layers

NET = """
name: "timed"
layer { name: "data" type: "Input" top: "image" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } shape { dim: 2 dim: 4 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "image" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "slice" type: "Slice" bottom: "label" top: "w" top: "t" slice_param { slice_point: 2 } }
layer { name: "a" type: "Convolution" bottom: "pool1" top: "a"
        convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "b" type: "Convolution" bottom: "pool1" top: "b"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
layer { name: "wa" type: "Eltwise" bottom: "a" bottom: "w" top: "wa" eltwise_param { operation: PROD } }
layer { name: "loss_a" type: "EuclideanLoss" bottom: "wa" bottom: "t" top: "loss_a" }
layer { name: "loss_b" type: "EuclideanLoss" bottom: "b" bottom: "t" top: "loss_b" loss_weight: 0.5 }
layer { name: "loss_cat" type: "EuclideanLoss" bottom: "cat" bottom: "label" top: "loss_cat" loss_weight: 2 }
"""


def build():
    net_param = caffe_pb2.NetParameter()
    text_format.Merge(NET, net_param)
    return CaffeNet(net_param, seed=5)


def test_layerwise_backward_equals_autograd():
    net = build()
    inputs = random_inputs(net)
    loss = net.total_loss(net(inputs))
    loss.backward()
    reference = [p.grad.clone() for p, *_ in net.param_specs()]
    net.zero_grad(set_to_none=True)
    times = time_layers(net, inputs, 1)
    assert abs(times.initial_loss - loss.item()) < 1e-5 * max(1.0, abs(loss.item()))
    for (param, *_), ref in zip(net.param_specs(), reference):
        torch.testing.assert_close(param.grad, ref)
    assert times.iterations == 1 and len(times.forward_ms) == len(net.layer_names())
    assert times.backward_ms[net.layer_names().index("conv1")] > 0


def test_time_command_prints_caffe_time_report(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    result = CliRunner().invoke(time_cmd, ["-model", str(path), "-iterations", "3"])
    assert result.exit_code == 0, result.output
    text = result.output
    prefix = r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ caffe\.cpp:\d+\] "
    assert re.search(prefix + r"Average time per layer: ", text)
    assert re.search(prefix + r"     conv1\tforward: [\d.e+-]+ ms\.", text)
    assert re.search(prefix + r"     conv1\tbackward: [\d.e+-]+ ms\.", text)
    assert len(re.findall(r"Iteration: \d+ forward-backward time: [\d.e+-]+ ms\.", text)) == 3
    for line in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward", "Total Time"):
        assert re.search(prefix + line + r": [\d.e+-]+ ms\.", text), line


def test_time_command_errors_are_clear(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('input: "x" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n'
                    'layer { name: "odd" type: "Crop" bottom: "x" top: "y" }')
    result = CliRunner().invoke(time_cmd, ["-model", str(path)])
    assert result.exit_code != 0
    assert "'odd'" in result.output and "'Crop'" in result.output
    assert "Traceback" not in result.output
