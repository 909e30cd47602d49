"""OPData label rendering, CPU reference (``docs/labels.md`` §Visibility, §Channel order, §Label steps).

A label is float32 ``(2C, gy, gx)``: the first half holds loss weights, the second half targets,
channel ``c`` of the first half weighting channel ``C + c``. Inside each half: PAF x/y pairs
(``2E``), heatmaps (``P``), then the background channel when the model has one.

People are one array ``(n_people, P, 3)`` of ``(x, y, v)`` in crop pixel coordinates, row 0 the
main person (the one the sample was centred on), already remapped to the model
(:func:`remap_keypoints`) and augmented. Visibility codes (§Visibility): 0 occluded, 1 visible,
2 outside/unlabeled, 3 synthetic point with a missing source, 4 not in the dataset.

Only the cells a Gaussian or a limb can reach are computed: Gaussians in a fixed window around
each keypoint, PAFs in a narrow band along each limb, all people and parts in one numpy pass.
"""
from __future__ import annotations

import threading
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


def _box_bounds(corner, end, grid):
    """:func:`keep_roi_inside` on ``(n, 2)`` corner/end arrays (x, y columns), ``grid`` (2,), as
    bounds ``lo <= cell < hi``: ``lo`` is the clipped corner, the clipped extent is ``max(hi - lo, 0)``
    (the kept box ends where the unclipped one does, at most at the grid's edge)."""
    return np.maximum(corner, 0), np.minimum(np.maximum(end, 0), grid)     # np.clip: slower on small arrays


def _person_boxes(people, stride, ratio, grid):
    """:func:`person_rois` as ``(n, 2)`` bounds ``lo``, ``hi`` (x, y columns, :func:`_box_bounds`)."""
    vis = (people[..., 2] <= 1)[..., None]
    pts = people[..., :2] / np.float32(stride)
    none = ~vis[:, :, 0].any(-1)
    lo = np.minimum.reduce(pts, axis=1, where=vis, initial=np.inf)      # (n, 2)
    hi = np.maximum.reduce(pts, axis=1, where=vis, initial=-np.inf)
    lo[none] = 0
    hi[none] = 0
    centre = (lo + hi) / 2
    size = hi - lo
    # the short side raised to half the long one (both cannot be short: sizes are >= 0)
    size = np.maximum(size, size[:, ::-1] / 2)
    r = np.float32(ratio)
    box = round_half_away(np.concatenate([centre - size / 2 - r * size, size * (1 + 2 * r)], 1)).astype(np.int64)
    box[none, 2:] = 0
    return _box_bounds(box[:, :2], box[:, :2] + box[:, 2:], grid)


def person_rois(people: np.ndarray, stride: int, ratio: float, grid_w: int, grid_h: int):
    """``getObjROI`` for every person: integer (x, y, w, h) arrays in grid cells, clipped.

    Box of the v <= 1 points (divided by the stride), short side raised to half the long one,
    enlarged by ``ratio`` on each side. A person without a v <= 1 point gets an empty ROI.
    """
    lo, hi = _person_boxes(np.asarray(people, np.float32), stride, ratio, np.array([grid_w, grid_h]))
    extent = np.maximum(hi - lo, 0)
    return lo[:, 0], lo[:, 1], extent[:, 0], extent[:, 1]


def roi_masks(x, y, w, h, grid_w: int, grid_h: int) -> np.ndarray:
    """(n, gy, gx) bool: cell inside each (x, y, w, h) rectangle."""
    cols = np.arange(grid_w)
    rows = np.arange(grid_h)
    in_x = (cols >= x[:, None]) & (cols < (x + w)[:, None])
    in_y = (rows >= y[:, None]) & (rows < (y + h)[:, None])
    return in_y[:, :, None] & in_x[:, None, :]


