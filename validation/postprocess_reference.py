"""A deliberately plain, loop-by-loop transcription of OpenPose's post-processing rules.

Not for use: it is the independent oracle that tests compare :mod:`postprocess` against, and the
straightforward baseline of ``benchmarks/postprocess.py`` (dense whole-map NMS, per-candidate and
per-sample PAF scoring in Python, like the open Python implementations). It reads the rules from
``docs/postprocessing.md`` §NMS to §Person filter one by one, sharing no code with the fast version beyond
the thresholds dataclass and the model's ``person_filter`` groups.
"""
from __future__ import annotations

import math

import numpy as np


def _nms_reference(hm, threshold, offset, max_peaks):
    """Dense NMS the straightforward way (whole-map shifted comparisons, as the open Python
    implementations do), then a per-peak loop for the 7x7 centroid."""
    h, w = hm.shape
    centre = hm[1:-1, 1:-1]
    is_peak = centre > threshold
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_peak &= centre > hm[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]
    peaks = []
    for y, x in zip(*np.nonzero(is_peak)):
        y, x = int(y) + 1, int(x) + 1
        if len(peaks) == max_peaks:
            break
        sx = sy = sv = 0.0
        for yy in range(y - 3, y + 4):
            for xx in range(x - 3, x + 4):
                if 0 <= yy < h and 0 <= xx < w and hm[yy, xx] > 0:
                    sv += float(hm[yy, xx])
                    sx += xx * float(hm[yy, xx])
                    sy += yy * float(hm[yy, xx])
        peaks.append((np.float32(sx / sv + offset), np.float32(sy / sv + offset),
                      float(hm[y, x])))
    return peaks


def _line_score(a, b, paf_x, paf_y, t):
    h, w = paf_x.shape
    f32 = np.float32
    dx, dy = f32(b[0] - a[0]), f32(b[1] - a[1])
    n = max(5, min(25, int(math.floor(math.sqrt(f32(5) * max(abs(dx), abs(dy))) + 0.5))))
    norm = math.sqrt(dx * dx + dy * dy)
    if norm <= 1e-6:
        return -1.0
    ux, uy = f32(dx / f32(norm)), f32(dy / f32(norm))
    total, count = 0.0, 0
    for i in range(n):
        mx = min(max(int(math.floor(f32(a[0]) + f32(i) * f32(dx / f32(n)) + f32(0.5))), 0), w - 1)
        my = min(max(int(math.floor(f32(a[1]) + f32(i) * f32(dy / f32(n)) + f32(0.5))), 0), h - 1)
        s = float(ux * paf_x[my, mx] + uy * paf_y[my, mx])
        if s > t.connect_inter_threshold:
            total += s
            count += 1
    if count / n > t.connect_inter_min_above_threshold:
        return total / count
    if norm < math.sqrt(w * h) / 150:
        return t.nms_threshold + 1e-6
    return -1.0


def parse_people_reference(model, maps, scale=1.0, thresholds=None, maximize_positives=False):
    """Same contract as :func:`postprocess.parse_people` (people, N, 3), (people,)."""
    t = thresholds or model.thresholds
    maps = np.asarray(maps, dtype=np.float32)
    n = model.num_parts
    peaks = [_nms_reference(maps[p], t.nms_threshold, 0.5 / scale, t.max_peaks) for p in range(n)]
    base = n + int(model.has_background)
    candidates = []
    for k, (pa, pb) in enumerate(model.runtime_pairs):
        cx, cy = model.map_index[k]
        for i, a in enumerate(peaks[pa]):
            for j, b in enumerate(peaks[pb]):
                s = _line_score(a, b, maps[base + cx], maps[base + cy], t)
                if s > 1e-6:
                    s = float(np.float32(s))
                    total = float(np.float32(s) + np.float32(0.1) * np.float32(a[2])
                                  + np.float32(0.1) * np.float32(b[2]))
                    candidates.append((total, s, k, i, j))
    candidates.sort(reverse=True)
    owner = {}          # (part, i) -> person index
    people = []         # [dict part -> i, count, score, alive]
    for _, s, k, i, j in candidates:
        pa, pb = model.runtime_pairs[k]
        oa, ob = owner.get((pa, i)), owner.get((pb, j))
        if oa is None and ob is None:
            owner[(pa, i)] = owner[(pb, j)] = len(people)
            people.append([{pa: i, pb: j}, 2, peaks[pa][i][2] + peaks[pb][j][2] + s, True])
        elif oa is None or ob is None:
            o = oa if oa is not None else ob
            part, idx = (pb, j) if oa is not None else (pa, i)
            if part not in people[o][0]:
                people[o][0][part] = idx
                people[o][1] += 1
                people[o][2] += peaks[part][idx][2] + s
                owner[(part, idx)] = o
        elif oa == ob:
            people[oa][2] += s
        else:
            lo, hi = min(oa, ob), max(oa, ob)
            if not set(people[lo][0]) & set(people[hi][0]):
                for part, idx in people[hi][0].items():
                    people[lo][0][part] = idx
                    owner[(part, idx)] = lo
                people[lo][1] += people[hi][1]
                people[lo][2] += people[hi][2] + s
                people[hi][3] = False
    alive = [p for p in people if p[3]]

    def keep(maximize):
        out = []
        groups = model.person_filter
        for parts, count, score, _ in alive:
            if groups.face_parts:
                count -= max(sum(g in parts for g in groups.face_parts) - 1, 0)
                if count == 1:
                    continue
                for hand in groups.hand_groups:
                    count -= max(sum(g in parts for g in hand) - 1, 0)
            if not maximize and groups.foot_parts:
                feet = sum(f in parts for f in groups.foot_parts)
                count -= feet
                if feet and count <= 4:
                    continue
            if count > 0 and count >= t.connect_min_subset_cnt \
                    and score / count >= t.connect_min_subset_score:
                out.append((parts, score))
        return out

    kept = keep(maximize_positives) or (keep(True) if not maximize_positives else [])
    keypoints = np.zeros((len(kept), n, 3), dtype=np.float32)
    scores = np.zeros(len(kept), dtype=np.float32)
    for p, (parts, score) in enumerate(kept):
        for part, idx in parts.items():
            x, y, v = peaks[part][idx]
            keypoints[p, part] = (x * scale, y * scale, v)
        scores[p] = score / (n + len(model.runtime_pairs))
    return keypoints, scores
