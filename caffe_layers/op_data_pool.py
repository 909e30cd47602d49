"""The ``OPData`` layer as a data source: LMDB records -> augmented images + labels, batched.

``OPDataSource`` is what the training engine reads from and a plain Python iterator
(``docs/labels.md`` §Sampling). Per batch it draws one source with the configured
probabilities (or a background-only batch), takes the next records of that source (and of the
background LMDB), augments each one (``augment.py``) and renders its label (``labels.py`` in the
workers, or, with ``label_device`` a torch device, ``labels_torch.py`` on that device for the whole
batch: workers then send the augmented images, mask grids and keypoints only).

Determinism: the main process *plans* every batch (source draw, record keys, a per-batch seed
derived from ``(seed, rank, batch number)``); workers only execute plans. The same seed
therefore gives identical batches whatever the number of workers, and ``state_dict()`` (planning
RNG, LMDB cursors, batch counter of the next batch to be consumed) resumes exactly.

Multi-GPU: ``rank``/``world_size`` shard every LMDB as the fork's ``Skip()`` does (record offset
``% world_size == rank``); the source draw uses the un-ranked seed, so all ranks pick the same
source for the same step (the fork shares it through static atomics).

Workers are processes (started from a ``forkserver``: a plain fork would inherit the caller's
OpenCV/OpenMP thread pools and CUDA state) writing into shared-memory slots (uint8 images,
float32 labels rendered in place); the main process only normalises a finished slot's image into a
torch tensor and copies its label. ``num_workers=0`` does everything in the calling thread.

LMDB allows one handle per file and process: sources in one process share readers
(reference-counted); a source with workers holds no LMDB open in the calling process.

Speed (``benchmarks/op_data.py``): raw datums are read in place from the LMDB map (protobuf wire
format, no copy of the data field) and interleaved once with ``cv2.merge``; images are normalised
with ``cv2.LUT`` (the 256 results of the torch ops); the bicubic warps dominate what is left.

Not implemented (refused with a clear message): ``add_distance``, ``taf_topology`` and the
MPII_65_42 / CAR_12 / COCO_59_17 label rules. Deliberate deviation: an invalid record (§Invalid records) gives
a zero image instead of the fork's stale buffer contents.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import sys
import traceback
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from ..generator.registry import (MASK_MISS_DATASET_STRINGS, get_dataset_layout, get_training_variant,
                                  register, register_dataset_layout)
from . import augment as A
from .caffe_io import CaffemodelError, wire_fields
from . import labels as L

from openpose_train.common.errors import OpenPoseTrainError



class OPDataError(OpenPoseTrainError, ValueError):
    """Bad OPData configuration or record (the message names the layer, LMDB or record)."""


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class SourceSpec:
    path: str
    op_model: str
    probability: float


@dataclass(frozen=True)
class OPDataConfig:
    """Everything a worker needs, picklable."""

    layer_name: str
    sources: tuple                      # SourceSpec per source
    background: Optional[str]
    prob_only_background: float
    batch_size: int
    augment: A.AugmentConfig
    phase: str
    media_directory: str
    top_names: tuple
    # models from YAML skeletons (and their dataset layouts): workers start from a clean process
    # and register them again, since only the registry's own tables are known there
    custom_models: tuple = ()
    custom_layouts: tuple = ()


def parse_layer(layer_param, phase: str = "TRAIN", **augment_overrides) -> OPDataConfig:
    """Validate an OPData ``LayerParameter`` (the checks of §Sampling) into an :class:`OPDataConfig`."""
    name = layer_param.name or "OPData"
    if layer_param.type and layer_param.type != "OPData":
        raise OPDataError(f"layer '{name}' has type '{layer_param.type}', expected 'OPData'")
    tp = layer_param.op_transform_param
    try:
        aug = A.AugmentConfig.from_proto(tp, **augment_overrides)
    except A.AugmentError as exc:
        raise OPDataError(f"layer '{name}': {exc}") from None
    if tp.add_distance:
        raise OPDataError(f"layer '{name}': add_distance (deprecated distance channels) is not supported")
    if tp.taf_topology:
        raise OPDataError(f"layer '{name}': taf_topology {tp.taf_topology} (video TAFs) is not supported")
    paths = A.parse_list(tp.sources, str)
    if not paths:
        raise OPDataError(f"layer '{name}': op_transform_param.sources is empty")
    models = A.parse_list(tp.models, str)
    probs = A.parse_list(tp.probabilities, float)
    if len(models) == 1:
        models = models * len(paths)
    if not (len(paths) == len(models) == len(probs)):
        raise OPDataError(f"layer '{name}': {len(paths)} sources, {len(models)} models and "
                          f"{len(probs)} probabilities must match")
    if any(not 0 <= p <= 1 for p in probs):
        raise OPDataError(f"layer '{name}': probabilities {probs} must lie in [0, 1]")
    background = tp.source_background or None
    only_bkg = float(tp.prob_only_background) if background else 0.0
    if not 0 <= only_bkg < 1:
        raise OPDataError(f"layer '{name}': prob_only_background {only_bkg} must lie in [0, 1)")
    if abs(sum(probs) + only_bkg - 1) > 1e-6:
        raise OPDataError(f"layer '{name}': probabilities sum to {sum(probs)} + prob_only_background "
                          f"{only_bkg}, not 1")
    channels = set()
    custom_models, custom_layouts = {}, {}
    for m in models:
        try:
            model, variant = get_training_variant(m)
        except KeyError as exc:
            raise OPDataError(f"layer '{name}': {exc}") from None
        if not model.upstream:
            custom_models[model.name] = model
            custom_layouts[variant.dataset] = get_dataset_layout(variant.dataset)
        if not variant.label_rules_implemented:
            raise OPDataError(f"layer '{name}': model string {m}: its special label rules are not implemented")
        channels.add(model.label_channels)
    if len(channels) != 1:
        raise OPDataError(f"layer '{name}': the models {models} give different label channel counts "
                          f"{sorted(channels)} (are you using compatible models?)")
    if phase not in ("TRAIN", "TEST"):
        raise OPDataError(f"phase must be TRAIN or TEST, got {phase}")
    tops = tuple(layer_param.top) or ("image", "label")
    if layer_param.data_param.batch_size < 1:      # the fork CHECKs a positive batch size
        raise OPDataError(f"layer '{name}': data_param.batch_size is {layer_param.data_param.batch_size}; "
                          f"it must be >= 1")
    return OPDataConfig(
        layer_name=name, sources=tuple(SourceSpec(p, m, float(q)) for p, m, q in zip(paths, models, probs)),
        background=background, prob_only_background=only_bkg,
        batch_size=int(layer_param.data_param.batch_size), augment=aug, phase=phase,
        media_directory=tp.media_directory, top_names=tops,
        custom_models=tuple(custom_models.values()), custom_layouts=tuple(custom_layouts.values()))


def register_custom_models(config: OPDataConfig) -> None:
    """Make a worker know the config's YAML skeletons (see ``OPDataConfig.custom_models``)."""
    for layout in config.custom_layouts:
        register_dataset_layout(layout)
    for model in config.custom_models:
        register(model)


