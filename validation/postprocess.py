"""OpenPose's body post-processing: heatmaps + PAFs -> people.

Follows the CUDA path of OpenPose (``spec/openpose_runtime.md`` sections 4.4-4.8), which is the one
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
* Filtering: foot keypoints do not count for 25-part and > 70-part models unless maximising
  positives (a person left with <= 4 keypoints after the discount is dropped); for BODY_135
  the face and each hand count as one keypoint (a lone face is dropped); keep iff
  ``count >= min_subset_cnt`` and ``score / count >= min_subset_score``; when nobody survives
  the filter runs once more with ``maximize_positives``.
* Output: keypoints ``(people, N, 3)`` = (x * scale, y * scale, peak score), zeros for missing
  parts, people in creation order; scores = person score / (N + number of pairs).

Everything that touches pixels is vectorised numpy; only the greedy scan over the (few hundred)
candidate connections is a Python loop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from openpose_train.generator.registry import PoseModel, PostprocessThresholds

# Foot keypoints in the BODY_25 / BODY_25B / BODY_135 layouts (spec 4.7).
FOOT_PARTS = tuple(range(19, 25))
# BODY_135 groups that count as at most one keypoint each (spec 4.7): left hand, right hand, face.
BODY_135_GROUPS = (tuple(range(25, 45)), tuple(range(45, 65)), tuple(range(65, 135)))
_WINDOW = np.arange(-3, 4)


class MapShapeError(ValueError):
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
    """OpenPose's ``--maximize_positives`` defaults derived from the normal ones (spec 2.3):
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


def find_peaks(heatmaps: np.ndarray, threshold: float, offset: float = 0.5,
               max_peaks: int = 127) -> Peaks:
    """OpenPose NMS (CUDA rules) on ``heatmaps`` (N, H, W).

    Sparse and exact: only pixels above ``threshold`` are examined. Neighbours at or below the
    threshold can never beat a pixel above it, so the horizontal test needs only the runs of
    above-threshold pixels; the few survivors are then checked against their other 6 neighbours.
    """
    hm = np.ascontiguousarray(heatmaps, dtype=np.float32)
    if hm.ndim != 3:
        raise MapShapeError(f"heatmaps must be (N, H, W), got shape {hm.shape}")
    n, h, w = hm.shape
    empty_start = np.zeros(n + 1, dtype=np.int64)
    if h < 3 or w < 3:
        e = np.zeros(0, np.float32)
        return Peaks(np.zeros(0, np.int64), e, e, e, empty_start)
    flat = hm.reshape(-1)
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
    within = idx % (h * w)
    yy, xx = np.divmod(within, w)
    inside = (yy > 0) & (yy < h - 1) & (xx > 0) & (xx < w - 1)
    idx, v = idx[inside], v[inside]
    for step in (-w - 1, -w, -w + 1, w - 1, w, w + 1):
        ok = v > flat[idx + step]
        idx, v = idx[ok], v[ok]
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


def _paf_channels(model: PoseModel) -> np.ndarray:
    """(P, 2) absolute net_output channels of the x/y PAF of each runtime pair."""
    base = model.num_parts + int(model.has_background)
    return base + np.asarray(model.map_index, dtype=np.int64).reshape(-1, 2)


