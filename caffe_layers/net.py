"""CaffeNet: a ``caffe.NetParameter`` executed as a torch module, with Caffe's net semantics.

* layer selection by ``include``/``exclude`` NetStateRules for a phase, level and stages (``Net::FilterNet``);
* in-place tops (``top == bottom``) and blobs consumed several times (Caffe's implicit splits: the latest
  version of a blob name is what later layers read; autograd sums the gradients as Split does);
* ``loss_weight`` per top (default 1 on the first top of ``*Loss`` layers), ``total_loss``;
* per-parameter ``lr_mult`` / ``decay_mult`` (``param_specs()``), params shared by ``ParamSpec.name``,
  ``lr_mult: 0`` params frozen;
* Caffe's fillers, seeded by ``seed``;
* weights in Caffe's layout: ``caffe_weights()`` and ``load_caffe_weights()`` (copy by layer name, with
  Caffe's blob-count and shape checks; unknown source layers are ignored and reported).

Data layers (``OPData``, ``Data``, ``Input`` and the net-level ``input:`` fields) are not modules: their
tops are the net's inputs (``input_blobs``), with shapes inferred from their parameters (or given).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .layers import (DATA_LAYER_TYPES, LayerConfigError, Shape, UnsupportedLayerError, build_layer,
                     enum_name, is_loss_type)

from openpose_train.common.errors import OpenPoseTrainError

PHASES = ("TRAIN", "TEST")


class NetDefinitionError(OpenPoseTrainError, ValueError):
    """A net that cannot be built (unknown bottom, duplicate layer, bad input). Names the layer / blob."""


class WeightShapeError(OpenPoseTrainError, ValueError):
    """A caffemodel blob whose count or shape does not match the net. Names the layer and both shapes."""


class MissingWeightsError(OpenPoseTrainError, ValueError):
    """Layers with parameters that the weights do not cover (when ``allow_missing=False``)."""


class ParamEntry(NamedTuple):
    """One learnable blob, as the solver sees it (Caffe's ``ParamSpec``)."""

    param: nn.Parameter
    lr_mult: float
    decay_mult: float
    layer_name: str
    blob_index: int


@dataclass
class WeightLoadReport:
    """What ``load_caffe_weights`` did, by layer name (Caffe's ``CopyTrainedLayersFrom`` semantics)."""

    matched: List[str] = field(default_factory=list)        # copied
    unmatched: List[str] = field(default_factory=list)      # in the weights, not in the net (ignored)
    missing: List[str] = field(default_factory=list)        # net layers with blobs not in the weights
    reinitialised: List[str] = field(default_factory=list)  # shape mismatch, kept their filler init

    def summary(self) -> str:
        text = f"copied {len(self.matched)} layers, ignored {len(self.unmatched)} source layers, " \
               f"{len(self.missing)} net layers keep their initialisation"
        if self.reinitialised:
            text += f", {len(self.reinitialised)} re-initialised on shape mismatch ({', '.join(self.reinitialised)})"
        return text


@dataclass
class _Step:
    name: str
    type: str
    module: Optional[nn.Module]
    bottoms: Tuple[str, ...]
    tops: Tuple[str, ...]
    detach: Tuple[bool, ...]          # propagate_down: false
    loss_weights: Tuple[float, ...]   # per top


# ---------------------------------------------------------------------------------------------------------
# layer filtering (Caffe's Net::StateMeetsRule / FilterNet)


def state_meets_rule(rule, phase: str, level: int, stages: Sequence[str]) -> bool:
    """Whether a NetStateRule holds for the given net state."""
    if rule.HasField("phase") and enum_name(rule, "phase") != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(layer, phase: str, level: int = 0, stages: Sequence[str] = ()) -> bool:
    """Caffe's FilterNet: with include rules, any must hold; otherwise no exclude rule may hold."""
    if len(layer.include) and len(layer.exclude):
        raise NetDefinitionError(f"layer '{layer.name}' has both include and exclude rules")
    if len(layer.include):
        return any(state_meets_rule(r, phase, level, stages) for r in layer.include)
    return not any(state_meets_rule(r, phase, level, stages) for r in layer.exclude)


# ---------------------------------------------------------------------------------------------------------
# input shapes of data layers


def _blob_shape(shape_msg) -> Shape:
    return tuple(int(d) for d in shape_msg.dim)


def _op_data_model_strings(layer) -> List[str]:
    tp = layer.op_transform_param
    names = []
    for field_name in ("models", "model"):
        if field_name in tp.DESCRIPTOR.fields_by_name and tp.HasField(field_name):
            names += [n for n in str(getattr(tp, field_name)).split(";") if n]
    return names


def _check_label_slices(layer, bottom_shapes, top_shapes, data_layers) -> None:
    """Where a model-string error first shows, say so: an OPData label blob is its C weight channels then
    its C target channels (docs/labels.md), so a Slice of it must cut at C; a cut elsewhere (or a top
    with a negative size) means the layer's model string is another model's than the net was generated
    for. Any other layer with a negative top size is refused here too, instead of at a later layer."""
    for bottom, bshape in zip(layer.bottom, bottom_shapes):
        source = next((d for d in data_layers if d.type == "OPData" and bottom in list(d.top)[1:2]), None)
        channels = bshape[1] if len(bshape) > 1 else None
        if source is None or layer.type != "Slice" or channels is None or not layer.slice_param.slice_point:
            continue
        points = list(layer.slice_param.slice_point)
        if channels % 2 == 0 and channels // 2 in points:
            continue
        models = ";".join(_op_data_model_strings(source))
        raise LayerConfigError(
            f"layer '{source.name}' (OPData): its model string '{models}' renders {channels} label channels "
            f"({channels // 2} weights + {channels // 2} targets), but layer '{layer.name}' (Slice) cuts "
            f"'{bottom}' at {', '.join(map(str, points))} (a net generated for "
            f"{2 * points[min(1, len(points) - 1)]} label channels): is the model string the one this net was "
            f"generated for?")
    for top, shape in zip(layer.top, top_shapes):
        if any(d is not None and d < 0 for d in shape):
            raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): top '{top}' would have the shape "
                                   f"{tuple(shape)} from bottoms {', '.join(str(tuple(b)) for b in bottom_shapes)}")


