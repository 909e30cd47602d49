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
* ``DatasetLayout``     one LMDB / COCO-JSON keypoint layout (``coco``, ``coco_foot``, ``wholebody``,
                        ``mpii``, ``posetrack``, ``hand21``, ``hand42``, ``face70``, ``dome135``, ...):
                        keypoint names, the dataset string of metadata row 0, fork category, mask
                        channel yes/no, the COCO-JSON fields the keypoints are read from.
* ``get_model(name)``   PoseModel by registry name or OpenPose ``--model_pose`` string
                        (``COCO`` -> COCO_18); unknown names raise ``UnknownModelError`` listing
                        the known ones.
* ``list_models()``     names in a stable order.
* ``get_training_variant(op_model)`` -> ``(PoseModel, TrainingVariant)`` for a fork model string.
* ``list_training_variants()`` -> every fork model string, table order.
* ``get_dataset_layout(key)`` / ``list_dataset_layouts()`` / ``register_dataset_layout(layout)``.
* ``load_skeleton_yaml(path, register_model=False)`` -> PoseModel, validated (see
  ``SkeletonError``; lives in ``generator/skeleton.py``, re-exported here). With
  ``register_model=True`` the model is registered too, so ``get_model`` / ``get_training_variant``
  find it (the engine needs that to read a training prototxt whose model string is the YAML's).
* ``register(model)``   add a model (used by YAML loading and tests).

Fields added to the original interface:

* ``PoseModel.openpose_name`` is ``""`` for models OpenPose's ``--model_pose`` cannot select
  (BODY_95, BODY_59, BODY_65, COCO_19b/COCO_19_V2 layouts, HAND_21, FACE_70, YAML skeletons).
* ``PoseModel.description``: one line for ``openpose-train models``.
* ``PoseModel.variant(op_model)``: the TrainingVariant of this model with that fork string.
* ``TrainingVariant.global_missing_mask`` (a property): whether global masking of unlabeled
  parts runs (``docs/labels.md`` §Masks): ``P > P_lmdb`` or ``force_global_mask``. The fork
  forces it for MPII_59; our own extensions (``upstream=False``, YAML skeletons by default) force
  it too, because e.g. COCO-WholeBody (133 points) trained into BODY_25B (25 parts) has
  ``P < P_lmdb`` yet labels neither UpperNeck nor HeadTop.
* The other label / augmentation rules the fork keys on a model string are TrainingVariant fields
  (``missing_threshold``, ``mask_feet_pairs``, ``force_minus1_mask``, ``roi_mask_codes``,
  ``mask_is_background``, ``label_rules_implemented``); the person filter's part groups are
  ``PoseModel.person_filter``. Nothing outside this module branches on a model name.
* ``TrainingVariant.num_parts`` (= P), ``mapped_parts``.
* ``PoseModel.to_coco_face`` / ``to_coco_hand21`` / ``to_coco_hand42``: the other COCO-JSON
  reorders of OpenPose's ``--write_coco_json`` (BODY_135 only; ``docs/postprocessing.md`` §Output).
* ``DatasetLayout`` registry: ``get_dataset_layout``, ``list_dataset_layouts``,
  ``register_dataset_layout``.

Facts and their upstream sources: the training fork's ``poseModel.cpp`` (keypoint orders,
LMDB->model mappings, CHANNELS_TO_MASK, training PAF pairs, flip swaps, sigma ratios, model
strings), OpenPose's ``poseParameters.cpp`` and model folders (names, runtime pairs /
POSE_MAP_INDEX, thresholds, folders and file names, ``docs/formats.md`` §Models folder), its
``CocoJsonSaver`` (COCO-17 / foot reorders) and openpose_train's LMDB writer (dataset strings).
How the layers use them: ``docs/labels.md``, ``docs/postprocessing.md``.
Documented choices (upstream has no table for these):

* MPI_15 / MPI_15_4 have no training variant: the fork has no MPI model string.
* MPI flip pairs are the R/L part-name pairs (2/5 3/6 4/7 8/11 9/12 10/13).
* HAND_21 / FACE_70 (runtime CPM nets) get our own identity variants ``HAND_21`` <- hand21 and
  ``FACE_70`` <- face70 (``upstream=False``); HAND_21 has no flip pairs (OpenPose feeds the hand net
  right hands only, mirroring left ones), FACE_70 uses the face part of the 95/135 swap list.
* Our ``wholebody`` variants (COCO-WholeBody 133: body 17, foot 6, face 68, left hand 21, right
  hand 21): BODY_135 ``COCO_135_133`` (face 68 -> 65..132, pupils averaged from the eye contours
  like FACE_135_70, hands 1..20 -> 25..44 / 45..64), BODY_25B ``COCO_25B_133`` and BODY_25
  ``COCO_25_133`` (body + foot). Wrists come from the body annotation (points 9, 10), not from the
  hands' root point (91, 112) as in HAND_135_42: the root is the same anatomical point, but a hand
  whose ``*_valid`` flag is false is written as "not in this dataset" (v=4), which would mask a
  labeled body wrist (most COCO-WholeBody people have no valid hand).
* BODY_59 / BODY_65 / BODY_19b / BODY_19_V2 (no OpenPose runtime) reuse the 19/25-part COCO-17
  reorder of ``CocoJsonSaver``, since their body parts have the BODY_25 order.
* CHANNELS_TO_MASK's missing FACE_135_70 initialiser is not copied: FACE_135_70 and DOME_135 get
  the intended lists (the bug changes no label; ``docs/labels.md`` §Per-model rules).
* Dataset strings upstream does not name (``posetrack``, ``COCO_WholeBody``, ``dome19``,
  ``dome59``) are ours; every reader takes them from ``DatasetLayout.lmdb_dataset``.

Channel layout conventions (``docs/labels.md`` §Channel order, ``docs/postprocessing.md`` §Inputs):

* network output (``net_output``): heatmaps of ``num_parts`` parts in part order, then the
  background channel iff ``has_background``, then PAFs in *training* pair order
  (pair i -> channels ``2i`` (x), ``2i+1`` (y) within the PAF block).
* label top: ``2 * num_channels`` = weights then targets; within each half PAFs first
  (``2 * num_pafs``), then heatmaps, then background.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

from openpose_train.common.errors import OpenPoseTrainError


class UnknownModelError(OpenPoseTrainError, KeyError):
    """A model name that is in no table. The message lists the known names."""


class SkeletonError(OpenPoseTrainError, ValueError):
    """A user skeleton (YAML) that cannot work: the message names the file and the problem."""


#: fork categories whose LMDB keypoints are stored 1-based (the MATLAB writer; docs/formats.md §Metadata rows)
ONE_BASED_CATEGORIES = frozenset({"COCO"})
#: fork categories whose records' mask_miss (channel 4) is read (docs/labels.md §Decoding) ...
MASK_MISS_CATEGORIES = frozenset({"COCO", "CAR", "MPII", "PT", "HAND"})
#: ... and the record dataset strings whose mask_miss is read whatever the category
MASK_MISS_DATASET_STRINGS = frozenset({"face70_mask_out"})
#: fork categories whose records hold only metadata, the image being a file under media_directory
IMAGE_FILE_CATEGORIES = frozenset({"DOME"})
#: the TrainingVariant fields that hold the fork's per-model-string label rules (docs/labels.md §Per-model rules)
LABEL_RULE_FIELDS = ("force_global_mask", "missing_threshold", "mask_feet_pairs", "force_minus1_mask",
                     "roi_mask_codes", "mask_is_background", "label_rules_implemented")
#: above this many parts the fork runs the "-1" person-box masking for every model string (docs/labels.md §Masks)
MINUS1_MASKING_MIN_PARTS = 70


