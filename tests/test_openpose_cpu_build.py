"""``--openpose-build cpu``: OpenPose's CPU-only build reproduced (cv::resize, nmsCpu, the CPU
connector), checked against what the real CPU binary wrote for 30 real images (the shared
reference outputs) and on hand-built maps for each rule of docs/postprocessing.md §CPU build."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from openpose_train.cli import main
from openpose_train.generator.registry import get_model
from openpose_train.validation.postprocess import parse_people
from openpose_train.validation.postprocess_cpu import (
    CpuBuildUnsupportedError, find_peaks_cpu, parse_people_cpu)

from conftest import shared_path

REFERENCE = ("reference", "openpose_cpu_outputs")


def _compare_with_openpose(ours_dir, reference_dir):
    """(images with the same person count, images, keypoints, within 0.01 px, one side only);
    people are compared in OpenPose's output order."""
    same = images = total = close = one_side = 0
    for name in sorted(os.listdir(reference_dir)):
        ref = json.load(open(os.path.join(reference_dir, name)))["people"]
        ours = json.load(open(os.path.join(ours_dir, name)))["people"]
        images += 1
        same += len(ref) == len(ours)
        for a, b in zip(ref, ours):
            a = np.asarray(a["pose_keypoints_2d"]).reshape(-1, 3)
            b = np.asarray(b["pose_keypoints_2d"]).reshape(-1, 3)
            va, vb = a[:, 2] > 0, b[:, 2] > 0
            both = va & vb
            total += int((va | vb).sum())
            one_side += int((va ^ vb).sum())
            close += int((np.abs(a[both, :2] - b[both, :2]).max(axis=1) <= 0.01).sum())
    return same, images, total, close, one_side


@pytest.mark.slow
@pytest.mark.parametrize("resolution", ["1x368", "1x192"])
def test_validate_write_json_matches_the_openpose_cpu_binary(tmp_path, resolution):
    model_folder = shared_path(*REFERENCE, "model")
    reference = shared_path(*REFERENCE, f"json_minicoco_{resolution}")
    images = shared_path("data", "minicoco", "images", "train2017")
    out = tmp_path / "json"
    result = CliRunner().invoke(main, [
        "validate", "--model-folder", str(model_folder), "--model", "BODY_25",
        "--images", str(images), "--net-resolution", f"-{resolution}",
        "--openpose-build", "cpu", "--write-json", str(out),
        "--out", str(tmp_path / "results.json"), "--quiet"])
    assert result.exit_code == 0, result.output
    same, n_images, total, close, one_side = _compare_with_openpose(out, reference)
    assert n_images == 30
    assert same == n_images                    # the same person count on every image
    assert close >= 0.99 * total               # keypoints within 0.01 px
    assert one_side <= 0.01 * total            # found by one side only


def test_the_cuda_semantics_do_not_match_the_cpu_binary(tmp_path):
    """The default (CUDA build) differs from the CPU binary on the same maps: the switch matters."""
    model_folder = shared_path(*REFERENCE, "model")
    reference = shared_path(*REFERENCE, "json_minicoco_1x192")
    images = shared_path("data", "minicoco", "images", "train2017")
    counts = {}
    for build in ("cuda", "cpu"):
        out = tmp_path / build
        result = CliRunner().invoke(main, [
            "validate", "--model-folder", str(model_folder), "--images", str(images),
            "--net-resolution", "-1x192", "--openpose-build", build, "--write-json", str(out),
            "--out", str(tmp_path / f"{build}.json"), "--quiet", "--limit", "8"])
        assert result.exit_code == 0, result.output
        names = sorted(os.listdir(out))
        counts[build] = sum(
            len(json.load(open(out / n))["people"]) == len(json.load(open(reference / n))["people"])
            for n in names)
    assert counts["cpu"] == 8
    assert counts["cuda"] < 8


