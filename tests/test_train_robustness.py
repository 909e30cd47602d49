"""`openpose-train train` on bad input and in bad conditions: one-line errors naming the file and field,
progress through a pipe, snapshot locks and full disks, workers dying with their parent."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from openpose_train.caffe_layers.datum import serialize_datum
from test_train_loop import SOLVER, make_dir, run_cli, tiny_project  # noqa: F401 (a fixture)


def assert_one_line_error(result, *expected):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    errors = [l for l in result.output.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1, result.output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def copy_project(tiny_project, tmp_path, name="p"):
    """A copy of test_train_loop's generated COCO_18 tiny project (its LMDB stays shared)."""
    import shutil

    d = tmp_path / name
    shutil.copytree(tiny_project, d, ignore=shutil.ignore_patterns("model"))
    return d


# ---- item: invalid solver and data fields ------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("max_iter", "-5"), ("display", "-1"), ("snapshot", "-10"),
                                         ("base_lr", "-0.01"), ("average_loss", "0"), ("test_interval", "-2"),
                                         ("momentum", "-0.9"), ("weight_decay", "-0.0005")])
def test_invalid_solver_fields_are_refused_with_file_and_field(tmp_path, field, value):
    text = "\n".join(l for l in SOLVER.splitlines() if not l.startswith(field + ":"))
    d = make_dir(tmp_path, solver=text + f"\n{field}: {value}\n")
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert_one_line_error(r, "solver.prototxt", f"{field} is {value}")
    assert not list(d.glob("model/*_iter_*"))          # nothing ran, nothing was snapshotted


@pytest.mark.parametrize("policy,fields,expected", [
    ("step", "stepsize: 0", "lr_policy 'step' needs stepsize > 0"),
    ("sigmoid", "", "lr_policy 'sigmoid' needs stepsize > 0"),
    ("poly", "power: 1", "lr_policy 'poly' needs max_iter > 0")])
def test_lr_policy_fields_are_checked_before_training(tmp_path, policy, fields, expected):
    text = SOLVER.replace('lr_policy: "multistep"', f'lr_policy: "{policy}"\n{fields}')
    if policy == "poly":
        text = text.replace("max_iter: 20", "max_iter: 0")
    d = make_dir(tmp_path, solver=text)
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "3"], d)
    assert_one_line_error(r, "solver.prototxt", expected)
    assert "Iteration 0" not in r.output


def test_negative_iterations_flag_is_refused(tmp_path):
    d = make_dir(tmp_path)
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "-5"], d)
    assert r.exit_code != 0 and "-iterations" in r.output and not list(d.glob("model/*_iter_*"))


@pytest.mark.parametrize("edit,expected", [
    (("batch_size: 2", "batch_size: 0"), "data_param.batch_size is 0"),
    (("crop_size_x: 128", "crop_size_x: 0"), "crop 0x128 must be positive"),
])
def test_invalid_data_fields_are_refused_with_file_and_layer(tiny_project, tmp_path, edit, expected):
    d = copy_project(tiny_project, tmp_path)
    text = (d / "pose_training.prototxt").read_text()
    assert edit[0] in text
    (d / "pose_training.prototxt").write_text(text.replace(edit[0], edit[1]))
    r = run_cli(["-solver", "pose_solver.prototxt"], d)
    assert_one_line_error(r, "pose_training.prototxt", "layer 'image'", expected)


# ---- item: missing -weights ----------------------------------------------------------------------------------
def test_missing_weights_names_the_file_and_the_vgg_command(tmp_path):
    d = make_dir(tmp_path)
    from openpose_train.generator.render import vgg_command

    path = "dataset/vgg/VGG_ILSVRC_19_layers.caffemodel"
    r = run_cli(["-solver", "solver.prototxt", "-weights", path], d)
    line = assert_one_line_error(r, f"{path}: weights file not found", vgg_command(path))
    assert re.search(r"openpose-train vgg \S+\.pth " + re.escape(path), line), line
    assert not list(d.glob("model/*_iter_*"))


