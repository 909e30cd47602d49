"""Caffe file formats: text prototxt, binary caffemodel and solverstate.

Text files go through protobuf's ``text_format`` with our ``caffe.proto``. Binary weight files are
written and read with a small hand-written wire-format codec, because filling ``BlobProto.data``
through protobuf's Python API costs seconds for a 26M-parameter net: blobs are written as packed
little-endian float32 bytes straight from numpy, and read back with ``np.frombuffer``. The byte
layout is exactly the one protobuf itself produces for the same message (fields in number order),
so ``caffe_pb2.NetParameter.FromString`` reads our files and re-serialises them to identical bytes.

Legacy OPData fields. The old training prototxts of the train repo (``experimental_models/body_25``,
``1_25BBkg``) use OPTransformationParameter fields that today's fork proto no longer has. They are
mapped on reading (``LEGACY_OP_TRANSFORM_FIELDS``), and each mapping is logged:

==========================  ===========================================================
old field                   today's field
==========================  ===========================================================
max_rotate_degree: 45.0     max_degree_rotations: "45.0"
scale_min: X                scale_mins: "X"
scale_max: X                scale_maxs: "X"
number_max_occlusions: 2    number_max_occlusions: "2" (int literal became a string)
model: "M"                  models: "M" (plus the secondary model, see below)
source_secondary: "S2"      sources: "<data_param.source>;S2"
model_secondary: "M2"       models: "M;M2"
prob_secondary: p           probabilities: "<1-p>;p"
==========================  ===========================================================
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from google.protobuf import text_format

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.common.files import atomic_file
from openpose_train.generator.output_paths import make_output_folder

from . import caffe_pb2

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Weights = "OrderedDict[str, List[np.ndarray]]"


class CaffeFormatError(OpenPoseTrainError, ValueError):
    """A Caffe file (prototxt, caffemodel, solverstate) cannot be read or written."""


class PrototxtError(CaffeFormatError):
    """A prototxt syntax or schema error; the message starts with ``file:line:column:``."""


class CaffemodelError(CaffeFormatError):
    """A binary caffemodel / solverstate is corrupt or uses an unsupported encoding."""


class WeightsMismatchError(CaffeFormatError):
    """Weights do not match a net (missing layer, wrong blob count or shape); names the layer."""


# ----------------------------------------------------------------------------------------------
# atomic writes (docs/architecture.md §Writing files)

def _atomic_write(path: PathLike, write_fn, binary: bool = True) -> None:
    """Write through ``write_fn(file)`` to a temporary file next to ``path``, then rename; the folder
    is created first."""
    make_output_folder(Path(path).parent)
    with atomic_file(path, binary=binary) as f:
        write_fn(f)


# ----------------------------------------------------------------------------------------------
# text prototxt

# old OPTransformationParameter field -> (today's field, how the value is rewritten)
LEGACY_OP_TRANSFORM_FIELDS = {
    "max_rotate_degree": "max_degree_rotations",
    "scale_min": "scale_mins",
    "scale_max": "scale_maxs",
    "number_max_occlusions": "number_max_occlusions",
    "model": "models",
    "source_secondary": "sources",
    "model_secondary": "models",
    "prob_secondary": "probabilities",
}
_OP_BLOCK = re.compile(r"\bop_transform_param\s*\{([^{}]*)\}")
_LEGACY_LINE = re.compile(r"(?m)^([ \t]*)(max_rotate_degree|scale_min|scale_max|number_max_occlusions|model|"
                          r"source_secondary|model_secondary|prob_secondary)\s*:\s*(\"[^\"\n]*\"|[^\s#]+)[^\n]*$")


def _strip_legacy_op_fields(text: str) -> Tuple[str, List[Dict[str, str]]]:
    """Blank out legacy op_transform_param fields (keeping line/column positions) and return them.

    Returns the cleaned text and, per ``op_transform_param`` block in file order, ``{old field: value}``.
    ``number_max_occlusions`` counts as legacy only when its value is an unquoted integer.
    """
    found: List[Dict[str, str]] = []

    def fix_block(match: "re.Match[str]") -> str:
        legacy: Dict[str, str] = {}

        def blank(m: "re.Match[str]") -> str:
            name, value = m.group(2), m.group(3)
            if name == "number_max_occlusions" and value.startswith('"'):
                return m.group(0)
            legacy[name] = value[1:-1] if value.startswith('"') else value
            return " " * len(m.group(0))

        body = _LEGACY_LINE.sub(blank, match.group(1))
        found.append(legacy)
        return match.group(0)[: match.start(1) - match.start(0)] + body + "}"

    return _OP_BLOCK.sub(fix_block, text), found


def _apply_legacy_op_fields(net: caffe_pb2.NetParameter, blocks: List[Dict[str, str]], path) -> None:
    """Map legacy OPData fields (collected by ``_strip_legacy_op_fields``) onto today's fields."""
    layers = [layer for layer in net.layer if layer.HasField("op_transform_param")]
    for layer, legacy in zip(layers, blocks):
        if not legacy:
            continue
        op = layer.op_transform_param
        for old, new in (("max_rotate_degree", "max_degree_rotations"), ("scale_min", "scale_mins"),
                         ("scale_max", "scale_maxs"), ("number_max_occlusions", "number_max_occlusions")):
            if old in legacy:
                setattr(op, new, legacy[old])
        models = [legacy["model"]] if "model" in legacy else ([op.models] if op.HasField("models") else [])
        if "source_secondary" in legacy:
            p = float(legacy.get("prob_secondary", "0"))
            primary = layer.data_param.source or op.sources
            op.sources = ";".join([primary, legacy["source_secondary"]])
            models.append(legacy.get("model_secondary", models[0] if models else "COCO"))
            op.probabilities = f"{1.0 - p:.12g};{p:.12g}"
        if models:
            op.models = ";".join(models)
        log.info("%s: layer '%s': legacy op_transform_param fields %s mapped to today's fields "
                 "(see caffe_io.LEGACY_OP_TRANSFORM_FIELDS)", path, layer.name, sorted(legacy))