@dataclass(frozen=True)
class TrainingVariant:
    """One LMDB layout trained into a model (a row of the fork's ``poseModel.cpp`` tables).

    The label and augmentation rules the fork keys on a model string are fields here, filled in
    the tables below (docs/labels.md §Per-model rules); the layers read the fields, never the string.
    """

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
    # step 5 (global masking of missing parts) also when P <= P_lmdb (the fork: MPII_59; all of
    # our own extensions, see the module docstring)
    force_global_mask: bool = False
    # step 5: a main-person part with v >= this is "missing" (getEmptyChannels; the fork: 2 for
    # MPII_59 / MPII_65_42, 4 otherwise)
    missing_threshold: int = 4
    # step 5 maskFeet: (knee, ankle) pairs whose foot box gets background weight 0 (the fork:
    # COCO_23_17, COCO_25_17, COCO_25_17E)
    mask_feet_pairs: Tuple[Tuple[int, int], ...] = ()
    # step 8 ("-1" person boxes) also with <= MINUS1_MASKING_MIN_PARTS parts (the fork: COCO_25B_23/17)
    force_minus1_mask: bool = False
    # step 6: people boxes are masked for parts with these visibility codes (the fork: 2 too for CAR_22)
    roi_mask_codes: Tuple[int, ...] = (3, 4)
    # augmentation: mask_miss is replaced by the padding mask (the fork: MPII_65_42, CAR_12)
    mask_is_background: bool = False
    # False: the fork has extra label rules for this string that we do not implement (hand masks,
    # wrist/hand overrides, CAR_12's weight copy); the OPData layer refuses it
    label_rules_implemented: bool = True

    @property
    def num_parts(self) -> int:
        """P: parts of the model this variant trains."""
        return len(self.sources)

    @property
    def mapped_parts(self) -> Tuple[int, ...]:
        """Model parts that the dataset labels (non-empty sources)."""
        return tuple(i for i, s in enumerate(self.sources) if s)

    @property
    def global_missing_mask(self) -> bool:
        """Step 5 runs: ``P > P_lmdb`` or ``force_global_mask``."""
        return self.force_global_mask or self.num_parts > self.num_lmdb_parts

    @property
    def minus1_masking(self) -> bool:
        """Step 8 runs: ``force_minus1_mask`` or more than MINUS1_MASKING_MIN_PARTS parts."""
        return self.force_minus1_mask or self.num_parts > MINUS1_MASKING_MIN_PARTS

    @property
    def reads_mask_miss(self) -> bool:
        """The data layer reads the records' mask_miss (else every pixel trains), unless the record's
        dataset string is one of MASK_MISS_DATASET_STRINGS."""
        return self.category in MASK_MISS_CATEGORIES

    @property
    def image_from_file(self) -> bool:
        """The record holds metadata only; the image is ``media_directory + image_path``."""
        return self.category in IMAGE_FILE_CATEGORIES

    @property
    def lmdb_one_based(self) -> bool:
        """The LMDB keypoints and objpos of this category are 1-based (the layer subtracts 1)."""
        return self.category in ONE_BASED_CATEGORIES


@dataclass(frozen=True)
class CenterSwapParts:
    """The parts the fork's swapCenterPoint re-centres a crop on when ``center_swap_prob`` > 0 and the
    category is none of HAND, FACE, DOME (docs/labels.md §Centre swap). The fork writes BODY_25's
    indexes (neck 1, wrists 4 and 7, knees 10 and 13) and uses them for every model with 23 or 25
    parts: on BODY_25B they are LEye, REar and LElbow, RWrist and LKnee; on BODY_23 RShoulder,
    LShoulder and RHip, LHip and REye. Kept, to train as the fork does."""

    neck: int = 1
    wrists: Tuple[int, int] = (4, 7)
    knees: Tuple[int, int] = (10, 13)


#: the fork's centre-swap parts (the BODY_25 indexes), for the 23- and 25-part models
FORK_CENTER_SWAP = CenterSwapParts()
#: the parts the HAND and DOME centre swap picks (BODY_135's wrists) and the FACE / DOME one (the
#: nose): index literals in the fork too, whatever the model (docs/labels.md §Centre swap)
CENTER_SWAP_HAND_PARTS = (9, 10)
CENTER_SWAP_FACE_PART = 0


