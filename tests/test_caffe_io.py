"""caffe.proto, prototxt / caffemodel / solverstate I/O and shape inference.

Independent checks: protobuf's own parser/serialiser for the hand-written wire codec, OpenCV's Caffe
importer for written caffemodels, torch for pooling/convolution output sizes, the fork's field table
for OPTransformationParameter and its parameter count for BODY_25.
"""
import ast
import filecmp
import glob
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from conftest import REPO, shared_path
from openpose_train.caffe_layers import caffe_io, caffe_pb2, shapes
from openpose_train.caffe_layers.caffe_io import (CaffemodelError, PrototxtError, WeightsMismatchError,
                                                  check_weights_against_net, read_caffemodel, read_net_prototxt,
                                                  read_solver_prototxt, read_solverstate, write_caffemodel,
                                                  write_prototxt, write_solverstate)
from openpose_train.caffe_layers.shapes import infer_blob_shapes, param_shapes, pooled_size, random_weights

MODELS = ("reference", "openpose_models")

SMALL_NET = """
name: "small"
layer { name: "data" type: "Input" top: "image" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 20 } } }
layer { name: "conv1" type: "Convolution" bottom: "image" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 pad: 1 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "pool1" top: "conv3"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 bias_term: false } }
layer { name: "concat" type: "Concat" bottom: "conv2" bottom: "conv3" top: "net_output" concat_param { axis: 1 } }
"""


def small_net():
    return text_format.Parse(SMALL_NET, caffe_pb2.NetParameter())


def reference_files(kind):
    root = shared_path(*MODELS)
    files = sorted(glob.glob(str(root / "**" / "*.prototxt"), recursive=True))
    return [f for f in files if (("solver" in os.path.basename(f)) == (kind == "solver"))]


def assert_weights_equal(a, b):
    assert list(a) == list(b)
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for x, y in zip(a[name], b[name]):
            assert x.shape == y.shape and x.dtype == np.float32
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------------
# caffe.proto

def _serialized_descriptor(path):
    """The FileDescriptorProto bytes embedded in a generated *_pb2.py."""
    text = Path(path).read_text()
    literal = re.search(r"AddSerializedFile\((b'.*?')\)\n", text, re.S).group(1)
    return ast.literal_eval(literal)


def test_generated_module_matches_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'caffe_layers'}",
                    f"--python_out={tmp_path}", str(REPO / "caffe_layers" / "caffe.proto")], check=True)
    committed = REPO / "caffe_layers" / "caffe_pb2.py"
    assert _serialized_descriptor(tmp_path / "caffe_pb2.py") == _serialized_descriptor(committed), \
        "caffe_pb2.py is stale: run `make proto`"
    from importlib.metadata import version
    if version("grpcio-tools") == "1.85.1":   # the generator of the committed file: byte-identical
        assert filecmp.cmp(tmp_path / "caffe_pb2.py", committed, shallow=False), "run `make proto`"


# the fork's caffe.proto (docs/formats.md §Prototxt dialect): number, name, type, default
OP_TRANSFORM_FIELDS = [
    (8, "stride", "uint32", 4), (9, "flip_prob", "float", 0.5), (10, "max_degree_rotations", "string", "45.0"),
    (12, "crop_size_x", "uint32", 368), (13, "crop_size_y", "uint32", 368),
    (14, "center_perterb_max", "float", 10.0), (15, "center_swap_prob", "float", 0.0),
    (16, "scale_prob", "float", 0.5), (17, "scale_mins", "string", "0.9"), (18, "scale_maxs", "string", "1.1"),
    (19, "target_dist", "float", 1.0), (20, "number_max_occlusions", "string", "0"),
    (21, "sigmas", "string", "7.0"), (22, "models", "string", "COCO"), (23, "sources", "string", ""),
    (24, "probabilities", "string", "1"), (25, "source_background", "string", ""),
    (26, "prob_only_background", "float", 0.0), (27, "media_directory", "string", ""),
    (28, "normalization", "uint32", 0), (29, "add_distance", "bool", False), (30, "input_type", "string", ""),
    (31, "frame_size", "uint32", 0), (32, "taf_topology", "uint32", 0),
]


