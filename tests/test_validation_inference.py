"""Inference: OpenPose geometry (net size, scales, letterbox, resize & merge) and backends
(torch engine vs OpenCV DNN on a random-weight deploy; pycaffe only where it imports)."""
import numpy as np
import pytest

from openpose_train.generator.registry import get_model
from openpose_train.validation.inference import (
    InferenceError, InferenceSettings, PoseEstimator, find_model_files, load_backend,
    net_input_size, net_to_image_scale, parse_net_resolution, preprocess, resize_and_merge,
    scale_factor, scale_net_sizes, upsample_output)

# A small stride-8 deploy in OpenPose's style: two branches concatenated by a layer whose
# *name* differs from its top "net_output" (as in the COCO/MPI files).
TINY_DEPLOY = """name: "tiny"
input: "image"
input_dim: 1
input_dim: 3
input_dim: 16
input_dim: 16
layer { name: "conv1" type: "Convolution" bottom: "image" top: "conv1"
  convolution_param { num_output: 8 pad: 1 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 pad: 1 kernel_size: 3 } }
layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pool3" type: "Pooling" bottom: "pool2" top: "pool3"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv_h" type: "Convolution" bottom: "pool3" top: "conv_h"
  convolution_param { num_output: 5 pad: 0 kernel_size: 1 } }
layer { name: "conv_p" type: "Convolution" bottom: "pool3" top: "conv_p"
  convolution_param { num_output: 6 pad: 1 kernel_size: 3 } }
layer { name: "concat_stage7" type: "Concat" bottom: "conv_h" bottom: "conv_p" top: "net_output"
  concat_param { axis: 1 } }
"""


@pytest.fixture(scope="module")
def tiny_model_files(tmp_path_factory):
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt, write_caffemodel
    from openpose_train.caffe_layers.shapes import random_weights
    folder = tmp_path_factory.mktemp("tiny")
    proto = folder / "pose_deploy.prototxt"
    proto.write_text(TINY_DEPLOY)
    net = read_net_prototxt(str(proto))
    weights = random_weights(net, seed=3, std=0.3)
    for blobs in weights.values():      # non-zero biases so every blob matters
        if len(blobs) == 2:
            blobs[1][...] = np.linspace(-0.2, 0.2, blobs[1].size, dtype=np.float32)
    caffemodel = folder / "pose_iter_1000.caffemodel"
    write_caffemodel(str(caffemodel), weights, net=net)
    return str(proto), str(caffemodel)


# ------------------------------------------------------------------------------- geometry
def test_net_resolution_parsing_and_dynamic_width():
    assert parse_net_resolution("-1x368") == (-1, 368)
    assert parse_net_resolution("1312x736") == (1312, 736)
    for bad in ("368", "-1x-1", "100x368", "axb"):
        with pytest.raises(InferenceError, match="net-resolution"):
            parse_net_resolution(bad)
    assert net_input_size((1920, 1080), (-1, 368)) == (656, 368)     # 16:9 -> 656x368
    assert net_input_size((640, 480), (-1, 368)) == (496, 368)       # 16*round(490.67/16)
    assert net_input_size((3000, 500), (-1, 368)) == (656, 368)      # capped at 16:9
    assert net_input_size((3000, 500), (-1, 368), dynamic=0) == (2208, 368)
    assert net_input_size((480, 640), (368, -1)) == (368, 496)


def test_scales_and_scale_factors():
    sizes = scale_net_sizes((1312, 736), 4, 0.25)
    assert sizes == [(1.0, (1312, 736)), (0.75, (976, 544)), (0.5, (656, 368)),
                     (0.25, (320, 176))]
    with pytest.raises(InferenceError, match="scale-gap"):
        scale_net_sizes((368, 368), 3, 0.6)
    assert scale_factor((640, 480), (496, 368)) == pytest.approx(min(495 / 639, 367 / 479))
    s = net_to_image_scale((496, 368), (640, 480))
    k = min(495 / 639, 367 / 479)
    assert s == pytest.approx(min(639 / (round(k * 640) - 1), 479 / (round(k * 480) - 1)))