# ---- item: a classification LMDB as a training source ----------------------------------------------------------
@pytest.mark.parametrize("channels,keys", [(3, "convert_imageset"), (3, "openpose"), (1, "openpose")])
def test_classification_lmdb_as_source_is_named(tiny_project, tmp_path, channels, keys):
    cls = tmp_path / "lmdb_classification"
    env = lmdb.open(str(cls), map_size=1 << 22)
    rs = np.random.RandomState(0)
    with env.begin(write=True) as txn:
        for i in range(3):   # a raw image and a label; caffe's convert_imageset keys are %08d_<file>
            image = rs.randint(0, 255, (channels, 28, 28), np.uint8)
            key = b"%08d_img%d.png" % (i, i) if keys == "convert_imageset" else b"%07d" % i
            txn.put(key, serialize_datum(channels, 28, 28, image.tobytes(), label=i % 2))
    env.close()
    d = copy_project(tiny_project, tmp_path)
    text = (d / "pose_training.prototxt").read_text()
    lmdb_path = str(tiny_project.parent / "lmdb_coco")
    assert lmdb_path in text
    (d / "pose_training.prototxt").write_text(text.replace(lmdb_path, str(cls)))
    r = run_cli(["-solver", "pose_solver.prototxt"], d)
    line = assert_one_line_error(r, str(cls))
    assert "NoneType" not in line
    assert re.search(r"no OpenPose metadata plane|no record 0000000|not an OpenPose training LMDB", line), line


# ---- item: net output numbering ------------------------------------------------------------------------------
def test_train_net_outputs_are_numbered_in_name_order_like_caffe(tmp_path):
    from test_train_loop import NET, parse_log_like_caffe

    # layer order: "loss" then "a_loss"; Caffe keeps net outputs in a std::set of names: a_loss is #0
    net = NET + ('layer { name: "loss2" type: "EuclideanLoss" bottom: "conv2" bottom: "label" top: "a_loss" '
                 'loss_weight: 0.5 }\n')
    d = make_dir(tmp_path, net=net)
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "6", "--log", "log.txt"], d)
    assert r.exit_code == 0, r.output
    numbered = re.findall(r"Train net output #(\d+): (\S+) = [\d.e+-]+(?: \(\* ([\d.]+) = )?", r.output)
    assert numbered[:2] == [("0", "a_loss", "0.5"), ("1", "loss", "1")], numbered
    rows = parse_log_like_caffe(d / "log.txt")
    assert [row["NumIters"] for row in rows] == [0, 5]
    assert all(set(row) >= {"a_loss", "loss"} for row in rows)


# ---- item: progress through a pipe (train_pose.sh | tee) and an ETA line at each display ---------------------
def test_progress_lines_when_stderr_is_not_a_terminal():
    import io

    from openpose_train.training.logging_utils import Progress

    now = [100.0]
    pipe = io.StringIO()                       # not a TTY: no bar, plain lines
    bar = Progress(10, 110, stream=pipe, interval=30, clock=lambda: now[0])
    assert not bar.active and bar.line_mode
    for it in range(11, 111):
        now[0] += 1.0                           # 1 iteration per second
        bar.update(it, loss=0.5, lr=0.001)
    bar.close()
    lines = pipe.getvalue().splitlines()
    # the first after the first iteration, then every 30 s, and the last iteration
    assert [re.search(r"Progress: (\d+)/110", l).group(1) for l in lines] == ["11", "41", "71", "101", "110"]
    assert re.search(r"^I\d{4} [\d:.]+ +\d+ solver\.cpp:239\] Progress: 41/110 iters \(37\.3%\), 1 iter/s, "
                     r"elapsed 0:00:31, remaining 0:01:09, smoothed loss 0\.5, lr 0\.001$", lines[1]), lines[1]
    assert not re.search(r"Iteration \d|lr = |Train net output", pipe.getvalue())   # parse_log ignores them
    quiet = io.StringIO()
    Progress(0, 10, enabled=False, stream=quiet).update(5)
    assert quiet.getvalue() == ""


