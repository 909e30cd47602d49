"""OPData labels (caffe_layers/labels.py) against the formulas of docs/labels.md §Label steps."""
import math

import numpy as np
import pytest

from openpose_train.caffe_layers import labels as L
from openpose_train.generator import registry
from openpose_train.generator.registry import PoseModel, TrainingVariant

STRIDE, GRID, SIGMA = 8, 46, 7.0

# A toy model (ours): 4 parts, limbs 0-1 and 1-2, 2-3, background, 0/2 are a left/right pair.
TOY_VARIANT = TrainingVariant("TOY_4", "toy", "COCO", 4, ((0,), (1,), (2,), (3,)))
TOY = PoseModel("TOY", "TOY", ("a", "b", "c", "d"), ((0, 1), (1, 2), (2, 3)), ((0, 1), (1, 2), (2, 3)),
                True, ((0, 2),), (1.0, 1.0, 1.0, 1.0), variants=(TOY_VARIANT,))
# the same with one part the dataset does not have (P > P_lmdb -> global masking of missing parts)
TOY_PARTIAL = TrainingVariant("TOY_3", "toy", "COCO", 3, ((0,), (1,), (2,), ()), empty_mask_parts=(3,))


def cell_centre(g):
    return STRIDE / 2 - 0.5 + g * STRIDE


def person(points, vis=1):
    arr = np.zeros((1, 4, 3), np.float32)
    for j, (x, y) in enumerate(points):
        arr[0, j] = (x, y, vis if np.isscalar(vis) else vis[j])
    return arr


def render(people, mask=None, variant=TOY_VARIANT, model=TOY, filled=True):
    return L.render_labels(model, variant, people, mask, (GRID, GRID), STRIDE, SIGMA, filled=filled)


def split(label, model=TOY):
    c = model.num_channels
    return label[:c], label[c:]


def test_heatmap_peak_value_and_cutoff():
    # keypoint exactly on cell (gx=10, gy=20); the other parts far away and invisible
    p = person([(cell_centre(10), cell_centre(20)), (0, 0), (0, 0), (0, 0)], vis=[1, 2, 2, 2])
    _, t = split(render(p))
    heat = t[2 * TOY.num_pafs]
    assert np.unravel_index(np.argmax(heat), heat.shape) == (20, 10)
    assert heat[20, 10] == pytest.approx(1.0)
    gy, gx = np.mgrid[:GRID, :GRID]
    d2 = (cell_centre(gx) - cell_centre(10)) ** 2 + (cell_centre(gy) - cell_centre(20)) ** 2
    e = d2 / (2 * SIGMA ** 2)
    expected = np.where(e <= L.GAUSSIAN_CUTOFF, np.exp(-e), 0)
    np.testing.assert_allclose(heat, expected, atol=1e-6)
    assert heat[20, 11] == pytest.approx(math.exp(-64 / 98), abs=1e-6)      # d = 8 px
    assert heat[20, 13] == 0                                                # d = 24 px: e = 5.9 > 4.6052
    assert heat[20, 12] == pytest.approx(math.exp(-256 / 98), abs=1e-6)     # d = 16 px


def test_gaussian_max_over_people_capped_and_weight_forced():
    a = person([(100.3, 120.7), (0, 0), (0, 0), (0, 0)], vis=[1, 2, 2, 2])
    b = person([(110.0, 125.0), (0, 0), (0, 0), (0, 0)], vis=[0, 2, 2, 2])
    both = np.concatenate([a, b])
    w, t = split(render(both, mask=np.zeros((GRID, GRID), np.uint8)))
    _, ta = split(render(a))
    _, tb = split(render(b))
    h = 2 * TOY.num_pafs
    np.testing.assert_allclose(t[h], np.maximum(ta[h], tb[h]), atol=1e-7)
    assert t[h].max() <= 1
    # weight forced to 1 on the Gaussian support despite the zero mask, zero elsewhere
    np.testing.assert_array_equal(w[h], (t[h] > 0).astype(np.float32))


