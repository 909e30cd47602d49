"""OPData labels for a whole batch in one pass on a torch device (CPU or CUDA).

Same definition as the CPU reference :mod:`labels` (``docs/labels.md`` §Label steps) and the same
float32 operation order, so the two agree within 1e-5 for the same augmented keypoints. People are
padded to ``(N, M, P, 3)`` with v = 2 (a value no rule draws or masks); each rule is evaluated
on the full ``(N, ., gy, gx)`` grid, looping only over the M people slots.

Also :func:`warp_batch`, the image/mask warp of :mod:`augment` on the device (bicubic
``grid_sample``, a = -0.75 like OpenCV; OpenCV's fixed-point tables make it differ by about one
grey level), for pipelines that move the warps to the GPU.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import labels as L

PAD_VISIBILITY = 2.0


def _f32(value, device):
    return torch.tensor(np.float32(value), dtype=torch.float32, device=device)


def round_half_away(x):
    """``std::round`` on tensors (torch.round goes to even)."""
    return torch.trunc(x + torch.copysign(torch.full_like(x, 0.5), x))


def keep_roi_inside(x, y, w, h, grid_w: int, grid_h: int):
    w = torch.where(x < 0, w + x, w)
    x = x.clamp(min=0)
    h = torch.where(y < 0, h + y, h)
    y = y.clamp(min=0)
    w = torch.where(x + w >= grid_w, grid_w - x, w)
    h = torch.where(y + h >= grid_h, grid_h - y, h)
    return x, y, w.clamp(min=0), h.clamp(min=0)


def roi_masks(x, y, w, h, grid_w: int, grid_h: int):
    """(..., gy, gx) bool rectangles from integer (...,) tensors."""
    cols = torch.arange(grid_w, device=x.device)
    rows = torch.arange(grid_h, device=x.device)
    in_x = (cols >= x[..., None]) & (cols < (x + w)[..., None])
    in_y = (rows >= y[..., None]) & (rows < (y + h)[..., None])
    return in_y[..., :, None] & in_x[..., None, :]


def person_rois(people, stride: int, ratio: float, grid_w: int, grid_h: int):
    """:func:`labels.person_rois` on (N, M, P, 3): integer (N, M) tensors x, y, w, h."""
    dev = people.device
    vis = (people[..., 2] <= 1)[..., None]
    pts = people[..., :2] / _f32(stride, dev)
    has = vis[..., 0].any(-1)
    inf = torch.tensor(float("inf"), device=dev)
    lo = torch.where(vis, pts, inf).amin(-2)
    hi = torch.where(vis, pts, -inf).amax(-2)
    lo = torch.where(has[..., None], lo, torch.zeros_like(lo))
    hi = torch.where(has[..., None], hi, torch.zeros_like(hi))
    centre = (lo + hi) / 2
    size = hi - lo
    sx, sy = size[..., 0], size[..., 1]
    raise_x = sx < sy / 2
    raise_y = ~raise_x & (sy < sx / 2)
    sx2 = torch.where(raise_x, sy / 2, sx)
    sy2 = torch.where(raise_y, sx / 2, sy)
    size = torch.stack([sx2, sy2], -1)
    r = _f32(ratio, dev)
    corner = round_half_away(centre - size / 2 - r * size).long()
    extent = round_half_away(size * _f32(1 + 2 * np.float32(ratio), dev)).long()
    extent = torch.where(has[..., None], extent, torch.zeros_like(extent))
    return keep_roi_inside(corner[..., 0], corner[..., 1], extent[..., 0], extent[..., 1], grid_w, grid_h)


class _Tables:
    """Device copies of a LabelLayout's tables."""

    def __init__(self, layout: L.LabelLayout, device):
        self.part_channels = torch.as_tensor(layout.part_channels, device=device).float()
        self.empty = torch.as_tensor(layout.empty_parts, device=device)
        self.minus1 = torch.as_tensor(layout.minus1_parts, device=device)
        self.ratios = torch.as_tensor(layout.sigma_ratios, device=device)
        self.inv_ratios = (1 / self.ratios).float()
        self.paf_a = torch.as_tensor(layout.paf_a, device=device)
        self.paf_b = torch.as_tensor(layout.paf_b, device=device)


