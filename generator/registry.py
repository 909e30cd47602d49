"""The pose-model registry: the one place every model fact lives.

The generator, the dataset tools, the OPData layer, the post-processing and the exporter all
read these dataclasses (the way openpifpaf's ``headmeta`` is shared by encoder, decoder and
losses). Tables are data; nothing here branches on a model name.

Interface (stable; other packages code against it):

* ``PoseModel``         one network / runtime model (BODY_25, COCO_18, MPI_15, MPI_15_4, BODY_25B,
                        BODY_135, HAND_21, FACE_70, ... and YAML skeletons).
* ``TrainingVariant``   one entry of the training fork's ``poseModel.cpp`` tables: an LMDB layout
                        (dataset) trained into a PoseModel, named by the fork's model string
                        (e.g. ``COCO_25_17``), which is what ``op_transform_param.model`` holds.
* ``get_model(name)``   PoseModel by registry name or OpenPose ``--model_pose`` string
                        (``COCO`` -> COCO_18); unknown names raise ``UnknownModelError`` listing
                        the known ones.
* ``list_models()``     names in a stable order.
* ``get_training_variant(op_model)`` -> ``(PoseModel, TrainingVariant)`` for a fork model string.
* ``load_skeleton_yaml(path)`` -> PoseModel, validated (see ``SkeletonError``).
* ``register(model)``   add a model (used by YAML loading and tests).

Channel layout conventions (``spec/op_data_layer.md`` section 6, ``spec/openpose_runtime.md`` 2.2):

* network output (``net_output``): heatmaps of ``num_parts`` parts in part order, then the
  background channel iff ``has_background``, then PAFs in *training* pair order
  (pair i -> channels ``2i`` (x), ``2i+1`` (y) within the PAF block).
* label top: ``2 * num_channels`` = weights then targets; within each half PAFs first
  (``2 * num_pafs``), then heatmaps, then background.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


class UnknownModelError(KeyError):
    """A model name that is in no table. The message lists the known names."""

    def __str__(self):  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "unknown model"


class SkeletonError(ValueError):
    """A user skeleton (YAML) that cannot work: the message names the file and the problem."""


@dataclass(frozen=True)
class TrainingVariant:
    """One LMDB layout trained into a model (a row of the fork's ``poseModel.cpp`` tables)."""

    op_model: str                      # fork model string, e.g. "COCO_25_17" (op_transform_param.model)
    dataset: str                       # our dataset key: "coco", "coco_foot", "mpii", "posetrack",
                                       # "face70", "hand21", "hand42", "dome135", "wholebody", ...
    category: str                      # fork PoseCategory: COCO, MPII, PT, HAND, FACE, DOME, CAR
    num_lmdb_parts: int                # P_lmdb: keypoints stored per person in the LMDB
    sources: Tuple[Tuple[int, ...], ...]   # per model part: () = not in dataset (v=4),
                                           # (j,) = copy LMDB point j, (j, k, ...) = average
    empty_mask_parts: Tuple[int, ...] = ()   # CHANNELS_TO_MASK entry empty -> weights zeroed (step 5)
    minus1_parts: Tuple[int, ...] = ()       # CHANNELS_TO_MASK entry {-1} (mask person boxes, step 8)
    upstream: bool = True              # False for our own extensions (e.g. COCO-WholeBody 133)


@dataclass(frozen=True)
class PostprocessThresholds:
    """OpenPose's defaults (``spec/openpose_runtime.md`` 2.3; maximize_positives=false)."""

    nms_threshold: float = 0.05
    connect_inter_threshold: float = 0.05
    connect_inter_min_above_threshold: float = 0.95
    connect_min_subset_cnt: int = 3
    connect_min_subset_score: float = 0.4
    max_peaks: int = 127


@dataclass(frozen=True)
class PoseModel:
    name: str                              # registry name, e.g. "BODY_25"
    openpose_name: str                     # --model_pose string, e.g. "BODY_25", "COCO", "MPI_4_layers"
    parts: Tuple[str, ...]                 # part names in model order (no "Background")
    paf_pairs: Tuple[Tuple[int, int], ...]  # training / net_output PAF order, vector A -> B
    runtime_pairs: Tuple[Tuple[int, int], ...]  # OpenPose POSE_BODY_PART_PAIRS order (assembly order)
    has_background: bool
    flip_pairs: Tuple[Tuple[int, int], ...]     # left/right swaps for flip augmentation
    sigma_ratios: Tuple[float, ...]             # per part, multiplies the dataset sigma
    thresholds: PostprocessThresholds = field(default_factory=PostprocessThresholds)
    to_coco17: Optional[Tuple[int, ...]] = None  # model part index for each COCO-17 keypoint (-1: none)
    to_coco_foot: Optional[Tuple[int, ...]] = None  # model part index for the 6 COCO-foot points
    stride: int = 8
    # OpenPose models/ layout (spec/openpose_runtime.md 1.2)
    model_folder: str = ""                 # e.g. "pose/body_25"
    deploy_name: str = "pose_deploy.prototxt"
    caffemodel_name: str = "pose_iter_XXXXXX.caffemodel"
    variants: Tuple[TrainingVariant, ...] = ()
    upstream: bool = True                  # False for YAML skeletons

    # Derived sizes: computed, never stored twice.
    @property
    def num_parts(self) -> int:
        return len(self.parts)

    @property
    def num_pafs(self) -> int:
        return len(self.paf_pairs)

    @property
    def num_channels(self) -> int:
        """Channels of net_output (= C, half of the label top)."""
        return self.num_parts + int(self.has_background) + 2 * self.num_pafs

    @property
    def label_channels(self) -> int:
        return 2 * self.num_channels

    @property
    def map_index(self) -> Tuple[Tuple[int, int], ...]:
        """OpenPose's POSE_MAP_INDEX: for each runtime pair, its (x, y) offsets in the PAF block."""
        index = {pair: i for i, pair in enumerate(self.paf_pairs)}
        return tuple((2 * index[p], 2 * index[p] + 1) for p in self.runtime_pairs)


_REGISTRY: Dict[str, PoseModel] = {}


def register(model: PoseModel) -> PoseModel:
    _REGISTRY[model.name] = model
    return model


def list_models():
    return list(_REGISTRY)


def get_model(name: str) -> PoseModel:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for model in _REGISTRY.values():
        if model.openpose_name == name:
            return model
    raise UnknownModelError(
        f"unknown model '{name}'; known models: {', '.join(list_models())}")


def get_training_variant(op_model: str):
    for model in _REGISTRY.values():
        for variant in model.variants:
            if variant.op_model == op_model:
                return model, variant
    known = sorted(v.op_model for m in _REGISTRY.values() for v in m.variants)
    raise UnknownModelError(
        f"unknown training model string '{op_model}'; known: {', '.join(known)}")
