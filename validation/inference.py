"""OpenPose-exact inference: preprocessing, multi-scale, net backends, resize & merge.

``docs/formats.md`` §Network input and output, ``docs/postprocessing.md`` §Inputs (scales, resize
& merge, net->image).

* Preprocessing: BGR uint8 image placed top-left and scaled by
  ``s = min((Wn-1)/(Wi-1), (Hn-1)/(Hi-1))`` with ``warpAffine`` (INTER_CUBIC when enlarging,
  INTER_AREA otherwise, border 0), then ``pixel / 256 - 0.5`` (padding becomes -0.5).
* ``--net-resolution`` ``WxH`` with ``-1`` for one side (computed from the image aspect ratio,
  capped at 16:9 as with OpenPose's ``--net_resolution_dynamic 1``), multiples of 16.
* Scales ``1 - i * gap``; each net output is upsampled to the scale-0 net input size as the
  CUDA path does (half-pixel mapping, factor ``8 * s0 / s_i``, Catmull-Rom a = -0.5, clamped
  taps) and the scales are averaged; 4 taps per axis, as block-banded GEMMs (``ROW_BLOCK``).
  ``openpose_build="cpu"`` reproduces OpenPose's CPU build instead: cv::resize (a = -0.75),
  plain mean of the scales, and its NMS and connector
  (:mod:`openpose_train.validation.postprocess_cpu`).
  :func:`heatmap_block_bounds` bounds the resized heatmaps per block from the small outputs, so
  the NMS can skip the blocks that cannot reach its threshold (same peaks).
* Backends read a deploy prototxt + caffemodel: ``torch`` (our CaffeNet; CPU or CUDA; batched),
  ``opencv`` (``cv2.dnn.readNetFromCaffe``) and ``caffe`` (pycaffe, only where ``import caffe``
  works: a user's own build of the OpenPose Caffe fork).
"""
from __future__ import annotations

import functools
import glob
import os
import re
import threading
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.registry import PoseModel
from openpose_train.validation.postprocess import PEAK_BLOCK, parse_people, peak_block_grid
from openpose_train.validation.postprocess_cpu import (
    check_cpu_build, opencv_resize_matrix, parse_people_cpu, resize_and_merge_cpu)

OUTPUT_BLOB = "net_output"
OPENPOSE_BUILDS = ("cuda", "cpu")
NET_DECREASE_FACTOR = 8


class InferenceError(OpenPoseTrainError, ValueError):
    """Bad inference settings or model files: the message names the flag or file."""


# ------------------------------------------------------------------------------ geometry
def parse_net_resolution(text: str) -> Tuple[int, int]:
    """``"-1x368"`` -> (-1, 368). Each given side must be a positive multiple of 16."""
    m = re.fullmatch(r"\s*(-?\d+)\s*x\s*(-?\d+)\s*", str(text))
    if not m:
        raise InferenceError(f"--net-resolution '{text}': expected WxH, e.g. -1x368 or 656x368")
    w, h = int(m.group(1)), int(m.group(2))
    if (w, h) == (-1, -1):
        raise InferenceError(f"--net-resolution '{text}': only one side may be -1")
    for side in (w, h):
        if side != -1 and (side <= 0 or side % 16):
            raise InferenceError(f"--net-resolution '{text}': sides must be multiples of 16 (or -1)")
    return w, h


def net_input_size(image_size: Tuple[int, int], net_resolution: Tuple[int, int],
                   dynamic: float = 1.0) -> Tuple[int, int]:
    """Scale-0 net input (W, H) for an image (W, H) (OpenPose's flagsToPoint + dynamic rule)."""
    iw, ih = image_size
    w, h = net_resolution
    cap = dynamic * 16 / 9 if dynamic > 0 else float("inf")

    def side(known, ratio):
        return 16 * int(min(known * cap, known * ratio) / 16 + 0.5)

    if w == -1:
        w = side(h, iw / ih)
    elif h == -1:
        h = side(w, ih / iw)
    return max(w, 16), max(h, 16)


def scale_factor(src: Tuple[int, int], dst: Tuple[int, int]) -> float:
    """OpenPose's ``resizeGetScaleFactor``: align-corners ratio fitting (W, H) ``src`` in ``dst``."""
    (sw, sh), (dw, dh) = src, dst
    return min((dw - 1) / max(sw - 1, 1), (dh - 1) / max(sh - 1, 1))