def _op_data_label_channels(layer) -> Optional[int]:
    """Label channels of an OPData layer from the model registry (2 x net_output channels)."""
    tp = layer.op_transform_param
    names = _op_data_model_strings(layer)
    if not names:
        return None
    from openpose_train.generator.registry import UnknownModelError, get_training_variant
    try:
        model, _ = get_training_variant(names[0])
    except UnknownModelError:  # the layer refuses it when it is built; the shape stays unknown here
        return None
    channels = model.label_channels
    if "add_distance" in tp.DESCRIPTOR.fields_by_name and tp.add_distance:
        channels += 2 * 2 * model.num_parts
    return channels


def data_layer_shapes(layer) -> List[Shape]:
    """Top shapes of a data layer (None where the layer's parameters do not say)."""
    if layer.type == "Input":
        shapes = [_blob_shape(s) for s in layer.input_param.shape]
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        if len(shapes) != len(layer.top):
            raise NetDefinitionError(f"layer '{layer.name}' (Input): {len(shapes)} shapes for {len(layer.top)} tops")
        return shapes
    batch = int(layer.data_param.batch_size) if layer.HasField("data_param") else None
    if layer.type in ("OPData", "OPVideo") and layer.HasField("op_transform_param"):
        tp = layer.op_transform_param
        cy, cx, stride = int(tp.crop_size_y), int(tp.crop_size_x), int(tp.stride)
        shapes = [(batch, 3, cy, cx)]
        if len(layer.top) > 1:
            shapes.append((batch, _op_data_label_channels(layer), cy // stride, cx // stride))
        return shapes + [(batch, None, None, None)] * (len(layer.top) - len(shapes))
    return [(batch, None, None, None)] * len(layer.top)


def _net_level_inputs(net_param) -> "OrderedDict[str, Shape]":
    inputs = OrderedDict()
    names = list(net_param.input)
    if not names:
        return inputs
    if len(net_param.input_shape):
        if len(net_param.input_shape) not in (1, len(names)):
            raise NetDefinitionError(f"{len(net_param.input_shape)} input_shape entries for {len(names)} inputs")
        for i, name in enumerate(names):
            inputs[name] = _blob_shape(net_param.input_shape[min(i, len(net_param.input_shape) - 1)])
    elif len(net_param.input_dim):
        dims = [int(d) for d in net_param.input_dim]
        if len(dims) != 4 * len(names):
            raise NetDefinitionError(f"{len(dims)} input_dim values for {len(names)} inputs (need 4 each)")
        for i, name in enumerate(names):
            inputs[name] = tuple(dims[4 * i:4 * i + 4])
    else:
        for name in names:
            inputs[name] = (None, None, None, None)
    return inputs


def _shape_text(shape) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)


# ---------------------------------------------------------------------------------------------------------
# the net


class CaffeNet(nn.Module):
    """A Caffe NetParameter as a torch module.

    ``CaffeNet(net_param, phase="TRAIN", stages=(), level=0, input_shapes=None, seed=None)``; ``net_param``
    may also be a prototxt path. ``input_shapes`` overrides inferred input blob shapes (``{blob: shape}``),
    e.g. when an OPData label's channel count cannot be derived. ``forward(image=..., label=...)`` (or one
    dict) returns ``{blob name: tensor}`` with the final version of every blob.
    """

    def __init__(self, net_param, phase: str = "TRAIN", stages: Sequence[str] = (), level: int = 0,
                 input_shapes: Optional[Mapping[str, Sequence[Optional[int]]]] = None,
                 seed: Optional[int] = None):
        super().__init__()
        if isinstance(net_param, (str, Path)):
            from .caffe_io import read_net_prototxt
            net_param = read_net_prototxt(str(net_param))
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if len(net_param.layers):
            raise UnsupportedLayerError(f"net '{net_param.name}' uses the V1 'layers' format; "
                                        f"upgrade it to 'layer' (Caffe's upgrade_net_proto_text)")
        self.name = net_param.name
        self.phase, self.stages, self.level = phase, tuple(stages), int(level)
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        overrides = {k: tuple(v) for k, v in (input_shapes or {}).items()}

        self.input_blobs: "OrderedDict[str, Shape]" = OrderedDict()
        self.data_layers = []
        self._steps: List[_Step] = []
        self.layers = nn.ModuleList()
        shapes: Dict[str, Shape] = {}
        producers: Dict[str, str] = {}
        shared: Dict[str, Tuple[nn.Parameter, str]] = {}
        self._param_entries: List[ParamEntry] = []
        self._layer_modules: "OrderedDict[str, nn.Module]" = OrderedDict()
        seen_names = set()

        for name, shape in _net_level_inputs(net_param).items():
            self.input_blobs[name] = overrides.get(name, shape)
            shapes[name] = self.input_blobs[name]
            producers[name] = "input"

        for layer in net_param.layer:
            if not layer_included(layer, phase, self.level, self.stages):
                continue
            if layer.name in seen_names:
                raise NetDefinitionError(f"duplicate layer name '{layer.name}'")
            seen_names.add(layer.name)
            if layer.type in DATA_LAYER_TYPES:
                self.data_layers.append(layer)
                for top, shape in zip(layer.top, data_layer_shapes(layer)):
                    self.input_blobs[top] = overrides.get(top, shape)
                    shapes[top] = self.input_blobs[top]
                    producers[top] = layer.name
                continue
            for bottom in layer.bottom:
                if bottom not in shapes:
                    raise NetDefinitionError(f"layer '{layer.name}' ({layer.type}): unknown bottom blob "
                                             f"'{bottom}' (no earlier layer produces it)")
            bottom_shapes = [shapes[b] for b in layer.bottom]
            try:
                module = build_layer(layer, bottom_shapes, generator)
                top_shapes = module.top_shapes(bottom_shapes)
            except (UnsupportedLayerError, LayerConfigError):
                raise
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): {exc}") from exc
            if len(top_shapes) != len(layer.top):
                raise NetDefinitionError(f"layer '{layer.name}' ({layer.type}) produces {len(top_shapes)} "
                                         f"tops, the prototxt names {len(layer.top)}")
            _check_label_slices(layer, bottom_shapes, top_shapes, self.data_layers)
            for top, shape in zip(layer.top, top_shapes):
                shapes[top] = shape
                producers[top] = layer.name
            self._register_params(layer, module, shared)
            self.layers.append(module)
            self._layer_modules[layer.name] = module
            weights = list(layer.loss_weight)
            if not weights and is_loss_type(layer.type) and len(layer.top):
                weights = [1.0]
            weights = tuple(float(w) for w in weights) + (0.0,) * (len(layer.top) - len(weights))
            detach = tuple(not bool(p) for p in layer.propagate_down) or (False,) * len(layer.bottom)
            self._steps.append(_Step(layer.name, layer.type, module, tuple(layer.bottom), tuple(layer.top),
                                     detach, weights))

        self.blob_shapes = shapes
        # Caffe's net outputs: blobs still "available" after every layer consumed its bottoms
        available = OrderedDict((name, True) for name in self.input_blobs)
        for step in self._steps:
            for b in step.bottoms:
                available.pop(b, None)
            for t in step.tops:
                available[t] = True
        self.output_blobs = list(available)
        # blob names whose final read (or final write, if never read again) happens at step i
        last = {}
        for i, step in enumerate(self._steps):
            for name in step.bottoms + step.tops:
                last[name] = i
        self._last_use: List[List[str]] = [[] for _ in self._steps]
        for name, i in last.items():
            self._last_use[i].append(name)
        self.loss_blobs: List[Tuple[str, float]] = [
            (top, w) for step in self._steps for top, w in zip(step.tops, step.loss_weights) if w != 0.0]
        self.autocast_dtype: Optional[torch.dtype] = None
        self.channels_last = False
        self.train(phase == "TRAIN")

    # --- parameters --------------------------------------------------------------------------------------
    def _register_params(self, layer, module, shared):
        """Every blob of the layer is one of Caffe's ``learnable_params`` (its solverstate holds one history
        blob each). Statistics blobs (BatchNorm's mean, variance, factor: buffers here) are entries with
        ``lr_mult`` 0, as Caffe's BatchNormLayer forces, so our solverstates line up with Caffe's."""
        specs = list(layer.param)
        blobs = module.blobs() if hasattr(module, "blobs") else []
        for i, blob in enumerate(blobs):
            spec = specs[i] if i < len(specs) else None
            if not isinstance(blob, nn.Parameter):
                if spec is not None and float(spec.lr_mult) != 0.0:
                    raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): blob {i} holds statistics, "
                                           f"its param lr_mult must be 0, got {spec.lr_mult:g} (as Caffe requires)")
                decay_mult = float(spec.decay_mult) if spec is not None else 1.0
                self._param_entries.append(ParamEntry(blob, 0.0, decay_mult, layer.name, i))
                continue
            lr_mult = float(spec.lr_mult) if spec is not None else 1.0
            decay_mult = float(spec.decay_mult) if spec is not None else 1.0
            share_name = spec.name if spec is not None and spec.name else ""
            if share_name and share_name in shared:
                owner, owner_layer = shared[share_name]
                try:
                    module.share_blob(i, owner)
                except LayerConfigError as exc:
                    raise LayerConfigError(f"{exc} (param '{share_name}' owned by layer '{owner_layer}')") from exc
                continue
            param = module.blobs()[i]
            if lr_mult == 0.0:
                param.requires_grad_(False)
            if share_name:
                shared[share_name] = (param, layer.name)
            self._param_entries.append(ParamEntry(param, lr_mult, decay_mult, layer.name, i))

    def param_specs(self) -> List[ParamEntry]:
        """Every learnable blob once (shared params under their owner): (param, lr_mult, decay_mult,
        layer_name, blob_index), in Caffe's ``learnable_params`` order."""
        return list(self._param_entries)

    def layer_names(self) -> List[str]:
        return [s.name for s in self._steps]

    def layer_module(self, name: str) -> nn.Module:
        return self._layer_modules[name]

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, *args, **inputs) -> Dict[str, torch.Tensor]:
        if args:
            if len(args) == 1 and isinstance(args[0], Mapping):
                inputs = {**args[0], **inputs}
            else:
                raise TypeError("CaffeNet.forward takes input blobs by name (keywords or one dict)")
        return self.run(inputs)

    def run(self, inputs: Mapping[str, torch.Tensor], keep: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
        """Forward pass. Returns every blob (final versions), or with ``keep`` only those blobs: the
        others are released as soon as their last consumer ran (lower peak memory for inference)."""
        blobs: Dict[str, torch.Tensor] = {}
        for name in self.input_blobs:
            if name not in inputs:
                raise NetDefinitionError(f"net input blob '{name}' was not given "
                                         f"(inputs: {', '.join(self.input_blobs)})")
            x = inputs[name]
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            blobs[name] = x
        for name, value in inputs.items():
            blobs.setdefault(name, value)
        keep = None if keep is None else set(keep)
        if keep is not None and not keep <= set(self.blob_shapes):
            raise NetDefinitionError(f"unknown blob(s) to keep: {', '.join(sorted(keep - set(self.blob_shapes)))}")
        ctx = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            device_type = next((t.device.type for t in blobs.values() if torch.is_tensor(t)), "cpu")
            ctx = torch.autocast(device_type, dtype=self.autocast_dtype)
        with ctx:
            for i, step in enumerate(self._steps):
                bottoms = [blobs[b].detach() if d else blobs[b] for b, d in zip(step.bottoms, step.detach)]
                tops = step.module(*bottoms)
                for name, value in zip(step.tops, tops):
                    blobs[name] = value
                if keep is not None:
                    del bottoms, tops
                    for name in self._last_use[i]:
                        if name not in keep:
                            blobs.pop(name, None)
        if keep is not None:
            return {name: blobs[name] for name in keep if name in blobs}
        return blobs

    def total_loss(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum of loss_weight x blob (summed), Caffe's objective."""
        total = None
        for name, weight in self.loss_blobs:
            term = outputs[name].float().sum()
            if weight != 1.0:
                term = term * weight
            total = term if total is None else total + term
        if total is None:
            raise NetDefinitionError(f"net '{self.name}' ({self.phase}) has no loss blobs")
        return total

    def shape_summary(self) -> str:
        """One line per blob: name and inferred shape (``?`` unknown), as Caffe logs 'Top shape'."""
        return "\n".join(f"{name}: {_shape_text(shape)}" for name, shape in self.blob_shapes.items())

    # --- weights -----------------------------------------------------------------------------------------
    def caffe_weights(self) -> "OrderedDict[str, List[np.ndarray]]":
        """Layer name -> blobs as float32 arrays in Caffe's order and shape (layers without blobs omitted)."""
        out = OrderedDict()
        for step in self._steps:
            blobs = step.module.blobs()
            if blobs:
                out[step.name] = [b.detach().float().cpu().numpy().copy() for b in blobs]
        return out

    def load_caffe_weights(self, weights, allow_missing: bool = True,
                           reinit_on_shape_mismatch: bool = False) -> WeightLoadReport:
        """Copy blobs by layer name from a caffemodel path, a NetParameter, or {layer: [arrays]}.

        Like Caffe's CopyTrainedLayersFrom: source layers unknown to the net are ignored (``unmatched``),
        a blob-count or shape mismatch raises WeightShapeError naming the layer and both shapes (unless
        ``reinit_on_shape_mismatch``: the layer keeps its initialisation and is reported); legacy 4-D
        shapes (1,1,N,K) are accepted for the same array. Net layers not covered are ``missing``."""
        source = weights_to_dict(weights)
        report = WeightLoadReport()
        for name, arrays in source.items():
            module = self._layer_modules.get(name)
            if module is None or not module.blobs():
                report.unmatched.append(name)
                continue
            targets = module.blobs()
            if len(arrays) != len(targets):
                if reinit_on_shape_mismatch:
                    report.reinitialised.append(name)
                    continue
                raise WeightShapeError(f"layer '{name}': the weights have {len(arrays)} blobs, the net layer "
                                       f"has {len(targets)} ({', '.join(_shape_text(t.shape) for t in targets)})")
            converted = []
            mismatch = None
            for i, (arr, target) in enumerate(zip(arrays, targets)):
                arr = np.asarray(arr, dtype=np.float32)
                ok = _compatible_shape(arr.shape, tuple(target.shape))
                if not ok:
                    mismatch = (i, arr.shape, tuple(target.shape))
                    break
                converted.append(arr.reshape(tuple(target.shape)))
            if mismatch is not None:
                if reinit_on_shape_mismatch:
                    report.reinitialised.append(name)
                    continue
                i, src_shape, dst_shape = mismatch
                raise WeightShapeError(f"layer '{name}' blob {i}: shape mismatch, weights have "
                                       f"{_shape_text(src_shape)}, the net expects {_shape_text(dst_shape)}")
            for i, arr in enumerate(converted):
                module.set_blob(i, arr)
            report.matched.append(name)
        report.missing = [s.name for s in self._steps if s.module.blobs() and s.name not in source]
        if report.missing and not allow_missing:
            raise MissingWeightsError(f"the weights lack {len(report.missing)} layers of the net: "
                                      f"{', '.join(report.missing[:20])}{' ...' if len(report.missing) > 20 else ''}")
        return report


def _compatible_shape(src: Tuple[int, ...], dst: Tuple[int, ...]) -> bool:
    if tuple(src) == tuple(dst):
        return True

    def strip(s):
        s = list(s)
        while s and s[0] == 1:
            s.pop(0)
        return tuple(s)
    # Caffe's legacy num/channels/height/width blobs (e.g. a bias stored as 1x1x1xN)
    return int(np.prod(src)) == int(np.prod(dst)) and strip(src) == strip(dst)


def weights_to_dict(weights) -> "OrderedDict[str, List[np.ndarray]]":
    """{layer: [arrays]} from a caffemodel path, a NetParameter with blobs, or a mapping."""
    if isinstance(weights, Mapping):
        return OrderedDict((k, list(v)) for k, v in weights.items())
    if isinstance(weights, (str, Path)):
        weights = _read_caffemodel(Path(weights))
        if isinstance(weights, Mapping):
            return OrderedDict((k, list(v)) for k, v in weights.items())
    if hasattr(weights, "layer"):
        out = OrderedDict()
        for layer in list(weights.layer) + list(getattr(weights, "layers", [])):
            if len(layer.blobs):
                out[layer.name] = [blob_to_array(b) for b in layer.blobs]
        return out
    raise TypeError(f"cannot read weights from {type(weights).__name__}")


def _read_caffemodel(path: Path):
    """The project's reader (caffe_io) when present, else a plain binary NetParameter parse."""
    try:
        from .caffe_io import read_caffemodel
    except ImportError:
        read_caffemodel = None
    if read_caffemodel is not None:
        return read_caffemodel(str(path))
    from google.protobuf.message import DecodeError
    from . import caffe_pb2
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise ValueError(f"{path}: cannot read the caffemodel: {exc}") from exc
    return net


def blob_to_array(blob) -> np.ndarray:
    """A caffe.BlobProto as a float32 array (shape, or the legacy num/channels/height/width)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    data = np.asarray(blob.data, dtype=np.float32) if len(blob.data) else np.asarray(blob.double_data, np.float32)
    return data.reshape(shape)


# ---------------------------------------------------------------------------------------------------------
# precision / layout


def configure_precision(net: CaffeNet, device=None, bf16: bool = False, channels_last: bool = False) -> CaffeNet:
    """Move ``net`` to ``device`` and choose its numerics: bf16 autocast (losses stay float32; params and
    solver state stay float32) and/or channels_last activations. Returns the net.

    Without bf16 a CUDA net computes in true float32: cuDNN's TF32 convolutions (torch's default on
    Ampere and newer GPUs) are switched off, because their 10-bit mantissa moved the light preset's
    gradients by more than 1 % from the CPU engine's on an H200 (docs/compatibility.md §GPU numerics).
    bf16 is the speed option."""
    if device is not None:
        net.to(device)
        if torch.device(device).type == "cuda":
            torch.backends.cudnn.allow_tf32 = bool(bf16)
    net.autocast_dtype = torch.bfloat16 if bf16 else None
    net.channels_last = bool(channels_last)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    return net
