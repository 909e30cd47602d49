"""Export to OpenPose's models folder, refusal cases, ONNX parity, fine-tuning name matching."""
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from openpose_train.caffe_layers import caffe_io
from openpose_train.caffe_layers.net import CaffeNet
from openpose_train.caffe_layers.shapes import random_weights
from openpose_train.generator.registry import get_model
from openpose_train.generator.render import render_deploy
from openpose_train.training.export import ExportError, export_snapshot
from openpose_train.training.export_cli import export as export_cmd


@pytest.fixture(scope="module")
def tiny_snapshot(tmp_path_factory):
    """A training folder as the generator leaves it: deploy prototxt + a snapshot beside it."""
    folder = tmp_path_factory.mktemp("training")
    deploy = folder / "pose_deploy.prototxt"
    deploy.write_text(render_deploy("BODY_25", preset="tiny"))
    net = caffe_io.read_net_prototxt(str(deploy))
    weights = random_weights(net, seed=3)
    snapshot = folder / "pose_iter_40.caffemodel"
    caffe_io.write_caffemodel(str(snapshot), weights, net=net)
    return folder, deploy, snapshot, weights


def test_export_writes_openpose_layout_and_loads_in_opencv(tiny_snapshot, tmp_path):
    _, deploy, snapshot, _ = tiny_snapshot
    models = tmp_path / "models"
    result = export_snapshot(snapshot, "BODY_25", models)
    model = get_model("BODY_25")
    assert result.prototxt == models / "pose" / "body_25" / "pose_deploy.prototxt"
    assert result.caffemodel == models / "pose" / "body_25" / "pose_iter_584000.caffemodel"
    assert result.prototxt.read_bytes() == deploy.read_bytes()
    assert result.caffemodel.read_bytes() == snapshot.read_bytes()
    assert "--model_pose BODY_25" in result.command and str(models.resolve()) in result.command
    assert not list(models.rglob("*.partial"))

    # OpenCV's independent Caffe importer reads the exported pair; output = model channels at stride 8
    cvnet = cv2.dnn.readNetFromCaffe(str(result.prototxt), str(result.caffemodel))
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 64, 96)).astype(np.float32)
    cvnet.setInput(x)
    out = cvnet.forward("net_output")
    assert out.shape == (1, model.num_channels, 8, 12)
    engine = CaffeNet(caffe_io.read_net_prototxt(str(result.prototxt)), phase="TEST")
    engine.load_caffe_weights(caffe_io.read_caffemodel(str(result.caffemodel)), allow_missing=False)
    with torch.no_grad():
        ref = engine({"image": torch.from_numpy(x)})["net_output"].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_export_refuses_missing_layer(tiny_snapshot, tmp_path):
    _, deploy, _, weights = tiny_snapshot
    broken = OrderedDict(weights)
    removed = list(broken)[-1]
    del broken[removed]
    bad = tmp_path / "pose_iter_1.caffemodel"
    caffe_io.write_caffemodel(str(bad), broken)
    with pytest.raises(ExportError, match=removed):
        export_snapshot(bad, "BODY_25", tmp_path / "models", deploy=str(deploy))
    assert not (tmp_path / "models" / "pose" / "body_25" / "pose_iter_584000.caffemodel").exists()


def test_export_refuses_wrong_shape_naming_both_shapes(tiny_snapshot, tmp_path):
    _, deploy, _, weights = tiny_snapshot
    broken = OrderedDict((k, list(v)) for k, v in weights.items())
    name = next(k for k, v in broken.items() if v and v[0].ndim == 4)
    good_shape = broken[name][0].shape
    broken[name][0] = np.zeros((good_shape[0] + 1,) + good_shape[1:], np.float32)
    bad = tmp_path / "pose_iter_2.caffemodel"
    caffe_io.write_caffemodel(str(bad), broken)
    with pytest.raises(ExportError) as info:
        export_snapshot(bad, "BODY_25", tmp_path / "models", deploy=str(deploy))
    message = str(info.value)
    assert name in message
    assert str(good_shape[0] + 1) in message and str(good_shape[0]) in message


