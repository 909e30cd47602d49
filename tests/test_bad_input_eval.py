"""Bad input at evaluation time (issue 17, classes 2, 3, 8 and 9): a metric is a number only when it
measured something, outputs never overwrite inputs, resource limits and unclear errors are one line
naming the option, file or field (docs/refusals.md §Evaluation and metrics, §Outputs, §Resource limits).

Each case runs the command as a user would (the click CLI in-process); refused commands exit non-zero
with one ``Error:`` line, no traceback, and before any image is scored or any iteration is spent."""
import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from openpose_train.cli import main as cli_main


def invoke(*args, cwd=None):
    """(exit code, output, Error lines) of ``openpose-train ARGS``; a crash fails the test."""
    import os
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        res = CliRunner().invoke(cli_main, [str(a) for a in args])
    finally:
        os.chdir(old)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback
        raise AssertionError(res.output + "".join(traceback.format_exception(res.exception)))
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output, [line for line in res.output.splitlines() if line.startswith("Error:")]


def refused(*args, names=(), cwd=None):
    """Run a command that must be refused with one Error line holding every string of ``names``."""
    rc, output, errors = invoke(*args, cwd=cwd)
    assert rc == 1, output
    assert len(errors) == 1, output
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic COCO dataset (train + val), an LMDB, a generated tiny BODY_25 training folder and
    a random-weights snapshot with its deploy beside it."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.shapes import random_weights

    root = tmp_path_factory.mktemp("eval_bad")
    w = SimpleNamespace(root=root)
    rc, out, _ = invoke("synth", "--out", root / "synth", "--images", 8, "--width", 128, "--height", 128,
                        "--max-people", 2, "--val-fraction", 0.5, "--person-height", 0.6, 0.9, "--seed", 3)
    assert rc == 0, out
    w.images = root / "synth" / "val2017"
    w.json = root / "synth" / "annotations" / "person_keypoints_val2017.json"
    w.doc = json.loads(w.json.read_text())
    rc, out, _ = invoke("lmdb", "--json", root / "synth/annotations/person_keypoints_train2017.json",
                        "--images", root / "synth/train2017", "--out", root / "lmdb", "--quiet")
    assert rc == 0, out
    w.lmdb = root / "lmdb"
    w.train = root / "net"
    rc, out, _ = invoke("prototxt", "--model", "BODY_25", "--preset", "tiny", "--out", w.train, "--crop-size", 64,
                        "--batch-size", 1, "--lmdb", w.lmdb, "--vgg-weights", "", "--snapshot-interval", 2,
                        "--max-iter", 2, "--gpus", "")
    assert rc == 0, out
    w.deploy = w.train / "pose_deploy.prototxt"
    net = caffe_io.read_net_prototxt(str(w.deploy))
    w.snapshots = root / "snaps"
    w.snapshots.mkdir()
    shutil.copy(w.deploy, w.snapshots)
    for it in (2, 4):
        caffe_io.write_caffemodel(str(w.snapshots / f"pose_iter_{it}.caffemodel"), random_weights(net, seed=it),
                                  net=net)
    w.caffemodel = w.snapshots / "pose_iter_2.caffemodel"
    return w


def annotations(w, tmp_path, edit, name="ann.json"):
    """A copy of the val annotations changed by ``edit(doc)``; returns its path."""
    doc = copy.deepcopy(w.doc)
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def validate_args(w, tmp_path, ann, *more):
    return ["validate", "--prototxt", w.deploy, "--caffemodel", w.caffemodel, "--model", "BODY_25",
            "--images", w.images, "--annotations", ann, "--net-resolution", "-1x64", "--out",
            tmp_path / "r.json", "--quiet", *more]


def _drop(key):
    return lambda d: d.pop(key)


def _set_first(part, key, value):
    return lambda d: d[part][0].__setitem__(key, value)


def _del_first(part, key):
    return lambda d: d[part][0].pop(key)


def _all_annotations(key, value):
    return lambda d: [a.__setitem__(key, value) for a in d["annotations"]]


