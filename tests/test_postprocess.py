"""OpenPose post-processing: NMS, PAF scoring, greedy assembly, filtering (hand-built cases) and
agreement with the loop-by-loop reference on crowded synthetic scenes for registry models."""
import dataclasses

import numpy as np
import pytest

from openpose_train.generator.registry import PoseModel, PostprocessThresholds, get_model
from openpose_train.validation.groundtruth_maps import render_ground_truth_maps
from openpose_train.validation.postprocess import (
    Connections, MapShapeError, Peaks, assemble_people, filter_people, find_peaks,
    maximize_positives_thresholds, parse_people, score_connections)
from openpose_train.validation.postprocess_reference import parse_people_reference

CHAIN = PoseModel(name="CHAIN4", openpose_name="CHAIN4", parts=("a", "b", "c", "d"),
                  paf_pairs=((0, 1), (1, 2), (2, 3)), runtime_pairs=((0, 1), (1, 2), (2, 3)),
                  has_background=True, flip_pairs=(), sigma_ratios=(1.0,) * 4, upstream=False)


# ----------------------------------------------------------------------------------------- NMS
def test_nms_strict_peaks_ties_border_threshold():
    hm = np.zeros((1, 12, 12), np.float32)
    hm[0, 3, 3] = 0.9                      # a clean peak
    hm[0, 7, 5] = hm[0, 7, 6] = 0.8        # a tie: neither is strictly greater -> no peak
    hm[0, 0, 9] = 0.9                      # outer border: never a peak (CUDA rule)
    hm[0, 10, 10] = 0.05                   # equal to the threshold: not above it
    hm[0, 9, 2] = 0.3
    hm[0, 10, 3] = 0.3                     # diagonal tie: both rejected
    peaks = find_peaks(hm, 0.05, offset=0.5)
    assert peaks.part.tolist() == [0]
    assert peaks.of_part(0).tolist() == [[3.5, 3.5, pytest.approx(0.9)]]


def test_nms_centroid_offset_score_and_raster_order():
    hm = np.zeros((2, 20, 20), np.float32)
    hm[1, 12, 4] = 1.0
    hm[1, 12, 5] = 0.5                     # pulls the centroid right by 0.5/1.5
    hm[1, 5, 15] = 0.7                     # earlier in raster order
    hm[1, 5, 18] = 0.2                     # inside the 7x7 window of (15, 5), clipped nowhere
    peaks = find_peaks(hm, 0.05, offset=0.25)
    assert peaks.start.tolist() == [0, 0, 3]
    got = peaks.of_part(1)
    # raster order: (15,5) first, then (18,5), then (4,12)
    assert got[:, 2].tolist() == pytest.approx([0.7, 0.2, 1.0])
    assert got[0, 0] == pytest.approx((15 * 0.7 + 18 * 0.2) / 0.9 + 0.25)
    assert got[2, 0] == pytest.approx((4 * 1.0 + 5 * 0.5) / 1.5 + 0.25)
    assert got[2, 1] == pytest.approx(12.25)


def test_nms_peak_cap_keeps_first_in_raster_order():
    hm = np.zeros((1, 60, 60), np.float32)
    ys, xs = np.mgrid[2:58:3, 2:58:3]       # 19 x 19 = 361 isolated peaks
    hm[0, ys, xs] = 0.5 + 0.001 * np.arange(ys.size).reshape(ys.shape)
    peaks = find_peaks(hm, 0.05, max_peaks=127)
    assert peaks.start.tolist() == [0, 127]
    assert peaks.score[:3] == pytest.approx([0.5, 0.501, 0.502])


# ------------------------------------------------------------------------------ PAF line score
def _two_peak_maps(length, fail_samples=0, w=64):
    """CHAIN4 maps with one a-peak and one b-peak ``length`` pixels apart on row 10 and a
    perfect PAF a->b except ``fail_samples`` sample positions."""
    maps = np.zeros((CHAIN.num_channels, 21, w), np.float32)
    maps[0, 10, 5] = 1.0
    maps[1, 10, 5 + length] = 1.0
    paf_x = 4 + 1 + 0                      # parts 4 + background, pair (0,1) x channel
    maps[paf_x, :, :] = 1.0
    peaks = find_peaks(maps[:4], 0.05, offset=0.5)
    n = max(5, min(25, int(np.sqrt(5 * length) + 0.5)))
    step = length / n
    for i in range(fail_samples):
        maps[paf_x, :, int(np.floor(5.5 + i * step + 0.5))] = 0.0
    return maps, peaks, n