def test_train_through_a_pipe_shows_progress_and_eta_at_each_display(tmp_path):
    from click.testing import CliRunner

    from openpose_train.training.cli import train

    d = make_dir(tmp_path)
    old = os.getcwd()
    os.chdir(d)
    try:   # CliRunner's stderr is not a TTY, like train_pose.sh's `| tee`
        r = CliRunner().invoke(train, ["-solver", "solver.prototxt", "--workers", "0", "--progress-interval", "0",
                                       "--log", "log.txt"], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert r.exit_code == 0, r.output
    progress = re.findall(r"Progress: (\d+)/20 iters \([\d.]+%\), [\d.e+-]+ iter/s, elapsed \d+:\d\d:\d\d, "
                          r"remaining (?:\d+:\d\d:\d\d|\?)", r.output)
    assert set(range(1, 21)) <= {int(p) for p in progress}, r.output     # a line per iteration (interval 0)
    lines = r.output.splitlines()
    for it in (5, 10, 15):                     # the display block ends with the ETA line
        i = next(k for k, l in enumerate(lines) if re.search(rf"\] Iteration {it} \(", l))
        block = lines[i + 1:i + 4]
        assert "Train net output #0" in block[0] and f"Progress: {it}/20 iters" in block[1], block
    logged = (d / "log.txt").read_text()
    assert "Progress: 5/20 iters" in logged and "Progress: 6/20" not in logged   # periodic lines: terminal only


# ---- item: metrics after a resume -------------------------------------------------------------------------------
def test_resume_truncates_the_metrics_to_the_resumed_iteration(tmp_path):
    import json

    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt"], d).exit_code == 0          # 0..19, snapshots at 10 and 20
    metrics = d / "model/pose_metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"iteration": 20, "loss": 0.')                               # torn line of a killed run
    first = {json.loads(l)["iteration"]: l for l in metrics.read_text().splitlines()[:20]}
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "model/pose_iter_10.solverstate"], d)
    assert r.exit_code == 0, r.output
    assert "model/pose_metrics.jsonl:21: dropped a torn last line" in r.output
    assert "dropped 10 records of iteration 10 and later" in r.output
    lines = metrics.read_text().splitlines()
    records = [json.loads(l) for l in lines]
    assert [m["iteration"] for m in records] == list(range(20))
    assert lines[:10] == [first[i] for i in range(10)]                      # the first run's records kept as they were
    # exact resume: the replayed iterations have the first run's losses
    assert [m["loss"] for m in records[10:]] == [json.loads(first[i])["loss"] for i in range(10, 20)]
    assert not list(d.glob("model/*.tmp*"))
    # a damaged line that is not a crash's torn last line is named, before any iteration
    metrics.write_text(metrics.read_text().replace('{"iteration": 3,', '{"iteration": 3', 1))
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "model/pose_iter_10.solverstate"], d)
    assert_one_line_error(r, "model/pose_metrics.jsonl:4: not a JSON line")
    assert "Iteration 10 (" not in r.output


# ---- item: one training per snapshot prefix ------------------------------------------------------------------
def test_second_training_on_the_same_prefix_is_refused_and_a_dead_runs_lock_taken_over(tmp_path):
    from test_train_loop import spawn_endless_training

    d, proc = spawn_endless_training(tmp_path, 0)
    try:
        deadline = time.time() + 60
        for line in proc.stderr:
            if "] Iteration 1 (" in line or time.time() > deadline:
                break
        lock = d / "model/pose.lock"
        assert lock.read_text().split()[0] == str(proc.pid)
        r = run_cli(["-solver", "solver.prototxt", "-iterations", "2"], d)
        assert_one_line_error(r, "model/pose.lock", f"PID {proc.pid}", "'model/pose'")
        assert not (d / "model/pose_iter_2.caffemodel").exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert lock.exists()                       # kill -9 leaves the file; its lock died with the process
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "2"], d)
    # the lock is taken over; then the dead run's metrics refuse a new training on its prefix
    assert_one_line_error(r, "model/pose_metrics.jsonl: an earlier training's files", "start clean")
    assert not lock.exists()
    (d / "model/pose_metrics.jsonl").unlink()
    r = run_cli(["-solver", "solver.prototxt", "-iterations", "2"], d)
    assert r.exit_code == 0, r.output
    assert (d / "model/pose_iter_2.caffemodel").exists() and not lock.exists()   # released at the end


