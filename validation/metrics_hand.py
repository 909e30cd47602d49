"""HAND_21 accuracy: PCK@0.2 of the hand box and its AUC (docs/postprocessing.md §Metrics).

A labeled keypoint is correct when its prediction lies within ``threshold * max(w, h)`` of the
COCO-WholeBody hand box (``lefthand_box`` / ``righthand_box``); PCK is the fraction of correct
labeled keypoints over all evaluated hands (a hand the net was not run on counts as wrong).
The AUC is the mean PCK over the thresholds 0.01, 0.02, ... 0.50 of the box size (1 = every
keypoint within 1 % of the box). ``hand_epe`` is the mean end-point error in image pixels.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

PCK_THRESHOLD = 0.2
AUC_THRESHOLDS = np.round(np.arange(1, 51) * 0.01, 2)


def normalized_errors(pairs: List[Tuple[object, Optional[np.ndarray]]]) -> Tuple[np.ndarray, np.ndarray]:
    """(distance / box size, distance in px) of every labeled keypoint of ``[(sample,
    prediction (K, >=2) or None)]``; a missing prediction is an infinite error."""
    normalized, pixels = [], []
    for sample, predicted in pairs:
        labeled = sample.keypoints[:, 2] > 0
        truth = sample.keypoints[labeled, :2]
        if predicted is None:
            d = np.full(len(truth), np.inf)
        else:
            d = np.hypot(*(np.asarray(predicted, np.float64)[labeled, :2] - truth).T)
        pixels.append(d)
        normalized.append(d / sample.size)
    if not normalized:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(normalized), np.concatenate(pixels)


def pck(normalized: np.ndarray, threshold: float = PCK_THRESHOLD) -> float:
    """Fraction of keypoints within ``threshold`` (of the box size)."""
    return float(np.mean(normalized <= threshold)) if len(normalized) else 0.0


def hand_metrics(pairs: List[Tuple[object, Optional[np.ndarray]]]) -> Dict[str, Optional[float]]:
    """``hand_pck``, ``hand_auc``, ``hand_epe`` (px) and the counts of hands and keypoints."""
    normalized, pixels = normalized_errors(pairs)
    finite = pixels[np.isfinite(pixels)]
    return {"hand_pck": pck(normalized) if len(normalized) else None,
            "hand_auc": float(np.mean([pck(normalized, t) for t in AUC_THRESHOLDS]))
            if len(normalized) else None,
            "hand_epe": float(finite.mean()) if len(finite) else None,
            "hand_count": len(pairs), "hand_keypoints": int(len(normalized))}
