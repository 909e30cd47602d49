"""Loss curves, AP-against-iteration plots (matplotlib Agg) and skeleton drawing.

Replaces openpose_train's MATLAB ``c_plotTrainLoss.m`` / ``d_plotAccuracies.m``. Loss sources:
Caffe/glog training logs (``Iteration N (... iter/s, ...), loss = L`` or the older
``Iteration N, loss = L``) and our ``*_metrics.jsonl`` files (``{"iteration", "loss"}``).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from openpose_train.common.files import atomic_path
from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.output_paths import make_parent_folder
from openpose_train.generator.registry import PoseModel

LossCurve = Tuple[np.ndarray, np.ndarray]


class PlotError(OpenPoseTrainError, ValueError):
    """A log or metrics file without any loss values; the message names it."""


def read_loss_curve(path: str) -> LossCurve:
    """(iterations, losses) from a glog/Caffe training log or a metrics JSONL file."""
    from openpose_train.caffe_layers.caffe_io import RE_DISPLAY, RE_DISPLAY_OLD
    its, losses = [], []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                text = line.strip()
                if text.startswith("{"):
                    try:
                        rec = json.loads(text)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and "iteration" in rec and rec.get("loss") is not None:
                        its.append(int(rec["iteration"]))
                        losses.append(float(rec["loss"]))
                    continue
                m = RE_DISPLAY.search(text) or RE_DISPLAY_OLD.search(text)
                if m:
                    its.append(int(m.group(1)))
                    losses.append(_number(m.group(2)))
    except OSError as exc:
        raise PlotError(f"cannot read {path}: {exc.strerror}") from None
    if not its:
        raise PlotError(f"{path}: no 'Iteration N ..., loss = L' lines and no "
                        f"{{\"iteration\", \"loss\"}} records")
    order = np.argsort(its, kind="stable")
    return np.asarray(its)[order], np.asarray(losses, dtype=np.float64)[order]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:          # glog's "-nan(ind)" and friends
        return float("nan")


def find_loss_sources(training_dir: str) -> List[str]:
    """Metrics JSONL files first, then logs (``*.log``, ``*log*.txt``) that hold loss lines."""
    names = sorted(os.listdir(training_dir))
    jsonl = [n for n in names if n.endswith(".jsonl")]
    logs = [n for n in names if n.endswith(".log") or (n.endswith(".txt") and "log" in n.lower())]
    return [os.path.join(training_dir, n) for n in jsonl + logs]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_png: str) -> None:
    make_parent_folder(out_png, PlotError)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    except OSError as exc:
        raise PlotError(f"{out_png}: cannot write ({exc.strerror or exc})") from None


def _draw_loss(ax, curves: Dict[str, LossCurve], smooth: int) -> None:
    for name, (its, loss) in curves.items():
        ax.plot(its, loss, lw=0.6, alpha=0.4 if smooth > 1 else 1.0, label=name)
        if smooth > 1 and len(loss) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(its[smooth - 1:], np.convolve(loss, kernel, mode="valid"), lw=1.2,
                    label=f"{name} (mean of {smooth})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if all(np.nanmin(c[1]) > 0 for c in curves.values()) else "linear")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot_loss(curves: Dict[str, LossCurve], out_png: str, smooth: int = 20,
              title: str = "training loss") -> str:
    """One PNG with every loss curve (raw and running mean)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    _draw_loss(ax, curves, smooth)
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return out_png


def plot_ap_and_loss(ap_points: Sequence[dict], loss: Optional[Dict[str, LossCurve]],
                     out_png: str, smooth: int = 20, title: str = "",
                     keys: Sequence[str] = ("AP", "AP50", "AR")) -> str:
    """AP (and AP50, AR; or the other metric ``keys``) against iteration beside the training
    loss curve."""
    plt = _pyplot()
    panels = 2 if loss else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 5), squeeze=False)
    ax = axes[0][0]
    points = sorted(ap_points, key=lambda p: p["iteration"])
    its = [p["iteration"] for p in points]
    for key in keys:
        # None (or an older table's -1, pycocotools' "no ground truth"): nothing measured, no point
        values = [p.get(key) if isinstance(p.get(key), (int, float)) and p.get(key) >= 0 else None
                  for p in points]
        if any(v is not None for v in values):
            ax.plot(its, [np.nan if v is None else v for v in values], marker="o", label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("COCO keypoint metric")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or "COCO keypoint AP per snapshot")
    if loss:
        _draw_loss(axes[0][1], loss, smooth)
        axes[0][1].set_title("training loss")
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return out_png


def _palette(n: int) -> List[Tuple[int, int, int]]:
    hsv = np.stack([np.linspace(0, 179, max(n, 1), endpoint=False),
                    np.full(max(n, 1), 255), np.full(max(n, 1), 255)], axis=1)
    import cv2
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(c) for c in color) for color in bgr]


def draw_people(image: np.ndarray, model: PoseModel, keypoints: np.ndarray,
                threshold: float = 0.05) -> np.ndarray:
    """A copy of a BGR image with every person's limbs (the model's pairs) and keypoints drawn
    (OpenPose's ``--render_threshold`` 0.05)."""
    import cv2
    canvas = image.copy()
    thickness = max(1, int(round(min(image.shape[:2]) / 200)))
    colors = _palette(len(model.runtime_pairs))
    for person in np.asarray(keypoints):
        for color, (a, b) in zip(colors, model.runtime_pairs):
            if person[a, 2] > threshold and person[b, 2] > threshold:
                pa = tuple(int(round(v)) for v in person[a, :2])
                pb = tuple(int(round(v)) for v in person[b, :2])
                cv2.line(canvas, pa, pb, color, thickness, cv2.LINE_AA)
        for x, y, score in person:
            if score > threshold:
                cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, (255, 255, 255),
                           -1, cv2.LINE_AA)
    return canvas