def test_op_transform_param_matches_the_fork():
    from google.protobuf.descriptor import FieldDescriptor as F
    types = {"uint32": F.TYPE_UINT32, "float": F.TYPE_FLOAT, "string": F.TYPE_STRING, "bool": F.TYPE_BOOL}
    desc = caffe_pb2.OPTransformationParameter.DESCRIPTOR
    assert sorted(f.number for f in desc.fields) == [n for n, *_ in OP_TRANSFORM_FIELDS]
    for number, name, ftype, default in OP_TRANSFORM_FIELDS:
        fd = desc.fields_by_number[number]
        assert (fd.name, fd.type) == (name, types[ftype])
        assert fd.default_value == pytest.approx(default) if ftype == "float" else fd.default_value == default
    layer_fd = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["op_transform_param"]
    assert layer_fd.number == 149 and layer_fd.message_type is desc


@pytest.mark.parametrize("message,field,number", [
    ("NetParameter", "layer", 100), ("NetParameter", "layers", 2), ("NetParameter", "input_dim", 4),
    ("LayerParameter", "blobs", 7), ("LayerParameter", "include", 8), ("LayerParameter", "propagate_down", 11),
    ("LayerParameter", "convolution_param", 106), ("LayerParameter", "prelu_param", 131),
    ("LayerParameter", "python_param", 130), ("LayerParameter", "input_param", 143),
    ("BlobProto", "shape", 7), ("BlobProto", "data", 5), ("BlobProto", "double_data", 8),
    ("SolverParameter", "type", 40), ("SolverParameter", "iter_size", 36), ("SolverParameter", "weights", 42),
    ("SolverParameter", "clip_gradients", 35), ("SolverState", "current_step", 4), ("Datum", "encoded", 7),
    ("V1LayerParameter", "blobs", 6), ("V0LayerParameter", "blobs", 50), ("ConvolutionParameter", "dilation", 18),
    ("ConvolutionParameter", "binary", 19), ("LayerParameter", "clip_param", 148), ("LayerParameter", "swish_param", 147),
    ("PoolingParameter", "round_mode", 13), ("DataParameter", "prefetch", 10),
])
def test_caffe_field_numbers(message, field, number):
    assert getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field].number == number


def test_caffe_defaults():
    solver = caffe_pb2.SolverParameter()
    assert (solver.type, solver.momentum2, solver.delta, solver.clip_gradients, solver.average_loss) == \
        ("SGD", pytest.approx(0.999), pytest.approx(1e-8), -1, 1)
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU and solver.snapshot_format == solver.BINARYPROTO
    assert caffe_pb2.ParamSpec().lr_mult == 1 and caffe_pb2.ConvolutionParameter().bias_term
    assert caffe_pb2.PoolingParameter().stride == 1 and caffe_pb2.DataParameter().prefetch == 4
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].GetOptions().packed


# ---------------------------------------------------------------------------------------------------
# text prototxt

def test_text_round_trip(tmp_path):
    net = small_net()
    write_prototxt(net, tmp_path / "net.prototxt")
    assert read_net_prototxt(tmp_path / "net.prototxt") == net
    solver = caffe_pb2.SolverParameter(net="pose_training.prototxt", base_lr=1e-4, lr_policy="multistep",
                                       stepvalue=[200000, 300000], max_iter=600000, snapshot_prefix="model/pose")
    write_prototxt(solver, tmp_path / "solver.prototxt")
    assert read_solver_prototxt(tmp_path / "solver.prototxt") == solver
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "net.prototxt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_syntax_error_reports_file_line_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(PrototxtError, match=r"broken\.prototxt:4:3: .*tpye"):
        read_net_prototxt(path)
    path.write_text('layer {\n  name: "a"\n  convolution_param { num_output: x }\n}\n')
    with pytest.raises(PrototxtError, match=r"broken\.prototxt:3:35: "):
        read_net_prototxt(path)
    with pytest.raises(PrototxtError, match="missing.prototxt: cannot read"):
        read_net_prototxt(tmp_path / "missing.prototxt")


@pytest.mark.parametrize("kind", ["net", "solver"])
def test_every_reference_prototxt_parses(kind):
    files = reference_files(kind)
    assert files
    for f in files:
        msg = read_solver_prototxt(f) if kind == "solver" else read_net_prototxt(f)
        if kind == "solver":
            assert msg.base_lr > 0 and msg.max_iter > 0, f
        else:
            assert len(msg.layer) > 50, f
            # every layer our shape inference knows; deploy outputs have stride 8
            blobs = infer_blob_shapes(msg, {None: (1, 3, 368, 368)} if "deploy" in f else None)
            if "deploy" in f:
                assert blobs["net_output"][2:] == (46, 46), f


