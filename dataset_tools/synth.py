"""A synthetic COCO-format person-keypoint dataset: articulated stick figures on textured backgrounds.

Deterministic by seed (image ``i`` draws from ``numpy.random.default_rng([seed, i])``, so the
result does not depend on the number of images or on the order they are made). Each image has
0..``max_people`` figures (head, torso, limbs) of varied size, pose, rotation and colour; the
COCO-17 keypoints are the joints of the drawn figure, so a network can learn them. Also:

* segmentation polygons from the drawn figure (every outer contour; limbs crossing outside the
  image can split a person into several polygons), ``area`` and ``bbox`` from the same mask;
* people without keypoints (``num_keypoints = 0``) that the LMDB masks out;
* a few crowd regions (``iscrowd = 1``, uncompressed RLE, like COCO's);
* some images with nobody (negatives);
* optionally 23 keypoints (COCO + 6 foot, the ``coco2017_foot`` layout) and COCO-WholeBody fields
  (``foot_kpts``, ``face_kpts``, ``lefthand_kpts``, ``righthand_kpts`` and ``*_valid``).

Layout written: ``OUT/<split>/<id %012d>.jpg`` and ``OUT/annotations/person_keypoints_<split>.json``
with split ``train2017`` (and ``val2017`` with a validation share), i.e. the layout of COCO itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.common.files import atomic_file

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
FOOT_KEYPOINTS = ("left_big_toe", "left_small_toe", "left_heel",
                  "right_big_toe", "right_small_toe", "right_heel")
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
                 [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
# limbs drawn as thick lines (0-based COCO indices)
_LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 6), (11, 12)]


@dataclass
class SynthConfig:
    """What :func:`make_synthetic_dataset` produces."""

    images: int = 100
    seed: int = 0
    width: int = 256
    height: int = 256
    max_people: int = 4
    empty_fraction: float = 0.1        # images with nobody
    unlabeled_fraction: float = 0.1    # people drawn but annotated without keypoints
    crowd_fraction: float = 0.08       # images with a crowd region
    occluded_fraction: float = 0.1     # keypoints annotated v=1
    foot: bool = False                 # 23 keypoints (17 + 6 foot) in `keypoints`
    wholebody: bool = False            # COCO-WholeBody fields
    val_fraction: float = 0.0          # share of images in val2017
    jpeg_quality: int = 90
    min_person_height: float = 0.25    # fraction of the image height
    max_person_height: float = 0.9


@dataclass
class SynthResult:
    root: Path
    splits: Dict[str, Path] = field(default_factory=dict)       # split -> annotation JSON
    image_dirs: Dict[str, Path] = field(default_factory=dict)   # split -> image folder
    num_images: Dict[str, int] = field(default_factory=dict)
    num_people: int = 0


def _background(rng, height, width):
    """Smooth random colour field plus a few rectangles and circles (clutter, not people)."""
    low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(2, 6)):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            x1, y1 = x0 + int(rng.integers(5, width // 3)), y0 + int(rng.integers(5, height // 3))
            cv2.rectangle(img, (x0, y0), (x1, y1), color, -1)
        else:
            cv2.circle(img, (x0, y0), int(rng.integers(3, max(4, min(width, height) // 8))), color, -1)
    noise = rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _rot(angle):
    return np.array([np.sin(angle), np.cos(angle)])     # unit vector, angle 0 = straight down


def _figure(rng, cx, cy, person_h):
    """Keypoints (17 COCO + 6 foot, float (23, 2)) of one articulated figure and its drawing sizes."""
    u = person_h / 7.6                                    # head top (-4u) to ankles (+3.6u)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    p = np.zeros((23, 2))
    neck = np.array([0.0, -2.9 * u])
    head = np.array([0.15 * facing * u, -3.45 * u])
    p[0] = head + [0.3 * facing * u, 0.05 * u]                          # nose
    p[1] = head + [(0.15 + 0.15 * facing) * u, -0.15 * u]               # left eye
    p[2] = head + [(-0.15 + 0.15 * facing) * u, -0.15 * u]              # right eye
    p[3] = head + [(0.45 - 0.25 * facing) * u, 0.0]                     # left ear
    p[4] = head + [(-0.45 - 0.25 * facing) * u, 0.0]                    # right ear
    shoulder_w, hip_w = rng.uniform(0.75, 1.0) * u, rng.uniform(0.45, 0.6) * u
    p[5], p[6] = neck + [shoulder_w, 0.1 * u], neck + [-shoulder_w, 0.1 * u]
    hip_y = rng.uniform(-0.45, -0.15) * u
    p[11], p[12] = np.array([hip_w, hip_y]), np.array([-hip_w, hip_y])
    for side, (s, e, w) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        upper = side * rng.uniform(-0.3, 2.6)
        lower = upper + side * rng.uniform(-0.2, 2.2)
        p[e] = p[s] + 1.4 * u * _rot(upper)
        p[w] = p[e] + 1.3 * u * _rot(lower)
    for side, (h, k, a) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        thigh = side * rng.uniform(-0.25, 0.8)
        shin = thigh - facing * rng.uniform(0.0, 1.1)
        p[k] = p[h] + 1.9 * u * _rot(thigh)
        p[a] = p[k] + 1.85 * u * _rot(shin)
    for i, a in ((17, 15), (20, 16)):                                   # big toe, small toe, heel
        p[i] = p[a] + [0.55 * facing * u, 0.25 * u]
        p[i + 1] = p[a] + [0.35 * facing * u, 0.3 * u]
        p[i + 2] = p[a] + [-0.2 * facing * u, 0.15 * u]
    tilt = rng.uniform(-0.35, 0.35)
    c, s = np.cos(tilt), np.sin(tilt)
    p = p @ np.array([[c, s], [-s, c]])
    centre_shift = np.array([cx, cy]) - 0.5 * (p.min(0) + p.max(0))
    return p + centre_shift, u


def _draw_figure(canvas, points, u, color, value=None):
    """Draw the figure on ``canvas`` (colour image, or a mask when ``value`` is given)."""
    col = value if value is not None else color
    shade = value if value is not None else tuple(int(c * 0.7) for c in color)
    shift = 4                                           # sub-pixel drawing (fixed point, 4 bits)
    pt = lambda q: (int(round(q[0] * 16)), int(round(q[1] * 16)))  # noqa: E731
    thick = max(2, int(round(0.42 * u)))
    torso = np.array([points[5], points[6], points[12], points[11]]) * 16
    cv2.fillPoly(canvas, [np.round(torso).astype(np.int32)], col, cv2.LINE_AA if value is None else 8, shift)
    for a, b in _LIMBS:
        cv2.line(canvas, pt(points[a]), pt(points[b]), shade if a in (5, 6, 11) else col, thick,
                 cv2.LINE_AA if value is None else 8, shift)
    for a, b in ((15, 17), (16, 20)):
        cv2.line(canvas, pt(points[a]), pt(points[b]), col, max(2, thick // 2), 8, shift)
    neck = 0.5 * (points[5] + points[6])
    head = 0.5 * (points[3] + points[4])
    cv2.line(canvas, pt(neck), pt(head), col, max(2, thick // 2), 8, shift)
    cv2.circle(canvas, pt(head), int(round(0.62 * u * 16)), col, -1, cv2.LINE_AA if value is None else 8, shift)
    if value is None:
        for q in points[:5]:
            cv2.circle(canvas, pt(q), int(max(1.0, 0.1 * u) * 16), (255 - np.array(color)).tolist(), -1, 8, shift)


def _polygons(mask):
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 1.0, True)       # COCO-like vertex counts (tens, not hundreds)
        if len(c) >= 3:
            polys.append([float(v) + 0.5 for v in c.reshape(-1)])
    return polys


def _flat_keypoints(points, vis):
    out = []
    for (x, y), v in zip(points, vis):
        out.extend([0, 0, 0] if v == 0 else [round(float(x), 2), round(float(y), 2), int(v)])
    return out


def _visibility(rng, points, width, height, occluded_fraction):
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    vis = np.where(inside, 2, 0)
    vis[(vis == 2) & (rng.random(len(points)) < occluded_fraction)] = 1
    return vis


def _hand_points(rng, wrist, elbow, u):
    """21 hand points fanning out from the wrist along the forearm direction."""
    d = wrist - elbow
    d = d / (np.linalg.norm(d) + 1e-6)
    n = np.array([-d[1], d[0]])
    pts = [wrist]
    for finger in range(5):
        spread = (finger - 2) * 0.18 * u
        for joint in range(1, 5):
            pts.append(wrist + d * (0.15 + 0.13 * joint) * u + n * spread * (0.5 + 0.2 * joint))
    return np.array(pts)


def _face_points(points, u):
    """68 points on an ellipse-ish outline of the head (only positions matter for the layout)."""
    head = 0.5 * (points[3] + points[4])
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    r = 0.5 * u * (0.6 + 0.4 * (np.arange(68) % 17) / 17)
    return head + np.stack([np.cos(t) * r, np.sin(t) * r], 1)


def _wholebody_fields(rng, points, u, width, height, occluded, unlabeled):
    lh = _hand_points(rng, points[9], points[7], u)
    rh = _hand_points(rng, points[10], points[8], u)
    face = _face_points(points, u)
    out = {}
    for name, pts in (("foot", points[17:23]), ("face", face), ("lefthand", lh), ("righthand", rh)):
        v = _visibility(rng, pts, width, height, occluded)
        valid = bool((v > 0).sum() >= max(2, len(pts) // 3)) and not unlabeled
        if not valid:
            v = np.zeros_like(v)
        flat = _flat_keypoints(pts, v)
        if name != "foot":       # COCO-WholeBody stores a confidence-like 3rd value for face/hands
            flat = [float(x) for x in flat]
        out[f"{name}_kpts"] = flat
        out[f"{name}_valid"] = valid
        if name != "foot":
            lab = pts[v > 0]
            out[f"{name}_box"] = ([float(lab[:, 0].min()), float(lab[:, 1].min()),
                                   float(np.ptp(lab[:, 0])), float(np.ptp(lab[:, 1]))]
                                  if valid else [0.0, 0.0, 0.0, 0.0])
    return out


def synthesize_image(config: SynthConfig, index: int, image_id: int):
    """(BGR image, list of annotation dicts without ids) of synthetic image ``index``."""
    rng = np.random.default_rng([config.seed, index])
    w, h = config.width, config.height
    img = _background(rng, h, w)
    anns = []
    n_people = 0 if rng.random() < config.empty_fraction else int(rng.integers(1, config.max_people + 1))
    for _ in range(n_people):
        person_h = rng.uniform(config.min_person_height, config.max_person_height) * h
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.25, 0.75) * h
        points, u = _figure(rng, cx, cy, person_h)
        color = tuple(int(c) for c in rng.integers(30, 230, 3))
        person_mask = np.zeros((h, w), np.uint8)
        _draw_figure(person_mask, points, u, color, value=1)
        if person_mask.sum() < 16:
            continue
        _draw_figure(img, points, u, color)
        polys = _polygons(person_mask)
        if not polys:
            continue
        ys, xs = np.nonzero(person_mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        n_kp = 23 if config.foot else 17
        unlabeled = rng.random() < config.unlabeled_fraction
        vis = np.zeros(23, int) if unlabeled else _visibility(rng, points, w, h, config.occluded_fraction)
        ann = {"segmentation": polys, "num_keypoints": int((vis[:n_kp] > 0).sum()),
               "area": float(person_mask.sum()), "iscrowd": 0,
               "keypoints": _flat_keypoints(points[:n_kp], vis[:n_kp]),
               "image_id": image_id, "bbox": [round(v, 2) for v in bbox], "category_id": 1}
        if config.wholebody:
            ann.update(_wholebody_fields(rng, points, u, w, h, config.occluded_fraction, unlabeled))
        anns.append(ann)
    if rng.random() < config.crowd_fraction:
        crowd = np.zeros((h, w), np.uint8)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.3, 0.7) * h
        for _ in range(int(rng.integers(4, 9))):
            ph = rng.uniform(0.12, 0.22) * h
            px, py = cx + rng.uniform(-0.15, 0.15) * w, cy + rng.uniform(-0.1, 0.1) * h
            points, u = _figure(rng, px, py, ph)
            color = tuple(int(c) for c in rng.integers(30, 230, 3))
            _draw_figure(img, points, u, color)
            _draw_figure(crowd, points, u, color, value=1)
        if crowd.any():
            rle = mask_utils.encode(np.asfortranarray(crowd))
            counts = _rle_counts(crowd)
            x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
            anns.append({"segmentation": {"counts": counts, "size": [h, w]}, "num_keypoints": 0,
                         "area": float(crowd.sum()), "iscrowd": 1,
                         "keypoints": [0] * (3 * (23 if config.foot else 17)),
                         "image_id": image_id, "bbox": [x, y, bw, bh], "category_id": 1})
    return img, anns


def _rle_counts(mask):
    """Uncompressed COCO RLE counts (column-major runs starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]