def test_preprocess_letterbox_and_normalisation():
    image = np.full((30, 20, 3), 128, np.uint8)
    image[:, :, 2] = 200                              # red in BGR's last channel
    x, s = preprocess(image, (48, 48))
    assert x.shape == (3, 48, 48)
    assert s == pytest.approx(min(47 / 19, 47 / 29))    # height fits, width 20 * 1.62 = 32.4
    assert x[0, 5, 5] == pytest.approx(0.0)           # 128/256 - 0.5
    assert x[2, 5, 5] == pytest.approx(200 / 256 - 0.5, abs=2e-3)
    assert (x[:, :, 34:] == -0.5).all()               # padding to the right
    same, s1 = preprocess(image, (20, 30))            # exact fit: plain copy
    assert s1 == 1 and np.array_equal(same, image.transpose(2, 0, 1) / 256 - 0.5)
    with pytest.raises(InferenceError):
        preprocess(np.zeros((5, 5), np.uint8), (16, 16))


def test_upsample_half_pixel_geometry_and_merge():
    # A linear ramp in net-output pixels stays a ramp: target x reads source (x + .5)/8 - .5.
    h, w = 6, 7
    ramp = np.tile(np.arange(w, dtype=np.float32), (2, h, 1))
    up = upsample_output(ramp, (w * 8, h * 8), 8.0)
    xs = np.arange(12, 8 * (w - 2) - 4)               # all four taps inside the map
    assert np.allclose(up[0, 20, xs], (xs + 0.5) / 8 - 0.5, atol=1e-4)
    # Catmull-Rom interpolates: every 8th pixel from offset 3.5 hits a source sample exactly
    # only in the limit; the value at x = 8 i + 3.5 is the source value i (checked at 4 and 5).
    assert np.allclose((up[1, 20, 8 * 3 + 3] + up[1, 20, 8 * 3 + 4]) / 2, 3.0, atol=1e-4)
    # the first column: taps (0, 0, 1, 2) at the unclamped offset t = -0.4375 (CUDA's border
    # rule), Catmull-Rom weights w2 = -1.5t^3 + 2t^2 + 0.5t and w3 = 0.5t^3 - 0.5t^2
    t = -0.4375
    assert up[0, 20, 0] == pytest.approx((-1.5 * t**3 + 2 * t**2 + 0.5 * t)
                                         + 2 * (0.5 * t**3 - 0.5 * t**2), abs=1e-5)
    # Two scales whose cells hold the image x of their centre, (8 i + 3.5) / s. Scale 0 maps
    # back exactly; scale s_i is read at (x + 0.5) s_i / (8 s_0) - 0.5 (OpenPose's multi-scale
    # factor), which for s = 0.5 gives x - 0.5; the merge is the plain mean.
    s0, s1 = 1.0, 0.5
    out0 = np.tile((8 * np.arange(16, dtype=np.float32) + 3.5) / s0, (1, 16, 1))
    out1 = np.tile((8 * np.arange(8, dtype=np.float32) + 3.5) / s1, (1, 8, 1))
    merged = resize_and_merge([out0, out1], [s0, s1], (128, 128))
    xs = np.arange(24, 88)
    assert np.allclose(merged[0, 60, xs], ((xs + 0.0) + (xs - 0.5)) / 2, atol=1e-3)


# ------------------------------------------------------------------------------- backends
def test_torch_and_opencv_backends_agree(tiny_model_files):
    proto, caffemodel = tiny_model_files
    rng = np.random.default_rng(0)
    torch_backend = load_backend("torch", proto, caffemodel, device="cpu")
    cv_backend = load_backend("opencv", proto, caffemodel)
    batch = rng.uniform(-0.5, 0.5, (2, 3, 48, 64)).astype(np.float32)
    a = torch_backend.forward(batch)
    b = cv_backend.forward(batch)
    assert a.shape == b.shape == (2, 11, 6, 8)
    assert np.abs(a).max() > 1e-2                       # not a degenerate all-zero net
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    # batched == one by one
    np.testing.assert_allclose(torch_backend.forward(batch[1:]), a[1:], atol=1e-5)


