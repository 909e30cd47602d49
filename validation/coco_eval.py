"""COCO keypoint results, OpenPose's JSON writers and pycocotools evaluation.

* COCO results (``docs/postprocessing.md`` §Output, OpenPose's CocoJsonSaver conventions):
  keypoints reordered to COCO-17 with the registry's ``to_coco17`` (``to_coco_foot`` for the foot
  file), each written ``x, y, 1`` when its score is > 0 else ``-1, -1, 0``; a person with no valid
  selected keypoint is skipped; ``score`` = the person score; ``category_id`` 1; ``image_id`` from
  the annotation file (by file name) or the trailing digits of the file name.
* ``--write_json`` per-image files: ``{"version": 1.3, "people": [{"person_id": [-1],
  "pose_keypoints_2d": [...], "face_keypoints_2d": [], ...}]}`` named ``<image>_keypoints.json``.
* Evaluation: pycocotools COCOeval(iouType="keypoints") restricted to the evaluated images; no
  detections gives zeros and a note instead of pycocotools' crash.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from openpose_train.common.files import atomic_file
from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.output_paths import make_output_folder
from openpose_train.generator.registry import PoseModel

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
OPENPOSE_JSON_VERSION = 1.3


class CocoEvalError(OpenPoseTrainError, ValueError):
    """Unusable annotations or model/output combination; the message names the file or model."""


def write_json_atomic(path: str, data, indent: Optional[int] = None) -> None:
    """Write JSON to a temporary file next to ``path`` and rename it into place."""
    make_output_folder(os.path.dirname(os.path.abspath(path)))
    with atomic_file(path) as f:
        json.dump(data, f, indent=indent)


def image_id_from_name(file_name: str) -> int:
    """OpenPose's ``getLastNumber``: trailing digits of the base name without extension."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    m = re.search(r"(\d+)$", stem)
    if not m:
        raise CocoEvalError(f"{file_name}: no trailing digits to use as COCO image_id "
                            f"(give --annotations to map file names to ids)")
    return int(m.group(1))


def coco_mapping(model: PoseModel, variant: str = "body") -> Sequence[int]:
    """Model part index per COCO keypoint for ``body`` (17) or ``foot`` (6)."""
    table = model.to_coco17 if variant == "body" else model.to_coco_foot
    if table is None:
        raise CocoEvalError(f"{model.name}: no COCO {variant} mapping in the registry "
                            f"(OpenPose: 'Invalid number of body parts ({model.num_parts})')")
    return table


def people_to_coco(model: PoseModel, keypoints: np.ndarray, scores: np.ndarray, image_id: int,
                   variant: str = "body") -> List[dict]:
    """COCO results entries of one image (CocoJsonSaver conventions)."""
    return reordered_entries(coco_mapping(model, variant), keypoints, scores, image_id)


def reordered_entries(mapping: Sequence[int], keypoints: np.ndarray, scores: np.ndarray,
                      image_id: int) -> List[dict]:
    """COCO results entries of one image with the model part per COCO keypoint ``mapping``
    (-1: none); a person with no valid mapped keypoint is skipped."""
    mapping = np.asarray(mapping)
    out = []
    for person, score in zip(np.asarray(keypoints), np.asarray(scores)):
        picked = np.zeros((len(mapping), 3), dtype=np.float64)
        have = mapping >= 0
        picked[have] = person[mapping[have]]
        valid = picked[:, 2] > 0
        if not valid.any():
            continue
        flat = np.where(valid[:, None], np.column_stack([picked[:, :2], np.ones(len(picked))]),
                        [-1.0, -1.0, 0.0])
        out.append({"image_id": int(image_id), "category_id": 1,
                    "keypoints": [round(float(v), 3) for v in flat.reshape(-1)],
                    "score": float(score)})
    return out


def openpose_json(keypoints: np.ndarray) -> dict:
    """One image in OpenPose's ``--write_json`` format (body only; face/hand fields empty)."""
    people = []
    for person in np.asarray(keypoints, dtype=np.float64):
        people.append({
            "person_id": [-1],
            "pose_keypoints_2d": [float(v) for v in person.reshape(-1)],
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
            "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
            "hand_right_keypoints_3d": []})
    return {"version": OPENPOSE_JSON_VERSION, "people": people}


def write_openpose_json(folder: str, image_name: str, keypoints: np.ndarray) -> str:
    """Write ``<folder>/<image stem>_keypoints.json``; returns the path."""
    stem = os.path.splitext(os.path.basename(image_name))[0]
    path = os.path.join(folder, f"{stem}_keypoints.json")
    write_json_atomic(path, openpose_json(keypoints))
    return path


