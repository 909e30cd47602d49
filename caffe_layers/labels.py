"""OPData label rendering, CPU reference (``docs/labels.md`` §Visibility, §Channel order, §Label steps).

A label is float32 ``(2C, gy, gx)``: the first half holds loss weights, the second half targets,
channel ``c`` of the first half weighting channel ``C + c``. Inside each half: PAF x/y pairs
(``2E``), heatmaps (``P``), then the background channel when the model has one.

People are one array ``(n_people, P, 3)`` of ``(x, y, v)`` in crop pixel coordinates, row 0 the
main person (the one the sample was centred on), already remapped to the model
(:func:`remap_keypoints`) and augmented. Visibility codes (§Visibility): 0 occluded, 1 visible,
2 outside/unlabeled, 3 synthetic point with a missing source, 4 not in the dataset.

One compiled kernel renders a label (numba: ``docs/labels.md`` §Speed says why and how the output stays
bit-identical to the numpy formulation): the fill, then only the cells a Gaussian (a fixed window
around each keypoint), a limb (a narrow band along it) or a person box reaches.
"""
from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from openpose_train.common.errors import OpenPoseTrainError

#: Gaussian cut-off: cells with exponent above this (value < 1 %) are not drawn (§Gaussians).
GAUSSIAN_CUTOFF = 4.6052
#: PAF half width in grid cells (§PAFs).
PAF_THRESHOLD = 1.0
#: background weight is forced to 1 where the background target is below this (§Label steps, step 12).
BKG_WEIGHT_THRESHOLD = 0.85
#: person ROI enlargement ratios: step 6 (v == 3 / v >= 4 parts) and step 8 ("-1" channels).
ROI_RATIO_VISIBILITY = 0.3
ROI_RATIO_MINUS1 = 1.0


class LabelError(OpenPoseTrainError, ValueError):
    """Input that cannot be rendered (wrong people shape, unsupported model string)."""


def round_half_away(x):
    """C ``std::round``: halves away from zero (numpy's ``round`` goes to even)."""
    return np.trunc(x + np.copysign(np.float32(0.5), x))


@dataclass(frozen=True)
class LabelLayout:
    """Channel layout and masking tables of one (PoseModel, TrainingVariant), derived once."""

    op_model: str
    category: str
    num_parts: int
    num_pafs: int
    has_background: bool
    paf_a: np.ndarray                 # (E,) part index of each PAF's start
    paf_b: np.ndarray                 # (E,) part index of each PAF's end
    sigma_ratios: np.ndarray          # (P,) float32
    part_channels: np.ndarray         # (P, C) bool: heatmap + PAF x/y channels touching the part
    global_masking: bool              # §Masks: global masking runs (TrainingVariant.global_missing_mask)
    missing_threshold: int
    empty_parts: np.ndarray           # (P,) bool: CHANNELS_TO_MASK entry empty
    minus1_masking: bool              # §Masks: the "-1" boxes run
    minus1_parts: np.ndarray          # (P,) bool
    roi_codes: Tuple[int, ...]        # visibility codes X of maskPersonIfVisibleIsX
    feet_pairs: Tuple[Tuple[int, int], ...]

    @property
    def num_channels(self) -> int:
        """C: channels per half of the label."""
        return 2 * self.num_pafs + self.num_parts + int(self.has_background)

    @property
    def heat_offset(self) -> int:
        return 2 * self.num_pafs

    @property
    def bkg_channel(self) -> Optional[int]:
        return 2 * self.num_pafs + self.num_parts if self.has_background else None


_LAYOUTS = {}


def label_layout(model, variant) -> LabelLayout:
    """The :class:`LabelLayout` of ``model`` trained from ``variant`` (cached per object pair)."""
    key = (id(model), id(variant))
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is model and hit[1] is variant:
        return hit[2]
    if not variant.label_rules_implemented:
        raise LabelError(f"model string '{variant.op_model}': its special label rules are not implemented")
    n_parts, n_pafs = model.num_parts, model.num_pafs
    pairs = np.asarray(model.paf_pairs, np.int64).reshape(-1, 2)
    n_channels = 2 * n_pafs + n_parts + int(model.has_background)
    part_channels = np.zeros((n_parts, n_channels), bool)
    part_channels[np.arange(n_parts), 2 * n_pafs + np.arange(n_parts)] = True
    for i, (a, b) in enumerate(pairs):
        part_channels[[a, b], 2 * i] = True
        part_channels[[a, b], 2 * i + 1] = True
    empty = np.zeros(n_parts, bool)
    empty[list(variant.empty_mask_parts)] = True
    minus1 = np.zeros(n_parts, bool)
    minus1[list(variant.minus1_parts)] = True
    ratios = np.asarray(model.sigma_ratios, np.float32)
    if ratios.shape != (n_parts,):
        raise LabelError(f"model {model.name}: {ratios.size} sigma ratios for {n_parts} parts")
    layout = LabelLayout(
        op_model=variant.op_model, category=variant.category, num_parts=n_parts, num_pafs=n_pafs,
        has_background=bool(model.has_background), paf_a=pairs[:, 0].copy(), paf_b=pairs[:, 1].copy(),
        sigma_ratios=ratios, part_channels=part_channels,
        # the model-string rules are TrainingVariant fields (docs/labels.md §Per-model rules)
        global_masking=variant.global_missing_mask, missing_threshold=variant.missing_threshold,
        empty_parts=empty, minus1_masking=variant.minus1_masking, minus1_parts=minus1,
        roi_codes=tuple(variant.roi_mask_codes), feet_pairs=tuple(variant.mask_feet_pairs))
    _LAYOUTS[key] = (model, variant, layout)
    return layout