def test_pycaffe_backend_when_available(tiny_model_files):
    pytest.importorskip("caffe", reason="pycaffe ('import caffe') is not installed: the caffe "
                                        "backend needs a user's own OpenPose Caffe build")
    proto, caffemodel = tiny_model_files
    batch = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(load_backend("caffe", proto, caffemodel).forward(batch),
                               load_backend("opencv", proto, caffemodel).forward(batch), atol=1e-4)


def test_backend_errors(tiny_model_files, tmp_path):
    proto, caffemodel = tiny_model_files
    with pytest.raises(InferenceError, match="unknown backend"):
        load_backend("tensorrt", proto, caffemodel)
    with pytest.raises(InferenceError, match="caffemodel file not found"):
        load_backend("opencv", proto, str(tmp_path / "missing.caffemodel"))
    bad = tmp_path / "bad.prototxt"
    bad.write_text(TINY_DEPLOY.replace('top: "net_output"', 'top: "out"'))
    with pytest.raises(InferenceError, match="net_output"):
        load_backend("torch", str(bad), caffemodel)


def test_find_model_files(tmp_path, tiny_model_files):
    body25 = get_model("BODY_25")
    folder = tmp_path / "models" / body25.model_folder
    folder.mkdir(parents=True)
    (folder / body25.deploy_name).write_text("x")
    (folder / body25.caffemodel_name).write_text("x")
    assert find_model_files(body25, str(tmp_path / "models")) == (
        str(folder / body25.deploy_name), str(folder / body25.caffemodel_name))
    flat = tmp_path / "snap"
    flat.mkdir()
    (flat / "pose_deploy.prototxt").write_text("x")
    for it in (2000, 10000, 500):
        (flat / f"pose_iter_{it}.caffemodel").write_text("x")
    assert find_model_files(body25, str(flat))[1].endswith("pose_iter_10000.caffemodel")
    with pytest.raises(InferenceError, match="no deploy prototxt"):
        find_model_files(body25, str(tmp_path / "empty"))


def test_estimator_batches_equal_sizes_and_multi_scale(tiny_model_files):
    proto, caffemodel = tiny_model_files

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, []

        def forward(self, batch):
            self.calls.append(batch.shape)
            return self.inner.forward(batch)

    backend = Counting(load_backend("torch", proto, caffemodel, device="cpu"))
    est = PoseEstimator(get_model("BODY_25"), backend,
                        InferenceSettings(net_resolution="-1x64", scale_number=2, scale_gap=0.5))
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    results = est.heatmaps_batch(images)
    assert sorted(backend.calls) == [(3, 3, 32, 32), (3, 3, 64, 80)]   # 40 floors to 32
    maps, s = results[0]
    assert maps.shape == (11, 64, 80)
    assert s == pytest.approx(net_to_image_scale((80, 64), (80, 60)))


def test_backends_agree_on_generated_body25_tiny_deploy(tmp_path):
    """The generator's small BODY_25-layout deploy (78 outputs, PReLU dense blocks), He-scaled
    random weights so activations stay O(1) through the stages."""
    render = pytest.importorskip("openpose_train.generator.render",
                                 reason="prototxt generator not available")
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt, write_caffemodel
    from openpose_train.caffe_layers.shapes import random_weights
    proto = tmp_path / "pose_deploy.prototxt"
    proto.write_text(render.render_deploy("BODY_25", preset="tiny"))
    net = read_net_prototxt(str(proto))
    rng = np.random.default_rng(4)
    weights = random_weights(net, seed=4)
    for blobs in weights.values():
        if blobs[0].ndim == 4:
            fan_in = blobs[0][0].size
            blobs[0][...] = rng.normal(0, np.sqrt(2 / fan_in), blobs[0].shape)
    caffemodel = tmp_path / "pose_iter_1.caffemodel"
    write_caffemodel(str(caffemodel), weights, net=net)
    batch = rng.uniform(-0.5, 0.5, (2, 3, 64, 96)).astype(np.float32)
    a = load_backend("torch", str(proto), str(caffemodel), device="cpu").forward(batch)
    b = load_backend("opencv", str(proto), str(caffemodel)).forward(batch)
    assert a.shape == (2, get_model("BODY_25").num_channels, 8, 12)
    scale = np.abs(a).max()
    assert scale > 0.1
    np.testing.assert_allclose(a, b, atol=1e-4 * scale)