def test_export_cli_missing_snapshot_and_unknown_model(tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_cmd, ["--snapshot", str(tmp_path / "nope.caffemodel"), "--model", "BODY_25",
                                        "--to", str(tmp_path / "m")])
    assert result.exit_code != 0 and "snapshot not found" in result.output
    (tmp_path / "x.caffemodel").write_bytes(b"")
    result = runner.invoke(export_cmd, ["--snapshot", str(tmp_path / "x.caffemodel"), "--model", "BODY_99",
                                        "--to", str(tmp_path / "m")])
    assert result.exit_code != 0 and "unknown model" in result.output and "BODY_25" in result.output
    assert "Traceback" not in result.output


def test_export_cli_prints_command_and_gpu_note(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    deploy = folder / "pose_deploy.prototxt"
    deploy.write_text(render_deploy("BODY_25B", preset="tiny"))
    net = caffe_io.read_net_prototxt(str(deploy))
    snapshot = folder / "pose_iter_10.caffemodel"
    caffe_io.write_caffemodel(str(snapshot), random_weights(net, seed=1), net=net)
    result = CliRunner().invoke(export_cmd, ["--snapshot", str(snapshot), "--model", "BODY_25B",
                                             "--to", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models/pose/body_25b/pose_iter_XXXXXX.caffemodel").is_file()
    assert "--model_pose BODY_25B" in result.output
    assert "CUDA" in result.output


def test_onnx_export_matches_engine_with_dynamic_size(tiny_snapshot, tmp_path):
    pytest.importorskip("onnxruntime")
    from openpose_train.training.onnx_export import export_onnx

    _, deploy, snapshot, _ = tiny_snapshot
    report = export_onnx(deploy, snapshot, tmp_path / "tiny.onnx", check_size=(1, 3, 96, 128))
    assert report["max_abs_diff"] <= 1e-4
    import onnx

    graph = onnx.load(str(tmp_path / "tiny.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param and dims[3].dim_param  # height and width stay dynamic


def test_finetune_copies_by_name_and_reports(tiny_snapshot):
    """Official-style weights into a changed model: matching layers copied, the rest reported."""
    _, deploy, _, weights = tiny_snapshot
    net = CaffeNet(caffe_io.read_net_prototxt(str(deploy)), phase="TEST", seed=0)
    partial = OrderedDict(list(weights.items())[:4])
    partial["not_in_this_net"] = [np.zeros(3, np.float32)]
    report = net.load_caffe_weights(partial, allow_missing=True)
    loaded = net.caffe_weights()
    for name in list(weights)[:4]:
        for got, want in zip(loaded[name], weights[name]):
            np.testing.assert_array_equal(got, want)
    assert report.matched == list(weights)[:4]
    assert report.unmatched == ["not_in_this_net"]
    assert set(report.missing) == set(list(weights)[4:])
    assert "copied 4 layers" in report.summary()
    # a shape conflict stops with both shapes unless re-initialisation is asked for
    name = next(k for k, v in weights.items() if v and v[0].ndim == 4)
    conflicting = OrderedDict([(name, [np.zeros((1,) + weights[name][0].shape[1:], np.float32)]
                                + list(weights[name][1:]))])
    with pytest.raises(Exception, match=name):
        net.load_caffe_weights(conflicting)
    report = net.load_caffe_weights(conflicting, reinit_on_shape_mismatch=True)
    assert report.reinitialised == [name]


def test_finetune_body25_weights_into_body25b(tiny_snapshot):
    """BODY_25 weights into BODY_25B (other keypoints and PAFs): the backbone is copied, the output
    layers conflict; the conflict stops with both shapes unless re-initialisation is asked for."""
    from openpose_train.training.loop import TrainingError, load_weights

    _, _, snapshot, weights = tiny_snapshot
    from openpose_train.caffe_layers import caffe_pb2

    deploy_b = caffe_io.parse_prototxt(render_deploy("BODY_25B", preset="tiny"), caffe_pb2.NetParameter())
    net_b = CaffeNet(deploy_b, phase="TEST", seed=0)
    with pytest.raises(TrainingError, match="--reinit-mismatched"):
        load_weights(net_b, [str(snapshot)])
    (report,) = load_weights(net_b, [str(snapshot)], reinit_on_shape_mismatch=True)
    assert "conv1_1" in report.matched
    assert report.reinitialised, "the output convolutions of BODY_25 (78 ch) cannot fit BODY_25B (97 ch)"
    loaded = net_b.caffe_weights()
    np.testing.assert_array_equal(loaded["conv1_1"][0], weights["conv1_1"][0])
