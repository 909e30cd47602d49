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
    (with_changes(variants=[{"dataset": "coco", "sources": {"Head": "chin"}}]), "unknown coco keypoint 'chin'"),
    (with_changes(variants=[{"dataset": "nope", "sources": {"Head": 0}}]), "unknown dataset 'nope'"),
    (with_changes(variants=[{"dataset": "coco", "sources": {"Tail": 0}}]), "unknown name 'Tail'"),
    (with_changes(sigma_ratios=[1.0, 1.0]), "2 values for 4 parts"),
    (with_changes(sigma_ratios={"Head": 0}), "sigma_ratios.Head: must be a number from 0.01 to 100 (the data layer multiplies its sigma by it, in float32), got 0"),
    (with_changes(thresholds={"nms": 0.1}), "unknown key(s) nms"),
    (with_changes(colour="red"), "unknown key(s) colour"),
    (with_changes(parts=None), "top level: 'parts' is missing (a non-empty list of part names)"),
    (with_changes(pairs=None), "'pairs' is missing"),
    (with_changes(name=None), "'name' is missing"),
    (with_changes(stride="eight"), "stride: must be 8"),
    ("name: [unclosed\n", "line 2, column 1: YAML syntax error: did not find expected ',' or ']'"),
    ("name: X\nparts:\n\t- a\n", "line 3, column 1: YAML syntax error: found character that cannot start any "
                                  "token (while scanning for the next token); YAML indents with spaces, not tabs"),
    ("name: !!python/object/apply:os.system [touch PWNED]\n", "YAML syntax error: could not determine a constructor"),
    ("- just\n- a list\n", "top level: must be a mapping of skeleton fields"),
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
    assert result.exit_code != 0 and "bad.yaml: pairs: disconnected skeleton" in result.output
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


# ---- the schema: every bad field is refused with its path (docs/refusals.md §YAML skeletons) -----------

VARIANT = BASE["variants"][0]


def variant_with(**changes):
    return with_changes(variants=[dict(VARIANT, **changes)])