def scale_net_sizes(net_size: Tuple[int, int], scale_number: int = 1,
                    scale_gap: float = 0.25) -> List[Tuple[float, Tuple[int, int]]]:
    """[(scale, (W, H))] for scales ``1 - i * gap``, sizes floored to 16 and clamped."""
    if scale_number < 1 or scale_number > 8:
        raise InferenceError(f"--scale-number {scale_number}: must be 1..8")
    out = []
    for i in range(scale_number):
        scale = 1 - i * scale_gap
        if not 0 < scale <= 1:
            raise InferenceError(f"--scale-number {scale_number} --scale-gap {scale_gap}: scale {i} = "
                                 f"{scale:g} is outside (0, 1]; use fewer scales or a smaller gap")
        size = tuple(min(int(n * scale + 0.5) // 16 * 16, n) for n in net_size)
        if min(size) < 16:
            raise InferenceError(f"--scale-number {scale_number} --scale-gap {scale_gap}: scale {i} = {scale:g} "
                                 f"rounds the net input {net_size[0]}x{net_size[1]} to {size[0]}x{size[1]} "
                                 f"(below 16 pixels, nothing for the net to see); use fewer scales, a smaller "
                                 f"gap or a larger --net-resolution")
        out.append((scale, size))
    return out


def largest_net_input(resolution: Tuple[int, int], dynamic: float = 1.0) -> Tuple[int, int]:
    """The largest scale-0 net input (W, H) a ``--net-resolution`` can give: a ``-1`` side grows with
    the image's aspect ratio up to OpenPose's 16:9 cap (``net_input_size``); uncapped, 16:9 is assumed."""
    w, h = resolution
    cap = dynamic * 16 / 9 if dynamic > 0 else 16 / 9
    if w == -1:
        w = 16 * int(h * cap / 16 + 0.5)
    elif h == -1:
        h = 16 * int(w * cap / 16 + 0.5)
    return max(w, 16), max(h, 16)


def available_memory(device) -> Optional[int]:
    """Bytes free for a forward on ``device`` (CUDA: ``mem_get_info``; CPU: MemAvailable of
    /proc/meminfo), or None when it cannot be told."""
    try:
        if str(device).startswith("cuda"):
            import torch
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, RuntimeError, AssertionError):
        return None
    return None


def forward_memory(net_param, size: Tuple[int, int], batch: int = 1) -> int:
    """Bytes of every blob of a deploy net at input (W, H) for ``batch`` images (float32): the torch
    backend keeps each blob until the forward ends, so this is its peak, less the weights."""
    from openpose_train.caffe_layers.shapes import infer_blob_shapes
    shapes = infer_blob_shapes(net_param, {None: (batch, 3, size[1], size[0])}, phase=1)
    return 4 * sum(int(np.prod([d for d in shape if d is not None], dtype=np.int64)) for shape in shapes.values())


def check_memory(net_param, settings: "InferenceSettings", num_channels: int, batch_size: int = 1,
                 device=None, option: str = "--net-resolution") -> None:
    """Refuse (one line naming ``option`` and the size) a net resolution whose forward and merged maps
    surely do not fit in the memory free on ``device``, before anything is allocated (a too large
    allocation would otherwise be killed by the kernel, or raise deep inside torch)."""
    resolution = parse_net_resolution(settings.net_resolution)
    size = largest_net_input(resolution, settings.net_resolution_dynamic)
    free = available_memory(device or "cpu")
    if free is None:
        return
    needed = forward_memory(net_param, size, max(1, batch_size)) + \
        4 * num_channels * size[0] * size[1] * (1 + settings.scale_number)
    if needed > free:
        raise InferenceError(f"{option} {settings.net_resolution}: a net input up to {size[0]}x{size[1]} "
                             f"(batch {max(1, batch_size)}) needs about {needed / 2**30:.1f} GiB, "
                             f"{free / 2**30:.1f} GiB are free on {device or 'cpu'}; use a smaller {option}"
                             + (" or --batch-size" if batch_size > 1 else ""))


def out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of torch (CPU or CUDA) or numpy."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


def net_to_image_scale(net_size: Tuple[int, int], image_size: Tuple[int, int]) -> float:
    """``scaleNetToOutput``: multiplies a scale-0 net-input pixel into an image pixel (4.3)."""
    k = scale_factor(image_size, net_size)
    nw, nh = (int(k * d + 0.5) for d in image_size)
    return min((image_size[0] - 1) / max(nw - 1, 1), (image_size[1] - 1) / max(nh - 1, 1))


def preprocess(image: np.ndarray, net_size: Tuple[int, int]) -> Tuple[np.ndarray, float]:
    """(3, H, W) float32 net input of a BGR uint8 image and its scale factor."""
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise InferenceError(f"expected a BGR image (H, W, 3), got "
                             f"{None if image is None else image.shape}")
    ih, iw = image.shape[:2]
    s = scale_factor((iw, ih), net_size)
    if s == 1 and (iw, ih) == tuple(net_size):
        placed = image
    else:
        m = np.array([[s, 0, 0], [0, s, 0]], dtype=np.float64)
        interp = cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA
        placed = cv2.warpAffine(image, m, tuple(net_size), flags=interp,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    x = placed.astype(np.float32).transpose(2, 0, 1) * np.float32(1 / 256) - np.float32(0.5)
    return np.ascontiguousarray(x), s


def cubic_taps(n_out: int, n_in: int, factor: float) -> Tuple[np.ndarray, np.ndarray]:
    """((n_out, 4) source taps, (n_out, 4) float64 weights) of OpenPose's CUDA bicubic resize
    along one axis: output pixel x reads the source at ``xs = (x + 0.5) / factor - 0.5``;
    Catmull-Rom (a = -0.5) through the taps ``x1 - 1 .. x1 + 2`` with ``x1 = clamp(floor(xs))``
    and the taps clamped, the offset ``xs - x1`` itself unclamped (so the first rows extrapolate
    slightly; ``docs/postprocessing.md`` §Inputs). Taps never decrease along the output."""
    xs = (np.arange(n_out) + 0.5) / factor - 0.5
    x1 = np.clip(np.floor(xs), 0, n_in - 1).astype(np.int64)
    t = xs - x1
    t2, t3 = t * t, t * t * t
    weights = np.stack([-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1,
                        -1.5 * t3 + 2 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2], axis=1)
    taps = np.clip(x1[:, None] + np.arange(-1, 3), 0, n_in - 1)
    return taps, weights


def cubic_resize_matrix(n_out: int, n_in: int, factor: float) -> np.ndarray:
    """(n_out, n_in) float32 weights of :func:`cubic_taps` (clamped taps summed)."""
    taps, weights = cubic_taps(n_out, n_in, factor)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.repeat(np.arange(n_out), 4), taps.reshape(-1)), weights.reshape(-1))
    return matrix.astype(np.float32)


# The resize is separable and every output pixel reads 4 source pixels per axis, so both
# passes are block-banded products: a block of output columns (rows) reads a window of a few
# source columns (rows) with the weights of cubic_resize_matrix restricted to that window
# (the same float32 numbers, only the zero terms are left out). The column pass works on the
# small maps; the row pass writes the output once, as one batched GEMM over blocks of
# ROW_BLOCK consecutive output rows of the (channels * H, W) output (blocks may straddle two
# channels: their window then spans the end of one channel's source rows and the start of
# the next, which are adjacent too).
COLUMN_BLOCK = 128
ROW_BLOCK = 32