def test_legacy_op_transform_fields_are_mapped():
    f = shared_path(*MODELS, "experimental", "body_25", "training_results", "pose_training.prototxt")
    with pytest.raises(PrototxtError, match=r"pose_training\.prototxt:13:5: .*max_rotate_degree"):
        read_net_prototxt(f, upgrade_legacy=False)
    op = read_net_prototxt(f).layer[0].op_transform_param
    assert op.max_degree_rotations == "45.0" and op.scale_mins == "0.333333343267"
    assert op.scale_maxs == "1.10000002384" and op.number_max_occlusions == "2"
    assert op.models == "COCO_25;COCO_25_17"
    assert op.sources == "/mnt/4TB/openpose_train/dataset/lmdb_coco2017_foot;/mnt/4TB/openpose_train/dataset/lmdb_coco"
    probs = [float(p) for p in op.probabilities.split(";")]
    assert probs[1] == pytest.approx(0.949999988079) and sum(probs) == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# caffemodel

def test_caffemodel_round_trip_matches_protobuf(tmp_path):
    net = small_net()
    weights = random_weights(net, seed=3)
    path = tmp_path / "small.caffemodel"
    write_caffemodel(path, weights, net)
    assert_weights_equal(read_caffemodel(path), weights)
    # independent reader: protobuf parses the file, holds the net definition, and writes the same bytes
    data = path.read_bytes()
    parsed = caffe_pb2.NetParameter.FromString(data)
    assert parsed.SerializeToString() == data
    assert [layer.name for layer in parsed.layer] == [layer.name for layer in net.layer]
    conv1 = parsed.layer[1]
    assert conv1.convolution_param.num_output == 8 and conv1.param[1].lr_mult == 2
    assert tuple(conv1.blobs[0].shape.dim) == (8, 3, 3, 3)
    np.testing.assert_array_equal(np.array(conv1.blobs[0].data, np.float32), weights["conv1"][0].ravel())
    # without a net: name + type + blobs only
    write_caffemodel(tmp_path / "bare.caffemodel", weights, layer_types={"conv1": "Convolution"})
    loaded, types = read_caffemodel(tmp_path / "bare.caffemodel", with_types=True)
    assert_weights_equal(loaded, weights)
    assert types["conv1"] == "Convolution"


def test_random_weights_follow_fillers():
    w = random_weights(small_net(), seed=0)
    assert list(w) == ["conv1", "conv2", "prelu2", "conv3"]
    np.testing.assert_array_equal(w["conv1"][1], np.full(8, 0.5, np.float32))
    assert 0.05 < w["conv1"][0].std() < 0.15
    assert np.abs(w["conv2"][0]).max() <= np.sqrt(3.0 / 8)   # xavier, fan_in = 8*1*1
    np.testing.assert_array_equal(w["conv2"][1], np.zeros(6, np.float32))
    np.testing.assert_array_equal(w["prelu2"][0], np.full(6, 0.25, np.float32))
    assert [b.shape for b in w["conv3"]] == [(4, 4, 3, 3)]   # group 2, no bias


def test_opencv_reads_small_net_with_exact_values(tmp_path):
    """OpenCV's importer computes the same output as a numpy reference from our written weights."""
    net = text_format.Parse("""
      input: "image" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5
      layer { name: "c" type: "Convolution" bottom: "image" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
      layer { name: "p" type: "PReLU" bottom: "c" top: "c" }""", caffe_pb2.NetParameter())
    rng = np.random.default_rng(1)
    weights = OrderedDict(c=[rng.normal(size=(2, 3, 1, 1)).astype(np.float32), np.array([0.5, -2], np.float32)],
                          p=[np.array([0.1, 0.3], np.float32)])
    write_prototxt(net, tmp_path / "d.prototxt")
    write_caffemodel(tmp_path / "d.caffemodel", weights, net)
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    dnn = cv2.dnn.readNetFromCaffe(str(tmp_path / "d.prototxt"), str(tmp_path / "d.caffemodel"))
    dnn.setInput(x)
    out = dnn.forward()
    y = np.einsum("oc,nchw->nohw", weights["c"][0][:, :, 0, 0], x) + weights["c"][1][None, :, None, None]
    y = np.maximum(y, 0) + weights["p"][0][None, :, None, None] * np.minimum(y, 0)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)


def body25_net():
    return read_net_prototxt(shared_path(*MODELS, "pose", "body_25", "pose_deploy.prototxt"))


