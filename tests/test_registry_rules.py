"""The model-string rules are registry fields (issue 13): a YAML skeleton sets each of them and the
labels, the augmentation and the person filter honour it (docs/labels.md §Per-model rules,
docs/postprocessing.md §Person filter)."""
import subprocess

import numpy as np
import pytest
import yaml

from openpose_train.caffe_layers import augment as A
from openpose_train.caffe_layers import caffe_pb2
from openpose_train.caffe_layers import labels as L
from openpose_train.caffe_layers import op_data as OD
from openpose_train.caffe_layers import opdata_config
from openpose_train.generator import registry as reg
from openpose_train.validation.postprocess import parse_people
from openpose_train.validation.postprocess_reference import parse_people_reference

PARTS = ["Nose", "Neck", "REye", "LEye", "RKnee", "RAnkle", "LKnee", "LAnkle", "LBigToe", "RBigToe"]
PAIRS = [["Neck", "Nose"], ["Nose", "REye"], ["Nose", "LEye"], ["Neck", "RKnee"], ["RKnee", "RAnkle"],
         ["RAnkle", "RBigToe"], ["Neck", "LKnee"], ["LKnee", "LAnkle"], ["LAnkle", "LBigToe"]]
# every moved field at a non-default value (label_rules_implemented: its default, true; the
# REFUSED variant sets it false), and the value each "minus one field" variant takes instead
ALL_RULES = {
    "force_global_mask": (True, False),
    "missing_threshold": (2, 4),
    "mask_feet_pairs": ([["RKnee", "RAnkle"], ["LKnee", "LAnkle"]], []),
    "force_minus1_mask": (True, False),
    "roi_mask_codes": ([2, 3, 4], [3, 4]),
    "mask_is_background": (True, False),
    "label_rules_implemented": (True, False),
}
PERSON_FILTER = {"foot_parts": ["LBigToe", "RBigToe"], "face_parts": ["Nose", "REye", "LEye"],
                 "hand_groups": [["LKnee", "LAnkle"]]}
NUM_PAFS = len(PAIRS)
HEAT = 2 * NUM_PAFS                  # first heatmap channel of a label half
BKG = HEAT + len(PARTS)
C = BKG + 1                          # channels per label half


