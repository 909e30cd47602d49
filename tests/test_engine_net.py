"""CaffeNet semantics (phases, in-place, splits, loss weights, param specs, weights I/O) and layer formulas."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from openpose_train.caffe_layers import caffe_pb2
from openpose_train.caffe_layers.layers import (LAYER_TYPES, UnsupportedLayerError, caffe_pool_size,
                                                fill_blob)
from openpose_train.caffe_layers.net import (CaffeNet, MissingWeightsError, NetDefinitionError,
                                             WeightShapeError)


def parse(text, cls=caffe_pb2.NetParameter):
    msg = cls()
    text_format.Merge(text, msg)
    return msg


TRAIN_NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 4 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "PReLU" bottom: "conv1" top: "conv1" param { lr_mult: 4 decay_mult: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        param { name: "shared_w" lr_mult: 1 } param { lr_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "conv3" type: "Convolution" bottom: "conv1" top: "conv3"
        param { name: "shared_w" } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv3" top: "sum" }
layer { name: "loss" type: "EuclideanLoss" bottom: "sum" bottom: "target" top: "loss" }
layer { name: "loss_aux" type: "EuclideanLoss" bottom: "conv1" bottom: "target" top: "loss_aux" loss_weight: 0.5
        include { phase: TRAIN } }
layer { name: "only_test" type: "ReLU" bottom: "sum" top: "only_test" include { phase: TEST } }
layer { name: "not_in_stage" type: "ReLU" bottom: "sum" top: "staged" exclude { stage: "deploy" } }
"""


@pytest.fixture
def small_net():
    return CaffeNet(parse(TRAIN_NET), phase="TRAIN", seed=3)


def test_phase_and_stage_rules():
    net_param = parse(TRAIN_NET)
    train = CaffeNet(net_param, phase="TRAIN")
    test = CaffeNet(net_param, phase="TEST")
    deploy = CaffeNet(net_param, phase="TEST", stages=("deploy",))
    assert "loss_aux" in train.layer_names() and "only_test" not in train.layer_names()
    assert "only_test" in test.layer_names() and "loss_aux" not in test.layer_names()
    assert "not_in_stage" in test.layer_names() and "not_in_stage" not in deploy.layer_names()
    assert train.loss_blobs == [("loss", 1.0), ("loss_aux", 0.5)]
    assert test.loss_blobs == [("loss", 1.0)]
    assert train.training and not test.training
    assert [l.name for l in train.data_layers] == ["data"]
    assert list(train.input_blobs) == ["data", "target"]
    assert set(train.output_blobs) == {"loss", "loss_aux", "staged"}


def test_param_specs_and_sharing(small_net):
    specs = small_net.param_specs()
    table = [(s.layer_name, s.blob_index, s.lr_mult, s.decay_mult, tuple(s.param.shape)) for s in specs]
    assert table == [
        ("conv1", 0, 1.0, 1.0, (4, 3, 3, 3)), ("conv1", 1, 2.0, 0.0, (4,)),
        ("relu1", 0, 4.0, 1.0, (4,)),
        ("conv2", 0, 1.0, 1.0, (4, 4, 1, 1)), ("conv2", 1, 0.0, 1.0, (4,)),
        ("conv3", 1, 2.0, 1.0, (4,)),  # conv3's weight is conv2's (shared by name), listed once
    ]
    assert small_net.layer_module("conv3").weight is small_net.layer_module("conv2").weight
    assert not specs[4].param.requires_grad  # lr_mult 0 is frozen
    # Caffe's fillers: constant bias 0.1, PReLU default 0.25, no filler = constant 0
    np.testing.assert_allclose(small_net.caffe_weights()["conv1"][1], 0.1)
    np.testing.assert_allclose(small_net.caffe_weights()["relu1"][0], 0.25)
    np.testing.assert_allclose(small_net.caffe_weights()["conv3"][1], 0.0)


