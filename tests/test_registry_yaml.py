"""YAML skeletons: the happy path and every validation error names the file and the problem."""
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from openpose_train.generator import registry as reg
from openpose_train.generator.models_cli import models as models_cmd

EXAMPLE = Path(reg.__file__).with_name("example_skeleton.yaml")

BASE = {
    "name": "TRI_4",
    "parts": ["Head", "Neck", "LHand", "RHand"],
    "pairs": [["Neck", "Head"], ["Neck", "LHand"], [1, 3]],
    "flips": [["LHand", "RHand"]],
    "variants": [{"op_model": "TRI_4_17", "dataset": "coco",
                  "sources": {"Head": 0, "Neck": ["left_shoulder", "right_shoulder"],
                              "LHand": 9, "RHand": 10}}],
}


def write(tmp_path, doc, name="skel.yaml"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def with_changes(**changes):
    doc = {k: v for k, v in BASE.items()}
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def test_example_yaml_loads():
    model = reg.load_skeleton_yaml(EXAMPLE)
    assert model.name == "BODY_19_EXAMPLE" and not model.upstream
    assert model.num_parts == 19 and model.num_pafs == 20 and model.has_background
    assert model.label_channels == 2 * (19 + 1 + 40)
    v = model.variant("BODY_19_EXAMPLE_17")
    assert v.sources[17] == (5, 6) and v.sources[18] == (11, 12) and v.num_lmdb_parts == 17
    assert model.variant("BODY_19_EXAMPLE_133").num_lmdb_parts == 133
    assert [model.parts[i] for i in model.to_coco17][:3] == ["Nose", "LEye", "REye"]
    assert (model.parts.index("LEye"), model.parts.index("REye")) in model.flip_pairs


def test_happy_path_and_registration(tmp_path):
    path = write(tmp_path, with_changes(sigma_ratios={"default": 1.0, "Head": 0.5},
                                        thresholds={"nms_threshold": 0.2},
                                        background=False))
    model = reg.load_skeleton_yaml(path)
    assert model.paf_pairs == ((1, 0), (1, 2), (1, 3)) == model.runtime_pairs
    assert model.flip_pairs == ((2, 3),)
    assert model.sigma_ratios == (0.5, 1.0, 1.0, 1.0)
    assert model.thresholds.nms_threshold == 0.2
    assert model.num_channels == 4 + 0 + 6
    v = model.variants[0]
    assert v.sources == ((0,), (5, 6), (9,), (10,)) and v.category == "COCO"
    assert "TRI_4" not in reg.list_models()
    try:
        reg.load_skeleton_yaml(path, register_model=True)
        assert reg.get_model("TRI_4").num_parts == 4
        assert reg.get_training_variant("TRI_4_17")[1].sources[1] == (5, 6)
    finally:
        reg._REGISTRY.pop("TRI_4", None)


def test_flip_mapping_form_and_custom_layout(tmp_path):
    doc = with_changes(
        flips={"LHand": "RHand"},
        dataset_layouts=[{"key": "tri_data", "keypoints": ["h", "n", "l", "r"],
                          "lmdb_dataset": "tri", "category": "COCO", "has_mask": False}],
        variants=[{"dataset": "tri_data", "sources": {"Head": "h", "Neck": 1, "LHand": "l"}}])
    try:
        model = reg.load_skeleton_yaml(write(tmp_path, doc))
        assert model.flip_pairs == ((2, 3),)
        v = model.variants[0]
        assert v.op_model == "TRI_4_4_tri_data" and v.sources[3] == () and v.empty_mask_parts == (3,)
        assert reg.get_dataset_layout("tri_data").lmdb_dataset == "tri"
    finally:
        reg._DATASETS.pop("tri_data", None)


ERRORS = [
    (with_changes(pairs=[["Neck", "Head"], [1, 7], [1, 3]]), "index 7 out of range"),
    (with_changes(pairs=[["Neck", "Head"], ["Neck", "Tail"], [1, 3]]), "unknown name 'Tail'"),
    (with_changes(parts=["Head", "Neck", "LHand", "Head"]), "duplicate part name 'Head'"),
    (with_changes(pairs=[["Neck", "Head"], ["LHand", "RHand"]]), "disconnected skeleton"),
    (with_changes(pairs=[["Neck", "Head"], ["Neck", "LHand"], [1, 3], ["Head", "Neck"]]),
     "duplicate pair"),
    (with_changes(flips={"LHand": "RHand", "RHand": "Head"}), "asymmetric flips"),
    (with_changes(flips=[["LHand", "RHand"], ["RHand", "LHand"]]), "duplicate flip pair"),
    (with_changes(flips=[["LHand", "RHand"], ["Head", "LHand"]]), "is in two flip pairs"),
    (with_changes(flips=[["LHand", "LHand"]]), "to itself"),
    (with_changes(flips=[["LHand", 9]]), "index 9 out of range"),
    (with_changes(variants=[{"dataset": "coco", "sources": {"Head": 17}}]), "index 17 out of range"),
    (with_changes(variants=[{"dataset": "coco", "sources": {"Head": "chin"}}]), "unknown name 'chin'"),
    (with_changes(variants=[{"dataset": "nope", "sources": {"Head": 0}}]), "unknown dataset 'nope'"),
    (with_changes(variants=[{"dataset": "coco", "sources": {"Tail": 0}}]), "unknown name 'Tail'"),
    (with_changes(sigma_ratios=[1.0, 1.0]), "2 values for 4 parts"),
    (with_changes(sigma_ratios={"Head": 0}), "must be > 0"),
    (with_changes(thresholds={"nms": 0.1}), "unknown key(s) nms"),
    (with_changes(colour="red"), "unknown key(s) colour"),
    (with_changes(parts=None), "'parts' must be a non-empty list"),
    (with_changes(pairs=None), "'pairs' is missing"),
    (with_changes(name=None), "'name' is missing"),
    (with_changes(stride="eight"), "'stride' must be a positive integer"),
    ("name: [unclosed\n", "YAML syntax error"),
    ("- just\n- a list\n", "skeleton must be a mapping"),
]


@pytest.mark.parametrize("doc,message", ERRORS, ids=[m for _, m in ERRORS])
def test_yaml_errors_name_file_and_problem(tmp_path, doc, message):
    path = write(tmp_path, doc, name="broken_skeleton.yaml")
    with pytest.raises(reg.SkeletonError) as err:
        reg.load_skeleton_yaml(path)
    text = str(err.value)
    assert text.startswith(str(path) + ":"), text
    assert message in text, text


def test_missing_file(tmp_path):
    with pytest.raises(reg.SkeletonError, match="cannot read skeleton file"):
        reg.load_skeleton_yaml(tmp_path / "absent.yaml")


# ---- CLI ----------------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(models_cmd, list(args))


def test_cli_lists_models():
    result = run()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:7] == ["name", "--model_pose", "parts", "PAFs", "C", "2C", "bkg"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line and not line.startswith("(")}
    assert rows["BODY_25"][1:7] == ["BODY_25", "25", "26", "78", "156", "yes"]
    assert rows["COCO_18"][1:7] == ["COCO", "18", "19", "57", "114", "yes"]
    assert rows["BODY_25B"][1:7] == ["BODY_25B", "25", "36", "97", "194", "no"]
    assert rows["BODY_135"][1:7] == ["BODY_135", "135", "152", "439", "878", "no"]
    assert "COCO_25B_17" in rows["BODY_25B"] and "COCO_135_133*" in rows["BODY_135"]
    assert set(rows) == set(reg.list_models())