# ----------------------------------------------------------------------------- keypoints

def sanitize_visibility(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """§Decoding: ``v = round(v)``; a point outside ``[0,width) x [0,height)`` with v != 2 gets v = 2.

    ``points`` (..., 3) float; returns a float32 copy.
    """
    out = np.array(points, np.float32, copy=True)
    v = round_half_away(out[..., 2])
    x, y = out[..., 0], out[..., 1]
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    v[(v != 2) & outside] = 2
    out[..., 2] = v
    return out


_REMAPS = {}


def _remap_tables(variant):
    key = id(variant)
    hit = _REMAPS.get(key)
    if hit is not None and hit[0] is variant:
        return hit[1]
    sources = variant.sources
    n_parts = len(sources)
    width = max([len(s) for s in sources] + [1])
    index = np.zeros((n_parts, width), np.int64)
    valid = np.zeros((n_parts, width), bool)
    for i, src in enumerate(sources):
        index[i, :len(src)] = src
        valid[i, :len(src)] = True
    tables = (index, valid, valid.sum(1))
    _REMAPS[key] = (variant, tables)
    return tables


def remap_keypoints(variant, lmdb_points) -> np.ndarray:
    """LMDB keypoints ``(..., P_lmdb, 3)`` -> model keypoints ``(..., P, 3)`` (``lmdbJointsToOurModel``).

    The point is the mean of the part's sources; visibility (§Decoding): no source -> (0, 0) v=4; one
    source -> 4/2/0 kept, anything else 1; several -> any 4 (or unexpected) 4, else 2 mixed with
    0/1 -> 3, all 2 -> 2, any 0 -> 0, else 1.
    """
    pts = np.asarray(lmdb_points, np.float32)
    if pts.shape[-1] != 3 or pts.shape[-2] != variant.num_lmdb_parts:
        raise LabelError(f"{variant.op_model}: expected (..., {variant.num_lmdb_parts}, 3) LMDB "
                         f"keypoints, got {pts.shape}")
    index, valid, count = _remap_tables(variant)
    gathered = pts[..., index, :]                      # (..., P, L, 3)
    w = valid.astype(np.float32)
    denom = np.maximum(count, 1).astype(np.float32)
    xy = (gathered[..., :2] * w[..., None]).sum(-2) / denom[:, None]
    v = gathered[..., 2]
    big = np.float32(99)
    vv = np.where(valid, v, big)                       # padding never counts
    any4 = (valid & ~np.isin(v, (0, 1, 2, 3))).any(-1) | ((valid & (v == 4)).any(-1))
    any2 = (valid & (v == 2)).any(-1)
    any01 = (valid & ((v == 0) | (v == 1))).any(-1)
    all2 = ((vv == 2) | ~valid).all(-1)
    any0 = (valid & (v == 0)).any(-1)
    single = vv[..., 0]
    vis_one = np.where(np.isin(single, (4, 2, 0)), single, np.float32(1))
    vis_many = np.select([any4, any2 & any01, all2, any0], [4, 3, 2, 0], 1).astype(np.float32)
    vis = np.where(count == 1, vis_one, vis_many)
    vis = np.where(count == 0, np.float32(4), vis)
    xy = np.where((count == 0)[:, None], np.float32(0), xy)
    return np.concatenate([xy, vis[..., None]], axis=-1).astype(np.float32)


def flip_people(people: np.ndarray, flip_pairs, flip_width: int) -> np.ndarray:
    """Horizontal flip of keypoints: ``x -> flip_width - 1 - x`` and left/right parts swapped."""
    out = np.array(people, np.float32, copy=True)
    out[..., 0] = np.float32(flip_width - 1) - out[..., 0]
    if len(flip_pairs):
        pairs = np.asarray(flip_pairs, np.int64)
        perm = np.arange(out.shape[-2])
        perm[pairs[:, 0]] = pairs[:, 1]
        perm[pairs[:, 1]] = pairs[:, 0]
        out = out[..., perm, :]
    return out


# ----------------------------------------------------------------------------- ROIs

def keep_roi_inside(x, y, w, h, grid_w: int, grid_h: int):
    """OpenPose's ``keepRoiInside`` on integer arrays: shift negative corners in, clip the far side."""
    w = np.where(x < 0, w + x, w)
    x = np.maximum(x, 0)
    h = np.where(y < 0, h + y, h)
    y = np.maximum(y, 0)
    w = np.where(x + w >= grid_w, grid_w - x, w)
    h = np.where(y + h >= grid_h, grid_h - y, h)
    return x, y, np.maximum(w, 0), np.maximum(h, 0)


def person_rois(people: np.ndarray, stride: int, ratio: float, grid_w: int, grid_h: int):
    """``getObjROI`` for every person: integer (x, y, w, h) arrays in grid cells, clipped.

    Box of the v <= 1 points (divided by the stride), short side raised to half the long one,
    enlarged by ``ratio`` on each side. A person without a v <= 1 point gets an empty ROI.
    """
    people = np.ascontiguousarray(people, np.float32)
    box = _kernels()._person_box
    boxes = np.array([box(people, i, stride, ratio, grid_w, grid_h) for i in range(people.shape[0])],
                     np.int64).reshape(-1, 4)
    return boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def roi_masks(x, y, w, h, grid_w: int, grid_h: int) -> np.ndarray:
    """(n, gy, gx) bool: cell inside each (x, y, w, h) rectangle."""
    cols = np.arange(grid_w)
    rows = np.arange(grid_h)
    in_x = (cols >= x[:, None]) & (cols < (x + w)[:, None])
    in_y = (rows >= y[:, None]) & (rows < (y + h)[:, None])
    return in_y[:, :, None] & in_x[:, None, :]


# ----------------------------------------------------------------------------- Gaussian tables

def gaussian_window(sigma_max: float, stride: int) -> int:
    """Cells per axis that can hold a Gaussian's support: from the first cell centre at or past
    ``x - radius``, cells up to ``x + radius`` (a diameter of ``2 radius / stride`` cells)."""
    radius = float(sigma_max) * np.sqrt(2 * GAUSSIAN_CUTOFF)
    return int(np.floor(2 * radius / stride)) + 1


_CUTOFF_D2 = {}


def cutoff_d2(sigma: float) -> np.float32:
    """The largest float32 squared distance ``d2`` with ``float64(d2) / 2 / sigma / sigma <= GAUSSIAN_CUTOFF``.

    The fork's cut-off test, exactly, as a float32 comparison on ``d2`` (the test is monotone in d2).
    """
    t = _CUTOFF_D2.get(sigma)
    if t is None:
        up, down = np.float32(np.inf), np.float32(-np.inf)
        t = np.float32(2.0 * GAUSSIAN_CUTOFF * sigma * sigma)
        while float(t) / 2.0 / sigma / sigma > GAUSSIAN_CUTOFF:
            t = np.nextafter(t, down)
        while float(np.nextafter(t, up)) / 2.0 / sigma / sigma <= GAUSSIAN_CUTOFF:
            t = np.nextafter(t, up)
        _CUTOFF_D2[sigma] = t
    return t


@dataclass(frozen=True)
class _KernelTables:
    """Everything :func:`_render_kernel` reads besides the sample, per (layout, sigma, stride)."""

    chan_ptr: np.ndarray        # (P + 1,) CSR of LabelLayout.part_channels: part p's channels are
    chan_idx: np.ndarray        # chan_idx[chan_ptr[p]:chan_ptr[p + 1]]
    empty_parts: np.ndarray     # (P,) bool
    minus1_parts: np.ndarray    # (P,) bool
    roi_codes: np.ndarray       # visibility codes < 4 of maskPersonIfVisibleIsX (>= 4 always masks)
    feet: np.ndarray            # (F, 2) knee, ankle
    paf_a: np.ndarray
    paf_b: np.ndarray
    radius: np.ndarray          # (P,) float64 cut-off radius sigma * sqrt(2 cut-off)
    thr: np.ndarray             # (P,) float32 cut-off d2 (cutoff_d2)
    neg_inv_2s2: np.ndarray     # (P,) float64 -1 / (2 sigma^2)
    inv_ratio: np.ndarray       # (P,) float32 Gaussian weight 1 / sigma ratio
    window: int


_KERNEL_TABLES = {}


def _kernel_tables(layout, sigma, stride) -> _KernelTables:
    key = (id(layout), float(sigma), int(stride))
    hit = _KERNEL_TABLES.get(key)
    if hit is not None and hit[0] is layout:
        return hit[1]
    sig = np.float32(sigma) * layout.sigma_ratios                      # float32, as the fork
    sig64 = sig.astype(np.float64)
    parts, chans = np.nonzero(layout.part_channels)                   # row-major: grouped by part
    tables = _KernelTables(
        chan_ptr=np.searchsorted(parts, np.arange(layout.num_parts + 1)).astype(np.int64),
        chan_idx=chans.astype(np.int64), empty_parts=layout.empty_parts.copy(),
        minus1_parts=layout.minus1_parts.copy(),
        roi_codes=np.array([c for c in layout.roi_codes if c < 4], np.float32),
        feet=np.asarray(layout.feet_pairs, np.int64).reshape(-1, 2),
        paf_a=layout.paf_a.astype(np.int64), paf_b=layout.paf_b.astype(np.int64),
        radius=sig64 * np.sqrt(2 * GAUSSIAN_CUTOFF),
        thr=np.array([cutoff_d2(float(s)) for s in sig], np.float32),
        neg_inv_2s2=-1.0 / (2.0 * sig64 * sig64), inv_ratio=np.float32(1) / layout.sigma_ratios,
        window=gaussian_window(sig.max(), stride))
    _KERNEL_TABLES[key] = (layout, tables)
    return tables


# ----------------------------------------------------------------------------- the compiled kernels
#
# numba, not numpy: a label is a few hundred small steps (a box per person and channel, a window
# per keypoint, a band per limb); as numpy calls each costs a microsecond of dispatch, several times
# what writing the label's bytes costs (docs/labels.md §Speed). Every float operation below is the
# one the numpy formulation did, in the same float32/float64 types and order, so the labels stay
# bit-identical (no fastmath: no reassociation, no fused multiply-add).
#
# numba is imported, and the kernels compiled (or loaded from numba's cache), on the first label:
# importing numba costs about half a second, which commands that never render a label do not pay.

_JIT_NAMES = []
_JIT_LOCK = threading.Lock()


def _jit(fn):
    """Register ``fn`` as a kernel: :func:`_kernels` replaces it by its numba version."""
    _JIT_NAMES.append(fn.__name__)
    return fn


def _kernels():
    """The module with every registered kernel compiled (kernels calling kernels find the compiled
    globals: numba resolves them when the caller compiles)."""
    if not isinstance(_render_kernel, types.FunctionType):
        return sys.modules[__name__]
    with _JIT_LOCK:
        if isinstance(_render_kernel, types.FunctionType):
            try:
                from numba import njit
            except ImportError as exc:             # an environment installed before numba was a dependency
                raise ImportError(f"label rendering needs numba ({exc}); run `make install` or "
                                  f"`pip install numba`") from None
            module = globals()
            for name in _JIT_NAMES:
                try:
                    module[name] = njit(cache=True, nogil=True)(module[name])
                except RuntimeError:                   # no writable cache folder: compile in each process
                    module[name] = njit(nogil=True)(module[name])
    return sys.modules[__name__]


_F32_HALF = np.float32(0.5)
_BKG_WEIGHT_THRESHOLD_F32 = np.float32(BKG_WEIGHT_THRESHOLD)    # numpy 2 compares float32 labels in float32


@_jit
def _rha(x):
    """:func:`round_half_away` of one float32."""
    return np.float32(np.trunc(x + np.copysign(_F32_HALF, x)))


@_jit
def _person_box(people, i, stride, ratio, grid_w, grid_h):
    """``getObjROI`` of person ``i`` as bounds ``(x0, y0, x1, y1)``, ``x0 <= x < x1`` (empty when x1 <= x0).

    Box of the v <= 1 points / stride, short side raised to half the long one, enlarged by ``ratio``
    on each side, rounded half away, then ``keepRoiInside`` (the clipped box ends where the
    unclipped one does, at most at the grid's edge). No v <= 1 point: empty.
    """
    s = np.float32(stride)
    lox = np.float32(np.inf)
    loy = np.float32(np.inf)
    hix = np.float32(-np.inf)
    hiy = np.float32(-np.inf)
    seen = False
    for p in range(people.shape[1]):
        if people[i, p, 2] <= 1:
            x = people[i, p, 0] / s
            y = people[i, p, 1] / s
            lox = min(lox, x)
            hix = max(hix, x)
            loy = min(loy, y)
            hiy = max(hiy, y)
            seen = True
    if not seen:
        return 0, 0, 0, 0
    two = np.float32(2)
    cx = (lox + hix) / two
    cy = (loy + hiy) / two
    sx0 = hix - lox
    sy0 = hiy - loy
    sx = max(sx0, sy0 / two)
    sy = max(sy0, sx0 / two)
    r = np.float32(ratio)
    grow = np.float32(1) + np.float32(2) * r
    x0 = int(_rha(cx - sx / two - r * sx))
    y0 = int(_rha(cy - sy / two - r * sy))
    x1 = x0 + int(_rha(sx * grow))
    y1 = y0 + int(_rha(sy * grow))
    return max(x0, 0), max(y0, 0), min(max(x1, 0), grid_w), min(max(y1, 0), grid_h)


@_jit
def _zero_in_boxes(weights, chans, boxes):
    """``weights[c] = 0`` inside ``boxes[i]`` for every ``chans[i, c]`` (weights are finite and >= 0).

    Channels flagged by the same people share the union of those people's boxes, built once as
    row runs: the work is the zeroed area, not boxes x channels (BODY_135's "-1" masking flags
    some 350 channels of every person).
    """
    n, n_ch = chans.shape
    grid_h, grid_w = weights.shape[1], weights.shape[2]
    if n > 62:                                         # person sets as int64 bit masks: direct boxes
        for i in range(n):
            x0, y0, x1, y1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
            for c in range(n_ch):
                if chans[i, c]:
                    weights[c, y0:y1, x0:x1] = 0
        return
    people_of = np.zeros(n_ch, np.int64)
    for i in range(n):
        if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]:
            bit = np.int64(1) << i
            for c in range(n_ch):
                if chans[i, c]:
                    people_of[c] |= bit
    order = np.argsort(people_of)
    cover = np.zeros((grid_h, grid_w), np.bool_)
    run_y = np.empty(grid_h * grid_w, np.int64)
    run_x0 = np.empty(grid_h * grid_w, np.int64)
    run_x1 = np.empty(grid_h * grid_w, np.int64)
    first = 0
    while first < n_ch:                                # one group: the channels of one person set
        group = people_of[order[first]]
        last = first + 1
        while last < n_ch and people_of[order[last]] == group:
            last += 1
        if group == 0:
            first = last
            continue
        if last - first < 4:                           # few channels: their boxes one by one
            for j in range(first, last):
                c = order[j]
                for i in range(n):
                    if (group >> i) & 1:
                        weights[c, boxes[i, 1]:boxes[i, 3], boxes[i, 0]:boxes[i, 2]] = 0
            first = last
            continue
        # the union of the group's boxes as row runs, scanned within their bounding box
        bx0, by0, bx1, by1 = grid_w, grid_h, 0, 0
        for i in range(n):
            if (group >> i) & 1:
                cover[boxes[i, 1]:boxes[i, 3], boxes[i, 0]:boxes[i, 2]] = True
                bx0, by0 = min(bx0, boxes[i, 0]), min(by0, boxes[i, 1])
                bx1, by1 = max(bx1, boxes[i, 2]), max(by1, boxes[i, 3])
        n_runs = 0
        for y in range(by0, by1):
            x = bx0
            while x < bx1:
                if cover[y, x]:
                    start = x
                    while x < bx1 and cover[y, x]:
                        x += 1
                    run_y[n_runs], run_x0[n_runs], run_x1[n_runs] = y, start, x
                    n_runs += 1
                else:
                    x += 1
        cover[by0:by1, bx0:bx1] = False
        for j in range(first, last):
            c = order[j]
            for r in range(n_runs):
                weights[c, run_y[r], run_x0[r]:run_x1[r]] = 0
        first = last


