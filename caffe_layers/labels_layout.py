"""The OPData label's layout and rules (``docs/labels.md`` §Visibility, §Channel order, §Per-model rules).

A label is float32 ``(2C, gy, gx)``: the first half holds loss weights, the second half targets,
channel ``c`` of the first half weighting channel ``C + c``. Inside each half: PAF x/y pairs
(``2E``), heatmaps (``P``), then the background channel when the model has one.
:func:`label_layout` derives a model's channel layout and masking tables once; the renderer
(``labels.py``) and the device labels (``labels_torch.py``) read them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from openpose_train.common.errors import OpenPoseTrainError

#: Gaussian cut-off: cells with exponent above this (value < 1 %) are not drawn (§Gaussians).
GAUSSIAN_CUTOFF = 4.6052
#: PAF half width in grid cells (§PAFs).
PAF_THRESHOLD = 1.0
#: person ROI enlargement ratios: step 6 (v == 3 / v >= 4 parts) and step 8 ("-1" channels).
ROI_RATIO_VISIBILITY = 0.3
ROI_RATIO_MINUS1 = 1.0


class LabelError(OpenPoseTrainError, ValueError):
    """Input that cannot be rendered (wrong people shape, unsupported model string)."""


def round_half_away(x):
    """C ``std::round``: halves away from zero (numpy's ``round`` goes to even)."""
    return np.trunc(x + np.copysign(np.float32(0.5), x))


@dataclass(frozen=True)
class LabelLayout:
    """Channel layout and masking tables of one (PoseModel, TrainingVariant), derived once."""

    op_model: str
    category: str
    num_parts: int
    num_pafs: int
    has_background: bool
    paf_a: np.ndarray                 # (E,) part index of each PAF's start
    paf_b: np.ndarray                 # (E,) part index of each PAF's end
    sigma_ratios: np.ndarray          # (P,) float32
    part_channels: np.ndarray         # (P, C) bool: heatmap + PAF x/y channels touching the part
    global_masking: bool              # §Masks: global masking runs (TrainingVariant.global_missing_mask)
    missing_threshold: int
    empty_parts: np.ndarray           # (P,) bool: CHANNELS_TO_MASK entry empty
    minus1_masking: bool              # §Masks: the "-1" boxes run
    minus1_parts: np.ndarray          # (P,) bool
    roi_codes: Tuple[int, ...]        # visibility codes X of maskPersonIfVisibleIsX
    feet_pairs: Tuple[Tuple[int, int], ...]

    @property
    def num_channels(self) -> int:
        """C: channels per half of the label."""
        return 2 * self.num_pafs + self.num_parts + int(self.has_background)

    @property
    def heat_offset(self) -> int:
        return 2 * self.num_pafs

    @property
    def bkg_channel(self) -> Optional[int]:
        return 2 * self.num_pafs + self.num_parts if self.has_background else None


_LAYOUTS = {}


def label_layout(model, variant) -> LabelLayout:
    """The :class:`LabelLayout` of ``model`` trained from ``variant`` (cached per object pair)."""
    key = (id(model), id(variant))
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is model and hit[1] is variant:
        return hit[2]
    if not variant.label_rules_implemented:
        raise LabelError(f"model string '{variant.op_model}': its special label rules are not implemented")
    n_parts, n_pafs = model.num_parts, model.num_pafs
    pairs = np.asarray(model.paf_pairs, np.int64).reshape(-1, 2)
    n_channels = 2 * n_pafs + n_parts + int(model.has_background)
    part_channels = np.zeros((n_parts, n_channels), bool)
    part_channels[np.arange(n_parts), 2 * n_pafs + np.arange(n_parts)] = True
    for i, (a, b) in enumerate(pairs):
        part_channels[[a, b], 2 * i] = True
        part_channels[[a, b], 2 * i + 1] = True
    empty = np.zeros(n_parts, bool)
    empty[list(variant.empty_mask_parts)] = True
    minus1 = np.zeros(n_parts, bool)
    minus1[list(variant.minus1_parts)] = True
    ratios = np.asarray(model.sigma_ratios, np.float32)
    if ratios.shape != (n_parts,):
        raise LabelError(f"model {model.name}: {ratios.size} sigma ratios for {n_parts} parts")
    layout = LabelLayout(
        op_model=variant.op_model, category=variant.category, num_parts=n_parts, num_pafs=n_pafs,
        has_background=bool(model.has_background), paf_a=pairs[:, 0].copy(), paf_b=pairs[:, 1].copy(),
        sigma_ratios=ratios, part_channels=part_channels,
        # the model-string rules are TrainingVariant fields (docs/labels.md §Per-model rules)
        global_masking=variant.global_missing_mask, missing_threshold=variant.missing_threshold,
        empty_parts=empty, minus1_masking=variant.minus1_masking, minus1_parts=minus1,
        roi_codes=tuple(variant.roi_mask_codes), feet_pairs=tuple(variant.mask_feet_pairs))
    _LAYOUTS[key] = (model, variant, layout)
    return layout


def label_targets_to_net_output(model, label_or_targets) -> np.ndarray:
    """Targets in net_output channel order (heatmaps, background, PAFs).

    Accepts a full label (``2C`` channels: the target half is used) or targets alone (``C``),
    with or without a leading batch axis; works on numpy arrays and torch tensors.
    """
    n_ch = model.num_channels
    arr = label_or_targets
    axis = arr.ndim - 3
    channels = arr.shape[axis]
    if channels == 2 * n_ch:
        arr = arr[(slice(None),) * axis + (slice(n_ch, None),)]
    elif channels != n_ch:
        raise LabelError(f"{model.name}: expected {n_ch} or {2 * n_ch} channels, got {channels}")
    n_paf = 2 * model.num_pafs
    order = list(range(n_paf, n_ch)) + list(range(n_paf))
    index = (slice(None),) * axis + (order,)
    return arr[index]