def choose_source(probabilities, dice: float) -> int:
    """§Sampling: the first source whose cumulative probability exceeds ``dice``; -1 = background only."""
    total = 0.0
    for i, p in enumerate(probabilities):
        total += p
        if dice < total:
            return i
    return -1


# ----------------------------------------------------------------------------- records

def sample_from_record(record, model, variant, config: A.AugmentConfig, dataset_index: int,
                       media_directory: str = "", expected_dataset: Optional[str] = None):
    """A decoded datum -> :class:`augment.Sample` in model keypoints, or None when invalid (§Invalid records).

    Applies the fork's metadata rules: COCO category -1 shift, v rounding and out-of-image -> 2,
    the LMDB->model remap, scale_self normalised to the crop height. Invalid: a dataset string
    different from the source's first record, or a main-person visibility > 4 or NaN.
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
    planes = getattr(record, "planes", None) if use_mask and mask is not None else None
    return A.Sample(image=image, mask_miss=mask, people=people, planes=planes,
                    mask_full=planes is not None and bool(getattr(record, "mask_full", False)),
                    objpos=np.asarray(meta.objpos, np.float32) - shift,
                    scale_self=float(np.float32(meta.scale_provided) * np.float32(A.LEGACY_CROP / config.crop_y)),
                    num_other_people=meta.num_other_people, dataset_index=dataset_index)


_OPEN_LMDBS = {}     # (pid, path) -> [LmdbReader, users]: LMDB allows one handle per file per process


def _acquire(path, num_lmdb_parts=None):
    import os
    from .lmdb_reader import LmdbReader
    key = (os.getpid(), str(Path(path).resolve()))
    entry = _OPEN_LMDBS.get(key)
    if entry is None:
        entry = _OPEN_LMDBS[key] = [LmdbReader(path), 0]
    entry[1] += 1
    reader = entry[0]
    return reader if num_lmdb_parts is None else _PartsView(reader, num_lmdb_parts)


def _release(reader):
    import os
    base = reader.reader if isinstance(reader, _PartsView) else reader
    for key, entry in list(_OPEN_LMDBS.items()):
        if entry[0] is base and key[0] == os.getpid():
            entry[1] -= 1
            if entry[1] <= 0:
                base.close()
                del _OPEN_LMDBS[key]


@contextlib.contextmanager
def _lmdb_value(reader, index: int):
    """Record ``index`` of an ``LmdbReader`` as a buffer into the LMDB map (no 1.5 MB copy), valid
    inside the ``with`` only: whatever is kept must be copied out (``read_record`` does)."""
    with reader.env.begin(buffers=True) as txn:
        value = txn.get(b"%07d" % index)        # the LmdbReader key format
        if value is None:
            raise KeyError(f"{reader.path}: no record {index:07d}")
        yield value


class _PartsView:
    """A shared LmdbReader decoding metadata with this source's LMDB keypoint count."""

    def __init__(self, reader, num_lmdb_parts):
        self.reader, self.num_lmdb_parts = reader, num_lmdb_parts
        self.path = reader.path

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index):
        with _lmdb_value(self.reader, index) as value:
            return read_record(value, self.num_lmdb_parts)


