"""OpenPose's CPU-only build post-processing: heatmaps + PAFs -> people, as ``openpose.bin``
compiled with ``GPU_MODE=CPU_ONLY`` finds them (``docs/postprocessing.md`` §CPU build).

The CUDA build (:mod:`openpose_train.validation.postprocess`) and the CPU build differ in three
places, each reproduced here; the person filter and the output arrays are shared:

* Resize: each scale's net output goes through ``cv2.resize(..., INTER_CUBIC)`` (OpenCV's Keys
  kernel, a = -0.75) to the scale-0 net input size, and the scales are averaged without the
  per-scale ratios (:func:`resize_and_merge_cpu`). Same OpenCV kernel as OpenPose links against.
* NMS (``nmsCpu``): strict "greater than the 8 neighbours" inside ``1 < x < W-2, 1 < y < H-2``;
  on the rows/columns 1 and W-2/H-2 (whatever the other coordinate) ``>=`` with out-of-map
  neighbours read as the threshold; every other pixel is never a peak. Peaks in raster order,
  at most ``max_peaks`` per part; the 7x7 weighted centroid is accumulated in float32 in
  OpenPose's order (:func:`find_peaks_cpu`).
* Connector (``connectBodyPartsCpu``): pairs in the registry's runtime order; per pair, the
  candidate connections sorted by PAF score alone and matched one-to-one; pair 0 seeds people;
  a connection whose A is in a person attaches B to the first such person, otherwise starts a
  new one; when one side of a pair has no peaks, the other side's peaks not yet in a person
  become one-keypoint people (every peak for models flagged
  ``cpu_connector_lone_peaks_unchecked``); the pairs of ``cpu_connector_fill_only_pairs`` (the
  ear-shoulder pairs) only fill missing parts, adding neither count nor score. The PAF line
  score is the CUDA build's, near-points fallback included, in float32 arithmetic
  (:func:`assemble_people_cpu`).

Only models whose registry entry has ``openpose_cpu_connector`` run on the CPU build; OpenPose
refuses the others ("Model not implemented for CPU body connector"), and so does
:func:`parse_people_cpu`.

Cost (``docs/postprocessing.md`` §Cost; ``benchmarks/postprocess.py``, ``postprocess_cpu_ms``):
the resize writes each channel straight into the planar output, as OpenPose does, and is the
floor; the NMS reads only the blocks that can reach the threshold (bounds from the small net
output, as in the CUDA path) plus the two rings of border rows and columns the CPU rules treat
apart; the connector scores every pair's candidates in one vectorised pass and finds a peak's
person through an index, not a scan.
:mod:`openpose_train.validation.postprocess_cpu_reference` is the plain form tests compare with.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.registry import PoseModel, PostprocessThresholds
from openpose_train.validation.postprocess import (
    MapShapeError, Peaks, _Person, candidate_scores, check_maps, effective_thresholds,
    filter_people, find_maximum_keypoints, people_arrays, strict_peak_pixels)

_F32 = np.float32
# (dy, dx) of the 7x7 centroid window, in OpenPose's loop order (rows outside, columns inside)
_CENTROID_DY, _CENTROID_DX = (a.ravel() for a in np.meshgrid(np.arange(-3, 4), np.arange(-3, 4),
                                                              indexing="ij"))
# (dy, dx) of the 8 neighbours
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


class CpuBuildUnsupportedError(OpenPoseTrainError, ValueError):
    """The model has no body connector in OpenPose's CPU build."""


def check_cpu_build(model: PoseModel) -> None:
    """Raise :class:`CpuBuildUnsupportedError` unless OpenPose's CPU build can run ``model``."""
    if model.runtime_pairs and not model.openpose_cpu_connector:
        raise CpuBuildUnsupportedError(
            f"{model.name}: OpenPose's CPU build has no body connector for this model (it stops "
            f"with 'Model not implemented for CPU body connector'); use --openpose-build cuda")


