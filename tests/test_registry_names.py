"""The registry's PAF pairs, runtime pairs and flip swaps are written by part name and turned into
part indexes when a model is registered (generator/registry.py, as mmpose's dataset meta); the index
view is the fork's, pinned in tests/data/registry_pairs.json (taken from the index tables the
registry was written in before)."""
import json

import pytest

from openpose_train.generator import registry
from openpose_train.generator.registry import SkeletonError, part_indexes, part_names

FIELDS = ("paf_pairs", "runtime_pairs", "flip_pairs")


@pytest.fixture(scope="module")
def pinned(repo_root):
    return json.loads((repo_root / "tests" / "data" / "registry_pairs.json").read_text())


def test_every_registered_model_is_pinned(pinned):
    upstream = [name for name in registry.list_models() if registry.get_model(name).upstream]
    assert sorted(pinned) == sorted(upstream)


@pytest.mark.parametrize("name", [n for n in registry.list_models() if registry.get_model(n).upstream])
def test_the_index_view_is_the_forks(pinned, name):
    model = registry.get_model(name)
    for field in FIELDS:
        assert [list(p) for p in getattr(model, field)] == pinned[name][field], (name, field)


@pytest.mark.parametrize("name", registry.list_models())
def test_names_and_indexes_round_trip(name):
    model = registry.get_model(name)
    for field in FIELDS:
        pairs = getattr(model, field)
        assert part_indexes(name, model.parts, part_names(model.parts, pairs)) == pairs


def test_a_table_naming_no_part_fails_at_load():
    parts = registry.BODY_25_PARTS
    assert part_indexes("X", parts, registry._links("Neck-MidHip")) == ((1, 8),)
    with pytest.raises(SkeletonError, match="X: pair Neck-MidHips: no part named MidHips"):
        part_indexes("X", parts, registry._links("Neck-MidHips"))
    with pytest.raises(SkeletonError, match="a part paired with itself"):
        part_indexes("X", parts, registry._swaps("LEye/LEye"))


def test_tables_read_by_name():
    """A few facts the index strings hid: BODY_59 links its lower abdomen where BODY_19 links the
    mid hip, and the face flips mirror the eye corners (REye0 <-> LEye3)."""
    body_59 = registry.get_model("BODY_59")
    assert part_names(body_59.parts, body_59.paf_pairs[:1]) == (("Neck", "LowerAbs"),)
    face = registry.get_model("FACE_70")
    assert ("REye0", "LEye3") in part_names(face.parts, face.flip_pairs)
