"""Render LMDB records into a PNG grid: image, ignored area (mask_miss = 0 tinted red), keypoints.

Each tile shows one record: the image with the mask overlay, the main person's keypoints
(green visible, yellow occluded; unlabeled ones are not drawn), the other people's keypoints
(cyan), the main person's ``objpos`` (white cross) and the key / dataset / people count. With
``labels=True`` and the OPData layer installed (``openpose_train.caffe_layers.labels`` and
``.augment``), a second tile per record shows one augmented crop with the model's rendered
heatmaps (max over parts, red) and PAF magnitudes (green), and the model skeleton is drawn.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.output_paths import make_parent_folder
from openpose_train.generator.registry import get_dataset_layout, get_model, list_dataset_layouts

from openpose_train.caffe_layers.datum import Record
from openpose_train.caffe_layers.lmdb_reader import LmdbReader

TILE = 320


def find_variant(model, meta):
    """The model's training variant whose LMDB layout matches the record (or None)."""
    for variant in model.variants:
        try:
            layout = get_dataset_layout(variant.dataset)
        except KeyError:
            continue
        if layout.lmdb_dataset == meta.dataset and variant.num_lmdb_parts == meta.num_parts:
            return variant
    return None


def _lmdb_parts_for(dataset: str, inferred: int) -> int:
    """Keypoints per person for a dataset string: the registry's count when unambiguous."""
    counts = {get_dataset_layout(k).num_keypoints for k in list_dataset_layouts()
              if get_dataset_layout(k).lmdb_dataset == dataset}
    if len(counts) == 1:
        return counts.pop()
    candidates = sorted(c for c in counts if c >= inferred)
    return candidates[0] if candidates else inferred