def test_body25_param_count_and_names():
    net = body25_net()
    expected = param_shapes(net)
    # OpenPose's BODY_25: 213 parameterised layers (114 conv + 99 PReLU), 26,166,084 parameters
    assert len(expected) == 213
    types = {layer.name: layer.type for layer in net.layer}
    assert sum(types[n] == "Convolution" for n in expected) == 114
    assert shapes.count_params(net) == 26_166_084
    assert expected["Mconv1_stage1_L2_0"][0] == (128, 180, 3, 3)
    assert expected["Mconv1_stage1_L1_0"][0] == (128, 206, 3, 3)
    assert expected["Mconv2_stage0_L2_0"][0] == (96, 288, 3, 3)
    assert expected["Mconv6_stage1_L2"] == [(512, 384, 1, 1), (512,)]
    assert expected["Mconv7_stage3_L2"][0] == (52, 512, 1, 1)
    assert expected["Mprelu6_stage0_L2"] == [(256,)]


def test_body25_caffemodel_runs_in_opencv(tmp_path):
    prototxt = shared_path(*MODELS, "pose", "body_25", "pose_deploy.prototxt")
    net = body25_net()
    weights = random_weights(net, seed=0)
    path = tmp_path / "pose_iter_1.caffemodel"
    write_caffemodel(path, weights, net)
    dnn = cv2.dnn.readNetFromCaffe(str(prototxt), str(path))
    dnn.setInput(np.random.default_rng(0).random((1, 3, 64, 64), np.float32))
    out = dnn.forward()
    assert out.shape == (1, 78, 8, 8) and np.isfinite(out).all()
    loaded = read_caffemodel(path)
    assert_weights_equal(loaded, weights)
    check_weights_against_net(net, loaded)


def test_writer_refuses_missing_bias_and_wrong_shape(tmp_path):
    net = small_net()
    weights = random_weights(net)
    no_bias = OrderedDict(weights, conv1=weights["conv1"][:1])
    with pytest.raises(WeightsMismatchError, match=r"'conv1'.*1 blob.*\(8, 3, 3, 3\).*expects 2.*\(8,\)"):
        write_caffemodel(tmp_path / "x.caffemodel", no_bias, net)
    wrong = OrderedDict(weights, conv2=[np.zeros((6, 4, 1, 1), np.float32), weights["conv2"][1]])
    with pytest.raises(WeightsMismatchError, match=r"'conv2'.*blob 0.*\(6, 4, 1, 1\).*expects \(6, 8, 1, 1\)"):
        write_caffemodel(tmp_path / "x.caffemodel", wrong, net)
    missing = OrderedDict((k, v) for k, v in weights.items() if k != "prelu2")
    with pytest.raises(WeightsMismatchError, match=r"'prelu2' \(PReLU\): missing.*\(6,\)"):
        write_caffemodel(tmp_path / "x.caffemodel", missing, net)
    assert not (tmp_path / "x.caffemodel").exists() and not list(tmp_path.iterdir())
    # an extra layer is reported, not fatal; a legacy 4-D bias shape (1,1,1,N) is accepted like Caffe
    extra = OrderedDict(weights, unknown=[np.zeros(3, np.float32)])
    extra["conv1"] = [weights["conv1"][0], weights["conv1"][1].reshape(1, 1, 1, 8)]
    assert check_weights_against_net(net, extra) == ["unknown"]


def test_check_uses_the_given_input_shape():
    net = text_format.Parse("""input: "x" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4
      layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }""",
                            caffe_pb2.NetParameter())
    weights = OrderedDict(fc=[np.zeros((3, 2 * 6 * 6), np.float32), np.zeros(3, np.float32)])
    assert check_weights_against_net(net, weights, input_shape=(1, 2, 6, 6)) == []
    with pytest.raises(WeightsMismatchError, match=r"'fc' \(InnerProduct\): blob 0.*\(3, 72\).*\(3, 32\)"):
        check_weights_against_net(net, weights)


