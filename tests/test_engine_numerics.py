"""The torch engine's forward against OpenCV's independent Caffe importer (cv2.dnn.readNetFromCaffe).

Each case writes a deploy prototxt and a caffemodel with random blobs (serialised here with caffe_pb2 only,
so the check does not depend on the project's writer), runs both, and compares within 1e-4."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

cv2 = pytest.importorskip("cv2")

from openpose_train.caffe_layers import caffe_pb2  # noqa: E402
from openpose_train.caffe_layers.net import CaffeNet  # noqa: E402

TOL = 1e-4


def parse_net(text):
    net = caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    return net


def randomise(net, rng):
    """Random blobs of the right shapes; BatchNorm statistics kept plausible (variance > 0)."""
    weights = net.caffe_weights()
    for name, blobs in weights.items():
        kind = dict(zip(net.layer_names(), [s.type for s in net._steps]))[name]
        if kind == "BatchNorm":
            c = blobs[0].shape[0]
            sf = np.float32(rng.uniform(0.5, 2.0))
            blobs[0] = (rng.standard_normal(c) * sf).astype(np.float32)
            blobs[1] = (rng.uniform(0.5, 2.0, c) * sf).astype(np.float32)
            blobs[2] = np.array([sf], np.float32)
        elif kind == "PReLU":
            blobs[0] = rng.uniform(-0.5, 0.8, blobs[0].shape).astype(np.float32)
        else:
            for i, b in enumerate(blobs):
                fan = max(1, int(np.prod(b.shape[1:]))) if b.ndim > 1 else 1
                blobs[i] = (rng.standard_normal(b.shape) / np.sqrt(fan)).astype(np.float32)
    net.load_caffe_weights(weights, allow_missing=False)
    return weights


def write_caffemodel(path, net_param, weights):
    """A caffemodel holding ``weights`` for the layers of ``net_param`` (independent of caffe_io)."""
    model = caffe_pb2.NetParameter()
    model.name = net_param.name
    for layer in net_param.layer:
        out = model.layer.add()
        out.name, out.type = layer.name, layer.type
        out.bottom.extend(layer.bottom)
        out.top.extend(layer.top)
        for arr in weights.get(layer.name, []):
            blob = out.blobs.add()
            blob.shape.dim.extend(arr.shape)
            blob.data.extend(arr.astype(np.float32).ravel().tolist())
    path.write_bytes(model.SerializeToString())


def compare_with_opencv(tmp_path, prototxt_text, inputs, outputs, seed=0):
    net_param = parse_net(prototxt_text)
    net = CaffeNet(net_param, phase="TEST", seed=seed)
    weights = randomise(net, np.random.default_rng(seed))
    proto_file, model_file = tmp_path / "deploy.prototxt", tmp_path / "weights.caffemodel"
    proto_file.write_text(prototxt_text)
    write_caffemodel(model_file, net_param, weights)
    cv_net = cv2.dnn.readNetFromCaffe(str(proto_file), str(model_file))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in inputs.items():
        cv_net.setInput(value, name)
    cv_outs = cv_net.forward(outputs)
    with torch.no_grad():
        ours = net({k: torch.from_numpy(v) for k, v in inputs.items()})
    for name, ref in zip(outputs, cv_outs):
        got = ours[name].numpy()
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        scale = max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(got - ref).max()) / scale
        assert err < TOL, f"{name}: max relative error {err:.3g}"
    return net, ours


def header(shape, name="data"):
    return f'name: "t"\ninput: "{name}"\n' + "".join(f"input_dim: {d}\n" for d in shape)


def conv(name, bottom, top, n, k, extra=""):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} {extra} }} }}\n')


def test_pooling_ceil_max_and_ave(tmp_path):
    # 13x13 / 11x11 inputs: Caffe's ceil rounding adds a partial window; AVE padding divisor counts the pad
    text = header((2, 3, 13, 11)) + conv("c", "data", "c", 4, 3, "pad: 1") + """
layer { name: "pmax" type: "Pooling" bottom: "c" top: "pmax" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pave" type: "Pooling" bottom: "c" top: "pave" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pmax2" type: "Pooling" bottom: "c" top: "pmax2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pave2" type: "Pooling" bottom: "c" top: "pave2" pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 } }
"""
    x = np.random.default_rng(1).standard_normal((2, 3, 13, 11)).astype(np.float32)
    net, out = compare_with_opencv(tmp_path, text, {"data": x}, ["pmax", "pave", "pmax2", "pave2"])
    assert out["pmax"].shape[-2:] == (6, 5)   # ceil((13-3)/2)+1 = 6, ceil((11-3)/2)+1 = 5
    assert out["pmax2"].shape[-2:] == (7, 6)  # ceil rounding: floor would give 6x5


def test_prelu_shared_and_per_channel_relu_slope(tmp_path):
    text = header((1, 4, 9, 9)) + conv("c", "data", "c", 6, 3) + """
