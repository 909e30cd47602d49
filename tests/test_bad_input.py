"""Bad input, command by command: each is one line naming the file / record / field / layer, never a
traceback or a crash, and nothing half-written is left behind.

The first tests check what the LMDB build skips (and names); the table at the end runs every
subcommand with classes of bad input (wrong types in JSON, files where folders are expected and
the reverse, missing and truncated files, unwritable outputs, a full disk)."""
import copy
import csv
import json
import shutil

import cv2
import pytest
from click.testing import CliRunner

from openpose_train.cli import main as cli_main
from openpose_train.dataset_tools import coco
from openpose_train.caffe_layers.lmdb_reader import LmdbReader
from openpose_train.dataset_tools.lmdb_writer import CORRUPT, LEAVES_FOLDER, skipped_list_path
from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    result = make_synthetic_dataset(root, SynthConfig(images=16, seed=7, width=160, height=128))
    return result.splits["train2017"], result.image_dirs["train2017"]


def _main_annotations(doc):
    """(image, its first main-person annotation) of every image that has one."""
    out = []
    for img in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] >= 5
                and not a["iscrowd"] and a["area"] >= 32 * 32]
        if anns:
            out.append((img, anns[0]))
    return out


def _skipped_rows(out):
    with open(skipped_list_path(out), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["file_name", "annotation_id", "reason"]
    return {tuple(r) for r in rows[1:]}


def test_lmdb_skips_malformed_annotations_and_bad_images_and_names_each(tmp_path, synth):
    json_path, images = synth
    doc = json.load(open(json_path))
    work = tmp_path / "images"
    shutil.copytree(images, work)
    mains = _main_annotations(doc)
    assert len(mains) >= 6
    (img_str, ann_str), (img_bbox, ann_bbox), (img_odd, ann_odd), (img_txt, ann_txt), (img_zero, _), \
        (img_up, _) = mains[:6]
    ann_str["keypoints"][3] = "abc"                              # a string among the keypoints
    ann_bbox["bbox"] = ["x", 0, 10, 10]
    ann_odd["segmentation"] = [[10, 10, 50, 10, 50, 50, 7]]      # odd length
    ann_txt["segmentation"] = [[10, 10, "a", 10, 50, 50]]        # not numbers
    (work / img_zero["file_name"]).write_bytes(b"")              # a zero-byte JPEG
    img_up["file_name"] = "../../../etc/passwd"                  # leaves the images folder
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    out = tmp_path / "lmdb"
    res = CliRunner().invoke(cli_main, ["lmdb", "--json", str(bad), "--images", str(work), "--out", str(out),
                                        "--quiet"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and res.exception is None
    assert not out.with_name("lmdb.partial").exists()
    assert f"skipped images and people listed in {skipped_list_path(out)}" in res.output
    rows = _skipped_rows(out)
    expected = {
        (img_str["file_name"], str(ann_str["id"]), coco.non_numeric("keypoints")),
        (img_bbox["file_name"], str(ann_bbox["id"]), coco.non_numeric("bbox")),
        (img_odd["file_name"], str(ann_odd["id"]), coco.BAD_POLYGON),
        (img_txt["file_name"], str(ann_txt["id"]), coco.BAD_POLYGON),
        (img_zero["file_name"], "", CORRUPT),
        ("../../../etc/passwd", "", LEAVES_FOLDER),
    }
    assert expected <= rows, expected - rows
    # the selection rules' leftovers are named too, and the list agrees with the printed counts
    for line in res.output.splitlines():
        if line.startswith("people skipped: "):
            counts = dict(part.rsplit(": ", 1) for part in line[len("people skipped: "):].split(", "))
    named = {r for _, a, r in rows if a}
    for reason in (coco.non_numeric("keypoints"), coco.BAD_POLYGON, coco.SMALL_AREA):
        assert reason in named and int(counts[reason]) == sum(1 for _, a, r in rows if a and r == reason)
    with LmdbReader(out) as reader:
        assert len(reader) >= 1
        stored = {int(r.meta.annolist_index) for r in reader}
    skipped_images = {img["id"] for img in (img_str, img_bbox, img_odd, img_txt, img_zero, img_up)}
    # annolist_index is the 1-based image position; the skipped main people's images have no record
    # for that person (others of the image may still have records): check the whole-image skips
    order = [img["id"] for img in doc["images"] if any(a["image_id"] == img["id"] for a in doc["annotations"])]
    for image_id in (img_zero["id"], img_up["id"]):
        assert image_id in skipped_images and order.index(image_id) + 1 not in stored


def test_lmdb_absolute_file_name_is_not_read(tmp_path, synth):
    """An absolute path to a real JPEG outside --images is refused, not read (it would decode)."""
    json_path, images = synth
    doc = json.load(open(json_path))
    work = tmp_path / "images"
    shutil.copytree(images, work)
    img, _ = _main_annotations(doc)[0]
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(work / img["file_name"], outside)
    img["file_name"] = str(outside)
    bad = tmp_path / "abs.json"
    bad.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli_main, ["lmdb", "--json", str(bad), "--images", str(work),
                                        "--out", str(tmp_path / "l"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (str(outside), "", LEAVES_FOLDER) in _skipped_rows(tmp_path / "l")
    assert "path leaves the images folder: 1" in res.output


def test_lmdb_without_skips_writes_no_list_and_removes_a_stale_one(tmp_path, synth):
    json_path, images = synth
    doc = json.load(open(json_path))
    mains = {id(a) for _, a in _main_annotations(doc)}
    doc["annotations"] = [a for a in doc["annotations"] if id(a) in mains]   # only people that become records
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(doc))
    out = tmp_path / "l"
    stale = skipped_list_path(out)
    stale.write_text("file_name\tannotation_id\treason\nold.jpg\t\tmissing image\n")
    res = CliRunner().invoke(cli_main, ["lmdb", "--json", str(clean), "--images", str(images),
                                        "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "skipped" not in res.output and not stale.exists()


def test_malformed_polygon_of_a_crowd_skips_its_image(tmp_path, synth):
    """A crowd's (or an unlabeled person's) region must be masked: when its polygon cannot be
    drawn the image is skipped, named, rather than trained with that region as background."""
    json_path, images = synth
    doc = json.load(open(json_path))
    img, _ = _main_annotations(doc)[0]
    doc["annotations"].append({"id": 999, "image_id": img["id"], "iscrowd": 1, "num_keypoints": 0,
                               "area": 100.0, "bbox": [0, 0, 10, 10], "category_id": 1,
                               "keypoints": [0] * 51, "segmentation": [[0, 0, 10, 0, 10]]})
    bad = tmp_path / "crowd.json"
    bad.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli_main, ["lmdb", "--json", str(bad), "--images", str(images),
                                        "--out", str(tmp_path / "l"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (img["file_name"], "", "unreadable segmentation") in _skipped_rows(tmp_path / "l")


def test_image_entry_with_non_numeric_size_is_an_error_naming_it(tmp_path, synth):
    json_path, images = synth
    doc = json.load(open(json_path))
    doc = copy.deepcopy(doc)
    doc["images"][2]["width"] = "wide"
    bad = tmp_path / "w.json"
    bad.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli_main, ["lmdb", "--json", str(bad), "--images", str(images),
                                        "--out", str(tmp_path / "l"), "--quiet"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "Error: " in res.output and "w.json" in res.output and "images[2] 'width'" in res.output
    assert not (tmp_path / "l.partial").exists() and not (tmp_path / "l").exists()


@pytest.mark.parametrize("case", ["no-annotations", "no-image-found", "background-no-image"])
def test_lmdb_that_would_write_no_record_is_refused_with_the_reasons(tmp_path, synth, case):
    """An empty LMDB would only fail later, in training: refused with one line, nothing left behind."""
    json_path, images = synth
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    doc = json.load(open(json_path))
    doc["annotations"] = []
    (tmp_path / "none.json").write_text(json.dumps(doc))
    args, names = {
        "no-annotations": (["--json", str(tmp_path / "none.json"), "--images", str(images)],
                           ["none.json", "no annotation is a person"]),
        "no-image-found": (["--json", str(json_path), "--images", str(empty)],
                           ["every planned image was skipped", "missing image: ", "l_skipped.tsv"]),
        "background-no-image": (["--background", "--images", str(empty)], ["no background image", "empty_folder"]),
    }[case]
    res = CliRunner().invoke(cli_main, ["lmdb", *args, "--out", str(tmp_path / "l"), "--quiet"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert res.output.startswith(f"Error: {tmp_path / 'l'}: no record to write") and "Traceback" not in res.output
    for name in names:
        assert name in res.output, (name, res.output)
    assert not (tmp_path / "l").exists() and not (tmp_path / "l.partial").exists()


# ------------------------------------------------------------------------------------------------
# The sweep: every subcommand x classes of bad input. Each case must end with a nonzero exit that
# is not a signal, no traceback, an "Error:" line naming the offending file / field / layer, and no
# half-written file (``*.partial``, ``*.tmp*``) anywhere under the test folders.

import os  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Callable, Optional  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEFTOVER_PATTERNS = ("*.partial", "*.tmp", "*.tmp.*")


def _mount_small_tmpfs(path: Path, size: str = "1m") -> Optional[str]:
    """Mount a tmpfs of ``size`` at ``path``; the reason when that is not permitted (not root, a
    container without CAP_SYS_ADMIN), else None."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot mount a tmpfs for the disk-full cases: {proc.stderr.strip() or proc.returncode}"
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth):
    """Good and bad inputs shared by the sweep (every case writes into its own folder)."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.shapes import random_weights
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
    from openpose_train.generator.render import render_deploy

    root = tmp_path_factory.mktemp("sweep")
    json_path, images = synth
    w = SimpleNamespace(root=root, json=json_path, images=images)
    w.afile = root / "afile"                       # a regular file where a folder is expected
    w.afile.write_text("not a folder\n")
    w.lmdb = root / "lmdb_coco"
    build_lmdb(json_path, images, w.lmdb, BuildOptions(progress=False))
    w.trunc_lmdb = root / "lmdb_trunc"              # data.mdb cut after its meta pages: records and tree gone
    shutil.copytree(w.lmdb, w.trunc_lmdb)
    os.truncate(w.trunc_lmdb / "data.mdb", 3 * 4096)
    w.corrupt_lmdb = root / "lmdb_corrupt"          # whole, but its root page's type flags overwritten
    shutil.copytree(w.lmdb, w.corrupt_lmdb)
    with open(w.corrupt_lmdb / "data.mdb", "r+b") as f:
        metas = f.read(2 * 4096)       # LMDB meta pages 0 and 1: txnid at byte 144, main-tree root at 128
        root_page = max((struct.unpack_from("<Q", metas, p * 4096 + 144)[0],
                         struct.unpack_from("<Q", metas, p * 4096 + 128)[0]) for p in (0, 1))[1]
        f.seek(root_page * 4096 + 10)
        f.write(b"\x5a\x5a")
    w.not_coco = root / "not_coco.json"
    w.not_coco.write_text(json.dumps([1, 2, 3]))
    w.wrong_types = root / "wrong_types.json"
    w.wrong_types.write_text(json.dumps({"images": "all of them", "annotations": {"a": 1}}))
    w.garbage = root / "garbage.bin"
    w.garbage.write_bytes(bytes(range(256)) * 8)
    w.log = root / "train.log"
    w.log.write_text("".join(f"I1203 08:00:00.000000 1 solver.cpp:218] Iteration {i} (1 iter/s, 1s/1 iters), "
                             f"loss = {1.0 / (i + 1)}\n" for i in range(0, 100, 20)))
    for model in ("BODY_25", "BODY_25B"):          # training folders as the generator leaves them
        folder = root / f"snap_{model}"
        folder.mkdir()
        deploy = folder / "pose_deploy.prototxt"
        deploy.write_text(render_deploy(model, preset="tiny"))
        net = caffe_io.read_net_prototxt(str(deploy))
        caffe_io.write_caffemodel(str(folder / "pose_iter_10.caffemodel"), random_weights(net, seed=1), net=net)
        setattr(w, f"snap_{model}", folder / "pose_iter_10.caffemodel")
    w.deploy = root / "snap_BODY_25" / "pose_deploy.prototxt"
    w.trunc_model = root / "trunc_dir" / "pose_iter_10.caffemodel"   # with its deploy beside it
    w.trunc_model.parent.mkdir()
    shutil.copy(w.deploy, w.trunc_model.parent)
    raw = w.snap_BODY_25.read_bytes()
    w.trunc_model.write_bytes(raw[:len(raw) // 2])
    # a training folder: tiny BODY_25 on the good LMDB, 1 iteration
    w.train = root / "train"
    res = CliRunner().invoke(cli_main, ["prototxt", "--model", "BODY_25", "--preset", "tiny", "--out", str(w.train),
                                        "--lmdb", str(w.lmdb), "--batch-size", "1", "--crop-size", "64",
                                        "--max-iter", "1", "--vgg-weights", "", "--gpus", ""])
    assert res.exit_code == 0, res.output
    w.solver = w.train / "pose_solver.prototxt"
    w.train_trunc = root / "train_trunc"          # the same, reading the truncated LMDB
    shutil.copytree(w.train, w.train_trunc)
    text = (w.train_trunc / "pose_training.prototxt").read_text()
    assert str(w.lmdb) in text
    (w.train_trunc / "pose_training.prototxt").write_text(text.replace(str(w.lmdb), str(w.trunc_lmdb)))
    w.under_file_solver = root / "train_under_file" / "pose_solver.prototxt"   # snapshot_prefix under a file
    shutil.copytree(w.train, w.under_file_solver.parent)
    solver = w.under_file_solver.read_text()
    w.under_file_solver.write_text("\n".join(
        f'snapshot_prefix: "{w.afile}/pose"' if line.startswith("snapshot_prefix") else line
        for line in solver.splitlines()) + "\n")
    w.full_solver = root / "train_full" / "pose_solver.prototxt"     # snapshots onto the full tmpfs
    shutil.copytree(w.train, w.full_solver.parent)
    w.full_solver.write_text("\n".join(
        f'snapshot_prefix: "{root / "full" / "pose"}"' if line.startswith("snapshot_prefix") else line
        for line in solver.splitlines()) + "\n")
    w.zero_solver = root / "train_zero" / "pose_solver.prototxt"      # a conv with num_output: 0
    shutil.copytree(w.train, w.zero_solver.parent)
    net_text = (w.zero_solver.parent / "pose_training.prototxt").read_text()
    assert net_text.count("num_output: 26") == 1
    (w.zero_solver.parent / "pose_training.prototxt").write_text(net_text.replace("num_output: 26", "num_output: 0"))
    w.missing_bottom_solver = root / "train_missing" / "pose_solver.prototxt"   # a bottom no layer produces
    shutil.copytree(w.train, w.missing_bottom_solver.parent)
    (w.missing_bottom_solver.parent / "pose_training.prototxt").write_text(
        net_text.replace('bottom: "conv1_1"', 'bottom: "conv1_nope"', 1))
    w.syntax_solver = root / "train_syntax" / "pose_solver.prototxt"     # not a prototxt
    shutil.copytree(w.train, w.syntax_solver.parent)
    (w.syntax_solver.parent / "pose_training.prototxt").write_text("layer { name: \"x\" type: \n" + net_text)
    w.zero_deploy = root / "zero_deploy.prototxt"
    w.zero_deploy.write_text(w.deploy.read_text().replace("num_output: 26", "num_output: 0"))
    w.trunc_state = root / "pose_iter_1.solverstate"
    caffe_io.write_solverstate(str(w.trunc_state), 1, str(w.snap_BODY_25), [])
    state = w.trunc_state.read_bytes() + b"\x1a\xff\xff\x03"    # a history blob cut after its length
    w.trunc_state.write_bytes(state)
    w.full = root / "full"                          # a nearly full 1 MiB tmpfs
    w.full_reason = _mount_small_tmpfs(w.full)
    if w.full_reason is None:
        (w.full / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))
    yield w
    if w.full_reason is None:
        subprocess.run(["umount", str(w.full)], check=False)


@dataclass
class Case:
    id: str
    args: Callable           # (world, own folder) -> argv after "openpose-train" (or the script)
    names: Callable          # (world, own folder) -> strings the Error line must contain
    how: str = "cli"         # cli: in-process CliRunner; process: a subprocess (a crash would kill pytest);
    #                          script: python generate_prototxt.py
    needs_tmpfs: bool = False
    xfail: Optional[str] = None


def _snap(w, model="BODY_25"):
    return getattr(w, f"snap_{model}")


CASES = [
    # lmdb
    Case("lmdb-json-missing", lambda w, t: ["lmdb", "--json", str(t / "nope.json"), "--images", str(w.images),
                                            "--out", str(t / "l")], lambda w, t: ["nope.json", "not found"]),
    Case("lmdb-json-is-a-folder", lambda w, t: ["lmdb", "--json", str(w.images), "--images", str(w.images),
                                                "--out", str(t / "l")], lambda w, t: [w.images.name]),
    Case("lmdb-json-not-coco", lambda w, t: ["lmdb", "--json", str(w.not_coco), "--images", str(w.images),
                                             "--out", str(t / "l")], lambda w, t: ["not_coco.json", "'images'"]),
    Case("lmdb-json-wrong-types", lambda w, t: ["lmdb", "--json", str(w.wrong_types), "--images", str(w.images),
                                                "--out", str(t / "l")], lambda w, t: ["wrong_types.json", "lists"]),
    Case("lmdb-background-json-wrong-types", lambda w, t: [
        "lmdb", "--background", "--json", str(w.wrong_types), "--images", str(w.images), "--out", str(t / "l")],
        lambda w, t: ["wrong_types.json", "lists"]),
    Case("lmdb-images-is-a-file", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(w.afile),
                                                "--out", str(t / "l")], lambda w, t: ["afile"]),
    Case("lmdb-images-missing", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(t / "noimg"),
                                              "--out", str(t / "l")], lambda w, t: ["noimg", "not found"]),
    Case("lmdb-out-under-a-file", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(w.images),
                                                "--out", str(w.afile / "l")], lambda w, t: ["afile/l.partial"]),
    Case("lmdb-disk-full", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(w.images), "--quiet",
                                         "--out", str(w.full / "l")], lambda w, t: ["l.partial", "free"],
         needs_tmpfs=True),
    Case("lmdb-encoded-disk-full", lambda w, t: ["lmdb", "--encoded", "--json", str(w.json), "--images",
                                                 str(w.images), "--quiet", "--out", str(w.full / "l")],
         lambda w, t: ["l.partial", "cannot write the LMDB", "free on its disk"], how="process", needs_tmpfs=True),
    Case("lmdb-out-empty", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(w.images), "--out", ""],
         lambda w, t: ["name the LMDB folder"]),
    Case("lmdb-overwrite-not-an-lmdb", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(w.images),
                                                     "--out", str(w.train), "--overwrite"],
         lambda w, t: [w.train.name, "not an LMDB"]),
    Case("lmdb-negative-seed", lambda w, t: ["lmdb", "--json", str(w.json), "--images", str(w.images),
                                             "--out", str(t / "l"), "--seed", "-1"], lambda w, t: ["--seed"]),
    # inspect
    Case("inspect-truncated-lmdb", lambda w, t: ["inspect", str(w.trunc_lmdb), "--out", str(t / "g.png")],
         lambda w, t: ["lmdb_trunc/data.mdb", "truncated"], how="process"),
    Case("inspect-corrupted-lmdb", lambda w, t: ["inspect", str(w.corrupt_lmdb), "--out", str(t / "g.png")],
         lambda w, t: ["lmdb_corrupt", "corrupted LMDB", "MDB_CORRUPTED"], how="process"),
    Case("inspect-not-an-lmdb", lambda w, t: ["inspect", str(w.images), "--out", str(t / "g.png")],
         lambda w, t: [w.images.name, "not an LMDB"]),
    Case("inspect-out-under-a-file", lambda w, t: ["inspect", str(w.lmdb), "--out", str(w.afile / "x.png")],
         lambda w, t: ["afile/x.png"]),
    Case("inspect-negative-seed", lambda w, t: ["inspect", str(w.lmdb), "--out", str(t / "g.png"), "--labels",
                                                "--seed", "-1"], lambda w, t: ["--seed"]),
    Case("inspect-disk-full", lambda w, t: ["inspect", str(w.lmdb), "--out", str(w.full / "g.png")],
         lambda w, t: ["g.png", "No space"], needs_tmpfs=True),
    # prototxt / generate_prototxt.py
    Case("prototxt-unknown-model", lambda w, t: ["prototxt", "--model", "BODY_99", "--out", str(t / "p")],
         lambda w, t: ["BODY_99"]),
    Case("prototxt-truncated-lmdb", lambda w, t: ["prototxt", "--model", "BODY_25", "--preset", "tiny",
                                                  "--out", str(t / "p"), "--lmdb", str(w.trunc_lmdb)],
         lambda w, t: ["lmdb_trunc/data.mdb", "truncated"], how="process"),
    Case("prototxt-out-under-a-file", lambda w, t: ["prototxt", "--model", "BODY_25", "--preset", "tiny",
                                                    "--out", str(w.afile / "sub"), "--lmdb", str(w.lmdb)],
         lambda w, t: ["afile"]),
    Case("generate_prototxt-unknown-model", lambda w, t: ["--model", "BODY_99", "--out", str(t / "p")],
         lambda w, t: ["BODY_99"], how="script"),
    # train
    Case("train-solver-missing", lambda w, t: ["train", "-solver", str(t / "nope_solver.prototxt")],
         lambda w, t: ["nope_solver.prototxt"]),
    Case("train-solver-is-a-folder", lambda w, t: ["train", "-solver", str(w.train)], lambda w, t: [w.train.name]),
    Case("train-solver-garbage", lambda w, t: ["train", "-solver", str(w.garbage)], lambda w, t: ["garbage.bin"]),
    Case("train-truncated-caffemodel", lambda w, t: ["train", "-solver", str(w.solver), "-weights",
                                                     str(w.trunc_model), "--no-progress"],
         lambda w, t: ["trunc_dir/pose_iter_10.caffemodel"]),
    Case("train-truncated-solverstate", lambda w, t: ["train", "-solver", str(w.solver), "-snapshot",
                                                      str(w.trunc_state), "--no-progress"],
         lambda w, t: ["pose_iter_1.solverstate"]),
    Case("train-truncated-lmdb", lambda w, t: ["train", "-solver", str(w.train_trunc / "pose_solver.prototxt"),
                                               "--no-progress", "--workers", "0"],
         lambda w, t: ["lmdb_trunc/data.mdb", "truncated"], how="process"),
    Case("train-snapshot-prefix-under-a-file", lambda w, t: ["train", "-solver", str(w.under_file_solver),
                                                             "--no-progress", "--workers", "0"],
         lambda w, t: ["afile"]),
    Case("train-snapshot-disk-full", lambda w, t: ["train", "-solver", str(w.full_solver), "--no-progress",
                                                   "--workers", "0"], lambda w, t: ["full/pose"],
         needs_tmpfs=True),
    Case("train-num-output-zero", lambda w, t: ["train", "-solver", str(w.zero_solver), "--no-progress",
                                                "--workers", "0"], lambda w, t: ["Mconv4_stage0_L1", "num_output 0"]),
    Case("train-missing-bottom", lambda w, t: ["train", "-solver", str(w.missing_bottom_solver), "--no-progress",
                                               "--workers", "0"], lambda w, t: ["pose_training.prototxt", "conv1_nope"]),
    Case("train-net-syntax", lambda w, t: ["train", "-solver", str(w.syntax_solver), "--no-progress",
                                           "--workers", "0"], lambda w, t: ["pose_training.prototxt"]),
    Case("train-log-under-a-file", lambda w, t: ["train", "-solver", str(w.solver), "--no-progress", "--workers", "0",
                                                 "--log", str(w.afile / "train.log")],
         lambda w, t: ["--log", "afile/train.log", "afile is a file"]),
    Case("train-metrics-under-a-file", lambda w, t: ["train", "-solver", str(w.solver), "--no-progress", "--workers",
                                                     "0", "--metrics", str(w.afile / "m.jsonl")],
         lambda w, t: ["metrics file", "afile/m.jsonl", "afile is a file"]),
    # export
    Case("export-model-mismatch", lambda w, t: ["export", "--model", "BODY_25", "--snapshot",
                                                str(_snap(w, "BODY_25B")), "--to", str(t / "models")],
         lambda w, t: ["Mconv4_stage0_L2", "97", "78", "BODY_25"]),
    Case("export-to-under-a-file", lambda w, t: ["export", "--model", "BODY_25", "--snapshot", str(_snap(w)),
                                                 "--to", str(w.afile / "models")], lambda w, t: ["afile/models"]),
    Case("export-onnx-under-a-file", lambda w, t: ["export", "--model", "BODY_25", "--snapshot", str(_snap(w)),
                                                   "--to", str(t / "models"), "--onnx", str(w.afile / "m.onnx")],
         lambda w, t: ["afile/m.onnx"]),
    Case("export-best-garbage", lambda w, t: ["export", "--best", str(w.garbage), "--to", str(t / "models")],
         lambda w, t: ["garbage.bin"]),
    Case("export-disk-full", lambda w, t: ["export", "--model", "BODY_25", "--snapshot", str(_snap(w)),
                                           "--to", str(w.full / "models")], lambda w, t: ["models", "free"],
         needs_tmpfs=True),
    Case("export-unknown-preset", lambda w, t: ["export", "--model", "BODY_25", "--snapshot", str(_snap(w)),
                                                "--preset", "nope", "--to", str(t / "models")],
         lambda w, t: ["unknown preset 'nope'"]),
    Case("export-onnx-opset-unsupported", lambda w, t: [   # torch dumps its IR graph from C++: not shown
        "export", "--model", "BODY_25", "--snapshot", str(_snap(w)), "--to", str(w.root / "opset_models"),
        "--onnx", str(w.root / "opset_models" / "m.onnx"), "--opset", "1"],
        lambda w, t: ["ONNX export of", "failed: Unsupported: ONNX export of operator"], how="process"),
    Case("export-truncated-caffemodel", lambda w, t: ["export", "--model", "BODY_25", "--snapshot",
                                                      str(w.trunc_model), "--to", str(t / "models")],
         lambda w, t: ["trunc_dir/pose_iter_10.caffemodel"]),
    Case("export-snapshot-is-a-folder", lambda w, t: ["export", "--model", "BODY_25", "--snapshot", str(w.train),
                                                      "--to", str(t / "models")], lambda w, t: [w.train.name]),
    # validate / validate-snapshots
    Case("validate-truncated-caffemodel", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(w.trunc_model), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(t / "r.json"), "--quiet"],
        lambda w, t: ["trunc_dir/pose_iter_10.caffemodel"]),
    Case("validate-annotations-wrong-types", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.wrong_types), "--out", str(t / "r.json"), "--quiet"],
        lambda w, t: ["wrong_types.json"]),
    Case("validate-out-under-a-file", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(w.afile / "r.json"), "--quiet",
        "--limit", "1"], lambda w, t: ["--out", "afile/r.json", "afile is a file"]),
    Case("validate-out-is-a-folder", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(w.images), "--quiet"],
        lambda w, t: ["--out", w.images.name, "is a folder"]),
    Case("validate-write-json-under-a-file", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(t / "r.json"), "--quiet",
        "--write-json", str(w.afile / "j")], lambda w, t: ["--write-json", "afile/j", "afile is a file"]),
    Case("validate-render-under-a-file", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(t / "r.json"), "--quiet",
        "--render", str(w.afile / "png")], lambda w, t: ["--render", "afile/png", "afile is a file"]),
    Case("validate-bad-device", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(t / "r.json"), "--quiet",
        "--device", "abc"], lambda w, t: ["--device 'abc'"]),
    Case("validate-opencv-garbage-caffemodel", lambda w, t: [
        "validate", "--prototxt", str(w.deploy), "--caffemodel", str(w.garbage), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(t / "r.json"), "--quiet",
        "--backend", "opencv", "--limit", "1"], lambda w, t: ["OpenCV could not run", "garbage.bin"]),
    Case("validate-snapshots-out-dir-under-a-file", lambda w, t: [
        "validate-snapshots", str(_snap(w).parent), "--model", "BODY_25", "--images", str(w.images),
        "--annotations", str(w.json), "--out-dir", str(w.afile / "v"), "--quiet"],
        lambda w, t: ["--out-dir", "afile/v", "afile is a file"]),
    Case("validate-snapshots-missing-folder", lambda w, t: [
        "validate-snapshots", str(t / "no_training"), "--model", "BODY_25", "--images", str(w.images),
        "--annotations", str(w.json), "--quiet"], lambda w, t: ["no_training"]),
    Case("validate-snapshots-truncated-caffemodel", lambda w, t: [
        "validate-snapshots", str(w.trunc_model.parent), "--model", "BODY_25", "--images", str(w.images),
        "--annotations", str(w.json), "--out-dir", str(t / "v"), "--quiet"],
        lambda w, t: ["pose_iter_10.caffemodel"]),
    # synth
    Case("synth-out-is-a-file", lambda w, t: ["synth", "--out", str(w.afile), "--images", "2"],
         lambda w, t: ["afile"]),
    Case("synth-out-under-a-file", lambda w, t: ["synth", "--out", str(w.afile / "d"), "--images", "2"],
         lambda w, t: ["afile/d"]),
    Case("synth-disk-full", lambda w, t: ["synth", "--out", str(w.full / "d"), "--images", "50"],
         lambda w, t: ["full/d"], needs_tmpfs=True),
    Case("synth-max-people-zero", lambda w, t: ["synth", "--out", str(t / "d"), "--images", "2", "--max-people", "0"],
         lambda w, t: ["--max-people"]),
    Case("synth-negative-seed", lambda w, t: ["synth", "--out", str(t / "d"), "--images", "2", "--seed", "-1"],
         lambda w, t: ["--seed"]),
    # models
    Case("models-unknown-model", lambda w, t: ["models", "BODY_99"], lambda w, t: ["BODY_99"]),
    Case("models-yaml-wrong-types", lambda w, t: ["models", "--yaml", str(w.wrong_types)],
         lambda w, t: ["wrong_types.json"]),
    Case("models-yaml-binary", lambda w, t: ["models", "--yaml", str(w.garbage)],
         lambda w, t: ["garbage.bin", "not a YAML text file"]),
    Case("prototxt-yaml-binary", lambda w, t: ["prototxt", "--yaml", str(w.garbage), "--out", str(t / "p")],
         lambda w, t: ["garbage.bin", "not a YAML text file"]),
    Case("models-yaml-missing", lambda w, t: ["models", "--yaml", str(t / "nope.yaml")], lambda w, t: ["nope.yaml"]),
    # vgg: the outputs are checked before the (large) state dict is read
    Case("vgg-out-under-a-file", lambda w, t: ["vgg", str(w.garbage), str(w.afile / "out.caffemodel")],
         lambda w, t: ["afile/out.caffemodel", "afile is a file"]),
    Case("vgg-deploy-under-a-file", lambda w, t: ["vgg", str(w.garbage), str(t / "vgg.caffemodel"), "--deploy",
                                                  str(w.afile / "vgg_deploy.prototxt")],
         lambda w, t: ["--deploy", "afile/vgg_deploy.prototxt", "afile is a file"]),
    Case("vgg-pth-garbage", lambda w, t: ["vgg", str(w.garbage), str(t / "vgg.caffemodel")],
         lambda w, t: ["garbage.bin"]),
    Case("vgg-pth-missing", lambda w, t: ["vgg", str(t / "nope.pth"), str(t / "vgg.caffemodel")],
         lambda w, t: ["nope.pth"]),
    # mobilenet: the same checks as vgg
    Case("mobilenet-out-under-a-file", lambda w, t: ["mobilenet", str(w.garbage), str(w.afile / "m.caffemodel")],
         lambda w, t: ["afile/m.caffemodel", "afile is a file"]),
    Case("mobilenet-pth-garbage", lambda w, t: ["mobilenet", str(w.garbage), str(t / "m.caffemodel")],
         lambda w, t: ["garbage.bin"]),
    # time
    Case("time-model-missing", lambda w, t: ["time", "-model", str(t / "nope.prototxt")],
         lambda w, t: ["nope.prototxt"]),
    Case("time-model-garbage", lambda w, t: ["time", "-model", str(w.garbage)], lambda w, t: ["garbage.bin"]),
    Case("time-num-output-zero", lambda w, t: ["time", "-model", str(w.zero_deploy), "-iterations", "1"],
         lambda w, t: ["zero_deploy.prototxt", "Mconv4_stage0_L1", "num_output 0"]),
    Case("export-num-output-zero", lambda w, t: ["export", "--model", "BODY_25", "--snapshot", str(_snap(w)),
                                                 "--deploy", str(w.zero_deploy), "--to", str(t / "models")],
         lambda w, t: ["zero_deploy.prototxt", "Mconv4_stage0_L1"]),
    Case("validate-num-output-zero", lambda w, t: [
        "validate", "--prototxt", str(w.zero_deploy), "--caffemodel", str(_snap(w)), "--model", "BODY_25",
        "--images", str(w.images), "--annotations", str(w.json), "--out", str(t / "r.json"), "--quiet"],
        lambda w, t: ["Mconv4_stage0_L1"]),
    # plot
    Case("plot-source-missing", lambda w, t: ["plot", str(t / "nope.log"), "--out", str(t / "p.png")],
         lambda w, t: ["nope.log"]),
    Case("plot-source-garbage", lambda w, t: ["plot", str(w.garbage), "--out", str(t / "p.png")],
         lambda w, t: ["garbage.bin"]),
    Case("plot-out-under-a-file", lambda w, t: ["plot", str(w.log), "--out", str(w.afile / "p.png")],
         lambda w, t: ["afile/p.png"]),
]