def test_horizontal_limb_paf_and_width():
    # limb 0 -> 1 from grid (10, 20) to (30, 20): cells within 1 cell of row 20 inside the bbox
    # rows [round(20 - 1), round(20 + 1)) = 19, 20 (exclusive upper bound, as the fork) get (1, 0)
    p = person([(80, 160), (240, 160), (0, 0), (0, 0)], vis=[1, 1, 2, 2])
    w, t = split(render(p, mask=np.zeros((GRID, GRID), np.uint8)))
    px, py = t[0], t[1]
    for row in (19, 20):
        np.testing.assert_array_equal(px[row, 9:31], 1.0)
        np.testing.assert_array_equal(w[0, row, 9:31], 1.0)
    assert px[21].max() == 0                                # bbox end is exclusive
    assert px[18].max() == 0 and px[22].max() == 0         # one cell beyond the width
    assert px[20, 8] == 0 and px[20, 31] == 0               # bbox grown by one cell, exclusive end
    assert np.all(py == 0)
    assert np.all(t[2:4] == 0)                              # limb 1-2 not drawn: part 2 has v=2


def test_diagonal_limb_matches_the_definition():
    ax, ay, bx, by = 57.0, 33.0, 201.0, 250.0
    p = person([(ax, ay), (bx, by), (0, 0), (0, 0)], vis=[0, 1, 2, 2])
    _, t = split(render(p))
    a = np.float32([ax, ay]) / 8
    b = np.float32([bx, by]) / 8
    u = (b - a) / np.linalg.norm(b - a)
    gy, gx = np.mgrid[:GRID, :GRID]
    x0 = max(0, round(min(a[0], b[0]) - 1)); x1 = min(GRID, round(max(a[0], b[0]) + 1))
    y0 = max(0, round(min(a[1], b[1]) - 1)); y1 = min(GRID, round(max(a[1], b[1]) + 1))
    inside = (gx >= x0) & (gx < x1) & (gy >= y0) & (gy < y1)
    on = inside & (np.abs((gx - a[0]) * u[1] - (gy - a[1]) * u[0]) <= 1)
    np.testing.assert_allclose(t[0], np.where(on, u[0], 0), atol=1e-6)
    np.testing.assert_allclose(t[1], np.where(on, u[1], 0), atol=1e-6)


def test_overlapping_limbs_average():
    horizontal = person([(80, 160), (240, 160), (0, 0), (0, 0)], vis=[1, 1, 2, 2])
    vertical = person([(160, 80), (160, 240), (0, 0), (0, 0)], vis=[1, 1, 2, 2])
    _, t = split(render(np.concatenate([horizontal, vertical])))
    # the crossing cell (20, 20) is covered by both: the mean of (1, 0) and (0, 1)
    assert t[0, 20, 20] == pytest.approx(0.5)
    assert t[1, 20, 20] == pytest.approx(0.5)
    assert t[0, 19, 19] == pytest.approx(0.5) and t[1, 19, 19] == pytest.approx(0.5)
    assert t[0, 20, 12] == pytest.approx(1.0) and t[1, 20, 12] == 0
    assert np.hypot(t[0], t[1]).max() <= 1 + 1e-6


def test_background_complements_heatmaps_and_its_weight():
    p = person([(100, 100), (180, 140), (260, 300), (30, 40)], vis=[1, 0, 1, 1])
    w, t = split(render(p, mask=np.zeros((GRID, GRID), np.uint8)))
    h = 2 * TOY.num_pafs
    bkg = t[h + TOY.num_parts]
    np.testing.assert_allclose(bkg, np.maximum(0, 1 - t[h:h + 4].max(0)), atol=1e-7)
    np.testing.assert_array_equal(w[h + 4], (bkg < L.BKG_WEIGHT_THRESHOLD).astype(np.float32))


def test_weights_start_from_mask_miss():
    mask = np.zeros((GRID, GRID), np.uint8)
    mask[:, 23:] = 255
    mask[0, 0] = 51
    p = person([(300, 300), (0, 0), (0, 0), (0, 0)], vis=[1, 2, 2, 2])
    w, _ = split(render(p, mask=mask))
    assert w[0, 0, 0] == pytest.approx(0.2)
    assert np.all(w[:, 5, 30] == 1) and np.all(w[:, 5, 10] == 0)


