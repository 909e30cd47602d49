"""COCO-style keypoint JSON to per-person training records (the MATLAB a2 + a3 + a4 steps in one).

Reads body 17 (``coco``), COCO + foot 23 (``coco_foot``), COCO-WholeBody 133 (``wholebody``),
hand and face COCO-style files, and MPII (converted by :mod:`.mpii`). Keypoint counts, field
names, the LMDB dataset string and the mask channel come from the registry's ``DatasetLayout``.

Rules (``docs/formats.md`` §Records), and where we deliberately differ:

* images are the images that have annotations, in order of first appearance of their
  ``image_id`` among the annotations (a2); annotations of one image need not be contiguous
  (a2 would split such an image in two).
* main people, in annotation order: ``num_keypoints >= 5``, ``area >= 32*32``, and a bbox centre
  not within ``0.3 * max(w, h)`` (of that earlier person's bbox) of the centre of any person
  already taken; ``coco_foot`` also needs >= 2 labeled foot points. ``objpos`` = bbox centre,
  ``scale_provided`` = bbox height / 368, visibility ``(v + 2) mod 3`` (v >= 3 -> 4); a
  COCO-WholeBody part group whose ``*_valid`` flag is false is "not in this dataset" (4).
* others: every other person of the image with ``num_keypoints > 0`` (also ones rejected as main).
* ``annolist_index`` / ``people_index``: 1-based (COCO, a4); 0-based for MPII (its converter).
* masks with pycocotools: ``mask_miss`` = 0 over non-crowd people with no keypoints and over crowd
  regions not covered by an individual person, 255 elsewhere; ``mask_all`` = union of everyone
  (+ crowd). **Every polygon of a person is used** (the original MATLAB used only the first one,
  leaving later parts of split people unmasked). Polygons, compressed and uncompressed RLE.
  MPII: the positive "thin box" mask (255 only on labeled people's boxes, width min(w, 0.3 h)).
  Hands / faces: the body rule (the original grew hulls radially around Detectron people).
* bad annotations are dropped and counted (wrong keypoint array length, labeled keypoints
  outside the image, zero or negative bbox, a non-numeric ``keypoints`` / ``bbox`` / ``area`` /
  ``num_keypoints``, a segmentation polygon of odd length or with non-numbers); a file that is
  not COCO-style (a missing key, an image entry whose ``id`` / ``width`` / ``height`` is not a
  number) raises :class:`CocoFormatError` naming the file, the entry and the key.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.registry import DatasetLayout, get_dataset_layout

from openpose_train.caffe_layers.metadata import Metadata

SCALE_REFERENCE = 368.0          # scale_provided = bbox height / 368 (sImageScale)
MIN_KEYPOINTS = 5
MIN_AREA = 32 * 32
CENTRE_DISTANCE_RATIO = 0.3
# datasets whose original converter used 0-based annolist/people indexes
ZERO_BASED_INDEXES = frozenset({"mpii"})
# (slice of LMDB keypoints, minimum labeled) that a main person must have (a4 foot-2017 mode)
REQUIRED_LABELED = {"coco_foot": (slice(17, 23), 2)}
# datasets whose mask_miss is the positive thin-box mask of labeled people
THIN_BOX_MASK = frozenset({"mpii"})

# people skip reasons (summary keys)
FEW_KEYPOINTS = "fewer than 5 keypoints"
SMALL_AREA = "area below 32x32"
TOO_CLOSE = "centre too close to a person already taken"
FEW_FOOT = "fewer than 2 labeled foot keypoints"
BAD_LENGTH = "wrong keypoint array length"
OUTSIDE = "keypoints outside the image"
BAD_BOX = "zero or negative bbox"
BAD_POLYGON = "malformed segmentation"
CROWD = "crowd region"


def non_numeric(name: str) -> str:
    """Skip reason of an annotation whose field ``name`` holds something that is not a number."""
    return f"non-numeric '{name}'"


class CocoFormatError(OpenPoseTrainError, ValueError):
    """The file is not a COCO-style keypoint file; the message names the file and the missing key."""


@dataclass
class Person:
    """One annotation of an image, keypoints already in LMDB order with COCO visibility."""

    index: int                        # position among the image's annotations (0-based)
    keypoints: Optional[np.ndarray]   # (N, 3) x, y, COCO v (0 unlabeled, 1 occluded, 2 visible, 3 not in dataset)
    bbox: Tuple[float, float, float, float]
    area: float
    num_keypoints: int
    iscrowd: bool
    segmentation: object
    problem: Optional[str] = None     # why this annotation cannot be a main person or an "other"
    ann_id: object = None             # the annotation's "id" (names it in the skipped list)

    @property
    def centre(self):
        x, y, w, h = self.bbox
        return np.array([x + w / 2.0, y + h / 2.0])

    @property
    def usable(self) -> bool:
        return self.problem is None and not self.iscrowd and self.num_keypoints > 0


@dataclass
class ImageEntry:
    """One image with its annotations (the unit of work of the LMDB writer)."""

    index: int                        # 0-based position in the image list (annolist order)
    image_id: object
    file_name: str
    width: int
    height: int
    people: List[Person] = field(default_factory=list)


@dataclass
class KeypointDataset:
    path: Path
    layout: DatasetLayout
    images: List[ImageEntry]
    problems: Counter = field(default_factory=Counter)   # dropped annotations by reason


def _need(mapping, key, path, where):
    if not isinstance(mapping, dict) or key not in mapping:
        raise CocoFormatError(f"{path}: not a COCO-style keypoint file: {where} has no '{key}'")
    return mapping[key]


def _image_size(img, key, path, i) -> int:
    try:
        return int(img[key])
    except (ValueError, TypeError):
        raise CocoFormatError(f"{path}: images[{i}] '{key}' is not a number: {img[key]!r}") from None


def _flag(value) -> bool:
    return value in (True, 1, "True", "true", "1")


def _keypoint_groups(ann, layout: DatasetLayout):
    """(field, validity flag, count or None) per group: COCO-WholeBody's spelling of the layout
    when the annotation has its fields, else the layout's own JSON fields."""
    wholebody = layout.wholebody_fields
    if wholebody and all(name in ann for name, _, _ in wholebody if name):
        return wholebody
    validity = layout.validity_fields or ("",) * len(layout.json_fields)
    return [(name, flag, None) for name, flag in zip(layout.json_fields, validity)]


