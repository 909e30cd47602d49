"""validate / validate-snapshots / plot commands end to end on a tiny random-weight BODY_25-shaped
net and a synthetic image folder; missing and unreadable images, test-dev mode, bad input."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from openpose_train.cli import main
from openpose_train.validation.plots import read_loss_curve

from test_validation_inference import TINY_DEPLOY

# 26 heatmap channels (25 parts + background) + 52 PAF channels = BODY_25's 78
BODY25_TINY = TINY_DEPLOY.replace("num_output: 5 ", "num_output: 26 ").replace(
    "num_output: 6 ", "num_output: 52 ")


def _write_net(folder, iterations=(1000,), seed=0):
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt, write_caffemodel
    from openpose_train.caffe_layers.shapes import random_weights
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / "pose_deploy.prototxt"
    proto.write_text(BODY25_TINY)
    net = read_net_prototxt(str(proto))
    for i, it in enumerate(iterations):
        write_caffemodel(str(folder / f"pose_iter_{it}.caffemodel"),
                         random_weights(net, seed=seed + i), net=net)
    return proto


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 synthetic COCO images; the annotations also list a missing and a corrupt image."""
    import cv2
    root = tmp_path_factory.mktemp("data")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    gt = {"images": [], "annotations": [],
          "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}
    for i in range(1, 5):
        name = f"{i:012d}.jpg"
        cv2.imwrite(str(images / name), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        gt["images"].append({"id": i, "file_name": name, "width": 64, "height": 48})
        kp = [10 + i, 10, 2, 20, 12, 2, 15, 30, 2] + [0, 0, 0] * 14
        gt["annotations"].append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                                  "keypoints": kp, "num_keypoints": 3, "area": 600.0,
                                  "bbox": [5, 5, 30, 30]})
    gt["images"].append({"id": 77, "file_name": "000000000077.jpg", "width": 64, "height": 48})
    (images / "000000000088.jpg").write_bytes(b"not a jpeg")
    gt["images"].append({"id": 88, "file_name": "000000000088.jpg", "width": 64, "height": 48})
    ann = root / "gt.json"
    ann.write_text(json.dumps(gt))
    return images, ann


