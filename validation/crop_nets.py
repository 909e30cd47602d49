"""Hand and face nets (HAND_21, FACE_70) run as OpenPose runs them: on square crops.

OpenPose (docs/postprocessing.md §Hand and face) warps a square rectangle of the
image into the ``net_side`` x ``net_side`` net input (``warpAffine`` with the inverse map,
bilinear, black border), mirrors left hands (the hand net sees right hands only), upsamples the
stride-8 output 8x with its bicubic resize and takes each heatmap's global maximum, mapped back
through the same affine. Here the rectangles come from the COCO-WholeBody boxes
(``face_box``, ``lefthand_box``, ``righthand_box``): a square of ``crop_scale`` times the box's
longer side around its centre (our choice: OpenPose derives its rectangles from the body
keypoints instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from openpose_train.generator.registry import DatasetLayout, PoseModel
from openpose_train.validation.coco_eval import CocoEvalError
from openpose_train.validation.inference import NET_DECREASE_FACTOR, upsample_output
from openpose_train.validation.metrics_coco import annotation_keypoints, layout_groups
from openpose_train.validation.postprocess import find_maximum_keypoints

CROP_NET_SIDE = 368          # OpenPose's --hand_net_resolution / --face_net_resolution default
CROP_SCALE = 1.5
# the COCO-WholeBody groups each crop net reads, and the group OpenPose mirrors
CROP_GROUPS = {"hand": ("lefthand", "righthand"), "face": ("face",)}
MIRRORED_GROUPS = ("lefthand",)


@dataclass
class CropSample:
    """One annotated hand or face: its box and its keypoints in image pixels."""

    ann_id: int
    image_id: int
    group: str                 # "lefthand", "righthand", "face"
    box: tuple                 # x, y, w, h
    keypoints: np.ndarray      # (K, 3), v > 0 = labeled

    @property
    def mirrored(self) -> bool:
        return self.group in MIRRORED_GROUPS

    @property
    def size(self) -> float:
        return float(max(self.box[2], self.box[3]))


def crop_samples(doc: dict, layout: DatasetLayout, model: PoseModel) -> Dict[int, List[CropSample]]:
    """image id -> the valid hands or faces (per ``model.crop_net``) with a non-empty box and at
    least one labeled keypoint."""
    groups = layout_groups(layout)
    wanted = CROP_GROUPS.get(model.crop_net, ())
    out: Dict[int, List[CropSample]] = {}
    for ann in doc.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        points = annotation_keypoints(ann, layout)
        if points is None:
            continue
        for group in wanted:
            if group not in groups:
                continue
            box = ann.get(f"{group}_box")
            first, count = groups[group]
            kps = points[first:first + count]
            if not isinstance(box, (list, tuple)) or len(box) != 4 or min(box[2], box[3]) <= 0 \
                    or not (kps[:, 2] > 0).any():
                continue
            out.setdefault(int(ann["image_id"]), []).append(CropSample(
                int(ann["id"]), int(ann["image_id"]), group, tuple(float(v) for v in box), kps))
    return out


def crop_matrix(sample: CropSample, net_side: int = CROP_NET_SIDE,
                crop_scale: float = CROP_SCALE) -> np.ndarray:
    """2x3 affine mapping a net-input pixel (u, v) to the image: ``x = x0 + s u`` (mirrored:
    ``x0 + s (net_side - 1 - u)``), ``y = y0 + s v``, with the square of side
    ``crop_scale * max(w, h)`` centred on the box and ``s = side / net_side``."""
    x, y, w, h = sample.box
    side = crop_scale * max(w, h)
    s = side / net_side
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    if sample.mirrored:
        return np.array([[-s, 0, x0 + s * (net_side - 1)], [0, s, y0]], np.float64)
    return np.array([[s, 0, x0], [0, s, y0]], np.float64)


def to_net(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Image pixels (..., 2) -> net-input pixels through the inverse of ``matrix``."""
    inverse = cv2.invertAffineTransform(matrix)
    return points[..., :2] @ inverse[:, :2].T + inverse[:, 2]


