"""Evaluation during training (--val-*): Caffe test lines that parse_log.py reads, the best snapshot
kept atomically and across resumes, JSONL and TensorBoard records, ``export --best``."""
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from openpose_train.cli import main

from test_train_loop import parse_log_like_caffe, run_cli

# Caffe's tools/extra/parse_log.py: test rows come from these lines (the iteration from the
# latest 'Iteration N' line before them)
REGEX_ITERATION = re.compile(r'Iteration (\d+)')
REGEX_TEST_OUTPUT = re.compile(r'Test net output #(\d+): (\S+) = ([\.\deE+-]+)')


def parse_test_rows(text):
    """{iteration: {output name: value}} of a log's text, as parse_log.py builds its test CSV."""
    rows, iteration = {}, -1
    for line in text.splitlines():
        m = REGEX_ITERATION.search(line)
        if m:
            iteration = int(m.group(1))
        m = REGEX_TEST_OUTPUT.search(line)
        if m and iteration >= 0:
            rows.setdefault(iteration, {})[m.group(2)] = float(m.group(3))
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Synthetic COCO dataset (train + held-out val) -> LMDB -> generated BODY_25 'tiny' net (crop 64, batch 1)."""
    tmp = tmp_path_factory.mktemp("evaltrain")
    runner = CliRunner()

    def cli(*args):
        r = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    cli("synth", "--out", tmp / "synth", "--images", 8, "--width", 96, "--height", 96, "--max-people", 1,
        "--val-fraction", 0.25, "--person-height", 0.5, 0.8)
    cli("lmdb", "--json", tmp / "synth/annotations/person_keypoints_train2017.json",
        "--images", tmp / "synth/train2017", "--out", tmp / "lmdb", "--workers", 1, "--quiet")
    out = tmp / "net"
    cli("prototxt", "--model", "BODY_25", "--preset", "tiny", "--out", out, "--crop-size", 64, "--batch-size", 1,
        "--lmdb", tmp / "lmdb", "--vgg-weights", "", "--display", 1, "--snapshot-interval", 2,
        "--max-iter", 4, "--base-lr", 1e-3, "--gpus", "")
    val = ["--val-images", tmp / "synth/val2017", "--val-annotations",
           tmp / "synth/annotations/person_keypoints_val2017.json", "--val-net-resolution", "-1x96"]
    return out, [str(v) for v in val]


def copy_project(project, tmp_path):
    out, val = project
    d = tmp_path / "run"
    shutil.copytree(out, d, ignore=shutil.ignore_patterns("model"))
    return d, val


def test_val_interval_logs_ap_keeps_best_writes_events_and_exports(project, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d, val = copy_project(project, tmp_path)
    r = run_cli(["-solver", "pose_solver.prototxt", "--log", "train.log", "--val-interval", "2", *val], d)
    assert r.exit_code == 0, r.output
    # the AP lines, as parse_log.py reads them: one test row per evaluation
    tests = parse_test_rows((d / "train.log").read_text())
    assert sorted(tests) == [2, 4]
    for row in tests.values():
        assert list(row) == ["AP", "AP50", "AR"] and all(0 <= v <= 1 for v in row.values())
    # the train rows still parse as before (the test lines do not disturb them)
    assert [row["NumIters"] for row in parse_log_like_caffe(d / "train.log")] == [0, 1, 2, 3]
    # the best snapshot: the first evaluation with the highest AP, identical to that iteration's snapshot
    best = json.loads((d / "model/pose_best.json").read_text())
    top = max(v["AP"] for v in tests.values())
    assert best["iteration"] == min(i for i, v in tests.items() if v["AP"] == top)
    assert best["score"] == pytest.approx(top, abs=1e-6) and best["metric"] == "body" and best["model"] == "BODY_25"
    model = (d / "model/pose_best.caffemodel").read_bytes()
    assert hashlib.sha256(model).hexdigest() == best["sha256"]
    assert model == (d / f"model/pose_iter_{best['iteration']}.caffemodel").read_bytes()
    assert not list((d / "model").glob("*.tmp*"))
    # JSONL: training records 0..3 and one validation record per evaluation
    records = [json.loads(line) for line in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert [r_["iteration"] for r_ in records if "loss" in r_] == [0, 1, 2, 3]
    validations = {r_["iteration"]: r_["validation"] for r_ in records if "validation" in r_}
    assert sorted(validations) == [2, 4]
    assert all(validations[i]["AP"] == pytest.approx(tests[i]["AP"], abs=1e-4) for i in validations)
    assert all(r_["images_per_s"] > 0 and r_["data_wait_s"] >= 0 for r_ in records if "loss" in r_)
    # TensorBoard events, read back with tensorboard's own reader
    events = EventAccumulator(str(d / "model/pose_tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/total", "loss/smoothed", "lr", "speed/images_per_s", "speed/data_wait_s", "val/AP",
            "val/best", "loss/loss_stage0_L1", "loss/loss_stage0_L2"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/total")] == [0, 1, 2, 3]
    by_iter = {r_["iteration"]: r_ for r_ in records if "loss" in r_}
    assert [e.value for e in events.Scalars("loss/total")] == pytest.approx([by_iter[i]["loss"] for i in range(4)])
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("val/AP")] == \
        [(i, round(tests[i]["AP"], 4)) for i in (2, 4)]
    heatmaps = events.Images("maps/heatmaps")
    assert [e.step for e in heatmaps] == [2, 4] and heatmaps[0].width > 12 * 5
    assert [e.step for e in events.Images("maps/pafs")] == [2, 4]
    # export --best TRAINING_DIR: the best snapshot into an OpenPose models folder
    r = CliRunner().invoke(main, ["export", "--best", str(d), "--to", str(tmp_path / "models")])
    assert r.exit_code == 0, r.output
    assert f"iteration {best['iteration']}" in r.output
    assert (tmp_path / "models/pose/body_25/pose_iter_584000.caffemodel").read_bytes() == model
    assert (tmp_path / "models/pose/body_25/pose_deploy.prototxt").read_bytes() == \
        (d / "pose_deploy.prototxt").read_bytes()


def test_best_is_kept_across_resume_and_a_fresh_run_is_refused_until_started_clean(project, tmp_path):
    d, val = copy_project(project, tmp_path)
    args = ["-solver", "pose_solver.prototxt", "--val-interval", "2", *val]
    assert run_cli(args + ["-iterations", "2"], d).exit_code == 0
    record_path = d / "model/pose_best.json"
    # an earlier run's best that no AP can beat
    record = json.loads(record_path.read_text())
    record.update(score=2.0, iteration=1)
    record_path.write_text(json.dumps(record))
    before = (d / "model/pose_best.caffemodel").read_bytes()
    r = run_cli(args + ["-snapshot", "model/pose_iter_2.solverstate"], d)
    assert r.exit_code == 0, r.output
    assert "best snapshot so far: iteration 1" in r.output
    assert json.loads(record_path.read_text())["score"] == 2.0
    assert (d / "model/pose_best.caffemodel").read_bytes() == before
    assert sorted(parse_test_rows(r.output)) == [4]
    # the metrics file keeps iteration 2's validation (not scored again) and gets iteration 4's once
    records = [json.loads(line) for line in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert [r_["iteration"] for r_ in records if "validation" in r_] == [2, 4]
    assert [r_["iteration"] for r_ in records if "loss" in r_] == [0, 1, 2, 3]
    # TensorBoard: the resumed run purged nothing of iteration 2 and wrote 3, 4 once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(d / "model/pose_tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/AP")] == [2, 4]
    assert [e.step for e in events.Images("maps/heatmaps")] == [2, 4]
    assert sorted(e.step for e in events.Scalars("loss/total")) == [0, 1, 2, 3]
    # a fresh run (no -snapshot) is another training: refused while the earlier run's files are there
    r = run_cli(args, d)
    assert r.exit_code != 0 and "Traceback" not in r.output
    error = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "an earlier training's files" in error[0], r.output
    assert "model/pose_iter_2.caffemodel" in error[0] and "-snapshot model/pose_iter_4.solverstate" in error[0]
    assert json.loads(record_path.read_text())["score"] == 2.0 and "Iteration 0" not in r.output
    # started clean (snapshots, metrics and best record moved away), its own first score is the record
    for path in [*(d / "model").glob("pose_iter_*"), d / "model/pose_metrics.jsonl", record_path,
                 d / "model/pose_best.caffemodel"]:
        path.unlink()
    r = run_cli(args, d)
    assert r.exit_code == 0, r.output
    assert json.loads(record_path.read_text())["iteration"] == 2
    events = EventAccumulator(str(d / "model/pose_tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/AP")] == [2, 4]     # the earlier run's events purged



@pytest.mark.slow      # a second Python process with torch (~15 s on the 2 shared CPU cores)
def test_background_mode_scores_like_inline(project, tmp_path):
    """--val-mode background (the CUDA default) runs 'openpose-train validate' on the snapshot's weights."""
    d, val = copy_project(project, tmp_path)
    args = ["-solver", "pose_solver.prototxt", "--val-interval", "4", "--no-tensorboard", *val]
    r = run_cli(args + ["--val-mode", "background"], d)
    assert r.exit_code == 0, r.output
    assert "validation started in process" in r.output
    background = parse_test_rows(r.output)
    assert sorted(background) == [4]
    assert json.loads((d / "model/pose_best.json").read_text())["iteration"] == 4
    assert not list((d / "model/pose_validation").glob("*.caffemodel"))     # the pending weights moved
    shutil.rmtree(d / "model")
    r = run_cli(args + ["--val-mode", "inline"], d)
    assert r.exit_code == 0, r.output
    assert parse_test_rows(r.output) == background