BAD_FIELDS = [
    # types
    (with_changes(background="yes please"), "background: must be true or false, got 'yes please'"),
    (with_changes(name=25), "name: must be a name of letters, digits"),
    (with_changes(thresholds={"max_peaks": 12.5}), "thresholds.max_peaks: must be an integer >= 0, got 12.5"),
    (variant_with(missing_threshold=2.0), "variants[0].missing_threshold: must be an integer 1..4, got 2.0"),
    (variant_with(force_global_mask="no"), "variants[0].force_global_mask: must be true or false, got 'no'"),
    (variant_with(roi_mask_codes=[3, 5]), "variants[0].roi_mask_codes[1]: must be 2, 3 or 4, got 5"),
    (with_changes(variants={"dataset": "coco"}), "variants: must be a list of training variants, got {"),
    # shape: lists of names, not numbers, nested lists or single names
    (with_changes(parts=["Head", 7, "LHand", "RHand"]), "parts[1]: must be a part name, got 7"),
    (with_changes(parts=[["Head", "Neck"], "LHand", "RHand"]), "parts[0]: must be a part name, got ['Head', 'Neck']"),
    (with_changes(parts="Head"), "parts: must be a non-empty list of part names, got 'Head'"),
    (with_changes(pairs=[[["Neck"], "Head"], ["Neck", "LHand"], [1, 3]]),
     "pairs[0][0]: must be a part name or index, got ['Neck']"),
    (with_changes(pairs=[["Neck", "Head", "LHand"], [1, 3]]), "pairs[0]: must be a pair [A, B] of part names"),
    (with_changes(pairs=[[1.0, 0], ["Neck", "LHand"], [1, 3]]), "pairs[0][0]: must be a part name or index, got 1.0"),
    (with_changes(flips=["LHand", "RHand"]), "flips[0]: must be a pair [A, B] of part names or indexes, got 'LHand'"),
    (variant_with(sources={"Head": [[0, 1]]}), "variants[0].sources.Head[0]: must be a dataset keypoint name or index"),
    (variant_with(sources={3.5: 0}), "variants[0].sources: key 3.5: must be a part name or index"),
    (variant_with(minus1="Head"), "variants[0].minus1: must be a list of part names or indexes, got 'Head'"),
    (with_changes(person_filter={"hand_groups": ["LHand", "RHand"]}),
     "person_filter.hand_groups[0]: must be a list of part names or indexes, got 'LHand'"),
    (with_changes(to_coco17=["Head"] * 16), "to_coco17: must be a list of 17 part names or indexes"),
    (with_changes(dataset_layouts=[{"key": "k", "keypoints": ["a", 2], "lmdb_dataset": "k", "category": "COCO"}]),
     "dataset_layouts[0].keypoints[1]: must be a keypoint name, got 2"),
    # finiteness
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nsigma_ratios: {Head: .inf}\n",
     "sigma_ratios.Head: must be a number from 0.01 to 100 (the data layer multiplies its sigma by it, in float32), got inf"),
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nsigma_ratios: [.nan, 1]\n",
     "sigma_ratios[0]: must be a number from 0.01 to 100 (the data layer multiplies its sigma by it, in float32), got nan"),
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nsigma_ratios: [1e300, 1]\n",
     "sigma_ratios[0]: must be a number from 0.01 to 100"),        # inf as the data layer's float32
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nthresholds: {nms_threshold: -.inf}\n",
     "thresholds.nms_threshold: must be a finite number, got -inf"),
    # YAML's booleans where a name is meant
    ("name: TRI_4\nparts: [Head, on]\npairs: [[0, 1]]\n", "parts[1]: must be a part name, got True (YAML reads"),
    # unknown fields, anywhere
    (with_changes(colour="red"), "top level: unknown key(s) colour; allowed: name, description, parts"),
    (variant_with(colour="red"), "variants[0]: unknown key(s) colour; allowed: op_model, dataset, sources"),
    (with_changes(person_filter={"feet": ["Head"]}), "person_filter: unknown key(s) feet"),
    (with_changes(dataset_layouts=[{"key": "k", "keypoints": ["a"], "lmdb_dataset": "k", "category": "COCO",
                                    "mask": True}]), "dataset_layouts[0]: unknown key(s) mask"),
    (with_changes(variant=VARIANT), "give 'variants' (a list) or 'variant' (one), not both"),
    # stride: accepted before and ignored; the networks and OpenPose run at stride 8 only
    (with_changes(stride=4), "stride: must be 8 (the networks and OpenPose's runtime have no other output stride)"),
    # nothing built-in is replaced
    (with_changes(name="BODY_25"), "name: 'BODY_25' is a built-in model"),
    (variant_with(op_model="COCO_25_17"), "variants[0].op_model: 'COCO_25_17' is a built-in training model string"),
    (with_changes(openpose_name="COCO"), "openpose_name: 'COCO' selects OpenPose's own COCO_18 tables"),
    (with_changes(dataset_layouts=[{"key": "coco", "keypoints": ["a"], "lmdb_dataset": "k", "category": "COCO"}]),
     "dataset_layouts[0].key: 'coco' is a built-in dataset layout"),
    (with_changes(model_folder="../../bin"), "model_folder: must be a relative folder under OpenPose's models/"),
    (with_changes(model_folder="/etc/pose"), "model_folder: must be a relative folder under OpenPose's models/"),
    (with_changes(dataset_layouts=[{"key": "k", "keypoints": ["a"], "lmdb_dataset": "k", "category": "COCO",
                                    "json_fields": ["keypoints", "foot"], "validity_fields": ["x"]}]),
     "dataset_layouts[0].validity_fields: 1 names for 2 json_fields"),
    ("", "the file is empty"),
]


