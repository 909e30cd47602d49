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
from openpose_train.dataset_tools.lmdb_reader import LmdbReader
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