def _assemble_keypoints(ann, layout: DatasetLayout):
    """(N, 3) float array in LMDB order, or None when the arrays have the wrong length."""
    values = []
    for name, flag, count in _keypoint_groups(ann, layout):
        if not name:                           # points this JSON does not have
            group = np.zeros((count, 3))
            group[:, 2] = 3                    # not in this dataset -> LMDB 4
            values.append(group)
            continue
        group = ann.get(name)
        if not isinstance(group, (list, tuple)) or len(group) % 3 or (count and len(group) != 3 * count):
            return None
        try:
            group = np.asarray(group, dtype=np.float64).reshape(-1, 3)
        except (ValueError, TypeError):
            raise _NotNumeric(name) from None
        if flag and not _flag(ann.get(flag, False)):
            group = np.zeros_like(group)
            group[:, 2] = 3                    # not in this dataset -> LMDB 4
        values.append(group)
    if not values:
        return None
    points = np.concatenate(values)
    if points.shape[0] != layout.num_keypoints:
        return None
    return points


class _NotNumeric(OpenPoseTrainError, ValueError):
    """An annotation field (the argument) holds something that is not a number."""


def _number(ann, name, default):
    try:
        return float(ann.get(name, default))
    except (ValueError, TypeError):
        raise _NotNumeric(name) from None


def polygon_problem(segmentation) -> Optional[str]:
    """Why a polygon segmentation cannot be drawn (odd length, not numbers), or None; pycocotools
    would take an odd-length polygon silently and draw a wrong mask."""
    if not isinstance(segmentation, list):
        return None
    for polygon in segmentation:
        if not isinstance(polygon, (list, tuple)) or len(polygon) % 2:
            return BAD_POLYGON
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in polygon):
            return BAD_POLYGON
    return None


