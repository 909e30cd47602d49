"""MobileNetV2 initialisation: a torchvision ``mobilenet_v2`` state dict (.pth) -> the caffemodel that
``-weights`` copies, by layer name, into the ``mobilenet_v2`` preset's front end.

Layer names are the generator's (``generator/families.py``, :class:`MobileNetV2FrontEnd`); torchvision's
module names (``torchvision/models/mobilenetv2.py``) map onto them one to one:

===============================================  ==========================================
torchvision key prefix                           Caffe layers (blobs)
===============================================  ==========================================
``features.0.0`` (conv), ``features.0.1`` (BN)   ``conv0`` (weight), ``conv0_bn``, ``conv0_scale``
``features.1.conv.0.0`` / ``.0.1``               ``block1_dw`` / ``_bn`` / ``_scale``
``features.1.conv.1`` / ``.2``                   ``block1_project`` / ``_bn`` / ``_scale``
``features.i.conv.0.0`` / ``.0.1`` (i >= 2)      ``block{i}_expand`` / ``_bn`` / ``_scale``
``features.i.conv.1.0`` / ``.1.1``               ``block{i}_dw`` / ...
``features.i.conv.2`` / ``.3``                   ``block{i}_project`` / ...
===============================================  ==========================================

A torch BatchNorm2d (``weight``, ``bias``, ``running_mean``, ``running_var``, eps 1e-5) is Caffe's
BatchNorm (mean, variance, moving-average factor 1; eps 1e-5) followed by Scale (weight, bias).
Blocks past the preset's last one (``features.14`` ... ``features.18``, the classifier) are not written.

The input convention is rewritten in ``conv0`` + ``conv0_bn`` (``input="openpose"``, the default), as
``openpose-train vgg`` does for VGG-19: torchvision feeds ``x_t[k] = (r_k / 255 - mean_k) / std_k`` (RGB),
OpenPose feeds ``x_c[j] = (v_j - 128) / 256`` (BGR, OPData normalization 0). With ``r_k = 256 x_c[2-k] + 128``,
``W_c[:, j] = W_t[:, 2-j] 256 / (255 std_(2-j))`` and the constant ``sum_k sum_xy W_t[:, k] (128/255 - mean_k) /
std_k`` moves into the BatchNorm mean (conv0 has no bias). Exact wherever the 3x3 window lies inside the
image; on the 1-pixel border the two conventions zero-pad different values, which fine-tuning absorbs.
``input="torchvision"`` copies conv0 unchanged (tests compare with torchvision on the same tensor).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping

import click
import numpy as np

from openpose_train.common.errors import OpenPoseTrainError, reports_errors
from openpose_train.generator.families import LIGHT_PRESET, MobileNetV2FrontEnd, get_preset
from openpose_train.generator.output_paths import make_parent_folder

TORCHVISION_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float64)
TORCHVISION_STD_RGB = np.array([0.229, 0.224, 0.225], np.float64)
INPUT_CONVENTIONS = ("openpose", "torchvision")


class MobileNetConversionError(OpenPoseTrainError, ValueError):
    """The state dict is not a torchvision MobileNetV2: names the missing key or the wrong shape."""


def layer_map(front_end: MobileNetV2FrontEnd) -> "OrderedDict[str, str]":
    """Caffe conv layer name (its ``_bn`` / ``_scale`` follow) -> torchvision module prefix, in net order.
    The BatchNorm module of a conv prefix ``P.k`` is ``P.(k+1)``, of ``P.k.0`` it is ``P.k.1``."""
    out = OrderedDict([("conv0", "features.0.0")])
    for b in front_end.blocks():
        prefix = f"features.{b.index}.conv"
        if b.expand == 1:
            out[f"block{b.index}_dw"] = f"{prefix}.0.0"
            out[f"block{b.index}_project"] = f"{prefix}.1"
        else:
            out[f"block{b.index}_expand"] = f"{prefix}.0.0"
            out[f"block{b.index}_dw"] = f"{prefix}.1.0"
            out[f"block{b.index}_project"] = f"{prefix}.2"
    return out


def batch_norm_prefix(conv_prefix: str) -> str:
    """torchvision's BatchNorm beside a conv: ``features.0.0`` -> ``features.0.1``, ``...conv.2`` -> ``...conv.3``."""
    head, _, last = conv_prefix.rpartition(".")
    return f"{head}.{int(last) + 1}"


def _array(state_dict: Mapping, key: str, shape, caffe_layer: str) -> np.ndarray:
    if key not in state_dict:
        raise MobileNetConversionError(f"state dict has no '{key}' (Caffe layer {caffe_layer}); "
                                       f"is it a torchvision mobilenet_v2?")
    value = state_dict[key]
    arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise MobileNetConversionError(f"'{key}' (Caffe layer {caffe_layer}) has shape {tuple(arr.shape)}, "
                                       f"the {LIGHT_PRESET} front end needs {tuple(shape)}")
    return arr.astype(np.float32)


