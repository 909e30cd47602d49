"""Prototxt generator: byte-exact deploy files, training/solver content, OpenCV loading, CLI, scripts."""
import hashlib
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from conftest import shared_path
from openpose_train.caffe_layers import caffe_pb2
from openpose_train.generator import experimental, families, render
from openpose_train.generator.cli import parse_crop, parse_lmdb_arg, prototxt
from openpose_train.generator.registry import PoseModel, get_model, register

# (model, preset or None = default, md5 of the upstream file, its path under reference/openpose_models)
DEPLOYS = [
    ("BODY_25", None, "451938635cf007327c3cf235ed483844", "pose/body_25/pose_deploy.prototxt"),
    ("COCO_18", None, "c9e6e28e5b84b7b49c436f929b58db91", "pose/coco/pose_deploy_linevec.prototxt"),
    ("MPI_15", None, "8a8f979261f89212676450b18f78ecc1", "pose/mpi/pose_deploy_linevec.prototxt"),
    ("MPI_15_4", None, "67ad3541c09b6f015151a230f52aa0b1",
     "pose/mpi/pose_deploy_linevec_faster_4_stages.prototxt"),
    ("HAND_21", None, "ca8222e4c5cb5b09ff1b11b50dee6b27", "hand/pose_deploy.prototxt"),
    ("FACE_70", None, "b32f177736845e53a4dc98eceb7dfa26", "face/pose_deploy.prototxt"),
    ("BODY_25", "body_25", "451938635cf007327c3cf235ed483844", "experimental/body_25/body_25/pose_deploy.prototxt"),
    ("BODY_25B", "1_25BBkg", "1fa1b908c468ce2ad69595195c1d9418",
     "experimental/1_25BBkg/body_25b/pose_deploy.prototxt"),
    ("BODY_25B", "1_25BSuperModel11FullVGG", "3a40ec4ea40aedb9a63128377e3fcdc1",
     "experimental/1_25BSuperModel11FullVGG/body_25b/pose_deploy.prototxt"),
    ("BODY_135", "100_135AlmostSameBatchAllGPUs", "fe80aace8ae12231b821ac34af7372de",
     "experimental/100_135AlmostSameBatchAllGPUs/body_135/pose_deploy.prototxt"),
]
EXPERIMENTS = [("BODY_25", "body_25"), ("BODY_25B", "1_25BBkg"), ("BODY_25B", "1_25BSuperModel11FullVGG"),
               ("BODY_135", "100_135AlmostSameBatchAllGPUs")]
IDS = [f"{m}-{p}" for m, p, _, _ in DEPLOYS]


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def parse_net(text):
    """Our schema: caffe_io.parse_prototxt when present (it also upgrades the old OPData fields)."""
    try:
        from openpose_train.caffe_layers.caffe_io import parse_prototxt
    except ImportError:
        return text_format.Parse(text, caffe_pb2.NetParameter())
    return parse_prototxt(text, caffe_pb2.NetParameter())


# --------------------------------------------------------------------------------------- deploy
@pytest.mark.parametrize("model,preset,digest,ref", DEPLOYS, ids=IDS)
def test_deploy_md5(model, preset, digest, ref):
    assert md5(render.render_deploy(model, preset)) == digest


@pytest.mark.parametrize("model,preset,digest,ref", DEPLOYS, ids=IDS)
def test_deploy_equals_reference_file(model, preset, digest, ref):
    path = shared_path("reference", "openpose_models", ref)
    assert render.render_deploy(model, preset) == path.read_text()


def test_default_presets_and_file_names():
    assert render.render_deploy("BODY_25B") == render.render_deploy("BODY_25B", "1_25BBkg")
    assert render.render_deploy("BODY_135") == render.render_deploy("BODY_135", "100_135AlmostSameBatchAllGPUs")
    assert render.render_deploy("COCO") == render.render_deploy("COCO_18")   # OpenPose --model_pose name
    assert render.file_names("COCO_18")["deploy"] == "pose_deploy_linevec.prototxt"
    assert render.file_names("MPI_15_4")["deploy"] == "pose_deploy_linevec_faster_4_stages.prototxt"
    assert render.file_names("BODY_25")["deploy"] == "pose_deploy.prototxt"


