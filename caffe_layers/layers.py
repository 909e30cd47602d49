"""Caffe layer types as torch modules, with Caffe's numerics and blob layouts.

Every layer module is built from a ``caffe.LayerParameter`` and the (possibly partly unknown) shapes of
its bottoms, and exposes:

* ``forward(*bottoms) -> tuple of tops`` in Caffe's top order;
* ``top_shapes(bottom_shapes) -> list of shapes`` (shape inference without running the layer; a
  dimension that cannot be known is ``None``);
* ``blobs()`` -> the tensors Caffe stores for the layer, in Caffe's order and shape (``caffemodel``
  layout), and ``set_blob(i, array)``;
* ``param_blob_indices`` -> which of the blobs are learnable (``ParamSpec`` i applies to blob i).

One table, ``LAYER_TYPES``, maps a Caffe type string to its module class. Data layers (``OPData``,
``Data``, ``Input``, ...) are not modules: the net takes their tops as inputs (``DATA_LAYER_TYPES``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openpose_train.common.errors import OpenPoseTrainError

Shape = Tuple[Optional[int], ...]

# Layers whose tops are the net's inputs (fed by the caller / the data pipeline).
DATA_LAYER_TYPES = ("Input", "OPData", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "OPVideo")


class UnsupportedLayerError(OpenPoseTrainError, ValueError):
    """A layer type (or a layer option) the engine does not implement. Names the layer and type."""


class LayerConfigError(OpenPoseTrainError, ValueError):
    """A layer whose parameters or bottoms cannot work (wrong bottom count, unknown channels, ...)."""


# ---------------------------------------------------------------------------------------------------------
# helpers


def enum_name(message, field: str) -> str:
    """Symbolic name of an enum field of a protobuf message (e.g. ``'MAX'``), independent of the pb2 module."""
    value = getattr(message, field)
    return message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name


def _has(message, field: str) -> bool:
    if field not in message.DESCRIPTOR.fields_by_name:
        return False
    try:
        return message.HasField(field)
    except ValueError:  # repeated field
        return len(getattr(message, field)) > 0


def _spatial(param, name: str, default: Optional[int], layer: str) -> Tuple[int, int]:
    """Caffe's 2-D convolution/pooling geometry: ``name`` (repeated or scalar) or the ``_h``/``_w`` pair
    (``kernel_h``/``kernel_w`` for ``kernel_size``)."""
    base = "kernel" if name == "kernel_size" else name
    if _has(param, base + "_h") or _has(param, base + "_w"):
        return int(getattr(param, base + "_h")), int(getattr(param, base + "_w"))
    values = getattr(param, name, None)
    if values is None or (hasattr(values, "__len__") and len(values) == 0):
        if default is None:
            raise LayerConfigError(f"layer '{layer}': {name} is required")
        return default, default
    if not hasattr(values, "__len__"):
        return int(values), int(values)
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise UnsupportedLayerError(f"layer '{layer}': only 2-D {name} is supported, got {list(values)}")


def fill_blob(shape: Sequence[int], filler, generator: Optional[torch.Generator], layer: str) -> torch.Tensor:
    """A float32 tensor filled like Caffe's ``GetFiller(filler)->Fill`` (constant, uniform, gaussian, xavier,
    msra, bilinear). ``filler`` may be None (Caffe's default: constant 0)."""
    shape = tuple(int(s) for s in shape)
    out = torch.empty(shape, dtype=torch.float32)
    kind = filler.type if filler is not None else "constant"
    count = out.numel()
    # Caffe: fan_in = count / shape[0], fan_out = count / shape[1] (or count for 1-D blobs)
    fan_in = count // shape[0] if shape and shape[0] else 1
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    if kind == "constant":
        out.fill_(filler.value if filler is not None else 0.0)
    elif kind == "uniform":
        out.uniform_(filler.min, filler.max, generator=generator)
    elif kind == "gaussian":
        out.normal_(filler.mean, filler.std, generator=generator)
        if filler.sparse >= 0:
            # Caffe keeps each weight with probability sparse / num_inputs (num_inputs = shape[1] here).
            keep = torch.rand(shape, generator=generator) < filler.sparse / max(1, shape[1] if len(shape) > 1 else 1)
            out.mul_(keep)
    elif kind in ("xavier", "msra"):
        norm = enum_name(filler, "variance_norm")
        n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[norm]
        if kind == "xavier":
            scale = math.sqrt(3.0 / n)
            out.uniform_(-scale, scale, generator=generator)
        else:
            out.normal_(0.0, math.sqrt(2.0 / n), generator=generator)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise LayerConfigError(f"layer '{layer}': bilinear filler needs a square 4-D blob, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (k - 1) / (2.0 * f)
        ramp = 1 - torch.abs(torch.arange(k, dtype=torch.float32) / f - c)
        out.copy_((ramp[:, None] * ramp[None, :]).expand(shape))
    else:
        raise UnsupportedLayerError(f"layer '{layer}': unsupported filler type '{kind}'")
    return out


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


# ---------------------------------------------------------------------------------------------------------
# base class


class CaffeLayer(nn.Module):
    """Common base: the layer's name/type, bottom/top counts and the blob interface."""

    min_bottoms = 1
    max_bottoms: Optional[int] = 1
    #: blob names (attributes) in Caffe order; learnable ones are Parameters, statistics are buffers
    blob_names: Tuple[str, ...] = ()

    def __init__(self, param, bottom_shapes: Sequence[Shape], generator: Optional[torch.Generator] = None):
        super().__init__()
        self.layer_name = param.name
        self.layer_type = param.type
        n = len(bottom_shapes)
        if n < self.min_bottoms or (self.max_bottoms is not None and n > self.max_bottoms):
            want = str(self.min_bottoms) if self.max_bottoms == self.min_bottoms else \
                f"{self.min_bottoms}..{self.max_bottoms if self.max_bottoms is not None else 'n'}"
            raise LayerConfigError(f"layer '{param.name}' ({param.type}) takes {want} bottoms, got {n}")
        self.num_tops = len(param.top)

    # --- blobs -------------------------------------------------------------------------------------------
    def blobs(self) -> List[torch.Tensor]:
        return [getattr(self, name) for name in self.blob_names if getattr(self, name, None) is not None]

    @property
    def param_blob_indices(self) -> List[int]:
        return [i for i, b in enumerate(self.blobs()) if isinstance(b, nn.Parameter)]

    def set_blob(self, index: int, value) -> None:
        """Copy a Caffe blob (array of the same shape) into blob ``index``."""
        target = self.blobs()[index]
        src = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(target.shape)
        with torch.no_grad():
            target.copy_(src.to(target.device, target.dtype))

    def share_blob(self, index: int, other: nn.Parameter) -> None:
        """Caffe param sharing: make blob ``index`` the very Parameter ``other`` (same shape)."""
        name = [n for n in self.blob_names if getattr(self, n, None) is not None][index]
        mine = getattr(self, name)
        if tuple(mine.shape) != tuple(other.shape):
            raise LayerConfigError(f"layer '{self.layer_name}': shared param {index} has shape "
                                   f"{tuple(mine.shape)}, owner has {tuple(other.shape)}")
        setattr(self, name, other)

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> List[Shape]:
        return [tuple(bottom_shapes[0])] * max(1, self.num_tops)

    def extra_repr(self) -> str:
        return f"'{self.layer_name}'"


def _channels(layer, bottom_shapes, axis=1) -> int:
    shape = bottom_shapes[0]
    if len(shape) <= axis or shape[axis] is None:
        raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): the channel count of bottom "
                               f"'{layer.bottom[0]}' is unknown (shape {_fmt(shape)}); give the net input shapes")
    return int(shape[axis])