def test_best_follows_the_highest_score(project, tmp_path):
    """Evaluator bookkeeping: a record is replaced only by a strictly higher score."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.training.evaluation import EvaluationConfig, build_evaluator
    from openpose_train.training.logging_utils import GlogLogger

    d, val = copy_project(project, tmp_path)
    net_path = str(d / "pose_training.prototxt")
    net_param = caffe_io.read_net_prototxt(net_path)
    cfg = EvaluationConfig(images=val[1], annotations=val[3], interval=1)
    lines = []

    class Lines:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass
    ev = build_evaluator(cfg, net_param, net_path, str(d / "model/pose"), "cpu", GlogLogger(stream=Lines()))
    ev.out_dir = str(d / "model")
    (d / "model").mkdir()
    weights = {}
    for it, ap in ((10, 0.1), (20, 0.3), (30, 0.2), (40, 0.3)):
        weights[it] = {name: [b + it for b in blobs] for name, blobs in ev.deploy_net.caffe_weights().items()}
        ev._record(it, {"AP": ap, "AP50": 0.5, "AR": 0.4}, weights=weights[it])
    best = json.loads((d / "model/pose_best.json").read_text())
    assert best["iteration"] == 20 and best["score"] == 0.3
    got = caffe_io.read_caffemodel(str(d / "model/pose_best.caffemodel"))
    name = next(iter(weights[20]))
    assert np.array_equal(got[name][0], weights[20][name][0])
    assert sum("new best" in line for line in lines) == 2
    # a failed evaluation is logged and training goes on; the best stays
    from types import SimpleNamespace

    ev.cfg.images = str(d / "gone")
    ev.evaluate(SimpleNamespace(solver=SimpleNamespace(iter=50), net=ev.deploy_net))
    assert "validation of iteration 50 failed: image folder not found" in lines[-1] and "training goes on" in lines[-1]
    assert json.loads((d / "model/pose_best.json").read_text())["iteration"] == 20


@pytest.mark.parametrize("case", ["missing_annotations", "bad_metric", "bad_interval", "missing_images",
                                  "bad_resolution", "metric_not_in_annotations"])
def test_bad_val_flags_give_one_line(project, tmp_path, case):
    d, val = copy_project(project, tmp_path)
    args = {"missing_annotations": ["--val-images", val[1], "--val-interval", "2"],
            "bad_metric": [*val, "--val-interval", "2", "--val-metric", "elbow"],
            "bad_interval": [*val, "--val-interval", "0"],
            "missing_images": [*val[2:], "--val-images", str(d / "nope"), "--val-interval", "2"],
            "bad_resolution": [*val[:4], "--val-net-resolution", "100x100", "--val-interval", "2"],
            "metric_not_in_annotations": [*val, "--val-interval", "2", "--val-metric", "foot"]}[case]
    expect = {"missing_annotations": "missing --val-annotations", "bad_metric": "--val-metric 'elbow'",
              "bad_interval": "--val-interval 0", "missing_images": "nope",
              "bad_resolution": "--val-net-resolution '100x100'",
              "metric_not_in_annotations": "--val-metric foot: the annotations (coco) have no foot keypoints"}[case]
    r = run_cli(["-solver", "pose_solver.prototxt", *args], d)
    assert r.exit_code != 0
    assert expect in r.output and "Traceback" not in r.output
    assert not list(d.glob("model/*.caffemodel"))


def test_export_best_refuses_a_mismatched_or_missing_record(project, tmp_path):
    d, _ = copy_project(project, tmp_path)
    r = CliRunner().invoke(main, ["export", "--best", str(d), "--to", str(tmp_path / "m")])
    assert r.exit_code != 0 and "no *_best.json" in r.output
    (d / "model").mkdir()
    (d / "model/pose_best.caffemodel").write_bytes(b"x")
    (d / "model/pose_best.json").write_text(json.dumps({"iteration": 2, "metric": "body", "score": 0.5,
                                                         "caffemodel": "pose_best.caffemodel", "sha256": "0" * 64}))
    r = CliRunner().invoke(main, ["export", "--best", str(d), "--to", str(tmp_path / "m"), "--model", "BODY_25"])
    assert r.exit_code != 0 and "sha256 differs" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m").exists()


def test_generator_val_options_reach_train_and_resume_scripts(tmp_path):
    """prototxt --val-*: train_pose.sh / resume_train.sh pass them to openpose-train (quoted), never to Caffe."""
    import os
    import subprocess

    val_dir = tmp_path / "val images"
    val_dir.mkdir()
    (tmp_path / "val.json").write_text("{}")
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("openpose-train", "caffe"):
        (fake / name).write_text('#!/usr/bin/env bash\nfor a in "$@"; do echo "ARG[$a]"; done\n')
        (fake / name).chmod(0o755)
    r = CliRunner().invoke(main, ["prototxt", "--model", "BODY_25", "--preset", "tiny", "--out", str(tmp_path / "o"),
                                  "--no-vgg", "--gpus", "", "--val-images", str(val_dir), "--val-annotations",
                                  str(tmp_path / "val.json"), "--val-interval", "500"])
    assert r.exit_code == 0, r.output
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    expected = ["--val-images", str(val_dir), "--val-annotations", str(tmp_path / "val.json"), "--val-interval", "500",
                "--val-metric", "body"]

    def args(script, extra_env=None, *argv):
        run = subprocess.run(["bash", str(tmp_path / "o" / script), *argv], env=dict(env, **(extra_env or {})),
                             capture_output=True, text=True, check=True)
        return re.findall(r"ARG\[(.*?)\]", run.stdout)
    got = args("train_pose.sh", None, "")
    assert got[:3] == ["train", "-solver", "pose_solver.prototxt"] and got[3:] == expected
    (tmp_path / "o/model").mkdir(exist_ok=True)
    (tmp_path / "o/model/pose_iter_4.solverstate").write_bytes(b"")
    got = args("resume_train.sh", None, "")
    assert got[3:5] == ["-snapshot", "model/pose_iter_4.solverstate"] and got[5:] == expected
    # the Caffe fork has no --val-* flags: CAFFE=... leaves them out
    assert "--val-images" not in args("train_pose.sh", {"CAFFE": str(fake / "caffe")}, "")
    # all three or none
    r = CliRunner().invoke(main, ["prototxt", "--model", "BODY_25", "--preset", "tiny", "--out", str(tmp_path / "p"),
                                  "--val-interval", "5"])
    assert r.exit_code != 0 and "missing --val-images, --val-annotations" in r.output


def test_val_metric_foot_scores_foot_ap(project, tmp_path):
    """--val-metric foot on COCO-foot annotations (23 keypoints): foot_ap is output #0 and the best score."""
    d, val = copy_project(project, tmp_path)
    r = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "foot"), "--images", "3", "--width", "96",
                                  "--height", "96", "--max-people", "1", "--foot", "--person-height", "0.5", "0.8"])
    assert r.exit_code == 0, r.output
    foot = ["--val-images", str(tmp_path / "foot/train2017"), "--val-annotations",
            str(tmp_path / "foot/annotations/person_keypoints_train2017.json"), "--val-net-resolution", "-1x96"]
    r = run_cli(["-solver", "pose_solver.prototxt", "-iterations", "2", "--no-tensorboard", "--val-interval", "2",
                 "--val-metric", "foot", *foot], d)
    assert r.exit_code == 0, r.output
    rows = parse_test_rows(r.output)
    assert list(rows) == [2] and list(rows[2]) == ["foot_ap", "foot_ap50", "foot_ar"]
    best = json.loads((d / "model/pose_best.json").read_text())
    assert (best["metric"], best["key"]) == ("foot", "foot_ap")
    assert best["score"] == pytest.approx(rows[2]["foot_ap"], abs=1e-4)