@pytest.mark.parametrize("model,preset,params", [
    # computed from the upstream deploy files
    ("BODY_25", None, 26166084), ("COCO_18", None, 52311446), ("MPI_15", None, 51481032),
    ("MPI_15_4", None, 34240880), ("HAND_21", None, 36832324), ("FACE_70", None, 38425706),
    ("BODY_25B", None, 26719041), ("BODY_25B", "1_25BSuperModel11FullVGG", 69355937),
    ("BODY_135", None, 63578247)])
def test_parameter_counts(model, preset, params):
    assert render.build_net(model, preset).parameter_count() == params


def test_stage_and_width_controls():
    net = render.build_net("BODY_25", "tiny", paf_stages=3, heat_stages=2, width=16)
    names = [l.name for l in net.layers]
    assert [o.suffix for o in net.stage_outputs] == ["stage0_L2", "stage1_L2", "stage2_L2", "stage0_L1", "stage1_L1"]
    assert "concat_stage1_L1" in names and "Mconv4_stage2_L2" in names
    shapes = net.parameter_shapes()
    assert shapes["Mconv1_stage2_L2_0"][0][0] == 16
    text = render.render_deploy("BODY_25", "tiny", paf_stages=3, heat_stages=2, width=16)
    assert parse_net(text).layer[-1].bottom == ["Mconv4_stage1_L1", "Mconv4_stage2_L2"]
    coco = render.build_net("COCO_18", None, paf_stages=3)
    assert coco.layers[-1].bottoms == ("Mconv7_stage3_L2", "Mconv7_stage3_L1")
    with pytest.raises(families.PresetError):
        render.build_net("BODY_25", "tiny", paf_stages=0)
    with pytest.raises(families.PresetError, match="unknown preset"):
        render.render_deploy("BODY_25", "nope")


# --------------------------------------------------------------------------------------- training
def _layers_by_type(net, type_):
    return [l for l in net.layer if l.type == type_]


@pytest.mark.parametrize("model,preset,layers,slice_points,losses", [
    ("BODY_25", "body_25", 276, [52, 78, 130], ["stage0_L2", "stage1_L2", "stage2_L2", "stage3_L2",
                                                 "stage0_L1", "stage1_L1"]),
    ("BODY_25B", "1_25BBkg", 276, [72, 97, 169], ["stage0_L2", "stage1_L2", "stage2_L2", "stage3_L2",
                                                   "stage4_L2", "stage0_L1"]),
    ("BODY_25B", "1_25BSuperModel11FullVGG", 213, [72, 97, 169], ["stage0_L2", "stage0_L1"]),
    ("BODY_135", "100_135AlmostSameBatchAllGPUs", 319, [304, 439, 743],
     ["stage0_L2", "stage1_L2", "stage2_L2", "stage3_L2", "stage0_L1"]),
    ("COCO_18", None, None, [38, 57, 95], [f"stage{t}_{b}" for t in range(1, 7) for b in ("L1", "L2")]),
    ("HAND_21", None, None, [22], [f"stage{t}" for t in range(1, 7)]),
    ("BODY_25", "tiny", None, [52, 78, 130], ["stage0_L2", "stage0_L1"]),
])
def test_training_net_structure(model, preset, layers, slice_points, losses):
    net = parse_net(render.render_training(model, preset))
    if layers is not None:
        assert len(net.layer) == layers          # the upstream training file's layer count
    assert net.layer[0].type == "OPData" and list(net.layer[0].top) == ["image", "label"]
    assert list(_layers_by_type(net, "Slice")[0].slice_param.slice_point) == slice_points
    loss_layers = _layers_by_type(net, "EuclideanLoss")
    assert [l.name for l in loss_layers] == [f"loss_{s}" for s in losses]
    assert all(list(l.loss_weight) == [1.0] for l in loss_layers)
    produced = {"image", "label"} | set()
    index = {l.name: i for i, l in enumerate(net.layer)}
    for i, layer in enumerate(net.layer):       # a valid DAG: every bottom exists before use
        for b in layer.bottom:
            assert b in produced, f"{layer.name} reads {b} before it exists"
        produced.update(layer.top)
    for loss in loss_layers:                    # weight = stage output (the conv right before) x weights
        weight = net.layer[index[loss.bottom[0]]]
        assert weight.type == "Eltwise" and net.layer[index[loss.bottom[0]] - 1].top[0] == weight.bottom[0]
        assert net.layer[index[loss.bottom[0]] - 1].type == "Convolution"
    assert not any(l.name == "net_output" for l in net.layer)
    convs = _layers_by_type(net, "Convolution")
    assert all(len(c.param) == 2 and c.param[1].lr_mult == 2 * c.param[0].lr_mult and c.param[1].decay_mult == 0
               for c in convs)
    model_ = get_model(model)
    by_top = {l.top[0]: l for l in convs}
    for w in (l for l in _layers_by_type(net, "Eltwise") if l.name.startswith("weight_")):
        expected = 2 * model_.num_pafs if w.bottom[1] == "vec_weight" else model_.num_parts + int(model_.has_background)
        assert by_top[w.bottom[0]].convolution_param.num_output == expected, w.name