def _person(index, ann, layout, width, height, path, where) -> Person:
    iscrowd = bool(ann.get("iscrowd", 0))
    person = Person(index=index, keypoints=None, bbox=(0.0,) * 4, area=0.0, num_keypoints=0,
                    iscrowd=iscrowd, segmentation=ann.get("segmentation"), ann_id=ann.get("id"))
    try:
        person.num_keypoints = int(_number(ann, "num_keypoints", 0))
        bbox = ann.get("bbox", [0, 0, 0, 0])
        if isinstance(bbox, (list, tuple)):
            try:
                person.bbox = tuple(float(v) for v in bbox)
            except (ValueError, TypeError):
                raise _NotNumeric("bbox") from None
        person.area = _number(ann, "area", 0.0)
        if iscrowd or person.num_keypoints <= 0:
            return person              # crowd / unlabeled person: masked out, never a record
        points = _assemble_keypoints(ann, layout)
    except _NotNumeric as exc:
        person.problem = non_numeric(exc.args[0])
        return person
    if polygon_problem(person.segmentation):
        person.problem = BAD_POLYGON
        person.segmentation = None     # not drawn into mask_all; skipped like any bad annotation
        return person
    if points is None:
        person.problem = BAD_LENGTH
        return person
    person.keypoints = points
    if len(person.bbox) != 4 or person.bbox[2] <= 0 or person.bbox[3] <= 0:
        person.problem = BAD_BOX
        return person
    labeled = (points[:, 2] > 0) & (points[:, 2] < 3)
    xs, ys = points[labeled, 0], points[labeled, 1]
    if width <= 0 or height <= 0:
        return person                  # size unknown (unreadable image): the writer skips the image
    if not (np.isfinite(points[:, :2]).all() and (xs >= 0).all() and (ys >= 0).all()
            and (xs <= width).all() and (ys <= height).all()):
        person.problem = OUTSIDE
    return person


def parse_keypoint_json(doc, layout: DatasetLayout, path="<json>", mask_miss_only: bool = False) -> KeypointDataset:
    """A loaded COCO-style document to :class:`KeypointDataset` (images in a2 order).

    ``mask_miss_only``: keep only the segmentations :func:`mask_miss` needs (unlabeled people,
    crowds, everyone in images with a crowd), so that a large plan stays small in memory;
    :func:`image_masks`' ``mask_all`` is then incomplete."""
    images_list = _need(doc, "images", path, "the document")
    annotations = _need(doc, "annotations", path, "the document")
    if not isinstance(images_list, list) or not isinstance(annotations, list):
        raise CocoFormatError(f"{path}: not a COCO-style keypoint file: 'images' and 'annotations' must be lists")
    by_id = {}
    for i, img in enumerate(images_list):
        where = f"images[{i}]"
        for key in ("id", "file_name", "width", "height"):
            _need(img, key, path, where)
        if not isinstance(img["id"], (int, float, str)):
            raise CocoFormatError(f"{path}: {where} 'id' must be a number or a string, not {img['id']!r}")
        by_id[img["id"]] = img, i
    entries = {}
    problems = Counter()
    for j, ann in enumerate(annotations):
        where = f"annotations[{j}]"
        image_id = _need(ann, "image_id", path, where)
        if not isinstance(image_id, (int, float, str)) or image_id not in by_id:
            raise CocoFormatError(f"{path}: {where} refers to image_id {image_id!r}, which 'images' does not list")
        try:
            labeled = not ann.get("iscrowd", 0) and float(ann.get("num_keypoints", 0)) > 0
        except (ValueError, TypeError):
            labeled = True             # _person skips it with the reason
        if labeled:
            for key in ("bbox", "area", layout.json_fields[0]):
                _need(ann, key, path, where)
        entry = entries.get(image_id)
        if entry is None:
            img, i = by_id[image_id]
            entry = entries[image_id] = ImageEntry(
                index=len(entries), image_id=image_id, file_name=str(img["file_name"]),
                width=_image_size(img, "width", path, i), height=_image_size(img, "height", path, i))
        person = _person(len(entry.people), ann, layout, entry.width, entry.height, path, where)
        if person.problem:
            problems[person.problem] += 1
        entry.people.append(person)
    if mask_miss_only:
        for entry in entries.values():
            if not any(p.iscrowd for p in entry.people):
                for p in entry.people:
                    if p.num_keypoints > 0:
                        p.segmentation = None
    return KeypointDataset(path=Path(path), layout=layout, images=list(entries.values()), problems=problems)