layer { name: "p1" type: "PReLU" bottom: "c" top: "p1" }
layer { name: "p2" type: "PReLU" bottom: "c" top: "p2" prelu_param { channel_shared: true } }
layer { name: "r" type: "ReLU" bottom: "c" top: "r" relu_param { negative_slope: 0.1 } }
layer { name: "r0" type: "ReLU" bottom: "c" top: "r0" }
"""
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 9)).astype(np.float32)
    net, _ = compare_with_opencv(tmp_path, text, {"data": x}, ["p1", "p2", "r", "r0"])
    assert [b.shape for b in net.caffe_weights()["p2"]] == [(1,)]
    assert [b.shape for b in net.caffe_weights()["p1"]] == [(6,)]


def test_eltwise_slice_concat(tmp_path):
    text = header((2, 6, 7, 7)) + """
layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" slice_param { axis: 1 slice_point: 2 slice_point: 4 } }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "sum" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5 } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "c" top: "max" eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "prod" bottom: "data" bottom: "max" top: "cat" concat_param { axis: 1 } }
"""
    x = np.random.default_rng(3).standard_normal((2, 6, 7, 7)).astype(np.float32)
    _, out = compare_with_opencv(tmp_path, text, {"data": x}, ["prod", "sum", "max", "cat"])
    np.testing.assert_allclose(out["sum"].numpy(), 0.5 * x[:, :2] - 2 * x[:, 2:4] + 1.5 * x[:, 4:], atol=1e-6)
    assert out["cat"].shape == (2, 10, 7, 7)


def test_batchnorm_scale_deconv_dilation_group(tmp_path):
    text = header((1, 4, 12, 12)) + \
        conv("cg", "data", "cg", 8, 3, "pad: 2 dilation: 2 group: 2") + \
        conv("cs", "cg", "cs", 6, 3, "stride: 2 pad: 1 bias_term: false") + """
layer { name: "bn" type: "BatchNorm" bottom: "cs" top: "cs" batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "cs" top: "cs" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "cs" top: "cs" }
layer { name: "up" type: "Deconvolution" bottom: "cs" top: "up" convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "upg" type: "Deconvolution" bottom: "cs" top: "upg" convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 3 bias_term: false } }
layer { name: "sig" type: "Sigmoid" bottom: "up" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "upg" top: "tanh" }
"""
    x = np.random.default_rng(4).standard_normal((1, 4, 12, 12)).astype(np.float32)
    # in-place blobs ("cs") are checked through their consumers: OpenCV fuses BN/Scale/ReLU into the conv and
    # then reports an earlier version of an in-place blob name
    _, out = compare_with_opencv(tmp_path, text, {"data": x}, ["cg", "up", "sig", "tanh"])
    assert out["up"].shape == (1, 3, 12, 12)
    assert out["tanh"].shape == (1, 6, 13, 13)


def test_inner_product_flatten_dropout(tmp_path):
    text = header((3, 2, 5, 4)) + conv("c", "data", "c", 3, 3, "pad: 1") + """
layer { name: "drop" type: "Dropout" bottom: "c" top: "c" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "flat" type: "Flatten" bottom: "c" top: "flat" }
layer { name: "fc2" type: "InnerProduct" bottom: "flat" top: "fc2" inner_product_param { num_output: 5 bias_term: false } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
layer { name: "split" type: "Split" bottom: "fc" top: "fc_a" top: "fc_b" }
layer { name: "r" type: "Reshape" bottom: "fc_a" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 1 dim: 1 } } }
layer { name: "r2" type: "Eltwise" bottom: "fc_b" bottom: "fc" top: "r2" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
"""
    x = np.random.default_rng(5).standard_normal((3, 2, 5, 4)).astype(np.float32)
    net, _ = compare_with_opencv(tmp_path, text, {"data": x}, ["fc", "flat", "fc2", "prob", "r", "r2"])
    assert net.caffe_weights()["fc"][0].shape == (7, 60)


def test_body25_deploy_matches_opencv(tmp_path, shared):
    path = shared("reference", "openpose_models", "pose", "body_25", "pose_deploy.prototxt")
    x = np.random.default_rng(6).uniform(-0.5, 0.5, (1, 3, 64, 64)).astype(np.float32)
    net, out = compare_with_opencv(tmp_path, path.read_text(), {"image": x}, ["net_output"])
    assert out["net_output"].shape == (1, 78, 8, 8)
    assert sum(p.numel() for p in net.parameters()) == 26166084
    assert len(net.caffe_weights()) == 213  # 114 conv + 99 PReLU (the layers OpenPose's BODY_25 caffemodel holds)
