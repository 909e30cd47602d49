"""VGG-19 initialisation: torchvision state dict -> Caffe-convention caffemodel, loaded by layer name."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from openpose_train.caffe_layers.caffe_io import read_caffemodel
from openpose_train.caffe_layers.net import CaffeNet
from openpose_train.training.vgg import (CAFFE_MEAN_BGR, OPENPOSE_BACKBONE_LAYERS, TORCHVISION_MEAN_RGB,
                                         TORCHVISION_STD_RGB, VGG19_LAYERS, VggConversionError,
                                         convert_vgg19, torchvision_vgg19_to_caffe, vgg19_deploy_prototxt,
                                         vgg_cmd)


def random_vgg19_state(with_fc=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, prefix, shape in VGG19_LAYERS:
        if name.startswith("fc") and not with_fc:
            continue
        fan_in = int(np.prod(shape[1:]))
        state[prefix + ".weight"] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        state[prefix + ".bias"] = torch.randn(shape[0], generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    state = random_vgg19_state()
    torch.save(state, d / "vgg19.pth")
    weights = convert_vgg19(d / "vgg19.pth", d / "VGG_ILSVRC_19_layers.caffemodel", with_fc=False,
                            deploy_path=d / "vgg_deploy.prototxt")
    return d, state, weights


def test_caffemodel_holds_vgg_layers_by_caffe_name(converted):
    d, state, _ = converted
    weights = read_caffemodel(d / "VGG_ILSVRC_19_layers.caffemodel")
    assert list(weights) == [name for name, _, _ in VGG19_LAYERS[:16]]
    # every layer after the first is copied unchanged
    np.testing.assert_array_equal(weights["conv3_2"][0], state["features.12.weight"].numpy())
    np.testing.assert_array_equal(weights["conv5_4"][1], state["features.34.bias"].numpy())


def test_first_conv_converts_input_convention(converted):
    """Caffe convention (BGR 0-255 minus mean) through the converted conv1_1 == torchvision convention
    through the original one, exactly inside the image and closely on the padded border."""
    d, state, _ = converted
    net = CaffeNet(_parse(vgg19_deploy_prototxt(with_fc=False, input_size=24)), phase="TEST")
    report = net.load_caffe_weights(d / "VGG_ILSVRC_19_layers.caffemodel", allow_missing=False)
    assert len(report.matched) == 16
    rgb = np.random.default_rng(1).uniform(0, 255, (1, 3, 24, 24))
    caffe_in = rgb[:, ::-1] - CAFFE_MEAN_BGR[None, :, None, None]
    torch_in = (rgb / 255.0 - TORCHVISION_MEAN_RGB[None, :, None, None]) / TORCHVISION_STD_RGB[None, :, None, None]
    with torch.no_grad():
        ours = net(data=torch.from_numpy(caffe_in.astype(np.float32)))["conv1_1"].double()
        ref = F.relu(F.conv2d(torch.from_numpy(torch_in), state["features.0.weight"].double(),
                              state["features.0.bias"].double(), padding=1))
    scale = float(ref.abs().max())
    inner = (ours - ref)[..., 1:-1, 1:-1].abs().max().item() / scale
    border = (ours - ref).abs().max().item() / scale
    assert inner < 1e-5
    assert border < 2e-2


def _parse(text):
    from google.protobuf import text_format

    from openpose_train.caffe_layers import caffe_pb2
    net = caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    return net


def test_opencv_reads_converted_model(converted):
    cv2 = pytest.importorskip("cv2")
    d, _, _ = converted
    net = cv2.dnn.readNetFromCaffe(str(d / "vgg_deploy.prototxt"), str(d / "VGG_ILSVRC_19_layers.caffemodel"))
    x = np.random.default_rng(2).uniform(-100, 100, (1, 3, 32, 32)).astype(np.float32)
    net.setInput(x)
    ref = net.forward("pool5")
    ours_net = CaffeNet(str(d / "vgg_deploy.prototxt"), phase="TEST")
    ours_net.load_caffe_weights(str(d / "VGG_ILSVRC_19_layers.caffemodel"), allow_missing=False)
    with torch.no_grad():
        ours = ours_net(data=torch.from_numpy(x))["pool5"].numpy()
    assert ours.shape == ref.shape == (1, 512, 1, 1)
    assert np.abs(ours - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_openpose_backbone_takes_the_first_ten_layers(converted, shared):
    d, _, weights = converted
    deploy = shared("reference", "openpose_models", "pose", "body_25", "pose_deploy.prototxt")
    net = CaffeNet(str(deploy), phase="TEST")
    report = net.load_caffe_weights(str(d / "VGG_ILSVRC_19_layers.caffemodel"))
    assert report.matched == OPENPOSE_BACKBONE_LAYERS == [
        "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
        "conv4_1", "conv4_2"]
    assert report.unmatched == ["conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3", "conv5_4"]
    np.testing.assert_array_equal(net.caffe_weights()["conv4_2"][0], weights["conv4_2"][0])


def test_bad_state_dicts_are_named():
    state = random_vgg19_state()
    del state["features.10.bias"]
    with pytest.raises(VggConversionError, match=r"features\.10\.bias.*conv3_1"):
        torchvision_vgg19_to_caffe(state, with_fc=False)
    state = random_vgg19_state()
    state["features.2.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(VggConversionError, match=r"conv1_2.*\(64, 64, 5, 5\).*\(64, 64, 3, 3\)"):
        torchvision_vgg19_to_caffe(state, with_fc=False)
    with pytest.raises(VggConversionError, match="classifier.0.weight"):
        torchvision_vgg19_to_caffe(random_vgg19_state(), with_fc=True)


def test_vgg_command(converted, tmp_path):
    d, _, _ = converted
    out = tmp_path / "vgg.caffemodel"
    result = CliRunner().invoke(vgg_cmd, [str(d / "vgg19.pth"), str(out), "--no-fc"])
    assert result.exit_code == 0, result.output
    assert read_caffemodel(out).keys() == read_caffemodel(d / "VGG_ILSVRC_19_layers.caffemodel").keys()
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    result = CliRunner().invoke(vgg_cmd, [str(bad), str(tmp_path / "x.caffemodel")])
    assert result.exit_code != 0 and "features.0.weight" in result.output and "Traceback" not in result.output