def score_connections(maps: np.ndarray, model: PoseModel, peaks: Peaks,
                      thresholds: PostprocessThresholds) -> Connections:
    """PAF line scores of every (A, B) candidate of every runtime pair, sorted in OpenPose's
    greedy order. ``maps`` is the full (C, H, W) net_output-ordered stack."""
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
    steps = np.arange(25, dtype=np.float32)
    nf = n_samples.astype(np.float32)
    sx = np.clip(np.floor(ax[:, None] + steps * (dx / nf)[:, None] + np.float32(0.5)), 0, w - 1)
    sy = np.clip(np.floor(ay[:, None] + steps * (dy / nf)[:, None] + np.float32(0.5)), 0, h - 1)
    pixel = sy.astype(np.int64) * w + sx.astype(np.int64)
    chan = _paf_channels(model)[pair_id]
    flat = maps.reshape(c, h * w)
    px = flat[chan[:, 0:1], pixel]
    py = flat[chan[:, 1:2], pixel]
    sample = ux[:, None] * px + uy[:, None] * py
    above = (sample > thresholds.connect_inter_threshold) & (steps[None, :] < n_samples[:, None])
    count = above.sum(axis=1)
    mean = np.where(above, sample, 0).sum(axis=1, dtype=np.float32) / np.maximum(count, 1)
    passed = count / nf > thresholds.connect_inter_min_above_threshold
    near = norm < np.sqrt(np.float32(w * h)) / 150
    score = np.where(passed, mean,
                     np.where(near, np.float32(thresholds.nms_threshold + 1e-6), np.float32(-1)))
    score = np.where(norm > 1e-6, score, np.float32(-1)).astype(np.float32)
    ok = score > 1e-6
    pair_id, ga, gb, score = pair_id[ok], ga[ok], gb[ok], score[ok]
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
    for pair, a, b, paf in zip(connections.pair.tolist(), connections.a.tolist(),
                               connections.b.tolist(), connections.paf.tolist()):
        part_a, part_b = pairs[pair]
        pa, pb = assigned[a], assigned[b]
        if pa < 0 and pb < 0:                      # 1. new person
            parts = [-1] * n_parts
            parts[part_a], parts[part_b] = a, b
            assigned[a] = assigned[b] = len(people)
            people.append(_Person(parts, 2, peak_score[a] + peak_score[b] + paf))
        elif pa < 0 or pb < 0:                     # 2./3. attach the unassigned end
            owner = pa if pa >= 0 else pb
            part_new, new = (part_b, b) if pa >= 0 else (part_a, a)
            person = people[owner]
            if person.parts[part_new] < 0:
                person.parts[part_new] = new
                person.count += 1
                person.score += peak_score[new] + paf
                assigned[new] = owner
        elif pa == pb:                             # 4. redundant PAF inside one person
            people[pa].score += paf
        else:                                      # 5. merge two disjoint people
            keep, gone = min(pa, pb), max(pa, pb)
            p1, p2 = people[keep], people[gone]
            if all(i < 0 or j < 0 for i, j in zip(p1.parts, p2.parts)):
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


def _effective_count(person: _Person, n_parts: int, maximize_positives: bool) -> Optional[int]:
    """Keypoint count used by the keep rule, or None when a count rule drops the person."""
    count = person.count
    if n_parts >= 135:
        # BODY_135: the face counts as one keypoint; a person that is then a single keypoint
        # (a lone face) is dropped; each hand counts as one keypoint.
        face, right_hand, left_hand = BODY_135_GROUPS[2], BODY_135_GROUPS[1], BODY_135_GROUPS[0]
        count -= _capped(person, face, 1)
        if count == 1:
            return None
        count -= _capped(person, right_hand, 1) + _capped(person, left_hand, 1)
    if not maximize_positives and (n_parts == 25 or n_parts > 70):
        feet = _capped(person, FOOT_PARTS, 0)
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
            count = _effective_count(person, model.num_parts, maximize)
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
    """Hand / face networks (OpenPose's ``MaximumCaffe``, spec 4.10): one "person" whose part p
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
                 maximize_positives: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """People from net_output-ordered maps (C, H, W), as OpenPose finds them.

    ``scale`` maps a map pixel to an image pixel (OpenPose's ``scaleNetToOutput``): 1 for maps
    at image resolution, ``s`` of :func:`openpose_train.validation.inference.net_to_image_scale`
    for maps at net input resolution. ``thresholds`` defaults to the model's (with the
    ``maximize_positives`` variant when asked). Returns ``keypoints`` (people, N, 3) float32 in
    image pixels (x, y, score; zeros for missing parts) and ``scores`` (people,). Models without
    pairs (HAND_21, FACE_70) take each heatmap's global maximum (:func:`find_maximum_keypoints`).
    """
    maps = np.asarray(heatmaps_and_pafs)
    check_maps(model, maps)
    if maps.dtype != np.float32:
        maps = maps.astype(np.float32)
    if not model.runtime_pairs:         # hand / face: no PAFs, one global maximum per part
        return find_maximum_keypoints(model, maps, scale)
    t = thresholds or model.thresholds
    if maximize_positives and thresholds is None:
        t = maximize_positives_thresholds(t)
    n = model.num_parts
    peaks = find_peaks(maps[:n], t.nms_threshold, offset=0.5 / scale, max_peaks=t.max_peaks)
    connections = score_connections(maps, model, peaks, t)
    people = filter_people(assemble_people(connections, peaks, model), model, t, maximize_positives)
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
