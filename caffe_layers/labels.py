"""OPData label rendering (``docs/labels.md`` §Label steps): :func:`render_labels` and the names the
data path imports from it.

The label's layout and rules are ``labels_layout.py``; keypoint decoding, remapping and flipping
and the person boxes, in numpy, ``labels_keypoints.py``; the compiled kernel that renders a label
(numba: ``docs/labels.md`` §Speed says why and how the output stays bit-identical to the numpy
formulation) ``labels_kernel.py``: the fill, then only the cells a Gaussian (a fixed window around
each keypoint), a limb (a narrow band along it) or a person box reaches. Here: the kernel's
per-model tables, its compilation on the first label, and the entry points that call it.
"""
from __future__ import annotations

import threading
import types
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import labels_kernel
from .labels_kernel import BKG_WEIGHT_THRESHOLD
from .labels_keypoints import flip_people, keep_roi_inside, remap_keypoints, roi_masks, sanitize_visibility
from .labels_layout import (GAUSSIAN_CUTOFF, PAF_THRESHOLD, ROI_RATIO_MINUS1, ROI_RATIO_VISIBILITY, LabelError,
                            LabelLayout, label_layout, label_targets_to_net_output, round_half_away)

#: the labels' API, wherever each name is defined (the data path, the inspector and the tests import it from here)
__all__ = ["BKG_WEIGHT_THRESHOLD", "GAUSSIAN_CUTOFF", "PAF_THRESHOLD", "ROI_RATIO_MINUS1", "ROI_RATIO_VISIBILITY",
           "LabelError", "LabelLayout", "label_layout", "label_targets_to_net_output", "round_half_away",
           "flip_people", "keep_roi_inside", "remap_keypoints", "roi_masks", "sanitize_visibility",
           "gaussian_window", "cutoff_d2", "render_labels", "person_rois", "limb_band_cells"]


# ----------------------------------------------------------------------------- the kernel's tables

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


# ----------------------------------------------------------------------------- compiling the kernel
#
# numba is imported, and the kernels compiled (or loaded from numba's cache), on the first label:
# importing numba costs about half a second, which commands that never render a label do not pay.

_JIT_LOCK = threading.Lock()


def _kernels():
    """``labels_kernel`` with every function it defines compiled (kernels calling kernels find the
    compiled globals: numba resolves them when the caller compiles)."""
    if not isinstance(labels_kernel._render_kernel, types.FunctionType):
        return labels_kernel
    with _JIT_LOCK:
        if isinstance(labels_kernel._render_kernel, types.FunctionType):
            try:
                from numba import njit
            except ImportError as exc:             # an environment installed before numba was a dependency
                raise ImportError(f"label rendering needs numba ({exc}); run `make install` or "
                                  f"`pip install numba`") from None
            module = vars(labels_kernel)
            names = [name for name, value in module.items()
                     if isinstance(value, types.FunctionType) and value.__module__ == labels_kernel.__name__]
            for name in sorted(names, key=lambda name: name == "_render_kernel"):   # the sentinel last
                try:
                    module[name] = njit(cache=True, nogil=True)(module[name])
                except RuntimeError:                   # no writable cache folder: compile in each process
                    module[name] = njit(nogil=True)(module[name])
    return labels_kernel


# ----------------------------------------------------------------------------- entry points

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


def limb_band_cells(ax, ay, bx, by, grid_w, grid_h):
    """Cells of each limb's PAF (§PAFs): (limb, cell, ux, uy) per covered cell, as the renderer
    draws them (``labels_kernel._limb_band``); ``a``/``b`` limb ends in grid units (pixels / stride)."""
    ends = np.ascontiguousarray(np.stack([ax, ay, bx, by], 1), np.float32)
    return _kernels()._limb_bands(ends, int(grid_w), int(grid_h))