def _zero_in_boxes(weights, layout, parts, corner, end, already_zero=None):
    """Zero, inside each person's box, the weights of that person's flagged parts (+PAFs, +bkg).

    ``parts`` (n, P) bool; ``corner``/``end`` (n, 2) box bounds (:func:`_box_bounds`); ``already_zero`` (C,) bool:
    channels known to be zero everywhere (skipped).
    """
    chans = (parts.astype(np.float32) @ _part_channels_f32(layout)) > 0   # (n, C)
    if layout.has_background:
        chans[:, layout.bkg_channel] = parts.any(-1)
    if already_zero is not None:
        chans[:, already_zero] = False
    used = chans.any(0).nonzero()[0]
    if used.size == 0:
        return
    selected = chans[:, used]
    if np.count_nonzero(selected) <= _FEW_BOXES:
        # weights are finite and >= 0 here: "*= 0 inside the box" is "= 0 inside the box"
        person, column = np.nonzero(selected)
        corners, ends = corner.tolist(), end.tolist()
        for i, c in zip(person.tolist(), used[column].tolist()):
            (x0, y0), (x1, y1) = corners[i], ends[i]
            weights[c, y0:y1, x0:x1] = 0
        return
    grid_h, grid_w = weights.shape[1:]
    # box of person i = outer(rows_i, cols_i): covered[c] = sum_i chans[i, c] rows_i^T cols_i
    cols = np.arange(grid_w)
    rows = np.arange(grid_h)[:, None]
    in_x = ((cols >= corner[:, :1]) & (cols < end[:, :1])).astype(np.float32)            # (n, gx)
    in_y = ((rows >= corner[:, 1]) & (rows < end[:, 1])).astype(np.float32)              # (gy, n)
    covered = (in_y * selected.T[:, None, :].astype(np.float32)) @ in_x           # (used, gy, gx)
    weights[used] *= covered == 0


#: up to this many (person, channel) boxes, :func:`_zero_in_boxes` assigns slices instead of one matmul
_FEW_BOXES = 48

_PART_CHANNELS_F32 = {}


def _part_channels_f32(layout):
    hit = _PART_CHANNELS_F32.get(id(layout))
    if hit is None or hit[0] is not layout:
        hit = _PART_CHANNELS_F32[id(layout)] = (layout, layout.part_channels.astype(np.float32))
    return hit[1]


# ----------------------------------------------------------------------------- rendering

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


_GAUSSIAN_TABLES = {}


def _gaussian_tables(layout, sigma, stride):
    """Per part (numpy scalars when all parts share one sigma): cut-off radius (float64), cut-off
    d2 (float32), -1/(2 sigma^2) (float64); 1/ratio (float32, :func:`_inverse_ratios`); the window
    size. Cached per (layout, sigma, stride)."""
    key = (id(layout), float(sigma), int(stride))
    hit = _GAUSSIAN_TABLES.get(key)
    if hit is not None and hit[0] is layout:
        return hit[1]
    sig = np.float32(sigma) * layout.sigma_ratios                      # float32, as the fork
    window = gaussian_window(sig.max(), stride)
    if (sig == sig[0]).all():
        sig = sig[:1]
    sig64 = sig.astype(np.float64)
    tables = [sig64 * np.sqrt(2 * GAUSSIAN_CUTOFF), np.array([cutoff_d2(float(s)) for s in sig], np.float32),
              -1.0 / (2.0 * sig64 * sig64)]
    if sig.size == 1:                                                  # one sigma: numpy scalars
        tables = [t[0] for t in tables]
    tables = (*tables, _inverse_ratios(layout.sigma_ratios), window)
    _GAUSSIAN_TABLES[key] = (layout, tables)
    return tables


def _inverse_ratios(ratios):
    """1 / sigma ratio per part (float32); one value when every part has the same ratio."""
    inv = np.float32(1) / ratios
    return inv[:1] if (inv == inv[0]).all() else inv