def test_training_without_the_tensorboard_package_says_so_and_trains_on(tmp_path, monkeypatch):
    import sys

    from test_train_loop import make_dir

    d = make_dir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # import fails as if not installed
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "2"], d)
    assert r.exit_code == 0, r.output
    assert "no TensorBoard event files: TensorBoard logging needs the 'tensorboard' package" in r.output
    assert "--no-tensorboard" in r.output and (d / "model/pose_iter_2.caffemodel").exists()   # trained on
    assert not (d / "model/pose_tensorboard").exists()
    # and with it: the DummyData net's run writes its events beside the metrics
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")
    shutil.rmtree(d / "model")                                  # a new training: start clean
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "2"], d).exit_code == 0
    assert list((d / "model/pose_tensorboard").glob("events.out.tfevents.*"))


# ---- issue 17, classes 4 and 5: the best record checked before work; an evaluation cut short is made on resume ----
@pytest.fixture(scope="module")
def trained(project, tmp_path_factory):
    """The project trained 2 iterations with an evaluation at 2: snapshot, metrics and best record."""
    d, val = copy_project(project, tmp_path_factory.mktemp("trained"))
    r = run_cli(["-solver", "pose_solver.prototxt", "--val-interval", "2", "--no-tensorboard", "-iterations", "2",
                 *val], d)
    assert r.exit_code == 0, r.output
    return d, val