# Where the resize runs: NUMPY (numpy's BLAS on the CPU; no torch import, so `validate
# --backend opencv` never loads torch) or a torch device name ("cuda", "cuda:1", "cpu").
NUMPY = "numpy"


def _as_device(array: np.ndarray, device: str):
    """``array`` itself for :data:`NUMPY`, else a torch tensor on ``device``."""
    if device == NUMPY:
        return array
    import torch
    return torch.from_numpy(array).to(device)


@functools.lru_cache(maxsize=32)
def _column_pass(n_out: int, n_in: int, factor: float, device: str = NUMPY):
    """((first column, end column, first source column, end source column,
    (window, columns) weights), ...) of the column pass."""
    matrix = cubic_resize_matrix(n_out, n_in, factor)
    taps = cubic_taps(n_out, n_in, factor)[0]
    blocks = []
    for c0 in range(0, n_out, COLUMN_BLOCK):
        c1 = min(c0 + COLUMN_BLOCK, n_out)
        a, b = int(taps[c0:c1].min()), int(taps[c0:c1].max()) + 1
        weights = _as_device(np.ascontiguousarray(matrix[c0:c1, a:b].T), device)
        blocks.append((c0, c1, a, b, weights))
    return tuple(blocks)


@dataclass(frozen=True)
class _RowPass:
    """The row pass of ``channels`` maps of ``n_in`` -> ``n_out`` rows. Block k of ROW_BLOCK
    flattened output rows reads ``span`` flattened source rows from ``first + k * step`` (a
    strided view of the padded source, no copy) or, when ``step`` is 0, the rows ``index``
    gathers (padded row numbers)."""

    weights: object             # (blocks, ROW_BLOCK, span) float32 array or tensor
    span: int
    first: int
    step: int
    index: object               # (blocks * span,) int64 array or tensor, or None
    pad_before: int
    pad_after: int


