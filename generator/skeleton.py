"""User-defined skeletons from a YAML file -> a validated ``registry.PoseModel``.

The format, field by field, is ``docs/formats.md`` §YAML skeletons (an example:
``generator/example_skeleton.yaml``); :data:`SCHEMA` below is that format as a JSON Schema.
A file is checked in three steps, and the first problem raises ``SkeletonError`` as
``FILE: FIELD PATH: problem`` (e.g. ``skel.yaml: parts[3]: must be a part name, got 7``):

1. YAML: read with PyYAML's safe loader (no code runs from data), except that a mapping holding
   the same key twice is refused with its line (PyYAML would silently keep the last one).
2. Shape: :data:`SCHEMA`, checked with ``jsonschema`` (Draft 2020-12, integers strict, a ``finite``
   keyword): every field's type, lists of names rather than numbers or nested lists, finite
   numbers (``.inf`` / ``.nan`` sigma ratios or thresholds), unknown and missing keys.
   ``stride`` may only be 8: the network families and OpenPose's runtime have no other output stride.
3. Meaning, what a schema cannot say: part and keypoint names resolve, indexes are in range, no
   duplicate parts, pairs or flips, a connected PAF graph, symmetric flips, one value per part, and no
   built-in model, model string, ``--model_pose`` string or dataset layout is replaced.

``jsonschema`` is imported on the first check only, so that ``openpose-train models`` starts as fast
as before (docs/architecture.md §Import rules). The generator records :func:`skeleton_header` in the
training prototxt; :func:`generated_from_problem` tells training (and ``fork-check``) that the YAML
changed since (docs/refusals.md §YAML skeletons).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from openpose_train.generator.registry import (
    BUILTIN_DATASET_LAYOUTS, BUILTIN_MODELS, DatasetLayout, PersonFilter, PoseModel,
    PostprocessThresholds, SkeletonError, TrainingVariant, UnknownModelError, get_dataset_layout, get_model,
    list_dataset_layouts, register_dataset_layout)

CATEGORIES = ("COCO", "MPII", "PT", "HAND", "FACE", "DOME", "CAR")
#: the output stride of every network family and of OpenPose's runtime (its NET_DECREASE_FACTOR)
STRIDE = next(f.default for f in fields(PoseModel) if f.name == "stride")
_VARIANT_FLAGS = {"force_global_mask": True, "force_minus1_mask": False, "mask_is_background": False,
                  "label_rules_implemented": True}


# ---- the schema ------------------------------------------------------------------------------
# Every node has a "description": the error message says the field "must be <description>".

def _node(description: str, **schema) -> dict:
    return dict(schema, description=description)


def _mapping(description: str, properties: dict, required=(), nullable=True) -> dict:
    return _node(description, type=["object", "null"] if nullable else "object", additionalProperties=False,
                 required=list(required), properties=properties)


_IDENTIFIER = _node("a name of letters, digits, '_', '.' or '-'", type="string",
                    pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_TEXT = _node("text", type=["string", "null"])
_FLAG = _node("true or false", type="boolean")
_PART = _node("a part name or index", type=["string", "integer"], minLength=1, minimum=0)
_PART_LIST = _node("a list of part names or indexes", type=["array", "null"], items=_PART)
_PAIR = _node("a pair [A, B] of part names or indexes", type="array", items=_PART, minItems=2, maxItems=2)
_PAIR_LIST = _node("a list of [A, B] pairs", type=["array", "null"], items=_PAIR)
_RATIO = _node("a number from 0.01 to 100 (the data layer multiplies its sigma by it, in float32)", type="number",
               finite=True, minimum=0.01, maximum=100)
_CATEGORY = _node("a category among " + ", ".join(CATEGORIES), type="string", enum=list(CATEGORIES))
_KEYPOINT = _node("a dataset keypoint name or index", type=["string", "integer"], minLength=1, minimum=0)


def _reorder_schema(count: int) -> dict:
    return _node(f"a list of {count} part names or indexes (null: none)", type=["array", "null"],
                 minItems=count, maxItems=count,
                 items=_node("a part name, index or null", type=["string", "integer", "null"], minLength=1,
                             minimum=0))


def _threshold(field) -> dict:
    if field.type in (int, "int"):
        return _node("an integer >= 0", type="integer", minimum=0)
    return _node("a finite number", type="number", finite=True)


_LAYOUT = _mapping("a dataset layout {key, keypoints, lmdb_dataset, category, ...}", {
    "key": _IDENTIFIER,
    "keypoints": _node("a non-empty list of keypoint names", type="array", minItems=1,
                       items=_node("a keypoint name", type="string", minLength=1)),
    "lmdb_dataset": _node("the dataset string of the records' metadata (text)", type="string", minLength=1),
    "category": _CATEGORY,
    "has_mask": _FLAG,
    "json_fields": _node("a non-empty list of COCO-JSON field names", type="array", minItems=1,
                         items=_node("a field name", type="string", minLength=1)),
    "validity_fields": _node("a list of COCO-JSON flag names, one per json_fields entry ('' = none)",
                             type="array", items=_node("a field name or ''", type="string")),
    "description": _TEXT,
}, required=("key", "keypoints", "lmdb_dataset", "category"), nullable=False)

_VARIANT = _mapping("a training variant {dataset, sources, ...}", {
    "op_model": _IDENTIFIER,
    "dataset": _node("a dataset layout key", type="string", minLength=1),
    "sources": _node("a mapping {part: dataset keypoint, or a list of them to average}", type=["object", "null"],
                     propertyNames=_PART,
                     additionalProperties=_node(
                         "a dataset keypoint name or index, or a non-empty list of them",
                         type=["string", "integer", "array"], minLength=1, minimum=0, minItems=1,
                         items=_KEYPOINT)),
    "minus1": _PART_LIST,
    "category": _CATEGORY,
    # the label rules (registry.LABEL_RULE_FIELDS; docs/labels.md §Per-model rules)
    "force_global_mask": _FLAG,
    "missing_threshold": _node("an integer 1..4", type="integer", minimum=1, maximum=4),
    "mask_feet_pairs": _PAIR_LIST,
    "force_minus1_mask": _FLAG,
    "roi_mask_codes": _node("a list of visibility codes among 2, 3, 4", type="array",
                            items=_node("2, 3 or 4", type="integer", enum=[2, 3, 4])),
    "mask_is_background": _FLAG,
    "label_rules_implemented": _FLAG,
}, required=("dataset",), nullable=False)

SCHEMA = _mapping("a mapping of skeleton fields (name, parts, pairs, ...)", {
    "name": _IDENTIFIER,
    "description": _TEXT,
    "parts": _node("a non-empty list of part names", type="array", minItems=1,
                   items=_node("a part name", type="string", minLength=1)),
    "pairs": _node("a non-empty list of [A, B] pairs", type="array", minItems=1, items=_PAIR),
    "flips": _node("a list of [left, right] pairs or a mapping {left: right}", type=["array", "object", "null"],
                   items=_PAIR, propertyNames=_PART, additionalProperties=_PART),
    "background": _FLAG,
    "sigma_ratios": _node("a list of one ratio (0.01 to 100) per part or a mapping {part or default: ratio}",
                          type=["array", "object", "null"], items=_RATIO, propertyNames=_PART,
                          additionalProperties=_RATIO),
    "thresholds": _mapping("a mapping of post-processing thresholds",
                           {f.name: _threshold(f) for f in fields(PostprocessThresholds)}),
    "to_coco17": _reorder_schema(17),
    "to_coco_foot": _reorder_schema(6),
    "openpose_name": _TEXT,
    "model_folder": _node("a relative folder under OpenPose's models/, e.g. pose/my_model",
                          type=["string", "null"], pattern=r"^(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"),
    "stride": _node(f"{STRIDE} (the networks and OpenPose's runtime have no other output stride)", const=STRIDE),
    "dataset_layouts": _node("a list of dataset layouts", type=["array", "null"], items=_LAYOUT),
    "variants": _node("a list of training variants", type=["array", "null"], items=_VARIANT),
    "variant": _VARIANT,
    "person_filter": _mapping("a mapping {foot_parts, face_parts, hand_groups}", {
        "foot_parts": _PART_LIST,
        "face_parts": _PART_LIST,
        "hand_groups": _node("a list of part lists", type=["array", "null"],
                             items=_node("a list of part names or indexes", type="array", items=_PART)),
    }),
}, required=("name", "parts", "pairs"), nullable=False)


@functools.lru_cache(maxsize=None)
def _validator():
    """jsonschema's Draft 2020-12 validator of SCHEMA, with integers that are never floats or booleans
    (YAML's 2.0 or true is no index) and a ``finite`` keyword (JSON Schema has none; .inf and .nan are YAML)."""
    from jsonschema import Draft202012Validator, ValidationError, validators

    def finite(validator, wanted, instance, schema):
        if wanted and validator.is_type(instance, "number") and not math.isfinite(instance):
            yield ValidationError(f"{instance!r} is not finite")

    types = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return validators.extend(Draft202012Validator, validators={"finite": finite}, type_checker=types)(SCHEMA)


def field_path(path: Sequence) -> str:
    """``["variants", 0, "sources", "Neck"]`` -> ``variants[0].sources.Neck``."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) and not isinstance(key, bool) else (f".{key}" if out else str(key))
    return out


def _shown(value, schema) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, bool) and "string" in schema.get("type", ()):
        text += " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote a name)"
    return text


def _schema_problem(error) -> str:
    """One jsonschema error as ``field path: problem``."""
    where = field_path(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties" and schema.get("additionalProperties") is False:
        unknown = sorted(map(str, set(error.instance) - set(schema["properties"])))
        text = f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(schema['properties'])}"
    elif error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        text = f"'{missing}' is missing ({schema['properties'][missing]['description']})"
    else:
        text = f"must be {schema['description']}, got {_shown(error.instance, schema)}"
        if list(error.schema_path)[-2:-1] == ["propertyNames"]:
            text = f"key {_shown(error.instance, schema)}: must be {schema['description']}"
    return f"{where or 'top level'}: {text}"


# ---- reading -----------------------------------------------------------------------------------

class _DuplicateKey(SkeletonError):
    """A mapping key given twice; caught in _load_yaml, which names the file."""

    def __init__(self, key, line: int, first: int):
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first}); "
                         "YAML would keep only the last one")


#: values a skeleton may hold once its aliases are expanded; a real one holds a few thousand
MAX_VALUES = 100_000


def _expanded_size(root) -> Tuple[object, bool]:
    """Whether the YAML node graph, every alias expanded, holds more than MAX_VALUES values: (the node where
    the count passed it, or that an alias inside it refers back to, else None; True for the latter).
    Counted bottom-up without recursion, each node once."""
    size: Dict[int, int] = {}
    stack, active = [(root, False)], set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            active.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c in children), MAX_VALUES + 1)
            if size[key] > MAX_VALUES:
                return node, False
            continue
        if key in active:
            return node, True                    # an alias to a collection that holds it
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    return None, False


class _TooLarge(SkeletonError):
    """Aliases that expand beyond MAX_VALUES; caught in _load_yaml, which names the file."""

    def __init__(self, line: int, recursive: bool):
        super().__init__(f"line {line}: an alias inside the collection it names (it would never end)" if recursive
                         else f"line {line}: its aliases expand to more than {MAX_VALUES} values; a skeleton is "
                              "far smaller")


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (its libyaml parser where installed), except that a mapping holding the same
    key twice is an error (PyYAML keeps the last value silently), and a document whose aliases expand to
    more than MAX_VALUES values (a "billion laughs" file, or an alias inside what it names) is refused
    before anything walks it. Merge keys (``<<: *base``) may still be overridden."""

    def construct_document(self, node):
        culprit, recursive = _expanded_size(node)
        if culprit is not None:
            raise _TooLarge(culprit.start_mark.line + 1, recursive)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen: Dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:      # an unhashable key: SafeLoader reports it
                continue
        return super().construct_mapping(node, deep)


class _Checker:
    """Collects the file name so every message says where the problem is."""

    def __init__(self, path):
        self.path = str(path)

    def fail(self, message: str):
        raise SkeletonError(f"{self.path}: {message}")

    def expect(self, condition, message: str):
        if not condition:
            self.fail(message)

    def index(self, ref, names: Sequence[str], where: str, what: str = "name") -> int:
        """A part (or keypoint) given by name or index (the schema checked which) -> its index."""
        if isinstance(ref, int):
            self.expect(ref < len(names), f"{where}: index {ref} out of range (0..{len(names) - 1})")
            return ref
        if ref not in names:
            self.fail(f"{where}: unknown {what} '{ref}' (known: {', '.join(names)})")
        return names.index(ref)

    def part_list(self, value, names, where: str) -> tuple:
        return tuple(self.index(ref, names, f"{where}[{k}]") for k, ref in enumerate(value or ()))

    def pair_list(self, value, names, where: str) -> List[tuple]:
        out = []
        for k, (a_ref, b_ref) in enumerate(value or ()):
            a = self.index(a_ref, names, f"{where}[{k}][0]")
            b = self.index(b_ref, names, f"{where}[{k}][1]")
            self.expect(a != b, f"{where}[{k}]: pair joins part '{names[a]}' to itself")
            out.append((a, b))
        return out


def _syntax_problem(exc, text: str) -> str:
    """A PyYAML error as ``line L, column C: YAML syntax error: problem (context)``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"YAML syntax error: {' '.join(str(exc).split())}"
    context = getattr(exc, "context", None)
    line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    hint = "; YAML indents with spaces, not tabs" if "\t" in line[:mark.column + 1] else ""
    return (f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {problem}"
            + (f" ({context})" if context else "") + hint)


def _load_yaml(path, check: _Checker) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        check.fail(f"cannot read skeleton file: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        check.fail(f"not a YAML text file (byte {exc.start} is not UTF-8)")
    try:
        # The loader builds plain data only (safe constructor); built directly rather than
        # through yaml.load so the package holds no yaml.load call at all (tests/test_train_robustness.py).
        loader = _UniqueKeyLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (_DuplicateKey, _TooLarge) as exc:
        check.fail(str(exc))
    except yaml.YAMLError as exc:
        check.fail(_syntax_problem(exc, text))
    check.expect(data is not None, "the file is empty (a skeleton needs name, parts and pairs)")
    errors = iter(_validator().iter_errors(data))
    first = next(errors, None)
    if first is not None:
        more = sum(1 for _ in errors)
        check.fail(_schema_problem(first) + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))
    return data


# ---- meaning -------------------------------------------------------------------------------------

def _name(data, check) -> str:
    name = data["name"]
    check.expect(name not in BUILTIN_MODELS, f"name: '{name}' is a built-in model; give the skeleton its own name")
    openpose_name = data.get("openpose_name") or ""
    builtin = {get_model(n).openpose_name: n for n in BUILTIN_MODELS if get_model(n).openpose_name}
    check.expect(openpose_name not in builtin,
                 f"openpose_name: '{openpose_name}' selects OpenPose's own {builtin.get(openpose_name)} tables, "
                 "not this skeleton's; leave it empty unless OpenPose was given this skeleton's tables")
    return name


def _parts(data, check) -> tuple:
    seen = {}
    for k, name in enumerate(data["parts"]):
        check.expect(name not in seen, f"parts[{k}]: duplicate part name '{name}' (already parts[{seen.get(name)}])")
        seen[name] = k
    return tuple(data["parts"])


def _pairs(data, parts, check) -> tuple:
    pairs = check.pair_list(data["pairs"], parts, "pairs")
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
        check.fail(f"pairs: disconnected skeleton: the PAF pairs form {len(groups)} separate groups; "
                   f"e.g. {', '.join(pieces[0])} not connected to {pieces[-1][0]}")
    return tuple(pairs)


def _flips(data, parts, check) -> tuple:
    value = data.get("flips") or []
    if isinstance(value, dict):
        mapping = {}
        for a_ref, b_ref in value.items():
            a = check.index(a_ref, parts, "flips")
            mapping[a] = check.index(b_ref, parts, f"flips.{a_ref}")
        for a, b in mapping.items():
            check.expect(a != b, f"flips.{parts[a]}: part '{parts[a]}' flips to itself")
            back = mapping.get(b, a)
            check.expect(back == a, f"flips: asymmetric flips: {parts[a]} -> {parts[b]} but "
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


def _sigma_ratios(data, parts, check) -> tuple:
    value = data.get("sigma_ratios")
    if value is None:
        return (1.0,) * len(parts)
    if isinstance(value, list):
        check.expect(len(value) == len(parts), f"sigma_ratios: {len(value)} values for {len(parts)} parts")
        return tuple(float(r) for r in value)
    ratios = [float(value.get("default", 1.0))] * len(parts)
    for ref, ratio in value.items():
        if ref != "default":
            ratios[check.index(ref, parts, "sigma_ratios")] = float(ratio)
    return tuple(ratios)


def data_digest(data: dict) -> str:
    """16 hex digits of the SHA-256 of a skeleton's data, mappings sorted by key and the top-level description
    left out: comments, layout, key order and the description of the YAML do not count, every value does,
    and a newer openpose-train gives the same digest for the same file."""
    def canonical(value):
        if isinstance(value, dict):
            items = sorted(value.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
            return [[repr(k), canonical(v)] for k, v in items]
        if isinstance(value, list):
            return [canonical(v) for v in value]
        return value
    body = {key: value for key, value in data.items() if key != "description"}
    return hashlib.sha256(json.dumps(canonical(body)).encode()).hexdigest()[:16]


def _reorder(data, key, parts, check) -> Optional[tuple]:
    value = data.get(key)
    if value is None:
        return None
    return tuple(-1 if ref is None else check.index(ref, parts, f"{key}[{k}]") for k, ref in enumerate(value))


def _layouts(data, check) -> Dict[str, DatasetLayout]:
    out = {}
    for k, entry in enumerate(data.get("dataset_layouts") or []):
        where = f"dataset_layouts[{k}]"
        key = entry["key"]
        check.expect(key not in BUILTIN_DATASET_LAYOUTS,
                     f"{where}.key: '{key}' is a built-in dataset layout; name it in a variant's 'dataset', "
                     "or give this layout its own key")
        check.expect(key not in out, f"{where}.key: duplicate dataset layout '{key}'")
        names = entry["keypoints"]
        dup = next((j for j, n in enumerate(names) if n in names[:j]), None)
        check.expect(dup is None, f"{where}.keypoints[{dup}]: duplicate keypoint name '{names[dup or 0]}'")
        json_fields = tuple(entry.get("json_fields") or ("keypoints",))
        validity = tuple(entry.get("validity_fields") or ())
        check.expect(len(validity) in (0, len(json_fields)),
                     f"{where}.validity_fields: {len(validity)} names for {len(json_fields)} json_fields")
        out[key] = DatasetLayout(
            key=key, keypoints=tuple(names), lmdb_dataset=entry["lmdb_dataset"], category=entry["category"],
            has_mask=entry.get("has_mask", True), json_fields=json_fields, validity_fields=validity,
            description=entry.get("description") or "")
    return out


def _variants(data, name, parts, layouts, check) -> tuple:
    check.expect(not ("variants" in data and "variant" in data),
                 "give 'variants' (a list) or 'variant' (one), not both")
    entries = data.get("variants")
    if entries is None and data.get("variant") is not None:
        entries = [data["variant"]]
    builtin = {v.op_model for n in BUILTIN_MODELS for v in get_model(n).variants}
    out, seen = [], {}
    for k, entry in enumerate(entries or []):
        where = "variant" if "variant" in data else f"variants[{k}]"
        key = entry["dataset"]
        if key in layouts:
            layout = layouts[key]
        else:
            try:
                layout = get_dataset_layout(key)
            except UnknownModelError:
                check.fail(f"{where}.dataset: unknown dataset '{key}'; known: "
                           f"{', '.join(list(layouts) + list_dataset_layouts())}")
        op_model = entry.get("op_model") or f"{name}_{layout.num_keypoints}_{key}"
        check.expect(op_model not in builtin,
                     f"{where}.op_model: '{op_model}' is a built-in training model string; give the variant its own")
        check.expect(op_model not in seen, f"{where}.op_model: duplicate op_model '{op_model}' "
                                           f"(already variants[{seen.get(op_model)}])")
        seen[op_model] = k
        sources = [()] * len(parts)
        for part_ref, src in (entry.get("sources") or {}).items():
            i = check.index(part_ref, parts, f"{where}.sources")
            refs = src if isinstance(src, list) else [src]
            sources[i] = tuple(check.index(ref, layout.keypoints, f"{where}.sources.{parts[i]}", f"{key} keypoint")
                               for ref in refs)
        check.expect(any(sources), f"{where}.sources: no part has a source in dataset '{key}'")
        minus1 = tuple(sorted(set(check.part_list(entry.get("minus1"), parts, f"{where}.minus1"))))
        out.append(TrainingVariant(
            op_model=op_model, dataset=key, category=entry.get("category", layout.category),
            num_lmdb_parts=layout.num_keypoints, sources=tuple(sources),
            empty_mask_parts=tuple(i for i, s in enumerate(sources) if not s and i not in minus1),
            minus1_parts=minus1, upstream=False, **_label_rules(entry, parts, check, where)))
    return tuple(out)


def _label_rules(entry, parts, check, where) -> dict:
    """The optional TrainingVariant rule fields of one variant entry (docs/labels.md §Per-model rules)."""
    rules = {key: entry.get(key, default) for key, default in _VARIANT_FLAGS.items()}
    rules["missing_threshold"] = entry.get("missing_threshold", 4)
    rules["mask_feet_pairs"] = tuple(check.pair_list(entry.get("mask_feet_pairs"), parts, f"{where}.mask_feet_pairs"))
    rules["roi_mask_codes"] = tuple(sorted(set(entry.get("roi_mask_codes", [3, 4]))))
    return rules


def _person_filter(data, parts, check) -> PersonFilter:
    value = data.get("person_filter") or {}
    return PersonFilter(
        foot_parts=check.part_list(value.get("foot_parts"), parts, "person_filter.foot_parts"),
        face_parts=check.part_list(value.get("face_parts"), parts, "person_filter.face_parts"),
        hand_groups=tuple(check.part_list(group, parts, f"person_filter.hand_groups[{k}]")
                          for k, group in enumerate(value.get("hand_groups") or [])))


def load_skeleton_yaml(path) -> PoseModel:
    """Read and validate a YAML skeleton; returns a PoseModel (``upstream=False``).

    Dataset layouts the file defines are registered (a variant needs its layout to be read);
    the model itself is not: call ``registry.register`` to make it visible by name.
    """
    return _read_skeleton(path)[0]


def _read_skeleton(path) -> Tuple[PoseModel, Dict[str, DatasetLayout]]:
    """The model and the dataset layouts a skeleton file defines (the layouts registered)."""
    check = _Checker(path)
    data = _load_yaml(path, check)
    name = _name(data, check)
    parts = _parts(data, check)
    pairs = _pairs(data, parts, check)
    layouts = _layouts(data, check)
    model = PoseModel(
        name=name, openpose_name=data.get("openpose_name") or "", parts=parts,
        paf_pairs=pairs, runtime_pairs=pairs, has_background=data.get("background", True),
        flip_pairs=_flips(data, parts, check), sigma_ratios=_sigma_ratios(data, parts, check),
        thresholds=PostprocessThresholds(**(data.get("thresholds") or {})),
        to_coco17=_reorder(data, "to_coco17", parts, check),
        to_coco_foot=_reorder(data, "to_coco_foot", parts, check),
        model_folder=data.get("model_folder") or f"pose/{name.lower()}",
        variants=_variants(data, name, parts, layouts, check), upstream=False,
        person_filter=_person_filter(data, parts, check),
        description=data.get("description") or f"YAML skeleton {Path(path).name}",
        skeleton_digest=data_digest(data))
    for layout in layouts.values():
        register_dataset_layout(layout)
    return model, layouts


def defined_dataset_layouts(path) -> List[str]:
    """Load a skeleton (registering its dataset layouts, as :func:`load_skeleton_yaml`); the keys of the
    layouts it defines, which ``openpose-train lmdb --dataset`` may then name."""
    return list(_read_skeleton(path)[1])


# ---- generated files remember their skeleton --------------------------------------------------------

_HEADER = re.compile(r"^# openpose-train skeleton: (?P<model>\S+) from (?P<yaml>.+?), digest (?P<digest>[0-9a-f]{16})\b",
                     re.MULTILINE)


@dataclass(frozen=True)
class RecordedSkeleton:
    """What a generated training prototxt says about the YAML skeleton it was made from."""

    model: str
    yaml_name: str
    digest: str


def skeleton_header(model: PoseModel, yaml_name: str) -> str:
    """The comment line the generator puts first in a YAML skeleton's training and deploy prototxts."""
    return (f"# openpose-train skeleton: {model.name} from {yaml_name}, digest {model.skeleton_digest} "
            "(openpose-train refuses this file with any other skeleton: regenerate it after editing the YAML)\n")


def recorded_skeletons(text: str) -> Tuple[RecordedSkeleton, ...]:
    """The skeletons a prototxt's header comments name (none for built-in models' files)."""
    return tuple(RecordedSkeleton(m["model"], m["yaml"], m["digest"]) for m in _HEADER.finditer(text))


def generated_from_problem(prototxt, text: str, loaded: Mapping[str, Tuple[str, PoseModel]]) -> Optional[str]:
    """One line when the prototxt ``text`` was generated from a skeleton that ``loaded`` ({model name:
    (YAML path, model)}) lacks or that has changed since; None when it fits."""
    for record in recorded_skeletons(text):
        by_file = [entry for entry in loaded.values() if Path(entry[0]).name == record.yaml_name]
        if record.model not in loaded and not by_file:
            return (f"{prototxt} was generated from the YAML skeleton {record.yaml_name} (model {record.model}): "
                    f"pass --model-yaml {record.yaml_name}")
        path, model = loaded[record.model] if record.model in loaded else by_file[0]
        digest = model.skeleton_digest
        if digest != record.digest:
            return (f"{path} was edited after {prototxt} was generated from it (skeleton digest {digest}, the "
                    f"prototxt records {record.digest}): regenerate the files with `openpose-train prototxt "
                    f"--yaml {path} ...`, or undo the edit")
    return None


def prototxt_model_problem(prototxt, model: PoseModel) -> Optional[str]:
    """One line when a prototxt that records a YAML skeleton (a deploy given to validate or export) is paired
    with another model or with its skeleton edited since; None when it fits or records nothing."""
    try:
        text = Path(prototxt).read_text(encoding="utf-8", errors="replace")
    except OSError:          # read, and reported, with the net itself
        return None
    for record in recorded_skeletons(text):
        if record.model != model.name or not model.skeleton_digest:
            return (f"{prototxt} was generated from the YAML skeleton {record.yaml_name} (model {record.model}), "
                    f"not for {model.name}: pass --model-yaml {record.yaml_name}")
        if model.skeleton_digest != record.digest:
            return (f"the skeleton {model.name} was edited after {prototxt} was generated from {record.yaml_name} "
                    f"(skeleton digest {model.skeleton_digest}, the prototxt records {record.digest}): use the "
                    "YAML the network was trained with, or regenerate and retrain")
    return None