# ---------------------------------------------------------------------------------------------------------
# convolution family


class Convolution(CaffeLayer):
    blob_names = ("weight", "bias")
    transposed = False

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        cp = param.convolution_param
        if cp.axis != 1:
            raise UnsupportedLayerError(f"layer '{param.name}' ({param.type}): axis {cp.axis} is not supported")
        self.kernel = _spatial(cp, "kernel_size", None, param.name)
        self.stride = _spatial(cp, "stride", 1, param.name)
        self.pad = _spatial(cp, "pad", 0, param.name)
        self.dilation = _spatial(cp, "dilation", 1, param.name)
        self.group = int(cp.group)
        self.num_output = int(cp.num_output)
        if self.num_output <= 0 or self.group <= 0:     # Caffe: CHECK_GT(num_output_, 0), CHECK_GT(group_, 0)
            raise LayerConfigError(f"layer '{param.name}' ({param.type}): num_output {self.num_output} and "
                                   f"group {self.group} must be positive")
        cin = _channels(param, bottom_shapes)
        if cin % self.group or self.num_output % self.group:
            raise LayerConfigError(f"layer '{param.name}': channels {cin} -> {self.num_output} "
                                   f"not divisible by group {self.group}")
        self.in_channels = cin
        if self.transposed:  # Caffe deconvolution weights: [C_in, C_out/group, kh, kw] (as torch)
            wshape = (cin, self.num_output // self.group) + self.kernel
        else:
            wshape = (self.num_output, cin // self.group) + self.kernel
        self.weight = nn.Parameter(fill_blob(wshape, cp.weight_filler, generator, param.name))
        if cp.bias_term:
            self.bias = nn.Parameter(fill_blob((self.num_output,), cp.bias_filler, generator, param.name))
        else:
            self.bias = None

    def forward(self, x):
        if self.transposed:
            return (F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.pad, 0, self.group,
                                       self.dilation),)
        return (F.conv2d(x, self.weight, self.bias, self.stride, self.pad, self.dilation, self.group),)

    def top_shapes(self, bottom_shapes):
        n, _, h, w = _four(self, bottom_shapes[0])
        out = []
        for size, k, s, p, d in zip((h, w), self.kernel, self.stride, self.pad, self.dilation):
            if size is None:
                out.append(None)
            elif self.transposed:
                out.append(s * (size - 1) + d * (k - 1) + 1 - 2 * p)
            else:
                out.append((size + 2 * p - (d * (k - 1) + 1)) // s + 1)
        return [(n, self.num_output, out[0], out[1])]


class Deconvolution(Convolution):
    transposed = True


def _four(layer, shape) -> Shape:
    if len(shape) != 4:
        raise LayerConfigError(f"layer '{layer.layer_name}' ({layer.layer_type}) needs a 4-D bottom, "
                               f"got {_fmt(shape)}")
    return tuple(shape)


class InnerProduct(CaffeLayer):
    blob_names = ("weight", "bias")

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        ip = param.inner_product_param
        shape = bottom_shapes[0]
        self.axis = ip.axis % len(shape)
        tail = shape[self.axis:]
        if any(s is None for s in tail):
            raise LayerConfigError(f"layer '{param.name}' (InnerProduct): input size unknown "
                                   f"(bottom shape {_fmt(shape)}); give the net input shapes")
        k = int(np.prod(tail))
        self.num_output = int(ip.num_output)
        if self.num_output <= 0:
            raise LayerConfigError(f"layer '{param.name}' (InnerProduct): num_output {self.num_output} must be positive")
        self.transpose = bool(ip.transpose)
        wshape = (k, self.num_output) if self.transpose else (self.num_output, k)
        self.weight = nn.Parameter(fill_blob(wshape, ip.weight_filler, generator, param.name))
        self.bias = nn.Parameter(fill_blob((self.num_output,), ip.bias_filler, generator, param.name)) \
            if ip.bias_term else None

    def forward(self, x):
        x = x.flatten(self.axis)
        w = self.weight.t() if self.transpose else self.weight
        return (F.linear(x, w, self.bias),)

    def top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[0][:self.axis]) + (self.num_output,)]