def test_validate_writes_results_summary_json_and_pngs(tmp_path, dataset):
    images, ann = dataset
    _write_net(tmp_path / "model")
    out = tmp_path / "res" / "results.json"
    r = CliRunner().invoke(main, [
        "validate", "--model-folder", str(tmp_path / "model"), "--model", "BODY_25",
        "--images", str(images), "--annotations", str(ann), "--net-resolution", "-1x32",
        "--scale-number", "2", "--scale-gap", "0.5", "--backend", "torch", "--out", str(out),
        "--write-json", str(tmp_path / "op"), "--render", str(tmp_path / "png"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text()) is not None
    summary = json.loads((tmp_path / "res" / "results_summary.json").read_text())
    for key in ("AP", "AP50", "AP75", "AR"):
        assert isinstance(summary[key], float)
    assert summary["APm"] is None and summary["APl"] is None     # area 600: no medium or large person
    assert summary["images_evaluated"] == 4
    assert summary["images_missing"] == ["000000000077.jpg"]
    assert summary["images_unreadable"] == ["000000000088.jpg"]
    assert summary["settings"]["net_resolution"] == "-1x32"
    assert summary["settings"]["scale_number"] == 2
    assert summary["settings"]["caffemodel"].endswith("pose_iter_1000.caffemodel")
    assert "missing image" in r.output and "unreadable image" in r.output
    op = json.loads((tmp_path / "op" / "000000000001_keypoints.json").read_text())
    assert op["version"] == 1.3 and isinstance(op["people"], list)
    assert len(os.listdir(tmp_path / "png")) == 4


def test_validate_test_dev_mode_and_opencv_backend(tmp_path, dataset):
    images, _ = dataset
    proto = _write_net(tmp_path / "m")
    out = tmp_path / "dev.json"
    r = CliRunner().invoke(main, [
        "validate", "--prototxt", str(proto), "--caffemodel",
        str(tmp_path / "m" / "pose_iter_1000.caffemodel"), "--images", str(images),
        "--net-resolution", "32x32", "--backend", "opencv", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "dev_summary.json").read_text())
    assert summary["AP"] is None and "test-dev" in summary["note"]
    assert summary["images_unreadable"] == ["000000000088.jpg"]
    assert isinstance(json.loads(out.read_text()), list)


def test_validate_bad_input_gives_one_clear_message(tmp_path, dataset):
    images, ann = dataset
    runner = CliRunner()
    r = runner.invoke(main, ["validate", "--model-folder", str(tmp_path), "--images", str(images)])
    assert r.exit_code != 0 and "no deploy prototxt" in r.output and "Traceback" not in r.output
    _write_net(tmp_path / "m")
    r = runner.invoke(main, ["validate", "--model-folder", str(tmp_path / "m"), "--model", "BODY_25B",
                             "--images", str(images), "--annotations", str(ann), "--quiet",
                             "--net-resolution", "-1x32", "--out", str(tmp_path / "x.json")])
    assert r.exit_code != 0 and "BODY_25B" in r.output and "97" in r.output   # 78 < 97 channels
    r = runner.invoke(main, ["validate", "--model-folder", str(tmp_path / "m"), "--model",
                             "BODY_99", "--images", str(images)])
    assert r.exit_code != 0 and "unknown model" in r.output
    r = runner.invoke(main, ["validate", "--model-folder", str(tmp_path / "m"), "--images",
                             str(images), "--net-resolution", "-1x100"])
    assert r.exit_code != 0 and "multiples of 16" in r.output


def test_validate_snapshots_and_plot(tmp_path, dataset):
    images, ann = dataset
    train = tmp_path / "train"
    _write_net(train, iterations=(2000, 500))
    metrics = train / "pose_metrics.jsonl"
    metrics.write_text("".join(json.dumps({"iteration": i, "loss": 10.0 / (i + 1), "lr": 1e-4})
                               + "\n" for i in range(0, 3000, 20)))
    r = CliRunner().invoke(main, [
        "validate-snapshots", str(train), "--images", str(images), "--annotations", str(ann),
        "--net-resolution", "-1x32", "--quiet"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (train / "validation" / "ap.jsonl").read_text().split("\n")
            if line]
    assert [row["iteration"] for row in rows] == [500, 2000]
    png = train / "validation" / "ap_vs_iteration.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run skips validated snapshots
    r = CliRunner().invoke(main, ["validate-snapshots", str(train), "--images", str(images),
                                  "--annotations", str(ann), "--net-resolution", "-1x32", "--quiet"])
    assert r.exit_code == 0 and "snapshot pose_iter" not in r.output

    log = tmp_path / "train.log"
    log.write_text("I1125 00:00:00.000 1 solver.cpp:218] Iteration 0 (0 iter/s, 0.5s/20 iters), "
                   "loss = 4.5\n"
                   "I1125 00:00:01.000 1 solver.cpp:237]     Train net output #0: loss = 4.5\n"
                   "I1125 00:00:02.000 1 solver.cpp:218] Iteration 20 (1.2 iter/s, 16s/20 iters), "
                   "loss = 3.25\n"
                   "I1125 00:00:03.000 1 solver.cpp:320] Iteration 40, loss = -nan(ind)\n")
    its, loss = read_loss_curve(str(log))
    assert its.tolist() == [0, 20, 40] and loss[:2].tolist() == [4.5, 3.25] and np.isnan(loss[2])
    out = tmp_path / "loss.png"
    r = CliRunner().invoke(main, ["plot", str(log), str(metrics), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    r = CliRunner().invoke(main, ["plot", str(empty)])
    assert r.exit_code != 0 and "no 'Iteration N" in r.output


def _generator_layout(root, prefix="model/pose"):
    """A training folder as `generate_prototxt.py` + `train_pose.sh` leave it: solver and deploy
    prototxt in the folder, snapshots and metrics under the solver's snapshot_prefix."""
    root.mkdir(parents=True)
    (root / "pose_solver.prototxt").write_text(
        f'net: "pose_training.prototxt"\nbase_lr: 0.0001\nmax_iter: 20\nsnapshot: 10\n'
        f'snapshot_prefix: "{prefix}"\n')
    snapshots = (root / prefix).parent
    _write_net(snapshots, iterations=(10, 20))
    os.replace(snapshots / "pose_deploy.prototxt", root / "pose_deploy.prototxt")
    (snapshots / "pose_metrics.jsonl").write_text(
        "".join(json.dumps({"iteration": i, "loss": 5.0 - i / 10}) + "\n" for i in range(20)))
    return snapshots


@pytest.mark.parametrize("prefix", ["model/pose", "snaps/deep/body"])
def test_validate_snapshots_finds_snapshots_and_deploy_from_the_training_folder(tmp_path, dataset,
                                                                                prefix):
    """The README's command: TRAINING_DIR is the generator's folder; the snapshots are where the
    solver's snapshot_prefix puts them and the deploy prototxt is beside the solver. Pointing at
    the snapshot folder works too."""
    images, ann = dataset
    train = tmp_path / "training_results"
    snapshots = _generator_layout(train, prefix)
    args = ["--model", "BODY_25", "--images", str(images), "--annotations", str(ann),
            "--net-resolution", "-1x32", "--quiet"]
    r = CliRunner().invoke(main, ["validate-snapshots", str(train)] + args)
    assert r.exit_code == 0, r.output
    assert "snapshot pose_iter_10.caffemodel" in r.output and "snapshot pose_iter_20" in r.output
    rows = [json.loads(line) for line in (train / "validation" / "ap.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [10, 20]
    summary = json.loads((train / "validation" / "results_iter_20_summary.json").read_text())
    assert summary["settings"]["prototxt"] == str((train / "pose_deploy.prototxt").resolve())
    assert summary["settings"]["caffemodel"] == str((snapshots / "pose_iter_20.caffemodel").resolve())

    if prefix == "model/pose":      # the snapshot folder one level below the deploy file
        r = CliRunner().invoke(main, ["validate-snapshots", str(snapshots)] + args)
        assert r.exit_code == 0, r.output
        assert (snapshots / "validation" / "ap.jsonl").is_file()


def test_validate_snapshots_without_deploy_names_the_folders(tmp_path, dataset):
    images, ann = dataset
    train = tmp_path / "run"
    _generator_layout(train)
    (train / "pose_deploy.prototxt").unlink()
    r = CliRunner().invoke(main, ["validate-snapshots", str(train), "--images", str(images),
                                  "--annotations", str(ann), "--quiet"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "no deploy prototxt" in r.output and "--prototxt" in r.output and str(train) in r.output
    (train / "pose_solver.prototxt").write_text("snapshot_prefix: [broken\n")
    r = CliRunner().invoke(main, ["validate-snapshots", str(train), "--images", str(images)])
    assert r.exit_code != 0 and "Traceback" not in r.output and "pose_solver.prototxt" in r.output
