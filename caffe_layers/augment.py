"""OPData augmentation, CPU reference (``docs/labels.md`` §Augmentation order, §Quirks).

One sample goes through: background crop (if a background LMDB is configured) -> scale ->
centre swap -> rotation -> crop-centre jitter -> flip, all applied to the keypoints first, then ONE
bicubic ``cv2.warpAffine`` for the image and one for each mask, occlusion patches, ``mask_miss``
shrunk to the label grid with ``INTER_AREA`` and the background pasted into the padding.

Random numbers are drawn from an injected ``numpy.random.Generator`` in the fork's order (§Draw order),
so one seed gives one sample. The sampled values are kept in :class:`AugmentParams`, which the
torch path (``labels_torch``) reuses.

Quirks of the fork, reproduced by default (:class:`AugmentConfig` has the switches):

* ``fix_flip_width`` False: keypoints flip around ``crop_size_y - 1`` while the image flips around
  ``crop_size_x - 1`` (§Quirks); for non-square crops the labels then miss the image. True flips
  keypoints around ``crop_size_x - 1``.
* ``fix_background_offset`` False: the background crop's vertical offset tests the horizontal
  slack, so tall backgrounds are always top-aligned (§Background crop, §Quirks). True draws it from the
  vertical slack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

from .augment_config import AugmentConfig, AugmentError, parse_list, per_dataset  # noqa: F401 (augment's API)
from .labels import flip_people, keep_roi_inside, round_half_away

from openpose_train.generator.registry import (CENTER_SWAP_FACE_PART, CENTER_SWAP_HAND_PARTS,
                                               CenterSwapParts)

#: the fork normalises person scale against this crop height ("compatibility with the old LMDB")
LEGACY_CROP = 368.0
#: BGR means of normalisation modes 1 and 2 (§Normalisation)
MEAN_BGR_1 = (102.9801, 115.9465, 122.7717)
MEAN_BGR_2 = (103.94, 116.78, 123.68)


@dataclass
class Sample:
    """A decoded training record in model keypoints (0-based pixel coordinates of the image)."""

    image: np.ndarray                 # (H, W, 3) uint8 BGR (the datum size, writer padding included)
    mask_miss: Optional[np.ndarray]   # (H, W) uint8, None = all 255
    people: np.ndarray                # (n, P, 3) model keypoints, row 0 the main person
    objpos: np.ndarray                # (2,) main person's centre
    scale_self: float                 # person height / crop_size_y (scale_provided * 368 / crop_y)
    num_other_people: int = 0
    dataset_index: int = 0
    planes: Optional[np.ndarray] = None   # (H, W, 4) B, G, R, mask_miss in one array: one warp for both
    mask_full: bool = False               # mask_miss is 255 everywhere (its warp needs no computing)


@dataclass
class AugmentParams:
    """Every value one augmentation drew or derived; enough to replay it (also on a torch device)."""

    scale_mult: float = 1.0
    scale: float = 1.0
    center: Tuple[float, float] = (0.0, 0.0)          # objpos after the centre swap (source pixels)
    rotation: float = 0.0                              # degrees
    rotation_matrix: np.ndarray = field(default_factory=lambda: np.eye(2, 3))
    crop_center: Tuple[int, int] = (0, 0)
    flip: bool = False
    warp: np.ndarray = field(default_factory=lambda: np.eye(2, 3))    # source -> crop (cv2 convention)
    background_offset: Optional[Tuple[int, int]] = None
    occlusions: Tuple[Tuple[int, int, int, int], ...] = ()


@dataclass
class AugmentedSample:
    image: np.ndarray                 # (H, W, 3) uint8 crop
    mask_grid: Optional[np.ndarray]   # (gy, gx) uint8 mask_miss on the label grid; None = empty (bkg-only)
    people: np.ndarray                # (n, P, 3) keypoints in crop pixels
    params: AugmentParams
    filled: bool = True


# ----------------------------------------------------------------------------- sampling

def read_background(background: np.ndarray, config: AugmentConfig, rng) -> Tuple[np.ndarray, Tuple[int, int]]:
    """``readBackgroundImage`` (§Background crop): cover-resize and crop (2 draws when it is larger), mirrored."""
    width, height = config.crop_x, config.crop_y
    bh, bw = background.shape[:2]
    offset = (0, 0)
    if bw > width and bh > height:
        rx, ry = width / bw, height / bh
        size = (width, int(round_half_away(rx * bh))) if rx > ry else (int(round_half_away(ry * bw)), height)
        resized = cv2.resize(background, size, interpolation=cv2.INTER_CUBIC)
        x_diff, y_diff = resized.shape[1] - width, resized.shape[0] - height
        min_x = 0 if x_diff <= 0 else int(round_half_away(x_diff * rng.random()))
        y_test = y_diff if config.fix_background_offset else x_diff      # the fork tests xDiff
        min_y = 0 if y_test <= 0 else int(round_half_away(y_diff * rng.random()))
        crop = resized[min_y:min_y + height, min_x:min_x + width]
        offset = (min_x, min_y)
    else:
        crop = cv2.resize(background, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.flip(crop, 1), offset        # the fork passes 0.5f as "do flip": always mirrored


def sample_scale(rng, config: AugmentConfig, dataset_index: int, scale_self: float) -> Tuple[float, float]:
    """``estimateScale``: (multiplier, scale) with scale = target_dist / scale_self * multiplier."""
    mult = 1.0
    if rng.random() <= config.scale_prob:
        lo = per_dataset(config.scale_mins, dataset_index)
        hi = per_dataset(config.scale_maxs, dataset_index)
        mult = (hi - lo) * rng.random() + lo
    mult = float(np.float32(mult))
    return mult, float(np.float32(np.float32(config.target_dist / scale_self) * np.float32(mult)))


def _mean_visible(joints, a, b):
    va, vb = joints[a, 2] <= 1, joints[b, 2] <= 1
    if va and vb:
        return (joints[a, :2] + joints[b, :2]) / 2
    if va:
        return joints[a, :2]
    if vb:
        return joints[b, :2]
    return None


def swap_center(rng, config: AugmentConfig, category: str, op_model: str, joints: np.ndarray,
                objpos: np.ndarray, mult: float, center_swap: Optional[CenterSwapParts] = None) -> np.ndarray:
    """``swapCenterPoint`` (docs/labels.md §Centre swap): maybe re-centre on a wrist or the nose (by
    category), or on the registry's ``center_swap`` parts. The part indexes are the fork's literals,
    kept as registry data (``CENTER_SWAP_*``, ``PoseModel.center_swap``)."""
    d = rng.random()
    big = (mult > 2 and d > 0.05) or (mult > 1.3 and d > 0.5)
    if category == "HAND" or (category == "DOME" and d < 0.5):
        left, right = CENTER_SWAP_HAND_PARTS
        if big and (joints[left, 2] <= 1 or joints[right, 2] <= 1):
            d2 = rng.random()
            if joints[right, 2] > 1 or (joints[left, 2] <= 1 and d2 > 0.5):
                return joints[left, :2].copy()
            return joints[right, :2].copy()
        return objpos
    if category in ("FACE", "DOME"):
        if big and joints[CENTER_SWAP_FACE_PART, 2] <= 1:
            return joints[CENTER_SWAP_FACE_PART, :2].copy()
        return objpos
    if d < config.center_swap_prob:
        if center_swap is None:
            raise AugmentError(f"center_swap_prob > 0 is not defined for {op_model} ({joints.shape[0]} parts): "
                               "the fork re-centres only its 23- and 25-part models")
        if mult > 1.3:
            d2 = rng.random()
            point = None
            if 0.5 < d2 < 0.9:
                point = joints[center_swap.neck, :2] if joints[center_swap.neck, 2] <= 1 else None
            elif 0.9 <= d2 < 0.95:
                point = _mean_visible(joints, *center_swap.wrists)
            elif d2 >= 0.95:
                point = _mean_visible(joints, *center_swap.knees)
            if point is not None:
                return np.asarray(point, np.float32).copy()
    return objpos


def rotation_matrix(source_size: Tuple[int, int], scale: float, degrees: float) -> np.ndarray:
    """``estimateRotation``'s R (2x3 float64) for the scaled image, with the bounding-box shift.

    The box is OpenCV's ``RotatedRect.boundingRect()`` of float32 corners (ceil - floor + 1), which
    makes it Ws+1 x Hs+1 at 0 degrees: the half-pixel shift of §Quirks is kept.
    """
    ws = float(round_half_away(source_size[0] * scale))
    hs = float(round_half_away(source_size[1] * scale))
    centre = (ws / 2.0, hs / 2.0)
    corners = cv2.boxPoints((centre, (ws, hs), float(degrees)))
    box_w = np.ceil(corners[:, 0].max()) - np.floor(corners[:, 0].min()) + 1
    box_h = np.ceil(corners[:, 1].max()) - np.floor(corners[:, 1].min()) + 1
    rot = cv2.getRotationMatrix2D(centre, float(degrees), 1.0)
    rot[0, 2] += box_w / 2.0 - centre[0]
    rot[1, 2] += box_h / 2.0 - centre[1]
    return rot


def warp_matrix(params: AugmentParams, config: AugmentConfig) -> np.ndarray:
    """``applyAllAugmentation``'s M (source pixels -> crop pixels, the matrix given to warpAffine)."""
    m = params.rotation_matrix.copy()
    m[:, :2] *= params.scale
    m[0, 2] -= params.crop_center[0] - config.crop_x // 2
    m[1, 2] -= params.crop_center[1] - config.crop_y // 2
    if params.flip:
        m[0, :2] = -m[0, :2]
        m[0, 2] = -m[0, 2] + config.crop_x - 1
    return m