@dataclass
class FastRecord:
    """A raw 5-channel datum decoded with one interleaving copy (``planes``: B, G, R, mask_miss)."""

    planes: np.ndarray
    meta: object
    meta_plane: np.ndarray
    mask_full: bool = False           # mask_miss is 255 everywhere

    @property
    def image(self):
        return self.planes[..., :3]

    @property
    def mask_miss(self):
        return self.planes[..., 3]


def raw_datum_planes(value: bytes) -> Optional[np.ndarray]:
    """The ``(channels, height, width)`` uint8 planes of a raw (not encoded) Caffe Datum, read in
    place from ``value`` (no copy), or None for anything else (encoded, float_data, malformed).

    Reads the protobuf wire format directly: parsing the message and reading its ``data`` field
    copy the 1.5 MB of a 640x480 datum twice.
    """
    fields = {}
    try:
        for number, _, field_value in wire_fields(value, 0, len(value)):
            fields[number] = field_value
    except (CaffemodelError, IndexError):
        return None
    c, h, w = fields.get(1, 0), fields.get(2, 0), fields.get(3, 0)
    data = fields.get(4)
    if fields.get(7, 0) or 6 in fields or not isinstance(data, tuple) or not isinstance(c, int) or c <= 0 \
            or data[1] - data[0] != c * h * w:
        return None
    return np.frombuffer(value, np.uint8, data[1] - data[0], data[0]).reshape(c, h, w)