@pytest.mark.parametrize("damage,expected", [
    (lambda rec: None, "not a best-snapshot record (a JSON object with iteration, metric, score, caffemodel; "
                       "found null)"),
    (lambda rec: dict(rec, iteration="2"), "field 'iteration' is \"2\", not an iteration number"),
    (lambda rec: dict(rec, score=[0.5]), "field 'score' is [0.5], not a finite number"),
    (lambda rec: {k: v for k, v in rec.items() if k != "caffemodel"}, "field 'caffemodel' is missing"),
    (lambda rec: dict(rec, caffemodel="gone_best.caffemodel"), "its caffemodel"),
    (lambda rec: dict(rec, metric="foot"), "the best so far is by --val-metric foot, this run scores body"),
])
def test_damaged_best_record_is_one_line_before_a_resume_trains(trained, tmp_path, damage, expected):
    d = tmp_path / "run"
    shutil.copytree(trained[0], d)
    record_path = d / "model/pose_best.json"
    record_path.write_text(json.dumps(damage(json.loads(record_path.read_text()))))
    r = run_cli(["-solver", "pose_solver.prototxt", "--val-interval", "2", "--no-tensorboard",
                 "-snapshot", "model/pose_iter_2.solverstate", *trained[1]], d)
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "model/pose_best.json" in errors[0] and expected in errors[0], r.output
    assert "Iteration 2 (" not in r.output and not (d / "model/pose_iter_4.caffemodel").exists()
    if "metric" not in expected:        # export --best reads the same record: the same line
        r = CliRunner().invoke(main, ["export", "--best", str(d), "--to", str(tmp_path / "m")])
        assert r.exit_code != 0 and "Traceback" not in r.output and expected in r.output, r.output