def _op_values(layer):
    """Effective per-source values of an OPData layer (the fork pads short lists with element 0)."""
    p = layer.op_transform_param
    n = len(p.sources.split(";"))

    def per_source(text, cast=float):
        values = [cast(v) for v in text.split(";")]
        return (values + [values[0]] * n)[:n]
    return dict(
        batch=layer.data_param.batch_size, stride=p.stride, crop=(p.crop_size_x, p.crop_size_y),
        models=p.models.split(";"), sources=[os.path.basename(s) for s in p.sources.split(";")],
        probabilities=per_source(p.probabilities), pob=round(p.prob_only_background, 6),
        rotation=per_source(p.max_degree_rotations), scale_min=per_source(p.scale_mins),
        scale_max=per_source(p.scale_maxs), occlusions=per_source(p.number_max_occlusions, int),
        sigmas=per_source(p.sigmas), target_dist=round(p.target_dist, 6),
        center_perterb_max=p.center_perterb_max, center_swap_prob=p.center_swap_prob, scale_prob=p.scale_prob,
        normalization=p.normalization, background=os.path.basename(p.source_background))


@pytest.mark.parametrize("model,preset", EXPERIMENTS, ids=[p for _, p in EXPERIMENTS])
def test_training_matches_reference(model, preset):
    ref_path = shared_path("reference", "openpose_models", "experimental", preset, "training_results",
                           "pose_training.prototxt")
    pytest.importorskip("openpose_train.caffe_layers.caffe_io")   # reads the old OPData field names
    ref = parse_net(ref_path.read_text())
    ours = parse_net(render.render_training(model, preset))
    assert len(ours.layer) == len(ref.layer)
    for a, b in zip(ours.layer[1:], ref.layer[1:]):   # every layer but the data layer: identical messages
        assert a == b, f"layer {b.name} differs"
    got, want = _op_values(ours.layer[0]), _op_values(ref.layer[0])
    if preset == "100_135AlmostSameBatchAllGPUs":      # the reference's 15-entry scale lists: 9 are read
        want["scale_min"], want["scale_max"] = want["scale_min"][:9], want["scale_max"][:9]
    for key in want:
        if isinstance(want[key], list) and want[key] and isinstance(want[key][0], float):
            assert np.allclose(got[key], want[key], rtol=1e-6), key
        else:
            assert got[key] == want[key], key