def _leftovers(*folders):
    return sorted(str(p) for folder in folders if folder.exists() for pattern in LEFTOVER_PATTERNS
                  for p in folder.rglob(pattern))


def _run(case, w, own):
    args = [str(a) for a in case.args(w, own)]
    if case.how == "cli":
        res = CliRunner().invoke(cli_main, args)
        crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
        if crashed:
            import traceback
            output = res.output + "".join(traceback.format_exception(res.exception))
        else:
            output = res.output
        return res.exit_code, output
    command = [sys.executable, "-m", "openpose_train.cli", *args] if case.how == "process" else \
        [sys.executable, str(REPO / "generate_prototxt.py"), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=own,
                          env=dict(os.environ, PYTHONFAULTHANDLER=""))
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input_sweep(case, world, tmp_path, monkeypatch):
    if case.needs_tmpfs and world.full_reason:
        pytest.skip(world.full_reason)
    monkeypatch.chdir(tmp_path)      # relative outputs (snapshot_prefix "model/pose") land in the case's folder
    before = set(_leftovers(world.root))
    rc, output = _run(case, world, tmp_path)
    left = sorted(set(_leftovers(world.root, tmp_path)) - before)
    # a refused command leaves its folder (the working directory) as it was: no snapshot folder,
    # metrics file, output folder or lock made before the refusal
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert rc != 0, output
    assert 0 < rc < 128, f"exit code {rc} (a signal): {output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    error_lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert error_lines, output[-2000:]
    assert not any("[Errno" in line for line in error_lines), error_lines   # a raw OSError, not a sentence
    assert "Torch IR graph" not in output and len(output.splitlines()) < 60, output[-3000:]
    for name in case.names(world, tmp_path):
        assert any(str(name) in line for line in error_lines), (name, error_lines)
    assert not left, left
    assert not written, written


