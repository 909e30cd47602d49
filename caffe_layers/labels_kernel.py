"""The compiled label kernel (numba): §Label steps 3-12 of one label, and the person boxes and limb
bands it draws (``docs/labels.md`` §Speed; ``labels.render_labels`` calls it).

numba, not numpy: a label is a few hundred small steps (a box per person and channel, a window per
keypoint, a band per limb); as numpy calls each costs a microsecond of dispatch, several times what
writing the label's bytes costs. Every float operation below is the one the numpy formulation did,
in the same float32/float64 types and order, so the labels stay bit-identical (no fastmath: no
reassociation, no fused multiply-add). Every function here is a kernel, compiled on the first label
(``labels._kernels``). Kernels and the constants they read stay in this one file: numba's cache
sees changes to the compiled function's own file only.
"""
import numpy as np

#: background weight is forced to 1 where the background target is below this (§Label steps, step 12).
BKG_WEIGHT_THRESHOLD = 0.85
_F32_HALF = np.float32(0.5)
_BKG_WEIGHT_THRESHOLD_F32 = np.float32(BKG_WEIGHT_THRESHOLD)    # numpy 2 compares float32 labels in float32


def _rha(x):
    """:func:`round_half_away` of one float32."""
    return np.float32(np.trunc(x + np.copysign(_F32_HALF, x)))


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


def _flag_channels(chans, i, p, chan_ptr, chan_idx):
    for k in range(chan_ptr[p], chan_ptr[p + 1]):
        chans[i, chan_idx[k]] = True


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