def test_forward_losses_and_gradients_match_formulas(small_net):
    g = torch.Generator().manual_seed(0)
    data, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    out = small_net(data=data, target=target)
    # in-place PReLU: "conv1" is the post-PReLU blob; conv2/conv3 read that version
    m = small_net.layer_module
    conv1 = torch.nn.functional.conv2d(data, m("conv1").weight, m("conv1").bias, padding=1)
    conv1 = torch.where(conv1 > 0, conv1, 0.25 * conv1)
    torch.testing.assert_close(out["conv1"], conv1)
    ssum = out["conv2"] + out["conv3"]
    assert out["loss"].item() == pytest.approx(((ssum - target) ** 2).sum().item() / 4, rel=1e-5)
    total = small_net.total_loss(out)
    assert total.item() == pytest.approx(out["loss"].item() + 0.5 * out["loss_aux"].item(), rel=1e-6)
    total.backward()
    # the implicit split of conv1 (3 consumers) sums the gradients, as Caffe's Split layer does
    assert m("conv1").weight.grad is not None and m("conv1").weight.grad.abs().sum() > 0
    assert m("conv2").bias.grad is None  # frozen


def test_euclidean_loss_gradient_is_formula():
    param = parse('name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l"', caffe_pb2.LayerParameter)
    layer = LAYER_TYPES["EuclideanLoss"](param, [(3, 2, 4, 5), (3, 2, 4, 5)])
    a = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    (loss,) = layer(a, b)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(((a - b) ** 2).sum().item() / (2 * 3))
    (2.0 * loss).backward()   # loss_weight 2
    torch.testing.assert_close(a.grad, 2.0 * (a - b).detach() / 3)
    torch.testing.assert_close(b.grad, -2.0 * (a - b).detach() / 3)


def test_unsupported_layer_names_layer_and_type():
    net = parse("""input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
                   layer { name: "weird_one" type: "SpatialTransformer" bottom: "x" top: "y" }""")
    with pytest.raises(UnsupportedLayerError, match="'weird_one'.*'SpatialTransformer'"):
        CaffeNet(net)


def test_unknown_bottom_and_missing_input_are_clear():
    net = parse("""input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
                   layer { name: "r" type: "ReLU" bottom: "nope" top: "y" }""")
    with pytest.raises(NetDefinitionError, match="'r'.*'nope'"):
        CaffeNet(net)
    ok = CaffeNet(parse('input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4 '
                        'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }'))
    with pytest.raises(NetDefinitionError, match="'x'"):
        ok(z=torch.zeros(1))


def test_eltwise_bottoms_of_different_shapes_are_refused_at_build():
    """Caffe's EltwiseLayer::Reshape check: a label top with another model's channel count (a YAML skeleton
    edited after its prototxt was generated) stops when the net is built, naming the layer, not in forward."""
    from openpose_train.caffe_layers.layers import LayerConfigError
    net = parse(TRAIN_NET.replace('shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 4 dim: 8 dim: 8 }',
                                  'shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 4 dim: 8 dim: 8 } '
                                  'shape { dim: 2 dim: 5 dim: 8 dim: 8 }').replace(
        'top: "data" top: "target"', 'top: "data" top: "target" top: "weights"').replace(
        'bottom: "conv2" bottom: "conv3" top: "sum"', 'bottom: "conv2" bottom: "weights" top: "sum"'))
    with pytest.raises(LayerConfigError, match=r"layer 'sum' \(Eltwise\): bottoms conv2, weights have different "
                                               r"shapes \(2, 4, 8, 8\), \(2, 5, 8, 8\)"):
        CaffeNet(net, phase="TRAIN")


def test_load_caffe_weights_report_and_errors(small_net, tmp_path):
    other = CaffeNet(parse(TRAIN_NET), phase="TRAIN", seed=99)
    weights = other.caffe_weights()
    weights["not_in_net"] = [np.zeros(3, np.float32)]
    del weights["conv3"]
    # legacy 4-D bias shape (1,1,1,N), as in old caffemodels such as VGG-19
    weights["conv1"][1] = weights["conv1"][1].reshape(1, 1, 1, 4)
    report = small_net.load_caffe_weights(weights)
    assert report.matched == ["conv1", "relu1", "conv2"]
    assert report.unmatched == ["not_in_net"] and report.missing == ["conv3"]
    np.testing.assert_array_equal(small_net.caffe_weights()["conv1"][0], other.caffe_weights()["conv1"][0])
    with pytest.raises(MissingWeightsError, match="conv3"):
        small_net.load_caffe_weights(weights, allow_missing=False)
    bad = OrderedDict(conv1=[np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, np.float32)])
    with pytest.raises(WeightShapeError, match=r"'conv1'.*4x3x5x5.*4x3x3x3"):
        small_net.load_caffe_weights(bad)
    report = small_net.load_caffe_weights(bad, reinit_on_shape_mismatch=True)
    assert report.reinitialised == ["conv1"] and report.matched == []
    with pytest.raises(WeightShapeError, match="'relu1'.*2 blobs"):
        small_net.load_caffe_weights({"relu1": [np.zeros(4), np.zeros(4)]})
    # from a caffemodel file (NetParameter with blobs)
    model = caffe_pb2.NetParameter()
    layer = model.layer.add(name="conv2", type="Convolution")
    for arr in other.caffe_weights()["conv2"]:
        blob = layer.blobs.add()
        blob.shape.dim.extend(arr.shape)
        blob.data.extend(arr.ravel().tolist())
    path = tmp_path / "w.caffemodel"
    path.write_bytes(model.SerializeToString())
    report = small_net.load_caffe_weights(str(path))
    assert report.matched == ["conv2"]
    np.testing.assert_array_equal(small_net.caffe_weights()["conv2"][0], other.caffe_weights()["conv2"][0])


