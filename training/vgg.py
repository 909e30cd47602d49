"""VGG-19 initialisation: a torchvision VGG-19 state dict (.pth) -> ``VGG_ILSVRC_19_layers.caffemodel``.

OpenPose's training nets start from the first 10 layers of Caffe's VGG-19 (conv1_1 ... conv4_2), copied
by layer name (``openpose-train train -weights VGG_ILSVRC_19_layers.caffemodel``). Without Caffe's model zoo
file, this converts a locally available torchvision ``vgg19`` state dict (no download happens here).

Input conventions differ, so the first convolution is rewritten:

* torchvision: RGB in [0, 1], normalised per channel: ``x_t[k] = (r_k / 255 - mean_k) / std_k`` with
  mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225);
* Caffe's VGG: BGR in [0, 255] minus the mean pixel (B, G, R) = (103.939, 116.779, 123.68):
  ``x_c[j] = r_(2-j) - M_j``.

Substituting ``r_k = x_c[2-k] + M_(2-k)`` gives conv1_1 weights ``W_c[:, j] = W_t[:, 2-j] / (255 std_(2-j))``
(channel order reversed, scaled) and bias ``b_c = b_t + sum_k sum_xy W_t[:, k] (M_(2-k) - 255 mean_k) /
(255 std_k)``. The result is exact wherever the 3x3 window lies inside the image; on the 1-pixel border the
two conventions zero-pad different pixel values (Caffe's mean vs torchvision's mean, which differ by less
than 0.5 grey levels), a deviation of the order of 1e-2 relative at most, which fine-tuning absorbs.
All later layers are copied unchanged (torch and Caffe share OIHW conv and (out, in) fully connected
layouts; torchvision's flatten before fc6 is C,H,W like Caffe's InnerProduct).

Note that OpenPose itself feeds the network ``(v - 128) / 256`` BGR images (OPData normalization 0), not
VGG's convention, and relies on fine-tuning; the converted file reproduces what Caffe's VGG-19 would hold.
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import click
import numpy as np

from openpose_train.common.errors import OpenPoseTrainError, reports_errors
from openpose_train.generator.output_paths import check_not_an_input, make_parent_folder

# (Caffe layer name, torchvision key prefix, weight shape) in VGG-19 order
VGG19_CONV_CHANNELS = [(1, 1, 3, 64), (1, 2, 64, 64),
                       (2, 1, 64, 128), (2, 2, 128, 128),
                       (3, 1, 128, 256), (3, 2, 256, 256), (3, 3, 256, 256), (3, 4, 256, 256),
                       (4, 1, 256, 512), (4, 2, 512, 512), (4, 3, 512, 512), (4, 4, 512, 512),
                       (5, 1, 512, 512), (5, 2, 512, 512), (5, 3, 512, 512), (5, 4, 512, 512)]
_TORCHVISION_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG19_LAYERS: List[Tuple[str, str, Tuple[int, ...]]] = [
    (f"conv{b}_{i}", f"features.{idx}", (cout, cin, 3, 3))
    for (b, i, cin, cout), idx in zip(VGG19_CONV_CHANNELS, _TORCHVISION_CONV_INDEX)
] + [("fc6", "classifier.0", (4096, 512 * 7 * 7)), ("fc7", "classifier.3", (4096, 4096)),
     ("fc8", "classifier.6", (1000, 4096))]

TORCHVISION_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float64)
TORCHVISION_STD_RGB = np.array([0.229, 0.224, 0.225], np.float64)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float64)

# the OpenPose backbone copies these from VGG-19 ("the first 10 layers")
OPENPOSE_BACKBONE_LAYERS = [name for name, _, _ in VGG19_LAYERS[:10]]


class VggConversionError(OpenPoseTrainError, ValueError):
    """The state dict is not a torchvision VGG-19: names the missing key or the wrong shape."""


def first_conv_to_caffe(weight: np.ndarray, bias: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """conv1_1 from torchvision's RGB/normalised input convention to Caffe's BGR/0-255/mean-subtracted one."""
    w = weight.astype(np.float64)
    scale = 1.0 / (255.0 * TORCHVISION_STD_RGB)                 # per RGB channel k
    offset = (CAFFE_MEAN_BGR[::-1] - 255.0 * TORCHVISION_MEAN_RGB) * scale  # M_(2-k) in RGB order
    w_rgb = w * scale[None, :, None, None]
    new_bias = bias.astype(np.float64) + (w.sum(axis=(2, 3)) * offset[None, :]).sum(axis=1)
    return w_rgb[:, ::-1].astype(np.float32).copy(), new_bias.astype(np.float32)


def torchvision_vgg19_to_caffe(state_dict: Mapping, with_fc: bool = True) -> "OrderedDict[str, List[np.ndarray]]":
    """{Caffe layer name: [weight, bias]} from a torchvision VGG-19 state dict (tensors or arrays)."""
    out = OrderedDict()
    for name, prefix, shape in VGG19_LAYERS:
        if name.startswith("fc") and not with_fc:
            continue
        blobs = []
        for suffix, want in ((".weight", shape), (".bias", shape[:1])):
            key = prefix + suffix
            if key not in state_dict:
                raise VggConversionError(f"state dict has no '{key}' (Caffe layer {name}); "
                                         f"is it a torchvision vgg19 (without batch norm)?")
            value = state_dict[key]
            arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            if tuple(arr.shape) != tuple(want):
                raise VggConversionError(f"'{key}' (Caffe layer {name}) has shape {tuple(arr.shape)}, "
                                         f"VGG-19 needs {tuple(want)}")
            blobs.append(arr.astype(np.float32))
        if name == "conv1_1":
            blobs = list(first_conv_to_caffe(*blobs))
        out[name] = blobs
    return out


def vgg19_deploy_prototxt(with_fc: bool = True, input_size: int = 224) -> str:
    """Caffe's VGG_ILSVRC_19_layers deploy net (conv/ReLU/pool names as in the model zoo file)."""
    lines = ['name: "VGG_ILSVRC_19_layers"', 'input: "data"', "input_dim: 1", "input_dim: 3",
             f"input_dim: {input_size}", f"input_dim: {input_size}"]
    bottom = "data"
    for block, layer, _, cout in VGG19_CONV_CHANNELS:
        name = f"conv{block}_{layer}"
        lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                     f'convolution_param {{ num_output: {cout} pad: 1 kernel_size: 3 }} }}')
        lines.append(f'layer {{ name: "relu{block}_{layer}" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        bottom = name
        if layer == (2 if block <= 2 else 4):
            lines.append(f'layer {{ name: "pool{block}" type: "Pooling" bottom: "{bottom}" top: "pool{block}" '
                         f'pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}')
            bottom = f"pool{block}"
    if with_fc:
        for name, n in (("fc6", 4096), ("fc7", 4096), ("fc8", 1000)):
            lines.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                         f'inner_product_param {{ num_output: {n} }} }}')
            bottom = name
            if name != "fc8":
                idx = name[2:]
                lines.append(f'layer {{ name: "relu{idx}" type: "ReLU" bottom: "{name}" top: "{name}" }}')
                lines.append(f'layer {{ name: "drop{idx}" type: "Dropout" bottom: "{name}" top: "{name}" '
                             f'dropout_param {{ dropout_ratio: 0.5 }} }}')
        lines.append('layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }')
    return "\n".join(lines) + "\n"