@pytest.mark.parametrize("scales", [1, 3])
def test_estimator_coordinate_chain_with_ideal_net(scales):
    """A fake net that outputs ideal stride-8 maps of known people, in the geometry of whatever
    input it gets: letterbox scale, upsampling, multi-scale merge and net->image scale must bring
    the keypoints back to image pixels (OpenPose's +0.5 included)."""
    from openpose_train.validation.groundtruth_maps import (BODY_25_UPRIGHT,
                                                            render_ground_truth_maps)
    model = get_model("BODY_25")
    rng = np.random.default_rng(7)
    image_size = (640, 480)
    centres = np.array([[[180, 60]], [[450, 90]]])
    people = np.concatenate([centres + BODY_25_UPRIGHT * 300 + rng.normal(0, 2, (2, 25, 2)),
                             np.ones((2, 25, 1))], axis=2)

    class IdealNet:
        def forward(self, batch):
            out = []
            for x in batch:
                h, w = x.shape[1:]
                s = scale_factor(image_size, (w, h))
                scaled = people.copy()
                scaled[..., :2] *= s
                out.append(render_ground_truth_maps(model, scaled, h, w, sigma=7 * s + 2,
                                                    paf_width=8, stride=8))
            return np.stack(out)

    est = PoseEstimator(model, IdealNet(), InferenceSettings(net_resolution="-1x368",
                                                             scale_number=scales, scale_gap=0.25))
    keypoints, scores = est.estimate(np.zeros((480, 640, 3), np.uint8))
    assert keypoints.shape == (2, 25, 3)
    # estimate_batch writes every image's maps into one reused buffer: same people
    for kp, sc in est.estimate_batch([np.zeros((480, 640, 3), np.uint8)] * 2):
        np.testing.assert_array_equal(kp, keypoints)
        np.testing.assert_array_equal(sc, scores)
    order = np.argsort(keypoints[:, 0, 0])
    found = keypoints[order, :, 2] > 0
    assert found.all()
    err = np.abs(keypoints[order, :, :2] - people[:, :, :2] - 0.5)[found]
    assert err.max() < (2.0 if scales == 1 else 3.0), err.max()
    assert (scores > 0.5).all()


# ------------------------------------------------------------------ 4-tap resize vs dense
RESIZE_CASES = [        # (channels, (w, h) source, (W, H) target, factor)
    (78, (46, 46), (368, 368), 8.0),          # BODY_25 at 368x368: strided row windows
    (5, (82, 46), (656, 368), 8.0),
    (3, (10, 13), (77, 90), 7.3),             # odd sizes and factor: gathered row windows
    (4, (7, 6), (59, 51), 8.0),               # target not 8 x source
    (2, (12, 9), (100, 70), 5.5),
    (3, (5, 3), (40, 24), 8.0),               # fewer source rows than one block's window
    (2, (1, 1), (8, 8), 8.0),
    (1, (2, 3), (30, 17), 8.0),
    (3, (20, 5), (300, 33), 13.0),            # wider than 2 column blocks, short maps
]