# (id, edit of the val annotations, strings the one Error line must hold): today's 'Error: categories',
# 'Error: file_name' and int() messages, and the files that hold nothing to score
ANNOTATION_CASES = [
    ("no-categories", _drop("categories"), ["ann.json", "no 'categories' list"]),
    ("no-file-name", _del_first("images", "file_name"), ["ann.json", "images[0] has no 'file_name'"]),
    ("image-id-not-an-integer", _set_first("images", "id", "abc"), ["ann.json", "images[0] 'id'", "'abc'"]),
    ("annotation-image-id-not-listed", _set_first("annotations", "image_id", 123456789),
     ["ann.json", "annotations[0] 'image_id' 123456789"]),
    ("keypoints-not-numbers", _set_first("annotations", "keypoints", ["a", 1, 2]),
     ["ann.json", "annotations[0] 'keypoints'"]),
    ("no-bbox", _del_first("annotations", "bbox"), ["ann.json", "annotations[0] 'bbox'"]),
    ("empty-annotations", lambda d: d.__setitem__("annotations", []),
     ["ann.json", "nothing to score", "'annotations' is empty"]),
    ("category-matches-no-annotation", _all_annotations("category_id", 2),
     ["ann.json", "nothing to score", "category_id 2"]),
    ("no-person-category", lambda d: d.__setitem__("categories", [{"id": 3, "name": "dog"}]),
     ["ann.json", "'categories' has no id 1 (person)"]),
    ("no-labeled-keypoints", _all_annotations("num_keypoints", 0), ["ann.json", "nothing to score"]),
]


@pytest.mark.parametrize("edit,names", [pytest.param(e, n, id=i) for i, e, n in ANNOTATION_CASES])
def test_validate_refuses_annotations_it_cannot_score_naming_file_and_field(world, tmp_path, edit, names):
    ann = annotations(world, tmp_path, edit)
    refused(*validate_args(world, tmp_path, ann), names=names)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("edit,names", [pytest.param(e, n, id=i) for i, e, n in ANNOTATION_CASES[-4:-1]])
def test_train_val_refuses_annotations_with_nothing_to_score_before_training(world, tmp_path, edit, names):
    run = tmp_path / "run"
    shutil.copytree(world.train, run)
    ann = annotations(world, tmp_path, edit)
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0, "--val-images",
            world.images, "--val-annotations", ann, "--val-interval", 1, names=["--val-annotations", *names],
            cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


def test_images_folder_holding_none_of_the_listed_images_is_refused(world, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    (empty / "000000999999.jpg").write_bytes(b"")
    args = validate_args(world, tmp_path, world.json)
    args[args.index("--images") + 1] = empty
    refused(*args, names=["none of the 4 images listed", "elsewhere"])
    run = tmp_path / "run"
    shutil.copytree(world.train, run)
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0, "--val-images", empty,
            "--val-annotations", world.json, "--val-interval", 1, names=["--val-annotations", "none of the 4"],
            cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


@pytest.mark.parametrize("limit", ["0", "-2"])
def test_limits_below_one_are_refused_not_sliced(world, tmp_path, limit):
    refused(*validate_args(world, tmp_path, world.json, "--limit", limit), names=[f"--limit {limit}"])
    refused("validate-snapshots", world.snapshots, "--model", "BODY_25", "--images", world.images,
            "--annotations", world.json, "--net-resolution", "-1x64", "--out-dir", tmp_path / "v", "--quiet",
            "--limit", limit, names=[f"--limit {limit}"])
    assert not (tmp_path / "v").exists()
    run = tmp_path / "run"
    shutil.copytree(world.train, run)
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0, "--val-images",
            world.images, "--val-annotations", world.json, "--val-interval", 1, "--val-limit", limit,
            names=[f"--val-limit {limit}"], cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


def test_limit_to_images_without_people_is_nothing_to_score(world, tmp_path):
    """The first image holds nobody: '--limit 1' would be pycocotools' -1 everywhere."""
    def nobody_on_the_first(doc):
        first = min(img["id"] for img in doc["images"])
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != first]
    ann = annotations(world, tmp_path, nobody_on_the_first)
    refused(*validate_args(world, tmp_path, ann, "--limit", "1"), names=["nothing to score", "--limit 1"])


