"""The straightforward form of OpenPose's CPU-build post-processing (``docs/postprocessing.md``
§CPU build): the implementation :mod:`postprocess_cpu` replaced, kept as the oracle that tests
compare it against and as the baseline of ``benchmarks/postprocess.py``.

Not for use. Each rule is written the plain way: the resize goes channels-last through one
multi-channel ``cv2.resize`` and back (a full-resolution transposed copy), the NMS gathers the 8
neighbours and the 7x7 window of every above-threshold pixel, the connector scores each pair's
candidates with one numpy pass per sample and finds a peak's person by scanning the people.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from openpose_train.generator.registry import PoseModel, PostprocessThresholds
from openpose_train.validation.postprocess import (
    Peaks, _Person, _paf_channels, check_maps, effective_thresholds, filter_people, people_arrays)

_F32 = np.float32
# (dy, dx) of the 8 neighbours and of the 7x7 centroid window, in OpenPose's loop order
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_CENTROID = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]


def resize_and_merge_cpu_reference(outputs: Sequence[np.ndarray],
                                   target: Tuple[int, int]) -> np.ndarray:
    """(C, H, W): the outputs resized channels-last with one ``cv2.resize`` (at most 512
    channels at once), transposed back, plainly averaged."""
    tw, th = target
    merged = None
    for output in outputs:
        src = np.ascontiguousarray(np.asarray(output, dtype=_F32).transpose(1, 2, 0))
        planes = [cv2.resize(src[:, :, c0:c0 + 512], (tw, th),
                             interpolation=cv2.INTER_CUBIC).reshape(th, tw, -1)
                  for c0 in range(0, src.shape[2], 512)]
        up = np.concatenate(planes, axis=2).transpose(2, 0, 1)
        merged = up.copy() if merged is None else merged + up
    if len(outputs) > 1:
        merged /= _F32(len(outputs))
    return np.ascontiguousarray(merged, dtype=_F32)


def _gather(maps: np.ndarray, c: np.ndarray, y: np.ndarray, x: np.ndarray,
            outside: np.float32) -> np.ndarray:
    """maps[c, y, x], with ``outside`` where (y, x) leaves the map."""
    _, h, w = maps.shape
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    values = maps[c, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]
    return np.where(inside, values, outside)


def find_peaks_cpu_reference(heatmaps: np.ndarray, threshold: float, offset: float = 0.5,
                             max_peaks: int = 127) -> Peaks:
    """``nmsCpu``: every above-threshold pixel against its 8 neighbours (strict inside
    ``1 < x < W-2, 1 < y < H-2``, ``>=`` on the rows/columns 1 and W-2/H-2 with out-of-map
    neighbours read as the threshold), then the 7x7 centroid in float32, OpenPose's order."""
    hm = np.ascontiguousarray(heatmaps, dtype=_F32)
    n, h, w = hm.shape
    t = _F32(threshold)
    flat = np.flatnonzero(hm > t)
    c, rest = np.divmod(flat, h * w)
    y, x = np.divmod(rest, w)
    interior = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    keep = interior | (x == 1) | (x == w - 2) | (y == 1) | (y == h - 2)
    c, y, x, interior = c[keep], y[keep], x[keep], interior[keep]
    value = hm[c, y, x]
    is_peak = np.ones(value.shape, bool)
    for dy, dx in _NEIGHBOURS:
        nb = _gather(hm, c, y + dy, x + dx, t)
        is_peak &= np.where(interior, value > nb, value >= nb)
    c, y, x = c[is_peak], y[is_peak], x[is_peak]
    rank = np.arange(c.size) - np.searchsorted(c, c, side="left")
    keep = rank < max_peaks
    c, y, x = c[keep], y[keep], x[keep]
    x_acc = np.zeros(c.size, _F32)
    y_acc = np.zeros(c.size, _F32)
    s_acc = np.zeros(c.size, _F32)
    for dy, dx in _CENTROID:
        s = _gather(hm, c, y + dy, x + dx, _F32(0))
        positive = s > 0
        s = np.where(positive, s, _F32(0))
        x_acc = np.where(positive, x_acc + (x + dx).astype(_F32) * s, x_acc)
        y_acc = np.where(positive, y_acc + (y + dy).astype(_F32) * s, y_acc)
        s_acc = np.where(positive, s_acc + s, s_acc)
    off = _F32(offset)
    px = (x_acc / s_acc + off).astype(_F32)
    py = (y_acc / s_acc + off).astype(_F32)
    start = np.searchsorted(c, np.arange(n + 1)).astype(np.int64)
    return Peaks(c.astype(np.int64), px, py, hm[c, y, x], start)


