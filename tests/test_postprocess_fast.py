"""The post-processing fast paths give exactly the plain paths' results.

* Bounded peak search (``block_bound``): the NMS that skips blocks whose bound from the net
  output is below the threshold gives the peaks (and people) of the full scan, on random,
  crowded, tied and boundary-threshold maps, and the bound holds for OpenPose's resize.
* PAF probes: ruling pairs out with four probe samples gives the connections of scoring every
  sample, also with samples exactly at the threshold and failures exactly at the probes."""
import numpy as np
import pytest

from openpose_train.generator.registry import PoseModel, get_model
from openpose_train.validation.groundtruth_maps import BODY_25_UPRIGHT, render_ground_truth_maps
from openpose_train.validation.inference import (
    InferenceSettings, PoseEstimator, heatmap_block_bounds, resize_and_merge, upsample_output)
from openpose_train.validation.postprocess import (
    BLOCK_BOUND_SLACK, PEAK_BLOCK, MapShapeError, Peaks, find_peaks, maximize_positives_thresholds,
    parse_people, peak_block_grid, score_connections)


def assert_same_peaks(a, b):
    for field in ("part", "x", "y", "score", "start"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def block_max(maps):
    """(N, rows, cols) max |value| over each peak-search block (rows/cols 8b+1..8b+8)."""
    n, h, w = maps.shape
    nby, nbx = peak_block_grid(h, w)
    pad = np.zeros((n, 1 + nby * PEAK_BLOCK, 1 + nbx * PEAK_BLOCK), np.float32)
    pad[:, :h, :w] = np.abs(maps)[:, :1 + nby * PEAK_BLOCK, :1 + nbx * PEAK_BLOCK]
    return pad[:, 1:, 1:].reshape(n, nby, PEAK_BLOCK, nbx, PEAK_BLOCK).max(axis=(2, 4))


@pytest.mark.parametrize("h,w", [(3, 3), (9, 10), (37, 53), (48, 64), (17, 80)])
def test_every_block_searched_equals_full_scan_on_noise(h, w):
    """With every block a candidate the block machinery (halo, last partial blocks, wrap into
    the next row / map) is tested on arbitrary maps, including ties from quantised values."""
    rng = np.random.default_rng(h * w)
    hm = rng.random((3, h, w)).astype(np.float32)
    hm[1] = np.round(hm[1] * 4) / 4                 # many ties
    hm[2, -2, -2] = 2.0                             # peak on the last interior pixel
    hm[2, 1, 1] = 2.0                               # and on the first
    full_grid = (3,) + peak_block_grid(h, w)
    for threshold in (0.05, 0.5, float(hm[0, h // 2, w // 2]), 0.75):
        full = find_peaks(hm, threshold)
        blocks = find_peaks(hm, threshold, block_bound=np.full(full_grid, np.inf, np.float32))
        assert_same_peaks(full, blocks)
    assert full.part.size > 0


def test_skipped_blocks_only_where_bound_below_threshold():
    """Peaks in a block whose (wrong) bound is 0 are not searched: the bound is trusted, and a
    NaN bound keeps its block."""
    hm = np.zeros((1, 40, 40), np.float32)
    hm[0, 4, 4] = 1.0                               # block (0, 0)
    hm[0, 20, 20] = 1.0                             # block (2, 2)
    grid = (1,) + peak_block_grid(40, 40)
    bound = np.full(grid, 1.0, np.float32)
    bound[0, 2, 2] = 0.0
    assert find_peaks(hm, 0.05, block_bound=bound).x.tolist() == [4.5]
    bound[0, 2, 2] = np.nan
    assert find_peaks(hm, 0.05, block_bound=bound).x.tolist() == [4.5, 20.5]


def test_bad_block_bound_shape():
    with pytest.raises(MapShapeError, match="block_bound must have shape"):
        find_peaks(np.zeros((2, 20, 20), np.float32), 0.05, block_bound=np.zeros((2, 2, 2)))


def smooth_net_output(rng, channels, h, w, quantum=None):
    """Random stride-8 'net output': smooth bumps plus noise (and negative values)."""
    out = rng.normal(0, 0.03, (channels, h, w)).astype(np.float32)
    for c in range(channels):
        for _ in range(rng.integers(1, 5)):
            y, x = rng.uniform(0, h), rng.uniform(0, w)
            yy, xx = np.mgrid[:h, :w]
            out[c] += rng.uniform(0.1, 1) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2)
    if quantum:
        out = np.round(out / quantum) * quantum
    return out


@pytest.mark.parametrize("target,factor,quantum", [
    ((96, 80), 8.0, None), ((104, 72), 8.0, 0.125), ((90, 77), 7.3, None)])
def test_resize_bound_holds_and_peaks_equal(target, factor, quantum):
    rng = np.random.default_rng(target[0])
    h, w = int(np.ceil(target[1] / factor)), int(np.ceil(target[0] / factor))
    out = smooth_net_output(rng, 4, h, w, quantum)
    maps = upsample_output(out, target, factor)
    bound = heatmap_block_bounds([out], [1.0], target, 4, factor)
    assert bound.shape == (4,) + peak_block_grid(target[1], target[0])
    # the bound holds (with far less than the slack) and is not vacuous
    assert (block_max(maps) <= bound * (1 + 1e-5) + 1e-7).all()
    assert (bound < 0.05).any()
    values = np.sort(maps[maps > 0].ravel())
    # thresholds on pixel values themselves (strict '>' at the boundary) and between them
    for threshold in (0.05, 0.1, float(values[len(values) // 2]), float(values[-3])):
        assert_same_peaks(find_peaks(maps, threshold), find_peaks(maps, threshold, block_bound=bound))


def test_merged_scales_bound_holds():
    rng = np.random.default_rng(7)
    outs = [smooth_net_output(rng, 3, 12, 16), smooth_net_output(rng, 3, 9, 12)]
    scales = [1.0, 0.75]
    maps = resize_and_merge(outs, scales, (128, 96))
    bound = heatmap_block_bounds(outs, scales, (128, 96), 3)
    assert (block_max(maps) <= bound * (1 + 1e-5) + 1e-7).all()
    for threshold in (0.05, 0.2):
        assert_same_peaks(find_peaks(maps, threshold), find_peaks(maps, threshold, block_bound=bound))


def crowd_net_output(model, people, width, height, rng):
    kps = []
    for _ in range(people):
        tall = rng.uniform(40, height - 10)
        xy = (BODY_25_UPRIGHT - [0, .5]) * tall
        lo, hi = xy.min(0), xy.max(0)
        centre = rng.uniform(-lo, [width, height] - hi)
        kps.append(np.column_stack([xy + centre + rng.normal(0, 2, xy.shape),
                                    rng.random(len(xy)) > 0.1]))
    return render_ground_truth_maps(model, np.array(kps), height, width, sigma=7, paf_width=8,
                                    stride=8)


def test_parse_people_with_bounds_equals_full_scan_on_crowd():
    model = get_model("BODY_25")
    rng = np.random.default_rng(3)
    small = crowd_net_output(model, 12, 160, 128, rng)
    small += rng.normal(0, 0.01, small.shape).astype(np.float32)
    maps = upsample_output(small, (160, 128), 8.0)
    bound = heatmap_block_bounds([small], [1.0], (160, 128), model.num_parts)
    for maximize in (False, True):
        full = parse_people(model, maps, scale=1.5, maximize_positives=maximize)
        fast = parse_people(model, maps, scale=1.5, maximize_positives=maximize, block_bound=bound)
        assert full[0].shape[0] >= 6
        np.testing.assert_array_equal(full[0], fast[0])
        np.testing.assert_array_equal(full[1], fast[1])


def test_slack_is_tiny_next_to_the_threshold():
    # the slack only absorbs float rounding; a larger one would just search more blocks
    assert 0 < BLOCK_BOUND_SLACK <= 0.05


class _SmoothBackend:
    """A stand-in net: deterministic smooth maps of the input's size / 8."""

    def __init__(self, model):
        self.model = model

    def forward(self, batch):
        b, _, h, w = batch.shape
        rng = np.random.default_rng(int(h * 1000 + w))
        return np.stack([crowd_net_output(self.model, 4, w, h, rng) for _ in range(b)])


def test_estimator_uses_bounds_and_matches_plain_parse():
    model = get_model("BODY_25")
    est = PoseEstimator(model, _SmoothBackend(model),
                        InferenceSettings(net_resolution="-1x128", scale_number=2, scale_gap=0.25))
    image = np.zeros((120, 150, 3), np.uint8)
    (maps, scale), = est.heatmaps_batch([image])
    keypoints, scores = est.estimate(image)
    plain = parse_people(model, maps, scale=scale)
    assert keypoints.shape[0] > 0
    np.testing.assert_array_equal(keypoints, plain[0])
    np.testing.assert_array_equal(scores, plain[1])


# ------------------------------------------------------------------------------ PAF probes
def assert_same_connections(a, b):
    for field in ("pair", "a", "b", "paf"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def random_peaks(model, rng, per_part, h, w):
    counts = rng.integers(0, per_part + 1, model.num_parts)
    start = np.concatenate([[0], np.cumsum(counts)])
    k = int(start[-1])
    return Peaks(part=np.repeat(np.arange(model.num_parts), counts),
                 x=rng.uniform(0, w, k).astype(np.float32),
                 y=rng.uniform(0, h, k).astype(np.float32),
                 score=rng.uniform(0.05, 1, k).astype(np.float32), start=start)


@pytest.mark.parametrize("name", ["BODY_25", "COCO_18", "MPI_15"])
def test_probes_equal_full_sampling_on_quantised_pafs(name):
    """PAF values on a 0.05 grid: many samples exactly at the inter threshold (not above it);
    long and short limbs, both threshold sets (0.95 and maximize_positives' 0.75)."""
    model = get_model(name)
    rng = np.random.default_rng(len(name))
    h, w = 60, 90
    for trial in range(6):
        maps = np.zeros((model.num_channels, h, w), np.float32)
        paf = maps[model.num_parts + int(model.has_background):]
        paf[:] = np.float32(0.05) * rng.integers(-2, 22, paf.shape)
        if trial % 2:
            paf[:] = np.abs(paf)              # mostly passing: the full path decides
        peaks = random_peaks(model, rng, 4, h, w)
        for t in (model.thresholds, maximize_positives_thresholds(model.thresholds)):
            fast = score_connections(maps, model, peaks, t)
            plain = score_connections(maps, model, peaks, t, probe=False)
            assert_same_connections(fast, plain)
    assert plain.pair.size > 0


CHAIN2 = PoseModel(name="CHAIN2", openpose_name="CHAIN2", parts=("a", "b"), paf_pairs=((0, 1),),
                   runtime_pairs=((0, 1),), has_background=True, flip_pairs=(),
                   sigma_ratios=(1.0, 1.0), upstream=False)


@pytest.mark.parametrize("fails,maximize,connected", [
    ((), False, True), ((12,), False, True), ((6, 12), False, False), ((18,), False, True),
    ((6, 12, 18), True, True), ((0, 3, 6, 9, 12, 18), True, True),
    ((0, 3, 6, 9, 12, 15, 18), True, False)])
def test_failures_at_the_probe_samples(fails, maximize, connected):
    """A 125-px horizontal limb has 25 samples, probes at 6, 12, 18: at most 1 failing sample
    may pass with min-above 0.95, at most 6 with 0.75; failing values equal the inter threshold."""
    t = maximize_positives_thresholds(CHAIN2.thresholds) if maximize else CHAIN2.thresholds
    maps = np.zeros((CHAIN2.num_channels, 21, 200), np.float32)
    maps[3] = 1.0                                   # pair (0, 1) x channel: a perfect PAF
    for i in fails:                                 # sample i reads column 6 + 5 i
        maps[3, :, 6 + 5 * i] = np.float32(t.connect_inter_threshold)
    peaks = Peaks(part=np.array([0, 1]), x=np.array([5.5, 130.5], np.float32),
                  y=np.array([10.5, 10.5], np.float32), score=np.ones(2, np.float32),
                  start=np.array([0, 1, 2]))
    fast = score_connections(maps, CHAIN2, peaks, t)
    assert_same_connections(fast, score_connections(maps, CHAIN2, peaks, t, probe=False))
    assert (fast.pair.size == 1) == connected


def _tf32(a):
    """Round float32 to TF32's 10-bit mantissa (what a GPU GEMM may do to its inputs)."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def test_bound_slack_covers_a_tf32_resize():
    """The GPU resize may run in TF32 (inputs rounded to 10 mantissa bits, twice): its values
    still stay within the slack of the bound computed from the exact weights."""
    from openpose_train.validation.inference import cubic_resize_matrix
    rng = np.random.default_rng(11)
    out = smooth_net_output(rng, 4, 12, 14)
    target = (112, 96)
    ax = _tf32(cubic_resize_matrix(target[0], 14, 8.0))
    ay = _tf32(cubic_resize_matrix(target[1], 12, 8.0))
    rows = _tf32(_tf32(out) @ ax.T)
    maps = np.matmul(ay, rows)
    bound = heatmap_block_bounds([out], [1.0], target, 4)
    ratio = block_max(maps) / np.maximum(bound, 1e-30)
    assert ratio.max() > 0.5                        # a tight bound somewhere
    assert (block_max(maps) <= bound * (1 + BLOCK_BOUND_SLACK / 2) + 1e-7).all()