def transform_points(points: np.ndarray, params: AugmentParams, config: AugmentConfig,
                     flip_pairs=()) -> np.ndarray:
    """Keypoints ``(..., P, 3)`` or points ``(..., 2)`` through scale, R, crop and flip, as the fork does.

    Float32 storage between steps, R applied in double. ``flip_pairs`` (for keypoint arrays)
    swaps left/right parts after a flip; the flip axis is ``crop_y - 1`` unless ``fix_flip_width``.
    """
    pts = np.array(points, np.float32, copy=True)
    xy = pts[..., :2] * np.float32(params.scale)
    rot = params.rotation_matrix
    x = xy[..., 0].astype(np.float64)
    y = xy[..., 1].astype(np.float64)
    xy = np.stack([rot[0, 0] * x + rot[0, 1] * y + rot[0, 2],
                   rot[1, 0] * x + rot[1, 1] * y + rot[1, 2]], -1).astype(np.float32)
    xy[..., 0] += np.float32(config.crop_x // 2 - params.crop_center[0])
    xy[..., 1] += np.float32(config.crop_y // 2 - params.crop_center[1])
    pts[..., :2] = xy
    if params.flip:
        width = config.crop_x if config.fix_flip_width else config.crop_y
        if pts.shape[-1] == 3:
            pts = flip_people(pts, flip_pairs, width)
        else:
            pts[..., 0] = np.float32(width - 1) - pts[..., 0]
    return pts


def sample_occlusions(rng, config: AugmentConfig, dataset_index: int, people: np.ndarray,
                      scale_self: float) -> Tuple[Tuple[int, int, int, int], ...]:
    """``doOcclusions`` draws (§Occlusions): rectangles around random labeled parts of the main person."""
    joints = people[0]
    n_parts = joints.shape[0]
    d = rng.random()
    detected = int((joints[:, 2] < 1.5).sum())
    count = int(round_half_away(per_dataset(config.max_occlusions, dataset_index) * d * detected / n_parts))
    rects = []
    for _ in range(count):
        while True:
            part = int(rng.integers(0, n_parts))
            if joints[part, 2] <= 1.5:
                break
        px, py = float(joints[part, 0]), float(joints[part, 1])
        w = int(round_half_away(config.crop_x * scale_self / 2 * (1 + (int(rng.integers(0, 1001)) - 500) / 1000)))
        h = int(round_half_away(config.crop_y * scale_self / 2 * (1 + (int(rng.integers(0, 1001)) - 500) / 1000)))
        r = 1 + (int(rng.integers(0, 1001)) - 500) / 500
        x = int(round_half_away(px - (w // 2) * r))
        y = int(round_half_away(py - (h // 2) * r))
        x, y, w, h = (int(v) for v in keep_roi_inside(np.int64(x), np.int64(y), np.int64(w), np.int64(h),
                                                       config.crop_x, config.crop_y))
        rects.append((x, y, w, h))
    return tuple(rects)


def sample_params(rng, config: AugmentConfig, sample: Sample, category: str, op_model: str,
                  flip_pairs=(), center_swap: Optional[CenterSwapParts] = None) -> Tuple[AugmentParams, np.ndarray]:
    """Draw scale, centre swap, rotation, crop jitter and flip (§Draw order) -> (params, people in crop)."""
    idx = sample.dataset_index
    mult, scale = sample_scale(rng, config, idx, sample.scale_self)
    objpos = np.asarray(sample.objpos, np.float32)
    center = swap_center(rng, config, category, op_model, sample.people[0], objpos, mult, center_swap) \
        if len(sample.people) else objpos
    degrees = (rng.random() - 0.5) * 2 * per_dataset(config.max_rotations, idx)
    height, width = sample.image.shape[:2]
    rot = rotation_matrix((width, height), scale, degrees)
    params = AugmentParams(scale_mult=mult, scale=scale, center=(float(center[0]), float(center[1])),
                           rotation=float(degrees), rotation_matrix=rot)
    # crop centre: objpos through scale and R, plus the truncated jitter, truncated
    c = np.float32(center) * np.float32(scale)
    cx = np.float32(rot[0, 0] * float(c[0]) + rot[0, 1] * float(c[1]) + rot[0, 2])
    cy = np.float32(rot[1, 0] * float(c[0]) + rot[1, 1] * float(c[1]) + rot[1, 2])
    dx = int((rng.random() - 0.5) * 2 * config.center_perterb_max)
    dy = int((rng.random() - 0.5) * 2 * config.center_perterb_max)
    params.crop_center = (int(cx + np.float32(dx)), int(cy + np.float32(dy)))
    params.flip = bool(rng.random() <= config.flip_prob)
    params.warp = warp_matrix(params, config)
    people = transform_points(sample.people, params, config, flip_pairs)
    return params, people


def crop_inside_source(matrix: np.ndarray, config: AugmentConfig, src_w: int, src_h: int, margin: float = 3.0) -> bool:
    """True when every bicubic tap of every crop pixel lies inside the source image.

    The map is affine, so the crop corners bound it; the 4x4 taps reach 1 px before and 2 px after
    the sample point (plus 1 px of slack for OpenCV's fixed-point coordinates). Then the warp of
    the all-zero padding mask is all zero and can be skipped.
    """
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [config.crop_x - 1, 0, 1], [0, config.crop_y - 1, 1],
                        [config.crop_x - 1, config.crop_y - 1, 1]], np.float64)
    src = corners @ inv.T
    return bool(src[:, 0].min() >= margin - 1 and src[:, 0].max() <= src_w - 1 - margin
                and src[:, 1].min() >= margin - 1 and src[:, 1].max() <= src_h - 1 - margin)


def _warp(src, matrix, config, border):
    return cv2.warpAffine(src, matrix, (config.crop_x, config.crop_y), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def augment_sample(rng, config: AugmentConfig, sample: Sample, category: str, op_model: str,
                   flip_pairs=(), background: Optional[np.ndarray] = None,
                   mask_is_background: bool = False, center_swap: Optional[CenterSwapParts] = None) -> AugmentedSample:
    """The whole TRAIN augmentation of one record (§Augmentation order), draws in the fork's order.

    ``background``: a background (negatives) image, or None when no background LMDB is configured.
    ``mask_is_background``: MPII_65_42/CAR_12 behaviour (mask_miss replaced by the padding mask).
    ``center_swap``: the model's centre-swap parts (registry ``PoseModel.center_swap``).
    """
    bg = None
    if background is not None:
        bg, bg_offset = read_background(background, config, rng)
    params, people = sample_params(rng, config, sample, category, op_model, flip_pairs, center_swap)
    if background is not None:
        params.background_offset = bg_offset
    src_h, src_w = sample.image.shape[:2]
    mask_border = 255 if bg is not None else 0
    # With border 255, a mask of 255 everywhere warps to 255 everywhere (the bicubic weights sum to
    # one): no warp needed. Its channel of the 4-channel warp then serves, with border 0, as the
    # warp of an all-255 "inside" plane: != 255 exactly where the padding mask (the warp of zeros
    # with border 255) is != 0, both being the rounded 255 x (sum of the weights of the taps
    # outside the source); so the padding mask needs no warp either.
    full_mask = bg is not None and not mask_is_background and (
        sample.mask_full or (sample.mask_miss is None and sample.planes is None))
    mask = np.full((config.crop_y, config.crop_x), 255, np.uint8) if full_mask else None
    inside = None
    if sample.planes is not None and not mask_is_background:
        # image and mask_miss in one 4-channel warp: OpenCV interpolates channels independently
        warped = _warp(sample.planes, params.warp, config, (0, 0, 0, 0 if full_mask else mask_border))
        image = cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR)
        if full_mask:
            inside = cv2.extractChannel(warped, 3)
        else:
            mask = cv2.extractChannel(warped, 3)
    else:
        image = _warp(sample.image, params.warp, config, (0, 0, 0))
    mask_bg = None
    paste = None                # pixels that get the background added (maskBackground != 0)
    if bg is not None and (mask_is_background or not crop_inside_source(params.warp, config, src_w, src_h)):
        if inside is not None:
            paste = inside != 255
        else:
            mask_bg = _warp(np.zeros((src_h, src_w), np.uint8), params.warp, config, 255)
            paste = mask_bg != 0
    if mask_is_background:
        mask = mask_bg if mask_bg is not None else np.zeros((config.crop_y, config.crop_x), np.uint8)
    elif mask is None:
        src_mask = sample.mask_miss if sample.mask_miss is not None else np.full((src_h, src_w), 255, np.uint8)
        mask = _warp(src_mask, params.warp, config, mask_border)
    if bg is not None and sample.num_other_people == 0:
        params.occlusions = sample_occlusions(rng, config, sample.dataset_index, people,
                                              config.target_dist * params.scale_mult)
        for x, y, w, h in params.occlusions:
            image[y:y + h, x:x + w] = bg[y:y + h, x:x + w]
    grid_w, grid_h = config.grid_size
    mask_grid = cv2.resize(mask, (grid_w, grid_h), interpolation=cv2.INTER_AREA)
    if paste is not None:
        # image + (bg where maskBackground != 0), saturated: cv2.add with a mask leaves the rest as is
        cv2.add(image, bg, dst=image, mask=paste.view(np.uint8))
    return AugmentedSample(image=image, mask_grid=mask_grid, people=people, params=params)


def augment_variant_sample(rng, config: AugmentConfig, sample: Sample, model, variant,
                           background: Optional[np.ndarray] = None) -> AugmentedSample:
    """:func:`augment_sample` with the rules of a registry ``PoseModel`` / ``TrainingVariant``
    (category, flip pairs, centre-swap parts, ``mask_is_background``; docs/labels.md §Per-model rules)."""
    return augment_sample(rng, config, sample, variant.category, variant.op_model, model.flip_pairs,
                          background=background, mask_is_background=variant.mask_is_background,
                          center_swap=model.center_swap)


def background_only_sample(rng, config: AugmentConfig, background: np.ndarray, num_parts: int) -> AugmentedSample:
    """§Background-only samples: the mirrored background crop, no people, labels not filled."""
    bg, offset = read_background(background, config, rng)
    return AugmentedSample(image=np.ascontiguousarray(bg), mask_grid=None,
                           people=np.zeros((0, num_parts, 3), np.float32),
                           params=AugmentParams(background_offset=offset), filled=False)


def unaugmented_sample(config: AugmentConfig, sample: Sample) -> AugmentedSample:
    """§TEST phase: no augmentation; only crop-sized images make consistent shapes."""
    height, width = sample.image.shape[:2]
    if (width, height) != (config.crop_x, config.crop_y):
        raise AugmentError(f"TEST phase needs images of the crop size {config.crop_x}x{config.crop_y}, "
                           f"got {width}x{height}")
    mask = sample.mask_miss if sample.mask_miss is not None else np.full((height, width), 255, np.uint8)
    grid_w, grid_h = config.grid_size
    return AugmentedSample(image=sample.image.copy(),
                           mask_grid=cv2.resize(mask, (grid_w, grid_h), interpolation=cv2.INTER_AREA),
                           people=np.array(sample.people, np.float32), params=AugmentParams())


def normalize_image(image: np.ndarray, mode: int) -> np.ndarray:
    """``fillTransformedData`` (§Normalisation): uint8 (H, W, 3) BGR -> float32 (3, H, W) BGR planes."""
    img = image.astype(np.float32)
    if mode == 0:
        out = (img - np.float32(128)) / np.float32(256)
    elif mode == 1:
        out = img - np.asarray(MEAN_BGR_1, np.float32)
    elif mode == 2:
        out = (img - np.asarray(MEAN_BGR_2, np.float32)) * np.float32(0.017)
    else:
        raise AugmentError(f"normalization {mode} is not 0, 1 or 2")
    return np.ascontiguousarray(out.transpose(2, 0, 1))