def test_background_only_sample():
    w, t = split(render(np.zeros((0, 4, 3), np.float32), filled=False))
    assert np.all(w == 1)
    assert np.all(t[:-1] == 0) and np.all(t[-1] == 1)


def test_global_masking_of_parts_missing_from_the_dataset():
    p = person([(100, 100), (180, 140), (260, 200), (0, 0)], vis=[1, 1, 1, 4])
    w, _ = split(render(p, variant=TOY_PARTIAL))
    h = 2 * TOY.num_pafs
    assert np.all(w[h + 3] == 0)               # heatmap of part 3
    assert np.all(w[4:6] == 0)                 # PAF 2-3 (x and y)
    assert w[h + 0].min() == 1 and w[0].min() == 1
    # same visibilities but a dataset that has part 3 (P == P_lmdb): no global masking, only the ROI
    w_full, _ = split(render(p, variant=TOY_VARIANT))
    assert w_full[h + 3].max() == 1 and w_full[h + 3].min() == 0


def test_roi_masking_of_v3_parts():
    # part 3 is synthetic with a missing source (v=3): zeroed inside the person's enlarged box only
    p = person([(100, 100), (180, 140), (260, 200), (120, 150)], vis=[1, 1, 1, 3])
    w, _ = split(render(p))
    h = 2 * TOY.num_pafs
    # box of the v<=1 points: x 12.5..32.5, y 12.5..25 cells; x = round(22.5 - 10 - 6) = 7 (half away
    # from zero), w = round(20 * 1.6) = 32, y = round(18.75 - 6.25 - 3.75) = 9, h = round(12.5 * 1.6) = 20
    x, y, bw, bh = (int(v[0]) for v in L.person_rois(p, STRIDE, 0.3, GRID, GRID))
    assert (x, y, bw, bh) == (7, 9, 32, 20)
    region = np.zeros((GRID, GRID), bool)
    region[y:y + bh, x:x + bw] = True
    np.testing.assert_array_equal(w[h + 3], np.where(region, 0, 1))
    np.testing.assert_array_equal(w[4], np.where(region, 0, 1))       # PAF 2-3
    bkg_w = w[h + 4]
    assert np.all(bkg_w[region & (w[h] == 0) & (w[0] == 0)] == 0)
    assert np.all(bkg_w[~region] == 1)


def test_flip_swaps_left_and_right():
    p = person([(10, 20), (30, 40), (50, 60), (70, 80)], vis=[1, 0, 2, 1])
    f = L.flip_people(p, TOY.flip_pairs, 368)
    assert tuple(f[0, 0]) == (367 - 50, 60, 2)
    assert tuple(f[0, 2]) == (367 - 10, 20, 1)
    assert tuple(f[0, 1]) == (367 - 30, 40, 0)
    np.testing.assert_array_equal(L.flip_people(f, TOY.flip_pairs, 368), p)


def test_remap_averages_and_visibility_rules():
    variant = TrainingVariant("TOY_AVG", "toy", "COCO", 3, ((0,), (0, 1), (1, 2), ()))
    cases = [  # (v0, v1, v2) -> expected v of parts (0, 1, 2, 3)
        ((1, 1, 1), (1, 1, 1, 4)),
        ((0, 1, 1), (0, 0, 1, 4)),
        ((2, 1, 0), (2, 3, 0, 4)),
        ((2, 2, 4), (2, 2, 4, 4)),
        ((3, 1, 1), (1, 1, 1, 4)),
    ]
    for vis, expected in cases:
        pts = np.array([[10, 20, vis[0]], [30, 40, vis[1]], [50, 80, vis[2]]], np.float32)
        out = L.remap_keypoints(variant, pts[None])[0]
        assert tuple(out[:, 2]) == expected, vis
        np.testing.assert_allclose(out[1, :2], (20, 30))
        np.testing.assert_allclose(out[2, :2], (40, 60))
        np.testing.assert_array_equal(out[3, :2], (0, 0))