def _categories(config):
    names = list(COCO_KEYPOINTS) + (list(FOOT_KEYPOINTS) if config.foot else [])
    return [{"supercategory": "person", "id": 1, "name": "person", "keypoints": names,
             "skeleton": COCO_SKELETON}]


class SynthWriteError(OpenPoseTrainError, OSError):
    """The synthetic dataset cannot be written (a full disk, no permission); names the path."""


def make_synthetic_dataset(out_dir, config: Optional[SynthConfig] = None, progress: bool = False) -> SynthResult:
    """Write a synthetic COCO-format dataset under ``out_dir`` (see the module docstring)."""
    try:
        return _write_synthetic_dataset(Path(out_dir), config or SynthConfig(), progress)
    except OSError as exc:
        raise SynthWriteError(f"{exc.filename or out_dir}: cannot write ({exc.strerror or exc})") from None


def _write_synthetic_dataset(root: Path, config: SynthConfig, progress: bool) -> SynthResult:
    n_val = int(round(config.images * config.val_fraction))
    splits = [("train2017", range(0, config.images - n_val))]
    if n_val:
        splits.append(("val2017", range(config.images - n_val, config.images)))
    result = SynthResult(root=root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.images, desc="synth", unit="img")
    ann_id = 1
    for split, indices in splits:
        image_dir = root / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images: List[dict] = []
        annotations: List[dict] = []
        for index in indices:
            image_id = index + 1
            img, anns = synthesize_image(config, index, image_id)
            name = f"{image_id:012d}.jpg"
            ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
            assert ok, "OpenCV cannot encode JPEG"
            (image_dir / name).write_bytes(jpeg.tobytes())   # a full disk raises, unlike cv2.imwrite
            images.append({"id": image_id, "file_name": name, "width": config.width, "height": config.height,
                           "license": 0})
            for ann in anns:
                ann["id"] = ann_id
                ann_id += 1
                annotations.append(ann)
            result.num_people += sum(1 for a in anns if not a["iscrowd"])
            if bar is not None:
                bar.update(1)
        doc = {"info": {"description": f"openpose-train synthetic stick figures, seed {config.seed}"},
               "licenses": [{"id": 0, "name": "generated"}], "images": images,
               "annotations": annotations, "categories": _categories(config)}
        json_path = root / "annotations" / f"person_keypoints_{split}.json"
        with atomic_file(json_path) as f:
            json.dump(doc, f)
        result.splits[split] = json_path
        result.image_dirs[split] = image_dir
        result.num_images[split] = len(images)
    if bar is not None:
        bar.close()
    return result