def test_no_ground_truth_in_an_area_range_is_n_a_never_minus_one(world, tmp_path):
    """Only large people: pycocotools gives APm = -1 ('no ground truth'); that is printed as n/a and stored
    as null, never as a number (nor in the per-snapshot table, nor as the best snapshot)."""
    def large_only(doc):
        for a in doc["annotations"]:
            a["area"] = 200.0 * 200.0
    ann = annotations(world, tmp_path, large_only)
    rc, output, _ = invoke(*validate_args(world, tmp_path, ann))
    assert rc == 0, output
    assert "-1.0" not in output and "APm n/a" in output, output
    summary = json.loads((tmp_path / "r_summary.json").read_text())
    assert summary["APm"] is None and summary["ARm"] is None and summary["AP"] is not None
    assert summary["body_apm"] is None
    rc, output, _ = invoke("validate-snapshots", world.snapshots, "--model", "BODY_25", "--images", world.images,
                           "--annotations", ann, "--net-resolution", "-1x64", "--out-dir", tmp_path / "v",
                           "--quiet")
    assert rc == 0, output
    assert "-1.0" not in output
    rows = [json.loads(line) for line in (tmp_path / "v" / "ap.jsonl").read_text().splitlines()]
    assert [r["APm"] for r in rows] == [None, None] and all(r["AP"] is not None and r["AP"] >= 0 for r in rows)


def test_evaluate_without_ground_truth_on_the_evaluated_images_is_none(world):
    from openpose_train.validation.coco_eval import evaluate, load_coco
    from openpose_train.validation.metrics_coco import oks_ap, group_ground_truth, annotation_layout
    coco = load_coco(str(world.json))
    with_people = {a["image_id"] for a in world.doc["annotations"] if a["num_keypoints"]}
    nobody = [img["id"] for img in world.doc["images"] if img["id"] not in with_people] or [987654]
    result = {"image_id": world.doc["images"][0]["id"], "category_id": 1, "keypoints": [1.0, 1.0, 1.0] * 17,
              "score": 1.0}
    out = evaluate(coco, [result], nobody)
    assert all(v is None for v in out["stats"].values()) and out["note"].startswith("nothing to score")
    gt = group_ground_truth(world.doc, annotation_layout(world.doc), "body")
    assert all(v is None for v in oks_ap(gt, [result], [0.1] * 17, nobody).values())


def test_duplicate_file_names_and_absent_images_are_counted(world, tmp_path):
    def repeat_and_add(doc):
        twin = dict(doc["images"][0], id=777001)
        absent = dict(doc["images"][0], id=777002, file_name="not_there.jpg")
        doc["images"] += [twin, absent]
    ann = annotations(world, tmp_path, repeat_and_add)
    rc, output, _ = invoke(*validate_args(world, tmp_path, ann))
    assert rc == 0, output
    first = world.doc["images"][0]
    assert f"1 image entry of the annotations repeat the file name of an earlier entry (1 file name(s), e.g. " \
           f"{first['file_name']}: ids {first['id']}, 777001)" in output
    assert "1 missing image(s) skipped, not scored (1 of the 5 listed" in output and "not_there.jpg" in output
    summary = json.loads((tmp_path / "r_summary.json").read_text())
    assert summary["images_missing"] == ["not_there.jpg"]
    assert summary["images_duplicate_names"] == {first["file_name"]: [first["id"], 777001]}
    assert summary["images_evaluated"] == 4


def test_train_val_metric_the_model_cannot_produce_stops_before_training(tmp_path):
    """BODY_25 has no face or hands: whole-body AP on COCO-WholeBody annotations is refused before the
    first iteration (it used to fail at every evaluation while training went on)."""
    rc, out, _ = invoke("synth", "--out", tmp_path / "wb", "--images", 4, "--width", 96, "--height", 96,
                        "--max-people", 1, "--wholebody", "--val-fraction", 0.5)
    assert rc == 0, out
    rc, out, _ = invoke("lmdb", "--json", tmp_path / "wb/annotations/person_keypoints_train2017.json", "--images",
                        tmp_path / "wb/train2017", "--out", tmp_path / "lmdb", "--quiet")
    assert rc == 0, out
    run = tmp_path / "run"
    rc, out, _ = invoke("prototxt", "--model", "BODY_25", "--preset", "tiny", "--out", run, "--crop-size", 64,
                        "--batch-size", 1, "--lmdb", tmp_path / "lmdb", "--vgg-weights", "", "--max-iter", 2,
                        "--gpus", "")
    assert rc == 0, out
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0, "--val-images",
            tmp_path / "wb/val2017", "--val-annotations", tmp_path / "wb/annotations/person_keypoints_val2017.json",
            "--val-interval", 1, "--val-metric", "wholebody",
            names=["--val-metric wholebody", "BODY_25 has no face, lefthand, righthand keypoints"], cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