def test_sanitize_visibility_outside_image():
    pts = np.array([[5, 5, 0.9], [-1, 5, 1], [5, 100, 4], [500, 5, 2]], np.float32)
    out = L.sanitize_visibility(pts, 100, 50)
    assert tuple(out[:, 2]) == (1, 2, 2, 2)


def test_net_output_order_roundtrip():
    p = person([(100, 100), (180, 140), (260, 200), (120, 150)])
    label = render(p)
    net = L.label_targets_to_net_output(TOY, label)
    c, h = TOY.num_channels, 2 * TOY.num_pafs
    np.testing.assert_array_equal(net[:4], label[c + h:c + h + 4])           # heatmaps first
    np.testing.assert_array_equal(net[4], label[c + h + 4])                  # then background
    np.testing.assert_array_equal(net[5:], label[c:c + h])                   # then PAFs
    np.testing.assert_array_equal(L.label_targets_to_net_output(TOY, label[None])[0], net)


EXPECTED_LABEL_CHANNELS = {"COCO_18": 114, "BODY_25": 156, "BODY_25B": 194, "BODY_135": 878}


def test_channel_counts_for_every_registry_model():
    models = [registry.get_model(n) for n in registry.list_models()]
    variants = [(m, v) for m in models for v in m.variants if v.label_rules_implemented]
    if not variants:
        pytest.skip("the model registry has no training variants yet")
    rng = np.random.default_rng(0)
    for model, variant in variants:
        people = np.zeros((2, model.num_parts, 3), np.float32)
        people[..., :2] = rng.uniform(50, 300, (2, model.num_parts, 2))
        people[..., 2] = 1
        label = L.render_labels(model, variant, people, None, (GRID, GRID), STRIDE, SIGMA)
        assert label.shape == (model.label_channels, GRID, GRID), variant.op_model
        if model.name in EXPECTED_LABEL_CHANNELS:
            assert label.shape[0] == EXPECTED_LABEL_CHANNELS[model.name], variant.op_model
        assert np.isfinite(label).all()


@pytest.mark.parametrize("n", [1, 5, 70])       # 70 > 62 people: the direct path, no person-set grouping
def test_box_zeroing_equals_box_by_box(n):
    """The kernel zeroes each channel in the union of the boxes of the people flagging it (grouped
    by person set, as row runs): the same cells as zeroing every (person, channel) box one by one."""
    rng = np.random.default_rng(n)
    chans = rng.random((n, 40)) < 0.3
    chans[:, :10] = rng.random((n, 1)) < 0.5        # channels sharing a person set (the common case)
    lo = rng.integers(-5, 30, (n, 2))
    lo[0] = 3                                        # person 0 keeps a box inside the grid
    hi = lo + rng.integers(1, 25, (n, 2))
    boxes = np.concatenate([np.maximum(lo, 0), np.minimum(np.maximum(hi, 0), GRID)], 1).astype(np.int64)
    boxes[-1, 2] = boxes[-1, 0] if n > 1 else boxes[-1, 2]      # an empty box
    weights = rng.uniform(0.1, 1, (40, GRID, GRID)).astype(np.float32)
    expected = weights.copy()
    for i in range(n):
        x0, y0, x1, y1 = boxes[i]
        expected[chans[i], y0:y1, x0:x1] = 0
    L._kernels()._zero_in_boxes(weights, chans, boxes)
    np.testing.assert_array_equal(weights, expected)
    assert (expected == 0).any()


def test_numba_is_imported_by_the_first_label_not_by_the_module():
    import subprocess
    import sys
    code = ("import sys, numpy as np; from openpose_train.caffe_layers import labels as L; "
            "from openpose_train.generator.registry import get_training_variant; "
            "assert 'numba' not in sys.modules; m, v = get_training_variant('COCO_25_17'); "
            "L.render_labels(m, v, np.zeros((1, 25, 3), np.float32), None, (4, 4), 8, 7.0); "
            "assert 'numba' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
