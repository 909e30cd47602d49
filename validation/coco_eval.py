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


def load_coco(annotations: str):
    """pycocotools COCO of a keypoint annotation file (quiet), or CocoEvalError naming it."""
    from pycocotools.coco import COCO
    if not os.path.isfile(annotations):
        raise CocoEvalError(f"annotation file not found: {annotations}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(annotations)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise CocoEvalError(f"{annotations}: not a COCO annotation file ({exc})") from None
    return coco


def image_ids_by_name(coco) -> Dict[str, int]:
    """File name (base name) -> image id of an annotation file."""
    return {os.path.basename(img["file_name"]): int(img["id"]) for img in coco.dataset.get("images", [])}


def evaluate(coco_gt, results: List[dict], image_ids: Iterable[int],
             variant: str = "body") -> dict:
    """COCOeval keypoints on ``image_ids``: ``{"stats": {AP..ARl}, "summary": text, "note"}``."""
    from pycocotools.cocoeval import COCOeval
    image_ids = sorted(set(int(i) for i in image_ids))
    zeros = {name: 0.0 for name in STAT_NAMES}
    if not image_ids:
        return {"stats": zeros, "summary": "", "note": "no images were evaluated"}
    if not results:
        return {"stats": zeros, "summary": "",
                "note": "no detections: every metric is 0 (pycocotools cannot load an empty list)"}
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
    summary = "\n".join(line for line in text.splitlines() if line.strip().startswith("Average"))
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    return {"stats": stats, "summary": summary, "note": ""}
