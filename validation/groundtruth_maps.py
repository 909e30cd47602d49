"""Ideal net_output maps drawn from known keypoints, at any resolution.

Used by the post-processing benchmark and the self-contained round-trip tests (the training
label renderer of ``caffe_layers/labels.py`` works on the stride-8 training grid; here the maps
are drawn directly at the resolution the parser reads, e.g. OpenPose's 8x upsampled maps).
Gaussians are combined by max, PAFs (unit vectors A->B within ``paf_width`` of the segment) are
averaged where limbs overlap (the band reaches ``paf_width`` past both ends), the background is ``max(1 - max_parts, 0)``: the conventions of
``spec/openpose_runtime.md`` section 7. Only the window a Gaussian or limb can reach is touched.
"""
from __future__ import annotations

import math

import numpy as np

from openpose_train.generator.registry import PoseModel


# An upright BODY_25 person facing the camera, (x, y) in units of body height from the head top.
BODY_25_UPRIGHT = np.array([
    (0, .06), (0, .17), (-.11, .18), (-.14, .33), (-.15, .46), (.11, .18), (.14, .33),
    (.15, .46), (0, .5), (-.06, .5), (-.07, .72), (-.07, .93), (.06, .5), (.07, .72), (.07, .93),
    (-.025, .04), (.025, .04), (-.05, .05), (.05, .05), (.09, .99), (.11, .98), (.06, .95),
    (-.09, .99), (-.11, .98), (-.06, .95)])


def render_ground_truth_maps(model: PoseModel, keypoints: np.ndarray, height: int, width: int,
                             sigma: float = 7.0, paf_width: float = 8.0,
                             stride: int = 1) -> np.ndarray:
    """(C, H, W) float32 maps in net_output order for ``keypoints`` (people, N, 3) given in
    input pixels (third column > 0 = present). With ``stride`` > 1 the grid has
    ``ceil(size / stride)`` cells whose centres are at ``stride * g + stride / 2 - 0.5``;
    ``sigma`` and ``paf_width`` are in input pixels."""
    n = model.num_parts
    h, w = -(-height // stride), -(-width // stride)
    maps = np.zeros((model.num_channels, h, w), dtype=np.float32)
    centre = stride / 2.0 - 0.5
    cut = sigma * math.sqrt(2 * 4.6052)   # exp(-d^2 / 2 sigma^2) < 0.01 beyond
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, n, 3)
    for person in kps:
        for part in range(n):
            x, y, v = person[part]
            if v <= 0:
                continue
            x0, x1 = _cells(x - cut, x + cut, stride, centre, w)
            y0, y1 = _cells(y - cut, y + cut, stride, centre, h)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = np.arange(x0, x1) * stride + centre
            gy = np.arange(y0, y1) * stride + centre
            d2 = (gx[None, :] - x) ** 2 + (gy[:, None] - y) ** 2
            g = np.exp(-d2 / (2 * sigma * sigma))
            g[d2 / (2 * sigma * sigma) > 4.6052] = 0
            np.maximum(maps[part, y0:y1, x0:x1], g, out=maps[part, y0:y1, x0:x1])
    if model.has_background:
        maps[n] = np.maximum(1 - maps[:n].max(axis=0), 0)
    base = n + int(model.has_background)
    for k, (a, b) in enumerate(model.paf_pairs):
        acc = np.zeros((2, h, w), dtype=np.float32)
        hits = np.zeros((h, w), dtype=np.float32)
        for person in kps:
            if person[a, 2] <= 0 or person[b, 2] <= 0:
                continue
            pa, pb = person[a, :2], person[b, :2]
            d = pb - pa
            length = float(np.hypot(*d))
            if length < 1e-6:
                continue
            u = d / length
            x0, x1 = _cells(min(pa[0], pb[0]) - paf_width, max(pa[0], pb[0]) + paf_width,
                            stride, centre, w)
            y0, y1 = _cells(min(pa[1], pb[1]) - paf_width, max(pa[1], pb[1]) + paf_width,
                            stride, centre, h)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = np.arange(x0, x1) * stride + centre - pa[0]
            gy = np.arange(y0, y1) * stride + centre - pa[1]
            along = gx[None, :] * u[0] + gy[:, None] * u[1]
            across = np.abs(gx[None, :] * u[1] - gy[:, None] * u[0])
            # like the fork's limb band: a little past both ends, so the PAF is full strength
            # at the keypoints themselves (the first PAF sample is taken at A)
            on = (along >= -paf_width) & (along <= length + paf_width) & (across <= paf_width)
            acc[0, y0:y1, x0:x1] += on * u[0]
            acc[1, y0:y1, x0:x1] += on * u[1]
            hits[y0:y1, x0:x1] += on
        np.divide(acc, np.maximum(hits, 1), out=acc)
        maps[base + 2 * k: base + 2 * k + 2] = acc
    return maps


def _cells(lo: float, hi: float, stride: int, centre: float, size: int):
    """Grid cell range [first, last) whose centres lie within [lo, hi], clipped to the map."""
    first = max(int(math.ceil((lo - centre) / stride)), 0)
    last = min(int(math.floor((hi - centre) / stride)) + 1, size)
    return first, last
