"""Every metric of a model in one call: flat keys for summaries, logs and TensorBoard.

``evaluate(model, annotations, people=..., crops=..., metrics=[...])`` returns a flat dict:

* ``body``: ``body_ap``, ``body_ap50``, ``body_ap75``, ``body_apm``, ``body_apl``, ``body_ar``, ...
  (COCO OKS on the 17 body keypoints);
* ``foot``: ``foot_*`` (OKS with the foot sigmas on COCO-foot or COCO-WholeBody feet);
* ``wholebody``: ``wholebody_*`` (all 133 keypoints) and ``wholebody_<group>_*`` for the groups
  ``body``, ``foot``, ``face``, ``lefthand``, ``righthand`` the model has;
* ``hand``: ``hand_pck``, ``hand_auc``, ``hand_epe``, ... (crop net HAND_21);
* ``face``: ``face_nme``, ... (crop net FACE_70);

plus ``metric_notes`` {metric: one line} for every metric asked for that cannot be produced
(e.g. "COCO_18 has no foot keypoints"). Which metrics apply comes from the registry: the COCO
reorders of a model (``to_coco17``, ``to_coco_foot``, ``to_coco_face``, ``to_coco_hand42``)
and its ``crop_net``; the annotation file decides which keypoint groups exist.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from openpose_train.generator.registry import DatasetLayout, PoseModel
from openpose_train.validation.coco_eval import CocoEvalError, read_annotation_file
from openpose_train.validation.metrics_coco import (
    WHOLEBODY, annotation_layout, group_ap, layout_groups, model_group_reorder)

METRICS = ("body", "foot", "wholebody", "hand", "face")
# the crop nets' headline numbers (per-snapshot plots, the best snapshot); the first decides
CROP_HEADLINE = {"hand": ("hand_pck", "hand_auc"), "face": ("face_nme",)}
LOWER_IS_BETTER = ("face_nme",)
# the keys printed in the table per COCO group (every STAT key is in the summary)
TABLE_STATS = ("ap", "ap50", "ar")


def parse_metrics(text: Optional[Union[str, Sequence[str]]]) -> Optional[List[str]]:
    """``"body,foot"`` -> ["body", "foot"]; None/"" -> None (the model's defaults)."""
    if text is None:
        return None
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise CocoEvalError(f"--metrics: unknown metric(s) {', '.join(unknown)}; "
                            f"known: {', '.join(METRICS)}")
    return list(dict.fromkeys(names)) or None


def default_metrics(model: PoseModel) -> List[str]:
    """The metrics a model can produce at all (before looking at the annotations)."""
    return [m for m in METRICS if model_reason(model, m) is None]


def model_reason(model: PoseModel, metric: str) -> Optional[str]:
    """One line saying why ``model`` cannot produce ``metric``, or None."""
    if metric in ("hand", "face"):
        if model.crop_net != metric:
            return (f"{metric}: {model.name} is not the {metric} crop net "
                    f"(run the {'HAND_21' if metric == 'hand' else 'FACE_70'} model; "
                    f"whole-body models report wholebody_{'lefthand' if metric == 'hand' else 'face'}_ap)")
        return None
    if model.crop_net:
        return f"{metric}: {model.name} runs on {model.crop_net} crops, not on whole images"
    group = "body" if metric == WHOLEBODY else metric
    if model.coco_group_reorder(group) is None:
        what, table = {"body": ("no COCO-17 body keypoints", "to_coco17"),
                       "foot": ("no foot keypoints", "to_coco_foot")}[group]
        return f"{metric}: {model.name} has {what} (registry: no {table})"
    return None


def annotation_reason(layout: DatasetLayout, metric: str) -> Optional[str]:
    """One line saying why annotations of ``layout`` cannot score ``metric``, or None."""
    groups = layout_groups(layout)
    need = {"body": "body", "foot": "foot", "wholebody": WHOLEBODY, "hand": "lefthand",
            "face": "face"}[metric]
    if need not in groups:
        return f"{metric}: the annotations ({layout.key}) have no {need} keypoints"
    return None


def metric_reason(model: PoseModel, layout: DatasetLayout, metric: str) -> Optional[str]:
    """One line saying why ``metric``'s headline number (``wholebody_ap``, not only its parts)
    cannot be produced by ``model`` on annotations of ``layout``, or None."""
    reason = model_reason(model, metric) or annotation_reason(layout, metric)
    if reason or metric != WHOLEBODY:
        return reason
    missing = [g for g, _, _ in layout.keypoint_groups if model_group_reorder(model, layout, g) is None]
    if missing:
        return (f"{metric}: {model.name} has no {', '.join(missing)} keypoints (registry reorders), so no "
                f"whole-body AP (validate --metrics wholebody reports its parts)")
    return None


def load_annotations(annotations: Union[str, dict]) -> dict:
    """The annotation document of a path (CocoEvalError naming it) or the dict itself."""
    if isinstance(annotations, dict):
        return annotations
    return read_annotation_file(annotations)


def _prefixed(prefix: str, stats: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
    return {f"{prefix}_{key}": value for key, value in stats.items()}


def evaluate(model: PoseModel, annotations: Union[str, dict],
             people: Optional[Dict[int, Tuple[np.ndarray, np.ndarray]]] = None,
             crops: Optional[Dict[tuple, np.ndarray]] = None,
             metrics: Optional[Sequence[str]] = None,
             image_ids: Optional[Iterable[int]] = None) -> dict:
    """Flat metric dict of a model's outputs (see the module doc).

    ``people``: image id -> (keypoints (people, N, 3) in image pixels, scores) for whole-image
    models; ``crops``: (annotation id, group) -> (K, 3) image-pixel keypoints for the crop nets
    (see :mod:`openpose_train.validation.crop_nets`); ``image_ids``: the evaluated images
    (default: the keys of ``people``, or every image holding a crop); ``metrics``: default
    :func:`default_metrics` (then metrics the annotations cannot score are skipped with a note).
    """
    doc = load_annotations(annotations)
    layout = annotation_layout(doc)
    asked = metrics is not None
    metrics = list(metrics) if asked else default_metrics(model)
    out: dict = {}
    notes: Dict[str, str] = {}
    if not asked and not model.crop_net:       # say why the other whole-image metrics are absent
        for metric in ("body", "foot", "wholebody"):
            if metric not in metrics:
                notes[metric] = model_reason(model, metric)
    people = people or {}
    ids = sorted(set(people) if image_ids is None else {int(i) for i in image_ids})
    for metric in metrics:
        reason = model_reason(model, metric) or annotation_reason(layout, metric)
        if reason:
            notes[metric] = reason
            continue
        if metric in ("body", "foot"):
            out.update(_prefixed(metric, group_ap(model, doc, people, metric, ids, layout)))
        elif metric == WHOLEBODY:
            out.update(_wholebody(model, doc, layout, people, ids, notes))
        else:
            out.update(_crop_metric(model, doc, layout, crops or {}, metric, image_ids))
    out["metric_notes"] = notes
    return out


def _wholebody(model, doc, layout, people, ids, notes) -> dict:
    out = {}
    missing = []
    for group, _, _ in layout.keypoint_groups:
        if model_group_reorder(model, layout, group) is None:
            missing.append(group)
            continue
        out.update(_prefixed(f"wholebody_{group}", group_ap(model, doc, people, group, ids, layout)))
    if missing:
        notes[WHOLEBODY] = (f"wholebody: {model.name} has no {', '.join(missing)} keypoints "
                            f"(registry reorders); no whole-body AP, parts only")
    else:
        out.update(_prefixed(WHOLEBODY, group_ap(model, doc, people, WHOLEBODY, ids, layout)))
    return out


def _crop_metric(model, doc, layout, crops, metric, image_ids) -> dict:
    from openpose_train.validation.crop_nets import crop_samples, group_predictions
    samples = crop_samples(doc, layout, model)
    if image_ids is not None:
        keep = {int(i) for i in image_ids}
        samples = {i: s for i, s in samples.items() if i in keep}
    pairs = group_predictions(crops, samples)
    if metric == "hand":
        from openpose_train.validation.metrics_hand import hand_metrics
        return hand_metrics(pairs)
    from openpose_train.validation.metrics_face import face_metrics
    return face_metrics(pairs)


def table_rows(summary: dict) -> List[Tuple[str, str]]:
    """(name, value) rows of the one table ``validate`` prints: the headline numbers of every
    metric in ``summary`` and the notes."""
    rows = []
    for key, value in summary.items():
        head, _, stat = key.rpartition("_")
        if not ((stat in TABLE_STATS and head.split("_")[0] in METRICS)
                or key in ("hand_pck", "hand_auc", "hand_epe", "face_nme")):
            continue
        if value is None:
            rows.append((key, "n/a"))
        else:
            rows.append((key, f"{value:.2f} px" if key == "hand_epe" else f"{value:.3f}"))
    for metric, note in summary.get("metric_notes", {}).items():
        rows.append((metric, note.split(": ", 1)[-1]))
    return rows