# ---------------------------------------------------------------------------------------------------------
# activations


class ReLU(CaffeLayer):
    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        self.negative_slope = float(param.relu_param.negative_slope)

    def forward(self, x):
        if self.negative_slope == 0.0:
            return (F.relu(x),)
        return (F.leaky_relu(x, self.negative_slope),)


class Clip(CaffeLayer):
    """Caffe's Clip: ``min(max(x, min), max)`` (ReLU6 is Clip 0..6); the gradient passes where
    ``min <= x <= max`` as in Caffe's ClipLayer backward (torch.clamp does the same)."""

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        cp = param.clip_param
        if not (cp.HasField("min") and cp.HasField("max")):
            raise LayerConfigError(f"layer '{param.name}' (Clip): clip_param needs min and max")
        self.low, self.high = float(cp.min), float(cp.max)

    def forward(self, x):
        return (torch.clamp(x, self.low, self.high),)


class PReLU(CaffeLayer):
    blob_names = ("weight",)

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        pp = param.prelu_param
        self.channel_shared = bool(pp.channel_shared)
        channels = 1 if self.channel_shared else _channels(param, bottom_shapes)
        if pp.HasField("filler"):
            init = fill_blob((channels,), pp.filler, generator, param.name)
        else:  # Caffe's PReLU default filler: constant 0.25
            init = torch.full((channels,), 0.25)
        self.weight = nn.Parameter(init)

    def forward(self, x):
        return (F.prelu(x, self.weight),)