def read_record(value: bytes, num_lmdb_parts: Optional[int] = None):
    """Decode a datum; raw image+metadata+mask datums take a fast path (planes read in place,
    cv2.merge of B, G, R and mask_miss: about 30x cheaper than a CHW->HWC transpose), everything
    else ``datum.read_datum``."""
    from .datum import decode_metadata, read_datum
    arr = raw_datum_planes(value)
    if arr is None or arr.shape[0] != 5:
        return read_datum(value, num_lmdb_parts=num_lmdb_parts)
    planes = cv2.merge([arr[0], arr[1], arr[2], arr[4]])
    meta_plane = arr[3].copy()                  # ``value`` may be a buffer into the LMDB map
    return FastRecord(planes=planes, meta=decode_metadata(meta_plane, num_lmdb_parts=num_lmdb_parts),
                      meta_plane=meta_plane, mask_full=cv2.minMaxLoc(arr[4])[0] == 255)


def read_background_image(value: bytes) -> np.ndarray:
    """BGR image of a background (negatives) datum; raw datums via cv2.merge of their planes."""
    from .datum import read_datum
    arr = raw_datum_planes(value)
    if arr is not None and arr.shape[0] >= 3:
        return cv2.merge([arr[0], arr[1], arr[2]])
    return read_datum(value, decode_meta=False).image


def first_record_dataset(reader) -> str:
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


class _Readers:
    """Per-process LMDB handles (opened lazily: LMDB environments must not cross a fork)."""

    def __init__(self, config: OPDataConfig):
        self.config = config
        self.sources = [None] * len(config.sources)
        self.background = None
        self.models = [get_training_variant(s.op_model) for s in config.sources]
        self.first_dataset = [None] * len(config.sources)

    def source(self, i):
        if self.sources[i] is None:
            self.sources[i] = _acquire(self.config.sources[i].path, self.models[i][1].num_lmdb_parts)
            if self.first_dataset[i] is None:
                self.first_dataset[i] = first_record_dataset(self.sources[i])
        return self.sources[i]

    def background_reader(self):
        if self.background is None:
            self.background = _acquire(self.config.background)
        return self.background

    def close(self):
        for r in self.sources + [self.background]:
            if r is not None:
                _release(r)
        self.sources = [None] * len(self.sources)
        self.background = None


def render_item(readers: _Readers, source: int, key: Optional[int], bg_key: Optional[int], rng,
                with_labels: bool = True, label_out: Optional[np.ndarray] = None):
    """One batch item: (uint8 image (H, W, 3), label or None, AugmentedSample or None when invalid)."""
    cfg = readers.config
    aug_cfg = cfg.augment
    background = None
    if bg_key is not None:
        with _lmdb_value(readers.background_reader(), bg_key) as value:
            background = read_background_image(value)
    if source < 0:
        model, variant = readers.models[0]
        out = A.background_only_sample(rng, aug_cfg, background, model.num_parts)
    else:
        model, variant = readers.models[source]
        reader = readers.source(source)
        try:
            record = reader[key]
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


@dataclass
class BatchPlan:
    number: int
    source: int
    keys: tuple          # record index per item (None for background-only)
    bg_keys: tuple       # background record index per item (None without a background LMDB)
    seed: tuple


def run_plan(readers: _Readers, plan: BatchPlan, images: np.ndarray, labels: Optional[np.ndarray]):
    """Fill ``images`` (N, 3, H, W) uint8 BGR planes and ``labels`` (N, 2C, gy, gx) for one plan.

    Returns the label inputs for device-side rendering: ``{"source": i, "items": [(people,
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
        _write_planes(image, images[i])           # labels[i] was rendered in place
        inputs.append((out.people, out.mask_grid, out.filled))
    return {"source": plan.source, "items": inputs}


def _default_start_method() -> str:
    """forkserver where available: workers start from a clean process. A plain fork would inherit
    the caller's OpenCV/OpenMP thread pools (and CUDA state), which deadlock in the child."""
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])     # imported once in the server, not per worker
        return "forkserver"
    return "spawn"


