"""User-defined skeletons from a YAML file -> a validated ``registry.PoseModel``.

Format (see ``generator/example_skeleton.yaml``)::

    name: MY_MODEL                 # registry name (required)
    description: one line          # optional
    parts: [Nose, Neck, ...]       # part names, model order (required, unique)
    pairs: [[Neck, Nose], [1, 2]]  # PAF pairs A -> B, names or indexes, training order (required)
    flips: [[LEye, REye], ...]     # left/right swaps; or a mapping {LEye: REye, ...} (optional)
    background: true               # background heatmap channel (default true)
    sigma_ratios: {default: 1.0, LWrist: 0.8}   # or a list with one value per part (optional)
    thresholds: {nms_threshold: 0.05, ...}       # PostprocessThresholds fields (optional)
    to_coco17: [Nose, LEye, ...]   # model part per COCO-17 keypoint, null = none (optional)
    to_coco_foot: [...]            # the same for the 6 COCO-foot points (optional)
    openpose_name: ""              # --model_pose string if OpenPose knows one (optional)
    model_folder: pose/my_model    # folder under OpenPose's models/ (default pose/<name lower>)
    dataset_layouts:               # new LMDB layouts (optional; the registry's are always known)
      - {key: my_data, keypoints: [a, b, ...], lmdb_dataset: my_data, category: COCO,
         has_mask: true, json_fields: [keypoints]}
    variants:                      # dataset mappings (optional; `variant:` for a single one)
      - op_model: MY_MODEL_17      # string written into op_transform_param.model
        dataset: coco              # registry dataset key or one of dataset_layouts
        sources:                   # model part -> dataset keypoint(s); a list is averaged;
          Nose: 0                  # indexes or dataset keypoint names; parts not listed are
          Neck: [5, 6]             # "not in this dataset" (v = 4)
        minus1: [HeadTop]          # optional CHANNELS_TO_MASK {-1} parts
        # optional label rules (docs/labels.md §Per-model rules; defaults in brackets):
        force_global_mask: true    # global masking of missing parts even if P <= P_lmdb [true]
        missing_threshold: 4       # main-person v >= this counts as missing [4]
        mask_feet_pairs: [[RKnee, RAnkle]]   # maskFeet (knee, ankle) pairs [none]
        force_minus1_mask: false   # "-1" person-box masking with <= 70 parts [false]
        roi_mask_codes: [3, 4]     # v codes whose person boxes are masked (2, 3, 4) [3, 4]
        mask_is_background: false  # augmentation: mask_miss := padding mask [false]
        label_rules_implemented: true   # false: the OPData layer refuses the variant [true]
    person_filter:                 # OpenPose's person filter groups (optional; none by default)
      foot_parts: [LBigToe, ...]   # not counted unless maximising positives
      face_parts: [...]            # count as one keypoint; a lone face is dropped
      hand_groups: [[...], [...]]  # each counts as at most one keypoint

Every problem raises ``SkeletonError`` naming the file and the problem: unreadable YAML, unknown
keys, index out of range, unknown part or keypoint names, duplicate part names, duplicate pairs,
a part in two flip pairs, asymmetric flip mappings, a disconnected PAF graph, bad sigma ratios.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Sequence

import yaml

from openpose_train.generator.registry import (
    LABEL_RULE_FIELDS, DatasetLayout, PersonFilter, PoseModel, PostprocessThresholds, SkeletonError, TrainingVariant,
    UnknownModelError, get_dataset_layout, list_dataset_layouts, register_dataset_layout)

_TOP_KEYS = {"name", "description", "parts", "pairs", "flips", "background", "sigma_ratios",
             "thresholds", "to_coco17", "to_coco_foot", "openpose_name", "model_folder",
             "dataset_layouts", "variants", "variant", "stride", "person_filter"}
_VARIANT_KEYS = {"op_model", "dataset", "sources", "minus1", "category", *LABEL_RULE_FIELDS}
_VARIANT_FLAGS = {"force_global_mask": True, "force_minus1_mask": False, "mask_is_background": False,
                  "label_rules_implemented": True}
_FILTER_KEYS = {"foot_parts", "face_parts", "hand_groups"}
_LAYOUT_KEYS = {"key", "keypoints", "lmdb_dataset", "category", "has_mask", "json_fields",
                "validity_fields", "description"}
_CATEGORIES = ("COCO", "MPII", "PT", "HAND", "FACE", "DOME", "CAR")


class _Checker:
    """Collects the file name so every message says where the problem is."""

    def __init__(self, path):
        self.path = str(path)

    def fail(self, message: str):
        raise SkeletonError(f"{self.path}: {message}")

    def expect(self, condition, message: str):
        if not condition:
            self.fail(message)

    def keys(self, mapping, allowed, where: str):
        self.expect(isinstance(mapping, dict), f"{where} must be a mapping")
        unknown = sorted(set(mapping) - set(allowed))
        self.expect(not unknown, f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                                 f"allowed: {', '.join(sorted(allowed))}")

    def index(self, ref, names: Sequence[str], where: str) -> int:
        """A part given by name or by index -> index, checked against ``names``."""
        if isinstance(ref, bool):
            self.fail(f"{where}: {ref!r} is neither a name nor an index")
        if isinstance(ref, int):
            self.expect(0 <= ref < len(names),
                        f"{where}: index {ref} out of range (0..{len(names) - 1})")
            return ref
        if isinstance(ref, str):
            if ref in names:
                return names.index(ref)
            self.fail(f"{where}: unknown name '{ref}' (known: {', '.join(names)})")
        self.fail(f"{where}: {ref!r} is neither a name nor an index")

    def flag(self, mapping, key, default: bool, where: str) -> bool:
        value = mapping.get(key, default)
        self.expect(isinstance(value, bool), f"{where}.{key} must be true or false, got {value!r}")
        return value

    def part_list(self, value, names, where: str) -> tuple:
        self.expect(isinstance(value, list), f"'{where}' must be a list of parts")
        return tuple(self.index(ref, names, where) for ref in value)

    def pair_list(self, value, names, where: str) -> List[tuple]:
        self.expect(isinstance(value, list), f"'{where}' must be a list of [A, B] pairs")
        out = []
        for k, pair in enumerate(value):
            self.expect(isinstance(pair, (list, tuple)) and len(pair) == 2,
                        f"{where}[{k}]: expected [A, B], got {pair!r}")
            a = self.index(pair[0], names, f"{where}[{k}]")
            b = self.index(pair[1], names, f"{where}[{k}]")
            self.expect(a != b, f"{where}[{k}]: pair joins part '{names[a]}' to itself")
            out.append((a, b))
        return out


def _load_yaml(path, check: _Checker):
    try:
        text = Path(path).read_text()
    except OSError as exc:
        check.fail(f"cannot read skeleton file: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        check.fail(f"not a YAML text file (byte {exc.start} is not UTF-8)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        check.fail(f"YAML syntax error: {exc}")
    check.keys(data, _TOP_KEYS, "skeleton")
    return data


def _parts(data, check):
    parts = data.get("parts")
    check.expect(isinstance(parts, list) and parts, "'parts' must be a non-empty list of names")
    seen = set()
    for k, name in enumerate(parts):
        check.expect(isinstance(name, str) and name, f"parts[{k}]: {name!r} is not a name")
        check.expect(name not in seen, f"duplicate part name '{name}'")
        seen.add(name)
    return tuple(parts)


def _pairs(data, parts, check):
    check.expect("pairs" in data, "'pairs' is missing (PAF pairs A -> B)")
    pairs = check.pair_list(data["pairs"], parts, "pairs")
    check.expect(pairs, "'pairs' is empty: a PAF model needs at least one pair")
    seen = {}
    for k, (a, b) in enumerate(pairs):
        key = frozenset((a, b))
        check.expect(key not in seen, f"pairs[{k}]: duplicate pair {parts[a]}-{parts[b]} "
                                      f"(already pairs[{seen.get(key)}])")
        seen[key] = k
    # connectivity: union-find over the PAF graph
    root = list(range(len(parts)))

    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b in pairs:
        root[find(a)] = find(b)
    groups: Dict[int, List[str]] = {}
    for i, name in enumerate(parts):
        groups.setdefault(find(i), []).append(name)
    if len(groups) > 1:
        pieces = sorted(groups.values(), key=len)
        check.fail(f"disconnected skeleton: the PAF pairs form {len(groups)} separate groups; "
                   f"e.g. {', '.join(pieces[0])} not connected to {pieces[-1][0]}")
    return tuple(pairs)


def _flips(data, parts, check):
    value = data.get("flips") or []
    if isinstance(value, dict):
        mapping = {}
        for a_ref, b_ref in value.items():
            a = check.index(a_ref, parts, "flips")
            b = check.index(b_ref, parts, "flips")
            mapping[a] = b
        for a, b in mapping.items():
            check.expect(a != b, f"flips: part '{parts[a]}' flips to itself")
            back = mapping.get(b, a)
            check.expect(back == a, f"asymmetric flips: {parts[a]} -> {parts[b]} but "
                                    f"{parts[b]} -> {parts[back]}")
        pairs = sorted({tuple(sorted(p)) for p in mapping.items()})
    else:
        pairs = check.pair_list(value, parts, "flips")
    used: Dict[int, int] = {}
    for k, (a, b) in enumerate(pairs):
        for p in (a, b):
            if p in used:
                other = pairs[used[p]]
                if {a, b} == set(other):
                    check.fail(f"flips[{k}]: duplicate flip pair {parts[a]}/{parts[b]}")
                check.fail(f"flips[{k}]: part '{parts[p]}' is in two flip pairs "
                           f"({parts[other[0]]}/{parts[other[1]]} and {parts[a]}/{parts[b]})")
            used[p] = k
    return tuple(pairs)


def _sigma_ratios(data, parts, check):
    value = data.get("sigma_ratios")
    if value is None:
        return (1.0,) * len(parts)
    if isinstance(value, list):
        check.expect(len(value) == len(parts),
                     f"sigma_ratios: {len(value)} values for {len(parts)} parts")
        ratios = list(value)
    else:
        check.expect(isinstance(value, dict), "sigma_ratios must be a list or a mapping")
        ratios = [value.get("default", 1.0)] * len(parts)
        for ref, ratio in value.items():
            if ref != "default":
                ratios[check.index(ref, parts, "sigma_ratios")] = ratio
    for k, ratio in enumerate(ratios):
        check.expect(isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 0,
                     f"sigma_ratios: part '{parts[k]}' has ratio {ratio!r} (must be > 0)")
    return tuple(float(r) for r in ratios)


def _thresholds(data, check):
    value = data.get("thresholds") or {}
    allowed = {f.name for f in fields(PostprocessThresholds)}
    check.keys(value, allowed, "thresholds")
    for key, number in value.items():
        check.expect(isinstance(number, (int, float)) and not isinstance(number, bool),
                     f"thresholds.{key}: {number!r} is not a number")
    return PostprocessThresholds(**value)


def _reorder(data, key, length, parts, check):
    value = data.get(key)
    if value is None:
        return None
    check.expect(isinstance(value, list) and len(value) == length,
                 f"'{key}' must list {length} model parts (null for none)")
    return tuple(-1 if ref is None else check.index(ref, parts, key) for ref in value)


def _layouts(data, check) -> Dict[str, DatasetLayout]:
    out = {}
    for k, entry in enumerate(data.get("dataset_layouts") or []):
        where = f"dataset_layouts[{k}]"
        check.keys(entry, _LAYOUT_KEYS, where)
        for key in ("key", "keypoints", "lmdb_dataset", "category"):
            check.expect(key in entry, f"{where}: '{key}' is missing")
        check.expect(entry["category"] in _CATEGORIES,
                     f"{where}: category '{entry['category']}' not one of {', '.join(_CATEGORIES)}")
        names = entry["keypoints"]
        check.expect(isinstance(names, list) and names and len(set(names)) == len(names),
                     f"{where}: 'keypoints' must be a non-empty list of unique names")
        out[entry["key"]] = DatasetLayout(
            key=entry["key"], keypoints=tuple(names), lmdb_dataset=entry["lmdb_dataset"],
            category=entry["category"], has_mask=bool(entry.get("has_mask", True)),
            json_fields=tuple(entry.get("json_fields", ("keypoints",))),
            validity_fields=tuple(entry.get("validity_fields", ())),
            description=entry.get("description", ""))
    return out


def _variants(data, name, parts, layouts, check) -> tuple:
    entries = data.get("variants")
    if entries is None and data.get("variant") is not None:
        entries = [data["variant"]]
    check.expect(isinstance(entries or [], list), "'variants' must be a list")
    out, seen = [], set()
    for k, entry in enumerate(entries or []):
        where = f"variants[{k}]"
        check.keys(entry, _VARIANT_KEYS, where)
        check.expect("dataset" in entry, f"{where}: 'dataset' is missing")
        key = entry["dataset"]
        if key in layouts:
            layout = layouts[key]
        else:
            try:
                layout = get_dataset_layout(key)
            except UnknownModelError:
                check.fail(f"{where}: unknown dataset '{key}'; known: "
                           f"{', '.join(list(layouts) + list_dataset_layouts())}")
        op_model = entry.get("op_model") or f"{name}_{layout.num_keypoints}_{key}"
        check.expect(op_model not in seen, f"{where}: duplicate op_model '{op_model}'")
        seen.add(op_model)
        sources = [()] * len(parts)
        raw = entry.get("sources") or {}
        check.expect(isinstance(raw, dict), f"{where}.sources must map model parts to keypoints")
        for part_ref, src in raw.items():
            i = check.index(part_ref, parts, f"{where}.sources")
            refs = src if isinstance(src, list) else [src]
            check.expect(refs, f"{where}.sources.{parts[i]}: empty source list")
            sources[i] = tuple(
                check.index(ref, layout.keypoints, f"{where}.sources.{parts[i]} ({key})")
                for ref in refs)
        check.expect(any(sources), f"{where}: no part has a source in dataset '{key}'")
        minus1 = tuple(sorted(check.index(ref, parts, f"{where}.minus1")
                              for ref in entry.get("minus1") or []))
        category = entry.get("category", layout.category)
        check.expect(category in _CATEGORIES,
                     f"{where}: category '{category}' not one of {', '.join(_CATEGORIES)}")
        out.append(TrainingVariant(
            op_model=op_model, dataset=key, category=category,
            num_lmdb_parts=layout.num_keypoints, sources=tuple(sources),
            empty_mask_parts=tuple(i for i, s in enumerate(sources) if not s and i not in minus1),
            minus1_parts=minus1, upstream=False, **_label_rules(entry, parts, check, where)))
    return tuple(out)


def _label_rules(entry, parts, check, where) -> dict:
    """The optional TrainingVariant rule fields of one variant entry (docs/labels.md §Per-model rules)."""
    rules = {key: check.flag(entry, key, default, where) for key, default in _VARIANT_FLAGS.items()}
    threshold = entry.get("missing_threshold", 4)
    check.expect(isinstance(threshold, int) and not isinstance(threshold, bool) and 1 <= threshold <= 4,
                 f"{where}.missing_threshold must be an integer 1..4, got {threshold!r}")
    rules["missing_threshold"] = threshold
    rules["mask_feet_pairs"] = tuple(check.pair_list(entry.get("mask_feet_pairs") or [], parts,
                                                     f"{where}.mask_feet_pairs"))
    codes = entry.get("roi_mask_codes", [3, 4])
    check.expect(isinstance(codes, list) and all(c in (2, 3, 4) and not isinstance(c, bool) for c in codes),
                 f"{where}.roi_mask_codes must list visibility codes among 2, 3, 4, got {codes!r}")
    rules["roi_mask_codes"] = tuple(sorted(set(codes)))
    return rules


def _person_filter(data, parts, check) -> PersonFilter:
    value = data.get("person_filter") or {}
    check.keys(value, _FILTER_KEYS, "person_filter")
    hands = value.get("hand_groups") or []
    check.expect(isinstance(hands, list), "'person_filter.hand_groups' must be a list of part lists")
    return PersonFilter(
        foot_parts=check.part_list(value.get("foot_parts") or [], parts, "person_filter.foot_parts"),
        face_parts=check.part_list(value.get("face_parts") or [], parts, "person_filter.face_parts"),
        hand_groups=tuple(check.part_list(group, parts, f"person_filter.hand_groups[{k}]")
                          for k, group in enumerate(hands)))


def load_skeleton_yaml(path) -> PoseModel:
    """Read and validate a YAML skeleton; returns a PoseModel (``upstream=False``).

    Dataset layouts the file defines are registered (a variant needs its layout to be read);
    the model itself is not: call ``registry.register`` to make it visible by name.
    """
    check = _Checker(path)
    data = _load_yaml(path, check)
    name = data.get("name")
    check.expect(isinstance(name, str) and name, "'name' is missing")
    parts = _parts(data, check)
    pairs = _pairs(data, parts, check)
    background = data.get("background", True)
    check.expect(isinstance(background, bool), "'background' must be true or false")
    stride = data.get("stride", 8)
    check.expect(isinstance(stride, int) and not isinstance(stride, bool) and stride > 0,
                 f"'stride' must be a positive integer, got {stride!r}")
    layouts = _layouts(data, check)
    model = PoseModel(
        name=name, openpose_name=str(data.get("openpose_name") or ""), parts=parts,
        paf_pairs=pairs, runtime_pairs=pairs, has_background=background,
        flip_pairs=_flips(data, parts, check), sigma_ratios=_sigma_ratios(data, parts, check),
        thresholds=_thresholds(data, check),
        to_coco17=_reorder(data, "to_coco17", 17, parts, check),
        to_coco_foot=_reorder(data, "to_coco_foot", 6, parts, check),
        stride=stride,
        model_folder=data.get("model_folder") or f"pose/{name.lower()}",
        variants=_variants(data, name, parts, layouts, check), upstream=False,
        person_filter=_person_filter(data, parts, check),
        description=str(data.get("description") or f"YAML skeleton {Path(path).name}"))
    for layout in layouts.values():
        register_dataset_layout(layout)
    return model