class Sigmoid(CaffeLayer):
    def forward(self, x):
        return (torch.sigmoid(x),)


class TanH(CaffeLayer):
    def forward(self, x):
        return (torch.tanh(x),)


class Softmax(CaffeLayer):
    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        self.axis = int(param.softmax_param.axis)

    def forward(self, x):
        return (torch.softmax(x, self.axis % x.dim()),)


class Dropout(CaffeLayer):
    """Caffe's dropout scales kept units by 1/(1-p) at train time and is the identity at test time."""

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        self.ratio = float(param.dropout_param.dropout_ratio)

    def forward(self, x):
        return (F.dropout(x, self.ratio, self.training),)


# ---------------------------------------------------------------------------------------------------------
# pooling


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's pooling output size: ceil rounding, minus one window if the last starts in the padding."""
    if ceil:
        out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    else:
        out = (size + 2 * pad - kernel) // stride + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class Pooling(CaffeLayer):
    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        pp = param.pooling_param
        self.method = enum_name(pp, "pool")
        if self.method not in ("MAX", "AVE"):
            raise UnsupportedLayerError(f"layer '{param.name}' (Pooling): pool method {self.method} is not supported")
        if self.num_tops > 1:
            raise UnsupportedLayerError(f"layer '{param.name}' (Pooling): the mask top is not supported")
        self.global_pooling = bool(pp.global_pooling)
        self.ceil = True
        if "round_mode" in pp.DESCRIPTOR.fields_by_name:
            self.ceil = enum_name(pp, "round_mode") == "CEIL"
        if self.global_pooling:
            self.kernel, self.stride, self.pad = None, (1, 1), (0, 0)
        else:
            self.kernel = _spatial(pp, "kernel_size", None, param.name)
            self.stride = _spatial(pp, "stride", 1, param.name)
            self.pad = _spatial(pp, "pad", 0, param.name)

    def _geometry(self, h, w):
        kernel = (h, w) if self.global_pooling else self.kernel
        out = tuple(caffe_pool_size(s, k, st, p, self.ceil)
                    for s, k, st, p in zip((h, w), kernel, self.stride, self.pad))
        return kernel, out

    def forward(self, x):
        h, w = x.shape[-2:]
        kernel, out = self._geometry(h, w)
        pad, stride = self.pad, self.stride
        # torch's ceil_mode applies Caffe's rule (incl. the "window starts in padding" drop) when pad <= k/2;
        # otherwise (or for floor rounding / k < stride corner cases) use the explicit padded form.
        torch_ok = all(p <= k // 2 for p, k in zip(pad, kernel)) and self.ceil and \
            all(p > 0 or k >= s for p, k, s in zip(pad, kernel, stride))
        if torch_ok:
            if self.method == "MAX":
                y = F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)
            else:
                y = F.avg_pool2d(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)
            return (y,)
        return (self._explicit(x, kernel, out),)

    def _explicit(self, x, kernel, out):
        h, w = x.shape[-2:]
        (ph, pw), (sh, sw), (kh, kw) = self.pad, self.stride, kernel
        need_h, need_w = (out[0] - 1) * sh + kh, (out[1] - 1) * sw + kw
        extra_h, extra_w = max(0, need_h - h - ph), max(0, need_w - w - pw)
        if self.method == "MAX":
            xp = F.pad(x, (pw, extra_w, ph, extra_h), value=float("-inf"))
            y = F.max_pool2d(xp, kernel, self.stride)
        else:
            xp = F.pad(x, (pw, extra_w, ph, extra_h), value=0.0)
            total = F.avg_pool2d(xp, kernel, self.stride, divisor_override=1)
            # Caffe's divisor counts the window clipped to [-pad, size + pad)
            ones = torch.zeros((1, 1) + xp.shape[-2:], dtype=x.dtype, device=x.device)
            ones[..., : h + 2 * ph, : w + 2 * pw] = 1
            count = F.avg_pool2d(ones, kernel, self.stride, divisor_override=1)
            y = total / count
        return y[..., : out[0], : out[1]]

    def top_shapes(self, bottom_shapes):
        n, c, h, w = _four(self, bottom_shapes[0])
        if self.global_pooling:
            return [(n, c, 1, 1)]
        out = tuple(None if s is None else caffe_pool_size(s, k, st, p, self.ceil)
                    for s, k, st, p in zip((h, w), self.kernel, self.stride, self.pad))
        return [(n, c) + out]


