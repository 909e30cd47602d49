"""Fold BatchNorm (+ Scale) into the preceding Convolution: a deploy net without normalisation layers.

A Convolution whose output goes only through Caffe's ``BatchNorm`` (global statistics) and optionally a
``Scale`` computes, per output channel ``o``::

    z = gamma_o (W_o * x + b_o - mean_o) / sqrt(var_o + eps) + beta_o
    mean = blob0 / f, var = blob1 / f, f = blob2[0] (0 counts as 0, Caffe's rule)

which is the Convolution ``W'_o = a_o W_o``, ``b'_o = a_o (b_o - mean_o) + beta_o`` with
``a_o = gamma_o / sqrt(var_o + eps)`` (docs/compatibility.md §Light models). The folded layer keeps the
Convolution's name and takes the normalisation's top; the BatchNorm and Scale layers disappear, so the
deploy OpenPose loads is plain Convolution / ReLU / Clip / Eltwise / Concat / Pooling. Arithmetic is in
float64, stored as float32.

A pair is folded only when nothing else reads the Convolution's raw output (another consumer would see
the normalised values otherwise); anything else is left as it is.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from . import caffe_pb2


def _readers(net: caffe_pb2.NetParameter, index: int, blob: str) -> List[int]:
    """Indexes of the layers after ``index`` that read the version of ``blob`` written at ``index``."""
    out = []
    for j in range(index + 1, len(net.layer)):
        layer = net.layer[j]
        if blob in layer.bottom:
            out.append(j)
        if blob in layer.top:
            break
    return out


def _fold_plan(net: caffe_pb2.NetParameter) -> List[Tuple[int, int, int]]:
    """(conv, batch norm, scale or -1) layer indexes that can be folded."""
    plan = []
    for i, layer in enumerate(net.layer):
        if layer.type != "Convolution" or len(layer.top) != 1:
            continue
        readers = _readers(net, i, layer.top[0])
        if len(readers) != 1 or net.layer[readers[0]].type != "BatchNorm":
            continue
        bn_index = readers[0]
        bn = net.layer[bn_index]
        if bn.batch_norm_param.HasField("use_global_stats") and not bn.batch_norm_param.use_global_stats:
            continue          # batch statistics: not a fixed affine map
        scale_index = -1
        after = _readers(net, bn_index, bn.top[0])
        if len(after) == 1 and net.layer[after[0]].type == "Scale" and len(net.layer[after[0]].bottom) == 1:
            scale = net.layer[after[0]]
            if scale.scale_param.axis == 1 and scale.scale_param.num_axes == 1:
                scale_index = after[0]
        if len(bn.top) != 1 or (bn.top[0] != layer.top[0] and not _unread_elsewhere(net, i, bn_index)):
            continue
        plan.append((i, bn_index, scale_index))
    return plan


def _unread_elsewhere(net, conv_index, bn_index) -> bool:
    """A BatchNorm that is not in place: the conv's own top must not be read after the BatchNorm either."""
    name = net.layer[conv_index].top[0]
    return not any(name in net.layer[j].bottom for j in range(bn_index + 1, len(net.layer)))


def fold_batch_norm(net: caffe_pb2.NetParameter, weights: Mapping[str, Sequence[np.ndarray]]):
    """``(folded net, folded weights, [conv names folded])``. ``weights`` hold every layer's blobs
    (a caffemodel of ``net``); the inputs are not changed."""
    plan = _fold_plan(net)
    out_weights: "OrderedDict[str, List[np.ndarray]]" = OrderedDict((k, list(v)) for k, v in weights.items())
    drop = set()
    renames: Dict[int, str] = {}
    for conv_i, bn_i, scale_i in plan:
        conv, bn = net.layer[conv_i], net.layer[bn_i]
        w = np.asarray(weights[conv.name][0], np.float64)
        channels = w.shape[0]
        b = (np.asarray(weights[conv.name][1], np.float64).reshape(channels)
             if conv.convolution_param.bias_term and len(weights[conv.name]) > 1 else np.zeros(channels))
        mean, var, factor = (np.asarray(x, np.float64).reshape(-1) for x in weights[bn.name])
        inv = 0.0 if factor[0] == 0 else 1.0 / factor[0]
        mean, var = mean * inv, var * inv
        gamma, beta = np.ones(channels), np.zeros(channels)
        if scale_i >= 0:
            scale = net.layer[scale_i]
            blobs = weights[scale.name]
            gamma = np.asarray(blobs[0], np.float64).reshape(channels)
            if scale.scale_param.bias_term:
                beta = np.asarray(blobs[1], np.float64).reshape(channels)
            drop.add(scale_i)
        a = gamma / np.sqrt(var + float(bn.batch_norm_param.eps))
        out_weights[conv.name] = [(w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32),
                                  (a * (b - mean) + beta).astype(np.float32)]
        for i in (bn_i, scale_i):
            if i >= 0:
                out_weights.pop(net.layer[i].name, None)
        drop.add(bn_i)
        last = net.layer[scale_i] if scale_i >= 0 else bn
        renames[conv_i] = last.top[0]
    folded = caffe_pb2.NetParameter()
    folded.CopyFrom(net)
    del folded.layer[:]
    for i, layer in enumerate(net.layer):
        if i in drop:
            continue
        new = folded.layer.add()
        new.CopyFrom(layer)
        if i in renames:
            new.top[0] = renames[i]
            cp = new.convolution_param
            if not cp.bias_term:
                cp.bias_term = True
                if len(new.param) == 1:
                    new.param.add(lr_mult=2 * new.param[0].lr_mult, decay_mult=0)
                if not cp.HasField("bias_filler"):
                    cp.bias_filler.type = "constant"
    return folded, out_weights, [net.layer[c].name for c, _, _ in plan]


def has_batch_norm(net: caffe_pb2.NetParameter) -> bool:
    return any(layer.type == "BatchNorm" for layer in net.layer)


__all__ = ["fold_batch_norm", "has_batch_norm"]