@pytest.mark.parametrize("device", [None, "cpu", "cuda"])       # numpy; torch on CPU / GPU
@pytest.mark.parametrize("channels,source,target,factor", RESIZE_CASES)
def test_resize_equals_dense_reference(channels, source, target, factor, device):
    """The block-banded resize uses the dense matrices' float32 weights minus the zero terms:
    the same maps within 1e-5 (in practice bit-equal), C-contiguous float32; with numpy and
    with torch."""
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
    from openpose_train.validation.inference import _resize_and_merge_dense
    rng = np.random.default_rng(sum(target) + channels)
    w, h = source
    src = rng.normal(0, 1, (channels, h, w)).astype(np.float32)
    fast = upsample_output(src, target, factor, device=device)
    dense = _resize_and_merge_dense([src], [1.0], target, factor=factor)
    assert fast.shape == dense.shape == (channels, target[1], target[0])
    assert fast.dtype == np.float32 and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, dense, rtol=0, atol=1e-5)
    assert np.abs(dense).max() > 0.5                  # not a degenerate comparison


def test_row_pass_windows_hold_every_weight():
    """Both window layouts (strided view / gather) rebuild the dense (H, h) matrix of every
    channel exactly: no tap falls outside its block's window."""
    from openpose_train.validation.inference import ROW_BLOCK, _row_pass, cubic_resize_matrix
    cases = [(5, 368, 46, 8.0, True), (3, 51, 6, 8.0, True), (5, 90, 13, 7.3, False),
             (3, 90, 6, 8.0, False), (4, 24, 3, 8.0, False)]
    for channels, n_out, n_in, factor, strided in cases:
        plan = _row_pass(channels, n_out, n_in, factor)
        assert (plan.step > 0) == strided
        weights = plan.weights
        blocks = weights.shape[0]
        starts = (plan.first + plan.step * np.arange(blocks) if plan.step else
                  plan.index.reshape(blocks, plan.span)[:, 0] - plan.pad_before)
        full = np.zeros((blocks * ROW_BLOCK, channels * n_in + plan.pad_before + plan.pad_after))
        for k in range(blocks):
            cols = slice(starts[k] + plan.pad_before, starts[k] + plan.pad_before + plan.span)
            full[k * ROW_BLOCK:(k + 1) * ROW_BLOCK, cols] = weights[k]
        full = full[:channels * n_out, plan.pad_before:plan.pad_before + channels * n_in]
        matrix = cubic_resize_matrix(n_out, n_in, factor)
        expected = np.kron(np.eye(channels), matrix)    # block-diagonal over channels
        np.testing.assert_array_equal(full, expected)