# ---------------------------------------------------------------------------------------------------------
# blob plumbing


class Concat(CaffeLayer):
    max_bottoms = None

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        cp = param.concat_param
        self.axis = int(cp.concat_dim) if cp.HasField("concat_dim") else int(cp.axis)

    def forward(self, *xs):
        if len(xs) == 1:
            return (xs[0],)
        return (torch.cat(xs, self.axis),)

    def top_shapes(self, bottom_shapes):
        shape = list(bottom_shapes[0])
        axis = self.axis % len(shape)
        sizes = [s[axis] for s in bottom_shapes]
        shape[axis] = None if any(s is None for s in sizes) else sum(sizes)
        return [tuple(shape)]


class Slice(CaffeLayer):
    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        sp = param.slice_param
        self.axis = int(sp.slice_dim) if sp.HasField("slice_dim") else int(sp.axis)
        self.points = [int(p) for p in sp.slice_point]
        if self.points and len(self.points) != self.num_tops - 1:
            raise LayerConfigError(f"layer '{param.name}' (Slice): {len(self.points)} slice points "
                                   f"for {self.num_tops} tops")

    def _sizes(self, total):
        if self.points:
            bounds = [0] + self.points + [total]
        else:
            if total is None or total % self.num_tops:
                raise LayerConfigError(f"layer '{self.layer_name}' (Slice): axis size {total} does not divide "
                                       f"into {self.num_tops} tops")
            step = total // self.num_tops
            bounds = [i * step for i in range(self.num_tops + 1)]
        return [None if (b is None or a is None) else b - a for a, b in zip(bounds[:-1], bounds[1:])]

    def forward(self, x):
        axis = self.axis % x.dim()
        return tuple(torch.split(x, self._sizes(x.shape[axis]), dim=axis))

    def top_shapes(self, bottom_shapes):
        shape = list(bottom_shapes[0])
        axis = self.axis % len(shape)
        out = []
        for size in self._sizes(shape[axis]):
            s = list(shape)
            s[axis] = size
            out.append(tuple(s))
        return out


class Split(CaffeLayer):
    def forward(self, x):
        return (x,) * self.num_tops


class Silence(CaffeLayer):
    max_bottoms = None

    def forward(self, *xs):
        return ()

    def top_shapes(self, bottom_shapes):
        return []


class Eltwise(CaffeLayer):
    min_bottoms = 2
    max_bottoms = None

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        ep = param.eltwise_param
        self.operation = enum_name(ep, "operation")
        self.coeffs = [float(c) for c in ep.coeff]
        if self.coeffs and (self.operation != "SUM" or len(self.coeffs) != len(bottom_shapes)):
            raise LayerConfigError(f"layer '{param.name}' (Eltwise): coefficients need SUM and one per bottom")
        # Caffe's EltwiseLayer::Reshape checks that every bottom has the first one's shape; a label top of
        # another model's channel count (a YAML skeleton edited since) stops here, not in the first forward
        if any(len(s) != len(bottom_shapes[0]) or any(a is not None and b is not None and a != b
                                                      for a, b in zip(s, bottom_shapes[0]))
               for s in bottom_shapes[1:]):
            raise LayerConfigError(f"layer '{param.name}' (Eltwise): bottoms {', '.join(param.bottom)} have "
                                   f"different shapes {', '.join(_fmt(s) for s in bottom_shapes)}")

    def forward(self, *xs):
        y = xs[0]
        if self.operation == "PROD":
            for x in xs[1:]:
                y = y * x
        elif self.operation == "MAX":
            for x in xs[1:]:
                y = torch.maximum(y, x)
        else:
            if self.coeffs:
                y = y * self.coeffs[0] if self.coeffs[0] != 1.0 else y
                for c, x in zip(self.coeffs[1:], xs[1:]):
                    y = y + x if c == 1.0 else y + c * x
            else:
                for x in xs[1:]:
                    y = y + x
        return (y,)

    def top_shapes(self, bottom_shapes):
        shape = [next((s[i] for s in bottom_shapes if s[i] is not None), None)
                 for i in range(len(bottom_shapes[0]))]
        return [tuple(shape)]