@_jit
def _flag_channels(chans, i, p, chan_ptr, chan_idx):
    for k in range(chan_ptr[p], chan_ptr[p + 1]):
        chans[i, chan_idx[k]] = True


@_jit
def _limb_band(ax, ay, bx, by, grid_w, grid_h, cells, ux_uy):
    """§PAFs: the cells (``gy * grid_w + gx``) of one limb with ends ``a``/``b`` in grid units
    (float32) into ``cells``; returns their count; ``ux_uy`` receives the unit vector.

    A cell belongs to the limb when it lies in the rounded bbox grown by one cell and within
    perpendicular distance 1 (the fork's float32 test). Candidates: per step along the limb's
    major axis, the 4 cells around the line (|u_major| >= 1/sqrt(2) keeps the band within +-1.42
    cells of it). Zero-length limbs cover nothing. Listed along the major axis, then the minor.
    """
    dx = bx - ax
    dy = by - ay
    norm = np.sqrt(dx * dx + dy * dy)
    if not norm > 0:
        return 0
    ux = dx / norm
    uy = dy / norm
    ux_uy[0] = ux
    ux_uy[1] = uy
    one = np.float32(1)
    gw = np.float32(grid_w)
    gh = np.float32(grid_h)
    zero = np.float32(0)
    # bbox grown by one cell, rounded, clipped to the grid (a lo past the grid keeps the range empty)
    lox = min(max(_rha(min(ax, bx) - one), zero), gw)
    loy = min(max(_rha(min(ay, by) - one), zero), gh)
    hix = min(max(_rha(max(ax, bx) + one), zero), gw)
    hiy = min(max(_rha(max(ay, by) + one), zero), gh)
    if abs(ux) >= abs(uy):
        a_major, a_minor, u_major, u_minor = ax, ay, ux, uy
        lo_major, hi_major, lo_minor, hi_minor = lox, hix, loy, hiy
        step_major, step_minor = 1, grid_w
    else:
        a_major, a_minor, u_major, u_minor = ay, ax, uy, ux
        lo_major, hi_major, lo_minor, hi_minor = loy, hiy, lox, hix
        step_major, step_minor = grid_w, 1
    if not hi_minor > lo_minor:
        return 0
    count = 0
    for k in range(int(hi_major - lo_major)):
        major = lo_major + np.float32(k)
        along_minor = (major - a_major) * u_minor
        base = np.floor(a_minor + along_minor / u_major)
        row = int(major) * step_major
        for candidate in range(-1, 3):
            minor = base + np.float32(candidate)
            # |(cx - ax) uy - (cy - ay) ux| as the fork (negated for y-major limbs: same value);
            # branch-free: written always, kept when inside (the band's edge is data-dependent)
            inside = abs(along_minor - (minor - a_minor) * u_major) <= one and lo_minor <= minor < hi_minor
            cells[count] = row + int(minor) * step_minor
            count += inside
    return count