def test_multi_scale_merge_equals_dense_reference():
    """OpenPose's 3-scale merge (factors 8 s0 / s_i, gathered windows for the smaller scales)
    and the average, against the dense reference."""
    from openpose_train.validation.inference import _resize_and_merge_dense
    rng = np.random.default_rng(5)
    image_size, net0 = (1000, 560), (656, 368)
    sizes = scale_net_sizes(net0, 3, 0.25)
    scales = [scale_factor(image_size, size) for _, size in sizes]
    outs = [rng.normal(0, 1, (5, size[1] // 8, size[0] // 8)).astype(np.float32)
            for _, size in sizes]                   # 5 x 368 rows: a partial last row block
    fast = resize_and_merge(outs, scales, net0)
    dense = _resize_and_merge_dense(outs, scales, net0)
    np.testing.assert_allclose(fast, dense, rtol=0, atol=1e-5)
    # the merge is the mean: a constant map stays constant
    flat = resize_and_merge([np.full_like(o, 0.25) for o in outs], scales, net0)
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)
    with pytest.raises(InferenceError, match="channels"):
        resize_and_merge([outs[0], outs[1][:3]], scales[:2], net0)


def test_resize_ignores_uninitialised_buffers(monkeypatch):
    """Output and scratch buffers start as whatever memory held: NaN there must not leak, also
    not through the last, partial row block (3 x 48 rows = 4.5 blocks)."""
    import torch

    from openpose_train.validation import inference
    monkeypatch.setattr(inference, "_empty", lambda shape, device: (
        np.full(shape, np.nan, np.float32) if device == inference.NUMPY else
        torch.full(shape, float("nan"), device=device)))
    rng = np.random.default_rng(8)
    outs = [rng.normal(0, 1, (3, 6, 7)).astype(np.float32),
            rng.normal(0, 1, (3, 5, 5)).astype(np.float32)]
    dense = inference._resize_and_merge_dense(outs, [1.0, 0.75], (56, 48))
    for device in (None, "cpu"):                        # numpy, torch
        inference._SCRATCH.__dict__.pop("buffers", None)     # fresh (NaN) scratch buffers
        out = np.full((3, 48, 56), np.nan, np.float32)
        merged = resize_and_merge(outs, [1.0, 0.75], (56, 48), device=device, out=out)
        assert merged is out and np.isfinite(merged).all()
        np.testing.assert_allclose(merged, dense, atol=1e-5)
        # a reused buffer holding the previous result gives the same maps again
        np.testing.assert_array_equal(
            resize_and_merge(outs, [1.0, 0.75], (56, 48), device=device, out=out), merged)
    inference._SCRATCH.__dict__.pop("buffers", None)
    for bad in (np.zeros((3, 48, 55), np.float32), np.zeros((3, 48, 56)),
                np.zeros((3, 56, 48), np.float32).transpose(0, 2, 1)):
        with pytest.raises(InferenceError, match="out must be"):
            resize_and_merge(outs, [1.0, 0.75], (56, 48), out=bad)


def test_numpy_resize_and_cpu_build_do_not_import_torch():
    """``validate --backend opencv`` pays for no torch import: the CUDA build's resize (numpy
    on the CPU), its block bounds and parse, and the CPU build's, run without loading torch."""
    import subprocess
    import sys
    code = (
        "import sys, numpy as np\n"
        "from openpose_train.generator.registry import get_model\n"
        "from openpose_train.validation.inference import InferenceSettings, PoseEstimator\n"
        "class Net:\n"
        "    def forward(self, batch):\n"
        "        return np.random.default_rng(0).random((len(batch), 78, 46, 46), np.float32)\n"
        "image = np.zeros((368, 368, 3), np.uint8)\n"
        "for build in ('cuda', 'cpu'):\n"
        "    estimator = PoseEstimator(get_model('BODY_25'), Net(), InferenceSettings(\n"
        "        net_resolution='368x368', openpose_build=build))\n"
        "    estimator.estimate(image)\n"
        "print('torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert run.stdout.strip() == "False", run.stdout + run.stderr


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_resize_on_torch_devices(device):
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from openpose_train.validation.inference import _resize_and_merge_dense
    rng = np.random.default_rng(9)
    outs = [rng.normal(0, 1, (4, 10, 12)).astype(np.float32),
            rng.normal(0, 1, (4, 8, 9)).astype(np.float32)]
    merged = resize_and_merge(outs, [1.0, 0.75], (96, 80), device=device)
    assert isinstance(merged, np.ndarray) and merged.flags.c_contiguous
    np.testing.assert_allclose(merged, _resize_and_merge_dense(outs, [1.0, 0.75], (96, 80)),
                               atol=1e-5)


def test_resize_benchmark_quick_prints_json_lines(repo_root):
    import json
    import subprocess
    import sys
    run = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "postprocess.py"),
                          "--quick", "--only", "resize_merge_ms"],
                         capture_output=True, text=True, timeout=300, check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert [line["case"] for line in lines] == ["input=368x368", "input=656x368",
                                                 "input=656x368,scales=3"]
    for line in lines:
        assert line["bench"] == "resize_merge_ms" and line["unit"] == "ms"
        assert 0 < line["min_ms"] <= line["value"] and line["baseline"] > 0
        assert line["max_abs_diff"] <= 1e-5 and line["channels"] == 78
        assert line["floor_ms"] > 0
        assert line["floor_ratio"] == pytest.approx(line["value"] / line["floor_ms"], rel=0.01)