def test_cpu_build_refuses_models_without_a_cpu_connector(tmp_path):
    model = get_model("BODY_25B")
    maps = np.zeros((model.num_channels, 32, 32), np.float32)
    with pytest.raises(CpuBuildUnsupportedError, match="BODY_25B.*CPU build"):
        parse_people_cpu(model, maps)
    images = tmp_path / "images"
    images.mkdir()
    result = CliRunner().invoke(main, [
        "validate", "--prototxt", str(tmp_path / "none.prototxt"), "--caffemodel",
        str(tmp_path / "none.caffemodel"), "--model", "BODY_25B", "--images", str(images),
        "--openpose-build", "cpu"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- NMS border rules
def _one_channel(h=12, w=12):
    return np.zeros((1, h, w), np.float32)


def test_cpu_nms_keeps_a_tie_on_the_first_inner_ring_but_not_inside():
    hm = _one_channel()
    hm[0, 1, 5] = hm[0, 1, 6] = 0.8         # a tie on row 1: both are peaks with >=
    hm[0, 6, 5] = hm[0, 6, 6] = 0.8         # a tie inside: neither is a peak (strict >)
    peaks = find_peaks_cpu(hm, 0.05)
    # two peaks, both on row 1 (their 7x7 centroids share x = 5.5 + the 0.5 offset)
    assert np.floor(peaks.y).tolist() == [1, 1]
    assert peaks.x.tolist() == [pytest.approx(6.0)] * 2


def test_cpu_nms_border_pixel_on_an_inner_ring_row_can_be_a_peak():
    hm = _one_channel()
    hm[0, 1, 0] = 0.9                        # column 0 but row 1: the ring rule applies
    hm[0, 5, 0] = 0.9                        # column 0 elsewhere: never a peak
    peaks = find_peaks_cpu(hm, 0.05)
    assert peaks.part.size == 1
    assert peaks.score.tolist() == [pytest.approx(0.9)]
    assert (np.floor(peaks.x[0]), np.floor(peaks.y[0])) == (0, 1)


def test_cpu_nms_out_of_map_neighbours_read_as_the_threshold():
    hm = _one_channel()
    hm[0, 1, 0] = 0.04                       # below the threshold itself: no peak
    hm[0, 1, 1] = 0.05                       # equal to the threshold: not above it
    assert find_peaks_cpu(hm, 0.05).part.size == 0


def test_cpu_nms_centroid_and_offset():
    hm = _one_channel()
    hm[0, 5, 5], hm[0, 5, 6] = 1.0, 0.5
    peaks = find_peaks_cpu(hm, 0.05, offset=0.5)
    assert peaks.x[0] == pytest.approx((5 * 1.0 + 6 * 0.5) / 1.5 + 0.5)
    assert peaks.y[0] == pytest.approx(5.5)


# ------------------------------------------------------------------------------- connector
def _body25_maps(points, limbs, h=96, w=96):
    """BODY_25 maps with a Gaussian-free single-pixel peak per (part, x, y) and unit PAFs along
    the given (pair index in runtime order, A xy, B xy) limbs."""
    model = get_model("BODY_25")
    maps = np.zeros((model.num_channels, h, w), np.float32)
    for part, x, y in points:
        maps[part, y, x] = 0.9
    base = model.num_parts + 1
    for pair, (ax, ay), (bx, by) in limbs:
        cx, cy = base + model.map_index[pair][0], base + model.map_index[pair][1]
        d = np.array([bx - ax, by - ay], np.float32)
        u = d / np.linalg.norm(d)
        for t in np.linspace(0, 1, 200):
            x, y = int(round(ax + t * d[0])), int(round(ay + t * d[1]))
            maps[cx, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = u[0]
            maps[cy, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = u[1]
    return model, maps


def test_cpu_connector_ear_pairs_fill_without_count_or_score():
    model = get_model("BODY_25")
    pairs = model.runtime_pairs
    assert set(model.cpu_connector_fill_only_pairs) == {18, 19}
    assert pairs[18] == (2, 17)
    # neck-rshoulder-relbow chain plus the 2-17 (shoulder-ear) pair
    pts = {1: (40, 20), 2: (30, 22), 3: (28, 40), 17: (30, 10), 8: (40, 60)}
    limbs = [(0, pts[1], pts[8]), (1, pts[1], pts[2]), (3, pts[2], pts[3]),
             (18, pts[2], pts[17])]
    _, maps = _body25_maps([(p, x, y) for p, (x, y) in pts.items()], limbs)
    keypoints, _ = parse_people_cpu(model, maps)
    assert keypoints.shape[0] == 1
    assert keypoints[0, 17, 2] > 0           # the ear was filled in by the ear-shoulder pair
    # the CUDA assembly counts the same ear as a regular keypoint; both find one person
    cuda, _ = parse_people(model, maps)
    assert cuda.shape[0] == 1


def test_cpu_connector_lone_peaks_become_people_only_once():
    """A pair with no B peaks turns each A peak that is not yet in a person into a one-keypoint
    person; the filter then drops them (count < 3)."""
    model = get_model("BODY_25")
    pts = {1: (40, 20), 8: (40, 60), 9: (34, 60), 10: (34, 80)}
    limbs = [(0, pts[1], pts[8]), (7, pts[8], pts[9]), (8, pts[9], pts[10])]
    _, maps = _body25_maps([(p, x, y) for p, (x, y) in pts.items()], limbs)
    maps[14, 50, 80] = 0.9                   # a lone ankle far away (pair 13-14 has no 13)
    from openpose_train.validation import postprocess_cpu as pc
    t = model.thresholds
    peaks = pc.find_peaks_cpu(maps[:model.num_parts], t.nms_threshold)
    people = pc.assemble_people_cpu(maps, model, peaks, t)
    lone = [p for p in people if p.count == 1]
    assert [p.parts[14] >= 0 for p in lone] == [True]       # the ankle, once
    keypoints, _ = parse_people_cpu(model, maps)
    assert keypoints.shape[0] == 1 and keypoints[0, 10, 2] > 0