def test_snapshot_lock_without_flock_takes_over_dead_pids_only(tmp_path, monkeypatch):
    from openpose_train.common import locks
    from openpose_train.training import snapshot_lock
    from openpose_train.training.data_sources import TrainingError

    monkeypatch.setattr(locks, "fcntl", None)                         # the portable path
    prefix = str(tmp_path / "model/pose")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "model").mkdir()
    (tmp_path / "model/pose.lock").write_text(f"{dead.pid} host\n")
    with snapshot_lock.SnapshotLock(prefix, "s.prototxt"):
        assert (tmp_path / "model/pose.lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(TrainingError, match=f"PID {os.getpid()} on "):
            snapshot_lock.SnapshotLock(prefix, "s.prototxt").acquire()
    assert not (tmp_path / "model/pose.lock").exists()


# ---- item: snapshots on a full disk, a snapshot_prefix under a file --------------------------------------------
def assert_complete_snapshots_only(folder):
    """Every snapshot is the caffemodel + trainstate + solverstate trio; no temporary file is left."""
    names = sorted(p.name for p in folder.iterdir() if "_iter_" in p.name or ".tmp" in p.name)
    stems = {n.rsplit(".", 1)[0] for n in names}
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("caffemodel", "solverstate", "trainstate")), names
    return sorted(stems)


def test_disk_full_while_snapshotting_keeps_no_partial_snapshot(tmp_path, monkeypatch):
    import errno

    from openpose_train.caffe_layers import caffe_io

    real = caffe_io.write_solverstate

    def full_disk(path, iter, **kw):
        if iter == 20:
            with open(path, "wb") as f:
                f.write(b"\x08\x14")              # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, iter, **kw)
    monkeypatch.setattr(caffe_io, "write_solverstate", full_disk)
    d = make_dir(tmp_path)
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert_one_line_error(r, "model/pose_iter_20.solverstate: cannot write the snapshot of iteration 20",
                          "No space left on device", "the last complete snapshot is model/pose_iter_10.solverstate")
    assert assert_complete_snapshots_only(d / "model") == ["pose_iter_10"]


def test_snapshot_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 20, (1 << 20) - 100, 100)
                        if str(p).endswith("model") else real(p))
    d = make_dir(tmp_path)
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert_one_line_error(r, "model/pose_iter_10.solverstate: the snapshot of iteration 10 needs",
                          "MiB, the disk has 0.00 MiB free", "no snapshot was written in this run")
    assert assert_complete_snapshots_only(d / "model") == []


def test_snapshot_prefix_under_a_file_fails_at_the_start(tmp_path):
    d = make_dir(tmp_path, solver=SOLVER.replace('snapshot_prefix: "model/pose"',
                                                 'snapshot_prefix: "somefile/model/pose"'))
    (d / "somefile").write_text("not a folder")
    r = run_cli(["-solver", "solver.prototxt"], d)
    assert_one_line_error(r, "solver.prototxt", "snapshot_prefix 'somefile/model/pose'",
                          "cannot create the folder somefile/model")
    assert "Iteration 0" not in r.output and "Solving" not in r.output


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs (needs root and mount permission; skipped otherwise)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_training_onto_a_small_tmpfs_stops_with_one_line_and_whole_snapshots(tmp_path, small_tmpfs):
    solver = SOLVER.replace('snapshot_prefix: "model/pose"', f'snapshot_prefix: "{small_tmpfs}/pose"').replace(
        "snapshot: 10", "snapshot: 1").replace("max_iter: 20", "max_iter: 200")
    d = make_dir(tmp_path, solver=solver)
    r = run_cli(["-solver", "solver.prototxt", "--metrics", "metrics.jsonl"], d)
    line = assert_one_line_error(r, str(small_tmpfs))
    assert re.search(r"needs [\d.]+ MiB, the disk has|No space left on device", line), line
    assert len(assert_complete_snapshots_only(small_tmpfs)) >= 1