def test_seeded_fillers_follow_caffe():
    f = parse('type: "xavier"', caffe_pb2.FillerParameter)
    a = fill_blob((64, 32, 3, 3), f, torch.Generator().manual_seed(1), "x")
    b = fill_blob((64, 32, 3, 3), f, torch.Generator().manual_seed(1), "x")
    torch.testing.assert_close(a, b)
    bound = math.sqrt(3.0 / (32 * 9))  # FAN_IN = count / num
    assert float(a.abs().max()) <= bound and float(a.abs().max()) > 0.95 * bound
    f_out = parse('type: "msra" variance_norm: FAN_OUT', caffe_pb2.FillerParameter)
    m = fill_blob((64, 32, 3, 3), f_out, torch.Generator().manual_seed(1), "x")
    assert float(m.std()) == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.05)
    g = parse('type: "gaussian" std: 0.01', caffe_pb2.FillerParameter)
    assert float(fill_blob((256, 256), g, None, "x").std()) == pytest.approx(0.01, rel=0.05)
    u = parse('type: "uniform" min: -2 max: -1', caffe_pb2.FillerParameter)
    x = fill_blob((1000,), u, None, "x")
    assert float(x.min()) >= -2 and float(x.max()) <= -1
    bil = fill_blob((1, 1, 4, 4), parse('type: "bilinear"', caffe_pb2.FillerParameter), None, "x")
    np.testing.assert_allclose(bil[0, 0, 0].numpy(), [0.0625, 0.1875, 0.1875, 0.0625])


def naive_caffe_pool(x, k, s, p, method):
    """Caffe's pooling loops, literally (for the explicit-padding path)."""
    n, c, h, w = x.shape
    oh, ow = caffe_pool_size(h, k, s, p), caffe_pool_size(w, k, s, p)
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            out[:, :, i, j] = win.max((2, 3)) if method == "MAX" else win.sum((2, 3)) / size
    return out


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 1), (3, 3, 2), (5, 2, 2), (4, 3, 3)])
def test_pooling_matches_caffe_loops(method, k, s, p):
    param = parse(f'name: "pool" type: "Pooling" bottom: "x" top: "y" '
                  f'pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}',
                  caffe_pb2.LayerParameter)
    x = np.random.default_rng(k * 10 + s + p).standard_normal((1, 2, 11, 8))
    layer = LAYER_TYPES["Pooling"](param, [x.shape])
    (y,) = layer(torch.from_numpy(x))
    ref = naive_caffe_pool(x, k, s, p, method)
    assert tuple(y.shape) == ref.shape == tuple(layer.top_shapes([x.shape])[0])
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-12)


def test_batchnorm_training_statistics_follow_caffe():
    param = parse('name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
                  'batch_norm_param { moving_average_fraction: 0.9 }', caffe_pb2.LayerParameter)
    layer = LAYER_TYPES["BatchNorm"](param, [(4, 3, 5, 5)])
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
    (y,) = layer(x.float())
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(y.double(), (x - mean[None, :, None, None]) / torch.sqrt(
        var[None, :, None, None] + 1e-5), atol=1e-5, rtol=1e-5)
    m = 4 * 25
    torch.testing.assert_close(layer.mean.double(), mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.variance.double(), var * m / (m - 1), atol=1e-5, rtol=1e-5)
    assert float(layer.scale_factor) == 1.0
    layer(x.float())
    assert float(layer.scale_factor) == pytest.approx(1.9)
    layer.eval()   # global stats: blobs / scale factor
    (y2,) = layer(x.float())
    torch.testing.assert_close(y2.double(), (x - mean[None, :, None, None]) / torch.sqrt(
        var[None, :, None, None] * m / (m - 1) + 1e-5), atol=1e-4, rtol=1e-4)


