"""Shape inference for a Caffe NetParameter, learnable blob shapes, random weights.

Follows Caffe's layer Reshape() rules: convolution output ``(in + 2p - (d(k-1)+1)) / s + 1``
(floor), pooling with ceil rounding and the clip rule (the last window must start inside the
image), Concat/Slice along ``axis``. Blob shapes are tuples; ``None`` stands for a dimension that
cannot be known from the net alone (an OPData label's channel count), and it only matters when a
learnable layer reads it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import caffe_pb2

from openpose_train.common.errors import OpenPoseTrainError

Shape = Tuple[Optional[int], ...]

# layers whose top has the bottom's shape
_SAME_SHAPE = {"ReLU", "PReLU", "Dropout", "Sigmoid", "TanH", "ELU", "AbsVal", "BNLL", "Power", "Exp", "Log",
               "Threshold", "Swish", "Clip", "BatchNorm", "Scale", "Bias", "MVN", "LRN", "Softmax"}
_LOSSES = {"EuclideanLoss", "SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
           "MultinomialLogisticLoss", "ContrastiveLoss"}


class ShapeInferenceError(OpenPoseTrainError, ValueError):
    """A layer's output or parameter shape cannot be inferred; the message names the layer."""


def _phase_ok(layer: caffe_pb2.LayerParameter, phase: Optional[int]) -> bool:
    """Caffe's include/exclude rules, by phase only (levels and stages are not used by our nets)."""
    if phase is None:
        return True
    if layer.HasField("phase") and layer.phase != phase:
        return False
    if len(layer.include):
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(not r.HasField("phase") or r.phase == phase for r in layer.exclude)


def _spatial(values: Sequence[int], h: Optional[int], w: Optional[int], default: int, name: str) -> Tuple[int, int]:
    """Caffe's repeated kernel/pad/stride rule: one value for both, or (h, w); *_h/*_w override."""
    if h is not None and w is not None:
        return int(h), int(w)
    values = list(values)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ShapeInferenceError(f"{name}: {len(values)} values for a 2-D layer")


def conv_geometry(cp: caffe_pb2.ConvolutionParameter, name: str = "?"):
    """(kernel, pad, stride, dilation) as (h, w) pairs of a ConvolutionParameter."""
    kernel = _spatial(cp.kernel_size, cp.kernel_h if cp.HasField("kernel_h") else None,
                      cp.kernel_w if cp.HasField("kernel_w") else None, 0, f"layer '{name}' kernel_size")
    if kernel[0] <= 0 or kernel[1] <= 0:
        raise ShapeInferenceError(f"layer '{name}': convolution without kernel_size")
    pad = _spatial(cp.pad, cp.pad_h if cp.HasField("pad_h") else None,
                   cp.pad_w if cp.HasField("pad_w") else None, 0, f"layer '{name}' pad")
    stride = _spatial(cp.stride, cp.stride_h if cp.HasField("stride_h") else None,
                      cp.stride_w if cp.HasField("stride_w") else None, 1, f"layer '{name}' stride")
    dilation = _spatial(cp.dilation, None, None, 1, f"layer '{name}' dilation")
    return kernel, pad, stride, dilation


def pool_geometry(pp: caffe_pb2.PoolingParameter):
    """(kernel, pad, stride) as (h, w) pairs of a PoolingParameter (global pooling: kernel None)."""
    kernel = (pp.kernel_h, pp.kernel_w) if pp.HasField("kernel_h") else (pp.kernel_size, pp.kernel_size)
    pad = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") else (pp.pad, pp.pad)
    stride = (pp.stride_h, pp.stride_w) if pp.HasField("stride_h") else (pp.stride, pp.stride)
    return kernel, pad, stride


def pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool = True) -> int:
    """Caffe's pooling output size: ceil rounding, then drop a last window starting in the padding."""
    if ceil:
        out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    else:
        out = (size + 2 * pad - kernel) // stride + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _axis(axis: int, ndim: int, name: str) -> int:
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < ndim:
        raise ShapeInferenceError(f"layer '{name}': axis {axis} out of range for a {ndim}-D blob")
    return a


def _net_inputs(net: caffe_pb2.NetParameter) -> Dict[str, Shape]:
    shapes: Dict[str, Shape] = {}
    for i, name in enumerate(net.input):
        if len(net.input_shape) > i:
            shapes[name] = tuple(int(d) for d in net.input_shape[i].dim)
        elif len(net.input_dim) >= 4 * (i + 1):
            shapes[name] = tuple(int(d) for d in net.input_dim[4 * i:4 * i + 4])
        else:
            shapes[name] = None
    return shapes