@pytest.mark.parametrize("model,preset", EXPERIMENTS, ids=[p for _, p in EXPERIMENTS])
def test_solver_matches_reference(model, preset):
    ref_path = shared_path("reference", "openpose_models", "experimental", preset, "training_results",
                           "pose_solver.prototxt")
    ref = text_format.Parse(ref_path.read_text(), caffe_pb2.SolverParameter())
    ours = text_format.Parse(render.render_solver(model, preset), caffe_pb2.SolverParameter())
    ref.ClearField("snapshot_prefix")
    assert ours.snapshot_prefix == "model/pose"
    assert ours.random_seed == render.DEFAULT_RANDOM_SEED and not ref.HasField("random_seed")   # ours: reruns reproduce
    ours.ClearField("snapshot_prefix")
    ours.ClearField("random_seed")
    assert ours == ref


def test_solver_values_self_contained():
    s = text_format.Parse(render.render_solver("BODY_25B", "1_25BSuperModel11FullVGG"), caffe_pb2.SolverParameter())
    assert (s.type, s.base_lr, s.lr_policy, s.gamma, s.max_iter) == ("Adam", pytest.approx(2e-5), "multistep",
                                                                     0.5, 1000000)
    assert list(s.stepvalue) == list(render.DEFAULT_STEPVALUES)
    assert s.solver_mode == caffe_pb2.SolverParameter.GPU
    cpu = text_format.Parse(render.render_solver("BODY_25", "tiny", gpus="", lr_policy="step", stepsize=500,
                                                 gamma=0.1, base_lr=0.01, max_iter=300, snapshot_interval=100),
                            caffe_pb2.SolverParameter())
    assert (cpu.solver_mode, cpu.lr_policy, cpu.stepsize, cpu.max_iter, cpu.snapshot) == (
        caffe_pb2.SolverParameter.CPU, "step", 500, 300, 100)
    assert not cpu.stepvalue
    with pytest.raises(render.GeneratorError, match="stepsize"):
        render.render_solver("BODY_25", "tiny", lr_policy="step")


def test_training_options_and_errors():
    ds = (render.DatasetSpec("/data/a", 0.7, "COCO_25_17", sigma=5.0), render.DatasetSpec("/data/b", 0.3, "COCO_25"))
    net = parse_net(render.render_training("BODY_25", "tiny", datasets=ds, batch_size=4, crop_size=(160, 128)))
    p = net.layer[0].op_transform_param
    assert (p.sources, p.models, p.probabilities, p.sigmas) == ("/data/a;/data/b", "COCO_25_17;COCO_25",
                                                                 "0.7;0.3", "5.0;7.0")
    assert (p.crop_size_x, p.crop_size_y, net.layer[0].data_param.batch_size) == (160, 128, 4)
    assert p.source_background == ""      # user LMDBs come without the preset's background LMDB
    bad = (render.DatasetSpec("/data/a", 0.5, "COCO_25_17"),)
    with pytest.raises(render.GeneratorError, match="sum to 1"):
        render.render_training("BODY_25", "tiny", datasets=bad)
    with pytest.raises(render.GeneratorError, match="deploy-only"):
        render.render_training("MPI_15")
    with pytest.raises(TypeError, match="unknown generator option"):
        render.render_deploy("BODY_25", bogus=1)


# --------------------------------------------------------------------------------------- OpenCV
def _random_caffemodel(path, net_layers, seed=0):
    """Random weights for every parameterised layer, written by the project's caffemodel writer."""
    from openpose_train.caffe_layers import caffe_io
    rng = np.random.default_rng(seed)
    shapes = families.Net(layers=list(net_layers)).parameter_shapes()
    weights = {}
    for name, blob_shapes in shapes.items():
        blobs = []
        for shape in blob_shapes:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            scale = 1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.25
            blobs.append((rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32))
        weights[name] = blobs
    caffe_io.write_caffemodel(path, weights)
    return shapes