@pytest.mark.parametrize("length,fail,connected", [
    (40, 0, True), (40, 1, False),        # n = 14: every sample must pass
    (125, 1, True), (125, 2, False),      # n = 25: one may fail (24/25 > 0.95), two may not
])
def test_paf_min_above_rule(length, fail, connected):
    maps, peaks, n = _two_peak_maps(length, fail, w=140)
    con = score_connections(maps, CHAIN, peaks, CHAIN.thresholds)
    assert (con.pair.size == 1) == connected
    if connected:
        assert con.paf[0] == pytest.approx(1.0)


def test_paf_near_points_fallback_and_coincident():
    maps, peaks, _ = _two_peak_maps(3)
    maps[4 + 1:] = 0                       # no PAF at all
    t = CHAIN.thresholds
    con = score_connections(maps, CHAIN, peaks, t)   # |d| = 3 > sqrt(64*21)/150: no fallback
    assert con.pair.size == 0
    big = np.zeros((CHAIN.num_channels, 400, 400), np.float32)
    big[0, 100, 100] = big[1, 100, 102] = 1.0        # |d| = 2 < sqrt(400*400)/150 = 2.67
    peaks = find_peaks(big[:4], 0.05)
    con = score_connections(big, CHAIN, peaks, t)
    assert con.paf.tolist() == [pytest.approx(t.nms_threshold + 1e-6)]


def test_paf_direction_matters():
    maps, peaks, _ = _two_peak_maps(20)
    maps[5] *= -1                          # PAF points b -> a: no connection a -> b
    assert score_connections(maps, CHAIN, peaks, CHAIN.thresholds).pair.size == 0


# ------------------------------------------------------------------------- greedy assembly
def _peaks(parts, scores):
    parts = np.asarray(parts)
    order = np.argsort(parts, kind="stable")
    assert (order == np.arange(len(parts))).all(), "give peaks grouped by part"
    start = np.zeros(5, np.int64)
    np.cumsum(np.bincount(parts, minlength=4), out=start[1:])
    z = np.zeros(len(parts), np.float32)
    return Peaks(parts, z, z, np.asarray(scores, np.float32), start)


def _cons(rows):
    pair, a, b, paf = (np.asarray(c) for c in zip(*rows))
    return Connections(pair, a, b, paf.astype(np.float32))


def test_assembly_new_attach_and_skip():
    # peaks: a0 a1 | b2 | c3 c4
    peaks = _peaks([0, 0, 1, 2, 2], [1, 1, 1, 1, 1])
    people = assemble_people(_cons([(0, 0, 2, 0.9),      # case 1: {a0, b2}
                                    (1, 2, 3, 0.8),      # case 2: b2 assigned -> attach c3
                                    (1, 2, 4, 0.7),      # person already has a c -> skipped
                                    (0, 1, 2, 0.6)]),    # case 3: b2 assigned, a taken -> skip
                             peaks, CHAIN)
    assert len(people) == 1
    p = people[0]
    assert p.parts == [0, 2, 3, -1] and p.count == 3
    assert p.score == pytest.approx(3 + 0.9 + 0.8)


def test_assembly_attach_other_end_and_redundant_pair():
    model = dataclasses.replace(CHAIN, runtime_pairs=((0, 1), (1, 2), (2, 3), (0, 2)),
                                paf_pairs=((0, 1), (1, 2), (2, 3), (0, 2)))
    peaks = _peaks([0, 1, 2], [0.5, 0.5, 0.5])
    people = assemble_people(_cons([(1, 1, 2, 0.9),      # {b1, c2}
                                    (0, 0, 1, 0.8),      # case 3 (B assigned): attach a0
                                    (3, 0, 2, 0.3)]),    # case 4: same person, score only
                             peaks, model)
    assert [p.parts for p in people] == [[0, 1, 2, -1]]
    assert people[0].count == 3
    assert people[0].score == pytest.approx(1.5 + 0.9 + 0.8 + 0.3)


def test_assembly_merge_disjoint_people():
    peaks = _peaks([0, 1, 2, 3], [1, 1, 1, 1])
    people = assemble_people(_cons([(0, 0, 1, 0.9),      # person 0 {a, b}
                                    (2, 2, 3, 0.8),      # person 1 {c, d}
                                    (1, 1, 2, 0.5)]),    # case 5: disjoint -> merged into 0
                             peaks, CHAIN)
    assert len(people) == 1
    assert people[0].parts == [0, 1, 2, 3] and people[0].count == 4
    assert people[0].score == pytest.approx(2.9 + 2.8 + 0.5)