@contextlib.contextmanager
def _main_module_hidden():
    """Start workers without re-running the caller's main script in them.

    spawn/forkserver children import ``__main__`` (by path or module name) so that pickled
    objects defined there resolve; ours live in this package, so hiding the main module's path and
    spec while the processes start keeps unguarded scripts (no ``if __name__ == "__main__"``)
    working, as with a plain fork.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _write_planes(image: np.ndarray, planes: np.ndarray) -> None:
    """HWC image -> the (3, H, W) planes of a batch slot (cv2.split writes in place: 5x a transpose)."""
    dst = [planes[0], planes[1], planes[2]]
    out = cv2.split(np.ascontiguousarray(image), dst)
    if any(o.__array_interface__["data"][0] != d.__array_interface__["data"][0] for o, d in zip(out, dst)):
        planes[:] = image.transpose(2, 0, 1)      # the binding allocated new arrays: copy


PR_SET_PDEATHSIG = 1    # <linux/prctl.h>


def _die_with_parent(parent_watch) -> None:
    """End this worker when the training process ends, even by ``kill -9`` (then nothing tells the
    workers, which wait on their task queue forever). Linux: the kernel's parent-death signal (the
    parent is the forkserver, which exits with the training process). Everywhere: a thread waits
    for EOF on ``parent_watch``, a pipe whose only write end the training process holds, and
    checks that the parent process is still the same."""
    import os
    import signal
    import threading

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent:
            try:
                if parent_watch.poll(1.0):      # EOF (or anything): the training process is gone
                    break
            except OSError:
                break
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(config, slot_names, shapes, with_labels, tasks, results, parent_watch=None):
    if parent_watch is not None:
        _die_with_parent(parent_watch)
    cv2.setNumThreads(1)            # the workers are the parallelism (a fresh process: safe)
    register_custom_models(config)
    readers = _Readers(config)
    slots = [shared_memory.SharedMemory(name=n) for n in slot_names]
    try:
        while True:
            task = tasks.get()
            if task is None:
                break
            plan, slot = task
            buf = slots[slot].buf
            images = np.ndarray(shapes[0], np.uint8, buffer=buf)
            labels = np.ndarray(shapes[1], np.float32, buffer=buf, offset=images.nbytes) if with_labels else None
            try:
                inputs = run_plan(readers, plan, images, labels)
                results.put((plan.number, slot, None if with_labels else inputs, None))
            except Exception as exc:  # reported to the main process, which raises it
                msg = str(exc) if isinstance(exc, (OPDataError, A.AugmentError, L.LabelError)) \
                    else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                results.put((plan.number, slot, None, msg))
    finally:
        for s in slots:
            s.close()
        readers.close()


# ----------------------------------------------------------------------------- the source

class OPDataSource:
    """Batches of the OPData layer: ``{top_name: torch.float32 tensor}`` per ``next()``.

    ``layer_param``: caffe_pb2.LayerParameter of type "OPData". ``num_workers`` 0 runs in the
    calling thread, None uses :func:`default_workers`. ``label_device`` "workers": workers render labels
    with numpy; a torch device ("cpu", "cuda:0"): workers send keypoints and mask grids, and the image
    is normalised and the labels of the whole batch rendered on that device in one pass
    (``labels_torch``); on CUDA the uint8 images travel through pinned buffers, copied on a side stream.
    """

    def __init__(self, layer_param, phase: str = "TRAIN", seed: Optional[int] = None, rank: int = 0,
                 world_size: int = 1, num_workers: Optional[int] = None, prefetch: int = 4,
                 label_device="workers",
                 mp_context: Optional[str] = None, **augment_overrides):
        self.config = parse_layer(layer_param, phase, **augment_overrides)
        if not 0 <= rank < world_size:
            raise OPDataError(f"rank {rank} outside world_size {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(np.random.SeedSequence().entropy % (2 ** 63)) if seed is None else int(seed)
        self.num_workers = default_workers() if num_workers is None else int(num_workers)
        self.prefetch = max(1, int(prefetch or layer_param.data_param.prefetch or 4))
        self.label_device = str(label_device)
        self._readers = _Readers(self.config)
        self.sizes = []
        for i in range(len(self.config.sources)):
            try:
                self.sizes.append(len(self._readers.source(i)))
            except OPDataError:                 # names the LMDB already
                raise
            except Exception as exc:
                raise OPDataError(f"layer '{self.config.layer_name}': source {self.config.sources[i].path}: "
                                  f"{exc}") from None
            if self.sizes[-1] == 0:
                raise OPDataError(f"{self.config.sources[i].path}: the LMDB is empty")
        self.background_size = len(self._readers.background_reader()) if self.config.background else 0
        if self.config.background and self.background_size == 0:
            raise OPDataError(f"{self.config.background}: the background LMDB is empty")
        model, _ = self._readers.models[0]
        self.model = model
        aug = self.config.augment
        if phase == "TEST":
            first = self._readers.source(0)[0].image
            height, width = first.shape[:2]
        else:
            width, height = aug.crop_x, aug.crop_y
        grid_w, grid_h = aug.grid_size
        n = self.config.batch_size
        self.image_shape = (n, 3, height, width)
        self.label_shape = (n, model.label_channels, grid_h, grid_w)
        self._mp_context = mp_context
        self._workers: List = []
        self._pinned = []           # CUDA label device: [pinned uint8 batch, copy-done event] ring
        self._reset_planning(self._initial_state())

    # --- planning ---------------------------------------------------------------------------
    def _initial_state(self):
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size, "batch": 0,
                "dice_rng": np.random.default_rng(self.seed).bit_generator.state,
                "offsets": [0] * len(self.sizes), "bg_offset": 0}

    def _reset_planning(self, state):
        self._plan_state = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
        self._dice = np.random.default_rng(self.seed)
        self._dice.bit_generator.state = state["dice_rng"]
        self._pending = {}          # batch number -> state before it was planned
        self._ready = {}            # batch number -> (images, labels, inputs)
        self._next_out = state["batch"]

    def _next_key(self, offset, size, shard):
        # the fork's Skip()/Next(): walk every record, keep offset % world_size == rank (TRAIN)
        if shard and self.world_size > 1:
            offset += (self.rank - offset) % self.world_size
        return offset % size, offset + 1

    def _plan(self) -> BatchPlan:
        st = self._plan_state
        snapshot = {k: (list(v) if isinstance(v, list) else v) for k, v in st.items()}
        snapshot["dice_rng"] = self._dice.bit_generator.state
        shard = self.config.phase == "TRAIN"
        source = choose_source([s.probability for s in self.config.sources], self._dice.random())
        keys, bg_keys = [], []
        for _ in range(self.config.batch_size):
            if source >= 0:
                key, st["offsets"][source] = self._next_key(st["offsets"][source], self.sizes[source], shard)
                keys.append(key)
            else:
                if not self.config.background:
                    raise OPDataError(f"layer '{self.config.layer_name}': background-only batch drawn "
                                      f"without source_background")
                keys.append(None)
            if self.config.background:
                bg, st["bg_offset"] = self._next_key(st["bg_offset"], self.background_size, shard)
                bg_keys.append(bg)
            else:
                bg_keys.append(None)
        number = st["batch"]
        st["batch"] = number + 1
        self._pending[number] = snapshot
        return BatchPlan(number, source, tuple(keys), tuple(bg_keys), (self.seed, self.rank, number))

    # --- execution --------------------------------------------------------------------------
    @property
    def _with_worker_labels(self):
        return self.label_device == "workers"

    def _start_workers(self):
        # LMDB environments must not cross a fork: children open their own
        self._readers.close()
        ctx = mp.get_context(self._mp_context or _default_start_method())
        n_slots = self.prefetch + self.num_workers
        size = int(np.prod(self.image_shape))
        if self._with_worker_labels:
            size += 4 * int(np.prod(self.label_shape))
        self._slots = [shared_memory.SharedMemory(create=True, size=size) for _ in range(n_slots)]
        self._free = list(range(n_slots))
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        shapes = (self.image_shape, self.label_shape)
        # the workers watch this pipe for EOF: only this process holds its write end (_die_with_parent)
        watch_r, self._parent_watch = ctx.Pipe(duplex=False)
        with _main_module_hidden():
            for _ in range(self.num_workers):
                p = ctx.Process(target=_worker_main, daemon=True,
                                args=(self.config, [s.name for s in self._slots], shapes, self._with_worker_labels,
                                      self._tasks, self._results, watch_r))
                p.start()
                self._workers.append(p)
        watch_r.close()
        self._in_flight = 0

    def _fill(self):
        while self._free:
            slot = self._free.pop()
            self._tasks.put((self._plan(), slot))
            self._in_flight += 1

    def _slot_arrays(self, slot):
        buf = self._slots[slot].buf
        images = np.ndarray(self.image_shape, np.uint8, buffer=buf)
        labels = None
        if self._with_worker_labels:
            labels = np.ndarray(self.label_shape, np.float32, buffer=buf, offset=images.nbytes)
        return images, labels

    def _next_arrays(self):
        if self.num_workers <= 0:
            plan = self._plan()
            images = np.empty(self.image_shape, np.uint8)
            labels = np.empty(self.label_shape, np.float32) if self._with_worker_labels else None
            inputs = run_plan(self._readers, plan, images, labels)
            self._pending.pop(plan.number, None)
            self._next_out = plan.number + 1
            return self._to_tensors(images, labels, inputs)
        if not self._workers:
            self._start_workers()
        self._fill()
        while self._next_out not in self._ready:
            try:
                number, slot, inputs, error = self._results.get(timeout=5)
            except queue.Empty:
                dead = [p for p in self._workers if not p.is_alive()]
                if dead:
                    raise OPDataError(f"layer '{self.config.layer_name}': a data worker died "
                                      f"(exit code {dead[0].exitcode})") from None
                continue
            self._in_flight -= 1
            if error is not None:
                self._free.append(slot)
                raise OPDataError(f"layer '{self.config.layer_name}': {error}")
            images, labels = self._slot_arrays(slot)
            self._ready[number] = self._to_tensors(images, labels, inputs)   # copies out of the slot
            self._free.append(slot)
            self._fill()
        number = self._next_out
        self._next_out += 1
        self._pending.pop(number, None)
        return self._ready.pop(number)

    def __iter__(self):
        return self

    def _to_tensors(self, images, labels, inputs):
        """Normalised image tensor (a new tensor, read straight from ``images``), label tensor (a copy)."""
        import torch
        mode = self.config.augment.normalization
        if self._with_worker_labels:
            image = normalize_batch_lut(images, mode)
        else:
            image = normalize_batch(self._images_to_device(images), mode)
        label = torch.from_numpy(labels.copy()) if labels is not None else None
        return image, label, inputs

    def _images_to_device(self, images: np.ndarray):
        """uint8 planes on the label device (they may live in a worker's slot: copied before it is reused).

        CUDA: through a ring of two pinned buffers and a non-blocking copy on a side stream, so the
        copy overlaps the work already queued; the current stream waits for it before normalising.
        """
        import torch
        device = torch.device(self.label_device)
        if device.type != "cuda":
            return torch.from_numpy(images).to(device)
        if not self._pinned:
            self._copy_stream = torch.cuda.Stream(device)
            self._pinned = [[torch.empty(self.image_shape, dtype=torch.uint8).pin_memory(), None] for _ in range(2)]
        entry = self._pinned[0]
        self._pinned.append(self._pinned.pop(0))
        if entry[1] is not None:
            entry[1].synchronize()          # its previous copy has finished reading it
        entry[0].numpy()[...] = images
        with torch.cuda.stream(self._copy_stream):
            out = entry[0].to(device, non_blocking=True)
            entry[1] = torch.cuda.Event()
            entry[1].record(self._copy_stream)
        current = torch.cuda.current_stream(device)
        current.wait_stream(self._copy_stream)
        out.record_stream(current)
        return out

    def __next__(self):
        image, label, inputs = self._next_arrays()
        names = self.config.top_names
        out = {names[0]: image}
        if len(names) > 1:
            out[names[1]] = label if label is not None else self._device_labels(inputs, image.device)
        return out

    def _device_labels(self, inputs, device):
        from .labels_torch import render_labels_batch
        source = inputs["source"]
        model, variant = self._readers.models[max(source, 0)]
        aug = self.config.augment
        return render_labels_batch(model, variant, inputs["items"], aug.grid_size, aug.stride,
                                   aug.sigma(max(source, 0)), device=device)

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Planning state as of the next batch ``next()`` returns (exact resume)."""
        state = self._pending.get(self._next_out)
        if state is None:                      # nothing planned ahead: the live planning state
            state = {k: (list(v) if isinstance(v, list) else v) for k, v in self._plan_state.items()}
            state["dice_rng"] = self._dice.bit_generator.state
        return {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}

    def load_state_dict(self, state: dict):
        """Resume at ``state`` (from :meth:`state_dict`); in-flight batches are discarded."""
        if state.get("world_size", self.world_size) != self.world_size or state.get("rank", self.rank) != self.rank:
            raise OPDataError(f"state of rank {state.get('rank')}/{state.get('world_size')} loaded into rank "
                              f"{self.rank}/{self.world_size}")
        if len(state["offsets"]) != len(self.sizes):
            raise OPDataError(f"state has {len(state['offsets'])} sources, the layer {len(self.sizes)}")
        self.close()
        self.seed = int(state["seed"])
        self._reset_planning(state)

    def close(self):
        """Stop the workers and release the shared memory."""
        if self._workers:
            for _ in self._workers:
                self._tasks.put(None)
            for p in self._workers:
                p.join(timeout=5)
                if p.is_alive():
                    p.terminate()
            self._workers = []
            self._parent_watch.close()
            for s in self._slots:
                s.close()
                s.unlink()
            self._slots = []
        self._readers.close()
        self._ready = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def default_workers() -> int:
    """Data worker processes per training process: the cores this process may use
    (``os.sched_getaffinity``), shared by the processes of this node (``LOCAL_WORLD_SIZE``), less one
    for the training loop itself; 0 (in the calling thread) on a single core."""
    import os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, cores // local - 1)


def normalize_batch(image, mode: int):
    """Torch version of ``augment.normalize_image``: uint8 (N, 3, H, W) BGR -> float32, same float32 ops."""
    import torch
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
        import torch
        values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256).contiguous()
        lut = _NORMALIZATION_LUTS[mode] = np.ascontiguousarray(normalize_batch(values, mode)[0, :, 0].numpy())
    return lut


def normalize_batch_lut(images: np.ndarray, mode: int):
    """:func:`normalize_batch` of uint8 (N, 3, H, W) numpy planes as a new CPU tensor: one ``cv2.LUT``
    pass per plane (a table of the 256 results), identical values, about twice as fast."""
    import torch
    out = torch.empty(images.shape, dtype=torch.float32)
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


def source_from_prototxt(path, layer_name: Optional[str] = None, phase: str = "TRAIN", **kwargs) -> OPDataSource:
    """The :class:`OPDataSource` of the (first, or named) OPData layer of a training prototxt."""
    from .caffe_io import read_net_prototxt
    net = read_net_prototxt(path)
    for layer in net.layer:
        if layer.type == "OPData" and (layer_name is None or layer.name == layer_name):
            phases = {rule.phase for rule in layer.include}
            if phases and {"TRAIN": 0, "TEST": 1}[phase] not in phases and layer_name is None:
                continue
            return OPDataSource(layer, phase=phase, **kwargs)
    raise OPDataError(f"{path}: no OPData layer" + (f" named '{layer_name}'" if layer_name else ""))