def _fit(image, size=TILE):
    h, w = image.shape[:2]
    s = size / max(h, w)
    out = np.zeros((size, size, 3), np.uint8)
    small = cv2.resize(image, (max(1, int(round(w * s))), max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    out[:small.shape[0], :small.shape[1]] = small
    return out, s


def _draw_points(tile, points, scale, colors):
    for x, y, v in points:
        v = int(round(v))
        if v in colors:
            cv2.circle(tile, (int(round(x * scale)), int(round(y * scale))), 3, colors[v], -1, cv2.LINE_AA)


def _draw_skeleton(tile, points, pairs, scale, color):
    for a, b in pairs:
        if points[a, 2] in (0, 1) and points[b, 2] in (0, 1):
            pa = (int(round(points[a, 0] * scale)), int(round(points[a, 1] * scale)))
            pb = (int(round(points[b, 0] * scale)), int(round(points[b, 1] * scale)))
            cv2.line(tile, pa, pb, color, 1, cv2.LINE_AA)


def _labels_module():
    try:
        from openpose_train.caffe_layers import augment, labels
        return augment, labels
    except ImportError:
        return None


def record_tile(record: Record, key: str, model=None, modules=None) -> np.ndarray:
    """The plain tile of one record (see the module docstring)."""
    if record.image is None:
        tile = np.zeros((TILE, TILE, 3), np.uint8)
        cv2.putText(tile, f"{key} metadata only", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        return tile
    image = record.image.copy()
    if record.mask_miss is not None:
        ignored = record.mask_miss == 0
        image[ignored] = (0.5 * image[ignored] + [0, 0, 127]).astype(np.uint8)
    tile, s = _fit(image)
    meta = record.meta
    text = f"{key} background"
    if meta is not None:
        zero = meta.zero_based()
        for joints in zero.others_joints:
            _draw_points(tile, joints, s, {0: (255, 255, 0), 1: (255, 255, 0)})
        if modules is not None and model is not None:
            variant = find_variant(model, meta)
            if variant is not None:
                people = modules[1].remap_keypoints(variant, zero.joints[None])[0]
                _draw_skeleton(tile, people, model.paf_pairs, s, (0, 255, 0))
        _draw_points(tile, zero.joints, s, {1: (0, 255, 0), 0: (0, 255, 255)})
        x, y = zero.objpos * s
        cv2.drawMarker(tile, (int(x), int(y)), (255, 255, 255), cv2.MARKER_CROSS, 10, 1)
        text = f"{key} {meta.dataset} n={meta.num_other_people + 1}"
    cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def label_tile(record: Record, model, modules, rng) -> Optional[np.ndarray]:
    """An augmented crop with the rendered heatmaps and PAFs (None when the record cannot be)."""
    augment, labels = modules
    meta = record.meta
    if meta is None or record.image is None:
        return None
    variant = find_variant(model, meta)
    if variant is None:
        return None
    zero = meta.zero_based()
    lmdb_people = np.concatenate([zero.joints[None], zero.others_joints], axis=0)
    lmdb_people = labels.sanitize_visibility(lmdb_people, meta.img_width, meta.img_height)
    people = labels.remap_keypoints(variant, lmdb_people)
    config = augment.AugmentConfig(stride=model.stride)
    sample = augment.Sample(image=record.image, mask_miss=record.mask_miss, people=people, objpos=zero.objpos,
                            scale_self=meta.scale_provided * 368.0 / config.crop_y,
                            num_other_people=meta.num_other_people)
    aug = augment.augment_variant_sample(rng, config, sample, model, variant)
    label = labels.render_labels(model, variant, aug.people, aug.mask_grid, config.grid_size, config.stride,
                                 config.sigma(0))
    net = labels.label_targets_to_net_output(model, label)
    n = model.num_parts
    heat = np.clip(net[:n].max(0), 0, 1)
    pafs = net[n + int(model.has_background):]
    paf = np.clip(np.sqrt((pafs[0::2] ** 2 + pafs[1::2] ** 2)).max(0), 0, 1) if len(pafs) else np.zeros_like(heat)
    size = (aug.image.shape[1], aug.image.shape[0])
    overlay = np.zeros_like(aug.image, dtype=np.float32)
    overlay[..., 2] = cv2.resize(heat, size) * 255
    overlay[..., 1] = cv2.resize(paf, size) * 255
    blended = np.clip(0.5 * aug.image + overlay, 0, 255).astype(np.uint8)
    return _fit(blended)[0]


class GridWriteError(OpenPoseTrainError, OSError):
    """The PNG cannot be written (message names the file)."""


def _write_png(out: Path, image) -> None:
    """Write ``image`` to a temporary name beside ``out`` and rename; nothing is left on failure."""
    tmp = out.with_name(out.name + ".tmp.png")
    make_parent_folder(out, GridWriteError)
    try:
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise OSError("PNG encoding failed")
        tmp.write_bytes(data.tobytes())     # an OSError (a full disk), unlike cv2.imwrite's silent False
        tmp.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise GridWriteError(f"{out}: cannot write ({exc.strerror or exc})") from None


def render_grid(lmdb_path, out: Path, model: str = "BODY_25", count: int = 16, start: int = 0,
                labels: bool = False, seed: int = 0) -> str:
    """Write a PNG grid of ``count`` records from ``start``; returns a one-line description."""
    pose_model = get_model(model)
    make_parent_folder(out, GridWriteError, create=False)     # before reading the LMDB
    modules = _labels_module()
    rng = np.random.default_rng(seed)
    tiles: List[np.ndarray] = []
    with LmdbReader(lmdb_path) as reader:
        total = len(reader)
        indexes = list(range(start, min(total, start + count)))
        if not indexes:
            raise KeyError(f"{lmdb_path} has {total} records; nothing from record {start}")
        for i in indexes:
            record = reader[i]
            if record.meta is not None:
                n = _lmdb_parts_for(record.meta.dataset, record.meta.num_parts)
                if n != record.meta.num_parts:
                    from openpose_train.caffe_layers.datum import read_datum
                    record = read_datum(reader.raw(i), num_lmdb_parts=n)
            tiles.append(record_tile(record, f"{i:07d}", pose_model, modules))
            if labels and modules is not None:
                tile = label_tile(record, pose_model, modules, rng)
                tiles.append(tile if tile is not None else np.zeros((TILE, TILE, 3), np.uint8))
    per_row = 8 if labels and modules is not None else 4
    rows = []
    for r in range(0, len(tiles), per_row):
        row = tiles[r:r + per_row]
        row += [np.zeros((TILE, TILE, 3), np.uint8)] * (per_row - len(row))
        rows.append(np.hstack(row))
    grid = np.vstack(rows)
    _write_png(Path(out), grid)
    note = "" if not labels or modules is not None else " (labels: the OPData layer is not installed)"
    return f"{out}: {len(indexes)} of {total} records from {lmdb_path}{note}"
