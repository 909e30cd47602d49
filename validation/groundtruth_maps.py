"""Ideal net_output maps drawn from known keypoints, at any resolution.

Used by the post-processing benchmark and the self-contained round-trip tests (the training
label renderer of ``caffe_layers/labels.py`` works on the stride-8 training grid; here the maps
are drawn directly at the resolution the parser reads, e.g. OpenPose's 8x upsampled maps).
Gaussians are combined by max, PAFs (unit vectors A->B within ``paf_width`` of the segment) are
averaged where limbs overlap (the band reaches ``paf_width`` past both ends), the background is ``max(1 - max_parts, 0)``: the conventions of
the training labels (``docs/labels.md`` §Gaussians, §PAFs). Only the window a Gaussian or limb can reach is touched.
"""
from __future__ import annotations

import math

import numpy as np

from openpose_train.generator.registry import PoseModel


# An upright BODY_25 person facing the camera, (x, y) in units of body height from the head top.
BODY_25_UPRIGHT = np.array([
    (0, .06), (0, .17), (-.11, .18), (-.14, .33), (-.15, .46), (.11, .18), (.14, .33),
    (.15, .46), (0, .5), (-.06, .5), (-.07, .72), (-.07, .93), (.06, .5), (.07, .72), (.07, .93),
    (-.025, .04), (.025, .04), (-.05, .05), (.05, .05), (.09, .99), (.11, .98), (.06, .95),
    (-.09, .99), (-.11, .98), (-.06, .95)])


def render_ground_truth_maps(model: PoseModel, keypoints: np.ndarray, height: int, width: int,
                             sigma: float = 7.0, paf_width: float = 8.0,
                             stride: int = 1) -> np.ndarray:
    """(C, H, W) float32 maps in net_output order for ``keypoints`` (people, N, 3) given in
    input pixels (third column > 0 = present). With ``stride`` > 1 the grid has
    ``ceil(size / stride)`` cells whose centres are at ``stride * g + stride / 2 - 0.5``;
    ``sigma`` and ``paf_width`` are in input pixels."""
    n = model.num_parts
    h, w = -(-height // stride), -(-width // stride)
    maps = np.zeros((model.num_channels, h, w), dtype=np.float32)
    centre = stride / 2.0 - 0.5
    cut = sigma * math.sqrt(2 * 4.6052)   # exp(-d^2 / 2 sigma^2) < 0.01 beyond
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, n, 3)
    for person in kps:
        for part in range(n):
            x, y, v = person[part]
            if v <= 0:
                continue
            x0, x1 = _cells(x - cut, x + cut, stride, centre, w)
            y0, y1 = _cells(y - cut, y + cut, stride, centre, h)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = np.arange(x0, x1) * stride + centre
            gy = np.arange(y0, y1) * stride + centre
            d2 = (gx[None, :] - x) ** 2 + (gy[:, None] - y) ** 2
            g = np.exp(-d2 / (2 * sigma * sigma))
            g[d2 / (2 * sigma * sigma) > 4.6052] = 0
            np.maximum(maps[part, y0:y1, x0:x1], g, out=maps[part, y0:y1, x0:x1])
    if model.has_background:
        maps[n] = np.maximum(1 - maps[:n].max(axis=0), 0)
    base = n + int(model.has_background)
    for k, (a, b) in enumerate(model.paf_pairs):
        acc = np.zeros((2, h, w), dtype=np.float32)
        hits = np.zeros((h, w), dtype=np.float32)
        for person in kps:
            if person[a, 2] <= 0 or person[b, 2] <= 0:
                continue
            pa, pb = person[a, :2], person[b, :2]
            d = pb - pa
            length = float(np.hypot(*d))
            if length < 1e-6:
                continue
            u = d / length
            x0, x1 = _cells(min(pa[0], pb[0]) - paf_width, max(pa[0], pb[0]) + paf_width,
                            stride, centre, w)
            y0, y1 = _cells(min(pa[1], pb[1]) - paf_width, max(pa[1], pb[1]) + paf_width,
                            stride, centre, h)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = np.arange(x0, x1) * stride + centre - pa[0]
            gy = np.arange(y0, y1) * stride + centre - pa[1]
            along = gx[None, :] * u[0] + gy[:, None] * u[1]
            across = np.abs(gx[None, :] * u[1] - gy[:, None] * u[0])
            # like the fork's limb band: a little past both ends, so the PAF is full strength
            # at the keypoints themselves (the first PAF sample is taken at A)
            on = (along >= -paf_width) & (along <= length + paf_width) & (across <= paf_width)
            acc[0, y0:y1, x0:x1] += on * u[0]
            acc[1, y0:y1, x0:x1] += on * u[1]
            hits[y0:y1, x0:x1] += on
        np.divide(acc, np.maximum(hits, 1), out=acc)
        maps[base + 2 * k: base + 2 * k + 2] = acc
    return maps