def test_an_evaluation_cut_short_is_made_on_resume_and_each_interval_scored_once(project, tmp_path, monkeypatch):
    from openpose_train.training.evaluation import Evaluator

    d, val = copy_project(project, tmp_path)
    args = ["-solver", "pose_solver.prototxt", "--val-interval", "2", "--no-tensorboard", *val]
    real = Evaluator.score_inline

    def killed(self, iteration, weights):
        raise KeyboardInterrupt         # the process dies during the evaluation after snapshot 2
    monkeypatch.setattr(Evaluator, "score_inline", killed)
    r = run_cli(args, d)
    assert r.exit_code != 0 and (d / "model/pose_iter_2.solverstate").exists()
    assert not (d / "model/pose_iter_4.solverstate").exists() and not (d / "model/pose_best.json").exists()
    monkeypatch.setattr(Evaluator, "score_inline", real)
    r = run_cli(args + ["-snapshot", "model/pose_iter_2.solverstate"], d)
    assert r.exit_code == 0, r.output
    assert "iteration 2 has no validation record (the earlier run stopped, or failed, before its score was recorded): scoring it now" \
        in r.output
    assert sorted(parse_test_rows(r.output)) == [2, 4]
    records = [json.loads(line) for line in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert [r_["iteration"] for r_ in records if "validation" in r_] == [2, 4]
    # resumed again from 4 (scored): nothing is scored twice
    r = run_cli(args + ["-snapshot", "model/pose_iter_4.solverstate"], d)
    assert r.exit_code == 0 and parse_test_rows(r.output) == {}, r.output
    records = [json.loads(line) for line in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert [r_["iteration"] for r_ in records if "validation" in r_] == [2, 4]


def test_a_resume_scores_every_earlier_interval_left_without_a_record_from_its_snapshot(project, tmp_path,
                                                                                        monkeypatch):
    """Iteration 2's evaluation failed (training went on), iteration 4's was cut by the kill: the resume
    from 4 scores both, 2 from pose_iter_2.caffemodel, and the earlier weights are what 2 is scored on."""
    from openpose_train.training.evaluation import Evaluator

    d, val = copy_project(project, tmp_path)
    args = ["-solver", "pose_solver.prototxt", "--val-interval", "2", "--no-tensorboard", *val]
    real = Evaluator.score_inline
    scored = {}

    def failing(self, iteration, weights):
        if iteration == 2:
            raise OSError("No space left on device")        # logged; training goes on
        raise KeyboardInterrupt                              # killed during iteration 4's evaluation
    monkeypatch.setattr(Evaluator, "score_inline", failing)
    r = run_cli(args, d)
    assert r.exit_code != 0 and (d / "model/pose_iter_4.solverstate").exists()

    def recording(self, iteration, weights):
        scored[iteration] = {name: [b.copy() for b in blobs] for name, blobs in weights.items()}
        return real(self, iteration, weights)
    monkeypatch.setattr(Evaluator, "score_inline", recording)
    r = run_cli(args + ["-snapshot", "model/pose_iter_4.solverstate"], d)
    assert r.exit_code == 0, r.output
    for k in (2, 4):
        assert f"iteration {k} has no validation record" in r.output, r.output
    assert sorted(parse_test_rows(r.output)) == [2, 4]
    records = [json.loads(line) for line in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert sorted(r_["iteration"] for r_ in records if "validation" in r_) == [2, 4]
    from openpose_train.caffe_layers import caffe_io
    for k in (2, 4):
        on_disk = caffe_io.read_caffemodel(d / f"model/pose_iter_{k}.caffemodel")
        for name, blobs in on_disk.items():
            for a, b in zip(blobs, scored[k][name]):
                np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 0 for name in scored[2] for a, b in zip(scored[2][name], scored[4][name]))


# ---- issue 17, class 6: no process outlives the training -----------------------------------------------------------
@pytest.mark.slow      # a training process and its background 'validate' child (~20 s on the 2 shared CPU cores)
def test_background_validation_dies_with_a_killed_training_and_leaves_no_weights(project, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from test_train_robustness import alive

    d, val = copy_project(project, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "openpose_train.cli", "train", "-solver", "pose_solver.prototxt",
                             "--val-interval", "2", "--val-mode", "background", "--no-tensorboard", "--no-progress",
                             "--workers", "0", *val], cwd=d, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    child = None
    try:
        deadline = time.time() + 180
        for line in proc.stderr:
            m = re.search(r"validation started in process (\d+)", line)
            if m or time.time() > deadline:
                child = int(m.group(1)) if m else None
                break
        assert child is not None and alive(child)
    finally:
        proc.kill()                         # kill -9: nothing in the training process runs any more
        proc.wait(timeout=30)
    deadline = time.time() + 15
    while time.time() < deadline and alive(child):
        time.sleep(0.2)
    if alive(child):                        # do not leave it behind when the test fails
        os.kill(child, 9)
        pytest.fail(f"the background validation (PID {child}) outlived the killed training")
    validation = d / "model/pose_validation"
    assert not list(validation.glob("*.caffemodel")) and not list(validation.glob("*summary.json")), \
        list(validation.iterdir())