@pytest.fixture
def custom_model():
    """A 5-part user skeleton registered for one test only."""
    from openpose_train.generator import registry
    model = register(PoseModel(
        name="TEST_STICK_5", openpose_name="", parts=("Head", "Neck", "Hip", "LFoot", "RFoot"),
        paf_pairs=((0, 1), (1, 2), (2, 3), (2, 4)), runtime_pairs=((0, 1), (1, 2), (2, 3), (2, 4)),
        has_background=False, flip_pairs=((3, 4),), sigma_ratios=(1.0,) * 5, upstream=False))
    yield model
    registry._REGISTRY.pop(model.name, None)


OPENCV_CASES = [("BODY_25", "tiny", 64), ("BODY_25", None, 64), ("BODY_25B", None, 64), ("COCO_18", None, 64),
                ("MPI_15_4", None, 64), ("HAND_21", None, 64), ("FACE_70", None, 64), ("TEST_STICK_5", None, 64),
                pytest.param("BODY_25B", "1_25BSuperModel11FullVGG", 64, marks=pytest.mark.slow),
                pytest.param("BODY_135", None, 64, marks=pytest.mark.slow)]


@pytest.mark.parametrize("model,preset,size", OPENCV_CASES)
def test_deploy_loads_in_opencv(tmp_path, request, model, preset, size):
    pytest.importorskip("openpose_train.caffe_layers.caffe_io")
    if model == "TEST_STICK_5":
        request.getfixturevalue("custom_model")
    text = render.render_deploy(model, preset)
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(text)
    weights = tmp_path / "random.caffemodel"
    pre = render.resolve_preset(model, preset)
    _random_caffemodel(weights, render.build_net(model, preset).layers)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    image = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 3, size, size)).astype(np.float32)
    net.setInput(image)
    assert len(net.getUnconnectedOutLayersNames()) == 1     # one output: the net_output blob
    out = net.forward()
    m = get_model(model)
    assert out.shape == (1, m.num_channels, size // 8, size // 8), pre.name
    assert np.isfinite(out).all() and np.abs(out).max() > 0


# --------------------------------------------------------------------------------------- files, scripts, CLI
def test_render_model_files_atomic_and_complete(tmp_path):
    paths = render.render_model_files("BODY_25", tmp_path / "o", "tiny", gpus="0,1", crop_size=(128, 128))
    assert set(paths) == set(render.FILE_KINDS)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        ["pose_deploy.prototxt", "pose_training.prototxt", "pose_solver.prototxt", "train_pose.sh", "resume_train.sh"])
    for kind in ("train_script", "resume_script"):
        assert paths[kind].stat().st_mode & stat.S_IXUSR
        subprocess.run(["bash", "-n", str(paths[kind])], check=True)
    # bad options: nothing written
    with pytest.raises(render.GeneratorError):
        render.render_model_files("BODY_25", tmp_path / "bad", "tiny",
                                  datasets=(render.DatasetSpec("/x", 0.2, "COCO_25"),))
    assert not (tmp_path / "bad").exists()


def test_parse_helpers():
    assert parse_lmdb_arg("/a/lmdb_coco:0.25") == ("/a/lmdb_coco", 0.25)
    assert parse_lmdb_arg("/a/lmdb_coco") == ("/a/lmdb_coco", None)
    assert parse_crop("368") == (368, 368) and parse_crop("432x368") == (432, 368)
    import click
    with pytest.raises(click.BadParameter):
        parse_crop("100")