# ------------------------------------------------------------------------------------------------
# A full disk during an encoded build (no writemap there, so LMDB reports it instead of a SIGBUS):
# one line, committed images kept for a resume that gives the same LMDB, nothing kept otherwise.

def _failing_commits(monkeypatch, fail_at):
    import lmdb

    from openpose_train.dataset_tools import lmdb_writer
    real, calls = lmdb_writer.TxnWriter.commit, []

    def commit(self):
        calls.append(len(self.indexes))
        if len(calls) == fail_at:
            self.txn.abort()
            raise lmdb.DiskError("mdb_txn_commit: No space left on device")
        real(self)
    monkeypatch.setattr(lmdb_writer.TxnWriter, "commit", commit)
    return calls


def _records(path):
    with LmdbReader(path) as reader:
        return [reader.raw(i) for i in range(len(reader))]


@pytest.mark.parametrize("fail_at", [1, 3])
def test_encoded_build_on_a_full_disk_resumes_or_leaves_nothing(tmp_path, synth, monkeypatch, fail_at):
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, LmdbBuildError, build_lmdb
    json_path, images = synth
    options = BuildOptions(encoded=True, txn_bytes=1, progress=False)    # a commit per image
    out, partial = tmp_path / "l", tmp_path / "l.partial"
    calls = _failing_commits(monkeypatch, fail_at)
    with pytest.raises(LmdbBuildError) as err:
        build_lmdb(json_path, images, out, options)
    message = str(err.value)
    assert len(calls) == fail_at and "\n" not in message and not out.exists()
    assert message.startswith(f"{partial}: cannot write the LMDB (mdb_txn_commit: No space left on device)")
    if fail_at == 1:
        assert message.endswith("nothing was kept; free some space and rerun") and not partial.exists()
    else:
        assert message.endswith("free some space and rerun to resume") and partial.is_dir()
    monkeypatch.undo()
    resumed = build_lmdb(json_path, images, out, options)
    assert resumed.finished and resumed.resumed_images == (fail_at - 1)
    build_lmdb(json_path, images, tmp_path / "fresh", options)
    assert _records(out) == _records(tmp_path / "fresh")


