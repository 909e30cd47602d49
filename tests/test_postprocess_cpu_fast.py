"""The CPU build's fast post-processing (``--openpose-build cpu``) gives exactly what its plain
form (:mod:`openpose_train.validation.postprocess_cpu_reference`) gives: the planar resize, the
bounded NMS with its ring rules, the one-pass connector with its peak index. Crowded, noisy,
tied and border maps; BODY_25 (fill-only ear pairs), COCO and MPI (lone peaks unchecked)."""
import cv2
import numpy as np
import pytest

from openpose_train.generator.registry import get_model
from openpose_train.validation.inference import heatmap_block_bounds
from openpose_train.validation.postprocess import MapShapeError, peak_block_grid
from openpose_train.validation.postprocess_cpu import (
    assemble_people_cpu, find_peaks_cpu, opencv_resize_matrix, parse_people_cpu,
    resize_and_merge_cpu)
from openpose_train.validation.postprocess_cpu_reference import (
    assemble_people_cpu_reference, find_peaks_cpu_reference, parse_people_cpu_reference,
    resize_and_merge_cpu_reference)

from test_postprocess_fast import assert_same_peaks, block_max, crowd_net_output, smooth_net_output


def test_planar_resize_is_per_channel_cv2_resize_and_merges_plainly():
    rng = np.random.default_rng(1)
    outs = [rng.normal(0, 1, (5, 12, 16)).astype(np.float32),
            rng.normal(0, 1, (5, 9, 12)).astype(np.float32)]
    one = resize_and_merge_cpu(outs[:1], (128, 96))
    assert one.shape == (5, 96, 128) and one.dtype == np.float32 and one.flags.c_contiguous
    for c in range(5):          # OpenPose's resizeAndMergeCpu: one CV_32FC1 resize per channel
        np.testing.assert_array_equal(
            one[c], cv2.resize(outs[0][c], (128, 96), interpolation=cv2.INTER_CUBIC))
    # the channels-last multi-channel resize it replaced differs by float32 rounding only
    np.testing.assert_allclose(one, resize_and_merge_cpu_reference(outs[:1], (128, 96)),
                               rtol=0, atol=1e-5)
    merged = resize_and_merge_cpu(outs, (128, 96))
    second = np.stack([cv2.resize(o, (128, 96), interpolation=cv2.INTER_CUBIC) for o in outs[1]])
    np.testing.assert_array_equal(merged, (one + second) / np.float32(2))
    buffer = np.full((5, 96, 128), np.nan, np.float32)
    assert resize_and_merge_cpu(outs, (128, 96), out=buffer) is buffer
    np.testing.assert_array_equal(buffer, merged)
    with pytest.raises(MapShapeError, match="out must be"):
        resize_and_merge_cpu(outs, (128, 96), out=np.zeros((5, 96, 127), np.float32))
    with pytest.raises(MapShapeError, match="scale 1"):
        resize_and_merge_cpu([outs[0], outs[1][:3]], (128, 96))