def _conv_shapes(front_end: MobileNetV2FrontEnd) -> Dict[str, tuple]:
    shapes = {"conv0": (front_end.stem, 3, 3, 3)}
    for b in front_end.blocks():
        if b.expand != 1:
            shapes[f"block{b.index}_expand"] = (b.hidden, b.cin, 1, 1)
        shapes[f"block{b.index}_dw"] = (b.hidden, 1, 3, 3)
        shapes[f"block{b.index}_project"] = (b.cout, b.hidden, 1, 1)
    return shapes


def torchvision_mobilenet_v2_to_caffe(state_dict: Mapping, front_end: MobileNetV2FrontEnd = None,
                                      input: str = "openpose") -> "OrderedDict[str, List[np.ndarray]]":
    """{Caffe layer name: blobs} for the front end's conv, BatchNorm and Scale layers."""
    if input not in INPUT_CONVENTIONS:
        raise ValueError(f"input must be one of {INPUT_CONVENTIONS}, got {input!r}")
    front_end = front_end or get_preset(LIGHT_PRESET).family.front_end
    shapes = _conv_shapes(front_end)
    out = OrderedDict()
    for name, prefix in layer_map(front_end).items():
        weight = _array(state_dict, prefix + ".weight", shapes[name], name)
        channels = weight.shape[0]
        bn = batch_norm_prefix(prefix)
        mean, var, gamma, beta = (_array(state_dict, f"{bn}.{k}", (channels,), f"{name}_bn")
                                  for k in ("running_mean", "running_var", "weight", "bias"))
        if name == "conv0" and input == "openpose":
            weight, offset = first_conv_to_openpose(weight)
            mean = (mean.astype(np.float64) - offset).astype(np.float32)
        out[name] = [weight]
        out[f"{name}_bn"] = [mean, var, np.ones((1,), np.float32)]
        out[f"{name}_scale"] = [gamma, beta]
    return out


def first_conv_to_openpose(weight: np.ndarray):
    """conv0's weights for OpenPose's BGR ``(v - 128) / 256`` input, and the per-output constant that the
    change of convention adds to the conv's output (subtracted from the BatchNorm mean)."""
    w = weight.astype(np.float64)
    scale = 256.0 / (255.0 * TORCHVISION_STD_RGB)                       # per RGB channel k
    shift = (128.0 / 255.0 - TORCHVISION_MEAN_RGB) / TORCHVISION_STD_RGB  # x_t[k] = scale_k x_c[2-k] + shift_k
    w_bgr = (w * scale[None, :, None, None])[:, ::-1]
    offset = (w.sum(axis=(2, 3)) * shift[None, :]).sum(axis=1)
    return w_bgr.astype(np.float32).copy(), offset


def layer_types(weights: Mapping) -> Dict[str, str]:
    return {name: ("BatchNorm" if name.endswith("_bn") else "Scale" if name.endswith("_scale") else "Convolution")
            for name in weights}


def convert_mobilenet_v2(pth_path, out_caffemodel, input: str = "openpose") -> "OrderedDict[str, List[np.ndarray]]":
    """Read a torchvision MobileNetV2 ``.pth`` and write the front end's caffemodel (atomically)."""
    from openpose_train.caffe_layers.caffe_io import write_caffemodel
    from openpose_train.training.vgg import load_state_dict
    make_parent_folder(out_caffemodel, MobileNetConversionError, create=False)
    state = load_state_dict(pth_path, MobileNetConversionError)
    try:
        weights = torchvision_mobilenet_v2_to_caffe(state, input=input)
    except MobileNetConversionError as exc:
        raise MobileNetConversionError(f"{pth_path}: {exc}") from exc
    try:
        write_caffemodel(str(out_caffemodel), weights, layer_types=layer_types(weights))
    except OSError as exc:
        raise MobileNetConversionError(f"{out_caffemodel}: cannot write ({exc.strerror or exc})") from None
    return weights


@click.command("mobilenet")
@click.argument("pth", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False), default="mobilenet_v2.caffemodel")
@click.option("--input", "input_convention", type=click.Choice(INPUT_CONVENTIONS), default="openpose",
              show_default=True, help="conv0 for OpenPose's (v-128)/256 BGR input, or torchvision's unchanged.")
@reports_errors
def mobilenet_cmd(pth, out, input_convention):
    """Convert a torchvision MobileNetV2 state dict (PTH) to the mobilenet_v2 preset's front end (OUT)."""
    weights = convert_mobilenet_v2(pth, out, input=input_convention)
    convs = [n for n in weights if not n.endswith(("_bn", "_scale"))]
    click.echo(f"wrote {out}: {len(convs)} convolutions with their BatchNorm+Scale ({convs[0]} ... {convs[-1]}); "
               f"-weights {out} initialises the {LIGHT_PRESET} preset's front end")


if __name__ == "__main__":
    mobilenet_cmd()
