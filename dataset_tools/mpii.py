"""MPII in the list format (``[{image, joints, joints_vis, center, scale}, ...]``) to COCO style.

Mirrors ``mpii/a1_generateFinalJsonAndMasks.py`` (openpose_train's MPII converter; ``docs/formats.md`` §Records) as far as the
list format allows: a joint with ``joints_vis`` 1 becomes COCO v=2 (the list format does not
separate visible from occluded), a missing joint (0, 0, 0); the person box is the box of the
labeled joints grown by 10 % of its width on each side and by 5 % / 10 % of its height above /
below (the list format has no head box), clipped to the image; ``area`` = box area and
``num_keypoints`` = labeled joints. The keypoints go into the layout's JSON field (``joints``).
Image sizes are read from the image headers (images next to the JSON unless ``images_dir``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from openpose_train.generator.registry import get_dataset_layout

from .coco import CocoFormatError


def _image_size(path: Path):
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size           # (width, height), header only
    except (OSError, ValueError):
        return 0, 0                  # the LMDB writer reports the image as missing / corrupt


def mpii_list_to_coco(entries, path="<json>", images_dir=None) -> dict:
    """COCO-style document (images, annotations) of an MPII list-format file."""
    layout = get_dataset_layout("mpii")
    n_joints = layout.num_keypoints
    images_dir = Path(images_dir) if images_dir is not None else Path(path).parent
    images, annotations, ids = [], [], {}
    for i, entry in enumerate(entries):
        where = f"entry [{i}]"
        for key in ("image", "joints", "joints_vis"):
            if not isinstance(entry, dict) or key not in entry:
                raise CocoFormatError(f"{path}: not an MPII list file: {where} has no '{key}'")
        name = str(entry["image"])
        if name not in ids:
            width, height = _image_size(images_dir / name)
            ids[name] = len(images) + 1
            images.append({"id": ids[name], "file_name": name, "width": width, "height": height})
        joints = np.asarray(entry["joints"], np.float64).reshape(-1, 2)
        vis = np.asarray(entry["joints_vis"], np.float64).reshape(-1)
        keypoints = np.zeros((len(joints), 3))
        labeled = vis > 0
        keypoints[labeled, :2] = joints[labeled]
        keypoints[labeled, 2] = 2
        ann = {"image_id": ids[name], "iscrowd": 0, "num_keypoints": int(labeled.sum()),
               "category_id": 1, "id": i + 1, layout.json_fields[0]: keypoints.reshape(-1).tolist()}
        if len(joints) == n_joints and labeled.any():
            img = images[ids[name] - 1]
            x0, y0 = joints[labeled].min(0)
            x1, y1 = joints[labeled].max(0)
            w, h = x1 - x0, y1 - y0
            x0, x1 = x0 - 0.1 * w, x1 + 0.1 * w
            y0, y1 = y0 - 0.05 * h, y1 + 0.1 * h
            if img["width"] and img["height"]:
                x0, y0 = max(0.0, x0), max(0.0, y0)
                x1, y1 = min(float(img["width"]), x1), min(float(img["height"]), y1)
            ann["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            ann["area"] = float((x1 - x0) * (y1 - y0))
        else:
            ann["bbox"], ann["area"] = [0.0, 0.0, 0.0, 0.0], 0.0
        annotations.append(ann)
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": list(layout.keypoints)}]}
