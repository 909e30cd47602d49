"""One batch plan executed: LMDB records -> the fork's metadata rules -> augmentation -> labels;
and the batch's images normalised (``docs/labels.md`` §Normalisation).

This is the glue between the record codec (``datum.py``, ``lmdb_reader.py``), augmentation
(``augment.py``) and label rendering (``labels.py``); it runs wherever a plan is executed (the
calling thread, or a data-loader worker) and knows nothing of workers.

Per record (``docs/labels.md`` §Decoding): the COCO category's -1 shift, visibility rounding
and out-of-image -> 2, the LMDB -> model keypoint remap, ``scale_self`` normalised to the crop height.
Deliberate deviation: an invalid record (§Invalid records) gives a zero image and a zero label
instead of the fork's stale buffer contents.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from ..generator.registry import MASK_MISS_DATASET_STRINGS, get_training_variant
from . import augment as A
from . import labels as L
from .lmdb_reader import LmdbReader
from .opdata_config import OPDataConfig, OPDataError
from .opdata_plan import BatchPlan


def sample_from_record(record, model, variant, config: A.AugmentConfig, dataset_index: int,
                       media_directory: str = "", expected_dataset: Optional[str] = None):
    """A decoded datum -> :class:`augment.Sample` in model keypoints, or None when invalid (§Invalid records).

    Invalid: a dataset string different from the source's first record, or a main-person
    visibility > 4 or NaN.
    """
    meta = record.meta
    if meta is None:
        raise OPDataError("record has no metadata plane")
    if expected_dataset is not None and meta.dataset != expected_dataset:
        return None
    joints = np.asarray(meta.joints, np.float32)
    if np.isnan(joints).any() or (joints[:, 2] > 4).any():
        return None
    shift = np.float32(1) if variant.lmdb_one_based else np.float32(0)
    people = np.concatenate([joints[None], np.asarray(meta.others_joints, np.float32)], 0).copy()
    people[..., :2] -= shift
    width, height = int(meta.img_width), int(meta.img_height)
    people = L.sanitize_visibility(people, width, height)
    people = L.remap_keypoints(variant, people)
    image = record.image
    if variant.image_from_file:
        path = Path(media_directory + (meta.image_path or ""))
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OPDataError(f"DOME image {path} cannot be read")
    use_mask = variant.reads_mask_miss or meta.dataset in MASK_MISS_DATASET_STRINGS
    mask = record.mask_miss if use_mask else None
    planes = record.planes if use_mask and mask is not None else None
    return A.Sample(image=image, mask_miss=mask, people=people, planes=planes,
                    mask_full=planes is not None and record.mask_full,
                    objpos=np.asarray(meta.objpos, np.float32) - shift,
                    scale_self=float(np.float32(meta.scale_provided) * np.float32(A.LEGACY_CROP / config.crop_y)),
                    num_other_people=meta.num_other_people, dataset_index=dataset_index)


def first_record_dataset(reader: LmdbReader) -> str:
    """The dataset string of an LMDB's first record; refuses an LMDB that is not an OpenPose
    training LMDB (e.g. a classification LMDB: an image and a label, no metadata plane)."""
    try:
        record = reader[0]
    except KeyError:
        raise OPDataError(f"{reader.path}: no record 0000000 (not an LMDB written by openpose-train lmdb "
                          f"or the OpenPose scripts)") from None
    except ValueError as exc:
        raise OPDataError(f"{reader.path} record 0000000: {exc} (not an OpenPose training LMDB? make one "
                          f"with openpose-train lmdb)") from None
    if record.meta is None:
        shape = "x".join(map(str, record.image.shape)) if record.image is not None else "no image"
        raise OPDataError(f"{reader.path}: record 0000000 has no OpenPose metadata plane (an image of {shape} "
                          f"only, like a classification LMDB); training needs an LMDB written by "
                          f"openpose-train lmdb")
    return record.meta.dataset


class RecordReaders:
    """The LMDBs of one layer in one process, opened when first read (an LMDB handle must not
    cross into a worker process), with each source's model and first dataset string."""

    def __init__(self, config: OPDataConfig):
        self.config = config
        self.models = [get_training_variant(s.op_model) for s in config.sources]
        self._sources = [None] * len(config.sources)
        self._background = None
        self.first_dataset = [None] * len(config.sources)

    def source(self, i: int) -> LmdbReader:
        if self._sources[i] is None:
            self._sources[i] = LmdbReader(self.config.sources[i].path, self.models[i][1].num_lmdb_parts)
            if self.first_dataset[i] is None:
                self.first_dataset[i] = first_record_dataset(self._sources[i])
        return self._sources[i]

    def background(self) -> LmdbReader:
        if self._background is None:
            self._background = LmdbReader(self.config.background)
        return self._background

    def close(self):
        for reader in self._sources + [self._background]:
            if reader is not None:
                reader.close()
        self._sources = [None] * len(self._sources)
        self._background = None

    def __getstate__(self):          # a pickled copy (a worker's) opens its own handles
        state = dict(self.__dict__)
        state["_sources"], state["_background"] = [None] * len(self._sources), None
        return state