def render_heatmaps(targets, weights, layout, people, sigma, stride, grid_w, grid_h):
    """§Gaussians in place: Gaussians of every v <= 1 keypoint (max over people).

    Each keypoint's window of cells; exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2/2s^2) exp(-dy^2/2s^2),
    so only 2 x window exponentials per keypoint (cells outside the grid get dx^2 = inf: value 0),
    the cut-off tested on the float32 d2 as the fork (:func:`cutoff_d2`); one ``maximum.at`` for
    all keypoints (out-of-grid cells are clamped onto the edge with value 0: no effect).
    exp(-e) <= 1 already, so the fork's cap at 1 changes nothing; a cell is in some Gaussian's
    support exactly when its target is > 0 (the cut-off keeps values >= 0.01), which gives the
    weight override without tracking the support.
    """
    person, part = np.nonzero(people[..., 2] <= 1)
    if part.size == 0:
        return
    radius, thr, neg_inv_2s2, inv_ratio, window = _gaussian_tables(layout, sigma, stride)
    if radius.ndim:                                     # sigma ratios differ between parts
        radius, thr, neg_inv_2s2 = radius[part][:, None], thr[part][:, None, None], neg_inv_2s2[part][:, None, None]
    xy = people[person, part, :2]                                       # (K, 2) float32
    start = np.float32(stride / 2.0 - 0.5)
    first = np.ceil((xy - radius - start) / stride).astype(np.int32)   # float64, as the fork
    # keypoints whose window misses the grid draw nothing
    reach = ((first < _grid_array(grid_w, grid_h)) & (first > -window)).all(1)
    if not reach.all():
        keep = reach.nonzero()[0]
        if keep.size == 0:
            return
        part, xy, first = part[keep], xy[keep], first[keep]
        if np.ndim(radius):
            thr, neg_inv_2s2 = thr[keep], neg_inv_2s2[keep]
    cells = first[:, :, None] + np.arange(window, dtype=np.int32)       # (K, 2, w): x row, y row
    clipped = np.minimum(np.maximum(cells, 0), _last_cells(grid_w, grid_h))
    d = (start + cells.astype(np.float32) * np.float32(stride)) - xy[:, :, None]
    sq = d * d
    np.copyto(sq, np.float32(np.inf), where=clipped != cells)          # outside the grid: value 0
    g = np.exp(sq * neg_inv_2s2).astype(np.float32)
    d2 = sq[:, 1, :, None] + sq[:, 0, None, :]                          # (K, wy, wx) float32, as the fork
    value = g[:, 1, :, None] * g[:, 0, None, :]
    value *= d2 <= thr
    rows = clipped[:, 1] * grid_w + (part.astype(np.int32) * (grid_w * grid_h))[:, None]
    flat = rows[:, :, None] + clipped[:, 0, None, :]
    hs = slice(layout.heat_offset, layout.heat_offset + layout.num_parts)
    np.maximum.at(targets[hs].reshape(-1), flat.reshape(-1), value.reshape(-1))
    support = (value > 0).reshape(-1)
    w = weights[hs].reshape(-1)
    # np.compress: the boolean-mask gather, several times faster than flat[support] here
    w[np.compress(support, flat)] = inv_ratio if inv_ratio.size == 1 else \
        np.compress(support, np.broadcast_to(inv_ratio[part][:, None, None], value.shape))


_LAST_CELLS = {}


def _last_cells(grid_w, grid_h):
    """int32 ``[[grid_w - 1], [grid_h - 1]]``, cached (read only)."""
    last = _LAST_CELLS.get((grid_w, grid_h))
    if last is None:
        last = _LAST_CELLS[grid_w, grid_h] = np.array([[grid_w - 1], [grid_h - 1]], np.int32)
        last.flags.writeable = False
    return last


_SCRATCH = threading.local()


def _scratch_index(size: int) -> np.ndarray:
    """A reused int32 buffer of at least ``size`` elements (its contents are garbage)."""
    buf = getattr(_SCRATCH, "index", None)
    if buf is None or buf.size < size:
        buf = _SCRATCH.index = np.empty(size, np.int32)
    return buf


def limb_band_cells(ax, ay, bx, by, grid_w, grid_h):
    """Cells of each limb's PAF (§PAFs): (limb, cell, ux, uy) per covered cell.

    ``a``/``b`` are limb ends in grid units (pixels / stride, float32), ``cell`` is ``gy * grid_w
    + gx``; ``ux``/``uy`` the limb's unit vector. A cell belongs to a limb when it lies in the
    rounded bbox grown by one cell and within perpendicular distance 1. Candidates: per step along
    the limb's major axis, the 4 cells around the line (|u_major| >= 1/sqrt(2) keeps the band
    within +-1.42 cells of it), then the fork's exact float32 test. Zero-length limbs cover nothing.
    Cells are listed limb by limb, along the major axis, then along the minor axis.
    """
    a = np.stack([ax, ay], 1).astype(np.float32, copy=False)
    b = np.stack([bx, by], 1).astype(np.float32, copy=False)
    cells = grid_w * grid_h
    index, ux, uy = _limb_cells(a, b, grid_w, grid_h, np.arange(a.shape[0], dtype=np.float32) * cells)
    return index // cells, index % cells, ux, uy