def test_encoded_build_opens_lmdb_without_writemap(tmp_path, synth, monkeypatch):
    """writemap turns a full disk into SIGBUS; raw builds keep it (their size is checked first)."""
    import lmdb

    from openpose_train.dataset_tools import lmdb_writer
    seen, real = [], lmdb.open
    monkeypatch.setattr(lmdb_writer.lmdb, "open", lambda *a, **k: seen.append(k.get("writemap")) or real(*a, **k))
    json_path, images = synth
    for encoded in (True, False):
        lmdb_writer.build_lmdb(json_path, images, tmp_path / f"l{encoded}",
                               lmdb_writer.BuildOptions(encoded=encoded, progress=False))
    assert seen[0] is False and seen[-1] is True


# ------------------------------------------------------------------------------------------------
# Every subcommand: --help, no arguments, a nonexistent file as the argument and as each path option.

def _subcommands():
    from openpose_train.cli import SUBCOMMANDS
    return [name for name, _, _ in SUBCOMMANDS]


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_help_no_args_and_missing_files(name, tmp_path, monkeypatch):
    import click
    monkeypatch.chdir(tmp_path)
    command = cli_main.get_command(click.Context(cli_main), name)
    missing = str(tmp_path / "nope" / "missing.file")
    path_options = [p.opts[0] for p in command.params
                    if isinstance(p, click.Option) and isinstance(p.type, click.Path)]
    runs = [["--help"], [], [missing]] + [[opt, missing] for opt in path_options]
    refused_all = True
    for args in runs:
        res = CliRunner().invoke(cli_main, [name, *args])
        crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
        assert not crashed and "Traceback" not in res.output, (args, res.output, res.exception)
        assert res.exit_code in (0, 1, 2), (args, res.exit_code, res.output)
        if args == ["--help"]:
            assert res.exit_code == 0 and "Usage:" in res.output
        elif res.exit_code:
            assert res.output.count("Error:") == 1 and "[Errno" not in res.output, (args, res.output)
        else:
            refused_all = False      # e.g. synth --out <a new folder> makes a dataset there
    assert not refused_all or not list(tmp_path.iterdir())      # nothing written by refused commands


