"""FACE_70 accuracy: NME normalised by the inter-ocular distance (docs/postprocessing.md §Metrics).

Per face: the mean distance between predicted and labeled landmarks of the 68 COCO-WholeBody
face points divided by the distance between the outer eye corners of the ground truth (points
36 and 45 of the 68-point scheme, as in 300-W); ``face_nme`` is the mean over faces (lower is
better). Faces without both outer eye corners labeled cannot be normalised and are counted in
``face_skipped``; a face the net was not run on counts as NME 1.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

OUTER_EYE_CORNERS = (36, 45)     # right eye outer corner, left eye outer corner (68-point scheme)


def face_errors(pairs: List[Tuple[object, Optional[np.ndarray]]]) -> Tuple[np.ndarray, int]:
    """(NME per normalisable face, number of faces skipped for lack of eye corners)."""
    errors, skipped = [], 0
    a, b = OUTER_EYE_CORNERS
    for sample, predicted in pairs:
        kps = sample.keypoints
        if kps[a, 2] <= 0 or kps[b, 2] <= 0:
            skipped += 1
            continue
        ocular = float(np.hypot(*(kps[a, :2] - kps[b, :2])))
        if ocular <= 0:
            skipped += 1
            continue
        if predicted is None:
            errors.append(1.0)
            continue
        labeled = kps[:, 2] > 0
        d = np.hypot(*(np.asarray(predicted, np.float64)[labeled, :2] - kps[labeled, :2]).T)
        errors.append(float(d.mean()) / ocular)
    return np.asarray(errors), skipped


def face_metrics(pairs: List[Tuple[object, Optional[np.ndarray]]]) -> Dict[str, Optional[float]]:
    """``face_nme`` (None without a normalisable face) and the face counts."""
    errors, skipped = face_errors(pairs)
    return {"face_nme": float(errors.mean()) if len(errors) else None,
            "face_count": int(len(errors)), "face_skipped": skipped}