@dataclass(frozen=True)
class PersonFilter:
    """Part groups of OpenPose's person filter (docs/postprocessing.md §Person filter)."""

    # parts that do not count unless maximising positives; a person left with <= 4 is dropped
    foot_parts: Tuple[int, ...] = ()
    # parts that count as one keypoint together; a person that is then one keypoint is dropped
    face_parts: Tuple[int, ...] = ()
    # groups that count as at most one keypoint each
    hand_groups: Tuple[Tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class PostprocessThresholds:
    """OpenPose's defaults (``docs/postprocessing.md`` §Thresholds; maximize_positives=false)."""

    nms_threshold: float = 0.05
    connect_inter_threshold: float = 0.05
    connect_inter_min_above_threshold: float = 0.95
    connect_min_subset_cnt: int = 3
    connect_min_subset_score: float = 0.4
    max_peaks: int = 127


@dataclass(frozen=True)
class DatasetLayout:
    """One keypoint layout of an LMDB / COCO-style JSON (one entry per dataset key)."""

    key: str                           # "coco", "coco_foot", "wholebody", "mpii", ...
    keypoints: Tuple[str, ...]         # names in LMDB order (P_lmdb = len)
    lmdb_dataset: str                  # dataset string written in metadata row 0 ("COCO", "MPII", ...)
    category: str                      # fork PoseCategory the LMDB is read with
    has_mask: bool                     # datum channel 4 (mask_miss) present
    json_fields: Tuple[str, ...] = ("keypoints",)   # COCO-JSON fields concatenated in this order
    # per json field, the annotation flag that says the group is labeled (COCO-WholeBody's
    # "face_valid", ...; "" = always labeled). A group whose flag is false is "not in this
    # dataset" (COCO v=3 -> LMDB 4), not "unlabeled" (v=0 -> 2, which trains zeros).
    validity_fields: Tuple[str, ...] = ()
    # the same points as COCO-WholeBody's JSON spells them, so that its annotations stand in for
    # the CMU foot / hand / face files: (field, validity flag, count) per group; field "" = points
    # COCO-WholeBody does not have (written "not in this dataset", LMDB 4). () = none.
    wholebody_fields: Tuple[Tuple[str, str, int], ...] = ()
    description: str = ""
    # OKS evaluation (docs/postprocessing.md §Metrics): per keypoint sigma in layout order, and the named
    # keypoint groups scored separately as (group, first keypoint, count): "body", "foot", ...
    oks_sigmas: Tuple[float, ...] = ()
    keypoint_groups: Tuple[Tuple[str, int, int], ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def one_based(self) -> bool:
        """Keypoints and objpos are stored 1-based in this layout's LMDB records."""
        return self.category in ONE_BASED_CATEGORIES


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
    # --write_coco_json face / hand21 / hand42 variants (BODY_135 only, docs/postprocessing.md §Output);
    # hand42 = [LWrist, left hand 20, RWrist, right hand 20] = COCO-WholeBody's two hands
    to_coco_face: Optional[Tuple[int, ...]] = None
    to_coco_hand21: Optional[Tuple[int, ...]] = None
    to_coco_hand42: Optional[Tuple[int, ...]] = None
    stride: int = 8
    # OpenPose models/ layout (docs/formats.md §Models folder)
    model_folder: str = ""                 # e.g. "pose/body_25"
    deploy_name: str = "pose_deploy.prototxt"
    caffemodel_name: str = "pose_iter_XXXXXX.caffemodel"
    variants: Tuple[TrainingVariant, ...] = ()
    upstream: bool = True                  # False for YAML skeletons
    description: str = ""
    # OpenPose's CPU-only build has a body connector for these models only (docs/postprocessing.md §CPU build);
    # the others need its CUDA build.
    openpose_cpu_connector: bool = False
    # The CPU connector's model-specific rules (docs/postprocessing.md §CPU build): runtime pair
    # indices that only fill a missing end (the ear-shoulder pairs), and whether a pair with one
    # empty side turns every peak of the other side into a person (MPI) or only the peaks not
    # yet in a person (the others).
    cpu_connector_fill_only_pairs: Tuple[int, ...] = ()
    cpu_connector_lone_peaks_unchecked: bool = False
    person_filter: PersonFilter = field(default_factory=PersonFilter)
    # the fork's centre-swap parts, None where the fork refuses center_swap_prob > 0 (its
    # swapCenterPoint knows 23- and 25-part models only; docs/labels.md §Centre swap)
    center_swap: Optional[CenterSwapParts] = None
    # "hand" / "face": OpenPose runs this net on square crops around a hand / face
    # (docs/postprocessing.md §Hand and face), not on the whole image
    crop_net: str = ""
    # YAML skeletons: the digest of the file's data (generator/skeleton.py), recorded in the training prototxt
    # so that training notices a skeleton edited since (docs/refusals.md §YAML skeletons); "" for built-ins
    skeleton_digest: str = ""

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

    def coco_group_reorder(self, group: str) -> Optional[Tuple[int, ...]]:
        """Model part index per keypoint of a COCO(-WholeBody) keypoint group (``body``, ``foot``,
        ``face``, ``lefthand``, ``righthand``; -1: none), or None when the model has no such
        reorder. The hands come from ``to_coco_hand42`` = [left 21, right 21]."""
        hand42 = self.to_coco_hand42
        table = {"body": self.to_coco17, "foot": self.to_coco_foot, "face": self.to_coco_face,
                 "lefthand": None if hand42 is None else hand42[:21],
                 "righthand": None if hand42 is None else hand42[21:]}
        if group not in table:
            raise UnknownModelError(f"unknown keypoint group '{group}'; known: {', '.join(table)}")
        return table[group]

    def variant(self, op_model: str) -> TrainingVariant:
        """This model's training variant named by the fork model string ``op_model``."""
        for v in self.variants:
            if v.op_model == op_model:
                return v
        raise UnknownModelError(
            f"model {self.name} has no training variant '{op_model}'; "
            f"known: {', '.join(v.op_model for v in self.variants) or 'none'}")


_REGISTRY: Dict[str, PoseModel] = {}
_DATASETS: Dict[str, DatasetLayout] = {}


def register(model: PoseModel) -> PoseModel:
    """Add (or replace) a model under ``model.name``; returns it."""
    _REGISTRY[model.name] = model
    return model


def list_models():
    """Registry names in registration order (upstream runtime models first)."""
    return list(_REGISTRY)


def get_model(name: str) -> PoseModel:
    """PoseModel by registry name or ``--model_pose`` string; UnknownModelError otherwise."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for model in _REGISTRY.values():
        if model.openpose_name and model.openpose_name == name:
            return model
    raise UnknownModelError(
        f"unknown model '{name}'; known models: {', '.join(list_models())}")


def list_training_variants():
    """Every registered fork model string, in table order."""
    return [v.op_model for m in _REGISTRY.values() for v in m.variants]


def get_training_variant(op_model: str):
    """``(PoseModel, TrainingVariant)`` for a fork model string such as ``COCO_25B_17``."""
    for model in _REGISTRY.values():
        for variant in model.variants:
            if variant.op_model == op_model:
                return model, variant
    known = sorted(list_training_variants())
    raise UnknownModelError(
        f"unknown training model string '{op_model}'; known: {', '.join(known)}")


def get_dataset_layout(key: str) -> DatasetLayout:
    """DatasetLayout by dataset key (``coco``, ``wholebody``, ...); UnknownModelError otherwise."""
    if key in _DATASETS:
        return _DATASETS[key]
    raise UnknownModelError(
        f"unknown dataset layout '{key}'; known: {', '.join(_DATASETS)}")


def list_dataset_layouts():
    """Dataset keys in registration order."""
    return list(_DATASETS)


def register_dataset_layout(layout: DatasetLayout) -> DatasetLayout:
    """Add (or replace) a dataset layout under ``layout.key`` (YAML skeletons may define some)."""
    _DATASETS[layout.key] = layout
    return layout


def load_skeleton_yaml(path, register_model: bool = False) -> PoseModel:
    """Load and validate a YAML skeleton (see ``generator/skeleton.py``)."""
    from openpose_train.generator.skeleton import load_skeleton_yaml as _load
    model = _load(path)
    if register_model:
        register(model)
    return model


# --------------------------------------------------------------------------------------------
# Table helpers: they only parse a compact notation ("Neck-MidHip", "LEye/REye") or name parts.

Links = Tuple[Tuple[str, str], ...]


def _links(text: str) -> Links:
    """``"Neck-MidHip MidHip-RHip"`` -> (("Neck", "MidHip"), ("MidHip", "RHip")) (PAF pairs A -> B)."""
    return tuple(tuple(p.split("-")) for p in text.split())


def _swaps(text: str) -> Links:
    """``"LEye/REye LEar/REar"`` -> (("LEye", "REye"), ("LEar", "REar")) (left/right flip swaps)."""
    return tuple(tuple(p.split("/")) for p in text.split())


def _hand_links(wrist: str, side: str) -> Links:
    """The 20 PAFs of one hand: per finger wrist -> its first joint, then 3 links along the finger
    (``side`` prefixes HAND_PARTS: "L" or "R")."""
    out = []
    for finger in range(5):
        joints = [side + HAND_PARTS[4 * finger + k] for k in range(4)]
        out += [(wrist, joints[0])] + list(zip(joints, joints[1:]))
    return tuple(out)


def part_indexes(model_name: str, parts: Sequence[str], links) -> Tuple[Tuple[int, int], ...]:
    """Name pairs -> index pairs of ``parts`` (the fork-ordered view the layers read). A name that is
    not a part of the model, or a pair of one part with itself, is a :class:`SkeletonError`."""
    index = {name: i for i, name in enumerate(parts)}
    out = []
    for a, b in links:
        missing = [n for n in (a, b) if n not in index]
        if missing or a == b:
            raise SkeletonError(f"{model_name}: pair {a}-{b}: " + (
                f"no part named {', '.join(missing)}" if missing else "a part paired with itself"))
        out.append((index[a], index[b]))
    return tuple(out)


def part_names(parts: Sequence[str], pairs) -> Links:
    """Index pairs -> name pairs (the inverse of :func:`part_indexes`)."""
    return tuple((parts[a], parts[b]) for a, b in pairs)


Source = Union[int, Sequence[int]]


def _sources(num_parts: int, mapping: Mapping[int, Source]) -> Tuple[Tuple[int, ...], ...]:
    """Per model part the LMDB source indexes; ``mapping`` holds model part -> j or (j, k, ...)."""
    return tuple(
        () if i not in mapping else
        ((mapping[i],) if isinstance(mapping[i], int) else tuple(mapping[i]))
        for i in range(num_parts))


def _range_map(model_first: int, lmdb_first: int, count: int) -> Dict[int, int]:
    return {model_first + k: lmdb_first + k for k in range(count)}


def _variant(op_model: str, dataset: str, num_parts: int, mapping: Mapping[int, Source], *,
             category: Optional[str] = None, mask_only: Optional[Sequence[int]] = None,
             minus1: Sequence[int] = (), upstream: bool = True, force_global_mask: bool = False,
             **rules) -> TrainingVariant:
    """One row of the fork tables. CHANNELS_TO_MASK equals the LMDB table (empty where a part has
    no source, ``{-1}`` for ``minus1`` parts) unless ``mask_only`` lists its only non-empty entries;
    ``rules``: the TrainingVariant rule fields of this model string."""
    layout = _DATASETS[dataset]
    sources = _sources(num_parts, mapping)
    if mask_only is None:
        empty = {i for i, s in enumerate(sources) if not s}
    else:
        empty = set(range(num_parts)) - set(mask_only)
    empty -= set(minus1)
    return TrainingVariant(
        op_model=op_model, dataset=dataset, category=category or layout.category,
        num_lmdb_parts=layout.num_keypoints, sources=sources,
        empty_mask_parts=tuple(sorted(empty)), minus1_parts=tuple(sorted(minus1)),
        upstream=upstream, force_global_mask=force_global_mask or not upstream, **rules)


def _model(name, parts, paf_links, flips, *, openpose_name="", runtime_links=None,
           has_background=True, sigma_ratios=None, **kwargs) -> PoseModel:
    """Register one model; its PAF pairs, runtime pairs and flip swaps are given by part name and
    stored as part indexes. Runtime pairs default to the training order (sequential map index)."""
    paf_pairs = part_indexes(name, parts, paf_links)
    return register(PoseModel(
        name=name, openpose_name=openpose_name, parts=tuple(parts), paf_pairs=paf_pairs,
        runtime_pairs=paf_pairs if runtime_links is None else part_indexes(name, parts, runtime_links),
        has_background=has_background, flip_pairs=part_indexes(name, parts, flips),
        sigma_ratios=tuple(sigma_ratios or (1.0,) * len(parts)), **kwargs))


def _dataset(key, keypoints, lmdb_dataset, category, has_mask, **kwargs) -> DatasetLayout:
    return register_dataset_layout(DatasetLayout(
        key=key, keypoints=tuple(keypoints), lmdb_dataset=lmdb_dataset, category=category,
        has_mask=has_mask, **kwargs))


# --------------------------------------------------------------------------------------------
# Part names (OpenPose's poseParameters.cpp, the fork's poseModel.cpp)

BODY_25_PARTS = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")
BODY_19_PARTS = BODY_25_PARTS[:19]
COCO_18_PARTS = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip",
    "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar")
MPI_15_PARTS = (
    "Head", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip",
    "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "Chest")
FOOT_PARTS = ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")
BODY_25B_PARTS = (
    "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
    "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle", "Neck", "HeadTop"
) + FOOT_PARTS
BODY_23_PARTS = (
    "Nose", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar") + FOOT_PARTS
HAND_PARTS = tuple(
    f"{finger}{joint}"
    for finger in ("Thumb", "Index", "Middle", "Ring", "Pinky")
    for joint in (("1CMC", "2Knuckles", "3IP", "4FingerTip") if finger == "Thumb"
                  else ("1Knuckles", "2PIP", "3DIP", "4FingerTip")))
FACE_PARTS = (
    tuple(f"FaceContour{i}" for i in range(17)) + tuple(f"REyeBrow{i}" for i in range(5))
    + tuple(f"LEyeBrow{i}" for i in range(4, -1, -1)) + tuple(f"NoseUpper{i}" for i in range(4))
    + tuple(f"NoseLower{i}" for i in range(5)) + tuple(f"REye{i}" for i in range(6))
    + tuple(f"LEye{i}" for i in range(6)) + tuple(f"OMouth{i}" for i in range(12))
    + tuple(f"IMouth{i}" for i in range(8)) + ("RPupil", "LPupil"))
BODY_135_PARTS = (
    BODY_25B_PARTS[:17] + ("UpperNeck", "HeadTop") + FOOT_PARTS
    + tuple("L" + p for p in HAND_PARTS) + tuple("R" + p for p in HAND_PARTS) + FACE_PARTS)
BODY_95_PARTS = BODY_25B_PARTS + FACE_PARTS
BODY_59_PARTS = (BODY_19_PARTS[:8] + ("LowerAbs",) + BODY_19_PARTS[9:]
                 + tuple("L" + p for p in HAND_PARTS) + tuple("R" + p for p in HAND_PARTS))
BODY_65_PARTS = BODY_25_PARTS + tuple("L" + p for p in HAND_PARTS) + tuple("R" + p for p in HAND_PARTS)
CAR_12_PARTS = ("FRWheel", "FLWheel", "BRWheel", "BLWheel", "FRLight", "FLLight", "BRLight",
                "BLLight", "FRTop", "FLTop", "BRTop", "BLTop")
CAR_22_PARTS = ("FLWheel", "BLWheel", "FRWheel", "BRWheel", "FRFogLight", "FLFogLight", "FRLight",
                "FLLight", "Grilles", "FBumper", "LMirror", "RMirror", "FRTop", "FLTop", "BLTop",
                "BRTop", "BLLight", "BRLight", "Trunk", "BBumper", "BLCorner", "BRCorner")

# --------------------------------------------------------------------------------------------
# Dataset layouts (LMDB keypoint orders; docs/formats.md §Datum, §Metadata rows)

COCO_17_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle")
COCO_FOOT_KEYPOINTS = ("left_big_toe", "left_small_toe", "left_heel",
                       "right_big_toe", "right_small_toe", "right_heel")
HAND_21_KEYPOINTS = ("hand_root",) + tuple(
    f"{finger}{k}" for finger in ("thumb", "forefinger", "middle_finger", "ring_finger",
                                  "pinky_finger") for k in range(1, 5))
FACE_68_KEYPOINTS = tuple(f"face_{i}" for i in range(68))

# OKS sigmas per keypoint (COCO's 17 as in pycocotools; foot, face and hands as in the
# COCO-WholeBody evaluation, docs/postprocessing.md) and the groups scored separately
OKS_SIGMAS_BODY = (.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107,
                   .087, .087, .089, .089)
OKS_SIGMAS_FOOT = (.068, .066, .066, .092, .094, .094)
OKS_SIGMAS_FACE = (
    .042, .043, .044, .043, .040, .035, .031, .025, .020, .023, .029, .032, .037, .038, .043, .041,
    .045, .013, .012, .011, .011, .012, .012, .011, .011, .013, .015, .009, .007, .007, .007, .012,
    .009, .008, .016, .010, .017, .011, .009, .011, .009, .007, .013, .008, .011, .012, .010, .034,
    .008, .008, .009, .008, .008, .007, .010, .008, .009, .009, .009, .007, .007, .008, .011, .008,
    .008, .008, .010, .008)
OKS_SIGMAS_HAND = (.029, .022, .035, .037, .047, .026, .025, .024, .035, .018, .024, .022, .026,
                   .017, .021, .021, .032, .020, .019, .022, .031)
GROUPS_WHOLEBODY = (("body", 0, 17), ("foot", 17, 6), ("face", 23, 68), ("lefthand", 91, 21),
                    ("righthand", 112, 21))

_dataset("coco", COCO_17_KEYPOINTS, "COCO", "COCO", True,
         oks_sigmas=OKS_SIGMAS_BODY, keypoint_groups=GROUPS_WHOLEBODY[:1],
         description="COCO 2017 person keypoints (17)")
_dataset("coco_foot", COCO_17_KEYPOINTS + COCO_FOOT_KEYPOINTS, "COCO", "COCO", True,
         wholebody_fields=(("keypoints", "", 17), ("foot_kpts", "foot_valid", 6)),
         oks_sigmas=OKS_SIGMAS_BODY + OKS_SIGMAS_FOOT, keypoint_groups=GROUPS_WHOLEBODY[:2],
         description="COCO 2017 + CMU foot (23 in 'keypoints')")
_dataset("wholebody",
         COCO_17_KEYPOINTS + COCO_FOOT_KEYPOINTS + FACE_68_KEYPOINTS
         + tuple("left_" + k for k in HAND_21_KEYPOINTS)
         + tuple("right_" + k for k in HAND_21_KEYPOINTS),
         "COCO_WholeBody", "COCO", True,
         json_fields=("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts"),
         validity_fields=("", "foot_valid", "face_valid", "lefthand_valid", "righthand_valid"),
         oks_sigmas=OKS_SIGMAS_BODY + OKS_SIGMAS_FOOT + OKS_SIGMAS_FACE + OKS_SIGMAS_HAND * 2,
         keypoint_groups=GROUPS_WHOLEBODY,
         description="COCO-WholeBody (133 = body 17, foot 6, face 68, left hand 21, right hand 21)")
_dataset("mpii",
         ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
          "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
          "l_wrist"),
         "MPII", "MPII", True, json_fields=("joints",),
         description="MPII human pose (16); mask = labeled people's boxes")
_dataset("posetrack",
         ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
          "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
          "left_wrist", "head_bottom", "nose", "head_top"),
         "posetrack", "PT", True, description="PoseTrack (15)")
_dataset("hand21", HAND_21_KEYPOINTS, "hand21_dome", "HAND", True,
         wholebody_fields=(("righthand_kpts", "righthand_valid", 21),),
         json_fields=("keypoints",), description="one hand (21), treated as a right hand")
_dataset("hand42", tuple("left_" + k for k in HAND_21_KEYPOINTS)
         + tuple("right_" + k for k in HAND_21_KEYPOINTS), "hand42_mpii", "HAND", True,
         wholebody_fields=(("lefthand_kpts", "lefthand_valid", 21), ("righthand_kpts", "righthand_valid", 21)),
         description="both hands (42 = left 21 + right 21)")
_dataset("face70", FACE_68_KEYPOINTS + ("right_pupil", "left_pupil"), "face70_mask_out", "FACE",
         True, wholebody_fields=(("face_kpts", "face_valid", 68), ("", "", 2)),
         description="face 70 (68 + pupils); face70_frgc / face70_multipie have no mask")
_dataset("dome135", tuple(p.lower() for p in BODY_135_PARTS), "dome135", "DOME", False,
         description="CMU Panoptic dome, BODY_135 order; metadata-only datum, image from disk")
_dataset("dome19", tuple(p.lower() for p in BODY_19_PARTS), "dome19", "DOME", False,
         description="CMU Panoptic dome, BODY_19 order")
_dataset("dome59", tuple(p.lower() for p in BODY_59_PARTS), "dome59", "DOME", False,
         description="CMU Panoptic dome, BODY_59 order")
_dataset("mpii_hand59", tuple(p.lower() for p in BODY_59_PARTS), "MPII_hand", "HAND", False,
         description="MPII hands in the BODY_59 order (body 0,1,8,15-18 unlabeled)")
_dataset("car14", tuple(p.lower() for p in CAR_12_PARTS[:8]) + ("car14_8",)
         + tuple(p.lower() for p in CAR_12_PARTS[8:]) + ("car14_13",), "car14", "CAR", False,
         description="car v1 (14; points 8 and 13 unused by CAR_12, names unknown)")
_dataset("car22", tuple(p.lower() for p in CAR_22_PARTS), "car22", "CAR", True,
         description="car 22")

# --------------------------------------------------------------------------------------------
# PAF pairs in training (channel) order (the fork's poseModel.cpp), by part name: each model's
# names are turned into its part indexes when it is registered (_model), as mmpose's dataset meta
# does; PoseModel.paf_pairs / runtime_pairs / flip_pairs are that derived index view.

PAFS_18 = _links(
    "Neck-RHip RHip-RKnee RKnee-RAnkle Neck-LHip LHip-LKnee LKnee-LAnkle Neck-RShoulder RShoulder-RElbow "
    "RElbow-RWrist RShoulder-REar Neck-LShoulder LShoulder-LElbow LElbow-LWrist LShoulder-LEar Neck-Nose "
    "Nose-REye Nose-LEye REye-REar LEye-LEar")
PAFS_19 = _links(
    "Neck-MidHip RHip-RKnee RKnee-RAnkle MidHip-RHip MidHip-LHip LHip-LKnee LKnee-LAnkle Neck-RShoulder "
    "RShoulder-RElbow RElbow-RWrist RShoulder-REar Neck-LShoulder LShoulder-LElbow LElbow-LWrist "
    "LShoulder-LEar Neck-Nose Nose-REye Nose-LEye REye-REar LEye-LEar")
PAFS_25 = PAFS_19 + _links(
    "LAnkle-LBigToe LBigToe-LSmallToe LAnkle-LHeel RAnkle-RBigToe RBigToe-RSmallToe RAnkle-RHeel")
PAFS_25E = _links(
    "Neck-MidHip Neck-RShoulder RShoulder-RElbow RElbow-RWrist Neck-LShoulder LShoulder-LElbow "
    "LElbow-LWrist MidHip-RHip RHip-RKnee RKnee-RAnkle MidHip-LHip LHip-LKnee LKnee-LAnkle Neck-Nose "
    "Nose-REye REye-REar Nose-LEye LEye-LEar LAnkle-LBigToe LBigToe-LSmallToe LAnkle-LHeel RAnkle-RBigToe "
    "RBigToe-RSmallToe RAnkle-RHeel RShoulder-REar LShoulder-LEar RShoulder-RHip LShoulder-LHip "
    "RShoulder-RWrist LShoulder-LWrist RHip-RAnkle LHip-LAnkle RWrist-LWrist RAnkle-LAnkle RWrist-RHip "
    "LWrist-LHip RAnkle-RSmallToe LAnkle-LSmallToe")
PAFS_19E = PAFS_25E[:18] + _links(
    "RShoulder-REar LShoulder-LEar RShoulder-RHip LShoulder-LHip RShoulder-RWrist LShoulder-LWrist "
    "RHip-RAnkle LHip-LAnkle RWrist-LWrist RAnkle-LAnkle RWrist-RHip LWrist-LHip")
PAFS_19B = PAFS_19 + _links("RShoulder-RHip LShoulder-LHip")
# BODY_59 names part 8 LowerAbs where BODY_19 has MidHip; the links are BODY_19's
PAFS_59_BODY = tuple(tuple("LowerAbs" if name == "MidHip" else name for name in pair) for pair in PAFS_19)
PAFS_19_V2 = tuple(("Neck", part) for part in BODY_19_PARTS if part != "Neck")    # a star from the neck
PAFS_23 = _links(
    "Nose-RShoulder RShoulder-RElbow RElbow-RWrist Nose-LShoulder LShoulder-LElbow LElbow-LWrist "
    "RHip-RKnee RKnee-RAnkle LHip-LKnee LKnee-LAnkle Nose-REye REye-REar Nose-LEye LEye-LEar "
    "LAnkle-LBigToe LBigToe-LSmallToe LAnkle-LHeel RAnkle-RBigToe RBigToe-RSmallToe RAnkle-RHeel "
    "RShoulder-RHip LShoulder-LHip RShoulder-REar LShoulder-LEar REar-LEar RHip-LHip RShoulder-RWrist "
    "LShoulder-LWrist RHip-RAnkle LHip-LAnkle RWrist-LWrist RAnkle-LAnkle RWrist-RHip LWrist-LHip "
    "RAnkle-RSmallToe LAnkle-LSmallToe")
PAFS_59 = PAFS_59_BODY + _hand_links("LWrist", "L") + _hand_links("RWrist", "R")
PAFS_65 = PAFS_25 + _hand_links("LWrist", "L") + _hand_links("RWrist", "R")
PAFS_MPI = _links(
    "Head-Neck Neck-RShoulder RShoulder-RElbow RElbow-RWrist Neck-LShoulder LShoulder-LElbow "
    "LElbow-LWrist Neck-Chest Chest-RHip RHip-RKnee RKnee-RAnkle Chest-LHip LHip-LKnee LKnee-LAnkle")
PAFS_25B = _links(
    "Nose-LEye Nose-REye LEye-LEar REye-REar Nose-LShoulder Nose-RShoulder LShoulder-LElbow "
    "RShoulder-RElbow LElbow-LWrist RElbow-RWrist LShoulder-LHip RShoulder-RHip LHip-LKnee RHip-RKnee "
    "LKnee-LAnkle RKnee-RAnkle LAnkle-LBigToe LBigToe-LSmallToe LAnkle-LHeel RAnkle-RBigToe "
    "RBigToe-RSmallToe RAnkle-RHeel LShoulder-Neck LShoulder-HeadTop RShoulder-Neck RShoulder-HeadTop "
    "LEar-REar LEar-LShoulder REar-RShoulder LShoulder-LWrist RShoulder-RWrist LWrist-RWrist LWrist-LHip "
    "RWrist-RHip LHip-RHip LAnkle-RAnkle")
PAFS_135_BODY = _links(
    "Nose-LEye Nose-REye LEye-LEar REye-REar Nose-LShoulder Nose-RShoulder LShoulder-LElbow "
    "RShoulder-RElbow LElbow-LWrist RElbow-RWrist LShoulder-LHip RShoulder-RHip LHip-LKnee RHip-RKnee "
    "LKnee-LAnkle RKnee-RAnkle LAnkle-LBigToe LBigToe-LSmallToe LAnkle-LHeel RAnkle-RBigToe "
    "RBigToe-RSmallToe RAnkle-RHeel LShoulder-UpperNeck UpperNeck-HeadTop RShoulder-UpperNeck LEar-REar "
    "LEar-LShoulder REar-RShoulder LShoulder-LWrist RShoulder-RWrist LWrist-RWrist LWrist-LHip "
    "RWrist-RHip LHip-RHip LAnkle-RAnkle")
PAFS_FACE = _links(
    "FaceContour0-FaceContour1 FaceContour1-FaceContour2 FaceContour2-FaceContour3 "
    "FaceContour3-FaceContour4 FaceContour4-FaceContour5 FaceContour5-FaceContour6 "
    "FaceContour6-FaceContour7 FaceContour7-FaceContour8 FaceContour8-FaceContour9 "
    "FaceContour9-FaceContour10 FaceContour10-FaceContour11 FaceContour11-FaceContour12 "
    "FaceContour12-FaceContour13 FaceContour13-FaceContour14 FaceContour14-FaceContour15 "
    "FaceContour15-FaceContour16 FaceContour0-REyeBrow0 FaceContour16-LEyeBrow0 REyeBrow0-REyeBrow1 "
    "REyeBrow1-REyeBrow2 REyeBrow2-REyeBrow3 REyeBrow3-REyeBrow4 REyeBrow4-LEyeBrow4 LEyeBrow4-LEyeBrow3 "
    "LEyeBrow3-LEyeBrow2 LEyeBrow2-LEyeBrow1 LEyeBrow1-LEyeBrow0 REyeBrow4-NoseUpper0 "
    "LEyeBrow4-NoseUpper0 NoseUpper0-NoseUpper1 NoseUpper1-NoseUpper2 NoseUpper2-NoseUpper3 "
    "NoseUpper3-NoseLower2 NoseLower2-NoseLower1 NoseLower1-NoseLower0 NoseLower2-NoseLower3 "
    "NoseLower3-NoseLower4 NoseUpper0-REye3 NoseUpper0-LEye0 REye0-REye1 REye1-REye2 REye2-REye3 "
    "REye3-REye4 REye4-REye5 LEye0-LEye1 LEye1-LEye2 LEye2-LEye3 LEye3-LEye4 LEye4-LEye5 "
    "NoseLower2-OMouth3 OMouth0-OMouth1 OMouth1-OMouth2 OMouth2-OMouth3 OMouth3-OMouth4 OMouth4-OMouth5 "
    "OMouth5-OMouth6 OMouth6-OMouth7 OMouth7-OMouth8 OMouth8-OMouth9 OMouth9-OMouth10 OMouth10-OMouth11 "
    "OMouth0-IMouth0 OMouth6-IMouth4 IMouth0-IMouth1 IMouth1-IMouth2 IMouth2-IMouth3 IMouth3-IMouth4 "
    "IMouth4-IMouth5 IMouth5-IMouth6 IMouth6-IMouth7 REye0-RPupil REye3-RPupil LEye0-LPupil LEye3-LPupil")
# body -> face links: Nose -> nose tip, REye -> the right eye's inner corner, LEye -> the left eye's
_BODY_TO_FACE = _links("Nose-NoseUpper3 REye-REye3 LEye-LEye0")
PAFS_95 = PAFS_25B + _BODY_TO_FACE + PAFS_FACE
PAFS_135 = PAFS_135_BODY + _hand_links("LWrist", "L") + _hand_links("RWrist", "R") + _BODY_TO_FACE + PAFS_FACE
PAFS_CAR_12 = _links(
    "FRLight-FLLight FRLight-BRLight FRLight-FRWheel FRWheel-BRWheel FRLight-FRTop FRTop-BRTop "
    "FLLight-BLLight FLLight-FLWheel FLWheel-BLWheel FLLight-FLTop FLTop-BLTop")
PAFS_CAR_22 = _links(
    "FLWheel-BLWheel BLWheel-BRWheel BRWheel-FRWheel FRWheel-FLWheel FRLight-FLLight FLLight-BLLight "
    "BLLight-BRLight BRLight-FRLight FRTop-FLTop FLTop-BLTop BLTop-BRTop BRTop-FRTop FRLight-Grilles "
    "FLLight-Grilles FRLight-FBumper FLLight-FBumper FRLight-FRFogLight FLLight-FLFogLight FRTop-RMirror "
    "FLTop-LMirror BLLight-Trunk BRLight-Trunk BLLight-BBumper BRLight-BBumper FLWheel-FLLight "
    "BRWheel-BRLight FRLight-FRTop BLLight-BLTop FRLight-BRCorner FLLight-BLCorner BRWheel-BRCorner "
    "BLCorner-BLTop")

# Runtime POSE_BODY_PART_PAIRS where the map index is not sequential (OpenPose's POSE_MAP_INDEX; docs/postprocessing.md §Inputs)
RUNTIME_PAIRS_BODY_25 = _links(
    "Neck-MidHip Neck-RShoulder Neck-LShoulder RShoulder-RElbow RElbow-RWrist LShoulder-LElbow "
    "LElbow-LWrist MidHip-RHip RHip-RKnee RKnee-RAnkle MidHip-LHip LHip-LKnee LKnee-LAnkle Neck-Nose "
    "Nose-REye REye-REar Nose-LEye LEye-LEar RShoulder-REar LShoulder-LEar LAnkle-LBigToe "
    "LBigToe-LSmallToe LAnkle-LHeel RAnkle-RBigToe RBigToe-RSmallToe RAnkle-RHeel")
RUNTIME_PAIRS_COCO_18 = _links(
    "Neck-RShoulder Neck-LShoulder RShoulder-RElbow RElbow-RWrist LShoulder-LElbow LElbow-LWrist "
    "Neck-RHip RHip-RKnee RKnee-RAnkle Neck-LHip LHip-LKnee LKnee-LAnkle Neck-Nose Nose-REye REye-REar "
    "Nose-LEye LEye-LEar RShoulder-REar LShoulder-LEar")

# --------------------------------------------------------------------------------------------
# Flip swaps (the fork's poseModel.cpp), by part name like the PAF pairs. Written by name, the
# fork's COCO_18 and BODY_19 lists are one list, and so are its BODY_23 and BODY_25 lists.

FLIPS_BODY = _swaps(
    "LShoulder/RShoulder LElbow/RElbow LWrist/RWrist LHip/RHip LKnee/RKnee LAnkle/RAnkle LEye/REye "
    "LEar/REar")
FLIPS_18 = FLIPS_19 = FLIPS_BODY
FLIPS_25 = FLIPS_23 = FLIPS_BODY + _swaps("LBigToe/RBigToe LSmallToe/RSmallToe LHeel/RHeel")
HAND_FLIPS = tuple(("L" + part, "R" + part) for part in HAND_PARTS)
FLIPS_59 = FLIPS_19 + HAND_FLIPS
FLIPS_65 = _swaps("LWrist/RWrist") + HAND_FLIPS     # the fork swaps only the wrists and hands here
FLIPS_25B = _swaps(
    "LEye/REye LEar/REar LShoulder/RShoulder LElbow/RElbow LWrist/RWrist LHip/RHip LKnee/RKnee "
    "LAnkle/RAnkle LBigToe/RBigToe LSmallToe/RSmallToe LHeel/RHeel")
FLIPS_FACE = _swaps(
    "FaceContour0/FaceContour16 FaceContour1/FaceContour15 FaceContour2/FaceContour14 "
    "FaceContour3/FaceContour13 FaceContour4/FaceContour12 FaceContour5/FaceContour11 "
    "FaceContour6/FaceContour10 FaceContour7/FaceContour9 REyeBrow0/LEyeBrow0 REyeBrow1/LEyeBrow1 "
    "REyeBrow2/LEyeBrow2 REyeBrow3/LEyeBrow3 REyeBrow4/LEyeBrow4 NoseLower0/NoseLower4 "
    "NoseLower1/NoseLower3 REye0/LEye3 REye1/LEye2 REye2/LEye1 REye3/LEye0 REye4/LEye5 REye5/LEye4 "
    "OMouth0/OMouth6 OMouth1/OMouth5 OMouth2/OMouth4 OMouth7/OMouth11 OMouth8/OMouth10 IMouth0/IMouth4 "
    "IMouth1/IMouth3 IMouth5/IMouth7 RPupil/LPupil")
FLIPS_95 = FLIPS_25B + FLIPS_FACE
FLIPS_135 = FLIPS_25B + HAND_FLIPS + FLIPS_FACE
FLIPS_MPI = _swaps("RShoulder/LShoulder RElbow/LElbow RWrist/LWrist RHip/LHip RKnee/LKnee RAnkle/LAnkle")
FLIPS_CAR_12 = _swaps(
    "FRWheel/FLWheel BRWheel/BLWheel FRLight/FLLight BRLight/BLLight FRTop/FLTop BRTop/BLTop")
FLIPS_CAR_22 = _swaps(
    "FLWheel/FRWheel BLWheel/BRWheel FRFogLight/FLFogLight FRLight/FLLight LMirror/RMirror FRTop/FLTop "
    "BLTop/BRTop BLLight/BRLight BLCorner/BRCorner")

# --------------------------------------------------------------------------------------------
# LMDB -> model mappings (the fork's poseModel.cpp; model part: LMDB index or averaged indexes)

COCO17_TO_18 = {0: 0, 1: (5, 6), 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16,
                11: 11, 12: 13, 13: 15, 14: 2, 15: 1, 16: 4, 17: 3}
COCO17_TO_19 = {0: 0, 1: (5, 6), 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: (11, 12), 9: 12,
                10: 14, 11: 16, 12: 11, 13: 13, 14: 15, 15: 2, 16: 1, 17: 4, 18: 3}
COCOFOOT_TO_25 = {**COCO17_TO_19, **_range_map(19, 17, 6)}
COCO17_TO_23 = {0: 0, 1: 6, 2: 8, 3: 10, 4: 5, 5: 7, 6: 9, 7: 12, 8: 14, 9: 16, 10: 11, 11: 13,
                12: 15, 13: 2, 14: 1, 15: 4, 16: 3}
COCOFOOT_TO_23 = {**COCO17_TO_23, **_range_map(17, 17, 6)}
COCO17_TO_25B = _range_map(0, 0, 17)
COCOFOOT_TO_25B = {**COCO17_TO_25B, **_range_map(19, 17, 6)}
MPII_TO_25B = {5: 13, 6: 12, 17: 8, 18: 9}
PT_TO_25B = {0: 13, 5: 9, 6: 8, 7: 10, 8: 7, 9: 11, 10: 6, 11: 3, 12: 2, 13: 4, 14: 1, 15: 5,
             16: 0, 17: 12, 18: 14}
FACE70_NOSE = (27, 28, 29, 30, 31, 32, 34, 35)      # 33 excluded, as in the fork
FACE70_REYE = tuple(range(36, 42))
FACE70_LEYE = tuple(range(42, 48))
FACE70_TO_95 = {0: FACE70_NOSE, 1: FACE70_LEYE, 2: FACE70_REYE, **_range_map(25, 0, 70)}
FACE70_TO_135 = {0: FACE70_NOSE, 1: FACE70_LEYE, 2: FACE70_REYE, **_range_map(65, 0, 68),
                 133: FACE70_REYE, 134: FACE70_LEYE}
HAND21_TO_135 = {10: 0, **_range_map(45, 1, 20)}
HAND42_TO_135 = {9: 0, 10: 21, **_range_map(25, 1, 20), **_range_map(45, 22, 20)}
# COCO-WholeBody 133: body 0-16, foot 17-22, face 23-90, left hand 91-111, right hand 112-132
_WB_FACE, _WB_LHAND, _WB_RHAND = 23, 91, 112
WHOLEBODY_TO_25 = COCOFOOT_TO_25
WHOLEBODY_TO_25B = COCOFOOT_TO_25B
WHOLEBODY_TO_135 = {
    **COCOFOOT_TO_25B,
    **_range_map(25, _WB_LHAND + 1, 20), **_range_map(45, _WB_RHAND + 1, 20),
    **_range_map(65, _WB_FACE, 68),
    133: tuple(_WB_FACE + j for j in FACE70_REYE), 134: tuple(_WB_FACE + j for j in FACE70_LEYE)}

# COCO JSON output reorders (OpenPose's CocoJsonSaver; docs/postprocessing.md §Output)
TO_COCO17_18 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
TO_COCO17_25 = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
TO_COCO17_23 = (0, 14, 13, 16, 15, 4, 1, 5, 2, 6, 3, 10, 7, 11, 8, 12, 9)
TO_COCO17_IDENTITY = tuple(range(17))
TO_COCO_FOOT_25 = (19, 20, 21, 22, 23, 24)
TO_COCO_FOOT_23 = (17, 18, 19, 20, 21, 22)
TO_COCO_FACE_135 = tuple(range(65, 65 + 68))
TO_COCO_HAND21_135 = (10,) + tuple(range(45, 65))
TO_COCO_HAND42_135 = (9,) + tuple(range(25, 45)) + TO_COCO_HAND21_135

SIGMA_RATIO_135 = tuple([1.0] * 25 + [5.75 / 7.0] * 110)

# OpenPose's person filter (docs/postprocessing.md §Person filter): the feet of the 25-part and
# > 70-part layouts; BODY_135's face and hands count as one keypoint each.
FOOT_PART_INDEXES = tuple(range(19, 25))
FEET_FILTER = PersonFilter(foot_parts=FOOT_PART_INDEXES)
BODY_135_FILTER = PersonFilter(foot_parts=FOOT_PART_INDEXES, face_parts=tuple(range(65, 135)),
                               hand_groups=(tuple(range(25, 45)), tuple(range(45, 65))))
# maskFeet (knee, ankle) pairs of the BODY_25 and BODY_23 layouts
MASK_FEET_25 = ((10, 11), (13, 14))
MASK_FEET_23 = ((8, 9), (11, 12))

# --------------------------------------------------------------------------------------------
# The models. Runtime models first (OpenPose's PoseModel order), then the fork-only layouts.

_model(
    "BODY_25", BODY_25_PARTS, PAFS_25, FLIPS_25, openpose_name="BODY_25",
    runtime_links=RUNTIME_PAIRS_BODY_25, to_coco17=TO_COCO17_25, to_coco_foot=TO_COCO_FOOT_25,
    model_folder="pose/body_25", caffemodel_name="pose_iter_584000.caffemodel",
    description="OpenPose default body + foot model", openpose_cpu_connector=True,
    cpu_connector_fill_only_pairs=(18, 19),
    person_filter=FEET_FILTER, center_swap=FORK_CENTER_SWAP,
    variants=(
        _variant("COCO_25", "coco_foot", 25, COCOFOOT_TO_25, mask_only=(1, 8, 11, 14, 19, 20, 21, 22, 23, 24)),
        _variant("COCO_25_17", "coco", 25, COCO17_TO_19, mask_feet_pairs=MASK_FEET_25),
        _variant("COCO_25_133", "wholebody", 25, WHOLEBODY_TO_25, upstream=False),
    ))
_model(
    "COCO_18", COCO_18_PARTS, PAFS_18, FLIPS_18, openpose_name="COCO",
    runtime_links=RUNTIME_PAIRS_COCO_18, to_coco17=TO_COCO17_18,
    model_folder="pose/coco", deploy_name="pose_deploy_linevec.prototxt",
    caffemodel_name="pose_iter_440000.caffemodel", description="OpenPose COCO 18-part model",
    openpose_cpu_connector=True, cpu_connector_fill_only_pairs=(17, 18),
    variants=(
        _variant("COCO_18", "coco", 18, COCO17_TO_18),
        _variant("DOME_18", "dome19", 18, {**_range_map(0, 0, 8), **_range_map(8, 9, 10)}),
    ))
_model(
    "MPI_15", MPI_15_PARTS, PAFS_MPI, FLIPS_MPI, openpose_name="MPI",
    thresholds=PostprocessThresholds(nms_threshold=0.6, connect_inter_threshold=0.01),
    model_folder="pose/mpi", deploy_name="pose_deploy_linevec.prototxt",
    caffemodel_name="pose_iter_160000.caffemodel", description="OpenPose MPI 15-part model",
    openpose_cpu_connector=True, cpu_connector_lone_peaks_unchecked=True)
_model(
    "MPI_15_4", MPI_15_PARTS, PAFS_MPI, FLIPS_MPI, openpose_name="MPI_4_layers",
    thresholds=PostprocessThresholds(nms_threshold=0.3, connect_inter_threshold=0.01),
    model_folder="pose/mpi", deploy_name="pose_deploy_linevec_faster_4_stages.prototxt",
    caffemodel_name="pose_iter_160000.caffemodel", description="OpenPose MPI, 4 stages",
    openpose_cpu_connector=True, cpu_connector_lone_peaks_unchecked=True)
_model(
    "BODY_19", BODY_19_PARTS, PAFS_19, FLIPS_19, openpose_name="BODY_19",
    runtime_links=RUNTIME_PAIRS_BODY_25[:20], to_coco17=TO_COCO17_25,
    model_folder="pose/body_19", description="19-part body (BODY_25 without feet)",
    variants=(
        _variant("COCO_19", "coco", 19, COCO17_TO_19),
        _variant("DOME_19", "dome19", 19, _range_map(0, 0, 19)),
    ))
_model(
    "BODY_25E", BODY_25_PARTS, PAFS_25E, FLIPS_25, openpose_name="BODY_25E",
    to_coco17=TO_COCO17_25, to_coco_foot=TO_COCO_FOOT_25, model_folder="pose/body_25e",
    description="BODY_25 with 12 extra (redundant) PAFs", person_filter=FEET_FILTER,
    center_swap=FORK_CENTER_SWAP,
    variants=(
        _variant("COCO_25E", "coco_foot", 25, COCOFOOT_TO_25, mask_only=(1, 8, 11, 14, 19, 20, 21, 22, 23, 24)),
        _variant("COCO_25_17E", "coco", 25, COCO17_TO_19, mask_feet_pairs=MASK_FEET_25),
    ))
_model(
    "CAR_12", CAR_12_PARTS, PAFS_CAR_12, FLIPS_CAR_12, openpose_name="CAR_12",
    model_folder="car/car_12", description="car, 12 parts (experimental upstream)",
    variants=(_variant("CAR_12", "car14", 12, {**_range_map(0, 0, 8), **_range_map(8, 9, 4)},
                       mask_is_background=True, label_rules_implemented=False),))
_model(
    "BODY_23", BODY_23_PARTS, PAFS_23, FLIPS_23, openpose_name="BODY_23",
    to_coco17=TO_COCO17_23, to_coco_foot=TO_COCO_FOOT_23, model_folder="pose/body_23",
    description="23 parts (no neck / mid-hip) with redundant PAFs", center_swap=FORK_CENTER_SWAP,
    variants=(
        _variant("COCO_23", "coco_foot", 23, COCOFOOT_TO_23, mask_only=(9, 12, 17, 18, 19, 20, 21, 22)),
        _variant("COCO_23_17", "coco", 23, COCO17_TO_23, mask_feet_pairs=MASK_FEET_23),
    ))
_model(
    "CAR_22", CAR_22_PARTS, PAFS_CAR_22, FLIPS_CAR_22, openpose_name="CAR_22",
    model_folder="car/car_22", description="car, 22 parts (experimental upstream)",
    variants=(_variant("CAR_22", "car22", 22, _range_map(0, 0, 22), roi_mask_codes=(2, 3, 4)),))
_model(
    "BODY_19E", BODY_19_PARTS, PAFS_19E, FLIPS_19, openpose_name="BODY_19E",
    to_coco17=TO_COCO17_25, model_folder="pose/body_19e",
    description="BODY_19 with redundant PAFs (runtime lists 31 map indexes for 30 pairs)",
    variants=(_variant("COCO_19E", "coco", 19, COCO17_TO_19),))
_model(
    "BODY_25B", BODY_25B_PARTS, PAFS_25B, FLIPS_25B, openpose_name="BODY_25B",
    has_background=False, to_coco17=TO_COCO17_IDENTITY, to_coco_foot=TO_COCO_FOOT_25,
    model_folder="pose/body_25b", description="openpose_train BODY_25B (COCO order + neck, head top, feet)",
    person_filter=FEET_FILTER, center_swap=FORK_CENTER_SWAP,
    variants=(
        _variant("COCO_25B_23", "coco_foot", 25, COCOFOOT_TO_25B, minus1=(17, 18), force_minus1_mask=True),
        _variant("COCO_25B_17", "coco", 25, COCO17_TO_25B, minus1=(17, 18), force_minus1_mask=True),
        _variant("MPII_25B_16", "mpii", 25, MPII_TO_25B),
        _variant("PT_25B_15", "posetrack", 25, PT_TO_25B),
        _variant("COCO_25B_133", "wholebody", 25, WHOLEBODY_TO_25B, minus1=(17, 18), upstream=False),
    ))
_model(
    "BODY_135", BODY_135_PARTS, PAFS_135, FLIPS_135, openpose_name="BODY_135",
    has_background=False, sigma_ratios=SIGMA_RATIO_135, to_coco17=TO_COCO17_IDENTITY,
    to_coco_foot=TO_COCO_FOOT_25, to_coco_face=TO_COCO_FACE_135,
    to_coco_hand21=TO_COCO_HAND21_135, to_coco_hand42=TO_COCO_HAND42_135,
    model_folder="pose/body_135", person_filter=BODY_135_FILTER,
    description="openpose_train whole body: 25B body + 2 x 20 hand + 70 face",
    variants=(
        _variant("COCO_135_23", "coco_foot", 135, COCOFOOT_TO_25B,
                 minus1=(17, 18) + tuple(range(25, 135))),
        _variant("COCO_135_17", "coco", 135, COCO17_TO_25B, minus1=tuple(range(17, 135))),
        _variant("MPII_135_16", "mpii", 135, MPII_TO_25B),
        _variant("HAND_135_21", "hand21", 135, HAND21_TO_135, minus1=(9,) + tuple(range(25, 45))),
        _variant("HAND_135_42", "hand42", 135, HAND42_TO_135),
        _variant("FACE_135_70", "face70", 135, FACE70_TO_135),
        _variant("DOME_135", "dome135", 135, _range_map(0, 0, 135)),
        _variant("COCO_135_133", "wholebody", 135, WHOLEBODY_TO_135, minus1=(17, 18), upstream=False),
    ))
_model(
    "HAND_21", ("Wrist",) + HAND_PARTS, (), (), model_folder="hand",
    caffemodel_name="pose_iter_102000.caffemodel",
    description="OpenPose hand CPM net (right hands; heatmaps + background, no PAFs)",
    crop_net="hand", to_coco_hand21=tuple(range(21)),
    variants=(_variant("HAND_21", "hand21", 21, _range_map(0, 0, 21), upstream=False),))
_model(
    "FACE_70", FACE_PARTS, (), FLIPS_FACE, model_folder="face",
    caffemodel_name="pose_iter_116000.caffemodel",
    description="OpenPose face CPM net (heatmaps + background, no PAFs)",
    crop_net="face", to_coco_face=tuple(range(68)),
    variants=(_variant("FACE_70", "face70", 70, _range_map(0, 0, 70), upstream=False),))
# Fork-only layouts (no OpenPose --model_pose string).
_model(
    "BODY_95", BODY_95_PARTS, PAFS_95, FLIPS_95, has_background=False,
    to_coco17=TO_COCO17_IDENTITY, to_coco_foot=TO_COCO_FOOT_25, model_folder="pose/body_95",
    description="training fork: 25B body + 70 face", person_filter=FEET_FILTER,
    variants=(
        _variant("COCO_95_23", "coco_foot", 95, COCOFOOT_TO_25B,
                 minus1=(17, 18) + tuple(range(25, 95))),
        _variant("COCO_95_17", "coco", 95, COCO17_TO_25B, minus1=tuple(range(17, 95))),
        _variant("MPII_95_16", "mpii", 95, MPII_TO_25B),
        _variant("FACE_95_70", "face70", 95, FACE70_TO_95, minus1=(0, 1, 2)),
    ))
_model(
    "BODY_59", BODY_59_PARTS, PAFS_59, FLIPS_59, to_coco17=TO_COCO17_25,
    model_folder="pose/body_59", description="training fork: BODY_19 body + 2 x 20 hand",
    variants=(
        _variant("DOME_59", "dome59", 59, _range_map(0, 0, 59)),
        _variant("COCO_59_17", "coco", 59, COCO17_TO_19, label_rules_implemented=False),
        _variant("MPII_59", "mpii_hand59", 59,
                 {i: i for i in range(59) if i not in (0, 1, 8, 15, 16, 17, 18)},
                 force_global_mask=True, missing_threshold=2),
    ))
_model(
    "BODY_19b", BODY_19_PARTS, PAFS_19B, FLIPS_19, to_coco17=TO_COCO17_25,
    model_folder="pose/body_19b", description="training fork: BODY_19 + 2 hip-shoulder PAFs",
    variants=(_variant("COCO_19b", "coco", 19, COCO17_TO_19),))
_model(
    "BODY_19_V2", BODY_19_PARTS, PAFS_19_V2, FLIPS_19, to_coco17=TO_COCO17_25,
    model_folder="pose/body_19_v2", description="training fork: BODY_19 parts, PAF star from the neck",
    variants=(_variant("COCO_19_V2", "coco", 19, COCO17_TO_19),))
_model(
    "BODY_65", BODY_65_PARTS, PAFS_65, FLIPS_65, to_coco17=TO_COCO17_25,
    to_coco_foot=TO_COCO_FOOT_25, model_folder="pose/body_65",
    description="training fork: BODY_25 + 2 x 20 hand (flip swaps only the wrists and hands)",
    variants=(_variant("MPII_65_42", "hand42", 65,
                       {4: 21, 7: 0, **_range_map(25, 1, 20), **_range_map(45, 22, 20)},
                       missing_threshold=2, mask_is_background=True, label_rules_implemented=False),))


#: the models and dataset layouts of the tables above; a YAML skeleton may not replace them
BUILTIN_MODELS = frozenset(_REGISTRY)
BUILTIN_DATASET_LAYOUTS = frozenset(_DATASETS)