def _cells(lo: float, hi: float, stride: int, centre: float, size: int):
    """Grid cell range [first, last) whose centres lie within [lo, hi], clipped to the map."""
    first = max(int(math.ceil((lo - centre) / stride)), 0)
    last = min(int(math.floor((hi - centre) / stride)) + 1, size)
    return first, last


# ------------------------------------------------------------------------------ --groundtruth-maps
# ``validate --groundtruth-maps``: instead of a network's output, each image's own annotations
# rendered with the training label rules (caffe_layers/labels.py, docs/labels.md) at the
# network's output resolution (stride 8 of the net input OpenPose would use), then
# post-processed exactly as a network's maps: the ceiling post-processing allows at that
# resolution. Keypoints get a deterministic jitter below 0.1 net pixel: integer annotations
# otherwise draw Gaussians with two equal top pixels, a tie OpenPose's strict NMS rejects and
# that no network output has.
GROUND_TRUTH_JITTER = 0.1


def ground_truth_variant(model: PoseModel, doc: dict):
    """The model's training variant (registry data) that reads the most keypoints of the
    annotations ``doc`` (e.g. COCO_25_133 on COCO-WholeBody, COCO_18 from its body part), and
    its dataset layout."""
    from openpose_train.generator.registry import get_dataset_layout
    from openpose_train.validation.coco_eval import CocoEvalError
    from openpose_train.validation.metrics_coco import annotation_keypoints
    sample = next((a for a in doc.get("annotations", [])
                   if not a.get("iscrowd", 0) and a.get("keypoints")), None)
    best = None
    for variant in model.variants:
        try:
            layout = get_dataset_layout(variant.dataset)
        except KeyError:
            continue
        if sample is not None and annotation_keypoints(sample, layout) is not None \
                and (best is None or variant.num_lmdb_parts > best[0].num_lmdb_parts):
            best = (variant, layout)
    if best is None:
        raise CocoEvalError(f"{model.name}: none of its training variants "
                            f"({', '.join(v.op_model for v in model.variants) or 'none'}) reads "
                            f"these annotations, so their ground-truth maps cannot be drawn")
    return best


def openpose_visibility(points: np.ndarray) -> np.ndarray:
    """COCO v (0 unlabeled, 1 occluded, 2 visible) -> the fork's codes (2, 0, 1), in place.
    COCO-WholeBody hands carry a confidence in (0, 1] as v: labeled (as the evaluation counts
    every v > 0), so any 0 < v < 1.5 is "occluded" (0), which draws like a visible point."""
    v = points[..., 2]
    points[..., 2] = np.select([v >= 2.5, v >= 1.5, v > 0], [4, 1, 0], 2)
    return points