def _read_text(path: PathLike) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise PrototxtError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise PrototxtError(f"{path}: not a text prototxt ({e.reason} at byte {e.start})") from None


def parse_prototxt(text: str, message, path: PathLike = "<string>", upgrade_legacy: bool = True):
    """Parse prototxt ``text`` into the protobuf ``message`` (modified and returned).

    A syntax or schema error raises PrototxtError("path:line:column: message").
    """
    blocks: List[Dict[str, str]] = []
    if upgrade_legacy and isinstance(message, caffe_pb2.NetParameter) and "op_transform_param" in text:
        text, blocks = _strip_legacy_op_fields(text)
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        msg = re.sub(r"^\d+:\d+ : ", "", str(e))
        where = f"{path}:{line}:{col}" if line is not None else f"{path}"
        raise PrototxtError(f"{where}: {msg}") from None
    if any(blocks):
        _apply_legacy_op_fields(message, blocks, path)
    return message


# Caffe's UpgradeV1LayerType: V1LayerParameter.LayerType enum name -> LayerParameter.type string
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
    "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


def upgrade_v1_net(net: caffe_pb2.NetParameter, path: PathLike = "<net>") -> caffe_pb2.NetParameter:
    """A copy of ``net`` with V1 ``layers`` converted to ``layer`` (Caffe's UpgradeV1Net).

    Types become strings, ``blobs_lr``/``weight_decay``/``param`` become ParamSpec entries, and the
    ``*_param`` messages (same types in both formats) are copied. V0 layers are refused.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if not len(net.layers):
        return out
    if len(net.layer):
        raise PrototxtError(f"{path}: net mixes the V1 'layers' and the current 'layer' field")
    out.ClearField("layers")
    target_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for old in net.layers:
        if old.HasField("layer"):
            raise PrototxtError(f"{path}: layer '{old.name or old.layer.name}' uses the V0 format; "
                                f"upgrade it with Caffe's upgrade_net_proto_text")
        new = out.layer.add()
        for fd, value in old.ListFields():
            if fd.name == "type":
                new.type = V1_LAYER_TYPES.get(caffe_pb2.V1LayerParameter.LayerType.Name(value), "")
            elif fd.name in ("param", "blob_share_mode", "blobs_lr", "weight_decay"):
                for i, v in enumerate(value):
                    while len(new.param) <= i:
                        new.param.add()
                    spec = new.param[i]
                    if fd.name == "param":
                        spec.name = v
                    elif fd.name == "blob_share_mode":
                        spec.share_mode = v
                    elif fd.name == "blobs_lr":
                        spec.lr_mult = v
                    else:
                        spec.decay_mult = v
            elif fd.name in target_fields:
                target = getattr(new, fd.name)
                if fd.is_repeated:
                    target.extend(value)
                elif fd.type == fd.TYPE_MESSAGE:
                    target.CopyFrom(value)
                else:
                    setattr(new, fd.name, value)
    log.info("%s: V1 'layers' upgraded to 'layer' (%d layers)", path, len(out.layer))
    return out


def read_net_prototxt(path: PathLike, upgrade_legacy: bool = True) -> caffe_pb2.NetParameter:
    """Read a text NetParameter (deploy or training prototxt).

    ``upgrade_legacy`` maps the old OPData fields (module docstring) to today's fields and converts
    V1 ``layers`` to ``layer`` (upgrade_v1_net), as Caffe does when it reads a net.
    """
    net = parse_prototxt(_read_text(path), caffe_pb2.NetParameter(), path, upgrade_legacy)
    return upgrade_v1_net(net, path) if upgrade_legacy and len(net.layers) else net


def read_solver_prototxt(path: PathLike) -> caffe_pb2.SolverParameter:
    """Read a text SolverParameter (``pose_solver.prototxt``)."""
    return parse_prototxt(_read_text(path), caffe_pb2.SolverParameter(), path)


def prototxt_string(msg) -> str:
    """Caffe-style text format of a message (2-space indent, ``name {`` blocks)."""
    return text_format.MessageToString(msg)


def write_prototxt(msg, path: PathLike) -> None:
    """Write a message as a text prototxt (atomically: temporary file + rename)."""
    text = prototxt_string(msg)
    _atomic_write(path, lambda f: f.write(text), binary=False)


# ----------------------------------------------------------------------------------------------
# protobuf wire format: the few pieces the caffemodel codec needs

def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64/int32 negatives are 10-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field_number: int, wire_type: int) -> bytes:
    return _varint((field_number << 3) | wire_type)


def _read_varint(buf, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffemodelError("malformed varint")


def wire_fields(buf, start: int, end: int):
    """Yield (field_number, wire_type, value) of a message in buf[start:end].

    ``value`` is the integer for varint fields and (begin, end) for length-delimited ones.
    """
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value = (pos, pos + length)
            pos += length
        elif wire == 5:
            value = (pos, pos + 4)
            pos += 4
        elif wire == 1:
            value = (pos, pos + 8)
            pos += 8
        else:
            raise CaffemodelError(f"unsupported wire type {wire} (field {number})")
        if pos > end:
            raise CaffemodelError("truncated message")
        yield number, wire, value


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


# ----------------------------------------------------------------------------------------------
# BlobProto codec

def _blob_chunks(array) -> Tuple[List, int]:
    """BlobProto bytes of ``array`` as chunks (no copy of the data) and their total length.

    Field order as protobuf writes it: data (5, packed float32), then shape (7).
    """
    a = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(_varint(int(d)) for d in a.shape)
    shape_msg = (_tag(1, 2) + _varint(len(dims)) + dims) if dims else b""
    chunks: List = []
    if a.size:
        chunks += [_tag(5, 2) + _varint(a.nbytes), memoryview(a.reshape(-1)).cast("B")]
    chunks.append(_tag(7, 2) + _varint(len(shape_msg)) + shape_msg)
    return chunks, sum(len(c) for c in chunks)


def _packed_varints(buf, start: int, end: int) -> List[int]:
    out, pos = [], start
    while pos < end:
        v, pos = _read_varint(buf, pos)
        out.append(v)
    return out


def _decode_blob(buf, start: int, end: int, where: str) -> np.ndarray:
    """A BlobProto in buf[start:end] as a float32 array with its shape (or legacy 4-D shape)."""
    dims: Optional[List[int]] = None
    legacy = [0, 0, 0, 0]
    data = None
    loose: List[float] = []   # unpacked floats (never written by Caffe, but legal protobuf)
    for number, wire, value in wire_fields(buf, start, end):
        if number == 5 and wire == 2:
            s, e = value
            if (e - s) % 4:
                raise CaffemodelError(f"{where}: data field of {e - s} bytes is not a float32 array")
            data = np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=s)
        elif number == 5 and wire == 5:
            loose.append(float(np.frombuffer(buf, "<f4", 1, value[0])[0]))
        elif number == 8 and wire == 2 and data is None:
            s, e = value
            data = np.frombuffer(buf, dtype="<f8", count=(e - s) // 8, offset=s)
        elif number == 7 and wire == 2:
            dims = []
            for n2, w2, v2 in wire_fields(buf, *value):
                if n2 == 1:
                    dims += _packed_varints(buf, *v2) if w2 == 2 else [v2]
        elif 1 <= number <= 4 and wire == 0:
            legacy[number - 1] = _signed32(value)
    if data is None:
        data = np.asarray(loose, dtype=np.float32)
    if dims is None:
        dims = legacy if any(legacy) else [data.size]
    count = int(np.prod(dims, dtype=np.int64))
    if count != data.size:
        raise CaffemodelError(f"{where}: shape {tuple(dims)} needs {count} values, the blob holds {data.size}")
    return data.astype(np.float32).reshape(dims)  # astype copies: aligned, writable, owns its memory


# ----------------------------------------------------------------------------------------------
# caffemodel

def _split_layer_bytes(layer: caffe_pb2.LayerParameter) -> Tuple[bytes, bytes]:
    """Serialised fields of ``layer`` before and after ``blobs`` (7), blobs themselves left out."""
    head, tail = caffe_pb2.LayerParameter(), caffe_pb2.LayerParameter()
    head.CopyFrom(layer)
    tail.CopyFrom(layer)
    for fd, _ in layer.ListFields():
        (tail if fd.number < 7 else head).ClearField(fd.name)
    head.ClearField("blobs")
    tail.ClearField("blobs")
    return head.SerializeToString(), tail.SerializeToString()


def _layer_chunks(layer: caffe_pb2.LayerParameter, blobs: Sequence[np.ndarray]) -> Tuple[List, int]:
    head, tail = _split_layer_bytes(layer)
    chunks: List = [head]
    for array in blobs:
        blob, size = _blob_chunks(array)
        chunks.append(_tag(7, 2) + _varint(size))
        chunks += blob
    chunks.append(tail)
    size = sum(len(c) for c in chunks)
    return [_tag(100, 2) + _varint(size)] + chunks, size


def write_caffemodel(path: PathLike, weights: Mapping[str, Sequence[np.ndarray]],
                     net: Optional[caffe_pb2.NetParameter] = None,
                     layer_types: Optional[Mapping[str, str]] = None,
                     input_shapes=None) -> None:
    """Write a binary caffemodel (NetParameter with blobs), atomically.

    With ``net``, the weights are first checked against it (check_weights_against_net; a missing
    layer or blob or a wrong shape raises WeightsMismatchError), and every layer of the net is
    written with its definition, as Caffe's own snapshots do. Weights for layers not in the net are
    appended with their name (and type from ``layer_types``). Blobs are packed float32.
    """
    layer_types = dict(layer_types or {})
    chunks: List = []
    written = set()
    if net is not None:
        if len(net.layers):
            net = upgrade_v1_net(net, net.name or "<net>")
        check_weights_against_net(net, weights, input_shapes)
        header = caffe_pb2.NetParameter()
        header.CopyFrom(net)
        header.ClearField("layer")
        header.ClearField("layers")
        chunks.append(header.SerializeToString())
        for layer in net.layer:
            blobs = weights.get(layer.name, []) if layer.name not in written else []
            written.add(layer.name)
            chunks += _layer_chunks(layer, blobs)[0]
    for name, blobs in weights.items():
        if name in written:
            continue
        layer = caffe_pb2.LayerParameter(name=name)
        if name in layer_types:
            layer.type = layer_types[name]
        chunks += _layer_chunks(layer, blobs)[0]

    def write(f):
        for chunk in chunks:
            f.write(chunk)

    _atomic_write(path, write)


def _read_binary(path: PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CaffemodelError(f"{path}: cannot read: {e.strerror or e}") from None


def _is_hdf5(buf: bytes) -> bool:
    return buf[:8] == b"\x89HDF\r\n\x1a\n"


def _read_caffemodel_hdf5(path) -> Tuple["OrderedDict[str, List[np.ndarray]]", Dict[str, str]]:
    """Caffe's HDF5 snapshot layout: /data/<layer>/<blob index>."""
    import h5py
    weights: "OrderedDict[str, List[np.ndarray]]" = OrderedDict()
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise CaffemodelError(f"{path}: HDF5 file without the /data group of a Caffe snapshot")
        for name, group in f["data"].items():
            weights[name] = [np.asarray(group[str(i)], dtype=np.float32) for i in range(len(group))]
    return weights, {}


def _layer_record(buf, start, end, layer_field: int, where: str):
    """(name, type, blobs) of a LayerParameter (field 100) or V1LayerParameter (field 2)."""
    name, ltype, blobs = "", "", []
    if layer_field == 100:
        name_f, type_f, blob_f = 1, 2, 7
    else:
        name_f, type_f, blob_f = 4, 5, 6
    spans = []
    for number, wire, value in wire_fields(buf, start, end):
        if number == name_f and wire == 2:
            name = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif number == type_f and wire == 2:
            ltype = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif number == type_f and wire == 0 and layer_field == 2:
            try:
                ltype = V1_LAYER_TYPES[caffe_pb2.V1LayerParameter.LayerType.Name(value)]
            except (ValueError, KeyError):
                ltype = str(value)
        elif number == blob_f and wire == 2:
            spans.append(value)
        elif number == 1 and wire == 2 and layer_field == 2:   # V0LayerParameter inside a V1 layer
            for n0, w0, v0 in wire_fields(buf, *value):
                if n0 == 1 and w0 == 2 and not name:
                    name = bytes(buf[v0[0]:v0[1]]).decode("utf-8", "replace")
                elif n0 == 2 and w0 == 2 and not ltype:
                    ltype = bytes(buf[v0[0]:v0[1]]).decode("utf-8", "replace")
                elif n0 == 50 and w0 == 2:
                    spans.append(v0)
    for i, span in enumerate(spans):
        blobs.append(_decode_blob(buf, span[0], span[1], f"{where}: layer '{name}' blob {i}"))
    return name, ltype, blobs


def read_caffemodel(path: PathLike, with_types: bool = False):
    """Read the weights of a binary (or HDF5) caffemodel.

    Returns ``OrderedDict[layer name, list of float32 arrays]`` for layers that have blobs, in file
    order; with ``with_types=True`` also ``{layer name: type}``. Both the modern ``layer`` field and
    the legacy V1 ``layers`` field (old VGG-19 files) are read; blobs keep their stored shape (a
    legacy blob without ``shape`` has its 4-D num/channels/height/width shape).
    """
    buf = _read_binary(path)
    if _is_hdf5(buf):
        weights, types = _read_caffemodel_hdf5(path)
    else:
        weights, types = OrderedDict(), {}
        try:
            for number, wire, value in wire_fields(buf, 0, len(buf)):
                if number in (100, 2) and wire == 2:
                    name, ltype, blobs = _layer_record(buf, value[0], value[1], number, str(path))
                    types.setdefault(name, ltype)
                    if blobs and name not in weights:
                        weights[name] = blobs
        except (IndexError, CaffemodelError) as e:
            detail = str(e) if isinstance(e, CaffemodelError) else "truncated data"
            raise CaffemodelError(f"{path}: not a valid caffemodel ({detail})") from None
    return (weights, types) if with_types else weights


# ----------------------------------------------------------------------------------------------
# Caffe log lines (glog): read by the external-binary backend and by the loss plots

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)|-?nan\(ind\))"
RE_DISPLAY = re.compile(r"Iteration (\d+) \(.*?\), loss = " + _NUM)
RE_DISPLAY_OLD = re.compile(r"Iteration (\d+), loss = " + _NUM)
RE_LR = re.compile(r"Iteration (\d+), lr = " + _NUM)
RE_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = " + _NUM)
RE_SNAPSHOT = re.compile(r"Snapshotting (?:solver state )?to binary proto file (\S+)")
RE_MAX_ITER = re.compile(r"max_iter: (\d+)")