def load_state_dict(pth_path, error=VggConversionError) -> Mapping:
    """A torchvision ``.pth`` (a state dict, or a module holding one), read without running pickled code;
    an unreadable file raises ``error`` naming it in one line."""
    import torch

    try:
        state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{pth_path}: cannot read the state dict: {first_line}") from None
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    if not isinstance(state, Mapping):
        raise error(f"{pth_path}: not a state dict (got {type(state).__name__})")
    return state


def convert_vgg19(pth_path, out_caffemodel, with_fc: bool = True, deploy_path=None) -> Dict[str, List]:
    """Read a torchvision VGG-19 ``.pth`` and write the Caffe-convention caffemodel (atomically), plus
    optionally ``vgg_deploy.prototxt``. Returns the weights written."""
    from openpose_train.caffe_layers.caffe_io import write_caffemodel
    from openpose_train.generator.render import GeneratorError, write_atomic
    # the outputs first: a bad path is refused before the (large) state dict is read
    make_parent_folder(out_caffemodel, VggConversionError, create=False)
    check_not_an_input(out_caffemodel, [("PTH", pth_path)], "OUT", VggConversionError)
    if deploy_path is not None:
        make_parent_folder(deploy_path, VggConversionError, label="--deploy", create=False)
        check_not_an_input(deploy_path, [("PTH", pth_path), ("OUT", out_caffemodel)], "--deploy",
                           VggConversionError)
    state = load_state_dict(pth_path, VggConversionError)
    try:
        weights = torchvision_vgg19_to_caffe(state, with_fc=with_fc)
    except VggConversionError as exc:
        raise VggConversionError(f"{pth_path}: {exc}") from exc
    types = {name: ("InnerProduct" if name.startswith("fc") else "Convolution") for name in weights}
    try:
        write_caffemodel(str(out_caffemodel), weights, layer_types=types)
    except OSError as exc:            # a full disk (the temporary file is removed)
        raise VggConversionError(f"{out_caffemodel}: cannot write ({exc.strerror or exc})") from None
    if deploy_path is not None:
        try:
            write_atomic(deploy_path, vgg19_deploy_prototxt(with_fc))
        except GeneratorError as exc:
            raise VggConversionError(str(exc)) from None
    return weights


@click.command("vgg")
@click.argument("pth", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False), default="VGG_ILSVRC_19_layers.caffemodel")
@click.option("--no-fc", is_flag=True, help="Leave out fc6-fc8 (OpenPose uses conv1_1 ... conv4_2 only).")
@click.option("--deploy", type=click.Path(dir_okay=False), default=None,
              help="Also write the matching vgg_deploy.prototxt here.")
@reports_errors
def vgg_cmd(pth, out, no_fc, deploy):
    """Convert a torchvision VGG-19 state dict (PTH) to VGG_ILSVRC_19_layers.caffemodel (OUT)."""
    weights = convert_vgg19(pth, out, with_fc=not no_fc, deploy_path=deploy)
    click.echo(f"wrote {out}: {len(weights)} layers ({', '.join(weights)}); "
               f"-weights {out} initialises {', '.join(OPENPOSE_BACKBONE_LAYERS)}")


if __name__ == "__main__":
    vgg_cmd()