def resize_and_merge_cpu(outputs: Sequence[np.ndarray], target: Tuple[int, int],
                         out: Optional[np.ndarray] = None) -> np.ndarray:
    """(C, H, W) float32: each (C, h, w) net output resized to ``target`` (W, H) with
    ``cv2.resize`` INTER_CUBIC one channel at a time, straight into the planar output (OpenPose's
    ``resizeAndMergeCpu``), then the plain mean over the scales (the CPU build ignores the
    per-scale ratios). ``out``: a C-contiguous float32 (C, H, W) array to write into (a reused
    buffer saves a fresh one's page faults); returned."""
    tw, th = target
    channels = outputs[0].shape[0]
    shape = (channels, th, tw)
    if out is None:
        out = np.empty(shape, _F32)
    elif out.shape != shape or out.dtype != _F32 or not out.flags.c_contiguous:
        raise MapShapeError(f"out must be a C-contiguous float32 array of shape {shape}, got "
                            f"{out.dtype} {out.shape}")
    scratch = None
    for k, output in enumerate(outputs):
        src = np.asarray(output, dtype=_F32)
        if src.ndim != 3 or src.shape[0] != channels:
            raise MapShapeError(f"scale {k}: net output of shape {src.shape}, scale 0 has "
                                f"{channels} channels")
        if k and scratch is None:
            scratch = np.empty(shape, _F32)
        dst = out if k == 0 else scratch
        for c in range(channels):
            cv2.resize(src[c], (tw, th), dst=dst[c], interpolation=cv2.INTER_CUBIC)
        if k:
            out += scratch
    if len(outputs) > 1:
        out /= _F32(len(outputs))
    return out


@functools.lru_cache(maxsize=64)
def opencv_resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of ``cv2.resize`` INTER_CUBIC along one axis, read off
    OpenCV itself by resizing the identity (its own coefficients and border rule, whatever its
    version; a height kept as is weighs 0, 1, 0, 0). For the NMS's block bounds."""
    eye = np.eye(n_in, dtype=_F32)
    matrix = cv2.resize(eye, (n_out, n_in), interpolation=cv2.INTER_CUBIC).T.copy()
    matrix.flags.writeable = False      # shared through the cache
    return matrix


@functools.lru_cache(maxsize=16)
def _ring_pixels(h: int, w: int) -> np.ndarray:
    """Sorted in-map flat indices of the pixels the CPU NMS tests with ``>=`` (docs/postprocessing.md
    §CPU build): on the rows 1 and H-2 or the columns 1 and W-2, whatever the other coordinate,
    and not in the strict interior ``1 < x < W-2, 1 < y < H-2``."""
    y, x = np.divmod(np.arange(h * w), w)
    interior = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    ring = ~interior & ((x == 1) | (x == w - 2) | (y == 1) | (y == h - 2))
    return np.flatnonzero(ring)