# ----------------------------------------------------------------------------------------------
# solverstate

@dataclass
class SolverStateRecord:
    """Contents of a ``.solverstate`` (caffe.SolverState)."""
    iter: int
    learned_net: str
    history: List[np.ndarray] = field(default_factory=list)
    current_step: int = 0


def write_solverstate(path: PathLike, iter: int, learned_net: str, history: Sequence[np.ndarray],
                      current_step: int = 0) -> None:
    """Write a caffe.SolverState (iteration, caffemodel path, solver history blobs), atomically.

    ``history`` holds one array per learnable blob in net order (SGD/Nesterov momentum); solvers
    with two moments (Adam) append the second set after the first, as Caffe does.
    """
    chunks: List = []
    chunks.append(_tag(1, 0) + _varint(int(iter)))
    name = str(learned_net).encode()
    chunks.append(_tag(2, 2) + _varint(len(name)) + name)
    for array in history:
        blob, size = _blob_chunks(array)
        chunks.append(_tag(3, 2) + _varint(size))
        chunks += blob
    if current_step:
        chunks.append(_tag(4, 0) + _varint(int(current_step)))

    def write(f):
        for chunk in chunks:
            f.write(chunk)

    _atomic_write(path, write)


def read_solverstate(path: PathLike) -> SolverStateRecord:
    """Read a binary ``.solverstate`` into a SolverStateRecord."""
    buf = _read_binary(path)
    state = SolverStateRecord(iter=0, learned_net="")
    try:
        for number, wire, value in wire_fields(buf, 0, len(buf)):
            if number == 1 and wire == 0:
                state.iter = _signed32(value)
            elif number == 2 and wire == 2:
                state.learned_net = bytes(buf[value[0]:value[1]]).decode()
            elif number == 3 and wire == 2:
                state.history.append(_decode_blob(buf, value[0], value[1],
                                                  f"{path}: history blob {len(state.history)}"))
            elif number == 4 and wire == 0:
                state.current_step = _signed32(value)
    except (IndexError, CaffemodelError, UnicodeDecodeError) as e:
        detail = str(e) if isinstance(e, CaffemodelError) else "truncated or corrupt data"
        raise CaffemodelError(f"{path}: not a valid solverstate ({detail})") from None
    return state