def score_pair_cpu_reference(peaks_a: np.ndarray, peaks_b: np.ndarray, paf_x: np.ndarray,
                             paf_y: np.ndarray, thresholds: PostprocessThresholds) -> np.ndarray:
    """(nA, nB) float32 ``getScoreAB`` of every A -> B candidate, float32 as OpenPose's."""
    h, w = paf_x.shape
    ax, ay = peaks_a[:, 0:1], peaks_a[:, 1:2]
    dx = (peaks_b[None, :, 0] - ax).astype(_F32)
    dy = (peaks_b[None, :, 1] - ay).astype(_F32)
    longest = np.maximum(np.abs(dx), np.abs(dy))
    n = np.clip(np.floor(np.sqrt(_F32(5) * longest) + _F32(0.5)), 5, 25).astype(np.int64)
    norm = np.sqrt(dx * dx + dy * dy).astype(_F32)
    safe = np.where(norm > 1e-6, norm, _F32(1))
    ux, uy = dx / safe, dy / safe
    step_x, step_y = dx / n.astype(_F32), dy / n.astype(_F32)
    total = np.zeros(dx.shape, _F32)
    count = np.zeros(dx.shape, np.int64)
    ax = np.broadcast_to(ax, dx.shape)
    ay = np.broadcast_to(ay, dx.shape)
    for k in range(25):
        active = k < n
        sx = np.clip(np.trunc(ax + _F32(k) * step_x + _F32(0.5)), 0, w - 1).astype(np.int64)
        sy = np.clip(np.trunc(ay + _F32(k) * step_y + _F32(0.5)), 0, h - 1).astype(np.int64)
        score = ux * paf_x[sy, sx] + uy * paf_y[sy, sx]
        passed = active & (score > _F32(thresholds.connect_inter_threshold))
        total = np.where(passed, total + score, total)
        count += passed
    ok = count.astype(_F32) / n.astype(_F32) > _F32(thresholds.connect_inter_min_above_threshold)
    near = norm < np.sqrt(_F32(w * h)) / _F32(150)
    score = np.where(ok, total / np.maximum(count, 1).astype(_F32),
                     np.where(near, _F32(thresholds.nms_threshold + 1e-6), _F32(0)))
    return np.where(norm > 1e-6, score, _F32(0)).astype(_F32)


def _two_parts(model: PoseModel, part_a: int, a: int, part_b: int, b: int) -> List[int]:
    parts = [-1] * model.num_parts
    parts[part_a], parts[part_b] = a, b
    return parts


def assemble_people_cpu_reference(maps: np.ndarray, model: PoseModel, peaks: Peaks,
                                  thresholds: PostprocessThresholds) -> List[_Person]:
    """``createPeopleVector`` of the CPU build, pair by pair, people scanned for each peak."""
    channels = _paf_channels(model)
    fill_only = set(model.cpu_connector_fill_only_pairs)
    people: List[_Person] = []
    score = peaks.score

    def lone_peaks(part):
        for g in range(peaks.start[part], peaks.start[part + 1]):
            if model.cpu_connector_lone_peaks_unchecked or \
                    not any(p.parts[part] == g for p in people):
                parts = [-1] * model.num_parts
                parts[part] = g
                people.append(_Person(parts, 1, float(score[g])))

    for pair_index, (part_a, part_b) in enumerate(model.runtime_pairs):
        first_a, first_b = int(peaks.start[part_a]), int(peaks.start[part_b])
        count_a = int(peaks.start[part_a + 1]) - first_a
        count_b = int(peaks.start[part_b + 1]) - first_b
        if count_a == 0 or count_b == 0:
            lone_peaks(part_b if count_a == 0 else part_a)
            continue
        scores = score_pair_cpu_reference(
            peaks.of_part(part_a), peaks.of_part(part_b), maps[channels[pair_index, 0]],
            maps[channels[pair_index, 1]], thresholds)
        ia, ib = np.nonzero(scores > 1e-6)
        order = np.lexsort((-ib, -ia, -scores[ia, ib].astype(np.float64)))
        used_a, used_b, chosen = set(), set(), []
        limit = min(count_a, count_b)
        for k in order.tolist():
            i, j = int(ia[k]), int(ib[k])
            if i in used_a or j in used_b:
                continue
            chosen.append((first_a + i, first_b + j, scores[i, j]))
            if len(chosen) == limit:
                break
            used_a.add(i)
            used_b.add(j)
        if pair_index == 0:
            for a, b, s in chosen:
                people.append(_Person(_two_parts(model, part_a, a, part_b, b), 2,
                                      float(_F32(score[a] + score[b] + s))))
        elif pair_index in fill_only:
            for a, b, _ in chosen:
                for person in people:
                    if person.parts[part_a] == a and person.parts[part_b] < 0:
                        person.parts[part_b] = b
                    elif person.parts[part_b] == b and person.parts[part_a] < 0:
                        person.parts[part_a] = a
        else:
            for a, b, s in chosen:
                for person in people:
                    if person.parts[part_a] == a:
                        person.parts[part_b] = b
                        person.count += 1
                        person.score = float(_F32(person.score) + _F32(score[b] + s))
                        break
                else:
                    people.append(_Person(_two_parts(model, part_a, a, part_b, b), 2,
                                          float(_F32(score[a] + score[b] + s))))
    return people


def parse_people_cpu_reference(model: PoseModel, maps: np.ndarray, scale: float = 1.0,
                               maximize_positives: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`~openpose_train.validation.postprocess_cpu.parse_people_cpu`, the plain way (body
    models with a CPU connector only)."""
    check_maps(model, maps)
    maps = np.ascontiguousarray(maps, dtype=_F32)
    t = effective_thresholds(model, None, maximize_positives)
    peaks = find_peaks_cpu_reference(maps[:model.num_parts], t.nms_threshold, 0.5 / scale,
                                     t.max_peaks)
    people = filter_people(assemble_people_cpu_reference(maps, model, peaks, t), model, t,
                           maximize_positives)
    return people_arrays(people, peaks, model, scale)