def test_dropout_scales_in_train_only():
    param = parse('name: "d" type: "Dropout" bottom: "x" top: "x" dropout_param { dropout_ratio: 0.25 }',
                  caffe_pb2.LayerParameter)
    layer = LAYER_TYPES["Dropout"](param, [(1000,)])
    x = torch.ones(10000)
    (y,) = layer(x)
    assert set(torch.unique(y).tolist()) <= {0.0, float(np.float32(1.0) / np.float32(0.75))}
    layer.eval()
    assert torch.equal(layer(x)[0], x)


def test_slice_split_reshape_silence():
    net = CaffeNet(parse("""
input: "x" input_shape { dim: 2 dim: 6 dim: 3 dim: 4 }
layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" }
layer { name: "sp" type: "Split" bottom: "a" top: "a1" top: "a2" }
layer { name: "r" type: "Reshape" bottom: "b" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "f" type: "Flatten" bottom: "a1" top: "f" flatten_param { axis: 2 } }
layer { name: "quiet" type: "Silence" bottom: "a2" }
"""))
    x = torch.arange(2 * 6 * 12, dtype=torch.float32).reshape(2, 6, 3, 4)
    out = net(x=x)
    torch.testing.assert_close(out["a1"], x[:, :3])
    assert out["r"].shape == (2, 36) and out["f"].shape == (2, 3, 12)
    assert net.blob_shapes["r"] == (2, 36) and net.blob_shapes["f"] == (2, 3, 12)
    assert set(net.output_blobs) == {"r", "f"}


@pytest.mark.parametrize("folder,label_channels,losses,batch", [
    ("body_25", 156, 6, 10), ("1_25BBkg", 194, 6, 10), ("1_25BSuperModel11FullVGG", 194, 2, 3),
    ("100_135AlmostSameBatchAllGPUs", 878, 5, 10)])
def test_reference_training_nets_build(shared, folder, label_channels, losses, batch):
    """The shipped training prototxts (openpose_train's experimental_models): OPData shapes with the
    label channels from the registry, one loss per stage and branch."""
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt
    path = shared("reference", "openpose_models", "experimental", folder, "training_results", "pose_training.prototxt")
    net = CaffeNet(read_net_prototxt(path), phase="TRAIN")
    image, label = net.input_blobs["image"], net.input_blobs["label"]
    assert image[:2] == (batch, 3) and label[:2] == (batch, label_channels)
    assert label[2:] == (image[2] // 8, image[3] // 8)
    assert len(net.loss_blobs) == losses and all(w == 1.0 for _, w in net.loss_blobs)
    assert [l.type for l in net.data_layers] == ["OPData"]


def test_run_with_keep_returns_the_same_values(small_net):
    g = torch.Generator().manual_seed(1)
    inputs = {"data": torch.randn(2, 3, 8, 8, generator=g), "target": torch.randn(2, 4, 8, 8, generator=g)}
    with torch.no_grad():
        full = small_net(inputs)
        kept = small_net.run(inputs, keep=["sum", "loss"])
    assert set(kept) == {"sum", "loss"}
    torch.testing.assert_close(kept["sum"], full["sum"])
    with pytest.raises(NetDefinitionError, match="nope"):
        small_net.run(inputs, keep=["nope"])


def test_configure_precision_bf16_channels_last_runs_on_cpu(small_net):
    from openpose_train.caffe_layers.net import configure_precision
    g = torch.Generator().manual_seed(2)
    inputs = {"data": torch.randn(2, 3, 8, 8, generator=g), "target": torch.randn(2, 4, 8, 8, generator=g)}
    ref = small_net.total_loss(small_net(inputs)).item()
    configure_precision(small_net, "cpu", bf16=True, channels_last=True)
    out = small_net(inputs)
    assert out["conv1"].dtype == torch.bfloat16 and out["loss"].dtype == torch.float32
    loss = small_net.total_loss(out)
    loss.backward()
    assert loss.item() == pytest.approx(ref, rel=5e-2)
    assert small_net.layer_module("conv1").weight.dtype == torch.float32   # master weights stay fp32
    configure_precision(small_net)
    assert small_net.total_loss(small_net(inputs)).item() == pytest.approx(ref, rel=1e-5)