# ---- item: data workers die with their training process ---------------------------------------------------------
def descendants(pid):
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")             # a zombie has exited (PID 1 may not reap it here)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_data_workers_die_with_a_killed_training(tiny_project, tmp_path):
    from test_train_loop import spawn_endless_training

    d, proc = spawn_endless_training(tmp_path, 0, project=tiny_project, workers=2)
    try:
        deadline = time.time() + 120
        for line in proc.stderr:
            if "] Iteration 2 (" in line or time.time() > deadline:
                break
        workers = [p for p in descendants(proc.pid) if alive(p)]
        assert len(workers) >= 3, workers          # the forkserver and its 2 data workers at least
    finally:
        proc.kill()
        proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    left = [p for p in workers if alive(p)]
    for p in left:                                  # do not leave them behind when the test fails
        os.kill(p, 9)
    assert not left, left


def test_caffe_backend_resume_truncates_the_metrics_too(tmp_path, monkeypatch):
    import json

    from openpose_train.caffe_layers import caffe_io
    from test_train_loop import FAKE_CAFFE

    d = make_dir(tmp_path)
    fake = tmp_path / "caffe"
    fake.write_text(FAKE_CAFFE)                 # displays iterations 0, 20 and 40
    fake.chmod(0o755)
    monkeypatch.setenv("CAFFE", str(fake))
    assert run_cli(["-solver", "solver.prototxt"], d).exit_code == 0
    caffe_io.write_solverstate(str(d / "model/pose_iter_20.solverstate"), 20, "model/pose_iter_20.caffemodel", [])
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "model/pose_iter_20.solverstate"], d)
    assert r.exit_code == 0, r.output
    iterations = [json.loads(l)["iteration"] for l in (d / "model/pose_metrics.jsonl").read_text().splitlines()]
    assert iterations == [0] + [0, 20, 40]      # the first run's 20 and 40 are gone (the fake replays from 0)


# ---- issue 17, class 1: a snapshot folder is data; loading it never runs code ---------------------------------
class _Marker:
    """Unpickling this creates ``path`` (what a hostile .trainstate could do with any command)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_trainstate_is_json_and_a_pickle_in_its_place_is_refused_without_running_it(tmp_path):
    import json
    import pickle

    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d).exit_code == 0
    side = d / "model/pose_iter_10.trainstate"
    state = json.loads(side.read_text())                        # data only: plain JSON
    assert state["format"] == "openpose-train trainstate" and state["iter"] == 10 and len(state["ranks"]) == 1
    marker = tmp_path / "hostile_code_ran"
    side.write_bytes(pickle.dumps({"format": 1, "iter": 10, "ranks": [_Marker(marker)]}, protocol=4))
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "model/pose_iter_10.solverstate"], d)
    assert_one_line_error(r, "model/pose_iter_10.trainstate", "a pickle", "can run any code")
    assert not marker.exists()
    assert "Iteration 10 (" not in r.output and not (d / "model/pose_iter_20.solverstate").exists()


@pytest.mark.parametrize("content,expected", [
    (lambda good: good[:len(good) // 2], "not a JSON training state"),               # truncated by a crash
    (lambda good: b"", "not a JSON training state"),
    (lambda good: b"null", "not an openpose-train training state"),
    (lambda good: b'{"format": "something else"}', "not an openpose-train training state"),
    (lambda good: good.replace(b'"version":2', b'"version":7'), "training-state version 7"),
    (lambda good: good.replace(b'"iter":10', b'"iter":"10"'), "field 'iter'"),
    (lambda good: good.replace(b'"iter":10', b'"iter":12'), "iteration 12 does not match"),
    (lambda good: good.replace(b'"dtype":"uint8"', b'"dtype":"object"', 1), "is not a plain number type"),
    (lambda good: good.replace(b'"shape":[5056]', b'"shape":[5057]', 1), "bytes for an array of shape [5057]"),
    (lambda good: good.replace(b'"__type__":"tuple"', b'"__type__":"pickle"', 1), "unknown __type__ 'pickle'"),
    (lambda good: good.replace(b'"rng":{', b'"rnd":{', 1), "ranks[0] is not"),
    (lambda good: b"[" * 100000 + b"]" * 100000, "not a JSON training state"),             # hostile nesting
])
def test_damaged_trainstate_is_one_line_before_any_iteration(tmp_path, content, expected):
    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d).exit_code == 0
    side = d / "model/pose_iter_10.trainstate"
    damaged = content(side.read_bytes())
    assert damaged != side.read_bytes()
    side.write_bytes(damaged)
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "model/pose_iter_10.solverstate"], d)
    assert_one_line_error(r, "model/pose_iter_10.trainstate", expected)
    assert "Iteration 10 (" not in r.output and not (d / "model/pose_iter_20.solverstate").exists()


def test_trainstate_codec_keeps_types_exactly():
    import random

    import torch

    from openpose_train.training import trainstate
    from openpose_train.training.loop import rng_state

    value = {"rng": rng_state(), "data": [{"offsets": [3, 4], "dice_rng": np.random.default_rng(5).bit_generator.state,
                                          "seed": 2 ** 70, "x": 0.1, "b": b"\x00\xff", "t": torch.arange(4.0)}]}
    back = trainstate.decode(trainstate.encode(value))
    assert back["rng"]["python"] == random.getstate()                       # tuples stay tuples
    assert back["rng"]["numpy"][0] == "MT19937" and np.array_equal(back["rng"]["numpy"][1], np.random.get_state()[1])
    assert torch.equal(back["rng"]["torch"], torch.get_rng_state()) and back["rng"]["torch"].dtype == torch.uint8
    assert back["data"][0]["dice_rng"] == value["data"][0]["dice_rng"] and back["data"][0]["seed"] == 2 ** 70
    assert back["data"][0]["b"] == b"\x00\xff" and torch.equal(back["data"][0]["t"], torch.arange(4.0))
    with pytest.raises(TypeError):
        trainstate.encode({"f": lambda: 0})                                   # only data is stored


def test_no_loader_in_the_package_unpickles():
    """Every loader of the package reads data only: no pickle.load(s), torch.load with weights_only=True,
    numpy's loaders without allow_pickle=True (docs/refusals.md §Resume and side files)."""
    import ast

    repo = Path(__file__).resolve().parents[1]
    bad = []
    tops = [p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")
            and p.name not in ("tests", "build", "benchmarks") and not p.name.endswith(".egg-info")]
    files = [p for top in tops for p in top.rglob("*.py")] + list(repo.glob("*.py"))
    assert any(p.name == "loop.py" for p in files)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            name = f"{owner}.{node.func.attr}"
            keywords = {k.arg: k.value for k in node.keywords}
            true = lambda key: isinstance(keywords.get(key), ast.Constant) and keywords[key].value is True  # noqa
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads", "yaml.load",
                        "yaml.unsafe_load", "yaml.full_load") \
                    or (name == "torch.load" and not true("weights_only")) \
                    or (name in ("np.load", "numpy.load") and true("allow_pickle")):
                bad.append(f"{path.relative_to(repo)}:{node.lineno}: {name}")
    assert not bad, bad