def _skeleton(path, name, person_filter=None):
    base = {"op_model": f"{name}_ALL", "dataset": "rules10", "sources": {p: p.lower() for p in PARTS},
            "minus1": ["LBigToe"], **{k: v[0] for k, v in ALL_RULES.items()}}
    variants = [base] + [{**base, "op_model": f"{name}_NO_{key.upper()}", key: other}
                         for key, (_, other) in ALL_RULES.items()]
    # the person boxes of steps 6 and 8 clear the background weight too: maskFeet is seen without them
    bare = {**base, "force_minus1_mask": False, "roi_mask_codes": [3, 4]}
    variants.append({**bare, "op_model": f"{name}_FEET_ONLY"})
    variants.append({**bare, "op_model": f"{name}_NEITHER", "mask_feet_pairs": []})
    doc = {"name": name, "parts": PARTS, "pairs": PAIRS, "flips": [["REye", "LEye"]],
           "thresholds": {"connect_min_subset_cnt": 3},
           "dataset_layouts": [{"key": "rules10", "keypoints": [p.lower() for p in PARTS],
                                "lmdb_dataset": "rules10", "category": "COCO", "has_mask": True}],
           "variants": variants}
    if person_filter:
        doc["person_filter"] = person_filter
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return reg.load_skeleton_yaml(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _skeleton(tmp_path_factory.mktemp("rules") / "rules.yaml", "RULES10", PERSON_FILTER)


def _person(dx, nose_v=1, rbigtoe_v=1):
    xy = [(60, 30), (60, 50), (55, 25), (65, 25), (50, 100), (50, 160), (70, 100), (70, 160), (75, 170), (45, 170)]
    people = np.array([(x + dx, y, 1) for x, y in xy], np.float32)
    people[0, 2], people[9, 2] = nose_v, rbigtoe_v
    return people


# main person: Nose v=2 (missing under threshold 2); other person: RBigToe v=2 (ROI code 2)
PEOPLE = np.stack([_person(0, nose_v=2), _person(90, rbigtoe_v=2)])


def _weights(model, op_model):
    label = L.render_labels(model, model.variant(op_model), PEOPLE, None, (23, 23), 8, 7.0)
    assert label.shape == (2 * C, 23, 23)
    return label[:C]


def test_yaml_fields_reach_the_variant(model):
    v = model.variant("RULES10_ALL")
    assert v.force_global_mask and v.global_missing_mask and v.missing_threshold == 2
    assert v.mask_feet_pairs == ((4, 5), (6, 7)) and v.force_minus1_mask and v.minus1_masking
    assert v.roi_mask_codes == (2, 3, 4) and v.mask_is_background and v.label_rules_implemented
    assert model.person_filter == reg.PersonFilter((8, 9), (0, 2, 3), ((6, 7),))
    off = model.variant("RULES10_NO_FORCE_GLOBAL_MASK")
    assert not off.global_missing_mask and not model.variant("RULES10_NO_FORCE_MINUS1_MASK").minus1_masking


def test_global_mask_and_missing_threshold(model):
    nose = HEAT + PARTS.index("Nose")
    far = (20, 22)              # a cell outside the main person's box and the other person's Gaussians
    assert _weights(model, "RULES10_ALL")[nose][far] == 0                 # main person's v=2 Nose: masked everywhere
    assert _weights(model, "RULES10_NO_MISSING_THRESHOLD")[nose][far] == 1    # threshold 4: v=2 is not missing
    assert _weights(model, "RULES10_NO_FORCE_GLOBAL_MASK")[nose][far] == 1    # P == P_lmdb: step 5 off


def test_mask_feet_pairs_clear_the_background_weight_below_the_ankles(model):
    on = _weights(model, "RULES10_FEET_ONLY")[BKG]
    off = _weights(model, "RULES10_NEITHER")[BKG]
    cleared = on != off
    assert cleared.sum() > 5 and (on[cleared] == 0).all()
    assert np.nonzero(cleared)[0].min() >= 13             # the foot boxes lie below the knees (row 12.5)


def test_minus1_masking_and_roi_codes(model):
    toe, rtoe = HEAT + PARTS.index("LBigToe"), HEAT + PARTS.index("RBigToe")
    assert (_weights(model, "RULES10_NO_FORCE_MINUS1_MASK")[toe] == 1).all()
    assert (_weights(model, "RULES10_ALL")[toe] == 0).any()               # "-1" part: people boxes masked
    assert (_weights(model, "RULES10_NO_ROI_MASK_CODES")[rtoe] == 1).all()
    masked = _weights(model, "RULES10_ALL")[rtoe] == 0                   # v=2 of the second person
    cols = np.nonzero(masked)[1]
    assert masked.any() and cols.min() >= 90 // 8 - 1


def test_mask_is_background_replaces_mask_miss(model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (160, 200, 3), np.uint8)
    background = rng.integers(0, 255, (300, 300, 3), np.uint8)
    config = A.AugmentConfig(stride=8, crop_x=184, crop_y=184, flip_prob=0)

    def grid(op_model, mask):
        sample = A.Sample(image=image, mask_miss=mask, people=PEOPLE[:1] * 0.5, objpos=np.float32([100, 80]),
                          scale_self=0.6)
        return A.augment_variant_sample(np.random.default_rng(1), config, sample, model, model.variant(op_model),
                                        background=background).mask_grid

    full, holed = np.full((160, 200), 255, np.uint8), np.full((160, 200), 255, np.uint8)
    holed[40:120, 50:150] = 0
    assert not np.array_equal(grid("RULES10_NO_MASK_IS_BACKGROUND", full), grid("RULES10_NO_MASK_IS_BACKGROUND", holed))
    assert np.array_equal(grid("RULES10_ALL", full), grid("RULES10_ALL", holed))    # mask_miss is not read


def test_label_rules_implemented_false_is_refused(model):
    with pytest.raises(L.LabelError, match="not implemented"):
        L.label_layout(model, model.variant("RULES10_NO_LABEL_RULES_IMPLEMENTED"))
    reg.register(model)
    try:
        lp = caffe_pb2.LayerParameter(name="data", type="OPData")
        lp.op_transform_param.sources, lp.op_transform_param.probabilities = "/x", "1"
        lp.op_transform_param.models = "RULES10_NO_LABEL_RULES_IMPLEMENTED"
        with pytest.raises(OD.OPDataError, match="not implemented"):
            opdata_config.parse_layer(lp)
    finally:
        reg._REGISTRY.pop(model.name, None)


def _filter_maps(model):
    # a full person; feet + 3 others (dropped by the foot rule); a face only; a "hand" + neck
    subsets = [PARTS, ["Nose", "Neck", "RKnee", "RAnkle", "RBigToe"], ["Nose", "REye", "LEye"],
               ["Neck", "LKnee", "LAnkle"]]
    people = np.zeros((4, len(PARTS), 3), np.float32)
    people[..., 2] = 4
    for i, subset in enumerate(subsets):
        for name in subset:
            x, y = _person(0)[PARTS.index(name), :2]
            people[i, PARTS.index(name)] = (x + 170 * (i % 2) + 20, y + 180 * (i // 2), 1)
    variant = reg.TrainingVariant("MAPS", "rules10", "DOME", len(PARTS), tuple((i,) for i in range(len(PARTS))))
    label = L.render_labels(model, variant, people, None, (92, 92), 4, 7.0)
    return L.label_targets_to_net_output(model, label)


@pytest.mark.parametrize("parse", [parse_people, parse_people_reference])
def test_person_filter_groups(model, tmp_path, parse):
    plain = _skeleton(tmp_path / "plain.yaml", "RULES10_PLAIN")
    maps = _filter_maps(model)
    assert len(parse(plain, maps, scale=4.0)[0]) == 4            # no groups: everybody has >= 3 keypoints
    kept = parse(model, maps, scale=4.0)[0]
    assert len(kept) == 1 and (kept[0, :, 2] > 0).all()          # only the full person survives
    # maximising positives (same thresholds): the feet count again, the face and hand groups still apply
    assert len(parse(model, maps, scale=4.0, thresholds=model.thresholds, maximize_positives=True)[0]) == 2


def test_models_command_describes_the_rules(tmp_path):
    from click.testing import CliRunner
    from openpose_train.generator.models_cli import models
    _skeleton(tmp_path / "rules.yaml", "RULES10", PERSON_FILTER)
    out = CliRunner().invoke(models, ["--yaml", str(tmp_path / "rules.yaml")]).output
    assert ("label rules: missing_threshold 2, mask_feet_pairs RKnee/RAnkle LKnee/LAnkle, force_minus1_mask True, "
            "roi_mask_codes 2 3 4, mask_is_background True") in out
    assert "person filter: foot parts LBigToe, RBigToe; face parts Nose, REye, LEye; hand 0 LKnee, LAnkle" in out
    assert "label rules: mask_feet_pairs RKnee/RAnkle LKnee/LAnkle\n" in CliRunner().invoke(models, ["BODY_25"]).output


def test_example_yaml_and_readme_document_the_fields(repo_root):
    for path in ("README.md", "generator/example_skeleton.yaml", "generator/skeleton.py"):
        text = (repo_root / path).read_text()
        for key in list(ALL_RULES) + ["person_filter"]:
            assert key in text, (path, key)


def test_no_model_string_branches_outside_the_registry(repo_root):
    """The issue's grep: nothing outside generator/ compares a model string."""
    out = subprocess.run(["grep", "-rn", r'op_model ==\|op_model in\|== "MPII\|== "COCO',
                          "caffe_layers", "training", "validation", "dataset_tools"],
                         cwd=repo_root, capture_output=True, text=True)
    assert out.stdout == ""