def test_assembly_no_merge_when_parts_overlap():
    model = dataclasses.replace(CHAIN, runtime_pairs=((0, 1), (1, 2), (2, 3), (0, 2)),
                                paf_pairs=((0, 1), (1, 2), (2, 3), (0, 2)))
    # a0 | b1 b2 | c3: person 0 {a0, b1}, person 1 {b2, c3}; pair a-c links the two people,
    # but both have a b -> no merge, nothing changes.
    peaks = _peaks([0, 1, 1, 2], [1, 1, 1, 1])
    people = assemble_people(_cons([(0, 0, 1, 0.9), (1, 2, 3, 0.8), (3, 0, 3, 0.7)]),
                             peaks, model)
    assert [p.parts for p in people] == [[0, 1, -1, -1], [-1, 2, 3, -1]]
    assert [p.score for p in people] == pytest.approx([2.9, 2.8])


def test_merge_keeps_lower_index_and_creation_order():
    peaks = _peaks([0, 0, 1, 2, 3], [1, 1, 1, 1, 1])
    people = assemble_people(_cons([(0, 1, 2, 0.9),      # person 0 {a1, b2}
                                    (2, 3, 4, 0.9),      # person 1 {c3, d4}
                                    (1, 2, 3, 0.4)]),    # merge 1 into 0
                             peaks, CHAIN)
    assert [p.parts for p in people] == [[1, 2, 3, 4]]


# ------------------------------------------------------------------------------- filtering
def test_min_subset_count_and_score():
    t = PostprocessThresholds()
    peaks = _peaks([0, 1, 2, 3], [1, 1, 1, 1])
    two = assemble_people(_cons([(0, 0, 1, 0.9)]), peaks, CHAIN)           # 2 keypoints
    assert filter_people(two, CHAIN, t, maximize_positives=True) == []     # cnt 2 < 3
    three = assemble_people(_cons([(0, 0, 1, 0.9), (1, 1, 2, 0.9)]), peaks, CHAIN)
    assert len(filter_people(three, CHAIN, t)) == 1
    weak = assemble_people(_cons([(0, 0, 1, 0.1), (1, 1, 2, 0.1)]),
                           _peaks([0, 1, 2, 3], [0.3, 0.3, 0.3, 0.3]), CHAIN)
    assert weak[0].score / 3 < 0.4
    assert filter_people(weak, CHAIN, t) == []                             # score/cnt < 0.4
    assert len(filter_people(weak, CHAIN, dataclasses.replace(t, connect_min_subset_score=0.3))) == 1


def test_foot_rule_and_maximize_positives_rerun():
    body25 = get_model("BODY_25")
    t = body25.thresholds
    # A leg with 3 foot keypoints: RHip 9, RKnee 10, RAnkle 11 + RBigToe 22, RSmallToe 23, RHeel 24
    leg = [9, 10, 11, 22, 23, 24]
    parts = sorted(leg)
    peaks = Peaks(np.asarray(parts), *(np.zeros(6, np.float32),) * 2,
                  np.ones(6, np.float32), np.searchsorted(parts, np.arange(26)).astype(np.int64))
    from openpose_train.validation.postprocess import _Person
    person = _Person([-1] * 25, 6, 6 * 1.9)
    for g, part in enumerate(parts):
        person.parts[part] = g
    # Without maximize: 3 non-foot keypoints left (<= 4) -> dropped; nobody survives, so the
    # filter is re-run with maximize_positives (feet count again) and the leg is kept.
    assert len(filter_people([person], body25, t)) == 1
    # With a second, proper person the re-run does not happen and the leg is dropped.
    body = _Person([-1] * 25, 8, 8 * 1.9)
    for part in range(8):
        body.parts[part] = 100 + part
    kept = filter_people([person, body], body25, t)
    assert kept == [body]


def test_maximize_positives_thresholds():
    t = maximize_positives_thresholds(get_model("BODY_25").thresholds)
    assert (t.nms_threshold, t.connect_inter_threshold, t.connect_inter_min_above_threshold,
            t.connect_min_subset_cnt, t.connect_min_subset_score) == (0.02, 0.01, 0.75, 2, 0.05)
    assert maximize_positives_thresholds(get_model("MPI_15").thresholds).nms_threshold == 0.6


# --------------------------------------------------------------------------- end to end
def test_two_people_end_to_end_scores_and_scale():
    kp = np.array([[[50, 40, 1], [60, 80, 1], [70, 120, 1], [80, 160, 1]],
                   [[150, 40, 1], [160, 80, 1], [170, 120, 1], [180, 160, 1]]], float)
    maps = render_ground_truth_maps(CHAIN, kp, 200, 220, sigma=5, paf_width=4)
    keypoints, scores = parse_people(CHAIN, maps, scale=2.0)
    assert keypoints.shape == (2, 4, 3)
    got = sorted(keypoints[:, 0, 0].tolist())
    assert got == pytest.approx([50 * 2 + 0.5, 150 * 2 + 0.5])
    # person score = (4 peaks of 1.0 + 3 PAF scores of 1.0) / (N + P) = 7 / 7
    assert scores == pytest.approx([1.0, 1.0])