@_jit
def _limb_bands(ends, grid_w, grid_h):
    """:func:`_limb_band` of every row ``(ax, ay, bx, by)`` of ``ends``: (limb, cell, ux, uy) per cell."""
    n = ends.shape[0]
    capacity = 4 * (max(grid_w, grid_h) + 1)
    limb = np.empty(n * capacity, np.int64)
    cell = np.empty(n * capacity, np.int64)
    ux = np.empty(n * capacity, np.float32)
    uy = np.empty(n * capacity, np.float32)
    u = np.empty(2, np.float32)
    total = 0
    for i in range(n):
        count = _limb_band(ends[i, 0], ends[i, 1], ends[i, 2], ends[i, 3], grid_w, grid_h, cell[total:], u)
        limb[total:total + count] = i
        ux[total:total + count] = u[0]
        uy[total:total + count] = u[1]
        total += count
    return limb[:total], cell[:total], ux[:total], uy[:total]


def limb_band_cells(ax, ay, bx, by, grid_w, grid_h):
    """Cells of each limb's PAF (§PAFs): (limb, cell, ux, uy) per covered cell, as the renderer
    draws them (:func:`_limb_band`); ``a``/``b`` limb ends in grid units (pixels / stride)."""
    ends = np.ascontiguousarray(np.stack([ax, ay, bx, by], 1), np.float32)
    return _kernels()._limb_bands(ends, int(grid_w), int(grid_h))