@pytest.mark.parametrize("doc,message", BAD_FIELDS, ids=[m[:60] for _, m in BAD_FIELDS])
def test_bad_fields_name_file_path_and_value(tmp_path, doc, message):
    path = write(tmp_path, doc, name="skeleton.yaml")
    with pytest.raises(reg.SkeletonError) as err:
        reg.load_skeleton_yaml(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_more_problems_are_counted(tmp_path):
    path = write(tmp_path, with_changes(background=3, parts=["Head", 7, "LHand", [1]]))
    with pytest.raises(reg.SkeletonError, match=r"\(and 2 more problems\)$"):
        reg.load_skeleton_yaml(path)


DUPLICATES = [
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nparts: [A, B]\n",
     "line 4: duplicate key 'parts' (first at line 2); YAML would keep only the last one"),
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nvariants:\n  - dataset: coco\n"
     "    sources:\n      Head: 0\n      Neck: 5\n      Head: 1\n",
     "line 9: duplicate key 'Head' (first at line 7); YAML would keep only the last one"),
    ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nflips: {0: 1, 0: 1}\n",
     "line 4: duplicate key 0 (first at line 4); YAML would keep only the last one"),
]


@pytest.mark.parametrize("text,message", DUPLICATES, ids=["top", "nested", "same line"])
def test_duplicate_keys_are_refused(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(reg.SkeletonError) as err:
        reg.load_skeleton_yaml(path)
    assert str(err.value) == f"{path}: {message}"


def test_merge_keys_may_still_be_overridden(tmp_path):
    text = ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nrules: &rules {missing_threshold: 2}\n")
    with pytest.raises(reg.SkeletonError, match="unknown key"):       # an anchor needs a home; not at the top
        reg.load_skeleton_yaml(write(tmp_path, text))
    text = ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nvariants:\n"
            "  - &base {dataset: coco, sources: {Head: 0, Neck: 5}, missing_threshold: 2}\n"
            "  - {<<: *base, op_model: TRI_4_B, missing_threshold: 3}\n")
    model = reg.load_skeleton_yaml(write(tmp_path, text))
    assert [v.missing_threshold for v in model.variants] == [2, 3]


def test_stride_8_and_empty_optional_fields_are_accepted(tmp_path):
    text = ("name: TRI_4\nparts: [Head, Neck]\npairs: [[Head, Neck]]\nstride: 8\nflips:\nthresholds:\n"
            "variants:\nperson_filter:\nsigma_ratios:\n")
    model = reg.load_skeleton_yaml(write(tmp_path, text))
    assert model.stride == 8 and model.flip_pairs == () and model.variants == () and model.sigma_ratios == (1.0, 1.0)


def test_schema_covers_every_registry_field_and_the_docs_name_them(repo_root):
    """One place per fact: the schema's variant keys are the registry's label rules, its threshold keys
    PostprocessThresholds' fields; docs/formats.md §YAML skeletons names every key."""
    from dataclasses import fields
    from jsonschema import Draft202012Validator
    from openpose_train.generator import skeleton
    Draft202012Validator.check_schema(skeleton.SCHEMA)
    top = skeleton.SCHEMA["properties"]
    variant = top["variants"]["items"]["properties"]
    assert set(reg.LABEL_RULE_FIELDS) <= set(variant)
    assert set(top["thresholds"]["properties"]) == {f.name for f in fields(reg.PostprocessThresholds)}
    text = (repo_root / "docs" / "formats.md").read_text().split("## YAML skeletons")[1]
    keys = (set(top) | set(variant) | set(top["dataset_layouts"]["items"]["properties"])
            | set(top["person_filter"]["properties"]) | set(top["thresholds"]["properties"]))
    assert not [k for k in keys if f"`{k}`" not in text]