@pytest.mark.parametrize("n_out,n_in", [(656, 82), (368, 46), (90, 13), (17, 3), (5, 1)])
def test_opencv_resize_matrix_reproduces_cv2(n_out, n_in):
    rng = np.random.default_rng(n_out)
    src = rng.normal(0, 1, (7, n_in)).astype(np.float32)
    matrix = opencv_resize_matrix(n_out, n_in)
    expected = cv2.resize(src, (n_out, 7), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(src @ matrix.T, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("target,sizes", [((96, 80), [(12, 10)]), ((104, 72), [(13, 9)]),
                                          ((128, 96), [(16, 12), (12, 9)])])
def test_opencv_block_bound_holds(target, sizes):
    rng = np.random.default_rng(target[0])
    outs = [smooth_net_output(rng, 4, h, w) for w, h in sizes]
    maps = resize_and_merge_cpu(outs, target)
    bound = heatmap_block_bounds(outs, [1.0] * len(outs), target, 4, kernel="opencv")
    assert bound.shape == (4,) + peak_block_grid(target[1], target[0])
    assert (block_max(maps) <= bound * (1 + 1e-5) + 1e-7).all()
    assert (bound < 0.05).any()                     # not vacuous


@pytest.mark.parametrize("h,w", [(3, 3), (4, 5), (9, 10), (37, 53), (17, 80)])
def test_cpu_nms_equals_plain_form_on_noise_and_ties(h, w):
    """Every pixel a candidate (random values, quantised ties, values on every border ring):
    interior, ring and the pixels the CPU build never takes."""
    rng = np.random.default_rng(h * w)
    hm = rng.random((3, h, w)).astype(np.float32)
    hm[1] = np.round(hm[1] * 4) / 4
    hm[2, :, :2] = hm[2, :2, :] = 0.9               # ties along the first rings
    grid = (3,) + peak_block_grid(h, w)
    for threshold in (0.05, 0.5, float(hm[0, h // 2, w // 2]), 0.85):
        plain = find_peaks_cpu_reference(hm, threshold, 0.25, max_peaks=5)
        assert_same_peaks(find_peaks_cpu(hm, threshold, 0.25, max_peaks=5), plain)
        if h >= 3 and w >= 3:
            everywhere = np.full(grid, np.inf, np.float32)
            assert_same_peaks(find_peaks_cpu(hm, threshold, 0.25, 5, everywhere), plain)
    assert plain.part.size > 0


@pytest.mark.parametrize("model_name,people,noise", [
    ("BODY_25", 14, 0.0), ("BODY_25", 14, 0.02), ("COCO_18", 10, 0.01), ("MPI_15", 8, 0.01)])
def test_cpu_parse_equals_plain_form_on_crowds(model_name, people, noise):
    model = get_model(model_name)
    rng = np.random.default_rng(people)
    small = crowd_net_output(model, people, 240, 176, rng) if model_name == "BODY_25" else \
        _crowd(model, people, 240, 176, rng)
    small = small + rng.normal(0, noise, small.shape).astype(np.float32)
    target = (240, 176)
    maps = resize_and_merge_cpu([small], target)
    bound = heatmap_block_bounds([small], [1.0], target, model.num_parts, kernel="opencv")
    t = model.thresholds
    plain = find_peaks_cpu_reference(maps[:model.num_parts], t.nms_threshold, 0.4, t.max_peaks)
    fast = find_peaks_cpu(maps[:model.num_parts], t.nms_threshold, 0.4, t.max_peaks, bound,
                          flat=maps.reshape(-1))
    assert_same_peaks(fast, plain)
    built = assemble_people_cpu(maps, model, fast, t)
    expected = assemble_people_cpu_reference(maps, model, plain, t)
    assert [(p.parts, p.count, p.score) for p in built] == \
        [(p.parts, p.count, p.score) for p in expected]
    for maximize in (False, True):
        ours = parse_people_cpu(model, maps, scale=1.25, maximize_positives=maximize,
                                block_bound=bound)
        ref = parse_people_cpu_reference(model, maps, scale=1.25, maximize_positives=maximize)
        np.testing.assert_array_equal(ours[0], ref[0])
        np.testing.assert_array_equal(ours[1], ref[1])
    assert ours[0].shape[0] >= people // 2


def _crowd(model, people, width, height, rng):
    """Stride-8 maps of random people of ``model`` (random keypoints in a box per person)."""
    from openpose_train.validation.groundtruth_maps import render_ground_truth_maps
    kps = []
    for _ in range(people):
        size = rng.uniform(40, height - 10)
        corner = rng.uniform(0, [width - size / 2, height - size])
        xy = corner + rng.random((model.num_parts, 2)) * [size / 2, size]
        kps.append(np.column_stack([xy, rng.random(model.num_parts) > 0.1]))
    return render_ground_truth_maps(model, np.array(kps), height, width, sigma=7, paf_width=8,
                                    stride=8)


def test_benchmark_cpu_build_rows(repo_root):
    """``benchmarks/postprocess.py --only postprocess_cpu_ms``: the issue's cases, the stage
    split, the interleaved floor and its ratio, the same people as the plain form."""
    import json
    import subprocess
    import sys
    run = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "postprocess.py"),
                          "--quick", "--only", "postprocess_cpu_ms"],
                         capture_output=True, text=True, timeout=600, check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert [line["case"] for line in lines] == [
        f"people={n},image=640x480,net=656x368" for n in (1, 6, 24)]
    for line in lines:
        assert line["bench"] == "postprocess_cpu_ms" and line["unit"] == "ms"
        assert line["floor_ms"] > 0 and line["baseline"] > 0
        assert line["floor_ratio"] == pytest.approx(line["value"] / line["floor_ms"], rel=0.01)
        assert all(line[stage] > 0 for stage in ("resize_merge_ms", "peaks_ms", "connect_ms"))
        assert line["same_result_as_baseline"] and line["people_found"] >= 1