@_jit
def _render_kernel(label, n_ch, people, mask_weight, has_mask, bkg, heat_offset, global_masking,
                   missing_threshold, minus1_masking, chan_ptr, chan_idx, empty_parts, minus1_parts,
                   roi_codes, feet, paf_a, paf_b, radius, thr, neg_inv_2s2, inv_ratio, window, stride):
    """§Label steps 3-12 into ``label`` (2C, gy, gx) for ``people`` (n, P, 3); ``bkg`` -1: no
    background channel; ``mask_weight`` (gy, gx) float32 mask_miss / 255 when ``has_mask``."""
    n_out, grid_h, grid_w = label.shape
    cells = grid_h * grid_w
    n, n_parts = people.shape[0], people.shape[1]
    flat = label.reshape(n_out * cells)
    weights = label[:n_ch]
    tb = n_ch * cells                                  # targets start
    bkg_target = tb + bkg * cells
    s = np.float32(stride)
    # step 5's channels: the main person's missing parts (v >= threshold) and the empty parts
    zeroed = np.zeros(n_ch, np.bool_)
    if n > 0 and global_masking:
        for p in range(n_parts):
            if empty_parts[p] or people[0, p, 2] >= missing_threshold:
                for k in range(chan_ptr[p], chan_ptr[p + 1]):
                    zeroed[chan_idx[k]] = True
    # targets 0 (the background 1 - max(heatmaps): 1 until a Gaussian lowers it, step 10);
    # step 3: weights mask_miss / 255 (or 1), step 5's channels 0
    flat[tb:] = 0
    if bkg >= 0:
        flat[tb + bkg * cells:tb + (bkg + 1) * cells] = 1
    mask_flat = mask_weight.reshape(mask_weight.size)
    for c in range(n_ch):
        if zeroed[c]:
            flat[c * cells:(c + 1) * cells] = 0
        elif has_mask:
            flat[c * cells:(c + 1) * cells] = mask_flat
        else:
            flat[c * cells:(c + 1) * cells] = 1
    if n == 0:
        return
    if global_masking and bkg >= 0:                    # step 5: maskFeet
        for i in range(n):
            for f in range(feet.shape[0]):
                knee, ankle = feet[f, 0], feet[f, 1]
                if people[i, knee, 2] == 2 or people[i, ankle, 2] == 2:
                    continue
                ax = people[i, ankle, 0] / s
                ay = people[i, ankle, 1] / s
                dx = ax - people[i, knee, 0] / s
                dy = ay - people[i, knee, 1] / s
                cx = int(_rha(ax + np.rint(dx * np.float32(0.15))))      # np.rint: cvRound
                cy = int(_rha(ay + np.rint(dy * np.float32(0.15))))
                half = int(_rha(np.float32(0.8) * np.sqrt(dx * dx + dy * dy)))
                x0, y0 = max(cx - half, 0), max(cy - half, 0)
                x1, y1 = min(max(cx + half, 0), grid_w), min(max(cy + half, 0), grid_h)
                weights[bkg, y0:y1, x0:x1] = 0
    # step 6: each person's v >= 4 (and maskPersonIfVisibleIsX) parts in the person's box
    chans = np.zeros((n, n_ch), np.bool_)
    flagged = False
    for i in range(n):
        for p in range(n_parts):
            v = people[i, p, 2]
            hit = v >= 4
            for code in roi_codes:
                hit = hit or v == code
            if hit:
                _flag_channels(chans, i, p, chan_ptr, chan_idx)
                if bkg >= 0:
                    chans[i, bkg] = True
                flagged = True
    if flagged:
        boxes = np.empty((n, 4), np.int64)
        for i in range(n):
            boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3] = _person_box(
                people, i, stride, np.float32(0.3), grid_w, grid_h)       # ROI_RATIO_VISIBILITY
            for c in range(n_ch):
                if zeroed[c]:
                    chans[i, c] = False
        _zero_in_boxes(weights, chans, boxes)
    # step 7: Gaussians of the v <= 1 keypoints (max over people); the weight 1/ratio on their
    # support; the background target min(1 - value) = 1 - max(value) (float32 rounding is monotone)
    start = np.float32(stride / 2.0 - 0.5)
    start64 = np.float64(start)
    g_x = np.empty(window, np.float32)
    g_y = np.empty(window, np.float32)
    sq_x = np.empty(window, np.float32)
    sq_y = np.empty(window, np.float32)
    for i in range(n):
        for p in range(n_parts):
            if not people[i, p, 2] <= 1:
                continue
            x, y = people[i, p, 0], people[i, p, 1]
            fx = int(np.ceil((np.float64(x) - radius[p] - start64) / stride))   # float64, as the fork
            fy = int(np.ceil((np.float64(y) - radius[p] - start64) / stride))
            if not (-window < fx < grid_w and -window < fy < grid_h):
                continue                               # the window misses the grid
            # in-grid cells of the window; a row or column past the cut-off is skipped (no exp)
            ax0, ax1 = max(0, -fx), min(window, grid_w - fx)
            by0, by1 = max(0, -fy), min(window, grid_h - fy)
            cut, neg, ir = thr[p], neg_inv_2s2[p], inv_ratio[p]
            for a in range(ax0, ax1):
                d = (start + np.float32(fx + a) * s) - x
                sq_x[a] = d * d
                if sq_x[a] <= cut:
                    g_x[a] = np.float32(np.exp(np.float64(sq_x[a]) * neg))
            for b in range(by0, by1):
                d = (start + np.float32(fy + b) * s) - y
                sq_y[b] = d * d
                if sq_y[b] <= cut:
                    g_y[b] = np.float32(np.exp(np.float64(sq_y[b]) * neg))
            heat = tb + (heat_offset + p) * cells
            wgt = (heat_offset + p) * cells
            for b in range(by0, by1):
                if sq_y[b] > cut:
                    continue
                # the support in this row, sq_y + sq_x <= cut (then value >= 0.01), is one run of
                # columns: sq_x falls then rises along the row, and float32 addition is monotone
                lo, hi = ax0, ax1
                while lo < hi and sq_y[b] + sq_x[lo] > cut:
                    lo += 1
                while hi > lo and sq_y[b] + sq_x[hi - 1] > cut:
                    hi -= 1
                row = (fy + b) * grid_w + fx
                for a in range(lo, hi):
                    value = g_y[b] * g_x[a]
                    k = row + a
                    flat[heat + k] = max(flat[heat + k], value)
                    flat[wgt + k] = ir
                    if bkg >= 0:
                        flat[bkg_target + k] = min(flat[bkg_target + k], np.float32(1) - value)
    # step 8: the "-1" parts (and the main person's v >= 4 parts) in every person's box
    if minus1_masking:
        chans[:] = False
        flagged = False
        for p in range(n_parts):
            if minus1_parts[p] or people[0, p, 2] >= 4:
                flagged = True
                for i in range(n):
                    _flag_channels(chans, i, p, chan_ptr, chan_idx)
                    if bkg >= 0:
                        chans[i, bkg] = True
        if flagged:
            boxes = np.empty((n, 4), np.int64)
            for i in range(n):
                boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3] = _person_box(
                    people, i, stride, np.float32(1.0), grid_w, grid_h)   # ROI_RATIO_MINUS1
            _zero_in_boxes(weights, chans, boxes)
    # step 11: PAFs, per pair: the float32 sum of u / count in person order where limbs meet
    n_pafs = paf_a.shape[0]
    capacity = 4 * (max(grid_w, grid_h) + 1)
    band = np.empty(n * capacity, np.int64)
    band_u = np.empty((n, 2), np.float32)
    band_end = np.zeros(n + 1, np.int64)
    count = np.zeros(cells, np.int32)
    for e in range(n_pafs):
        pa, pb = paf_a[e], paf_b[e]
        limbs = 0
        for i in range(n):
            if people[i, pa, 2] <= 1 and people[i, pb, 2] <= 1:
                got = _limb_band(people[i, pa, 0] / s, people[i, pa, 1] / s, people[i, pb, 0] / s,
                                 people[i, pb, 1] / s, grid_w, grid_h, band[band_end[limbs]:], band_u[limbs])
                band_end[limbs + 1] = band_end[limbs] + got
                limbs += 1
        if limbs == 0 or band_end[limbs] == 0:
            continue
        for k in range(band_end[limbs]):
            count[band[k]] += 1
        tx = tb + 2 * e * cells
        ty = tx + cells
        for j in range(limbs):
            ux, uy = band_u[j, 0], band_u[j, 1]
            for k in range(band_end[j], band_end[j + 1]):
                cell = band[k]
                if count[cell] == 1:
                    flat[tx + cell] = ux
                    flat[ty + cell] = uy
                else:
                    c32 = np.float32(count[cell])
                    flat[tx + cell] += ux / c32
                    flat[ty + cell] += uy / c32
                flat[2 * e * cells + cell] = 1
                flat[(2 * e + 1) * cells + cell] = 1
        for k in range(band_end[limbs]):
            count[band[k]] = 0
    if bkg >= 0:                                       # step 12
        for k in range(cells):
            if flat[tb + bkg * cells + k] < _BKG_WEIGHT_THRESHOLD_F32:
                flat[bkg * cells + k] = 1


