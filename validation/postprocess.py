"""OpenPose's body post-processing: heatmaps + PAFs -> people.

Follows the CUDA path of OpenPose (``docs/postprocessing.md`` §NMS to §Output), which is the one
every body model runs with (the CPU connector only knows BODY_25/COCO/MPI):

* NMS: a peak is a pixel off the outer 1-pixel border, above the NMS threshold and strictly
  greater than its 8 neighbours; peaks in raster order, at most ``max_peaks`` (127) per part;
  position = weighted centroid of the positive values in the 7x7 window plus ``0.5 / scale``;
  score = the value at the integer peak.
* PAF line score: ``n = max(5, min(25, round(sqrt(5 * max(|dx|, |dy|)))))`` samples from A
  (included) towards B (excluded), strict ``> inter_threshold`` per sample, strict
  ``count / n > min_above``, score = mean of the kept samples; the near-points fallback
  ``nms_threshold + 1e-6`` when ``|d| < sqrt(W * H) / 150``; only scores > 1e-6 are candidates.
* Global greedy assembly over all pairs sorted by ``(paf + 0.1 sA + 0.1 sB, paf, pair, A, B)``
  descending, with the five cases (new person, attach A or B, redundant PAF, merge of disjoint
  people).
* Filtering with the model's ``person_filter`` groups (foot parts not counted unless maximising
  positives, a face and each hand counted as one keypoint); keep iff
  ``count >= min_subset_cnt`` and ``score / count >= min_subset_score``; when nobody survives
  the filter runs once more with ``maximize_positives`` (``docs/postprocessing.md`` §Person filter).
* Output: keypoints ``(people, N, 3)`` = (x * scale, y * scale, peak score), zeros for missing
  parts, people in creation order; scores = person score / (N + number of pairs).

Everything that touches pixels is vectorised numpy; only the greedy scan over the (few hundred)
candidate connections is a Python loop. Two exact shortcuts keep a 6-person image near 2 ms on
one core (``benchmarks/postprocess.py``), each with a plain path that tests compare it against:

* Bounded NMS: given per-8x8-block upper bounds of ``|heatmap|`` (computed from the small net
  output by :func:`openpose_train.validation.inference.heatmap_block_bounds`), only blocks that
  can reach the threshold are read; their 10x10 windows are searched side by side in one array.
  Without bounds every pixel is scanned.
* PAF probes: a pair may have at most one failing sample with the default 0.95 rule, so four
  of its own samples (the first at A itself) rule most wrong pairs out before all 25 are read
  (``probe=False``: all).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.registry import PersonFilter, PoseModel, PostprocessThresholds

_WINDOW = np.arange(-3, 4)


class MapShapeError(OpenPoseTrainError, ValueError):
    """Maps whose shape does not fit the model (too few channels, not 3-D)."""


@dataclass
class Peaks:
    """NMS output of all parts, concatenated in part order (raster order inside a part).

    ``x``/``y`` are map-pixel coordinates with the ``0.5 / scale`` offset already added (the
    connector samples PAFs from these shifted points, as OpenPose does)."""

    part: np.ndarray    # (K,) int part index
    x: np.ndarray       # (K,) float32
    y: np.ndarray       # (K,) float32
    score: np.ndarray   # (K,) float32 heatmap value at the integer peak
    start: np.ndarray   # (N + 1,) offsets: peaks of part p are start[p]:start[p+1]

    def of_part(self, part: int) -> np.ndarray:
        """(k, 3) array of (x, y, score) of one part."""
        sl = slice(self.start[part], self.start[part + 1])
        return np.stack([self.x[sl], self.y[sl], self.score[sl]], axis=1)


@dataclass
class Connections:
    """Candidate limb connections (global peak indices), in the greedy scan order."""

    pair: np.ndarray    # (M,) runtime pair index
    a: np.ndarray       # (M,) global peak index of part A
    b: np.ndarray       # (M,) global peak index of part B
    paf: np.ndarray     # (M,) PAF line score


def maximize_positives_thresholds(t: PostprocessThresholds) -> PostprocessThresholds:
    """OpenPose's ``--maximize_positives`` defaults derived from the normal ones (``docs/postprocessing.md`` §Thresholds):
    NMS 0.05 -> 0.02 (MPI's own values stay), inter threshold -> 0.01, min-above 0.75,
    min subset count 2, min subset score 0.05."""
    return dataclasses.replace(
        t,
        nms_threshold=0.02 if t.nms_threshold == 0.05 else t.nms_threshold,
        connect_inter_threshold=min(t.connect_inter_threshold, 0.01),
        connect_inter_min_above_threshold=0.75,
        connect_min_subset_cnt=2,
        connect_min_subset_score=0.05,
    )


def effective_thresholds(model: PoseModel, thresholds: Optional[PostprocessThresholds],
                         maximize_positives: bool) -> PostprocessThresholds:
    """The thresholds a parser runs with: ``thresholds`` when given, else the model's (their
    ``--maximize_positives`` variant when asked)."""
    if thresholds is not None:
        return thresholds
    t = model.thresholds
    return maximize_positives_thresholds(t) if maximize_positives else t


# Block grid of the bounded peak search: block (j, i) holds the pixels of rows 8j+1..8j+8 and
# columns 8i+1..8i+8 (row/column 0 is border and never a peak), so its 10x10 window with the
# one-pixel halo starts at (8j, 8i) and never reaches before the map.
PEAK_BLOCK = 8
# Relative slack on a block's bound: covers float32 (or TF32 on a GPU) rounding of the resize.
BLOCK_BOUND_SLACK = 1e-2
_WIN = PEAK_BLOCK + 2


def peak_block_grid(height: int, width: int) -> Tuple[int, int]:
    """(rows, columns) of the :data:`PEAK_BLOCK` grid that covers every possible peak pixel."""
    return max(-(-(height - 2) // PEAK_BLOCK), 0), max(-(-(width - 2) // PEAK_BLOCK), 0)


def find_peaks(heatmaps: np.ndarray, threshold: float, offset: float = 0.5,
               max_peaks: int = 127, block_bound: Optional[np.ndarray] = None) -> Peaks:
    """OpenPose NMS (CUDA rules) on ``heatmaps`` (N, H, W).

    Sparse and exact: only pixels above ``threshold`` are examined. ``block_bound`` (optional,
    (N, rows, cols) of :func:`peak_block_grid`) is an upper bound of ``|value|`` over each
    block (e.g. :func:`openpose_train.validation.inference.heatmap_block_bounds`, from the net
    output the maps were upsampled from); blocks whose bound is below the threshold are skipped
    unread, which gives the same peaks as the full scan as long as the bound holds.
    """
    hm = np.ascontiguousarray(heatmaps, dtype=np.float32)
    if hm.ndim != 3:
        raise MapShapeError(f"heatmaps must be (N, H, W), got shape {hm.shape}")
    return _find_peaks(hm.reshape(-1), hm.shape, threshold, offset, max_peaks, block_bound)


def _find_peaks(flat: np.ndarray, shape: Tuple[int, int, int], threshold: float, offset: float,
                max_peaks: int, block_bound: Optional[np.ndarray]) -> Peaks:
    """:func:`find_peaks` on a flat float32 buffer whose start holds the (N, H, W) heatmaps
    (the block search reads a few rows past them: other channels when the buffer has them,
    otherwise a zero-padded copy)."""
    n, h, w = shape
    empty_start = np.zeros(n + 1, dtype=np.int64)
    if h < 3 or w < 3:
        e = np.zeros(0, np.float32)
        return Peaks(np.zeros(0, np.int64), e, e, e, empty_start)
    idx, v = strict_peak_pixels(flat, (n, h, w), threshold, block_bound)
    part = idx // (h * w)
    # Peak cap per part, first ones in raster order (idx is sorted).
    counts = np.bincount(part, minlength=n)
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    if counts.max(initial=0) > max_peaks:
        rank = np.arange(idx.size) - start[part]
        ok = rank < max_peaks
        idx, v, part = idx[ok], v[ok], part[ok]
        counts = np.minimum(counts, max_peaks)
        np.cumsum(counts, out=start[1:])
    yy, xx = np.divmod(idx % (h * w), w)
    # Weighted centroid over the positive values of the 7x7 window (clipped to the map).
    wy = yy[:, None, None] + _WINDOW[None, :, None]
    wx = xx[:, None, None] + _WINDOW[None, None, :]
    valid = (wy >= 0) & (wy < h) & (wx >= 0) & (wx < w)
    vals = flat[(part * (h * w))[:, None, None] + np.clip(wy, 0, h - 1) * w + np.clip(wx, 0, w - 1)]
    vals = np.where(valid & (vals > 0), vals, 0).astype(np.float64)
    total = vals.sum(axis=(1, 2))
    cx = (vals * wx).sum(axis=(1, 2)) / total
    cy = (vals * wy).sum(axis=(1, 2)) / total
    return Peaks(part=part, x=(cx + offset).astype(np.float32), y=(cy + offset).astype(np.float32),
                 score=v.astype(np.float32), start=start)


def strict_peak_pixels(flat: np.ndarray, shape: Tuple[int, int, int], threshold: float,
                       block_bound: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted flat indices and values of the pixels of the (N, H, W) heatmaps at the start of
    ``flat`` that are above ``threshold``, off the outer 1-pixel border and strictly greater than
    their 8 neighbours: every pixel scanned, or with ``block_bound`` (see :func:`find_peaks`)
    only the blocks that can reach the threshold (maps of at least 3 x 3)."""
    n, h, w = shape
    if block_bound is None:
        return _strict_peaks_full_scan(flat[:n * h * w], h, w, threshold)
    return _strict_peaks_in_blocks(flat, n, h, w, threshold, block_bound)