class GroundTruthEstimator:
    """Stands in for :class:`~openpose_train.validation.inference.PoseEstimator`: the maps of
    each image are its annotations rendered by the training label renderer at every scale's
    stride-8 grid, merged and parsed like a network's."""

    needs_image_ids = True

    def __init__(self, model: PoseModel, doc: dict, settings=None, sigma: float = 7.0,
                 stride: int = 8):
        from openpose_train.validation.inference import InferenceSettings, PoseEstimator
        from openpose_train.validation.metrics_coco import annotation_keypoints
        self.model, self.sigma, self.stride = model, sigma, stride
        self.variant, layout = ground_truth_variant(model, doc)
        self.settings = settings or InferenceSettings()
        self._planner = PoseEstimator(model, None, self.settings)
        people: dict = {}
        for ann in doc.get("annotations", []):
            if ann.get("iscrowd", 0) or float(ann.get("num_keypoints", 0) or 0) <= 0:
                continue
            points = annotation_keypoints(ann, layout)
            if points is not None:
                people.setdefault(int(ann["image_id"]), []).append(openpose_visibility(points))
        self.people = {k: np.asarray(v, np.float32) for k, v in people.items()}

    def maps(self, image_shape, image_id: int):
        """(merged maps at the scale-0 net size, net->image scale, heatmap block bounds) of one
        image, resized as the chosen OpenPose build resizes a network's output."""
        from openpose_train.caffe_layers.labels import (label_targets_to_net_output,
                                                        remap_keypoints, render_labels)
        from openpose_train.validation.inference import NET_DECREASE_FACTOR, net_to_image_scale
        h, w = image_shape[:2]
        scales, net0 = self._planner.plan((w, h))
        lmdb = self.people.get(int(image_id), np.zeros((0, self.variant.num_lmdb_parts, 3), np.float32))
        people = remap_keypoints(self.variant, lmdb)
        rng = np.random.default_rng(int(image_id))
        jitter = rng.uniform(-GROUND_TRUTH_JITTER, GROUND_TRUTH_JITTER, people[..., :2].shape)
        outputs = []
        for size, s in scales:
            scaled = people.copy()
            scaled[..., :2] = people[..., :2] * s + jitter
            grid = (size[0] // self.stride, size[1] // self.stride)
            label = render_labels(self.model, self.variant, scaled, None, grid, self.stride,
                                  self.sigma)
            outputs.append(np.asarray(label_targets_to_net_output(self.model, label)))
        if self.stride == NET_DECREASE_FACTOR:
            merged, bound = self._planner.merge(outputs, [s for _, s in scales], net0)
        else:                   # finer label grids (tests of small parts): the CUDA resize
            from openpose_train.validation.inference import resize_and_merge
            merged = resize_and_merge(outputs, [s for _, s in scales], net0, factor=self.stride)
            bound = None
        return merged, net_to_image_scale(net0, (w, h)), bound

    def estimate_batch(self, images, image_ids):
        return [self._planner.parse(*self.maps(image.shape, image_id))
                for image, image_id in zip(images, image_ids)]


class GroundTruthCropEstimator:
    """Stands in for :class:`~openpose_train.validation.crop_nets.CropNetEstimator`: each
    hand / face crop's maps are its own keypoints rendered with the label rules on the crop
    net's stride-8 output grid."""

    def __init__(self, model: PoseModel, net_side: int = 368, crop_scale: float = 1.5,
                 sigma: float = 7.0, stride: int = 8):
        self.model, self.net_side, self.crop_scale = model, net_side, crop_scale
        self.sigma, self.stride = sigma, stride
        self.variant = model.variants[0]

    def estimate_crops(self, image, samples):
        from openpose_train.caffe_layers.labels import label_targets_to_net_output, render_labels
        from openpose_train.validation.crop_nets import (crop_matrix, ground_truth_people,
                                                         keypoints_from_maps)
        out = []
        grid = (self.net_side // self.stride,) * 2
        for sample in samples:
            matrix = crop_matrix(sample, self.net_side, self.crop_scale)
            people = ground_truth_people(self.model, sample, matrix)
            label = render_labels(self.model, self.variant, people, None, grid, self.stride,
                                  self.sigma)
            maps = np.asarray(label_targets_to_net_output(self.model, label))
            out.append(keypoints_from_maps(self.model, maps, matrix, sample.group))
        return out