# ---- issue 17, class 3: a new training never mixes into an earlier run's files ----------------------------------
def test_fresh_training_over_an_earlier_run_is_refused_naming_files_and_the_way_out(tmp_path):
    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt"], d).exit_code == 0          # snapshots 10, 20 and the metrics
    before = {p.name: p.read_bytes() for p in (d / "model").iterdir() if p.is_file()}
    for extra in ([], ["-weights", "model/pose_iter_20.caffemodel"]):
        r = run_cli(["-solver", "solver.prototxt", *extra], d)
        line = assert_one_line_error(r, "model/pose_iter_10.caffemodel", "and 3 more", "an earlier training's files",
                                     "'model/pose'", "resume it with -snapshot model/pose_iter_20.solverstate",
                                     "start clean")
        assert "Iteration 0" not in r.output, line
        assert {p.name: p.read_bytes() for p in (d / "model").iterdir() if p.is_file()} == before  # untouched
    # a metrics file elsewhere (--metrics) counts too; an empty one does not
    (d / "model/pose_metrics.jsonl").rename(d / "m.jsonl")
    for p in (d / "model").glob("pose_iter_*"):
        p.unlink()
    assert_one_line_error(run_cli(["-solver", "solver.prototxt", "--metrics", "m.jsonl"], d), "m.jsonl: an earlier")
    (d / "m.jsonl").write_text("")
    assert run_cli(["-solver", "solver.prototxt", "--metrics", "m.jsonl", "-iterations", "2"], d).exit_code == 0