def test_v1_layers_caffemodel_reads(tmp_path):
    """Old files (VGG-19) keep layers in the V1 `layers` field with legacy 4-D blob dims."""
    old = caffe_pb2.NetParameter(name="VGG_ILSVRC_19_layers")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    layer = old.layers.add(name="conv1_1", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    layer.bottom.append("data")
    layer.top.append("conv1_1")
    layer.blobs.add(num=4, channels=3, height=3, width=3).data.extend(w.ravel().tolist())
    layer.blobs.add(num=1, channels=1, height=1, width=4).data.extend(b.tolist())
    old.layers.add(name="relu1_1", type=caffe_pb2.V1LayerParameter.RELU)
    v0 = old.layers.add().layer
    v0.name, v0.type = "fc_v0", "innerproduct"
    v0.blobs.add(num=1, channels=1, height=2, width=2).data.extend([1, 2, 3, 4])
    path = tmp_path / "vgg.caffemodel"
    path.write_bytes(old.SerializeToString())
    weights, types = read_caffemodel(path, with_types=True)
    assert list(weights) == ["conv1_1", "fc_v0"]
    np.testing.assert_array_equal(weights["conv1_1"][0], w)
    np.testing.assert_array_equal(weights["conv1_1"][1], b.reshape(1, 1, 1, 4))
    np.testing.assert_array_equal(weights["fc_v0"][0], np.array([[[[1, 2], [3, 4]]]], np.float32))
    assert types["conv1_1"] == "Convolution" and types["relu1_1"] == "ReLU"


def test_v1_prototxt_is_upgraded(tmp_path):
    path = tmp_path / "vgg_v1.prototxt"
    path.write_text("""name: "VGG"
input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { bottom: "data" top: "conv1_1" name: "conv1_1" type: CONVOLUTION
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }
layers { bottom: "conv1_1" top: "conv1_1" name: "relu1_1" type: RELU }
layers { bottom: "conv1_1" top: "pool1" name: "pool1" type: POOLING pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { bottom: "pool1" top: "prob" name: "prob" type: SOFTMAX_LOSS include { phase: TRAIN } }
""")
    net = read_net_prototxt(path)
    assert not len(net.layers)
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("conv1_1", "Convolution"), ("relu1_1", "ReLU"), ("pool1", "Pooling"), ("prob", "SoftmaxWithLoss")]
    conv = net.layer[0]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.convolution_param.num_output == 4 and list(conv.bottom) == ["data"]
    assert net.layer[3].include[0].phase == caffe_pb2.TRAIN
    assert param_shapes(net) == OrderedDict(conv1_1=[(4, 3, 3, 3), (4,)])
    v1 = read_net_prototxt(path, upgrade_legacy=False)
    assert len(v1.layers) == 4
    weights = OrderedDict(conv1_1=[np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)])
    write_caffemodel(tmp_path / "v1.caffemodel", weights, v1)   # checked and written as today's 'layer'
    assert [layer.type for layer in caffe_pb2.NetParameter.FromString(
        (tmp_path / "v1.caffemodel").read_bytes()).layer] == ["Convolution", "ReLU", "Pooling", "SoftmaxWithLoss"]
    with pytest.raises(WeightsMismatchError, match="conv1_1"):
        check_weights_against_net(v1, OrderedDict(conv1_1=weights["conv1_1"][:1]))


def test_hdf5_caffemodel_reads(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "snap.caffemodel.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("data").create_group("conv1")
        g["0"] = np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1)
        g["1"] = np.ones(2, np.float32)
    weights = read_caffemodel(path)
    np.testing.assert_array_equal(weights["conv1"][0], np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1))
    assert weights["conv1"][1].shape == (2,)


def test_corrupt_caffemodel_names_the_file(tmp_path):
    net = small_net()
    write_caffemodel(tmp_path / "ok.caffemodel", random_weights(net), net)
    data = (tmp_path / "ok.caffemodel").read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) // 2])
    with pytest.raises(CaffemodelError, match=r"cut\.caffemodel: not a valid caffemodel"):
        read_caffemodel(tmp_path / "cut.caffemodel")


# ---------------------------------------------------------------------------------------------------
# solverstate

def test_solverstate_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    history = [rng.normal(size=(8, 3, 3, 3)).astype(np.float32), rng.normal(size=8).astype(np.float32),
               np.zeros((0,), np.float32)]
    path = tmp_path / "pose_iter_2000.solverstate"
    write_solverstate(path, 2000, "model/pose_iter_2000.caffemodel", history, current_step=1)
    state = read_solverstate(path)
    assert (state.iter, state.learned_net, state.current_step) == (2000, "model/pose_iter_2000.caffemodel", 1)
    for a, b in zip(state.history, history):
        np.testing.assert_array_equal(a, b)
    parsed = caffe_pb2.SolverState.FromString(path.read_bytes())   # independent reader
    assert parsed.iter == 2000 and len(parsed.history) == 3 and tuple(parsed.history[0].shape.dim) == (8, 3, 3, 3)
    assert parsed.SerializeToString() == path.read_bytes()