_TABLES = {}


def _tables(layout, device):
    key = (id(layout), str(device))
    hit = _TABLES.get(key)
    if hit is None or hit[0] is not layout:
        hit = (layout, _Tables(layout, device))
        _TABLES[key] = hit
    return hit[1]


def pad_people(items: Sequence, num_parts: int):
    """(N, M, P, 3) float32 padded with v = 2, and (N,) bool 'has a main person'."""
    counts = [0 if it is None else len(it[0]) for it in items]
    m = max(counts + [1])
    out = np.zeros((len(items), m, num_parts, 3), np.float32)
    out[..., 2] = PAD_VISIBILITY
    for i, it in enumerate(items):
        if it is not None and counts[i]:
            out[i, :counts[i]] = it[0]
    return out, np.asarray(counts) > 0


def _zero_in_rois(weights, tables, layout, parts, rects):
    """weights (N, C, gy, gx) *= not covered; parts (N, M, P) bool; rects (N, M, gy, gx) bool."""
    chans = (parts.float() @ tables.part_channels) > 0                   # (N, M, C)
    if layout.has_background:
        chans[..., layout.bkg_channel] = parts.any(-1)
    covered = torch.einsum("nmc,nmyx->ncyx", chans.float(), rects.float()) > 0
    weights.mul_(~covered)


def render_labels_batch(model, variant, items: Sequence, grid_size, stride: int, sigma: float,
                        device="cpu") -> torch.Tensor:
    """Labels of a batch: float32 ``(N, 2C, gy, gx)`` on ``device``.

    ``items``: per sample ``(people (n, P, 3), mask_grid (gy, gx) uint8 or None, filled)``, or None
    for an invalid record (all-zero label). Same meaning as :func:`labels.render_labels`.
    """
    layout = L.label_layout(model, variant)
    device = torch.device(device)
    tables = _tables(layout, device)
    grid_w, grid_h = int(grid_size[0]), int(grid_size[1])
    n_items = len(items)
    n_ch = layout.num_channels
    valid = torch.tensor([it is not None for it in items], device=device)
    filled = torch.tensor([it is not None and bool(it[2]) for it in items], device=device)
    masks = np.full((n_items, grid_h, grid_w), 255, np.uint8)
    for i, it in enumerate(items):
        if it is not None and it[1] is not None:
            masks[i] = it[1]
    people_np, has_main = pad_people(items, layout.num_parts)
    people = torch.from_numpy(people_np).to(device)
    has_main = torch.from_numpy(has_main).to(device) & filled
    weights = (torch.from_numpy(masks).to(device).float() / _f32(255, device))[:, None].repeat(1, n_ch, 1, 1)
    targets = torch.zeros((n_items, n_ch, grid_h, grid_w), dtype=torch.float32, device=device)
    vis = people[..., 2]
    active = has_main[:, None, None, None]

    if layout.global_masking:                                            # step 5
        missing = tables.empty[None] | (vis[:, 0] >= layout.missing_threshold)          # (N, P)
        chans = (missing.float() @ tables.part_channels) > 0
        weights.mul_(~(chans[:, :, None, None] & active))
        if layout.has_background and layout.feet_pairs:
            _mask_feet(weights, layout, people, stride, grid_w, grid_h, has_main)
    flagged = vis >= 4                                                   # step 6
    for code in layout.roi_codes:
        flagged |= vis == code
    flagged &= has_main[:, None, None]
    if bool(flagged.any()):
        rects = roi_masks(*person_rois(people, stride, L.ROI_RATIO_VISIBILITY, grid_w, grid_h), grid_w, grid_h)
        _zero_in_rois(weights, tables, layout, flagged, rects)
    _render_heatmaps(targets, weights, tables, layout, people, sigma, stride, grid_w, grid_h)   # step 7
    if layout.minus1_masking:                                            # step 8
        parts = (tables.minus1[None] | (vis[:, 0] >= 4)) & has_main[:, None]
        if bool(parts.any()):
            rects = roi_masks(*person_rois(people, stride, L.ROI_RATIO_MINUS1, grid_w, grid_h), grid_w, grid_h)
            _zero_in_rois(weights, tables, layout, parts[:, None].expand_as(vis), rects)
    heat = slice(layout.heat_offset, layout.heat_offset + layout.num_parts)
    if layout.has_background:                                            # step 10
        targets[:, layout.bkg_channel] = (1 - targets[:, heat].amax(1)).clamp(min=0)
    _render_pafs(targets, weights, tables, layout, people, stride, grid_w, grid_h)           # step 11
    if layout.has_background:                                            # step 12
        bkg_w = weights[:, layout.bkg_channel]
        bkg_w[targets[:, layout.bkg_channel] < L.BKG_WEIGHT_THRESHOLD] = 1
    # background-only samples (steps 4, 10) and invalid records
    unfilled = ~filled
    if bool(unfilled.any()):
        weights[unfilled] = 1
        targets[unfilled] = 0
        if layout.has_background:
            targets[unfilled, layout.bkg_channel] = 1
    label = torch.cat([weights, targets], 1)
    label[~valid] = 0
    return label