def load_keypoint_json(path, layout, images_dir=None, mask_miss_only: bool = False) -> KeypointDataset:
    """Load a COCO-style keypoint JSON for a dataset key or layout. MPII list files are converted
    (their image sizes are read from ``images_dir``, default the JSON's folder)."""
    layout = get_dataset_layout(layout) if isinstance(layout, str) else layout
    path = Path(path)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise CocoFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CocoFormatError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(doc, list) and layout.key in ZERO_BASED_INDEXES:
        from .mpii import mpii_list_to_coco
        doc = mpii_list_to_coco(doc, path=path, images_dir=images_dir)
    return parse_keypoint_json(doc, layout, path, mask_miss_only)


def _visibility_to_openpose(v: np.ndarray) -> np.ndarray:
    """COCO v {0 unlabeled, 1 occluded, 2 visible, 3 not in dataset} -> OpenPose {2, 0, 1, 4}.

    COCO-WholeBody stores a confidence in (0, 1) as the ``v`` of many hand keypoints; like its
    official evaluation, any ``v > 0`` is labeled (here: labeled, occluded), so rounding does not
    drop the low-confidence hand points."""
    v = np.asarray(v, dtype=np.float64)
    v = np.where((v > 0) & (v < 1), 1, np.rint(v)).astype(np.int64)
    return np.where(v >= 3, 4, (v + 2) % 3).astype(np.float32)


def openpose_joints(points: np.ndarray) -> np.ndarray:
    """(N, 3) keypoints with OpenPose visibility codes (coordinates unchanged)."""
    out = points.astype(np.float32).copy()
    out[:, 2] = _visibility_to_openpose(points[:, 2])
    return out


@dataclass
class RecordPlan:
    """One training record: a main person of an image (indexes into ImageEntry.people)."""

    image_index: int
    person: int


def select_main_people(entry: ImageEntry, layout: DatasetLayout, skipped: Optional[Counter] = None,
                       named: Optional[list] = None) -> List[int]:
    """Indexes of the image's main people under the original rules (a4); counts skips by reason
    (and appends ``(file name, annotation id, reason)`` to ``named`` when given)."""
    skipped = skipped if skipped is not None else Counter()

    def reject(person, reason):
        skipped[reason] += 1
        if named is not None:
            named.append((entry.file_name, person.ann_id, reason))

    required = REQUIRED_LABELED.get(layout.key)
    taken = []      # (centre, max side)
    chosen = []
    for person in entry.people:
        if person.iscrowd or person.num_keypoints <= 0 or person.problem:
            continue
        if person.num_keypoints < MIN_KEYPOINTS:
            reject(person, FEW_KEYPOINTS)
            continue
        if person.area < MIN_AREA:
            reject(person, SMALL_AREA)
            continue
        centre = person.centre
        if any(np.linalg.norm(c - centre) < CENTRE_DISTANCE_RATIO * side for c, side in taken):
            reject(person, TOO_CLOSE)
            continue
        if required is not None:
            part, minimum = required
            op_v = _visibility_to_openpose(person.keypoints[part, 2])
            if int((op_v < 2).sum()) < minimum:      # 2 unlabeled, 4 not in this dataset
                reject(person, FEW_FOOT)
                continue
        taken.append((centre, max(person.bbox[2], person.bbox[3])))
        chosen.append(person.index)
    return chosen