def test_the_schema_library_loads_only_with_a_yaml():
    """`openpose-train models` starts without jsonschema (docs/architecture.md §Import rules)."""
    import subprocess
    import sys
    code = ("import sys, openpose_train.generator.registry, openpose_train.generator.skeleton, "
            "openpose_train.generator.models_cli; print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- a skeleton edited after the files were generated ----------------------------------------------------

def test_edited_skeleton_is_detected_at_train_start_and_by_fork_check(tmp_path):
    """The training prototxt records the skeleton's digest; an edit that changes the model (not one that
    changes only comments or the description) is reported in one line naming the YAML and the prototxt."""
    import subprocess
    import sys
    from openpose_train.generator.cli import prototxt
    from openpose_train.generator.fork_check import fork_check
    from openpose_train.generator.skeleton import generated_from_problem, recorded_skeletons
    src = tmp_path / "my_skeleton.yaml"
    src.write_text(EXAMPLE.read_text())
    out = tmp_path / "mine"
    try:
        r = CliRunner().invoke(prototxt, ["--yaml", str(src), "--preset", "tiny", "--out", str(out), "--lmdb",
                                          str(tmp_path / "lmdb_coco"), "--gpus", "", "--no-vgg"])
        assert r.exit_code == 0, r.output
    finally:
        reg._REGISTRY.pop("BODY_19_EXAMPLE", None)
    training = out / "pose_training.prototxt"
    text = training.read_text()
    yaml_copy = out / "my_skeleton.yaml"
    (record,) = recorded_skeletons(text)
    assert (record.model, record.yaml_name) == ("BODY_19_EXAMPLE", "my_skeleton.yaml")
    model = reg.load_skeleton_yaml(yaml_copy)
    assert record.digest == model.skeleton_digest
    assert generated_from_problem(training, text, {model.name: (str(yaml_copy), model)}) is None
    yaml_copy.write_text("# a comment\n" + yaml_copy.read_text().replace("description: COCO", "description: Co"))
    model = reg.load_skeleton_yaml(yaml_copy)
    assert generated_from_problem(training, text, {model.name: (str(yaml_copy), model)}) is None
    assert "pass --model-yaml my_skeleton.yaml" in generated_from_problem(training, text, {})

    # validate / export pair the deploy with a model through check_output_channels: the same check, and a
    # deploy of a skeleton is refused with a built-in model (whose channel count could even match)
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt
    from openpose_train.validation.inference import InferenceError, check_output_channels
    deploy = out / "pose_deploy.prototxt"
    assert recorded_skeletons(deploy.read_text()) == (record,)
    check_output_channels(deploy, read_net_prototxt(deploy), model)
    with pytest.raises(InferenceError, match="generated from the YAML skeleton my_skeleton.yaml .*not for BODY_25: "
                                             "pass --model-yaml my_skeleton.yaml"):
        check_output_channels(deploy, read_net_prototxt(deploy), reg.get_model("BODY_25"))
    swapped = yaml_copy.read_text().replace("LWrist: 9, RWrist: 10", "LWrist: 10, RWrist: 9")   # same channels
    assert swapped != yaml_copy.read_text()
    with pytest.raises(InferenceError, match="the skeleton BODY_19_EXAMPLE was edited after .*pose_deploy.prototxt "
                                             "was generated from my_skeleton.yaml"):
        check_output_channels(deploy, read_net_prototxt(deploy),
                              reg.load_skeleton_yaml(write(tmp_path, swapped, "swapped.yaml")))

    yaml_copy.write_text(yaml_copy.read_text().replace("  - [Neck, MidHip]\n", "  - [Neck, MidHip]\n  - [Nose, Chin]\n")
                         .replace("parts: [Nose, ", "parts: [Nose, Chin, "))
    edited = f"my_skeleton.yaml was edited after pose_training.prototxt was generated from it"
    r = CliRunner().invoke(fork_check, [str(training)])
    assert r.exit_code == 1 and "the Caffe fork cannot train it" in r.output and edited in r.output, r.output
    train = subprocess.run([sys.executable, "-m", "openpose_train.cli", "train", "-solver", "pose_solver.prototxt", "--model-yaml",
                            "my_skeleton.yaml"], cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
    errors = [line for line in train.stdout.splitlines() if line.startswith("Error:")]
    assert train.returncode == 1 and len(errors) == 1 and edited in errors[0], train.stdout
    assert "regenerate the files with `openpose-train prototxt --yaml my_skeleton.yaml" in errors[0]
    assert "Traceback" not in train.stdout


# ---- a skeleton's own dataset layouts are honoured by `openpose-train lmdb` ---------------------------------

LAYOUT_SKELETON = """\
name: TRI_4
parts: [Head, Neck, LHand, RHand]
pairs: [[Neck, Head], [Neck, LHand], [Neck, RHand]]
flips: [[LHand, RHand]]
dataset_layouts:
  - key: my_coco
    keypoints: [nose, left_eye, right_eye, left_ear, right_ear, left_shoulder, right_shoulder, left_elbow,
                right_elbow, left_wrist, right_wrist, left_hip, right_hip, left_knee, right_knee, left_ankle,
                right_ankle]
    lmdb_dataset: MY_COCO
    category: COCO
    has_mask: false
variants:
  - {dataset: my_coco, sources: {Head: nose, Neck: [left_shoulder, right_shoulder], LHand: 9, RHand: 10}}
"""


def test_lmdb_writes_a_skeleton_layout_as_it_says(tmp_path):
    """`lmdb --model-yaml S --dataset KEY`: the records carry the layout's dataset string, its mask channel
    choice and its category's coordinate convention (COCO: stored 1-based, like the built-in coco layout's
    records of the same people); `prototxt --yaml` then recognises the LMDB by that string."""
    from openpose_train.caffe_layers.lmdb_reader import iter_records
    from openpose_train.cli import main
    from openpose_train.generator.skeleton import load_skeleton_yaml as load

    def cli(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    skeleton = write(tmp_path, LAYOUT_SKELETON, "tri.yaml")
    assert cli("synth", "--out", tmp_path / "synth", "--images", 3, "--width", 96, "--height", 96).exit_code == 0
    common = ["--json", tmp_path / "synth/annotations/person_keypoints_train2017.json",
              "--images", tmp_path / "synth/train2017", "--quiet"]
    try:
        refused = cli("lmdb", *common, "--out", tmp_path / "lmdb_mine", "--dataset", "my_coco")
        assert refused.exit_code == 2 and "a YAML skeleton's layouts need --model-yaml" in refused.output
        for args in (["--out", tmp_path / "lmdb_coco"],
                     ["--out", tmp_path / "lmdb_mine", "--dataset", "my_coco", "--model-yaml", skeleton]):
            r = cli("lmdb", *common, *args)
            assert r.exit_code == 0, r.output
        coco = list(iter_records(tmp_path / "lmdb_coco"))
        mine = list(iter_records(tmp_path / "lmdb_mine"))
        assert len(mine) == len(coco) > 0
        for (_, a), (_, b) in zip(coco, mine):
            assert (a.meta.dataset, b.meta.dataset) == ("COCO", "MY_COCO")
            assert a.mask_miss is not None and b.mask_miss is None                 # has_mask: false
            assert (a.meta.joints == b.meta.joints).all()                          # both stored 1-based
            assert (a.meta.zero_based().joints == b.meta.zero_based().joints).all()
        r = cli("inspect", tmp_path / "lmdb_mine", "--model-yaml", skeleton, "--out", tmp_path / "grid.png", "--n", 2)
        assert r.exit_code == 0 and "2 of 2 records" in r.output and (tmp_path / "grid.png").is_file(), r.output
        r = cli("prototxt", "--yaml", skeleton, "--preset", "tiny", "--out", tmp_path / "net", "--lmdb",
                tmp_path / "lmdb_mine", "--no-vgg")
        assert r.exit_code == 0, r.output
        assert 'models: "TRI_4_17_my_coco"' in (tmp_path / "net" / "pose_training.prototxt").read_text()
        assert load(skeleton).variants[0].op_model == "TRI_4_17_my_coco"
    finally:
        reg._REGISTRY.pop("TRI_4", None)
        reg._DATASETS.pop("my_coco", None)


def test_prototxt_refuses_two_models_and_a_file_name_the_scripts_would_expand(tmp_path):
    from openpose_train.generator.cli import prototxt
    r = CliRunner().invoke(prototxt, ["--yaml", str(EXAMPLE), "--model", "BODY_25", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "give --model NAME or --yaml SKELETON, not both" in r.output
    odd = write(tmp_path, EXAMPLE.read_text(), "my$(touch PWNED).yaml")
    r = CliRunner().invoke(prototxt, ["--yaml", str(odd), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "would expand" in r.output and not (tmp_path / "b").exists()


def test_train_refuses_two_different_skeletons_of_one_name(tmp_path):
    from openpose_train.training.cli import TrainingError, register_skeletons
    a = write(tmp_path, BASE, "a.yaml")
    same = write(tmp_path, BASE, "same.yaml")
    b = write(tmp_path, with_changes(background=False), "b.yaml")
    try:
        assert set(register_skeletons([str(a), str(same)])) == {"TRI_4"}
        with pytest.raises(TrainingError, match=r"--model-yaml .*b.yaml and .*a.yaml both define a model 'TRI_4'"):
            register_skeletons([str(a), str(b)])
    finally:
        reg._REGISTRY.pop("TRI_4", None)


def test_models_shows_a_skeletons_layouts_and_their_descriptions(tmp_path):
    """Every layout field is shown somewhere: `models --yaml S --datasets` lists the skeleton's layouts,
    `models --yaml S` names each variant's layout description."""
    text = LAYOUT_SKELETON.replace("has_mask: false", "has_mask: false\n    description: COCO under my name")
    skeleton = write(tmp_path, text, "tri.yaml")
    try:
        table = run("--yaml", str(skeleton), "--datasets")
        assert table.exit_code == 0, table.output
        row = next(line.split() for line in table.output.splitlines() if line.startswith("my_coco "))
        assert row == ["my_coco", "17", "MY_COCO", "COCO", "no", "keypoints"]
        described = run("--yaml", str(skeleton)).output
        assert ("training variant TRI_4_17_my_coco (our extension): dataset my_coco (17 keypoints, category COCO): "
                "COCO under my name") in described
    finally:
        reg._DATASETS.pop("my_coco", None)


def test_skeleton_digest_is_the_files_data(tmp_path):
    """The digest is the YAML's data (not the dataclass the code builds from it, which a newer version may
    extend): key order, comments and the description do not change it; any value does."""
    base = reg.load_skeleton_yaml(write(tmp_path, BASE, "a.yaml")).skeleton_digest
    reordered = dict(reversed(list(BASE.items())), description="another line")
    assert reg.load_skeleton_yaml(write(tmp_path, "# note\n" + yaml.safe_dump(reordered, sort_keys=False),
                                        "b.yaml")).skeleton_digest == base
    assert reg.load_skeleton_yaml(write(tmp_path, with_changes(background=True), "c.yaml")).skeleton_digest != base
    assert len(base) == 16 and int(base, 16) >= 0
    assert reg.get_model("BODY_25").skeleton_digest == ""


def test_prototxt_of_a_skeleton_without_variants_says_so(tmp_path):
    """Before: 'no training variant for dataset coco_foot used by its preset; ... with one of: none'."""
    from openpose_train.generator.cli import prototxt
    path = write(tmp_path, with_changes(variants=None), "novar.yaml")
    try:
        r = CliRunner().invoke(prototxt, ["--yaml", str(path), "--out", str(tmp_path / "a")])
        assert r.exit_code == 1 and f"{path}: variants: none, so nothing can be trained" in r.output, r.output
        assert not (tmp_path / "a").exists()
        r = CliRunner().invoke(prototxt, ["--yaml", str(path), "--out", str(tmp_path / "b"), "--deploy-only"])
        assert r.exit_code == 0 and (tmp_path / "b" / "pose_deploy.prototxt").is_file(), r.output
    finally:
        reg._REGISTRY.pop("TRI_4", None)


BOMB = "".join(f"{k}: &{k} [{', '.join([prev] * 9)}]\n" for k, prev in
               zip("abcdefghi", ["lol"] + [f"*{c}" for c in "abcdefgh"]))


@pytest.mark.parametrize("text,message", [
    (BOMB + "name: X\nparts: [*i]\npairs: [[0, 1]]\n",
     "line 6: its aliases expand to more than 100000 values; a skeleton is far smaller"),
    ("name: X\nparts: &p [a, *p]\npairs: [[0, 1]]\n", "line 2: an alias inside the collection it names"),
], ids=["billion laughs", "recursive alias"])
def test_aliases_that_never_end_are_refused_before_anything_walks_them(tmp_path, text, message):
    """A 'billion laughs' file made jsonschema's messages (and any walk of the data) run for ever."""
    import time
    path = write(tmp_path, text)
    start = time.monotonic()
    with pytest.raises(reg.SkeletonError) as err:
        reg.load_skeleton_yaml(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert time.monotonic() - start < 10