def test_cli_describes_one_model():
    result = run("COCO")     # the --model_pose string works too
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("COCO_18:")
    assert "pose/coco/pose_deploy_linevec.prototxt" in out
    assert "     1 Neck" in out and "17 LEar" in out
    assert "0 1-8 Neck->RHip  channels 0/1  runtime 6" in out
    assert "flip swaps: LShoulder/RShoulder" in out
    assert "training variant COCO_18: dataset coco (17 keypoints, category COCO)" in out
    assert "Neck <- avg(5:left_shoulder, 6:right_shoulder)" in out
    out25 = run("BODY_25").output
    assert "labeled but never trained (empty CHANNELS_TO_MASK): Nose" in out25
    assert "COCO-17 reorder: 0 16 15 18 17 5 2 6 3 7 4 12 9 13 10 14 11   foot: 19 20 21 22 23 24" in out25
    out25b = run("BODY_25B").output
    assert "mask person boxes only ({-1}): Neck, HeadTop" in out25b
    assert "HeadTop <- 9:head_top" in out25b


def test_cli_unknown_model_lists_known():
    result = run("BODY_26")
    assert result.exit_code != 0
    assert "unknown model 'BODY_26'" in result.output and "BODY_25B" in result.output
    assert "Traceback" not in result.output


def test_cli_yaml(tmp_path):
    result = run("--yaml", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("BODY_19_EXAMPLE:")
    assert "training variant BODY_19_EXAMPLE_133 (our extension): dataset wholebody" in result.output
    bad = write(tmp_path, with_changes(pairs=[["Neck", "Head"], ["LHand", "RHand"]]), "bad.yaml")
    result = run("--yaml", str(bad))
    assert result.exit_code != 0 and "bad.yaml: disconnected skeleton" in result.output
    assert "Traceback" not in result.output


def test_cli_lists_dataset_layouts():
    result = run("--datasets")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert rows["wholebody"][:5] == ["wholebody", "133", "COCO_WholeBody", "COCO", "yes"]
    assert " ".join(rows["wholebody"][5:]) == (
        "keypoints + foot_kpts + face_kpts + lefthand_kpts + righthand_kpts")
    assert rows["dome135"][1:5] == ["135", "dome135", "DOME", "no"]
    assert set(rows) == set(reg.list_dataset_layouts())


def test_cli_resolves_training_model_string():
    result = run("PT_25B_15")
    assert result.exit_code == 0 and result.output.startswith("BODY_25B:")