def _mask_feet(weights, layout, people, stride, grid_w, grid_h, has_main):
    dev = people.device
    pairs = torch.as_tensor(layout.feet_pairs, device=dev)
    knee, ankle = people[:, :, pairs[:, 0]], people[:, :, pairs[:, 1]]             # (N, M, 2, 3)
    ok = (knee[..., 2] != 2) & (ankle[..., 2] != 2) & has_main[:, None, None]
    s = _f32(stride, dev)
    k, a = knee[..., :2] / s, ankle[..., :2] / s
    diff = a - k
    dist = round_half_away(_f32(0.8, dev) * torch.sqrt((diff * diff).sum(-1))).long()
    corner = round_half_away(a + torch.round(diff * _f32(0.15, dev))).long() - dist[..., None]
    rx, ry, rw, rh = keep_roi_inside(corner[..., 0], corner[..., 1], 2 * dist, 2 * dist, grid_w, grid_h)
    rects = roi_masks(rx, ry, rw, rh, grid_w, grid_h) & ok[..., None, None]       # (N, M, 2, gy, gx)
    weights[:, layout.bkg_channel].mul_(~rects.flatten(1, 2).any(1))


def _render_heatmaps(targets, weights, tables, layout, people, sigma, stride, grid_w, grid_h):
    dev = people.device
    start = _f32(stride / 2.0 - 0.5, dev)
    s = _f32(stride, dev)
    cx = start + torch.arange(grid_w, device=dev, dtype=torch.float32) * s
    cy = start + torch.arange(grid_h, device=dev, dtype=torch.float32) * s
    sig = (_f32(sigma, dev) * tables.ratios).double()[None, :, None, None]        # (1, P, 1, 1)
    heat = slice(layout.heat_offset, layout.heat_offset + layout.num_parts)
    t_heat = targets[:, heat]
    support_any = torch.zeros_like(t_heat, dtype=torch.bool)
    for m in range(people.shape[1]):
        p = people[:, m]                                                  # (N, P, 3)
        dx = cx - p[..., 0:1]
        dy = cy - p[..., 1:2]
        d2 = (dx * dx)[:, :, None, :] + (dy * dy)[:, :, :, None]           # float32 (N, P, gy, gx)
        exponent = d2.double() / 2.0 / sig / sig
        support = (exponent <= L.GAUSSIAN_CUTOFF) & (p[..., 2] <= 1)[..., None, None]
        value = torch.exp(-exponent).float()
        torch.maximum(t_heat, torch.where(support, value, torch.zeros_like(value)), out=t_heat)
        support_any |= support
    t_heat.clamp_(max=1)
    targets[:, heat] = t_heat
    w_heat = weights[:, heat]
    weights[:, heat] = torch.where(support_any, tables.inv_ratios[None, :, None, None], w_heat)