# ----------------------------------------------------------------------------------------------
# weights <-> net checks

def _legacy_shape_equal(got: Tuple[int, ...], expected: Tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals for legacy 4-D blobs: ``expected`` padded with leading 1s."""
    return len(got) == 4 and len(expected) <= 4 and got == (1,) * (4 - len(expected)) + tuple(expected)


def check_weights_against_net(net_param: caffe_pb2.NetParameter, weights: Mapping[str, Sequence[np.ndarray]],
                              input_shape=None) -> List[str]:
    """Check that ``weights`` fit ``net_param`` exactly as Caffe's CopyTrainedLayersFrom requires.

    Every layer with learnable blobs must be present with the right blob count and shapes.
    ``input_shape``: a shape for the single input blob or ``{blob: shape}``. Raises
    WeightsMismatchError naming the layer and both shapes; returns the names of weight entries
    that match no layer of the net (Caffe ignores them; logged as a warning).
    """
    from .shapes import param_shapes

    if len(net_param.layers):
        net_param = upgrade_v1_net(net_param, net_param.name or "<net>")
    if input_shape is not None and not isinstance(input_shape, Mapping):
        input_shape = {None: tuple(input_shape)}
    expected = param_shapes(net_param, input_shape)
    types = {layer.name: layer.type for layer in net_param.layer}
    problems = []
    for name, shapes in expected.items():
        where = f"layer '{name}' ({types.get(name, '?')})"
        if name not in weights:
            problems.append(f"{where}: missing from the weights; the net expects {len(shapes)} blob(s) "
                            f"with shapes {[tuple(s) for s in shapes]}")
            continue
        got = [tuple(int(d) for d in np.shape(b)) for b in weights[name]]
        if len(got) != len(shapes):
            problems.append(f"{where}: {len(got)} blob(s) with shapes {got} in the weights, the net expects "
                            f"{len(shapes)} with shapes {[tuple(s) for s in shapes]}")
            continue
        for i, (g, e) in enumerate(zip(got, shapes)):
            if g != tuple(e) and not _legacy_shape_equal(g, tuple(e)):
                problems.append(f"{where}: blob {i} has shape {g} in the weights, the net expects {tuple(e)}")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise WeightsMismatchError(problems[0] + more)
    names = {layer.name for layer in net_param.layer}
    extra = [name for name in weights if name not in names]
    if extra:
        log.warning("weights for %d layer(s) not in net '%s' are ignored: %s", len(extra), net_param.name,
                    ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
    return extra


__all__ = [
    "CaffeFormatError", "PrototxtError", "CaffemodelError", "WeightsMismatchError",
    "LEGACY_OP_TRANSFORM_FIELDS", "V1_LAYER_TYPES", "upgrade_v1_net", "parse_prototxt", "read_net_prototxt", "read_solver_prototxt",
    "prototxt_string", "write_prototxt", "write_caffemodel", "read_caffemodel", "SolverStateRecord",
    "write_solverstate", "read_solverstate", "check_weights_against_net",
]