# ---- issue 17, class 5: resume does what the user means and says what it loaded -----------------------------------
def test_resume_from_another_folder_pairs_the_caffemodel_beside_the_solverstate(tmp_path):
    a = make_dir(tmp_path, "A")
    assert run_cli(["-solver", "solver.prototxt"], a).exit_code == 0                         # 0..20 straight
    b = make_dir(tmp_path, "B", solver=SOLVER.replace("random_seed: 3", "random_seed: 11"))
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], b).exit_code == 0    # B's own iter 10
    assert (b / "model/pose_iter_10.caffemodel").read_bytes() != (a / "model/pose_iter_10.caffemodel").read_bytes()
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", "../A/model/pose_iter_10.solverstate"], b)
    assert r.exit_code == 0, r.output
    assert ("Resumed at iteration 10: weights ../A/model/pose_iter_10.caffemodel, solver history "
            "../A/model/pose_iter_10.solverstate, data-layer and RNG state ../A/model/pose_iter_10.trainstate") in r.output
    # A's history with A's weights: B's iteration 20 is A's (exact resume)
    assert (b / "model/pose_iter_20.caffemodel").read_bytes() == (a / "model/pose_iter_20.caffemodel").read_bytes()


@pytest.mark.parametrize("given,expected", [
    ("model/pose_iter_10.caffemodel", "a caffemodel, not a solverstate; resume with -snapshot "
                                      "model/pose_iter_10.solverstate, or start a new training from these weights"),
    ("model/pose_iter_10.trainstate", "not a solverstate"),
    ("model/pose_iter_11.solverstate", "solverstate not found"),
])
def test_snapshot_flag_given_another_file_says_what_it_is(tmp_path, given, expected):
    d = make_dir(tmp_path)
    assert run_cli(["-solver", "solver.prototxt", "-iterations", "10"], d).exit_code == 0
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", given], d)
    assert_one_line_error(r, f"-snapshot {given}: {expected}")
    assert "Solving" not in r.output


