"""Keypoints and person boxes as the labels read them, in numpy (``docs/labels.md`` §Decoding, §Masks).

People are one array ``(n_people, P, 3)`` of ``(x, y, v)`` in crop pixel coordinates, row 0 the
main person (the one the sample was centred on), already remapped to the model
(:func:`remap_keypoints`) and augmented. Visibility codes (§Visibility): 0 occluded, 1 visible,
2 outside/unlabeled, 3 synthetic point with a missing source, 4 not in the dataset.
"""
from __future__ import annotations

import numpy as np

from .labels_layout import LabelError, round_half_away


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


def roi_masks(x, y, w, h, grid_w: int, grid_h: int) -> np.ndarray:
    """(n, gy, gx) bool: cell inside each (x, y, w, h) rectangle."""
    cols = np.arange(grid_w)
    rows = np.arange(grid_h)
    in_x = (cols >= x[:, None]) & (cols < (x + w)[:, None])
    in_y = (rows >= y[:, None]) & (rows < (y + h)[:, None])
    return in_y[:, :, None] & in_x[:, None, :]

