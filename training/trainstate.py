"""The ``.trainstate`` side file of a snapshot: per rank, the data-layer state and the RNG states.

A snapshot folder is data that people copy and share, so resuming from it must never run code: the
file is JSON (docs/formats.md §Training state), and the few values JSON has no type for are tagged
objects decoded here by hand -- tuples, bytes, and numeric arrays (numpy or torch; the dtype must be
a plain number type, the byte count must match the shape). Anything else naming the file, a pickle
of an older version included, is refused with one line (docs/refusals.md §Resume and side files).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Dict, List

import numpy as np

from .data_sources import TrainingError

FORMAT = "openpose-train trainstate"
VERSION = 2
_TAG = "__type__"
# numeric dtypes an array may have (no object, string or void dtypes: they are not plain numbers)
_DTYPES = {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
           "float16", "float32", "float64"}
_PICKLE_MAGIC = b"\x80"     # pickle protocol 2 and later start with the PROTO opcode


class TrainstateError(TrainingError):
    """A ``.trainstate`` that is not this format (the message names the file and what is wrong)."""


def _encode_array(kind: str, array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in _DTYPES:
        raise TypeError(f"cannot store an array of dtype {array.dtype} in a trainstate")
    return {_TAG: kind, "dtype": array.dtype.name, "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def encode(value: Any) -> Any:
    """``value`` (dicts with string keys, lists, tuples, numbers, strings, None, bytes, numpy arrays,
    torch tensors) as JSON-compatible data; the non-JSON types become tagged objects."""
    import torch

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, dict):
        if _TAG in value or not all(isinstance(k, str) for k in value):
            raise TypeError(f"cannot store a dict with keys {list(value)[:5]} in a trainstate")
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [encode(v) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        return {_TAG: "bytes", "data": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        return _encode_array("ndarray", value)
    if isinstance(value, torch.Tensor):
        return _encode_array("tensor", value.detach().cpu().numpy())
    raise TypeError(f"cannot store a {type(value).__name__} in a trainstate")


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'data' is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{where}: 'data' is not base64") from None


def _decode_array(obj: dict, where: str):
    dtype, shape = obj.get("dtype"), obj.get("shape")
    if dtype not in _DTYPES:
        raise ValueError(f"{where}: array dtype {dtype!r} is not a plain number type")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ValueError(f"{where}: array shape {shape!r} is not a list of sizes")
    raw = _b64(obj.get("data"), where)
    array = np.frombuffer(raw, dtype=np.dtype(dtype))
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{where}: {len(raw)} bytes for an array of shape {shape} ({dtype})")
    array = array.reshape(shape).copy()
    if obj[_TAG] == "tensor":
        import torch

        return torch.from_numpy(array)
    return array


def decode(value: Any, where: str = "trainstate") -> Any:
    """The inverse of :func:`encode`; ValueError naming the place of anything not written by it."""
    if isinstance(value, list):
        return [decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: decode(v, f"{where}.{k}") for k, v in value.items()}
    if tag == "tuple" and isinstance(value.get("items"), list):
        return tuple(decode(v, f"{where}[{i}]") for i, v in enumerate(value["items"]))
    if tag == "bytes":
        return _b64(value.get("data"), where)
    if tag in ("ndarray", "tensor"):
        return _decode_array(value, where)
    raise ValueError(f"{where}: unknown {_TAG} {tag!r}")


def dumps(iteration: int, world_size: int, ranks: List[Dict]) -> bytes:
    """The file's bytes: per rank ``{"data": [source states], "rng": {...}}``."""
    return json.dumps({"format": FORMAT, "version": VERSION, "iter": int(iteration), "world_size": int(world_size),
                       "ranks": encode(ranks)}, separators=(",", ":")).encode("utf-8")


def load(path: str) -> Dict:
    """The decoded contents ``{"iter", "world_size", "ranks"}``; TrainstateError naming ``path``
    when the file is not one this module wrote (a pickle, truncated, another format, wrong fields)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise TrainstateError(f"{path}: cannot read the training state: {exc.strerror or exc}") from None
    if raw.startswith(_PICKLE_MAGIC):
        raise TrainstateError(f"{path}: a pickle, not a JSON training state (written by an older openpose-train, "
                              f"or by someone else); refused, because loading a pickle can run any code. Delete "
                              f"or move it to resume with the weights and solver history only (the data order "
                              f"then starts afresh)")
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TrainstateError(f"{path}: not a JSON training state (truncated or another format: {exc}); delete "
                              f"or move it to resume with the weights and solver history only") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainstateError(f"{path}: not an openpose-train training state (no \"format\": \"{FORMAT}\")")
    if state.get("version") != VERSION:
        raise TrainstateError(f"{path}: training-state version {state.get('version')!r}; this openpose-train "
                              f"reads version {VERSION}")
    for key, kind in (("iter", int), ("world_size", int), ("ranks", list)):
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise TrainstateError(f"{path}: field '{key}' is missing or not a{'n integer' if kind is int else ' list'}")
    try:
        ranks = decode(state["ranks"], "ranks")
    except ValueError as exc:
        raise TrainstateError(f"{path}: {exc}") from None
    except RecursionError:
        raise TrainstateError(f"{path}: 'ranks' is nested too deeply for a training state") from None
    for r, rank in enumerate(ranks):
        if not (isinstance(rank, dict) and isinstance(rank.get("data"), list) and isinstance(rank.get("rng"), dict)):
            raise TrainstateError(f"{path}: ranks[{r}] is not {{\"data\": [...], \"rng\": {{...}}}}")
    return {"iter": state["iter"], "world_size": state["world_size"], "ranks": ranks}