def find_peaks_cpu(heatmaps: np.ndarray, threshold: float, offset: float = 0.5,
                   max_peaks: int = 127, block_bound: Optional[np.ndarray] = None,
                   flat: Optional[np.ndarray] = None) -> Peaks:
    """``nmsCpu`` on ``heatmaps`` (N, H, W): see the module docstring for the border rules.

    The strict interior is the CUDA path's rule on a smaller window, so it goes through
    :func:`~openpose_train.validation.postprocess.strict_peak_pixels` (above-threshold runs
    only; with ``block_bound``, e.g. :func:`openpose_train.validation.inference.heatmap_block_bounds`
    with ``kernel="opencv"``, only the blocks that can reach the threshold); the ring pixels are
    tested against their 8 neighbours directly. ``flat``: a float32 buffer that starts with the
    heatmaps (e.g. the whole maps, whose PAFs give the block search its margin)."""
    hm = np.ascontiguousarray(heatmaps, dtype=_F32)
    if hm.ndim != 3:
        raise MapShapeError(f"heatmaps must be (N, H, W), got shape {hm.shape}")
    n, h, w = hm.shape
    hw = h * w
    t = _F32(threshold)
    if flat is None:
        flat = hm.reshape(-1)
    parts = []
    if h >= 3 and w >= 3:
        idx, _ = strict_peak_pixels(flat, (n, h, w), t, block_bound)
        y, x = np.divmod(idx % hw, w)
        parts.append(idx[(x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)])
    ring = _ring_pixels(h, w)
    cand = (np.arange(n)[:, None] * hw + ring[None, :]).ravel()
    cand = cand[flat[cand] > t]
    if cand.size:
        value = flat[cand]
        y, x = np.divmod(cand % hw, w)
        is_peak = np.ones(cand.size, bool)
        for dy, dx in _NEIGHBOURS:       # out-of-map neighbours read as the threshold
            yy, xx = y + dy, x + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            nb = flat[cand + np.where(inside, dy * w + dx, 0)]
            is_peak &= value >= np.where(inside, nb, t)
        parts.append(cand[is_peak])
    idx = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    c = idx // hw
    # at most max_peaks per part, the first ones in raster order
    start = np.searchsorted(c, np.arange(n + 1)).astype(np.int64)
    rank = np.arange(c.size) - start[c]
    if rank.size and rank.max() >= max_peaks:
        idx, c = idx[rank < max_peaks], c[rank < max_peaks]
        start = np.searchsorted(c, np.arange(n + 1)).astype(np.int64)
    y, x = np.divmod(idx % hw, w)
    # 7x7 weighted centroid of the positive values: float32 running sums in OpenPose's loop
    # order (cumsum adds in order; the zeros of skipped pixels add exactly nothing)
    wy = y[:, None] + _CENTROID_DY
    wx = x[:, None] + _CENTROID_DX
    inside = (wy >= 0) & (wy < h) & (wx >= 0) & (wx < w)
    s = flat[(c * hw)[:, None] + np.clip(wy, 0, h - 1) * w + np.clip(wx, 0, w - 1)]
    s = np.where(inside & (s > 0), s, _F32(0))
    x_acc = np.cumsum(wx.astype(_F32) * s, axis=1, dtype=_F32)[:, -1:].ravel()
    y_acc = np.cumsum(wy.astype(_F32) * s, axis=1, dtype=_F32)[:, -1:].ravel()
    s_acc = np.cumsum(s, axis=1, dtype=_F32)[:, -1:].ravel()
    off = _F32(offset)
    px = (x_acc / s_acc + off).astype(_F32)
    py = (y_acc / s_acc + off).astype(_F32)
    return Peaks(c.astype(np.int64), px, py, flat[idx], start)


class _PeakOwners:
    """Which people hold each peak (global peak index -> person indices): the CPU connector's
    "first person with this peak" without scanning the people."""

    def __init__(self):
        self.holders: Dict[int, List[int]] = {}

    def first(self, peak: int) -> int:
        held = self.holders.get(peak)
        return min(held) if held else -1

    def set(self, person: _Person, index: int, part: int, peak: int) -> None:
        old = person.parts[part]
        if old == peak:
            return
        if old >= 0:
            self.holders[old].remove(index)
        person.parts[part] = peak
        self.holders.setdefault(peak, []).append(index)