@pytest.fixture(scope="module")
def body_25b_snapshot(world):
    """A BODY_25B net (97 output channels) with its deploy beside it."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.shapes import random_weights
    from openpose_train.generator.render import render_deploy
    folder = world.root / "b25b"
    folder.mkdir()
    (folder / "pose_deploy.prototxt").write_text(render_deploy("BODY_25B", preset="tiny"))
    net = caffe_io.read_net_prototxt(str(folder / "pose_deploy.prototxt"))
    caffe_io.write_caffemodel(str(folder / "pose_iter_10.caffemodel"), random_weights(net, seed=1), net=net)
    return folder


def test_a_deploy_of_another_model_is_refused_by_validate_as_by_export(world, body_25b_snapshot, tmp_path):
    deploy, caffemodel = body_25b_snapshot / "pose_deploy.prototxt", body_25b_snapshot / "pose_iter_10.caffemodel"
    names = ["b25b/pose_deploy.prototxt", "give 97 output channels", "BODY_25 has 78"]
    refused("validate", "--prototxt", deploy, "--caffemodel", caffemodel, "--model", "BODY_25", "--images",
            world.images, "--annotations", world.json, "--out", tmp_path / "r.json", "--quiet", names=names)
    refused("validate-snapshots", body_25b_snapshot, "--model", "BODY_25", "--images", world.images,
            "--annotations", world.json, "--out-dir", tmp_path / "v", "--quiet", names=names)
    refused("export", "--snapshot", caffemodel, "--model", "BODY_25", "--to", tmp_path / "models", names=names)
    assert not list(tmp_path.iterdir())
    run = tmp_path / "run"
    shutil.copytree(world.train, run)
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0, "--val-images",
            world.images, "--val-annotations", world.json, "--val-interval", 1, "--val-deploy", deploy,
            names=["--val-deploy", *names], cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


def test_validate_snapshots_reuses_a_score_only_with_the_same_settings(world, tmp_path):
    """ap.jsonl rows carry what they were scored with; another resolution, limit, annotation file (same path,
    new content) or image set scores again, and the plot and best use only this run's rows."""
    out = tmp_path / "v"
    ann = tmp_path / "ann.json"
    ann.write_text(world.json.read_text())
    images = tmp_path / "images"
    shutil.copytree(world.images, images)

    def run(*more):
        rc, output, _ = invoke("validate-snapshots", world.snapshots, "--model", "BODY_25", "--images", images,
                               "--annotations", ann, "--out-dir", out, "--quiet", *more)
        assert rc == 0, output
        return output.count("snapshot pose_iter_"), output

    assert run("--net-resolution", "-1x64")[0] == 2
    assert run("--net-resolution", "-1x64")[0] == 0                  # same settings: cached
    scored, output = run("--net-resolution", "-1x96")
    assert scored == 2 and "2 snapshot score(s) made with other settings (net_resolution) are not reused" in output
    assert run("--net-resolution", "-1x64")[0] == 0                  # the first rows still count for -1x64
    assert run("--net-resolution", "-1x64", "--limit", "3")[0] == 2
    doc = json.loads(ann.read_text())
    doc["annotations"] = doc["annotations"][1:]
    ann.write_text(json.dumps(doc))                                  # same path, other content
    scored, output = run("--net-resolution", "-1x64")
    assert scored == 2 and "annotations_sha256" in output
    first = sorted(images.iterdir())[0]
    shutil.copy(sorted(images.iterdir())[1], first)                  # an image replaced
    scored, output = run("--net-resolution", "-1x64")
    assert scored == 2 and "images_digest" in output
    rows = [json.loads(line) for line in (out / "ap.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["scored_with"]["net_resolution"] in ("-1x64", "-1x96") for r in rows)


# ------------------------------------------------------------------------------------------------
# Outputs never destroy inputs (docs/refusals.md §Outputs)

def test_an_output_that_is_an_input_is_refused_in_every_command(world, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(world.json.read_text())
    before = ann.read_bytes()
    images = world.root / "synth" / "train2017"
    train_json = world.root / "synth/annotations/person_keypoints_train2017.json"
    refused("lmdb", "--json", train_json, "--images", images, "--out", train_json,
            names=["--out", "is the input --json"])
    refused("lmdb", "--json", train_json, "--images", images, "--out", images, "--overwrite",
            names=["--out", "is the input --images"])
    refused("lmdb", "--json", train_json, "--images", images, "--out", images.parent, "--overwrite",
            names=["--out", "holds the input --json"])
    refused(*validate_args(world, tmp_path, ann)[:-3], "--out", ann, "--quiet",
            names=["--out", "is the input --annotations"])
    named_like_a_summary = tmp_path / "r_summary.json"          # what --out r.json writes beside it
    named_like_a_summary.write_text(world.json.read_text())
    refused(*validate_args(world, tmp_path, named_like_a_summary), names=["_summary.json", "is the input --annotations"])
    refused(*validate_args(world, tmp_path, ann), "--render", world.images, names=["--render", "is the input --images"])
    refused(*validate_args(world, tmp_path, ann), "--write-json", world.images,
            names=["--write-json", "is the input --images"])
    refused("validate-snapshots", world.snapshots, "--model", "BODY_25", "--images", world.images,
            "--annotations", ann, "--out-dir", world.images, "--quiet", names=["--out-dir", "is the input --images"])
    refused("inspect", world.lmdb, "--out", world.lmdb / "data.mdb", names=["--out", "data.mdb"])
    log = tmp_path / "train.log"
    log.write_text("I1203 08:00:00.000000 1 solver.cpp:218] Iteration 0 (1 iter/s, 1s/1 iters), loss = 1.0\n")
    refused("plot", log, "--out", log, names=["--out", "is the input SOURCE"])
    refused("prototxt", "--model", "BODY_25", "--preset", "tiny", "--lmdb", world.lmdb, "--out", world.lmdb,
            names=["--out", "is the input --lmdb"])
    refused("vgg", ann, ann, names=["OUT", "is the input PTH"])
    refused("export", "--snapshot", world.caffemodel, "--model", "BODY_25", "--to", tmp_path / "models",
            "--onnx", world.caffemodel, names=["--onnx", "is the input --snapshot"])
    assert ann.read_bytes() == before and log.read_text().startswith("I1203")
    assert (world.lmdb / "data.mdb").stat().st_size > 0 and not (tmp_path / "models").exists()


def test_a_second_lmdb_build_on_the_same_out_is_refused_while_the_first_runs(world, tmp_path):
    """Two terminals: the second build finds <out>.lock held (flock) and stops with one line naming the
    first build's PID; once the first ends, the lock file is gone and the build runs."""
    import os
    from openpose_train.common.locks import ExclusiveLock
    out = tmp_path / "lmdb"
    args = ["lmdb", "--json", world.root / "synth/annotations/person_keypoints_train2017.json", "--images",
            world.root / "synth/train2017", "--out", out, "--quiet"]
    with ExclusiveLock(f"{out}.lock", busy=RuntimeError, failed=RuntimeError):    # the first build
        refused(*args, names=[str(out), "another 'openpose-train lmdb'", f"PID {os.getpid()}"])
        assert not out.exists() and not out.with_name("lmdb.partial").exists()
    rc, output, _ = invoke(*args)
    assert rc == 0, output
    assert (out / "data.mdb").is_file() and not out.with_name("lmdb.lock").exists()


def test_a_second_lmdb_process_is_refused_by_the_lock(world, tmp_path):
    """The same with a real second process holding the lock (flock is per process, dropped at its death)."""
    import subprocess
    import sys
    out = tmp_path / "lmdb"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d host\\n' % os.getpid()); print('locked', flush=True); "
        "time.sleep(60)"), f"{out}.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused("lmdb", "--json", world.root / "synth/annotations/person_keypoints_train2017.json", "--images",
                world.root / "synth/train2017", "--out", out, "--quiet", names=[f"PID {holder.pid} on host"])
    finally:
        holder.kill()
        holder.wait()
    rc, output, _ = invoke("lmdb", "--json", world.root / "synth/annotations/person_keypoints_train2017.json",
                           "--images", world.root / "synth/train2017", "--out", out, "--quiet")
    assert rc == 0, output      # a dead holder's lock file is taken over


def test_export_into_a_folder_holding_a_model_refuses_or_keeps_a_backup(world, tmp_path):
    models = tmp_path / "models"
    target = models / "pose" / "body_25"
    target.mkdir(parents=True)
    (target / "pose_iter_584000.caffemodel").write_bytes(b"OpenPose's own weights")
    (target / "pose_deploy.prototxt").write_text("OpenPose's own deploy\n")
    args = ["export", "--snapshot", world.caffemodel, "--model", "BODY_25", "--to", models]
    refused(*args, names=[str(target), "already holds a model", "pose_deploy.prototxt, pose_iter_584000.caffemodel",
                          "--overwrite"])
    assert (target / "pose_iter_584000.caffemodel").read_bytes() == b"OpenPose's own weights"
    rc, output, _ = invoke(*args, "--overwrite")
    assert rc == 0, output
    assert (target / "pose_iter_584000.caffemodel.bak").read_bytes() == b"OpenPose's own weights"
    assert (target / "pose_deploy.prototxt.bak").read_text() == "OpenPose's own deploy\n"
    assert f"kept:       {target / 'pose_iter_584000.caffemodel.bak'}" in output
    assert (target / "pose_iter_584000.caffemodel").read_bytes() == world.caffemodel.read_bytes()
    rc, output, _ = invoke(*args)        # the same export again: nothing to replace
    assert rc == 0 and "kept:" not in output, output
    other = world.snapshots / "pose_iter_4.caffemodel"
    rc, output, _ = invoke("export", "--snapshot", other, "--model", "BODY_25", "--to", models, "--overwrite")
    assert rc == 0, output           # the first backup (OpenPose's own) is never replaced
    assert (target / "pose_iter_584000.caffemodel.bak").read_bytes() == b"OpenPose's own weights"
    assert (target / "pose_iter_584000.caffemodel.bak1").read_bytes() == world.caffemodel.read_bytes()


def test_export_accepts_the_model_yaml_of_a_custom_skeleton(tmp_path):
    """README §Custom skeletons: 'our validation and ONNX export work with it directly'."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.shapes import random_weights
    skeleton = Path(__file__).resolve().parents[1] / "generator" / "example_skeleton.yaml"
    rc, output, _ = invoke("prototxt", "--yaml", skeleton, "--preset", "tiny", "--out", tmp_path / "net",
                           "--deploy-only")
    assert rc == 0, output
    deploy = tmp_path / "net" / "pose_deploy.prototxt"
    net = caffe_io.read_net_prototxt(str(deploy))
    caffe_io.write_caffemodel(str(tmp_path / "net" / "pose_iter_5.caffemodel"), random_weights(net, seed=2), net=net)
    rc, output, _ = invoke("export", "--model-yaml", skeleton, "--snapshot", tmp_path / "net" / "pose_iter_5.caffemodel",
                           "--to", tmp_path / "models")
    assert rc == 0, output
    folder = tmp_path / "models" / "pose" / "body_19_example"
    assert (folder / "pose_deploy.prototxt").read_text() == deploy.read_text()
    assert "custom skeleton" in output and "--model_pose BODY_19_EXAMPLE" in output
    # the skeleton's channels are checked like a registry model's
    refused("export", "--model-yaml", skeleton, "--snapshot", world_snapshot_of(tmp_path, "BODY_25"),
            "--to", tmp_path / "m2", names=["output channels", "BODY_19_EXAMPLE has 60"])


def world_snapshot_of(tmp_path, model):
    """A random-weights tiny snapshot of a registry model, its deploy beside it."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.shapes import random_weights
    from openpose_train.generator.render import render_deploy
    folder = tmp_path / f"snap_{model}"
    folder.mkdir()
    (folder / "pose_deploy.prototxt").write_text(render_deploy(model, preset="tiny"))
    net = caffe_io.read_net_prototxt(str(folder / "pose_deploy.prototxt"))
    caffe_io.write_caffemodel(str(folder / "pose_iter_1.caffemodel"), random_weights(net, seed=1), net=net)
    return folder / "pose_iter_1.caffemodel"


# ------------------------------------------------------------------------------------------------
# Resource limits give one line (docs/refusals.md §Resource limits)

def _needs_meminfo(args):
    """Without /proc/meminfo (not Linux) the free memory is unknown and nothing would stop the huge
    allocation: the case is skipped rather than run into the kernel's OOM killer."""
    import os
    if "-1x40000" in args and not os.path.exists("/proc/meminfo"):
        pytest.skip("free memory unknown here (no /proc/meminfo): the estimate cannot refuse")


@pytest.mark.parametrize("args,names", [
    (["--net-resolution", "-1x40000"], ["--net-resolution -1x40000", "71104x40000", "GiB", "free"]),
    (["--net-resolution", "-1x64", "--scale-number", "4", "--scale-gap", "0.3"],
     ["--scale-number 4 --scale-gap 0.3", "scale 3 = 0.1", "below 16 pixels"]),
    (["--net-resolution", "-1x64", "--scale-number", "5", "--scale-gap", "0.25"],
     ["--scale-number 5 --scale-gap 0.25", "scale 4 = 0 is outside (0, 1]"]),
], ids=["resolution-too-large", "smallest-scale-rounds-to-nothing", "scale-zero"])
def test_resolution_and_scales_that_cannot_run_are_one_line(world, tmp_path, args, names):
    _needs_meminfo(args)
    base = validate_args(world, tmp_path, world.json)
    base = base[:base.index("--net-resolution")] + base[base.index("--net-resolution") + 2:]
    refused(*base, *args, names=names)
    assert not (tmp_path / "r.json").exists()


def test_train_val_net_resolution_too_large_stops_before_training(world, tmp_path):
    _needs_meminfo(["-1x40000"])
    run = tmp_path / "run"
    shutil.copytree(world.train, run)
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0, "--val-images",
            world.images, "--val-annotations", world.json, "--val-interval", 1, "--val-net-resolution", "-1x40000",
            names=["--val-net-resolution -1x40000", "GiB"], cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


def test_out_of_memory_at_the_forward_is_one_line(world, tmp_path, monkeypatch):
    """Where the estimate passes but the allocation fails (another process took the memory): torch's
    RuntimeError becomes one line naming --net-resolution and the size."""
    from openpose_train.validation import inference

    def no_memory(self, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123456789 bytes.")
    monkeypatch.setattr(inference.TorchBackend, "forward", no_memory)
    refused(*validate_args(world, tmp_path, world.json), names=["--net-resolution -1x64", "ran out of memory",
                                                                "can't allocate memory"])
    import torch
    assert inference.out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not inference.out_of_memory(RuntimeError("Given groups=1, weight of size [64, 3, 3, 3]"))


# ------------------------------------------------------------------------------------------------
# A model-string error is reported where it arises (docs/refusals.md §YAML skeletons, generated files)

@pytest.mark.parametrize("model_string,channels", [("COCO_18", 114), ("COCO_25B_17", 194)])
def test_a_data_layer_model_string_of_another_model_is_named_at_the_data_layer(world, tmp_path, model_string,
                                                                               channels):
    """Another model's labels in a BODY_25 net used to surface as a shape mismatch of a later Eltwise
    (or a negative Slice size); the error names the OPData layer and its model string."""
    run = tmp_path / "run"
    shutil.copytree(world.train, run)
    net = run / "pose_training.prototxt"
    text = net.read_text()
    assert text.count('models: "COCO_25_17"') == 1
    net.write_text(text.replace('models: "COCO_25_17"', f'models: "{model_string}"'))
    refused("train", "-solver", "pose_solver.prototxt", "--no-progress", "--workers", 0,
            names=["layer 'image' (OPData)", f"model string '{model_string}'", f"renders {channels} label channels",
                   "'vec_weight' (Slice)", "156 label channels"], cwd=run)
    assert not list(run.glob("model/*.caffemodel"))


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device (the GPU batch runs it)")
def test_resolution_too_large_for_the_gpu_is_one_line_on_cuda(world, tmp_path):
    """On CUDA the estimate reads the device's free memory (torch.cuda.mem_get_info)."""
    refused(*validate_args(world, tmp_path, world.json)[:-1], "--device", "cuda", "--quiet",
            "--net-resolution", "-1x40000", names=["--net-resolution -1x40000", "free on cuda"])