# OpenPose's CocoJsonSaver writes every person with category_id 1 (COCO's person), so the ground
# truth must list its people under that id (docs/postprocessing.md §Output)
PERSON_CATEGORY = 1


class NothingToScore(CocoEvalError):
    """The annotations (or the images chosen from them) hold no annotated person: any AP would be
    pycocotools' -1 ("no ground truth"), which is not a score."""


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def check_keypoint_document(doc, path: str) -> dict:
    """Check a COCO keypoint document before pycocotools reads it (its KeyErrors and int()
    errors name only a key or a value) and fill the fields it needs that have a COCO default
    (``iscrowd`` 0, ``num_keypoints`` = labeled keypoints). Raises CocoEvalError naming ``path``,
    the entry and the field; NothingToScore when no annotation of the person category has a
    labeled keypoint. Returns ``doc``."""
    if not isinstance(doc, dict):
        raise CocoEvalError(f"{path}: not a COCO annotation file (a JSON object with 'images', "
                            f"'annotations' and 'categories' lists)")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise CocoEvalError(f"{path}: no '{key}' list (a COCO keypoint file has 'images', "
                                f"'annotations' and 'categories')")
        if not isinstance(doc[key], list):
            raise CocoEvalError(f"{path}: '{key}' must be a list, not {type(doc[key]).__name__}")
    image_ids = set()
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict):
            raise CocoEvalError(f"{path}: images[{i}] is not an object: {img!r:.60}")
        for key in ("id", "file_name"):
            if key not in img:
                raise CocoEvalError(f"{path}: images[{i}] has no '{key}'")
        if not _is_integer(img["id"]):
            raise CocoEvalError(f"{path}: images[{i}] 'id' must be an integer, not {img['id']!r:.60}")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise CocoEvalError(f"{path}: images[{i}] 'file_name' must be a file name, not "
                                f"{img['file_name']!r:.60}")
        image_ids.add(img["id"])
    category_ids = []
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not _is_integer(cat.get("id")):
            raise CocoEvalError(f"{path}: categories[{i}] has no integer 'id': {cat!r:.60}")
        category_ids.append(cat["id"])
    people = 0
    used_categories = set()
    for j, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{j}]"
        if not isinstance(ann, dict):
            raise CocoEvalError(f"{where} is not an object: {ann!r:.60}")
        for key in ("image_id", "category_id"):
            if not _is_integer(ann.get(key)):
                raise CocoEvalError(f"{where} '{key}' must be an integer, not {ann.get(key, 'missing')!r:.60}")
        if ann["image_id"] not in image_ids:
            raise CocoEvalError(f"{where} 'image_id' {ann['image_id']} is not the id of an entry of 'images'")
        used_categories.add(ann["category_id"])
        keypoints = ann.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) % 3 or \
                not all(_is_number(v) for v in keypoints):
            raise CocoEvalError(f"{where} 'keypoints' must be a list of x, y, v numbers, not "
                                f"{keypoints if keypoints is None else str(keypoints)[:60]}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise CocoEvalError(f"{where} 'bbox' must be [x, y, width, height], not {str(bbox)[:60]}")
        if not _is_number(ann.get("area")):
            raise CocoEvalError(f"{where} 'area' must be a number, not {ann.get('area', 'missing')!r:.60}")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("num_keypoints", int(sum(1 for v in keypoints[2::3] if v > 0)))
        if not _is_number(ann["num_keypoints"]) or ann["iscrowd"] not in (0, 1, True, False):
            raise CocoEvalError(f"{where} 'num_keypoints' / 'iscrowd': not a count / 0 or 1")
        if ann["category_id"] == PERSON_CATEGORY and not ann["iscrowd"] and ann["num_keypoints"] > 0:
            people += 1
    if PERSON_CATEGORY not in category_ids:
        raise CocoEvalError(f"{path}: 'categories' has no id {PERSON_CATEGORY} (person), the category "
                            f"OpenPose writes its people with; it lists "
                            f"{', '.join(map(str, category_ids)) or 'none'}")
    if not doc["annotations"]:
        raise NothingToScore(f"{path}: nothing to score: 'annotations' is empty")
    if not people:
        other = sorted(used_categories - {PERSON_CATEGORY})
        why = (f"the annotations use category_id {', '.join(map(str, other))}, not {PERSON_CATEGORY} (person)"
               if other and PERSON_CATEGORY not in used_categories else
               f"no annotation of category {PERSON_CATEGORY} (person) has a labeled keypoint")
        raise NothingToScore(f"{path}: nothing to score: {why}")
    return doc


def read_annotation_file(annotations: str) -> dict:
    """The checked document of a COCO keypoint file (:func:`check_keypoint_document`), or
    CocoEvalError naming it."""
    if not os.path.isfile(annotations):
        raise CocoEvalError(f"annotation file not found: {annotations}")
    try:
        with open(annotations, "rb") as f:
            doc = json.load(f)
    except OSError as exc:
        raise CocoEvalError(f"{annotations}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CocoEvalError(f"{annotations}: not valid JSON ({exc})") from None
    return check_keypoint_document(doc, annotations)


def load_coco(annotations: str):
    """pycocotools COCO of a checked keypoint annotation file (quiet), or CocoEvalError naming it."""
    from pycocotools.coco import COCO
    doc = read_annotation_file(annotations)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = doc
        coco.createIndex()
    return coco


def image_ids_by_name(coco) -> Dict[str, int]:
    """File name (base name) -> image id of an annotation file (the first entry of a name)."""
    ids: Dict[str, int] = {}
    for img in coco.dataset.get("images", []):
        ids.setdefault(os.path.basename(img["file_name"]), int(img["id"]))
    return ids


def duplicate_file_names(coco) -> Dict[str, List[int]]:
    """Base file name -> the image ids of every entry sharing it, for names listed more than once."""
    ids: Dict[str, List[int]] = {}
    for img in coco.dataset.get("images", []):
        ids.setdefault(os.path.basename(img["file_name"]), []).append(int(img["id"]))
    return {name: found for name, found in ids.items() if len(found) > 1}


def scorable_people(coco, image_ids: Iterable[int]) -> int:
    """Annotated people (person category, not crowd, a labeled keypoint) on ``image_ids``."""
    keep = {int(i) for i in image_ids}
    return sum(1 for ann in coco.dataset["annotations"]
               if ann["image_id"] in keep and ann["category_id"] == PERSON_CATEGORY
               and not ann["iscrowd"] and ann["num_keypoints"] > 0)


# COCOeval's keypoint area ranges of each of STAT_NAMES (params.areaRng: all, medium, large)
_STAT_AREA = ("all", "all", "all", "medium", "large", "all", "all", "all", "medium", "large")
_AREA_RANGES = {"all": (0.0, 1e10), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}


def no_detection_stats(gt_annotations: Iterable[dict], image_ids: Iterable[int]) -> List[Optional[float]]:
    """COCOeval's stats without a single detection (pycocotools cannot load an empty result list):
    0 where the area range holds ground truth, None (its -1, nothing measured) where it holds none."""
    keep = {int(i) for i in image_ids}
    areas = [float(a["area"]) for a in gt_annotations if a["image_id"] in keep and not a.get("iscrowd")
             and a.get("num_keypoints", 0) > 0 and a.get("category_id", PERSON_CATEGORY) == PERSON_CATEGORY]
    return [0.0 if any(low <= area <= high for area in areas) else None
            for low, high in (_AREA_RANGES[r] for r in _STAT_AREA)]


def evaluate(coco_gt, results: List[dict], image_ids: Iterable[int],
             variant: str = "body") -> dict:
    """COCOeval keypoints on ``image_ids``: ``{"stats": {AP..ARl}, "summary": text, "note"}``."""
    from pycocotools.cocoeval import COCOeval
    image_ids = sorted(set(int(i) for i in image_ids))
    if not image_ids:
        return {"stats": dict.fromkeys(STAT_NAMES), "summary": "",
                "note": "nothing to score: no images were evaluated"}
    if not scorable_people(coco_gt, image_ids):
        return {"stats": dict.fromkeys(STAT_NAMES), "summary": "",
                "note": "nothing to score: no annotated person on the evaluated images"}
    if not results:
        zeros = dict(zip(STAT_NAMES, no_detection_stats(coco_gt.dataset["annotations"], image_ids)))
        return {"stats": zeros, "summary": "",
                "note": "no detections: every metric with ground truth is 0 (pycocotools cannot load an empty list)"}
    if variant == "foot":
        raise CocoEvalError("foot evaluation needs COCO foot annotations with 6 sigmas; "
                            "write the foot results JSON and evaluate it with the foot toolkit")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    text = buffer.getvalue()
    summary = "\n".join(line.replace("= -1.000", "= n/a (no ground truth in this range)")
                        for line in text.splitlines() if line.strip().startswith("Average"))
    # pycocotools' -1 means "no ground truth in this area range": no number, not a score
    stats = {name: None if v < 0 else float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    note = "" if stats["AP"] is not None else "nothing to score: no annotated person on the evaluated images"
    return {"stats": stats, "summary": summary, "note": note}