def assemble_people_cpu(maps: np.ndarray, model: PoseModel, peaks: Peaks,
                        thresholds: PostprocessThresholds) -> List[_Person]:
    """``createPeopleVector`` of the CPU build over all runtime pairs (module docstring); every
    pair's candidates are scored at once (:func:`candidate_scores`, float32 as OpenPose's
    ``getScoreAB``)."""
    pairs = model.runtime_pairs
    fill_only = set(model.cpu_connector_fill_only_pairs)
    people: List[_Person] = []
    owners = _PeakOwners()
    score = peaks.score
    found = candidate_scores(maps, model, peaks, thresholds, cpu_build=True)
    # per pair: descending (score, A, B), as std::sort with std::greater on the tuples
    order = np.lexsort((-found.b, -found.a, -found.paf.astype(np.float64), found.pair))
    cand_pair, cand_a, cand_b = found.pair[order], found.a[order].tolist(), found.b[order].tolist()
    cand_score = found.paf[order]
    bounds = np.searchsorted(cand_pair, np.arange(len(pairs) + 1)).tolist()

    def new_person(parts_and_peaks, count, person_score):
        person = _Person([-1] * model.num_parts, count, person_score)
        people.append(person)
        for part, peak in parts_and_peaks:
            owners.set(person, len(people) - 1, part, peak)

    def lone_peaks(part):
        for g in range(peaks.start[part], peaks.start[part + 1]):
            if model.cpu_connector_lone_peaks_unchecked or owners.first(g) < 0:
                new_person([(part, g)], 1, float(score[g]))

    for pair_index, (part_a, part_b) in enumerate(pairs):
        count_a = int(peaks.start[part_a + 1] - peaks.start[part_a])
        count_b = int(peaks.start[part_b + 1] - peaks.start[part_b])
        if count_a == 0 or count_b == 0:
            lone_peaks(part_b if count_a == 0 else part_a)
            continue
        used_a, used_b, chosen = set(), set(), []
        limit = min(count_a, count_b)
        for k in range(bounds[pair_index], bounds[pair_index + 1]):
            a, b = cand_a[k], cand_b[k]
            if a in used_a or b in used_b:
                continue
            chosen.append((a, b, cand_score[k]))
            if len(chosen) == limit:
                break
            used_a.add(a)
            used_b.add(b)
        if pair_index == 0:
            for a, b, s in chosen:
                new_person([(part_a, a), (part_b, b)], 2, float(_F32(score[a] + score[b] + s)))
        elif pair_index in fill_only:
            for a, b, _ in chosen:
                # every person holding a or b, in order (each is changed only through itself)
                for i in sorted(set(owners.holders.get(a, ())) | set(owners.holders.get(b, ()))):
                    person = people[i]
                    if person.parts[part_a] == a and person.parts[part_b] < 0:
                        owners.set(person, i, part_b, b)
                    elif person.parts[part_b] == b and person.parts[part_a] < 0:
                        owners.set(person, i, part_a, a)
        else:
            for a, b, s in chosen:
                i = owners.first(a)
                if i >= 0:
                    person = people[i]
                    owners.set(person, i, part_b, b)
                    person.count += 1
                    person.score = float(_F32(person.score) + _F32(score[b] + s))
                else:
                    new_person([(part_a, a), (part_b, b)], 2, float(_F32(score[a] + score[b] + s)))
    return people


def parse_people_cpu(model: PoseModel, heatmaps_and_pafs: np.ndarray, scale: float = 1.0,
                     thresholds: Optional[PostprocessThresholds] = None,
                     maximize_positives: bool = False,
                     block_bound: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`~openpose_train.validation.postprocess.parse_people` with the CPU build's NMS and
    connector (same arguments and outputs; ``block_bound`` from
    :func:`~openpose_train.validation.inference.heatmap_block_bounds` with ``kernel="opencv"``)."""
    maps = np.asarray(heatmaps_and_pafs)
    check_maps(model, maps)
    maps = np.ascontiguousarray(maps, dtype=_F32)
    if not model.runtime_pairs:
        return find_maximum_keypoints(model, maps, scale)
    check_cpu_build(model)
    t = effective_thresholds(model, thresholds, maximize_positives)
    peaks = find_peaks_cpu(maps[:model.num_parts], t.nms_threshold, 0.5 / scale, t.max_peaks,
                           block_bound, flat=maps.reshape(-1))
    people = filter_people(assemble_people_cpu(maps, model, peaks, t), model, t,
                           maximize_positives)
    return people_arrays(people, peaks, model, scale)