def _strict_peaks_full_scan(flat: np.ndarray, h: int, w: int,
                            threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted flat indices and values of the strict 8-neighbour peaks above ``threshold``,
    off the outer border. Neighbours at or below the threshold can never beat a pixel above it,
    so the horizontal test needs only the runs of above-threshold pixels; the few survivors are
    then checked against their other 6 neighbours."""
    idx = np.flatnonzero(flat > threshold)
    v = flat[idx]
    # Horizontal strict maximum using the runs of consecutive above-threshold indices.
    consecutive = idx[1:] == idx[:-1] + 1
    keep = np.ones(idx.size, dtype=bool)
    keep[:-1] &= ~consecutive | (v[:-1] > v[1:])
    keep[1:] &= ~consecutive | (v[1:] > v[:-1])
    idx = idx[keep]
    v = v[keep]
    # CUDA never takes a peak on the outermost 1-pixel border of a map.
    yy, xx = np.divmod(idx % (h * w), w)
    inside = (yy > 0) & (yy < h - 1) & (xx > 0) & (xx < w - 1)
    idx, v = idx[inside], v[inside]
    for step in (-w - 1, -w, -w + 1, w - 1, w, w + 1):
        ok = v > flat[idx + step]
        idx, v = idx[ok], v[ok]
    return idx, v


# Centre pixels of a flattened 8x10 strip window (columns 1..8 of each row).
_STRIP_CENTRE = np.zeros((PEAK_BLOCK, _WIN), dtype=bool)
_STRIP_CENTRE[:, 1:-1] = True
_STRIP_CENTRE = _STRIP_CENTRE.reshape(-1)


def _strict_peaks_in_blocks(flat: np.ndarray, n: int, h: int, w: int, threshold: float,
                            block_bound: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_strict_peaks_full_scan` restricted to the blocks whose bound reaches the
    threshold: their rows with one pixel of halo left and right (8x10 windows) are gathered side
    by side into one 1-D array, where the threshold and horizontal tests are contiguous vector
    operations; the few horizontal maxima are then checked against their other 6 neighbours."""
    nby, nbx = peak_block_grid(h, w)
    bound = np.asarray(block_bound)
    if bound.shape != (n, nby, nbx):
        raise MapShapeError(f"block_bound must have shape {(n, nby, nbx)} for heatmaps "
                            f"{(n, h, w)}, got {bound.shape}")
    # the windows of the last blocks reach up to 6 rows past the maps (none when 8 divides H - 2)
    need = (n - 1) * h * w + PEAK_BLOCK * nby * w + PEAK_BLOCK * (nbx - 1) + _WIN
    if flat.size < need:
        flat = np.concatenate([flat[:n * h * w], np.zeros(need - n * h * w, np.float32)])
    # written as "not below" so that a NaN bound keeps its block
    blocks = np.flatnonzero(~(bound * (1 + BLOCK_BOUND_SLACK) <= threshold))
    if blocks.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    p, j = np.divmod(blocks, nby * nbx)
    j, i = np.divmod(j, nbx)
    s = flat.strides[0]
    # window (p, j, i): rows 8j+1..8j+8, columns 8i..8i+9 (starts one row into the buffer)
    windows = np.lib.stride_tricks.as_strided(
        flat[w:], shape=(n, nby, nbx, PEAK_BLOCK, _WIN),
        strides=(h * w * s, PEAK_BLOCK * w * s, PEAK_BLOCK * s, w * s, s), writeable=False)
    g = windows[p, j, i].reshape(-1)               # (blocks * 80,) window values
    centre = g[1:-1]
    hit = (centre > threshold) & (centre > g[:-2]) & (centre > g[2:])
    hit &= np.tile(_STRIP_CENTRE, blocks.size)[1:-1]
    block, within = np.divmod(np.flatnonzero(hit) + 1, PEAK_BLOCK * _WIN)
    r, c = np.divmod(within, _WIN)
    y = PEAK_BLOCK * j[block] + 1 + r
    x = PEAK_BLOCK * i[block] + c
    # the last blocks reach past the map (and wrap into the next row / map): drop those pixels,
    # and the bottom/right border (CUDA never takes a peak on the outer 1-pixel border)
    inside = (y < h - 1) & (x < w - 1)
    idx = p[block[inside]] * (h * w) + y[inside] * w + x[inside]
    v = flat[idx]
    for step in (-w - 1, -w, -w + 1, w - 1, w, w + 1):
        ok = v > flat[idx + step]
        idx, v = idx[ok], v[ok]
    order = np.argsort(idx, kind="stable")
    return idx[order], v[order]


def _paf_channels(model: PoseModel) -> np.ndarray:
    """(P, 2) absolute net_output channels of the x/y PAF of each runtime pair."""
    base = model.num_parts + int(model.has_background)
    return base + np.asarray(model.map_index, dtype=np.int64).reshape(-1, 2)


def _paf_samples(flat, chan, ax, ay, step_x, step_y, ux, uy, h, w, steps):
    """PAF projections ``u . paf`` of each pair at its samples ``steps`` (float32, (M, k) or
    (1, k)): sample i is read at ``floor(a + i * d / n + 0.5)``, clamped to the map. ``flat``:
    the maps as one 1-D array, ``chan``: (M, 2) offsets of the pairs' x and y maps in it."""
    sx = np.clip(np.floor(ax[:, None] + steps * step_x[:, None] + np.float32(0.5)), 0, w - 1)
    sy = np.clip(np.floor(ay[:, None] + steps * step_y[:, None] + np.float32(0.5)), 0, h - 1)
    pixel = sy.astype(np.int64) * w + sx.astype(np.int64)
    return ux[:, None] * flat[chan[:, 0:1] + pixel] + uy[:, None] * flat[chan[:, 1:2] + pixel]


@functools.lru_cache(maxsize=16)
def _max_failing_samples(min_above: float, float32_fraction: bool = False) -> np.ndarray:
    """(26,) most samples at or below the inter threshold that a pair of n samples may have and
    still pass ``count / n > min_above`` (evaluated as the scorer does; -1: it never passes)."""
    table = np.full(26, -1, dtype=np.int64)
    for n in range(1, 26):
        count = np.arange(n + 1, dtype=np.int64)
        if float32_fraction:
            ok = np.flatnonzero(count.astype(np.float32) / np.float32(n) > np.float32(min_above))
        else:
            ok = np.flatnonzero(count / np.float32(n) > min_above)
        if ok.size:
            table[n] = n - ok[0]
    return table


def candidate_scores(maps: np.ndarray, model: PoseModel, peaks: Peaks,
                     thresholds: PostprocessThresholds, probe: bool = True,
                     cpu_build: bool = False) -> Connections:
    """PAF line scores above 1e-6 of the (A, B) candidates of every runtime pair, by pair and
    then A, B. ``probe=False`` reads every sample of every pair instead of ruling most pairs out
    with four probe samples first (the plain path; both give the same connections).
    ``cpu_build``: OpenPose's CPU build arithmetic (``getScoreAB``): the kept samples summed in
    float32 in sample order and ``count / n`` in float32 (the CUDA path sums pairwise and
    compares the fraction in float64, ``docs/postprocessing.md`` §PAF scoring)."""
    c, h, w = maps.shape
    pairs = np.asarray(model.runtime_pairs, dtype=np.int64).reshape(-1, 2)
    counts = np.diff(peaks.start)
    na, nb = counts[pairs[:, 0]], counts[pairs[:, 1]]
    m = na * nb
    total_m = int(m.sum())
    if total_m == 0:
        z = np.zeros(0, np.int64)
        return Connections(z, z, z, np.zeros(0, np.float32))
    pair_id = np.repeat(np.arange(len(pairs)), m)
    local = np.arange(total_m) - np.repeat(np.cumsum(m) - m, m)
    ia, ib = np.divmod(local, nb[pair_id])
    ga = peaks.start[pairs[pair_id, 0]] + ia
    gb = peaks.start[pairs[pair_id, 1]] + ib
    ax, ay = peaks.x[ga], peaks.y[ga]
    dx, dy = peaks.x[gb] - ax, peaks.y[gb] - ay
    # float32 throughout, as OpenPose computes it (sample rounding can depend on it).
    n_samples = np.clip(np.floor(np.sqrt(np.float32(5) * np.maximum(np.abs(dx), np.abs(dy)))
                                 + np.float32(0.5)), 5, 25).astype(np.int64)
    norm = np.sqrt(dx * dx + dy * dy)
    safe = np.where(norm > 1e-6, norm, np.float32(1))
    ux, uy = dx / safe, dy / safe
    nf = n_samples.astype(np.float32)
    chan = _paf_channels(model)[pair_id] * (h * w)
    flat = maps.reshape(-1)
    step_x, step_y = dx / nf, dy / nf
    inter = np.float32(thresholds.connect_inter_threshold)
    min_above = thresholds.connect_inter_min_above_threshold
    # A pair passes with at most max_fail[n] samples at or below the threshold (0 or 1 with the
    # default 0.95), so four probe samples (its samples 0, n/2, n/4, 3n/4, computed the same way)
    # rule out most pairs (limbs of different people) before the full 25-sample gather; each
    # probe is read only for the pairs the previous ones left in. Sample 0 is A's own pixel
    # (A + 0 * step), the same for all of A's candidates.
    todo = np.arange(total_m)
    if probe:
        max_fail = _max_failing_samples(min_above, cpu_build)[n_samples]
        own = (np.clip(np.floor(peaks.y + np.float32(0.5)), 0, h - 1).astype(np.int64) * w
               + np.clip(np.floor(peaks.x + np.float32(0.5)), 0, w - 1).astype(np.int64))[ga]
        value = ux * flat[chan[:, 0] + own] + uy * flat[chan[:, 1] + own]
        fails = (~(value > inter)).astype(np.int64)
        todo = np.flatnonzero(fails <= max_fail)
        fails = fails[todo]
        for quarter in (2, 1, 3):
            steps = ((n_samples[todo] * quarter) // 4).astype(np.float32)[:, None]
            value = _paf_samples(flat, chan[todo], ax[todo], ay[todo], step_x[todo],
                                 step_y[todo], ux[todo], uy[todo], h, w, steps)[:, 0]
            fails = fails + ~(value > inter)
            alive = fails <= max_fail[todo]
            todo, fails = todo[alive], fails[alive]
    steps = np.arange(25, dtype=np.float32)
    sample = _paf_samples(flat, chan[todo], ax[todo], ay[todo], step_x[todo], step_y[todo],
                          ux[todo], uy[todo], h, w, steps[None, :])
    above = (sample > inter) & (steps[None, :] < n_samples[todo, None])
    count = above.sum(axis=1)
    kept = np.where(above, sample, np.float32(0))
    passed = np.zeros(total_m, dtype=bool)
    mean = np.zeros(total_m, dtype=np.float64)
    if cpu_build:       # running float32 sum (adding the zeros of dropped samples is exact)
        total = np.cumsum(kept, axis=1, dtype=np.float32)[:, -1]
        mean[todo] = total / np.maximum(count, 1).astype(np.float32)
        passed[todo] = count.astype(np.float32) / nf[todo] > np.float32(min_above)
    else:
        mean[todo] = kept.sum(axis=1, dtype=np.float32) / np.maximum(count, 1)
        passed[todo] = count / nf[todo] > min_above
    near = norm < np.sqrt(np.float32(w * h)) / np.float32(150)
    score = np.where(passed, mean,
                     np.where(near, np.float32(thresholds.nms_threshold + 1e-6), np.float32(-1)))
    score = np.where(norm > 1e-6, score, np.float32(-1)).astype(np.float32)
    ok = score > 1e-6
    return Connections(pair_id[ok], ga[ok], gb[ok], score[ok])


def score_connections(maps: np.ndarray, model: PoseModel, peaks: Peaks,
                      thresholds: PostprocessThresholds, probe: bool = True) -> Connections:
    """PAF line scores of every (A, B) candidate of every runtime pair, sorted in OpenPose's
    greedy order. ``maps`` is the full (C, H, W) net_output-ordered stack. ``probe``: see
    :func:`candidate_scores`."""
    found = candidate_scores(maps, model, peaks, thresholds, probe)
    pair_id, ga, gb, score = found.pair, found.a, found.b, found.paf
    total = (score + np.float32(0.1) * peaks.score[ga] + np.float32(0.1) * peaks.score[gb])
    # Descending on (total, paf, pair, indexA, indexB): lexsort's last key is the primary one.
    order = np.lexsort((-gb, -ga, -pair_id, -score, -total))
    return Connections(pair_id[order], ga[order], gb[order], score[order])


@dataclass
class _Person:
    parts: List[int]     # global peak index per part, -1 = missing
    count: int
    score: float
    alive: bool = True


def assemble_people(connections: Connections, peaks: Peaks, model: PoseModel) -> List[_Person]:
    """OpenPose's greedy scan (CUDA ``pafVectorIntoPeopleVector``): people in creation order,
    merged-away people are marked dead (OpenPose erases them; the order of the rest is equal)."""
    n_parts = model.num_parts
    pairs = model.runtime_pairs
    assigned = [-1] * int(peaks.part.size)
    peak_score = peaks.score.tolist()
    people: List[_Person] = []
    masks: List[int] = []       # bit p set = the person has part p (disjointness test of case 5)
    for pair, a, b, paf in zip(connections.pair.tolist(), connections.a.tolist(),
                               connections.b.tolist(), connections.paf.tolist()):
        part_a, part_b = pairs[pair]
        pa, pb = assigned[a], assigned[b]
        if pa < 0 and pb < 0:                      # 1. new person
            parts = [-1] * n_parts
            parts[part_a], parts[part_b] = a, b
            assigned[a] = assigned[b] = len(people)
            people.append(_Person(parts, 2, peak_score[a] + peak_score[b] + paf))
            masks.append((1 << part_a) | (1 << part_b))
        elif pa < 0 or pb < 0:                     # 2./3. attach the unassigned end
            owner = pa if pa >= 0 else pb
            part_new, new = (part_b, b) if pa >= 0 else (part_a, a)
            person = people[owner]
            if person.parts[part_new] < 0:
                person.parts[part_new] = new
                person.count += 1
                person.score += peak_score[new] + paf
                assigned[new] = owner
                masks[owner] |= 1 << part_new
        elif pa == pb:                             # 4. redundant PAF inside one person
            people[pa].score += paf
        else:                                      # 5. merge two disjoint people
            keep, gone = min(pa, pb), max(pa, pb)
            p1, p2 = people[keep], people[gone]
            if not masks[keep] & masks[gone]:
                masks[keep] |= masks[gone]
                for part, g in enumerate(p2.parts):
                    if g >= 0:
                        p1.parts[part] = g
                        assigned[g] = keep
                p1.count += p2.count
                p1.score += p2.score + paf
                p2.alive = False
    return [p for p in people if p.alive]


def _capped(person: _Person, group: Sequence[int], limit: int) -> int:
    """How many keypoints of ``group`` the count loses when the group counts at most ``limit``."""
    present = sum(person.parts[i] >= 0 for i in group)
    return max(present - limit, 0)


def _effective_count(person: _Person, groups: PersonFilter, maximize_positives: bool) -> Optional[int]:
    """Keypoint count used by the keep rule, or None when a count rule drops the person
    (the model's ``person_filter`` groups, docs/postprocessing.md §Person filter)."""
    count = person.count
    if groups.face_parts:
        # the face counts as one keypoint; a person that is then a single keypoint (a lone face)
        # is dropped; each hand counts as one keypoint.
        count -= _capped(person, groups.face_parts, 1)
        if count == 1:
            return None
        count -= sum(_capped(person, hand, 1) for hand in groups.hand_groups)
    if not maximize_positives and groups.foot_parts:
        feet = _capped(person, groups.foot_parts, 0)
        count -= feet
        if feet and count <= 4:
            return None
    return count


def filter_people(people: List[_Person], model: PoseModel, thresholds: PostprocessThresholds,
                  maximize_positives: bool = False) -> List[_Person]:
    """OpenPose's keep rule: min subset count and score after the count rules (no cap on the
    number of people, as in current OpenPose); re-run with ``maximize_positives`` when nobody
    survives."""
    def run(maximize):
        kept = []
        for person in people:
            count = _effective_count(person, model.person_filter, maximize)
            if count is None or count <= 0:
                continue
            if (count >= thresholds.connect_min_subset_cnt
                    and person.score / count >= thresholds.connect_min_subset_score):
                kept.append(person)
        return kept

    kept = run(maximize_positives)
    if not kept and not maximize_positives:
        kept = run(True)
    return kept


def check_maps(model: PoseModel, maps: np.ndarray) -> None:
    """Raise MapShapeError unless ``maps`` is (C, H, W) with at least the model's channels."""
    if maps.ndim != 3:
        raise MapShapeError(f"{model.name}: maps must be (C, H, W), got shape {maps.shape}")
    if maps.shape[0] < model.num_channels:
        raise MapShapeError(
            f"{model.name}: maps have {maps.shape[0]} channels, the model needs "
            f"{model.num_channels} (parts {model.num_parts} + background "
            f"{int(model.has_background)} + PAFs {2 * model.num_pafs})")


def find_maximum_keypoints(model: PoseModel, maps: np.ndarray, scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Hand / face networks (OpenPose's ``MaximumCaffe``, ``docs/postprocessing.md`` §Hand and face): one "person" whose part p
    is the global maximum of heatmap p (first occurrence in raster order), score = that value;
    no NMS, no threshold. Returns ((1, N, 3), (1,)) with the mean keypoint score."""
    n = model.num_parts
    hm = np.asarray(maps[:n], dtype=np.float32).reshape(n, -1)
    best = hm.argmax(axis=1)
    y, x = np.divmod(best, maps.shape[2])
    score = hm[np.arange(n), best]
    keypoints = np.stack([x * scale, y * scale, score], axis=1).astype(np.float32)[None]
    return keypoints, np.array([score.mean()], dtype=np.float32)


def parse_people(model: PoseModel, heatmaps_and_pafs: np.ndarray, scale: float = 1.0,
                 thresholds: Optional[PostprocessThresholds] = None,
                 maximize_positives: bool = False,
                 block_bound: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """People from net_output-ordered maps (C, H, W), as OpenPose finds them.

    ``scale`` maps a map pixel to an image pixel (OpenPose's ``scaleNetToOutput``): 1 for maps
    at image resolution, ``s`` of :func:`openpose_train.validation.inference.net_to_image_scale`
    for maps at net input resolution. ``thresholds`` defaults to the model's (with the
    ``maximize_positives`` variant when asked). Returns ``keypoints`` (people, N, 3) float32 in
    image pixels (x, y, score; zeros for missing parts) and ``scores`` (people,). Models without
    pairs (HAND_21, FACE_70) take each heatmap's global maximum (:func:`find_maximum_keypoints`).
    ``block_bound`` (optional): per-block bounds of the heatmaps that let the NMS skip blocks
    that cannot reach the threshold (see :func:`find_peaks`); the result is the same.
    """
    maps = np.asarray(heatmaps_and_pafs)
    check_maps(model, maps)
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    if not model.runtime_pairs:         # hand / face: no PAFs, one global maximum per part
        return find_maximum_keypoints(model, maps, scale)
    t = effective_thresholds(model, thresholds, maximize_positives)
    n = model.num_parts
    # the maps' own buffer: the PAF channels after the heatmaps give the block search its margin
    peaks = _find_peaks(maps.reshape(-1), (n,) + maps.shape[1:], t.nms_threshold, 0.5 / scale,
                        t.max_peaks, block_bound)
    connections = score_connections(maps, model, peaks, t)
    people = filter_people(assemble_people(connections, peaks, model), model, t, maximize_positives)
    return people_arrays(people, peaks, model, scale)


def people_arrays(people: List[_Person], peaks: Peaks, model: PoseModel,
                  scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """OpenPose's output arrays of the kept people: keypoints (people, N, 3) = (peak x * scale,
    peak y * scale, peak score), zeros for missing parts; scores = person score / (N + pairs)."""
    n = model.num_parts
    keypoints = np.zeros((len(people), n, 3), dtype=np.float32)
    scores = np.zeros(len(people), dtype=np.float32)
    denominator = n + len(model.runtime_pairs)
    for i, person in enumerate(people):
        g = np.asarray(person.parts)
        have = g >= 0
        keypoints[i, have, 0] = peaks.x[g[have]] * scale
        keypoints[i, have, 1] = peaks.y[g[have]] * scale
        keypoints[i, have, 2] = peaks.score[g[have]]
        scores[i] = person.score / denominator
    return keypoints, scores