class Flatten(CaffeLayer):
    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        self.axis = int(param.flatten_param.axis)
        self.end_axis = int(param.flatten_param.end_axis)

    def forward(self, x):
        return (x.flatten(self.axis % x.dim(), self.end_axis % x.dim()),)

    def top_shapes(self, bottom_shapes):
        shape = list(bottom_shapes[0])
        a, e = self.axis % len(shape), self.end_axis % len(shape)
        mid = shape[a:e + 1]
        merged = None if any(s is None for s in mid) else int(np.prod(mid))
        return [tuple(shape[:a] + [merged] + shape[e + 1:])]


class Reshape(CaffeLayer):
    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        rp = param.reshape_param
        self.dims = [int(d) for d in rp.shape.dim]
        self.axis = int(rp.axis)
        self.num_axes = int(rp.num_axes)
        if self.dims.count(-1) > 1:
            raise LayerConfigError(f"layer '{param.name}' (Reshape): at most one -1 dimension")

    def _target(self, shape):
        shape = list(shape)
        start = self.axis if self.axis >= 0 else len(shape) + self.axis + 1
        end = len(shape) if self.num_axes == -1 else start + self.num_axes
        new = [shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        out = shape[:start] + new + shape[end:]
        if -1 in out:
            known = [s for s in shape if s is not None]
            if len(known) == len(shape):
                rest = int(np.prod([s for s in out if s != -1]))
                out[out.index(-1)] = int(np.prod(shape)) // rest
            else:
                out[out.index(-1)] = None
        return out

    def forward(self, x):
        return (x.reshape(self._target(x.shape)),)

    def top_shapes(self, bottom_shapes):
        return [tuple(self._target(bottom_shapes[0]))]


# ---------------------------------------------------------------------------------------------------------
# normalisation


class BatchNorm(CaffeLayer):
    """Caffe's BatchNorm: 3 blobs (mean sum, variance sum, scale factor), no affine part (that is ``Scale``).

    The statistics are buffers (Caffe never lets the solver touch them); the running estimates are divided
    by the scale factor, and the variance uses the unbiased m/(m-1) correction, as in Caffe."""

    blob_names = ("mean", "variance", "scale_factor")

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        bp = param.batch_norm_param
        channels = _channels(param, bottom_shapes)
        self.use_global_stats = bool(bp.use_global_stats) if bp.HasField("use_global_stats") else None
        self.maf = float(bp.moving_average_fraction)
        self.eps = float(bp.eps)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("variance", torch.zeros(channels))
        self.register_buffer("scale_factor", torch.zeros(1))

    def forward(self, x):
        global_stats = self.use_global_stats if self.use_global_stats is not None else not self.training
        if global_stats:
            sf = self.scale_factor[0]
            factor = torch.where(sf == 0, torch.zeros_like(sf), 1.0 / sf)
            mean, var = self.mean * factor, self.variance * factor
            return (F.batch_norm(x, mean.to(x.dtype), var.to(x.dtype), None, None, False, 0.0, self.eps),)
        # The batch's own mean and (biased) variance, with their gradient: torch's fused kernel computes
        # Caffe's formula (x - mean) / sqrt(var + eps). With momentum 1 it also hands back the batch mean
        # and the unbiased variance (m / (m - 1)), which Caffe's running sums take.
        batch_mean = torch.zeros_like(self.mean)
        batch_var = torch.zeros_like(self.variance)
        y = F.batch_norm(x, batch_mean, batch_var, None, None, True, 1.0, self.eps)
        with torch.no_grad():
            if x.numel() == x.shape[1]:     # one value per channel: torch leaves the variance NaN, Caffe 0
                batch_var.zero_()
            self.scale_factor.mul_(self.maf).add_(1.0)
            self.mean.mul_(self.maf).add_(batch_mean)
            self.variance.mul_(self.maf).add_(batch_var)
        return (y,)


def _bcast(v, x):
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


class Scale(CaffeLayer):
    """Per-channel multiply (blob or second bottom), optional bias: Caffe's ``Scale`` (axis, num_axes)."""

    blob_names = ("weight", "bias")
    max_bottoms = 2

    def __init__(self, param, bottom_shapes, generator=None):
        super().__init__(param, bottom_shapes, generator)
        sp = param.scale_param
        shape = bottom_shapes[0]
        self.axis = int(sp.axis) % len(shape)
        if len(bottom_shapes) == 2:
            self.weight = None
            sshape = tuple(bottom_shapes[1])
        else:
            num_axes = int(sp.num_axes)
            sshape = tuple(shape[self.axis:] if num_axes == -1 else shape[self.axis:self.axis + num_axes])
            if any(s is None for s in sshape):
                raise LayerConfigError(f"layer '{param.name}' (Scale): scale shape unknown from bottom "
                                       f"{_fmt(shape)}")
            if sp.HasField("filler"):
                init = fill_blob(sshape, sp.filler, generator, param.name)
            else:  # Caffe: scale defaults to 1
                init = torch.ones(sshape)
            self.weight = nn.Parameter(init)
        self.scale_ndim = len(sshape)
        if sp.bias_term:
            if any(s is None for s in sshape):
                raise LayerConfigError(f"layer '{param.name}' (Scale): bias shape unknown")
            self.bias = nn.Parameter(fill_blob(sshape, sp.bias_filler if sp.HasField("bias_filler") else None,
                                               generator, param.name))
        else:
            self.bias = None

    def _expand(self, v, x):
        return v.reshape((1,) * self.axis + tuple(v.shape) + (1,) * (x.dim() - self.axis - v.dim()))

    def forward(self, x, scale=None):
        s = scale if scale is not None else self.weight
        y = x * self._expand(s, x)
        if self.bias is not None:
            y = y + self._expand(self.bias, x)
        return (y,)


# ---------------------------------------------------------------------------------------------------------
# losses


class EuclideanLoss(CaffeLayer):
    """Caffe's EuclideanLoss: sum((a - b)^2) / (2 N), N = the batch size (first axis); a 0-d top.

    Computed in float32 even under bf16 autocast (the sum over a whole label map needs the range)."""

    min_bottoms = 2
    max_bottoms = 2
    is_loss = True

    def forward(self, a, b):
        diff = a.float() - b.float()
        return ((diff * diff).sum() / (2.0 * a.shape[0]),)

    def top_shapes(self, bottom_shapes):
        return [()]


LAYER_TYPES = {
    "Convolution": Convolution,
    "Deconvolution": Deconvolution,
    "InnerProduct": InnerProduct,
    "ReLU": ReLU,
    "PReLU": PReLU,
    "Clip": Clip,
    "Sigmoid": Sigmoid,
    "TanH": TanH,
    "Softmax": Softmax,
    "Dropout": Dropout,
    "Pooling": Pooling,
    "Concat": Concat,
    "Slice": Slice,
    "Split": Split,
    "Silence": Silence,
    "Eltwise": Eltwise,
    "Flatten": Flatten,
    "Reshape": Reshape,
    "BatchNorm": BatchNorm,
    "Scale": Scale,
    "EuclideanLoss": EuclideanLoss,
}


def build_layer(param, bottom_shapes: Sequence[Shape], generator: Optional[torch.Generator] = None) -> CaffeLayer:
    """The module for one (non-data) LayerParameter; UnsupportedLayerError names layer and type."""
    cls = LAYER_TYPES.get(param.type)
    if cls is None:
        raise UnsupportedLayerError(
            f"layer '{param.name}' has type '{param.type}', which the engine does not support "
            f"(supported: {', '.join(sorted(LAYER_TYPES))}; data layers: {', '.join(DATA_LAYER_TYPES)})")
    return cls(param, bottom_shapes, generator)


def is_loss_type(layer_type: str) -> bool:
    """Caffe gives tops of ``*Loss`` layers loss_weight 1 by default."""
    return layer_type.endswith("Loss")