def _render_pafs(targets, weights, tables, layout, people, stride, grid_w, grid_h):
    if layout.num_pafs == 0:
        return
    dev = people.device
    s = _f32(stride, dev)
    one = _f32(1, dev)
    gx = torch.arange(grid_w, device=dev, dtype=torch.float32)[None, None, None, :]
    gy = torch.arange(grid_h, device=dev, dtype=torch.float32)[None, None, :, None]
    gxi = torch.arange(grid_w, device=dev)[None, None, None, :]
    gyi = torch.arange(grid_h, device=dev)[None, None, :, None]
    n_items, n_pafs = people.shape[0], layout.num_pafs
    sum_x = torch.zeros((n_items, n_pafs, grid_h, grid_w), dtype=torch.float32, device=dev)
    sum_y = torch.zeros_like(sum_x)
    count = torch.zeros_like(sum_x)
    for m in range(people.shape[1]):
        p = people[:, m]
        pa, pb = p[:, tables.paf_a], p[:, tables.paf_b]                  # (N, E, 3)
        ok = (pa[..., 2] <= 1) & (pb[..., 2] <= 1)
        a, b = pa[..., :2] / s, pb[..., :2] / s
        d = b - a
        norm = torch.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
        ok &= norm > 0
        ux = torch.where(ok, d[..., 0] / norm, torch.zeros_like(norm))
        uy = torch.where(ok, d[..., 1] / norm, torch.zeros_like(norm))
        lo = round_half_away(torch.minimum(a, b) - one).long().clamp(min=0)
        hi = round_half_away(torch.maximum(a, b) + one).long()
        hi = torch.minimum(hi, torch.tensor([grid_w, grid_h], device=dev))
        e4 = (slice(None), slice(None), None, None)
        inside = ((gxi >= lo[..., 0][e4]) & (gxi < hi[..., 0][e4]) & (gyi >= lo[..., 1][e4])
                  & (gyi < hi[..., 1][e4]))
        dist = torch.abs((gx - a[..., 0][e4]) * uy[e4] - (gy - a[..., 1][e4]) * ux[e4])
        on = inside & (dist <= L.PAF_THRESHOLD) & ok[e4]
        sum_x += torch.where(on, ux[e4], torch.zeros_like(sum_x))
        sum_y += torch.where(on, uy[e4], torch.zeros_like(sum_y))
        count += on
    hit = count > 0
    safe = count.clamp(min=1)
    paf_x = torch.where(hit, sum_x / safe, torch.zeros_like(sum_x))
    paf_y = torch.where(hit, sum_y / safe, torch.zeros_like(sum_y))
    targets[:, 0:2 * n_pafs:2] = paf_x
    targets[:, 1:2 * n_pafs:2] = paf_y
    weights[:, 0:2 * n_pafs:2][hit] = 1
    weights[:, 1:2 * n_pafs:2][hit] = 1


def warp_batch(images: torch.Tensor, matrices, out_size, border: float = 0.0) -> torch.Tensor:
    """Bicubic affine warps on the device: ``dst(q) = src(M^-1 q)`` with OpenCV's pixel convention.

    ``images`` (N, C, H, W) float; ``matrices`` (N, 2, 3) source->destination (``AugmentParams.warp``);
    ``out_size`` (W, H); ``border`` constant value outside the source.
    """
    n, _, h, w = images.shape
    out_w, out_h = int(out_size[0]), int(out_size[1])
    mats = torch.as_tensor(np.asarray(matrices, np.float64), device=images.device)
    full = torch.zeros((n, 3, 3), dtype=torch.float64, device=images.device)
    full[:, :2] = mats
    full[:, 2, 2] = 1
    inv = torch.linalg.inv(full)[:, :2]                                  # destination -> source
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64, device=images.device),
                            torch.arange(out_w, dtype=torch.float64, device=images.device), indexing="ij")
    dst = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)
    src = dst @ inv.transpose(1, 2)                                      # (N, HW, 2) source pixels
    # align_corners=True: -1/+1 are the centres of the first/last pixels, like OpenCV's integer centres
    grid = torch.stack([src[..., 0] / max(w - 1, 1) * 2 - 1, src[..., 1] / max(h - 1, 1) * 2 - 1], -1)
    grid = grid.reshape(n, out_h, out_w, 2).to(images.dtype)
    shifted = images - border
    out = torch.nn.functional.grid_sample(shifted, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
    return out + border