def to_image(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Net-input pixels (..., 2) -> image pixels."""
    return points[..., :2] @ matrix[:, :2].T + matrix[:, 2]


def crop_input(image: np.ndarray, matrix: np.ndarray, net_side: int = CROP_NET_SIDE) -> np.ndarray:
    """(3, S, S) float32 net input of one crop (OpenPose's ``/256 - 0.5``)."""
    placed = cv2.warpAffine(image, matrix, (net_side, net_side),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return np.ascontiguousarray(
        placed.astype(np.float32).transpose(2, 0, 1) * np.float32(1 / 256) - np.float32(0.5))


def crop_reorder(model: PoseModel, group: str) -> np.ndarray:
    """Model part per keypoint of ``group`` for a crop net (registry ``to_coco_hand21`` /
    ``to_coco_face``)."""
    table = model.to_coco_face if group == "face" else model.to_coco_hand21
    if table is None:
        raise CocoEvalError(f"{model.name}: no registry reorder for the '{group}' keypoints")
    return np.asarray(table, np.int64)


def keypoints_from_maps(model: PoseModel, maps: np.ndarray, matrix: np.ndarray,
                        group: str) -> np.ndarray:
    """(K, 3) image-pixel keypoints of ``group`` (x, y, score) from one crop's stride-8 output
    maps: 8x bicubic upsampling, global maximum per heatmap, back through the affine."""
    side = maps.shape[-1] * NET_DECREASE_FACTOR
    full = upsample_output(np.asarray(maps, np.float32), (side, maps.shape[-2] * NET_DECREASE_FACTOR),
                           float(NET_DECREASE_FACTOR))
    keypoints, _ = find_maximum_keypoints(model, full)
    picked = keypoints[0][crop_reorder(model, group)].astype(np.float64)
    picked[:, :2] = to_image(matrix, picked[:, :2])
    return picked


class CropNetEstimator:
    """HAND_21 / FACE_70 on the crops of one image with a backend (``forward`` of a batch of
    (3, S, S) inputs -> (n, C, S/8, S/8) outputs)."""

    def __init__(self, model: PoseModel, backend, net_side: int = CROP_NET_SIDE,
                 crop_scale: float = CROP_SCALE):
        if not model.crop_net:
            raise CocoEvalError(f"{model.name} is not a hand or face crop net")
        self.model, self.backend = model, backend
        self.net_side, self.crop_scale = net_side, crop_scale

    def estimate_crops(self, image: np.ndarray, samples: Sequence[CropSample]) -> List[np.ndarray]:
        if not samples:
            return []
        matrices = [crop_matrix(s, self.net_side, self.crop_scale) for s in samples]
        outputs = self.backend.forward(np.stack([crop_input(image, m, self.net_side)
                                                 for m in matrices]))
        return [keypoints_from_maps(self.model, out, m, s.group)
                for out, m, s in zip(outputs, matrices, samples)]


def group_predictions(predictions: Dict[tuple, np.ndarray], samples: Dict[int, List[CropSample]],
                      ) -> List[tuple]:
    """[(sample, prediction or None)] in image order."""
    return [(s, predictions.get((s.ann_id, s.group))) for image_id in sorted(samples)
            for s in samples[image_id]]


def ground_truth_people(model: PoseModel, sample: CropSample, matrix: np.ndarray) -> np.ndarray:
    """(1, N, 3) model-order keypoints of ``sample`` in net-input pixels with OpenPose
    visibility codes (1 labeled, 2 unlabeled, 4 not in this dataset), for the label renderer."""
    reorder = crop_reorder(model, sample.group)
    people = np.zeros((1, model.num_parts, 3), np.float32)
    people[0, :, 2] = 4
    net = to_net(matrix, sample.keypoints[:, :2])
    labeled = sample.keypoints[:, 2] > 0
    people[0, reorder, :2] = net
    people[0, reorder, 2] = np.where(labeled, 1, 2)
    return people


def predictions_for(estimator, image: np.ndarray, samples: Optional[List[CropSample]]):
    """{(ann_id, group): (K, 3)} of one image."""
    if not samples:
        return {}
    found = estimator.estimate_crops(image, samples)
    return {(s.ann_id, s.group): kp for s, kp in zip(samples, found)}