def build_metadata(entry: ImageEntry, person_index: int, layout: DatasetLayout) -> Metadata:
    """Metadata of one record in 0-based image coordinates (before the writer's 1-based shift)."""
    main = entry.people[person_index]
    others = [p for p in entry.people if p.index != person_index and p.usable]
    zero_based = layout.key in ZERO_BASED_INDEXES
    n_parts = layout.num_keypoints
    return Metadata(
        dataset=layout.lmdb_dataset, img_height=float(entry.height), img_width=float(entry.width),
        objpos=main.centre, scale_provided=main.bbox[3] / SCALE_REFERENCE,
        joints=openpose_joints(main.keypoints),
        people_index=person_index + (0 if zero_based else 1),
        annolist_index=float(entry.index + (0 if zero_based else 1)),
        others_objpos=np.array([p.centre for p in others], np.float32).reshape(-1, 2),
        others_scale=np.array([p.bbox[3] / SCALE_REFERENCE for p in others], np.float32),
        others_joints=np.array([openpose_joints(p.keypoints) for p in others], np.float32).reshape(-1, n_parts, 3))


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Binary (H, W) uint8 mask of a COCO segmentation (all polygons, or RLE), as pycocotools annToMask."""
    if isinstance(segmentation, list):
        if polygon_problem(segmentation):
            raise ValueError(BAD_POLYGON)
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
    else:
        return np.zeros((height, width), np.uint8)
    mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation of size {mask.shape} on an image of {(height, width)}")
    return mask


def mask_miss(entry: ImageEntry, layout: DatasetLayout) -> np.ndarray:
    """``mask_miss`` alone (what the LMDB stores): decodes only the segmentations it needs
    (unlabeled people and crowds, plus everyone when there is a crowd); equal to image_masks()[0]."""
    people = [p for p in entry.people if p.segmentation is not None]
    if layout.key in THIN_BOX_MASK or any(p.iscrowd for p in people):
        return image_masks(entry, layout)[0]
    unlabeled = [p for p in people if p.num_keypoints <= 0]
    keep = np.full((entry.height, entry.width), 255, np.uint8)
    for p in unlabeled:
        keep[annotation_mask(p.segmentation, entry.height, entry.width).astype(bool)] = 0
    return keep


def image_masks(entry: ImageEntry, layout: DatasetLayout) -> Tuple[np.ndarray, np.ndarray]:
    """(mask_miss, mask_all) uint8 0/255 of one image (see the module docstring)."""
    h, w = entry.height, entry.width
    if layout.key in THIN_BOX_MASK:
        keep = np.zeros((h, w), np.uint8)
        for p in entry.people:
            if p.usable:
                x, y, bw, bh = p.bbox
                tw = min(bw, 0.3 * bh)
                cx = x + bw / 2.0
                x0, x1 = int(round(max(0, cx - tw / 2))), int(round(min(w, cx + tw / 2)))
                y0, y1 = int(round(max(0, y))), int(round(min(h, y + bh)))
                keep[y0:y1, x0:x1] = 255
        return keep, keep.copy()
    everyone = np.zeros((h, w), bool)
    unlabeled = np.zeros((h, w), bool)
    crowd = np.zeros((h, w), bool)
    for p in entry.people:
        if p.segmentation is None:
            continue
        m = annotation_mask(p.segmentation, h, w).astype(bool)
        if p.iscrowd:
            crowd |= m
        else:
            everyone |= m
            if p.num_keypoints <= 0:
                unlabeled |= m
    ignore = unlabeled | (crowd & ~everyone)
    mask_miss = np.where(ignore, 0, 255).astype(np.uint8)
    mask_all = np.where(everyone | crowd, 255, 0).astype(np.uint8)
    return mask_miss, mask_all


def plan_records(dataset: KeypointDataset, skipped: Optional[Counter] = None,
                 named: Optional[list] = None) -> List[RecordPlan]:
    """Every record of the dataset in image order (before shuffling). ``named`` receives
    ``(file name, annotation id, reason)`` of every annotation that is not a record: bad ones
    (``dataset.problems``) and people the selection rules leave out."""
    plans = []
    for entry in dataset.images:
        if named is not None:
            named.extend((entry.file_name, p.ann_id, p.problem) for p in entry.people if p.problem)
        for person in select_main_people(entry, dataset.layout, skipped, named):
            plans.append(RecordPlan(entry.index, person))
    return plans