@functools.lru_cache(maxsize=16)
def _row_pass(channels: int, n_out: int, n_in: int, factor: float,
              device: str = NUMPY) -> _RowPass:
    """The :class:`_RowPass` of ``channels`` maps (cached: sizes repeat from image to image)."""
    matrix = cubic_resize_matrix(n_out, n_in, factor)
    taps = cubic_taps(n_out, n_in, factor)[0]
    rows = channels * n_out
    blocks = -(-rows // ROW_BLOCK)
    base = n_in * np.arange(channels)[:, None]
    low = np.pad((taps[:, 0] + base).ravel(), (0, blocks * ROW_BLOCK - rows), mode="edge")
    high = np.pad((taps[:, 3] + base).ravel(), (0, blocks * ROW_BLOCK - rows), mode="edge")
    low = low.reshape(blocks, ROW_BLOCK).min(axis=1)
    high = high.reshape(blocks, ROW_BLOCK).max(axis=1)
    starts, span, step = low, int((high - low).max()) + 1, 0
    # An integer number of source rows per block (the usual factor 8 with H = 8 h): windows
    # at a fixed stride, read through a strided view instead of a gather.
    stride = round(ROW_BLOCK / factor)
    if stride >= 1 and abs(stride * factor - ROW_BLOCK) < 1e-9 * ROW_BLOCK:
        uniform = int((low - stride * np.arange(blocks)).min()) + stride * np.arange(blocks)
        uniform_span = int((high - uniform).max()) + 1
        if uniform_span <= span + 1:
            starts, span, step = uniform, uniform_span, stride
    # flattened output row r = (channel c, row i) weighs flattened source row s with
    # matrix[i, s - c * n_in] (zero outside the channel and on the padding rows past the end)
    r = np.arange(blocks * ROW_BLOCK)
    c, i = r // n_out, np.minimum(r % n_out, n_out - 1)
    cols = starts[r // ROW_BLOCK][:, None] + np.arange(span) - (c * n_in)[:, None]
    inside = (r < rows)[:, None] & (cols >= 0) & (cols < n_in)
    weights = np.where(inside, matrix[i[:, None], np.clip(cols, 0, n_in - 1)], np.float32(0))
    weights = _as_device(np.ascontiguousarray(weights.reshape(blocks, ROW_BLOCK, span)), device)
    pad_before = max(0, -int(starts.min()))
    pad_after = max(0, int(starts.max()) + span - channels * n_in)
    index = None
    if step == 0:
        index = _as_device((starts[:, None] + np.arange(span) + pad_before).ravel(), device)
    return _RowPass(weights, span, int(starts[0]), step, index, pad_before, pad_after)


def _empty(shape, device: str):
    """An uninitialised float32 array (:data:`NUMPY`) or tensor; torch's on the CPU from
    numpy too, whose large buffers get transparent huge pages (torch's are first touched in
    4 KiB pages, several times slower)."""
    if device == NUMPY:
        return np.empty(shape, np.float32)
    import torch
    if torch.device(device).type == "cpu":
        return torch.from_numpy(np.empty(shape, np.float32))
    return torch.empty(shape, dtype=torch.float32, device=device)


_SCRATCH = threading.local()


def _scratch(shape, device: str, slot: int = 0):
    """A reused buffer of the column pass (it never leaves :func:`resize_and_merge`): fresh
    memory costs its page faults every call. Per thread; the last few shapes and devices;
    ``slot``: one per merged scale (two scales may have the same shape)."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (device, tuple(shape), slot)
    if key not in buffers:
        if len(buffers) >= 8:
            buffers.pop(next(iter(buffers)))
        buffers[key] = _empty(shape, device)
    return buffers[key]


def _resize_columns(src, target: Tuple[int, int], factor: float, slot: int, device: str):
    """The column pass of ``src`` (C, h, w; an array for :data:`NUMPY`, else a tensor on
    ``device``) into a zero-padded scratch (pad + C * h + pad, W) and the :class:`_RowPass`
    that reads it."""
    c, h, w = src.shape
    tw, th = target
    rows = _row_pass(c, th, h, factor, device)
    padded = _scratch((rows.pad_before + c * h + rows.pad_after, tw), device, slot)
    padded[:rows.pad_before] = 0                    # zero weight, but must not be NaN
    padded[rows.pad_before + c * h:] = 0
    resized_columns = padded[rows.pad_before:rows.pad_before + c * h]
    flat = src.reshape(c * h, w)
    if device == NUMPY:
        product = np.matmul
    else:
        import torch
        product = torch.mm
    for c0, c1, a, b, weights in _column_pass(tw, w, factor, device):
        product(flat[:, a:b], weights, out=resized_columns[:, c0:c1])
    return rows, padded


def _row_windows(rows: _RowPass, padded, k0: int, k1: int):
    """(k1 - k0, span, W) source windows of the row blocks k0..k1-1."""
    tw = padded.shape[1]
    if rows.step:
        first = (rows.first + rows.pad_before + k0 * rows.step) * tw
        shape, strides = (k1 - k0, rows.span, tw), (rows.step * tw, tw, 1)
        if isinstance(padded, np.ndarray):
            return np.lib.stride_tricks.as_strided(
                padded.reshape(-1)[first:], shape, [n * padded.itemsize for n in strides],
                writeable=False)
        return padded.as_strided(shape, strides, padded.storage_offset() + first)
    index = rows.index[k0 * rows.span:k1 * rows.span]
    if isinstance(padded, np.ndarray):
        return padded[index].reshape(k1 - k0, rows.span, tw)
    return padded.index_select(0, index).view(k1 - k0, rows.span, tw)


# Row blocks per batched GEMM when windows are copied (gathered, or several scales merged:
# their windows and weights concatenated along the GEMM's inner dimension, so the output is
# written once for all scales); keeps the copies small and in cache.
MERGE_CHUNK = 64


def _resize_rows(out_rows, parts) -> None:
    """``out_rows`` (C * H, W; an array or a tensor like the scratches) = the mean over the
    scales ``parts`` ([(row pass, padded column pass)]) of their row passes: one batched GEMM
    per chunk of row blocks (numpy's ``matmul`` or torch's ``baddbmm``)."""
    on_numpy = isinstance(out_rows, np.ndarray)
    if not on_numpy:
        import torch
    alpha = 1 / len(parts)
    blocks = parts[0][0].weights.shape[0]
    full = out_rows.shape[0] // ROW_BLOCK           # whole blocks: written in place
    single = len(parts) == 1 and parts[0][0].step
    chunk = blocks if single else MERGE_CHUNK
    for k0 in range(0, blocks, chunk):
        k1 = min(k0 + chunk, blocks)
        if len(parts) == 1:
            weights, windows = parts[0][0].weights[k0:k1], _row_windows(*parts[0], k0, k1)
        elif on_numpy:      # the mean's 1 / scales folded into the (small) weights
            weights = np.concatenate([rows.weights[k0:k1] for rows, _ in parts], axis=2) * \
                np.float32(alpha)
            windows = np.concatenate([_row_windows(rows, padded, k0, k1)
                                      for rows, padded in parts], axis=1)
        else:
            weights = torch.cat([rows.weights[k0:k1] for rows, _ in parts], dim=2)
            windows = torch.cat([_row_windows(rows, padded, k0, k1) for rows, padded in parts],
                                dim=1)
        whole = min(k1, full) - k0
        if on_numpy:
            if whole > 0:
                main = out_rows[k0 * ROW_BLOCK:(k0 + whole) * ROW_BLOCK]
                np.matmul(weights[:whole], windows[:whole],
                          out=main.reshape(whole, ROW_BLOCK, -1))
            if k1 > full:                           # the last, partial block
                rest = out_rows[full * ROW_BLOCK:]
                rest[:] = np.matmul(weights[whole:], windows[whole:])[0, :rest.shape[0]]
            continue
        if whole > 0:
            main = out_rows[k0 * ROW_BLOCK:(k0 + whole) * ROW_BLOCK].view(whole, ROW_BLOCK, -1)
            torch.baddbmm(main, weights[:whole], windows[:whole], beta=0, alpha=alpha, out=main)
        if k1 > full:                               # the last, partial block
            rest = out_rows[full * ROW_BLOCK:]
            tail = torch.bmm(weights[whole:], windows[whole:])[0, :rest.shape[0]]
            torch.mul(tail, alpha, out=rest)


def upsample_output(output: np.ndarray, target: Tuple[int, int], factor: float,
                    device: Optional[str] = None) -> np.ndarray:
    """(C, h, w) net output -> (C, H, W) at ``target`` (W, H) with OpenPose's bicubic
    (:func:`cubic_resize_matrix` along both axes), with numpy, or in torch on ``device`` when
    given (e.g. the GPU of the torch backend)."""
    return resize_and_merge([output], [1.0], target, device, factor=factor)


def resize_and_merge(outputs: Sequence[np.ndarray], scales: Sequence[float],
                     target: Tuple[int, int], device: Optional[str] = None,
                     factor: float = NET_DECREASE_FACTOR,
                     out: Optional[np.ndarray] = None) -> np.ndarray:
    """Average of the per-scale net outputs upsampled to the scale-0 net input size ``target``;
    ``scales`` are the per-scale image->net factors (``s_i``); scale i is upsampled by
    ``factor * s_0 / s_i``. Each output pixel costs 4 taps per axis (block-banded GEMMs, see
    ``ROW_BLOCK``), the same weights as the dense products of :func:`cubic_resize_matrix`.
    ``device``: None runs it with numpy on the CPU (no torch needed); a torch device name
    ("cuda", "cpu", ...) runs the same GEMMs in torch there. ``out``: a C-contiguous float32
    (C, H, W) array to write into (a reused buffer saves the page faults of a fresh one, a
    third of the time); returned."""
    tw, th = target
    channels = outputs[0].shape[0]
    shape = (channels, th, tw)
    if out is None:
        out = np.empty(shape, np.float32)           # numpy: huge pages (see _empty)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise InferenceError(f"out must be a C-contiguous float32 array of shape {shape}, got "
                             f"{out.dtype} {out.shape}")
    for k, output in enumerate(outputs):
        if output.shape[0] != channels:
            raise InferenceError(f"scale {k} has {output.shape[0]} channels, scale 0 has "
                                 f"{channels}")
    sources = [np.ascontiguousarray(output, dtype=np.float32) for output in outputs]
    factors = [factor * scales[0] / s for s in scales]
    if device is None:
        parts = [_resize_columns(src, target, f, k, NUMPY)
                 for k, (src, f) in enumerate(zip(sources, factors))]
        _resize_rows(out.reshape(channels * th, tw), parts)
        return out
    import torch
    with torch.inference_mode():
        dev = torch.device(device)
        rows = torch.from_numpy(out).view(channels * th, tw) if dev.type == "cpu" else \
            torch.empty((channels * th, tw), dtype=torch.float32, device=dev)
        parts = [_resize_columns(torch.from_numpy(src).to(dev), target, f, k, str(dev))
                 for k, (src, f) in enumerate(zip(sources, factors))]
        _resize_rows(rows, parts)
        if dev.type != "cpu":
            torch.from_numpy(out).view(channels * th, tw).copy_(rows)
    return out


def _resize_and_merge_dense(outputs: Sequence[np.ndarray], scales: Sequence[float],
                            target: Tuple[int, int], device: Optional[str] = None,
                            factor: float = NET_DECREASE_FACTOR) -> np.ndarray:
    """The straightforward :func:`resize_and_merge` (dense (H, h) and (W, w) matrix products):
    reference for the tests and baseline of ``benchmarks/postprocess.py``."""
    import torch
    tw, th = target
    with torch.inference_mode():
        merged = None
        for output, s in zip(outputs, scales):
            src = torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32))
            src = src.to(device or "cpu")
            f = factor * scales[0] / s
            c, h, w = src.shape
            along_x = torch.from_numpy(cubic_resize_matrix(tw, w, f)).to(src.device)
            along_y = torch.from_numpy(cubic_resize_matrix(th, h, f)).to(src.device)
            up = torch.matmul(along_y, (src.reshape(c * h, w) @ along_x.T).reshape(c, h, tw))
            merged = up if merged is None else merged + up
        if len(outputs) > 1:
            merged /= len(outputs)
        return merged.cpu().numpy()


# the resize kernels whose block bounds heatmap_block_bounds computes: OpenPose's CUDA bicubic
# (factor given) and, for the CPU build, cv2.resize INTER_CUBIC (its own ratio n_in / n_out)
RESIZE_MATRICES = {"cuda": cubic_resize_matrix,
                   "opencv": lambda n_out, n_in, factor: opencv_resize_matrix(n_out, n_in)}


@functools.lru_cache(maxsize=64)
def _block_envelope(n_out: int, n_in: int, factor: float, kernel: str = "cuda") -> np.ndarray:
    """(blocks, n_in) largest ``|weight|`` of the ``kernel``'s resize matrix over the output rows
    of each :data:`~openpose_train.validation.postprocess.PEAK_BLOCK` block (rows 8b+1..8b+8)."""
    nb = peak_block_grid(n_out, n_out)[0]
    weights = np.abs(RESIZE_MATRICES[kernel](n_out, n_in, factor))[1:1 + nb * PEAK_BLOCK]
    weights = np.pad(weights, ((0, nb * PEAK_BLOCK - weights.shape[0]), (0, 0)))
    envelope = weights.reshape(nb, PEAK_BLOCK, n_in).max(axis=1)
    envelope.flags.writeable = False        # shared through the cache
    return envelope


def heatmap_block_bounds(outputs: Sequence[np.ndarray], scales: Sequence[float],
                         target: Tuple[int, int], num_parts: int,
                         factor: float = NET_DECREASE_FACTOR, kernel: str = "cuda") -> np.ndarray:
    """Upper bound of ``|value|`` over every peak-search block of the first ``num_parts``
    channels of :func:`resize_and_merge` (same arguments), from the small net outputs alone:
    a resized pixel is ``sum Ay[y, i] Ax[x, j] src[i, j]``, so over a block it is at most
    ``sum_ij max_y|Ay[y, i]| max_x|Ax[x, j]| |src[i, j]|``, and the merge averages. Passed to
    :func:`~openpose_train.validation.postprocess.parse_people` as ``block_bound`` it lets the
    NMS skip the blocks that cannot reach the threshold (a few hundred thousand flops here
    against a scan of every full-resolution pixel). ``kernel="opencv"``: the bounds of the CPU
    build's :func:`~openpose_train.validation.postprocess_cpu.resize_and_merge_cpu` instead
    (``cv2.resize``'s weights; ``factor`` and ``scales`` do not enter)."""
    tw, th = target
    bound = None
    for output, s in zip(outputs, scales):
        src = np.abs(np.asarray(output[:num_parts], dtype=np.float32))
        n, h, w = src.shape
        f = factor * scales[0] / s
        along_x = _block_envelope(tw, w, f, kernel)
        along_y = _block_envelope(th, h, f, kernel)
        rows = (src.reshape(n * h, w) @ along_x.T).reshape(n, h, -1)
        b = np.matmul(along_y, rows)
        bound = b if bound is None else bound + b
    return bound / len(outputs)


# ------------------------------------------------------------------------------- backends
def output_layer_name(net_param, blob: str = OUTPUT_BLOB) -> str:
    """Name of the last layer whose top is ``blob`` (OpenPose looks the blob up by name)."""
    names = [layer.name for layer in net_param.layer if blob in layer.top]
    if not names:
        raise InferenceError(f"the prototxt has no blob named '{blob}': OpenPose reads its output "
                             f"from a top called '{blob}'")
    return names[-1]


def check_output_channels(deploy_path, net_param, model: PoseModel) -> None:
    """Raise InferenceError unless the deploy's ``net_output`` has the registry model's channels:
    heatmaps (parts + background) and PAFs, each from its own final layer when they are
    concatenated. OpenPose picks its tables by the model name alone, so a net of another model
    runs without an error and finds nobody (or garbage); ``export`` and ``validate`` refuse it."""
    from openpose_train.caffe_layers.shapes import infer_blob_shapes
    from openpose_train.generator.skeleton import prototxt_model_problem

    problem = prototxt_model_problem(deploy_path, model)     # docs/refusals.md §YAML skeletons
    if problem:
        raise InferenceError(problem)
    try:
        shapes = infer_blob_shapes(net_param, {None: (1, 3, 64, 64)}, phase=1)
    except Exception as exc:
        raise InferenceError(f"{deploy_path}: {exc}") from exc
    if OUTPUT_BLOB not in shapes:
        raise InferenceError(f"{deploy_path}: no blob named '{OUTPUT_BLOB}' (OpenPose reads its output from it)")
    producer = [layer for layer in net_param.layer if OUTPUT_BLOB in layer.top][-1]
    heatmaps = model.num_parts + int(model.has_background)
    pafs = 2 * model.num_pafs
    expected_text = f"{model.name} has {model.num_channels}: heatmaps {heatmaps}" + (f" + PAFs {pafs}" if pafs else "")
    if producer.type == "Concat":
        found = [(name, shapes[name][1]) for name in producer.bottom]
        if sorted(c for _, c in found) != sorted(c for c in (heatmaps, pafs) if c):
            layers = ", ".join(f"'{name}' {c}" for name, c in found)
            raise InferenceError(f"{deploy_path}: the final layers {layers} give {shapes[OUTPUT_BLOB][1]} output "
                                 f"channels, {expected_text} (is --model the one the snapshot was trained as?)")
    elif shapes[OUTPUT_BLOB][1] != model.num_channels:
        raise InferenceError(f"{deploy_path}: the final layer '{producer.name}' gives {shapes[OUTPUT_BLOB][1]} "
                             f"output channels, {expected_text} (is --model the one the snapshot was trained as?)")


def _torch_device(torch, device: Optional[str]):
    """--device as a torch device (default: CUDA when visible), refused in one line when it names no
    usable device."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise InferenceError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and (dev.index or 0) >= (torch.cuda.device_count() if torch.cuda.is_available() else 0):
        raise InferenceError(f"--device {device}: no such CUDA device "
                             f"({torch.cuda.device_count() if torch.cuda.is_available() else 0} visible)")
    return dev


class TorchBackend:
    """Our Caffe engine (``caffe_layers.net.CaffeNet``), CPU or CUDA, batched."""

    name = "torch"

    def __init__(self, prototxt, caffemodel, device: Optional[str] = None):
        import torch

        from openpose_train.caffe_layers.caffe_io import read_net_prototxt
        from openpose_train.caffe_layers.net import CaffeNet
        self.torch = torch
        net_param = read_net_prototxt(str(prototxt))
        output_layer_name(net_param)
        self.net_param = net_param          # for the memory estimate (check_memory)
        self.device = _torch_device(torch, device)
        self.net = CaffeNet(net_param, phase="TEST")
        self.net.load_caffe_weights(str(caffemodel), allow_missing=False)
        self.net.to(self.device).eval()
        self.input_name = next(iter(self.net.input_blobs))

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, C, H/8, W/8) float32."""
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            y = self.net({self.input_name: x})[OUTPUT_BLOB]
            return y.float().cpu().numpy()


def opencv_prototxt_text(net_param) -> Optional[str]:
    """The deploy as OpenCV's Caffe importer can read it, or None when it reads the file as it is.

    OpenCV (4.x) has no ``Clip`` layer in its Caffe importer but has ``ReLU6`` (min 0, max 6): the light
    models' ``Clip`` layers (docs/compatibility.md §Light models) are renamed for OpenCV only; OpenPose's
    Caffe runs ``Clip`` itself. A Clip other than 0..6 has no OpenCV equivalent and is refused."""
    from openpose_train.caffe_layers.caffe_io import caffe_pb2, prototxt_string
    clips = [layer for layer in net_param.layer if layer.type == "Clip"]
    if not clips:
        return None
    for layer in clips:
        if (layer.clip_param.min, layer.clip_param.max) != (0.0, 6.0):
            raise InferenceError(f"layer '{layer.name}': OpenCV has no Clip layer, only ReLU6 (min 0, max 6); "
                                 f"this one clips to [{layer.clip_param.min:g}, {layer.clip_param.max:g}]")
    net = caffe_pb2.NetParameter()
    net.CopyFrom(net_param)
    for layer in net.layer:
        if layer.type == "Clip":
            layer.type = "ReLU6"
            layer.ClearField("clip_param")
    return prototxt_string(net)


def read_opencv_net(prototxt, caffemodel):
    """``cv2.dnn.readNetFromCaffe`` of a deploy (with :func:`opencv_prototxt_text`'s renaming)."""
    import tempfile

    from openpose_train.caffe_layers.caffe_io import read_net_prototxt
    text = opencv_prototxt_text(read_net_prototxt(str(prototxt)))
    if text is None:
        return cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    with tempfile.TemporaryDirectory(prefix="opencv_deploy_") as folder:
        path = os.path.join(folder, "deploy.prototxt")
        with open(path, "w") as f:
            f.write(text)
        return cv2.dnn.readNetFromCaffe(path, str(caffemodel))


class OpenCVBackend:
    """``cv2.dnn.readNetFromCaffe``; one image per forward (OpenCV reshapes per call)."""

    name = "opencv"

    def __init__(self, prototxt, caffemodel, device: Optional[str] = None):
        from openpose_train.caffe_layers.caffe_io import read_net_prototxt
        self.files = f"{prototxt} / {caffemodel}"
        self.net_param = read_net_prototxt(str(prototxt))
        self.layer = output_layer_name(self.net_param)
        try:
            self.net = read_opencv_net(prototxt, caffemodel)
        except cv2.error as exc:
            raise InferenceError(f"OpenCV could not load {prototxt} / {caffemodel}: "
                                 f"{str(exc).strip().splitlines()[-1]}") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        outs = []
        for x in np.asarray(batch, dtype=np.float32):
            self.net.setInput(x[None])
            try:
                outs.append(np.array(self.net.forward(self.layer), dtype=np.float32)[0])
            except cv2.error as exc:    # e.g. a caffemodel without this net's layers (read without a check)
                raise InferenceError(f"OpenCV could not run {self.files}: "
                                     f"{str(exc).strip().splitlines()[-1]}") from None
        return np.stack(outs)


class CaffeBackend:
    """pycaffe of a user's OpenPose Caffe build (``import caffe`` must work)."""

    name = "caffe"

    def __init__(self, prototxt, caffemodel, device: Optional[str] = None):
        try:
            import caffe  # noqa: F401  (not installable here; a user's own build)
        except ImportError as exc:
            raise InferenceError(f"--backend caffe needs pycaffe ('import caffe' failed: {exc})") \
                from None
        if device and device.startswith("cuda"):
            caffe.set_mode_gpu()
            caffe.set_device(int(device.split(":")[1]) if ":" in device else 0)
        else:
            caffe.set_mode_cpu()
        self.net = caffe.Net(str(prototxt), str(caffemodel), caffe.TEST)
        self.input_name = self.net.inputs[0]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        self.net.blobs[self.input_name].reshape(*batch.shape)
        self.net.reshape()
        self.net.blobs[self.input_name].data[...] = batch
        self.net.forward()
        return np.array(self.net.blobs[OUTPUT_BLOB].data, dtype=np.float32)


BACKENDS = {"torch": TorchBackend, "opencv": OpenCVBackend, "caffe": CaffeBackend}


def load_backend(name: str, prototxt, caffemodel, device: Optional[str] = None,
                 model: Optional[PoseModel] = None):
    """A backend by name (``torch``, ``opencv``, ``caffe``); files are checked first, and given the
    registry ``model``, the deploy's output channels against it (:func:`check_output_channels`)."""
    if name not in BACKENDS:
        raise InferenceError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    for label, path in (("prototxt", prototxt), ("caffemodel", caffemodel)):
        if not path or not os.path.isfile(path):
            raise InferenceError(f"{label} file not found: {path}")
    if model is not None:
        from openpose_train.caffe_layers.caffe_io import read_net_prototxt
        check_output_channels(prototxt, read_net_prototxt(str(prototxt)), model)
    return BACKENDS[name](prototxt, caffemodel, device)


def find_model_files(model: PoseModel, model_folder: Optional[str] = None,
                     prototxt: Optional[str] = None,
                     caffemodel: Optional[str] = None) -> Tuple[str, str]:
    """(prototxt, caffemodel) of a model: explicit paths win; otherwise an OpenPose ``models/``
    folder (``pose/body_25/pose_deploy.prototxt`` ...) or a folder holding a deploy prototxt and
    a caffemodel (the highest ``pose_iter_N`` when several)."""
    if prototxt and caffemodel:
        return prototxt, caffemodel
    if not model_folder:
        raise InferenceError("give --model-folder or both --prototxt and --caffemodel")
    candidates = [os.path.join(model_folder, model.model_folder), model_folder] \
        if model.model_folder else [model_folder]
    for folder in candidates:
        deploy = prototxt or find_deploy_prototxt(model, folder)
        if deploy is None or not os.path.isfile(deploy):
            continue
        weights = caffemodel
        if weights is None:
            named = os.path.join(folder, model.caffemodel_name)
            found = sorted(glob.glob(os.path.join(folder, "*.caffemodel")), key=_iteration_key)
            weights = named if os.path.isfile(named) else (found[-1] if found else None)
        if weights:
            return deploy, weights
    raise InferenceError(f"no deploy prototxt + caffemodel for {model.name} in {model_folder} "
                         f"(looked in {', '.join(candidates)})")


def find_deploy_prototxt(model: PoseModel, folder: str) -> Optional[str]:
    """The deploy prototxt in a folder: OpenPose's file name for the model (the generator writes
    that name), else the first ``*deploy*.prototxt``; None when there is none."""
    named = os.path.join(folder, model.deploy_name)
    if os.path.isfile(named):
        return named
    found = sorted(glob.glob(os.path.join(folder, "*deploy*.prototxt")))
    return found[0] if found else None


def _iteration_key(path: str):
    m = re.search(r"_iter_(\d+)", os.path.basename(path))
    return (int(m.group(1)) if m else -1, path)


# ------------------------------------------------------------------------------ estimator
@dataclass
class InferenceSettings:
    """OpenPose's flags that shape inference."""

    net_resolution: str = "-1x368"
    scale_number: int = 1
    scale_gap: float = 0.25
    net_resolution_dynamic: float = 1.0
    maximize_positives: bool = False
    # which OpenPose build's post-processing to reproduce: "cuda" (its own bicubic, GPU NMS and
    # greedy assembly) or "cpu" (cv::resize, nmsCpu, connectBodyPartsCpu); docs/postprocessing.md
    openpose_build: str = "cuda"

    def describe(self) -> dict:
        return dict(net_resolution=self.net_resolution, scale_number=self.scale_number,
                    scale_gap=self.scale_gap, net_resolution_dynamic=self.net_resolution_dynamic,
                    maximize_positives=self.maximize_positives,
                    openpose_build=self.openpose_build)


class PoseEstimator:
    """Image -> people with a backend and a registry model, as ``openpose.bin`` would."""

    def __init__(self, model: PoseModel, backend, settings: Optional[InferenceSettings] = None):
        self.model = model
        self.backend = backend
        self.settings = settings or InferenceSettings()
        self.resolution = parse_net_resolution(self.settings.net_resolution)
        # resize on the backend's GPU when it has one (the maps come back to the CPU for NMS)
        device = getattr(backend, "device", None)
        self.resize_device = str(device) if device is not None and str(device).startswith("cuda") \
            else None
        side = min(n for n in self.resolution if n > 0)     # the side the resolution fixes
        scale_net_sizes((side, side), self.settings.scale_number, self.settings.scale_gap)
        if self.settings.openpose_build not in OPENPOSE_BUILDS:
            raise InferenceError(f"openpose_build must be one of {', '.join(OPENPOSE_BUILDS)}, "
                                 f"got {self.settings.openpose_build!r}")
        self.cpu_build = self.settings.openpose_build == "cpu"
        if self.cpu_build:
            check_cpu_build(model)
        self._maps_buffer = None        # estimate's merged maps, reused from image to image

    def plan(self, image_size: Tuple[int, int]):
        """[(net size, s_i)] per scale and the scale-0 net size for an image (W, H)."""
        net0 = net_input_size(image_size, self.resolution, self.settings.net_resolution_dynamic)
        sizes = scale_net_sizes(net0, self.settings.scale_number, self.settings.scale_gap)
        return [(size, scale_factor(image_size, size)) for _, size in sizes], net0

    def heatmaps(self, image: np.ndarray) -> Tuple[np.ndarray, float]:
        """Merged maps at the scale-0 net input size and the net->image scale."""
        return self.heatmaps_batch([image])[0]

    def heatmaps_batch(self, images: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, float]]:
        """Like :meth:`heatmaps` for several images; inputs of equal size share one forward."""
        return [(merged, scale) for merged, scale, _ in self._maps_batch(images)]

    def _maps_batch(self, images: Sequence[np.ndarray], reuse: bool = False):
        """(merged maps, net->image scale, heatmap block bounds) per image, one at a time;
        ``reuse``: the maps of every image go into one kept buffer (valid until the next
        image; fresh memory costs its page faults, a third of the resize)."""
        plans = []
        for image in images:
            if image is None or image.ndim != 3:
                raise InferenceError("expected BGR images (H, W, 3)")
            plans.append(self.plan((image.shape[1], image.shape[0])))
        # (image index, scale index) -> input; grouped by net size for batched forwards
        jobs = {}
        for i, (image, (scales, _)) in enumerate(zip(images, plans)):
            for j, (size, _) in enumerate(scales):
                jobs.setdefault(size, []).append((i, j, preprocess(image, size)[0]))
        outputs = {}
        for size, items in jobs.items():
            try:
                result = self.backend.forward(np.stack([x for _, _, x in items]))
            except (MemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                raise InferenceError(
                    f"--net-resolution {self.settings.net_resolution}: the net input {size[0]}x{size[1]} "
                    f"(batch {len(items)}) ran out of memory on {getattr(self.backend, 'device', 'cpu')} "
                    f"({str(exc).strip().splitlines()[0][:120]}); use a smaller --net-resolution or "
                    f"--batch-size") from None
            for (i, j, _), out in zip(items, result):
                outputs[(i, j)] = out
        for i, (image, (scales, net0)) in enumerate(zip(images, plans)):
            outs = [outputs[(i, j)] for j in range(len(scales))]
            buffer = None
            if reuse:
                shape = (outs[0].shape[0], net0[1], net0[0])
                if self._maps_buffer is None or self._maps_buffer.shape != shape:
                    self._maps_buffer = np.empty(shape, np.float32)
                buffer = self._maps_buffer
            try:
                merged, bound = self.merge(outs, [s for _, s in scales], net0, buffer)
            except MemoryError:
                raise InferenceError(f"--net-resolution {self.settings.net_resolution}: the maps of the net input "
                                     f"{net0[0]}x{net0[1]} do not fit in memory; use a smaller "
                                     f"--net-resolution") from None
            yield merged, net_to_image_scale(net0, (image.shape[1], image.shape[0])), bound

    def merge(self, outs: Sequence[np.ndarray], scales: Sequence[float], net0: Tuple[int, int],
              buffer: Optional[np.ndarray] = None):
        """(merged maps at ``net0``, heatmap block bounds or None) of one image's per-scale
        stride-8 outputs, resized as this OpenPose build resizes."""
        if self.cpu_build:
            merged = resize_and_merge_cpu(outs, net0, out=buffer)
        else:
            merged = resize_and_merge(outs, scales, net0, self.resize_device, out=buffer)
        bound = heatmap_block_bounds(outs, scales, net0, self.model.num_parts,
                                     kernel="opencv" if self.cpu_build else "cuda") \
            if self.model.runtime_pairs else None
        return merged, bound

    def parse(self, maps: np.ndarray, scale: float, bound: Optional[np.ndarray] = None):
        """(keypoints, scores) of merged maps, parsed as this OpenPose build parses them."""
        if self.cpu_build:
            return parse_people_cpu(self.model, maps, scale=scale,
                                    maximize_positives=self.settings.maximize_positives,
                                    block_bound=bound)
        return parse_people(self.model, maps, scale=scale,
                            maximize_positives=self.settings.maximize_positives,
                            block_bound=bound)

    def estimate(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(keypoints (people, N, 3) in image pixels, scores (people,))."""
        return self.estimate_batch([image])[0]

    def estimate_batch(self, images: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
        return [self.parse(maps, s, bound) for maps, s, bound in self._maps_batch(images, reuse=True)]


def iter_batches(items: Iterable, size: int):
    """Consecutive chunks of ``size`` items."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