# ---- issue 17, class 8: a full disk under --metrics is one error, not a second one from close() -------------------
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write: no space left)")
def test_metrics_on_a_full_disk_is_one_error_without_a_chained_one_from_close(tmp_path):
    d = make_dir(tmp_path)
    r = subprocess.run([sys.executable, "-m", "openpose_train.cli", "train", "-solver", "solver.prototxt", "--metrics",
                        "/dev/full", "--no-progress", "--workers", "0"], cwd=d, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "During handling" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: /dev/full: cannot write the metrics: No space left on device"], r.stderr
    assert not (d / "model/pose.lock").exists()


def test_yaml_skeleton_loader_is_safe():
    """The YAML skeleton loader builds only plain data: its constructor is the safe one, and a Python
    object tag is refused (one line naming the file) instead of being constructed."""
    import yaml

    from openpose_train.generator import skeleton
    from openpose_train.generator.registry import SkeletonError

    constructor = yaml.constructor
    assert issubclass(skeleton._UniqueKeyLoader, constructor.SafeConstructor)
    assert not issubclass(skeleton._UniqueKeyLoader, (constructor.FullConstructor, constructor.UnsafeConstructor))
    path = Path(__file__).resolve().parent / "_unsafe.yaml"
    try:
        path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
        with pytest.raises(SkeletonError, match="_unsafe.yaml"):
            skeleton.load_skeleton_yaml(path)
    finally:
        path.unlink()


# ---- issue 17, class 6: a rank that dies under torchrun stops the others with one line and a snapshot ----------------
@pytest.mark.slow      # torchrun with 2 gloo processes (~30 s on the 2 shared CPU cores)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_torchrun_rank_killed_stops_rank_0_with_one_line_a_snapshot_and_no_lock(tmp_path):
    solver = SOLVER.replace("max_iter: 20", "max_iter: 100000000").replace("snapshot: 10", "snapshot: 0") \
        .replace("display: 5", "display: 1")
    d = make_dir(tmp_path, solver=solver)
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                             "openpose_train.cli", "train", "-solver", "solver.prototxt", "--no-progress", "--workers",
                             "0"], cwd=d, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = []
    try:
        deadline = time.time() + 180
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"^I\d+ [\d:.]+ +(\d+) solver.cpp:218\] Iteration 5 \(", line)
            if m or time.time() > deadline:
                break
        assert m, "".join(lines)
        rank0 = int(m.group(1))
        rank1 = [p for p in descendants(proc.pid) if alive(p) and p != rank0 and rank0 not in descendants(p)
                 and "openpose_train.cli" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(rank1) == 1, rank1
        os.kill(rank1[0], 9)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out[-3000:]
    m = re.match(r"Error: rank 1 of this 2-process training stopped, so rank 0 stops at iteration (\d+); last "
                 r"complete snapshot: model/pose_iter_(\d+)\.solverstate \(resume with -snapshot", errors[0])
    assert m and m.group(1) == m.group(2), errors[0]
    assert "[rank0]: Traceback" not in out and "this is a bug" not in out, out[-3000:]
    state = d / f"model/pose_iter_{m.group(1)}.solverstate"
    assert state.exists() and (d / f"model/pose_iter_{m.group(1)}.caffemodel").exists()
    assert not (d / "model/pose.lock").exists()
    # the snapshot resumes in one process (weights and history; the data order starts afresh)
    r = run_cli(["-solver", "solver.prototxt", "-snapshot", f"model/{state.name}", "-iterations",
                 str(int(m.group(1)) + 1)], d)
    assert r.exit_code == 0 and "the data order starts afresh" in r.output, r.output


def _rank_1_dies(_):
    """A 2-process group whose rank 1 is killed; rank 0 stops on the failed collective with one line."""
    import signal

    from openpose_train.training import distributed
    from openpose_train.training.data_sources import TrainingError

    signal.signal(signal.SIGTERM, lambda *_: None)      # the training's handler: finish the step, then stop
    with distributed.process_group(False) as ctx:
        if ctx.rank == 1:
            os.kill(os.getpid(), 9)
        try:
            for _ in range(100):
                ctx.max_int(0)
                time.sleep(0.1)
        except RuntimeError:
            raise TrainingError(f"rank {', '.join(map(str, ctx.dead_ranks()))} stopped") from None


@pytest.mark.slow      # two spawned processes importing torch (~15 s on the 2 shared CPU cores)
def test_spawned_rank_killed_gives_one_line_from_the_rank_that_saw_it(capfd):
    """`-gpu 0,1` spawns one process per GPU (CUDA only); the same spawn on the CPU, gloo."""
    from openpose_train.training import distributed

    with pytest.raises(distributed.SpawnedRankFailed) as failed:
        distributed.spawn(_rank_1_dies, 2, (None,))
    err = capfd.readouterr().err
    # whichever exit spawn saw first (rank 1's SIGKILL or rank 0's status 3), rank 0's line is the one shown
    assert failed.value.reported and re.match(r"rank [01] \(PID \d+\) (was ended by SIGKILL|exited with status 3)",
                                              str(failed.value)), str(failed.value)
    assert [line for line in err.splitlines() if line.startswith("Error:")] == ["Error: rank 1 stopped"], err
    assert "Traceback" not in err, err


def test_process_group_waits_for_every_rank_before_closing_only_when_all_finished(monkeypatch):
    """A clean end: barrier, then destroy (no rank closes its connections while a peer still completes the
    last collective; gloo aborts that peer otherwise). After a failure: destroy only (a peer may be gone)."""
    from openpose_train.training import distributed

    calls = []
    monkeypatch.setattr(distributed, "init_from_env", lambda use_cuda: distributed.DistContext(rank=0, world_size=2))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    with distributed.process_group(False) as ctx:
        assert ctx.world_size == 2 and calls == []
    assert calls == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        with distributed.process_group(False):
            raise KeyboardInterrupt
    assert calls == ["destroy"]


def test_ddp_gets_the_buffer_sync_flag_that_this_torch_has():
    """setup.py allows torch 2.1: `forward_sync_buffers` only exists from 2.13 on (where `broadcast_buffers`
    is deprecated); a flag the installed torch lacks would be a TypeError at the first -gpu 0,1 run."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    from openpose_train.training import distributed

    (flag, value), = distributed._NO_FORWARD_BUFFER_SYNC.items()
    assert flag in inspect.signature(DistributedDataParallel).parameters and value is False