#: limb table columns (see _limb_cells) for x-major and y-major limbs
_LIMB_COLUMNS_X = np.array([0, 1, 2, 3, 4, 6, 5, 7, 8, 9, 10, 11, 12])
_LIMB_COLUMNS_Y = np.array([1, 0, 3, 2, 5, 7, 4, 6, 8, 9, 10, 12, 11])
_BOX_GROW = np.array([-1, -1, 1, 1], np.float32)
_CANDIDATES = np.arange(-1, 3, dtype=np.float32)


_LIMB_GRID_TABLES = {}


def _limb_grid_tables(grid_w, grid_h):
    """float32 bbox limits ``(gx, gy, gx, gy)`` and flat-index strides ``(1, gx)`` (cached, read only)."""
    hit = _LIMB_GRID_TABLES.get((grid_w, grid_h))
    if hit is None:
        hit = (np.array([grid_w, grid_h, grid_w, grid_h], np.float32), np.array([1, grid_w], np.float32))
        for table in hit:
            table.flags.writeable = False
        _LIMB_GRID_TABLES[grid_w, grid_h] = hit
    return hit


def _limb_cells(a, b, grid_w, grid_h, base=None):
    """:func:`limb_band_cells` on (L, 2) ends; ``base`` (L,) is added to each limb's cell index."""
    n = a.shape[0]
    d = b - a
    norm = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    drawn = norm > 0
    u = d / np.where(drawn, norm, np.float32(1))[:, None]
    # bbox grown by one cell, rounded, clipped to the grid: lo_x, lo_y, hi_x, hi_y (a lo past the grid
    # clipped to its size keeps the range empty, as the unclipped one); float32 holds these integers
    box = round_half_away(np.concatenate([np.minimum(a, b), np.maximum(a, b)], 1) + _BOX_GROW)
    np.maximum(box, 0, out=box)
    limits, strides = _limb_grid_tables(grid_w, grid_h)
    np.minimum(box, limits, out=box)
    # per limb: a_major, a_minor, u_major, u_minor, lo_major, hi_major, lo_minor, hi_minor, ux, uy, base,
    # flat-index strides of the major and minor axes (x major when |ux| >= |uy|)
    table = np.concatenate([a, u, box, u, np.zeros((n, 1), np.float32) if base is None else base[:, None],
                            strides[None].repeat(n, 0)], 1)
    table = np.where((np.abs(u[:, 0]) >= np.abs(u[:, 1]))[:, None], table[:, _LIMB_COLUMNS_X],
                     table[:, _LIMB_COLUMNS_Y])
    # steps along the major axis; none for zero-length limbs or an empty minor range
    steps = (np.maximum(table[:, 5] - table[:, 4], 0) * (drawn & (table[:, 7] > table[:, 6]))).astype(np.int64)
    total = int(steps.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    # one column per (limb, step along its major axis): table columns as contiguous rows
    rows = np.repeat(table.T, steps, axis=1)                            # (13, total)
    first = (np.cumsum(steps) - steps).astype(np.float32)
    major = np.arange(total, dtype=np.float32) + np.repeat(table[:, 4] - first, steps)     # float32
    along = major - rows[0]                                             # major - a_major
    along_minor = along * rows[3]
    minor = np.floor(rows[1] + along_minor / rows[2])[:, None] + _CANDIDATES
    # |(cx - ax) uy - (cy - ay) ux| as the fork: (major - a_major) u_minor - (minor - a_minor) u_major,
    # negated for y-major limbs (same absolute value, same float32 products)
    dist = np.abs(along_minor[:, None] - (minor - rows[1, :, None]) * rows[2, :, None])
    valid = (dist <= PAF_THRESHOLD) & (minor >= rows[6, :, None]) & (minor < rows[7, :, None])
    cell = (major * rows[11] + rows[10])[:, None] + minor * rows[12, :, None]
    hit = valid.reshape(-1).nonzero()[0]
    u = np.take(rows[8:10], hit >> 2, axis=1)
    return cell.reshape(-1)[hit].astype(np.int64), u[0], u[1]


def render_pafs(targets, weights, layout, people, stride, grid_w, grid_h):
    """§PAFs in place: unit vectors along every limb with both ends v <= 1, averaged by count.

    Cells covered by one limb of a pair get its vector; cells where several people's limbs of the
    same pair meet get the float32 sum of u / count in limb order (the reference's order).
    """
    if layout.num_pafs == 0:
        return
    vis = people[..., 2] <= 1
    person, pair = np.nonzero(vis[:, layout.paf_a] & vis[:, layout.paf_b])
    if person.size == 0:
        return
    s = np.float32(stride)
    a = people[person, layout.paf_a[pair], :2] / s
    b = people[person, layout.paf_b[pair], :2] / s
    cells = grid_w * grid_h
    # flat index into the targets of the pair's x channel; y is + cells
    base, ux, uy = _limb_cells(a, b, grid_w, grid_h, (2 * cells) * pair.astype(np.float32))
    if base.size == 0:
        return
    t = targets.reshape(-1)
    w = weights.reshape(-1)
    base_y = base + cells
    t[base] = ux
    t[base_y] = uy
    w[base] = 1
    w[base_y] = 1
    # several people on one cell of a pair: find them with a scatter of entry ids (last one wins)
    ids = np.arange(base.size, dtype=np.int32)
    owner = _scratch_index(t.size)
    owner[base] = ids
    winner = owner[base]
    loser = winner != ids
    if not loser.any():
        return
    shared = loser
    shared[winner[loser]] = True
    bs = base[shared]
    ys = bs + cells
    t[bs] = 0
    np.add.at(t, bs, np.float32(1))
    count = t[bs]
    t[bs] = 0
    t[ys] = 0
    np.add.at(t, bs, ux[shared] / count)
    np.add.at(t, ys, uy[shared] / count)


_FEET_INDEX = {}


def _mask_feet(weights, layout, people, stride, grid_w, grid_h):
    """maskFeet (§Masks): clear the background weight on each foot box of every person."""
    index = _FEET_INDEX.get(layout.feet_pairs)
    if index is None:
        index = _FEET_INDEX[layout.feet_pairs] = np.asarray(layout.feet_pairs, np.int64).reshape(-1)
    joints = people[:, index].reshape(-1, 2, 3)                              # (n * pairs, knee/ankle, xyv)
    ok = (joints[:, :, 2] != 2).all(1)
    if not ok.any():
        return
    joints = joints[ok][:, :, :2] / np.float32(stride)
    a = joints[:, 1]
    diff = a - joints[:, 0]
    # columns: foot centre x, y (np.rint = cvRound), half size
    box = round_half_away(np.concatenate([a + np.rint(diff * np.float32(0.15)),
                                          np.float32(0.8) * np.sqrt((diff * diff).sum(-1, keepdims=True))], 1))
    box = box.astype(np.int64)
    dist = box[:, 2:]
    lo, hi = _box_bounds(box[:, :2] - dist, box[:, :2] + dist, _grid_array(grid_w, grid_h))
    bkg = weights[layout.bkg_channel]
    for x0, y0, x1, y1 in np.concatenate([lo, hi], 1).tolist():
        bkg[y0:y1, x0:x1] = 0


_GRIDS = {}


def _grid_array(grid_w, grid_h):
    """``np.array([grid_w, grid_h])``, cached (read only)."""
    grid = _GRIDS.get((grid_w, grid_h))
    if grid is None:
        grid = _GRIDS[grid_w, grid_h] = np.array([grid_w, grid_h])
        grid.flags.writeable = False
    return grid


_MISSING = {}


def _missing_channels(layout, main_missing):
    """Global-masking channels (§Masks) for the main person's missing parts ``main_missing`` (P,) bool: the
    zeroed channels (C,) bool or None, their runs ``[(start, stop), ...]`` and the runs of the
    other channels. Cached per pattern."""
    key = (id(layout), main_missing.tobytes())
    hit = _MISSING.get(key)
    if hit is not None and hit[0] is layout:
        return hit[1]
    missing = layout.empty_parts | main_missing
    n_ch = layout.num_channels
    zeroed, runs = None, []
    if missing.any():
        zeroed = layout.part_channels[missing].any(0)
        edges = np.flatnonzero(np.diff(np.concatenate([[False], zeroed, [False]]).astype(np.int8)))
        runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
        zeroed.flags.writeable = False
    bounds = [0] + [i for run in runs for i in run] + [n_ch]
    kept = [(start, stop) for start, stop in zip(bounds[::2], bounds[1::2]) if stop > start]
    if len(_MISSING) >= 4096:                          # bounded: patterns of a long run
        _MISSING.clear()
    _MISSING[key] = (layout, (zeroed, runs, kept))
    return zeroed, runs, kept


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
    weights, targets = label[:n_ch], label[n_ch:]
    targets.fill(0)
    if not filled:                                     # steps 4 and 10
        weights.fill(1)
        if layout.has_background:
            targets[layout.bkg_channel] = 1
        return label
    mask = None
    if mask_miss_grid is not None:
        mask = np.asarray(mask_miss_grid)
        if mask.shape != (grid_h, grid_w):
            raise LabelError(f"mask_miss grid {mask.shape} differs from the label grid {(grid_h, grid_w)}")
    people = np.asarray(people, np.float32)
    if people.ndim != 3 or people.shape[1:] != (layout.num_parts, 3):
        raise LabelError(f"people must be (n, {layout.num_parts}, 3) for {layout.op_model}, got {people.shape}")
    n_people = people.shape[0]
    vis = people[..., 2]
    grid = _grid_array(grid_w, grid_h)
    zeroed, zero_runs, kept_runs = None, (), ((0, n_ch),)
    if n_people and layout.global_masking:
        zeroed, zero_runs, kept_runs = _missing_channels(layout, vis[0] >= layout.missing_threshold)
    # step 3 (mask_miss / 255, or 1, on every channel) and step 5's zeroed channels, each cell written once
    if mask is None:
        for start, stop in kept_runs:
            weights[start:stop].fill(1)
    elif kept_runs:
        first = weights[kept_runs[0][0]]
        np.divide(mask, np.float32(255), out=first, dtype=np.float32)
        for start, stop in kept_runs:
            weights[start + (start == kept_runs[0][0]):stop] = first
    for start, stop in zero_runs:
        weights[start:stop].fill(0)
    if n_people and layout.global_masking:             # step 5
        if layout.has_background and layout.feet_pairs:
            _mask_feet(weights, layout, people, stride, grid_w, grid_h)
    if n_people:                                       # step 6
        flagged = vis >= 4
        for code in layout.roi_codes:
            if code < 4:
                flagged |= vis == code
        if flagged.any():
            _zero_in_boxes(weights, layout, flagged, *_person_boxes(people, stride, ROI_RATIO_VISIBILITY, grid),
                           zeroed)
    render_heatmaps(targets, weights, layout, people, sigma, stride, grid_w, grid_h)   # step 7
    if n_people and layout.minus1_masking:            # step 8
        parts = layout.minus1_parts | (vis[0] >= 4)
        if parts.any():
            _zero_in_boxes(weights, layout, np.broadcast_to(parts, vis.shape),
                           *_person_boxes(people, stride, ROI_RATIO_MINUS1, grid))
    if layout.has_background:                          # step 10
        heat = targets[layout.heat_offset:layout.heat_offset + layout.num_parts]
        bkg = targets[layout.bkg_channel]
        heat.max(0, out=bkg)
        np.subtract(np.float32(1), bkg, out=bkg)
        np.maximum(bkg, 0, out=bkg)
    render_pafs(targets, weights, layout, people, stride, grid_w, grid_h)             # step 11
    if layout.has_background:                          # step 12
        np.copyto(weights[layout.bkg_channel], 1, where=targets[layout.bkg_channel] < BKG_WEIGHT_THRESHOLD)
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