def render_item(readers: RecordReaders, source: int, key: Optional[int], bg_key: Optional[int], rng,
                with_labels: bool = True, label_out: Optional[np.ndarray] = None):
    """One batch item: (uint8 image (H, W, 3), label or None, AugmentedSample), or three Nones for an
    invalid record."""
    cfg = readers.config
    aug_cfg = cfg.augment
    background = None
    if bg_key is not None:
        background = readers.background().read(bg_key, decode_meta=False).image
    if source < 0:
        model, variant = readers.models[0]
        out = A.background_only_sample(rng, aug_cfg, background, model.num_parts)
    else:
        model, variant = readers.models[source]
        reader = readers.source(source)
        try:
            record = reader.read(key, interleaved=True)
            sample = sample_from_record(record, model, variant, aug_cfg, source, cfg.media_directory,
                                        readers.first_dataset[source])
        except (ValueError, KeyError) as exc:
            raise OPDataError(f"{reader.path} record {key:07d}: {exc}") from None
        if sample is None:
            return None, None, None
        if cfg.phase == "TEST":
            out = A.unaugmented_sample(aug_cfg, sample)
        else:
            out = A.augment_variant_sample(rng, aug_cfg, sample, model, variant, background=background)
    label = None
    if with_labels:
        label = L.render_labels(model, variant, out.people, out.mask_grid, aug_cfg.grid_size, aug_cfg.stride,
                                aug_cfg.sigma(max(source, 0)), filled=out.filled, out=label_out)
    return out.image, label, out


def run_plan(readers: RecordReaders, plan: BatchPlan, images: np.ndarray, labels: Optional[np.ndarray]):
    """Fill ``images`` (N, 3, H, W) uint8 BGR planes and, unless None, ``labels`` (N, 2C, gy, gx) for one plan.

    Returns the label inputs for rendering on a device: ``{"source": i, "items": [(people,
    mask grid, filled) or None per item]}``.
    """
    rng = np.random.default_rng(list(plan.seed))
    inputs = []
    for i, (key, bg_key) in enumerate(zip(plan.keys, plan.bg_keys)):
        image, label, out = render_item(readers, plan.source, key, bg_key, rng, with_labels=labels is not None,
                                        label_out=None if labels is None else labels[i])
        if out is None:                                 # invalid metadata (§Invalid records): zero label and image
            images[i] = 0
            if labels is not None:
                labels[i] = 0
            inputs.append(None)
            continue
        if image.shape != images.shape[2:] + (3,):
            raise OPDataError(f"{readers.config.layer_name}: item image {image.shape} differs from the batch "
                              f"shape {images.shape[2:] + (3,)}")
        write_planes(image, images[i])           # labels[i] was rendered in place
        inputs.append((out.people, out.mask_grid, out.filled))
    return {"source": plan.source, "items": inputs}


def write_planes(image: np.ndarray, planes: np.ndarray) -> None:
    """HWC image -> the (3, H, W) planes of a batch (cv2.split writes in place: 5x a transpose)."""
    dst = [planes[0], planes[1], planes[2]]
    out = cv2.split(np.ascontiguousarray(image), dst)
    if any(o.__array_interface__["data"][0] != d.__array_interface__["data"][0] for o, d in zip(out, dst)):
        planes[:] = image.transpose(2, 0, 1)      # the binding allocated new arrays: copy


def normalize_batch(image: torch.Tensor, mode: int) -> torch.Tensor:
    """Torch version of ``augment.normalize_image``: uint8 (N, 3, H, W) BGR -> float32, same float32 ops."""
    out = image.to(torch.float32)
    if mode == 0:
        return out.sub_(128).div_(256)
    means = A.MEAN_BGR_1 if mode == 1 else A.MEAN_BGR_2
    out.sub_(torch.tensor(np.asarray(means, np.float32), device=out.device).view(1, 3, 1, 1))
    return out if mode == 1 else out.mul_(float(np.float32(0.017)))


_NORMALIZATION_LUTS = {}


def normalization_lut(mode: int) -> np.ndarray:
    """(3, 256) float32: :func:`normalize_batch` of every uint8 value, per BGR channel (same float32 ops)."""
    lut = _NORMALIZATION_LUTS.get(mode)
    if lut is None:
        values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256).contiguous()
        lut = _NORMALIZATION_LUTS[mode] = np.ascontiguousarray(normalize_batch(values, mode)[0, :, 0].numpy())
    return lut


def normalize_batch_lut(images: np.ndarray, mode: int, pin_memory: bool = False) -> torch.Tensor:
    """:func:`normalize_batch` of uint8 (N, 3, H, W) numpy planes as a new CPU tensor (page-locked with
    ``pin_memory``): one ``cv2.LUT`` pass per plane (a table of the 256 results), identical values,
    about twice as fast."""
    out = torch.empty(images.shape, dtype=torch.float32, pin_memory=pin_memory)
    dst = out.numpy()
    lut = normalization_lut(mode)
    n, _, h, w = images.shape
    if mode == 0 and h and w:                             # one table for every channel
        cv2.LUT(images.reshape(-1, w), lut[0], dst=dst.reshape(-1, w))
    else:
        for i in range(n):
            for c in range(3):
                cv2.LUT(images[i, c], lut[c], dst=dst[i, c])
    return out