# ---- issue 17, class 9: JSON-lines side files read back name file and line; a crash's torn last line is dropped --
def test_validate_snapshots_drops_a_torn_last_ap_jsonl_line_and_names_any_other(tmp_path):
    from test_validation_cli import _write_net

    made = make_synthetic_dataset(tmp_path / "synth", SynthConfig(images=2, seed=3, width=96, height=96))
    images, ann = made.image_dirs["train2017"], made.splits["train2017"]
    train = tmp_path / "train"
    _write_net(train, iterations=(500, 1000))
    args = ["validate-snapshots", str(train), "--images", str(images), "--annotations", str(ann),
            "--net-resolution", "-1x32", "--quiet"]
    assert CliRunner().invoke(cli_main, args).exit_code == 0
    table = train / "validation" / "ap.jsonl"
    rows = table.read_text().splitlines()
    assert len(rows) == 2
    table.write_text(rows[0] + "\n" + rows[1][:25])                  # killed while appending iteration 1000's row
    r = CliRunner().invoke(cli_main, args)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert f"{table}:2: dropped a torn last line" in r.output
    assert "snapshot pose_iter_1000" in r.output and "snapshot pose_iter_500" not in r.output   # scored again, once
    assert [json.loads(line)["iteration"] for line in table.read_text().splitlines()] == [500, 1000]
    table.write_text("{oops\n" + table.read_text())                   # a damaged line that is not the last
    r = CliRunner().invoke(cli_main, args)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert [line for line in r.output.splitlines() if line.startswith("Error:")] == \
        [f"Error: {table}:1: not a JSON line (Expecting property name enclosed in double quotes); repair or "
         f"delete the line"]
