"""The OPData augmentation's parameters: the ``OPTransformationParameter`` fields it reads, checked
(``docs/labels.md`` §Augmentation order; the fork's quirks and their switches: ``augment.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from openpose_train.common.errors import OpenPoseTrainError


class AugmentError(OpenPoseTrainError, ValueError):
    """Parameters or samples the augmentation cannot handle (message says which)."""


def parse_list(text, cast=float) -> Tuple:
    """A ``;``-separated proto string as a tuple (plain split, like the fork)."""
    if isinstance(text, (int, float)):
        return (cast(text),)
    parts = [p.strip() for p in str(text).split(";")]
    try:
        return tuple(cast(p) for p in parts if p != "")
    except ValueError as exc:
        raise AugmentError(f"cannot parse '{text}' as a ';' list: {exc}") from None


def per_dataset(values: Sequence, index: int):
    """Entry ``index`` of a per-dataset list; short lists are padded with their FIRST entry (§Sampling)."""
    if not values:
        raise AugmentError("empty per-dataset parameter list")
    return values[index] if 0 <= index < len(values) else values[0]


@dataclass(frozen=True)
class AugmentConfig:
    """The OPTransformationParameter fields the augmentation reads (proto defaults)."""

    stride: int = 4
    crop_x: int = 368
    crop_y: int = 368
    flip_prob: float = 0.5
    max_rotations: Tuple[float, ...] = (45.0,)
    center_perterb_max: float = 10.0
    center_swap_prob: float = 0.0
    scale_prob: float = 0.5
    scale_mins: Tuple[float, ...] = (0.9,)
    scale_maxs: Tuple[float, ...] = (1.1,)
    target_dist: float = 1.0
    max_occlusions: Tuple[float, ...] = (0.0,)
    sigmas: Tuple[float, ...] = (7.0,)
    normalization: int = 0
    fix_flip_width: bool = False
    fix_background_offset: bool = False

    @classmethod
    def from_proto(cls, param, **overrides) -> "AugmentConfig":
        """From an ``OPTransformationParameter`` message (unset fields keep the proto defaults)."""
        cfg = cls(
            stride=int(param.stride), crop_x=int(param.crop_size_x), crop_y=int(param.crop_size_y),
            flip_prob=float(param.flip_prob), max_rotations=parse_list(param.max_degree_rotations),
            center_perterb_max=float(param.center_perterb_max),
            center_swap_prob=float(param.center_swap_prob), scale_prob=float(param.scale_prob),
            scale_mins=parse_list(param.scale_mins), scale_maxs=parse_list(param.scale_maxs),
            target_dist=float(param.target_dist), max_occlusions=parse_list(param.number_max_occlusions),
            sigmas=parse_list(param.sigmas), normalization=int(param.normalization), **overrides)
        cfg.validate()
        return cfg

    def validate(self):
        if self.stride <= 0 or self.crop_x <= 0 or self.crop_y <= 0:
            raise AugmentError(f"stride {self.stride} and crop {self.crop_x}x{self.crop_y} must be positive")
        if self.normalization not in (0, 1, 2):
            raise AugmentError(f"normalization {self.normalization} is not 0, 1 or 2")
        for name in ("max_rotations", "scale_mins", "scale_maxs", "max_occlusions", "sigmas"):
            if not getattr(self, name):
                raise AugmentError(f"per-dataset list '{name}' is empty")

    @property
    def grid_size(self) -> Tuple[int, int]:
        """(gx, gy) of the label grid."""
        return self.crop_x // self.stride, self.crop_y // self.stride

    def sigma(self, dataset_index: int) -> float:
        return float(np.float32(per_dataset(self.sigmas, dataset_index)))