def test_cli_tiny(tmp_path):
    out = tmp_path / "tiny"
    r = CliRunner().invoke(prototxt, ["--model", "BODY_25", "--preset", "tiny", "--out", str(out),
                                      "--crop-size", "128", "--batch-size", "4", "--lmdb", "/d/lmdb_coco:0.6",
                                      "--lmdb", "/d/lmdb_coco2017_foot", "--sigma", "6", "--gpus", "",
                                      "--base-lr", "0.002", "--max-iter", "500", "--stepvalue", "300",
                                      "--stepvalue", "400", "--snapshot-interval", "100", "--stages", "2,1",
                                      "--width", "24"])
    assert r.exit_code == 0, r.output
    assert str(out) in r.output
    net = parse_net((out / "pose_training.prototxt").read_text())
    p = net.layer[0].op_transform_param
    assert p.models == "COCO_25_17;COCO_25" and p.probabilities == "0.6;0.4" and p.sigmas == "6.0;6.0"
    assert (p.crop_size_x, net.layer[0].data_param.batch_size) == (128, 4)
    assert [l.name for l in _layers_by_type(net, "EuclideanLoss")] == ["loss_stage0_L2", "loss_stage1_L2",
                                                                       "loss_stage0_L1"]
    solver = text_format.Parse((out / "pose_solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert list(solver.stepvalue) == [300, 400] and solver.max_iter == 500
    assert solver.solver_mode == caffe_pb2.SolverParameter.CPU


@pytest.mark.parametrize("args,message", [
    (["--model", "NOPE"], "unknown model 'NOPE'"),
    (["--model", "BODY_25", "--preset", "nope"], "unknown preset 'nope'"),
    (["--model", "BODY_25", "--lmdb", "/x/lmdb_synthetic"], "--lmdb-model"),
    (["--model", "BODY_25", "--lmdb", "/x/a", "--lmdb-model", "COCO_18"], "no training variant 'COCO_18'"),
    (["--model", "BODY_25", "--lmdb", "/x/a:0.5", "--lmdb-model", "COCO_25"], "sum to 1"),
    (["--model", "MPI_15"], "deploy-only"),
])
def test_cli_errors_are_one_clear_message(tmp_path, args, message):
    r = CliRunner().invoke(prototxt, args + ["--out", str(tmp_path / "o")])
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output


def test_cli_deploy_only_and_registered_in_main(tmp_path):
    from openpose_train.cli import main
    r = CliRunner().invoke(main, ["prototxt", "--model", "MPI_15", "--deploy-only", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert md5((tmp_path / "pose_deploy_linevec.prototxt").read_text()) == "8a8f979261f89212676450b18f78ecc1"


def test_cli_yaml_skeleton_generates_and_loads(tmp_path):
    pytest.importorskip("openpose_train.generator.skeleton")
    pytest.importorskip("openpose_train.caffe_layers.caffe_io")
    from openpose_train.generator import registry
    example = Path(__file__).resolve().parents[1] / "generator" / "example_skeleton.yaml"
    if not example.exists():
        pytest.skip("no example skeleton YAML in generator/ yet")
    try:
        r = CliRunner().invoke(prototxt, ["--yaml", str(example), "--preset", "tiny", "--out", str(tmp_path),
                                          "--lmdb", "/d/lmdb_coco", "--crop-size", "128"])
        assert r.exit_code == 0, r.output
        model = registry.load_skeleton_yaml(example)
        net = parse_net((tmp_path / "pose_training.prototxt").read_text())
        p = net.layer[0].op_transform_param
        coco = [v.op_model for v in model.variants if v.dataset == "coco"]
        assert [p.models] == coco                                 # the YAML's own model string, from the name
        heat = model.num_parts + int(model.has_background)
        assert list(net.layer[1].slice_param.slice_point) == [2 * model.num_pafs, 2 * model.num_pafs + heat,
                                                              4 * model.num_pafs + heat]
        deploy = tmp_path / "pose_deploy.prototxt"
        _random_caffemodel(tmp_path / "w.caffemodel", render.build_net(model.name, "tiny").layers)
        cv_net = cv2.dnn.readNetFromCaffe(str(deploy), str(tmp_path / "w.caffemodel"))
        cv_net.setInput(np.zeros((1, 3, 96, 96), np.float32))
        assert cv_net.forward().shape == (1, model.num_channels, 12, 12)
    finally:
        registry._REGISTRY.pop("BODY_19_EXAMPLE", None)


def test_generate_prototxt_wrapper(tmp_path):
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "generate_prototxt.py"), "--model", "HAND_21", "--deploy-only",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert md5((tmp_path / "pose_deploy.prototxt").read_text()) == "ca8222e4c5cb5b09ff1b11b50dee6b27"


# --------------------------------------------------------------------------------------- experimental_models/
def test_experimental_models_folder_is_up_to_date(tmp_path):
    written = experimental.write_experimental_models(tmp_path)
    assert len(written) == 8
    repo = Path(__file__).resolve().parents[1] / "experimental_models"
    for path in written:
        rel = path.relative_to(tmp_path)
        assert (repo / rel).read_text() == path.read_text(), f"experimental_models/{rel} is stale"
    assert experimental.differences(repo) == []
    digests = {str(p.relative_to(tmp_path)): md5(p.read_text()) for p in written if p.suffix == ".prototxt"}
    assert digests == {
        "body_25/body_25/pose_deploy.prototxt": "451938635cf007327c3cf235ed483844",
        "1_25BBkg/body_25b/pose_deploy.prototxt": "1fa1b908c468ce2ad69595195c1d9418",
        "1_25BSuperModel11FullVGG/body_25b/pose_deploy.prototxt": "3a40ec4ea40aedb9a63128377e3fcdc1",
        "100_135AlmostSameBatchAllGPUs/body_135/pose_deploy.prototxt": "fe80aace8ae12231b821ac34af7372de"}
    card = (tmp_path / "1_25BSuperModel11FullVGG" / "body_25b" / "MODEL_CARD.md").read_text()
    assert "--model_pose BODY_25B --net_resolution -1x480" in card and "GPU only" in card
    assert "97 channels" in card and "COCO_25B_23" in card
    assert "GPU only" not in (tmp_path / "body_25" / "body_25" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("num_keypoints,expected", [(17, "COCO_25_17"), (23, "COCO_25")])
def test_lmdb_layout_inferred_from_first_record(tmp_path, num_keypoints, expected):
    lmdb = pytest.importorskip("lmdb")
    datum = pytest.importorskip("openpose_train.caffe_layers.datum")
    from openpose_train.generator.cli import infer_op_model
    joints = np.zeros((num_keypoints, 3), np.float32)
    joints[:, 0], joints[:, 1], joints[:, 2] = np.arange(num_keypoints) + 5, 40, 1
    meta = datum.Metadata(dataset="COCO", img_height=160, img_width=160, objpos=(50, 50), scale_provided=0.3,
                          joints=joints)
    value = datum.build_datum(np.zeros((160, 160, 3), np.uint8), meta, np.full((160, 160), 255, np.uint8))
    path = tmp_path / "lmdb_synthetic"          # a name that says nothing about the layout
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"0000000", value)
    env.close()
    assert infer_op_model(str(path), get_model("BODY_25")) == expected


def test_tiny_training_net_runs_in_the_engine():
    """The generated training net builds in the project's Caffe engine and trains (loss decreases)."""
    torch = pytest.importorskip("torch")
    net_mod = pytest.importorskip("openpose_train.caffe_layers.net")
    net = net_mod.CaffeNet(parse_net(render.render_training("BODY_25", "tiny", crop_size=(64, 64), batch_size=2)),
                           phase="TRAIN", seed=0)
    model = get_model("BODY_25")
    assert net.input_blobs["label"][1] == model.label_channels
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 64, generator=g) - 0.5
    label = torch.rand(2, model.label_channels, 8, 8, generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        loss = net.total_loss(net(image=image, label=label))
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_cli_writes_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(prototxt, ["--model", "BODY_25B", "--out", "o"])
    assert r.exit_code == 0, r.output
    p = parse_net((tmp_path / "o" / "pose_training.prototxt").read_text()).layer[0].op_transform_param
    assert p.sources.split(";") == [str(tmp_path / "dataset" / n) for n in ("lmdb_coco2017_foot", "lmdb_coco",
                                                                           "lmdb_mpii")]
    assert p.source_background == str(tmp_path / "dataset" / "lmdb_background")
    assert str(tmp_path / "dataset" / "vgg" / "VGG_ILSVRC_19_layers.caffemodel") in \
        (tmp_path / "o" / "train_pose.sh").read_text()
