"""Every documented workflow end to end on the real third-party extracts, with the README's
own command lines: JSON -> LMDB -> ``python generate_prototxt.py`` -> training with our engine ->
``validate-snapshots`` -> ``export`` -> OpenCV's Caffe importer reading the export.

The commands are taken from README.md (the blocks ``tests/test_readme_commands.py`` runs), picked by
their ``--out training_results/<folder>``; the follow-up steps are the COCO workflow's commands with
the folder and model of each workflow. Sizes are small through the README's documented variables
(batch 1, crop 64, 2 iterations, net resolution -1x64), in a checkout-like folder built by
``test_readme_commands.make_checkout``. Each workflow prints one line, ``WORKFLOW name | seconds |
loss | AP``, kept for the issue's note.
"""
import json
import os
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from test_readme_commands import SMALL, make_checkout, readme_commands

README = REPO / "README.md"
VAL = "--images data/coco/val2017 --annotations data/coco/annotations/person_keypoints_val2017.json"


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(root, env, command, timeout=600):
    import subprocess
    proc = subprocess.run(["bash", "-c", "set -eo pipefail\n" + command], cwd=root, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, f"failed (rc {proc.returncode}): {command}\n{proc.stdout[-4000:]}"
    return proc.stdout


def readme_command(prefix: str, out_folder: str = None) -> str:
    """The README's command that starts with ``prefix`` (and writes ``training_results/<out_folder>``)."""
    found = [c for c in readme_commands(README.read_text()) if c.startswith(prefix)
             and (out_folder is None or f"--out training_results/{out_folder} " in c + " ")]
    assert len(found) == 1, f"README has {len(found)} commands '{prefix}...' for {out_folder}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The checkout with the README's LMDBs (every data command of 'Every model') and VGG weights."""
    base = tmp_path_factory.mktemp("workflows")
    root = make_checkout(base / "checkout")
    env = dict(os.environ, **SMALL, OPENPOSE_DIR=str(base / "openpose"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for key in ("MAKEFLAGS", "MFLAGS"):
        env.pop(key, None)
    for command in readme_commands(README.read_text()):
        if command.startswith(("openpose-train vgg", "openpose-train lmdb")) or \
                (command.startswith("make lmdb") and "dataset/" in command):
            if "--out out/" not in command:
                _run(root, env, command)
    return root, env


def _opdata(training_prototxt: Path):
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt
    net = read_net_prototxt(str(training_prototxt))
    return next(layer for layer in net.layer if layer.type == "OPData").op_transform_param


def _probabilities(folder: Path):
    p = _opdata(folder / "pose_training.prototxt")
    return [float(v) for v in p.probabilities.split(";")], float(p.prob_only_background), p


def run_workflow(checkout, name, folder, model, validate=True, export=True, train_command=None, val=VAL):
    """Generate (README command), train, validate-snapshots, export, OpenCV: returns a summary."""
    from openpose_train.generator.registry import get_model
    root, env = checkout
    start, cpu = time.time(), _cpu_seconds()
    _run(root, env, readme_command("python generate_prototxt.py", folder))
    train_log = _run(root, env, train_command or f"bash training_results/{folder}/train_pose.sh")
    train_dir = root / "training_results" / folder
    rows = [json.loads(line) for line in (train_dir / "model" / "pose_metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    loss = rows[-1]["loss"]
    assert np.isfinite(loss) and loss > 0
    summary = {"name": name, "loss": loss, "AP": None, "train_log": train_log}
    model_args = f"--model-yaml {model}" if model.endswith(".yaml") else f"--model {model}"
    if validate:
        out = _run(root, env, f"openpose-train validate-snapshots training_results/{folder} {model_args} "
                              f"--net-resolution $NET_RESOLUTION {val} --quiet")
        assert "snapshot pose_iter_2.caffemodel" in out
        row = json.loads((train_dir / "validation" / "ap.jsonl").read_text().splitlines()[-1])
        assert row["iteration"] == 2
        # COCO AP, or the hand / face metric that --metrics asked for (PCK, NME: docs/metrics in the README)
        key = "AP" if val == VAL else next(k for k in row if k.startswith(val.split()[1]) and row[k] is not None)
        assert np.isfinite(row[key]) and row[key] >= 0 and (key != "AP" or row[key] <= 1), row
        summary["AP"], summary["metric"] = row[key], key
    if export:
        target = Path(env["OPENPOSE_DIR"]) / folder
        _run(root, env, f"openpose-train export --snapshot training_results/{folder}/model/pose_iter_2.caffemodel "
                        f"--model {model} --to {target}/models")
        pose_model = get_model(model)
        exported = target / "models" / pose_model.model_folder
        prototxt, caffemodel = exported / pose_model.deploy_name, exported / pose_model.caffemodel_name
        assert caffemodel.read_bytes() == (train_dir / "model" / "pose_iter_2.caffemodel").read_bytes()
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 64, 64)).astype(np.float32)
        net.setInput(x)
        y = net.forward()
        assert y.shape == (1, pose_model.num_channels, 8, 8), (name, y.shape)
        assert np.isfinite(y).all() and np.abs(y).max() > 0
    summary["seconds"], summary["cpu_seconds"] = time.time() - start, _cpu_seconds() - cpu
    ap = "-" if summary["AP"] is None else f"{summary['metric']} {summary['AP']:.3f}"
    print(f"\nWORKFLOW {name} | {summary['seconds']:.1f} s ({summary['cpu_seconds']:.1f} s CPU) | "
          f"loss {loss:.4g} | {ap}")
    return summary


@pytest.fixture(scope="module")
def body_25(checkout):
    return run_workflow(checkout, "BODY_25", "body_25", "BODY_25")


@pytest.mark.slow
def test_body_25_coco_and_foot_with_background(checkout, body_25):
    root, _ = checkout
    probs, pob, p = _probabilities(root / "training_results" / "body_25")
    assert probs == pytest.approx([0.05, 0.95]) and pob == 0.0
    assert [Path(s).name for s in p.sources.split(";")] == ["lmdb_coco2017_foot", "lmdb_coco"]
    assert p.models.split(";") == ["COCO_25", "COCO_25_17"] and p.source_background.endswith("lmdb_background")


@pytest.mark.slow
@pytest.mark.parametrize("name, folder, models", [
    # 1_25BBkg with no --lmdb: the preset's LMDB names under dataset/
    ("BODY_25B_1_25BBkg", "body_25b_bkg", None),
    # 1_25BSuperModel11FullVGG with --lmdb PATH:PROB for each source
    ("BODY_25B_1_25BSuperModel11FullVGG", "body_25b_fullvgg", ["COCO_25B_23", "COCO_25B_17", "MPII_25B_16"]),
])
def test_body_25b_presets_with_the_preset_mix(checkout, name, folder, models):
    """Foot 0.05, COCO 0.88, MPII 0.05 and background only 0.02, however the LMDBs are given."""
    root, _ = checkout
    run_workflow(checkout, name, folder, "BODY_25B")
    probs, pob, p = _probabilities(root / "training_results" / folder)
    assert probs == pytest.approx([0.05, 0.88, 0.05]) and pob == pytest.approx(0.02)
    assert [Path(s).name for s in p.sources.split(";")] == ["lmdb_coco2017_foot", "lmdb_coco", "lmdb_mpii"]
    assert p.models.split(";") == (models or ["COCO_25B_23", "COCO_25B_17", "MPII_25B_16"])
    assert p.source_background.endswith("lmdb_background")


@pytest.mark.slow
def test_body_135_every_source_with_data(checkout):
    root, _ = checkout
    run_workflow(checkout, "BODY_135", "body_135", "BODY_135")
    probs, pob, p = _probabilities(root / "training_results" / "body_135")
    assert len(probs) == 6 and sum(probs) + pob == pytest.approx(1.0) and probs[0] == pytest.approx(0.6)
    assert "COCO_135_133" in p.models.split(";")


def test_body_135_preset_without_the_sources_we_have_no_data_for(checkout):
    """--drop-source leaves out Dome, FRGC and MultiPIE; the rest keep their ratios, re-normalised
    to 1 - prob_only_background (generation only: the trained BODY_135 workflow is the one above)."""
    root, env = checkout
    _run(root, env, readme_command("python generate_prototxt.py", "body_135_preset"))
    probs, pob, p = _probabilities(root / "training_results" / "body_135_preset")
    names = [Path(s).name for s in p.sources.split(";")]
    assert names == ["lmdb_coco2017_foot", "lmdb_coco", "lmdb_mpii", "lmdb_face_mask_out", "lmdb_hand_mpii"]
    preset = np.array([0.05, 0.73, 0.05, 0.005, 0.05])
    assert probs == pytest.approx(list(preset * 0.98 / preset.sum())) and pob == pytest.approx(0.02)
    assert all((root / "dataset" / n).is_dir() for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("name, folder, model", [("HAND_21", "hand", "HAND_21"), ("FACE_70", "face", "FACE_70")])
def test_hand_and_face_from_coco_wholebody(checkout, name, folder, model):
    run_workflow(checkout, name, folder, model, val=f"--metrics {folder} --limit 1 --images data/coco/train2017 "
                 "--annotations data/coco_wholebody/coco_wholebody_train_v1.0.json")


@pytest.mark.slow
def test_coco_18(checkout):
    run_workflow(checkout, "COCO_18", "coco", "COCO_18")


def test_custom_yaml_skeleton(checkout):
    """The YAML is copied beside the scripts, which pass it to `openpose-train train --model-yaml`
    (the data layer's workers learn its model strings from the layer's config)."""
    import subprocess
    root, env = checkout
    _run(root, env, readme_command("cp generator/example_skeleton.yaml"))
    run_workflow(checkout, "custom YAML", "mine", "my_skeleton.yaml", export=False)
    folder = root / "training_results" / "mine"
    assert (folder / "my_skeleton.yaml").read_text() == (root / "my_skeleton.yaml").read_text()
    assert '--model-yaml "my_skeleton.yaml"' in (folder / "train_pose.sh").read_text()
    fork = subprocess.run(["bash", str(folder / "train_pose.sh"), ""], env=dict(env, CAFFE="/bin/true"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert fork.returncode == 1 and "the Caffe fork cannot train it" in fork.stdout
    bad = subprocess.run(["openpose-train", "train", "-solver", "pose_solver.prototxt", "--model-yaml", "none.yaml"],
                         cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert bad.returncode == 1 and "none.yaml" in bad.stdout and "Traceback" not in bad.stdout


@pytest.mark.slow
def test_fine_tune_body_25_into_body_25b_then_resume(checkout, body_25):
    root, env = checkout
    train = readme_command("(cd training_results/body_25b_ft")
    summary = run_workflow(checkout, "BODY_25 -> BODY_25B fine-tuning", "body_25b_ft", "BODY_25B",
                           validate=False, train_command=train)
    # BODY_25's trunk is copied; the layers whose shapes changed (the keypoint / PAF outputs) start anew
    log = summary["train_log"]
    assert "matched layers: conv1_1" in log and "re-initialised on shape mismatch: " in log
    folder = root / "training_results" / "body_25b_ft"
    # resume from the snapshot with one more iteration (-snapshot and -iterations: the README's flags)
    out = _run(root, env, f"cd {folder} && openpose-train train -solver pose_solver.prototxt "
                          f"-snapshot model/pose_iter_2.solverstate -iterations 3 --no-progress")
    assert "Optimization Done." in out and (folder / "model" / "pose_iter_3.caffemodel").is_file()
    rows = [json.loads(line) for line in (folder / "model" / "pose_metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
