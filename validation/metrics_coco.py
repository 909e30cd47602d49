"""OKS keypoint AP of the body, the feet and the COCO-WholeBody groups, with pycocotools.

Each keypoint group of an annotation file (the registry's ``DatasetLayout.keypoint_groups``:
``body`` 17, ``foot`` 6, ``face`` 68, ``lefthand`` 21, ``righthand`` 21, plus ``wholebody`` =
all 133) is scored by pycocotools' ``COCOeval(iouType="keypoints")`` with that group's OKS
sigmas (``DatasetLayout.oks_sigmas``) set in ``params.kpt_oks_sigmas``, following the COCO-WholeBody
evaluation (docs/postprocessing.md §Metrics):

* ground truth: the group's keypoints; a group whose ``*_valid`` flag is false counts as
  unlabeled; a person with no labeled keypoint in the group is ignored (as is a crowd); the OKS
  scale is the person's ``area``, the ignore region its ``bbox``;
* detections: the model's keypoints through the registry reorder of the group
  (``PoseModel.coco_group_reorder``), written as OpenPose's CocoJsonSaver writes them
  (``x, y, 1`` or ``-1, -1, 0``); a person with no keypoint of the group is not a detection of
  that group; the area used for the area ranges is the whole person's keypoint extent.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from openpose_train.generator.registry import DatasetLayout, PoseModel, get_dataset_layout
from openpose_train.validation.coco_eval import (CocoEvalError, STAT_NAMES, no_detection_stats,
                                                 reordered_entries)

WHOLEBODY = "wholebody"
# flat summary suffixes of COCOeval's stats (AP, AP50, AP75, APm, APl, AR, AR50, ...)
STAT_KEYS = tuple(name.lower() for name in STAT_NAMES)


def annotation_layout(doc: dict) -> DatasetLayout:
    """The registry layout of a COCO-style keypoint document: ``wholebody`` when annotations
    carry ``foot_kpts``, ``coco_foot`` when ``keypoints`` holds 23 points, else ``coco``."""
    for ann in doc.get("annotations", []):
        if ann.get("iscrowd", 0) or not ann.get("keypoints"):
            continue
        if "foot_kpts" in ann:
            return get_dataset_layout("wholebody")
        n = len(ann["keypoints"]) // 3
        return get_dataset_layout("coco_foot" if n == 23 else "coco")
    return get_dataset_layout("coco")


def layout_groups(layout: DatasetLayout) -> Dict[str, Tuple[int, int]]:
    """group -> (first keypoint, count) in layout order, ``wholebody`` added when the layout
    has every COCO-WholeBody group."""
    groups = {name: (first, count) for name, first, count in layout.keypoint_groups}
    if len(groups) > 1 and layout.key == WHOLEBODY:
        groups[WHOLEBODY] = (0, layout.num_keypoints)
    return groups


def annotation_keypoints(ann: dict, layout: DatasetLayout) -> Optional[np.ndarray]:
    """(P_layout, 3) keypoints of one annotation in layout order; groups whose validity flag
    is false are zeroed (unlabeled). None when a field is missing or has the wrong length."""
    validity = layout.validity_fields or ("",) * len(layout.json_fields)
    parts = []
    for name, flag in zip(layout.json_fields, validity):
        values = ann.get(name)
        if not isinstance(values, (list, tuple)) or len(values) % 3:
            return None
        group = np.asarray(values, np.float64).reshape(-1, 3)
        if flag and ann.get(flag) not in (True, 1, "True", "true", "1"):
            group = np.zeros_like(group)
        parts.append(group)
    points = np.concatenate(parts) if parts else np.zeros((0, 3))
    return points if len(points) == layout.num_keypoints else None


def model_group_reorder(model: PoseModel, layout: DatasetLayout, group: str) -> Optional[np.ndarray]:
    """Model part index per keypoint of ``group`` (-1 = none), or None when the model lacks
    any of the registry reorders the group needs."""
    names = [g for g, _, _ in layout.keypoint_groups] if group == WHOLEBODY else [group]
    tables = [model.coco_group_reorder(name) for name in names]
    if any(t is None for t in tables):
        return None
    return np.concatenate([np.asarray(t, np.int64) for t in tables])


def group_ground_truth(doc: dict, layout: DatasetLayout, group: str) -> dict:
    """A COCO keypoint document whose ``keypoints`` are ``group``'s (see the module doc)."""
    first, count = layout_groups(layout)[group]
    annotations = []
    for ann in doc.get("annotations", []):
        out = {k: ann[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
               if k in ann}
        out.setdefault("iscrowd", 0)
        points = None if ann.get("iscrowd", 0) else annotation_keypoints(ann, layout)
        if points is None:
            points = np.zeros((count, 3))
        else:
            points = points[first:first + count]
        out["keypoints"] = [float(v) for v in points.reshape(-1)]
        out["num_keypoints"] = int(np.count_nonzero(points[:, 2] > 0))
        annotations.append(out)
    categories = [dict(c, keypoints=[f"{group}_{i}" for i in range(count)])
                  for c in doc.get("categories", [{"id": 1, "name": "person"}])]
    return {"images": doc.get("images", []), "annotations": annotations, "categories": categories}


def group_detections(model: PoseModel, reorder: np.ndarray,
                     people: Dict[int, Tuple[np.ndarray, np.ndarray]]) -> List[dict]:
    """COCO results of one group: per image id, (keypoints (people, N, 3), scores)."""
    results = []
    for image_id, (keypoints, scores) in people.items():
        for person, score in zip(np.asarray(keypoints, np.float64), np.asarray(scores)):
            entries = reordered_entries(reorder, person[None], np.asarray([score]), image_id)
            if entries:
                found = person[person[:, 2] > 0]
                entries[0]["person_area"] = float(np.ptp(found[:, 0]) * np.ptp(found[:, 1]))
                results += entries
    return results


def oks_ap(gt_doc: dict, results: List[dict], sigmas: Sequence[float],
           image_ids: Iterable[int]) -> Dict[str, float]:
    """COCOeval keypoint stats (``ap``, ``ap50``, ... ``arl``) with ``sigmas`` on ``image_ids``.
    No detections gives zeros (pycocotools cannot load an empty result list); no ground truth on
    ``image_ids`` gives None everywhere (nothing was measured)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    image_ids = sorted({int(i) for i in image_ids})
    keep = set(image_ids)
    if not any(ann["image_id"] in keep and not ann.get("iscrowd") and ann["num_keypoints"] > 0
               for ann in gt_doc["annotations"]):
        return dict.fromkeys(STAT_KEYS)     # no ground truth: nothing measured (pycocotools' -1)
    if not results:
        return dict(zip(STAT_KEYS, no_detection_stats(gt_doc["annotations"], image_ids)))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_doc
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{k: v for k, v in r.items() if k != "person_area"}
                                   for r in results])
        for ann, r in zip(coco_dt.dataset["annotations"], results):
            ann["area"] = r.get("person_area", ann["area"])
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # pycocotools reports -1 where no ground truth is in the area range: None (no number)
    return {key: None if v < 0 else float(v) for key, v in zip(STAT_KEYS, ev.stats)}


def group_ap(model: PoseModel, doc: dict, people: Dict[int, Tuple[np.ndarray, np.ndarray]],
             group: str, image_ids: Optional[Iterable[int]] = None,
             layout: Optional[DatasetLayout] = None) -> Dict[str, float]:
    """OKS stats of one keypoint group for a model's detections ``people`` (image id ->
    (keypoints, scores)) against the annotation document ``doc``."""
    layout = layout or annotation_layout(doc)
    groups = layout_groups(layout)
    if group not in groups:
        raise CocoEvalError(f"the annotations ({layout.key}) have no '{group}' keypoints")
    reorder = model_group_reorder(model, layout, group)
    if reorder is None:
        raise CocoEvalError(f"{model.name}: no registry reorder for the '{group}' keypoints")
    first, count = groups[group]
    sigmas = layout.oks_sigmas[first:first + count]
    gt_doc = group_ground_truth(doc, layout, group)
    results = group_detections(model, reorder, people)
    return oks_ap(gt_doc, results, sigmas, people.keys() if image_ids is None else image_ids)