_NO_MASK = np.ones((1, 1), np.float32)


def render_labels(model, variant, people, mask_miss_grid, grid_size, stride, sigma,
                  filled: bool = True, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The OPData label of one sample: float32 ``(2C, gy, gx)`` (§Label steps, in the fork's order).

    ``model``/``variant``: registry PoseModel and TrainingVariant; ``people`` ``(n, P, 3)`` crop
    pixel coordinates, row 0 the main person; ``mask_miss_grid`` uint8 ``(gy, gx)`` (255 = train)
    or None for all 255; ``grid_size`` ``(gx, gy)`` (width, height, as ``crop_size / stride``);
    ``sigma`` the dataset sigma in input pixels; ``filled`` False renders a background-only sample;
    ``out``: a C-contiguous float32 ``(2C, gy, gx)`` array to render into (e.g. a batch slot).
    """
    layout = label_layout(model, variant)
    grid_w, grid_h = int(grid_size[0]), int(grid_size[1])
    n_ch = layout.num_channels
    if out is None:
        label = np.empty((2 * n_ch, grid_h, grid_w), np.float32)   # every element is written below
    else:
        if out.shape != (2 * n_ch, grid_h, grid_w) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise LabelError(f"out must be C-contiguous float32 {(2 * n_ch, grid_h, grid_w)}, got {out.dtype} {out.shape}")
        label = out
    if not filled:                                     # steps 4 and 10
        label[:n_ch].fill(1)
        label[n_ch:].fill(0)
        if layout.has_background:
            label[n_ch + layout.bkg_channel] = 1
        return label
    mask = _NO_MASK
    if mask_miss_grid is not None:
        if np.shape(mask_miss_grid) != (grid_h, grid_w):
            raise LabelError(f"mask_miss grid {np.shape(mask_miss_grid)} differs from the label grid {(grid_h, grid_w)}")
        mask = np.divide(mask_miss_grid, np.float32(255), dtype=np.float32)
    people = np.ascontiguousarray(people, np.float32)
    if people.ndim != 3 or people.shape[1:] != (layout.num_parts, 3):
        raise LabelError(f"people must be (n, {layout.num_parts}, 3) for {layout.op_model}, got {people.shape}")
    t = _kernel_tables(layout, sigma, stride)
    _kernels()._render_kernel(label, n_ch, people, mask, mask_miss_grid is not None,
                   -1 if layout.bkg_channel is None else layout.bkg_channel, layout.heat_offset,
                   layout.global_masking, layout.missing_threshold, layout.minus1_masking, t.chan_ptr, t.chan_idx,
                   t.empty_parts, t.minus1_parts, t.roi_codes, t.feet, t.paf_a, t.paf_b, t.radius, t.thr,
                   t.neg_inv_2s2, t.inv_ratio, t.window, int(stride))
    return label


def label_targets_to_net_output(model, label_or_targets) -> np.ndarray:
    """Targets in net_output channel order (heatmaps, background, PAFs).

    Accepts a full label (``2C`` channels: the target half is used) or targets alone (``C``),
    with or without a leading batch axis; works on numpy arrays and torch tensors.
    """
    n_ch = model.num_channels
    arr = label_or_targets
    axis = arr.ndim - 3
    channels = arr.shape[axis]
    if channels == 2 * n_ch:
        arr = arr[(slice(None),) * axis + (slice(n_ch, None),)]
    elif channels != n_ch:
        raise LabelError(f"{model.name}: expected {n_ch} or {2 * n_ch} channels, got {channels}")
    n_paf = 2 * model.num_pafs
    order = list(range(n_paf, n_ch)) + list(range(n_paf))
    index = (slice(None),) * axis + (order,)
    return arr[index]