# ---------------------------------------------------------------------------------------------------
# shapes

@pytest.mark.parametrize("size,kernel,pad,stride", [(5, 2, 0, 2), (5, 2, 1, 2), (7, 3, 1, 2), (46, 3, 0, 2),
                                                     (6, 3, 1, 3), (368, 2, 0, 2)])
def test_pooling_size_matches_opencv_and_torch(size, kernel, pad, stride):
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, pad, ceil_mode=True).shape[-1]
    assert pooled_size(size, kernel, pad, stride) == want
    net = text_format.Parse(f"""input: "x" input_dim: 1 input_dim: 1 input_dim: {size} input_dim: {size}
      layer {{ name: "p" type: "Pooling" bottom: "x" top: "p"
               pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad} }} }}""",
                            caffe_pb2.NetParameter())
    dnn = cv2.dnn.readNetFromCaffe(bytearray(text_format.MessageToString(net).encode()))
    dnn.setInput(np.zeros((1, 1, size, size), np.float32))
    assert dnn.forward().shape[2:] == infer_blob_shapes(net)["p"][2:]


def test_small_net_shapes_match_opencv(tmp_path):
    net = small_net()
    blobs = infer_blob_shapes(net)
    assert blobs["pool1"] == (1, 8, 10, 10) and blobs["net_output"] == (1, 10, 10, 10)
    write_prototxt(net, tmp_path / "s.prototxt")
    write_caffemodel(tmp_path / "s.caffemodel", random_weights(net), net)
    dnn = cv2.dnn.readNetFromCaffe(str(tmp_path / "s.prototxt"), str(tmp_path / "s.caffemodel"))
    dnn.setInput(np.zeros((1, 3, 20, 20), np.float32))
    assert dnn.forward().shape == blobs["net_output"]


def test_shape_inference_layer_kinds():
    net = text_format.Parse("""
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 dim: 9 dim: 9 } } }
      layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" slice_param { slice_point: 2 axis: 1 } }
      layer { name: "d" type: "Deconvolution" bottom: "a" top: "up"
              convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
      layer { name: "bn" type: "BatchNorm" bottom: "b" top: "b" }
      layer { name: "sc" type: "Scale" bottom: "b" top: "b" scale_param { bias_term: true } }
      layer { name: "e" type: "Eltwise" bottom: "b" bottom: "b" top: "e" }
      layer { name: "ip" type: "InnerProduct" bottom: "e" top: "ip" inner_product_param { num_output: 7 } }
      layer { name: "r" type: "Reshape" bottom: "ip" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 1 } } }
      layer { name: "dil" type: "Convolution" bottom: "x" top: "dil"
              convolution_param { num_output: 3 kernel_size: 3 dilation: 2 stride: 2 } }
      layer { name: "loss" type: "EuclideanLoss" bottom: "e" bottom: "e" top: "loss" }
      layer { name: "sil" type: "Silence" bottom: "up" }""", caffe_pb2.NetParameter())
    blobs = infer_blob_shapes(net)
    assert blobs["a"] == (2, 2, 9, 9) and blobs["b"] == (2, 4, 9, 9) and blobs["up"] == (2, 4, 18, 18)
    assert blobs["ip"] == (2, 7) and blobs["r"] == (2, 7, 1) and blobs["dil"] == (2, 3, 3, 3) and blobs["loss"] == ()
    p = param_shapes(net)
    assert p == OrderedDict(d=[(2, 4, 4, 4)], bn=[(4,), (4,), (1,)], sc=[(4,), (4,)], ip=[(7, 324), (7,)],
                            dil=[(3, 6, 3, 3), (3,)])


def test_unknown_layer_type_named():
    net = text_format.Parse('input: "x" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2 '
                            'layer { name: "odd" type: "Frobnicate" bottom: "x" top: "y" }', caffe_pb2.NetParameter())
    with pytest.raises(shapes.ShapeInferenceError, match="'odd'.*Frobnicate"):
        infer_blob_shapes(net)


# ---------------------------------------------------------------------------------------------------
# benchmark smoke test

def test_benchmark_quick_prints_json_lines():
    bench = REPO / "benchmarks" / "caffemodel_io.py"
    out = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {r["bench"] for r in records} == {"caffemodel_write_s", "caffemodel_read_s"}
    for r in records:
        assert r["case"] == "BODY_25" and r["unit"] == "s" and r["value"] > 0
        assert set(r) >= {"bench", "case", "value", "unit", "baseline", "baseline_name"}