def _conv_out(layer, bottom: Shape) -> Shape:
    cp = layer.convolution_param
    kernel, pad, stride, dilation = conv_geometry(cp, layer.name)
    out = [bottom[0], int(cp.num_output)]
    for size, k, p, s, d in zip(bottom[2:], kernel, pad, stride, dilation):
        if size is None:
            out.append(None)
        elif layer.type == "Deconvolution":
            out.append(s * (size - 1) + d * (k - 1) + 1 - 2 * p)
        else:
            out.append((size + 2 * p - (d * (k - 1) + 1)) // s + 1)
    return tuple(out)


def _layer_tops(layer: caffe_pb2.LayerParameter, bottoms: List[Shape]) -> List[Shape]:
    """Shapes of ``layer``'s tops from its bottoms' shapes."""
    t, name, ntop = layer.type, layer.name, len(layer.top)
    b0 = bottoms[0] if bottoms else None
    if t == "Input":
        shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
        if len(shapes) == 1:
            shapes *= ntop
        if len(shapes) != ntop:
            raise ShapeInferenceError(f"layer '{name}': {len(shapes)} shapes for {ntop} tops")
        return shapes
    if t in ("OPData", "OPVideo"):
        op = layer.op_transform_param
        batch = int(layer.data_param.batch_size) or None
        image = (batch, 3, int(op.crop_size_y), int(op.crop_size_x))
        label = (batch, None, int(op.crop_size_y) // int(op.stride), int(op.crop_size_x) // int(op.stride))
        return [image, label][:ntop]
    if t == "DummyData":
        dp = layer.dummy_data_param
        shapes = [tuple(int(d) for d in s.dim) for s in dp.shape]
        if not shapes:
            shapes = [tuple(int(v[i] if len(v) > i else v[0]) for v in (dp.num, dp.channels, dp.height, dp.width))
                      for i in range(ntop)]
        return shapes * ntop if len(shapes) == 1 else shapes
    if b0 is None:
        raise ShapeInferenceError(f"layer '{name}' ({t}): bottom shape unknown")
    if t in ("Convolution", "Deconvolution"):
        if len(b0) < 3:
            raise ShapeInferenceError(f"layer '{name}': convolution input {b0} is not N,C,H,W")
        return [_conv_out(layer, b) for b in bottoms]
    if t == "Pooling":
        pp = layer.pooling_param
        if pp.global_pooling:
            return [b0[:2] + (1, 1)]
        kernel, pad, stride = pool_geometry(pp)
        ceil = pp.round_mode == caffe_pb2.PoolingParameter.CEIL
        return [b0[:2] + tuple(None if s is None else pooled_size(s, k, p, st, ceil)
                               for s, k, p, st in zip(b0[2:], kernel, pad, stride))]
    if t == "Concat":
        cp = layer.concat_param
        axis = _axis(cp.axis if cp.HasField("axis") or not cp.HasField("concat_dim") else cp.concat_dim,
                     len(b0), name)
        sizes = [b[axis] for b in bottoms]
        for b in bottoms[1:]:
            if len(b) != len(b0) or any(x != y and None not in (x, y)
                                        for i, (x, y) in enumerate(zip(b, b0)) if i != axis):
                raise ShapeInferenceError(f"layer '{name}' (Concat): bottom shapes {bottoms} differ off axis {axis}")
        total = None if None in sizes else sum(sizes)
        return [b0[:axis] + (total,) + b0[axis + 1:]]
    if t == "Slice":
        sp = layer.slice_param
        axis = _axis(sp.axis if sp.HasField("axis") or not sp.HasField("slice_dim") else sp.slice_dim,
                     len(b0), name)
        points = list(sp.slice_point)
        size = b0[axis]
        if points:
            if len(points) != ntop - 1:
                raise ShapeInferenceError(f"layer '{name}' (Slice): {len(points)} slice points for {ntop} tops")
            bounds = [0] + points + [size]
            parts = [None if (e is None or s is None) else e - s for s, e in zip(bounds[:-1], bounds[1:])]
        else:
            if size is not None and size % ntop:
                raise ShapeInferenceError(f"layer '{name}' (Slice): {size} channels do not split into {ntop}")
            parts = [None if size is None else size // ntop] * ntop
        return [b0[:axis] + (p,) + b0[axis + 1:] for p in parts]
    if t == "Eltwise":
        return [b0]
    if t == "Split":
        return [b0] * ntop
    if t in _SAME_SHAPE:
        return [b0] * max(ntop, 1)
    if t == "Silence":
        return []
    if t in _LOSSES:
        return [()] * ntop
    if t == "InnerProduct":
        ip = layer.inner_product_param
        axis = _axis(ip.axis, len(b0), name)
        return [b0[:axis] + (int(ip.num_output),)]
    if t == "Flatten":
        fp = layer.flatten_param
        a, e = _axis(fp.axis, len(b0), name), _axis(fp.end_axis, len(b0), name)
        mid = b0[a:e + 1]
        return [b0[:a] + (None if None in mid else int(np.prod(mid)),) + b0[e + 1:]]
    if t == "Reshape":
        return [_reshape(layer, b0)]
    raise ShapeInferenceError(f"layer '{name}': shape inference does not know layer type '{t}'")


def _reshape(layer, b0: Shape) -> Shape:
    rp = layer.reshape_param
    axis = _axis(rp.axis, len(b0) + 1, layer.name)
    end = len(b0) if rp.num_axes == -1 else axis + rp.num_axes
    dims = [int(d) for d in rp.shape.dim]
    new = [b0[axis + i] if d == 0 else d for i, d in enumerate(dims)]
    out = list(b0[:axis]) + new + list(b0[end:])
    if -1 in out:
        known = [d for d in out if d != -1]
        if None in known or None in b0:
            out[out.index(-1)] = None
        else:
            out[out.index(-1)] = int(np.prod(b0)) // int(np.prod(known))
    return tuple(out)


def _propagate(net: caffe_pb2.NetParameter, input_shapes: Optional[Mapping], phase: Optional[int],
               visit=None) -> Dict[str, Shape]:
    """Walk the layers in order, computing top shapes; ``visit(layer, bottom_shapes)`` sees each layer."""
    shapes: Dict[str, Shape] = _net_inputs(net)
    overrides = dict(input_shapes or {})
    if None in overrides:   # the key None names the first input blob
        first = next(iter(shapes), None)
        if first is None:
            first = next((layer.top[0] for layer in net.layer if layer.type in ("Input", "OPData", "Data")
                          and len(layer.top)), None)
        overrides[first] = overrides.pop(None)
    shapes.update({k: tuple(v) for k, v in overrides.items() if k in shapes})
    for layer in net.layer:
        if not _phase_ok(layer, phase):
            continue
        bottoms = [shapes.get(b) for b in layer.bottom]
        if any(b is None for b in bottoms):
            missing = [b for b, s in zip(layer.bottom, bottoms) if s is None]
            raise ShapeInferenceError(f"layer '{layer.name}' ({layer.type}): shape of bottom {missing} unknown "
                                      f"(not produced by an earlier layer, or give input_shapes)")
        if visit is not None:
            visit(layer, bottoms)
        for top, shape in zip(layer.top, _layer_tops(layer, bottoms)):
            shapes[top] = tuple(overrides[top]) if top in overrides else shape
    return shapes


def infer_blob_shapes(net: caffe_pb2.NetParameter, input_shapes: Optional[Mapping] = None,
                      phase: Optional[int] = None) -> Dict[str, Shape]:
    """Shape of every blob of ``net`` (final version of in-place blobs; all layers, or one phase).

    ``input_shapes`` overrides net inputs or data-layer tops: ``{blob: shape}``; the key ``None``
    means the first input (deploy nets: ``image``).
    """
    return _propagate(net, input_shapes, phase)


def _layer_param_shapes(layer, bottoms: List[Shape]) -> List[Tuple[int, ...]]:
    """Learnable blob shapes of one layer (empty for layers without parameters)."""
    t, name = layer.type, layer.name

    def need(dim, what):
        if dim is None:
            raise ShapeInferenceError(f"layer '{name}' ({t}): {what} unknown (give input_shapes)")
        return int(dim)

    if t in ("Convolution", "Deconvolution"):
        cp = layer.convolution_param
        kernel, _, _, _ = conv_geometry(cp, name)
        cin = need(bottoms[0][1], "input channels")
        group = int(cp.group)
        if cin % group or cp.num_output % group:
            raise ShapeInferenceError(f"layer '{name}': channels {cin}->{cp.num_output} not divisible by group {group}")
        if t == "Convolution":
            shapes = [(int(cp.num_output), cin // group) + kernel]
        else:
            shapes = [(cin, int(cp.num_output) // group) + kernel]
        return shapes + ([(int(cp.num_output),)] if cp.bias_term else [])
    if t == "PReLU":
        return [(1,)] if layer.prelu_param.channel_shared else [(need(bottoms[0][1], "channels"),)]
    if t == "InnerProduct":
        ip = layer.inner_product_param
        axis = _axis(ip.axis, len(bottoms[0]), name)
        k = int(np.prod([need(d, "input size") for d in bottoms[0][axis:]]))
        w = (k, int(ip.num_output)) if ip.transpose else (int(ip.num_output), k)
        return [w] + ([(int(ip.num_output),)] if ip.bias_term else [])
    if t == "BatchNorm":
        c = need(bottoms[0][1], "channels")
        return [(c,), (c,), (1,)]
    if t in ("Scale", "Bias"):
        p = layer.scale_param if t == "Scale" else layer.bias_param
        b0 = bottoms[0]
        axis = _axis(p.axis, len(b0), name)
        if len(bottoms) > 1:
            shape = tuple(need(d, "scale shape") for d in bottoms[1])
            return [shape] if t == "Scale" and p.bias_term else []
        end = len(b0) if p.num_axes == -1 else axis + p.num_axes
        shape = tuple(need(d, "input size") for d in b0[axis:end])
        return [shape, shape] if t == "Scale" and p.bias_term else [shape]
    if t == "Embed":
        ep = layer.embed_param
        return [(int(ep.input_dim), int(ep.num_output))] + ([(int(ep.num_output),)] if ep.bias_term else [])
    if t == "Parameter":
        return [tuple(int(d) for d in layer.parameter_param.shape.dim)]
    return []


def param_shapes(net: caffe_pb2.NetParameter, input_shapes: Optional[Mapping] = None,
                 phase: Optional[int] = None) -> "OrderedDict[str, List[Tuple[int, ...]]]":
    """Expected learnable blob shapes per layer name, in net order (only layers with parameters).

    Caffe's blob order: Convolution [weights OIHW, bias], InnerProduct [weights, bias], PReLU
    [slopes], BatchNorm [mean, variance, scale factor], Scale [scale, (bias)].
    """
    out: "OrderedDict[str, List[Tuple[int, ...]]]" = OrderedDict()

    def collect(layer, bottoms):
        params = _layer_param_shapes(layer, bottoms)
        if params and layer.name not in out:
            out[layer.name] = params

    _propagate(net, input_shapes, phase, collect)
    return out


def count_params(net: caffe_pb2.NetParameter, input_shapes: Optional[Mapping] = None) -> int:
    """Total number of learnable values of ``net``."""
    return int(sum(int(np.prod(s)) for shapes in param_shapes(net, input_shapes).values() for s in shapes))


def count_flops(net: caffe_pb2.NetParameter, input_shapes: Optional[Mapping] = None,
                phase: Optional[int] = None) -> int:
    """Floating-point operations of one forward pass: 2 per multiply-accumulate of every Convolution and
    InnerProduct (``2 x out elements x in channels / group x kernel area``; the bias, activations, pooling
    and BatchNorm are left out, as is usual). Needs known input shapes."""
    total = 0

    def visit(layer, bottoms):
        nonlocal total
        if layer.type == "Convolution":
            cp = layer.convolution_param
            kernel, _, _, _ = conv_geometry(cp, layer.name)
            out = _conv_out(layer, bottoms[0])
            if None in out or bottoms[0][1] is None:
                raise ShapeInferenceError(f"layer '{layer.name}': FLOPs need known shapes, got {bottoms[0]}")
            total += 2 * int(np.prod(out)) * (int(bottoms[0][1]) // int(cp.group)) * kernel[0] * kernel[1]
        elif layer.type == "InnerProduct":
            params = _layer_param_shapes(layer, bottoms)
            total += 2 * int(np.prod(params[0])) * int(bottoms[0][0] or 1)

    _propagate(net, input_shapes, phase, visit)
    return total


# ----------------------------------------------------------------------------------------------
# random weights with Caffe's filler semantics

def _gaussian(rng: np.random.Generator, mean: float, std: float, shape) -> np.ndarray:
    values = rng.standard_normal(shape, dtype=np.float32)   # float32 draws: 2x faster for 26M values
    values *= np.float32(std)
    values += np.float32(mean)
    return values


def fill(filler: Optional[caffe_pb2.FillerParameter], shape: Tuple[int, ...], rng: np.random.Generator,
         default_std: float = 0.01, default_constant: Optional[float] = None) -> np.ndarray:
    """Values for a blob of ``shape`` drawn like Caffe's filler ``filler``.

    Without a filler: the constant ``default_constant`` when given, else gaussian(0, default_std).
    """
    shape = tuple(int(d) for d in shape)
    if filler is None:
        if default_constant is not None:
            return np.full(shape, default_constant, np.float32)
        return _gaussian(rng, 0.0, default_std, shape)
    kind = filler.type
    count = int(np.prod(shape)) if shape else 1
    fan_in = count / shape[0] if shape and shape[0] else count
    fan_out = count / shape[1] if len(shape) > 1 and shape[1] else count
    n = {0: fan_in, 1: fan_out, 2: (fan_in + fan_out) / 2.0}[filler.variance_norm]
    if kind == "constant":
        return np.full(shape, filler.value, np.float32)
    if kind == "gaussian":
        return _gaussian(rng, filler.mean, filler.std, shape)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max, shape).astype(np.float32)
    if kind == "xavier":
        scale = math.sqrt(3.0 / n)
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    if kind == "msra":
        return _gaussian(rng, 0.0, math.sqrt(2.0 / n), shape)
    if kind == "positive_unitball":
        values = rng.uniform(0, 1, (shape[0], max(count // max(shape[0], 1), 1)))
        return (values / values.sum(axis=1, keepdims=True)).reshape(shape).astype(np.float32)
    if kind == "bilinear":
        k = shape[-1]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        x = np.arange(k)
        w1 = 1 - np.abs(x / f - c)
        return np.broadcast_to(np.outer(w1, w1), shape).astype(np.float32).copy()
    raise ShapeInferenceError(f"unknown filler type '{kind}'")


def random_weights(net: caffe_pb2.NetParameter, seed: int = 0, std: float = 0.01,
                   input_shapes: Optional[Mapping] = None) -> "OrderedDict[str, List[np.ndarray]]":
    """Random weights for every learnable layer of ``net`` (tests, demos), shapes from param_shapes.

    Uses the layer's fillers where the prototxt gives them (gaussian, xavier, msra, constant, ...);
    otherwise gaussian(0, std) weights and zero biases. PReLU slopes default to 0.25 and BatchNorm
    to mean 0 / variance 1 / factor 1, as an untrained Caffe layer would hold.
    """
    rng = np.random.default_rng(seed)
    layers = {layer.name: layer for layer in net.layer}
    out: "OrderedDict[str, List[np.ndarray]]" = OrderedDict()
    for name, shapes in param_shapes(net, input_shapes).items():
        layer = layers[name]
        t = layer.type
        if t in ("Convolution", "Deconvolution", "InnerProduct", "Embed"):
            p = {"InnerProduct": layer.inner_product_param, "Embed": layer.embed_param}.get(t, layer.convolution_param)
            wf = p.weight_filler if p.HasField("weight_filler") else None
            bf = p.bias_filler if p.HasField("bias_filler") else None
            blobs = [fill(wf, shapes[0], rng, std)] + [fill(bf, s, rng, std, 0.0) for s in shapes[1:]]
        elif t == "PReLU":
            pf = layer.prelu_param.filler if layer.prelu_param.HasField("filler") else None
            blobs = [fill(pf, shapes[0], rng, std, 0.25)]
        elif t == "BatchNorm":
            blobs = [np.zeros(shapes[0], np.float32), np.ones(shapes[1], np.float32), np.ones((1,), np.float32)]
        elif t == "Scale":
            sp = layer.scale_param
            blobs = [fill(sp.filler if sp.HasField("filler") else None, shapes[0], rng, std, 1.0)]
            blobs += [fill(sp.bias_filler if sp.HasField("bias_filler") else None, s, rng, std, 0.0)
                      for s in shapes[1:]]
        else:
            blobs = [fill(None, s, rng, std) for s in shapes]
        out[name] = blobs
    return out


__all__ = ["ShapeInferenceError", "infer_blob_shapes", "param_shapes", "count_params", "count_flops", "random_weights", "fill",
           "pooled_size", "conv_geometry", "pool_geometry"]