def test_bad_maps_rejected():
    with pytest.raises(MapShapeError, match="BODY_25.*77 channels"):
        parse_people(get_model("BODY_25"), np.zeros((77, 20, 20), np.float32))


def _crowd(model, rng, people, h, w, template_scale):
    """Random people: a random template pose (shared by all parts of a person) so limbs have
    realistic lengths; some parts missing."""
    base = rng.uniform(0.15, 0.85, (people, 1, 2)) * [w, h]
    offsets = rng.normal(0, template_scale, (1, model.num_parts, 2))
    jitter = rng.normal(0, template_scale / 3, (people, model.num_parts, 2))
    xy = base + offsets + jitter
    v = (rng.random((people, model.num_parts, 1)) > 0.1).astype(float)
    return np.concatenate([xy, v], axis=2)


@pytest.mark.parametrize("name", ["BODY_25", "COCO_18", "MPI_15", "BODY_25B", "BODY_135", "yaml"])
def test_matches_reference_on_crowded_scene(name, repo_root):
    if name == "yaml":
        from openpose_train.generator.skeleton import load_skeleton_yaml
        model = load_skeleton_yaml(repo_root / "generator" / "example_skeleton.yaml")
    else:
        model = get_model(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    h, w = (48, 56) if model.num_parts > 70 else (72, 80)
    kp = _crowd(model, rng, 5, h, w, template_scale=10)
    maps = render_ground_truth_maps(model, kp, h, w, sigma=2.0, paf_width=1.5)
    maps += rng.normal(0, 0.01, maps.shape).astype(np.float32)
    t = dataclasses.replace(model.thresholds, nms_threshold=0.1)
    fast = parse_people(model, maps, scale=1.25, thresholds=t)
    ref = parse_people_reference(model, maps, scale=1.25, thresholds=t)
    assert fast[0].shape == ref[0].shape
    assert fast[0].shape[0] > 0
    np.testing.assert_allclose(fast[0], ref[0], atol=1e-4)
    np.testing.assert_allclose(fast[1], ref[1], atol=1e-5)


def test_benchmark_quick_prints_json_lines(repo_root):
    import json
    import subprocess
    import sys
    run = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "postprocess.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert {line["case"] for line in lines} == {f"people={n},input={s}" for n in (1, 3, 6, 12)
                                                for s in ("368x368", "656x368")}
    for line in lines:
        assert line["bench"] == "postprocess_ms" and line["unit"] == "ms"
        assert line["value"] > 0 and line["baseline"] > 0
        assert line["same_result_as_baseline"] and line["same_result_as_full_scan"]
        assert line["resize_included"] is False and line["min_ms"] <= line["value"]


def test_hand_model_takes_global_maxima():
    hand = get_model("HAND_21")
    maps = np.zeros((hand.num_channels, 40, 50), np.float32)
    for p in range(21):
        maps[p, 5 + p, 2 * p] = 0.3 + p / 100
        maps[p, 30, 40] = 0.1                      # a lower second maximum: ignored
    keypoints, scores = parse_people(hand, maps, scale=2.0)
    assert keypoints.shape == (1, 21, 3)
    assert keypoints[0, :, 0].tolist() == [4.0 * p for p in range(21)]
    assert keypoints[0, :, 1].tolist() == [2.0 * (5 + p) for p in range(21)]
    assert keypoints[0, 20, 2] == pytest.approx(0.5)
    assert scores[0] == pytest.approx(np.mean([0.3 + p / 100 for p in range(21)]))


def test_body135_face_and_hands_count_once():
    from openpose_train.validation.postprocess import _Person
    body135 = get_model("BODY_135")
    t = body135.thresholds

    def person(parts):
        p = _Person([-1] * 135, len(parts), 1.0 * len(parts))
        for g, part in enumerate(parts):
            p.parts[part] = g
        return p
    lone_face = person(list(range(65, 90)))             # 25 face points count as 1 -> dropped
    face_and_nose = person([0] + list(range(65, 70)))   # nose + face -> count 2 < 3
    body = person([0, 5, 6] + list(range(25, 45)))      # 3 body points + a hand (counts 1) = 4
    assert filter_people([lone_face, face_and_nose, body], body135, t) == [body]
    # the count (and so score / count) uses the capped count: 23 points, count 4
    weak = person([0, 5, 6] + list(range(25, 45)))
    weak.score = 4 * 0.39
    assert filter_people([weak, body], body135, t) == [body]
