"""LMDB writer on synthetic data: resume, bad input, encoded datums, map growth, background, CLI."""
import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from openpose_train.cli import main as cli_main
from openpose_train.dataset_tools import coco
from openpose_train.caffe_layers.lmdb_reader import LmdbReader, iter_records
from openpose_train.dataset_tools.lmdb_writer import (
    CORRUPT, MISSING, PROGRESS_FILE, SIZE_MISMATCH, BuildOptions, LmdbBuildError, build_lmdb)
from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    result = make_synthetic_dataset(root, SynthConfig(images=48, seed=7, width=160, height=128))
    return result.splits["train2017"], result.image_dirs["train2017"]


def _records(path):
    return {key: value for key, value in iter_records(path, decode=False)}


def _options(**kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    return BuildOptions(**kw)


def test_synthetic_dataset_is_deterministic_and_varied(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", SynthConfig(images=40, seed=3, width=96, height=96))
    b = make_synthetic_dataset(tmp_path / "b", SynthConfig(images=40, seed=3, width=96, height=96))
    c = make_synthetic_dataset(tmp_path / "c", SynthConfig(images=40, seed=4, width=96, height=96))
    ja, jb, jc = (r.splits["train2017"].read_bytes() for r in (a, b, c))
    assert ja.replace(b"/a", b"") == jb.replace(b"/b", b"") and ja != jc
    name = "000000000005.jpg"
    assert (a.image_dirs["train2017"] / name).read_bytes() == (b.image_dirs["train2017"] / name).read_bytes()
    doc = json.loads(ja)
    anns = doc["annotations"]
    assert any(x["iscrowd"] for x in anns)
    assert any(x["num_keypoints"] == 0 and not x["iscrowd"] for x in anns)
    annotated = {x["image_id"] for x in anns}
    assert len(annotated) < len(doc["images"])                # some images with nobody
    sizes = [x["bbox"][3] for x in anns if not x["iscrowd"]]
    assert max(sizes) > 2 * min(sizes)
    for x in anns:                                            # keypoints lie on the drawn figure
        if x["iscrowd"] or not x["num_keypoints"]:
            continue
        kp = np.asarray(x["keypoints"]).reshape(-1, 3)
        bx, by, bw, bh = x["bbox"]
        lab = kp[kp[:, 2] > 0]
        assert (lab[:, 0] >= bx - 2).all() and (lab[:, 0] <= bx + bw + 2).all()
        assert (lab[:, 1] >= by - 2).all() and (lab[:, 1] <= by + bh + 2).all()


def test_synthetic_foot_wholebody_and_split(tmp_path):
    r = make_synthetic_dataset(tmp_path, SynthConfig(images=20, seed=1, width=96, height=96, foot=True,
                                                     wholebody=True, val_fraction=0.25))
    assert r.num_images == {"train2017": 15, "val2017": 5}
    ds = coco.load_keypoint_json(r.splits["train2017"], "coco_foot")
    assert ds.images and all(p.keypoints is None or p.keypoints.shape == (23, 3)
                             for e in ds.images for p in e.people)
    doc = json.load(open(r.splits["train2017"]))
    doc["annotations"] = [dict(a, keypoints=a["keypoints"][:51]) for a in doc["annotations"]]
    (tmp_path / "wb.json").write_text(json.dumps(doc))
    wb = coco.load_keypoint_json(tmp_path / "wb.json", "wholebody")
    assert not wb.problems and coco.plan_records(wb)


def test_resume_after_interruption_equals_uninterrupted_build(tmp_path, synth):
    json_path, images = synth
    full = build_lmdb(json_path, images, tmp_path / "full", _options(seed=5))
    assert full.finished and full.records_written > 30
    out = tmp_path / "resumed"
    # small transactions so that some images are committed and some are lost with the interruption
    first = build_lmdb(json_path, images, out, _options(seed=5, txn_bytes=350_000, stop_after_images=17))
    assert not first.finished and not out.exists()
    partial = tmp_path / "resumed.partial"
    assert (partial / PROGRESS_FILE).exists()
    done_lines = (partial / PROGRESS_FILE).read_text().splitlines()[1:]
    done = sum(len(json.loads(line)["done"]) for line in done_lines)
    assert 0 < done < 17                                       # the last partial batch was not committed
    second = build_lmdb(json_path, images, out, _options(seed=5, txn_bytes=350_000, stop_after_images=9))
    assert not second.finished and second.resumed_images == done
    third = build_lmdb(json_path, images, out, _options(seed=5))
    assert third.finished and out.exists() and not partial.exists()
    assert third.resumed_images > done
    assert _records(out) == _records(tmp_path / "full")          # byte-equal, every key


def test_partial_from_other_options_is_refused(tmp_path, synth):
    json_path, images = synth
    build_lmdb(json_path, images, tmp_path / "x", _options(seed=1, stop_after_images=3))
    with pytest.raises(LmdbBuildError, match="other inputs or options"):
        build_lmdb(json_path, images, tmp_path / "x", _options(seed=2))
    build_lmdb(json_path, images, tmp_path / "y", _options())
    with pytest.raises(LmdbBuildError, match="exists"):
        build_lmdb(json_path, images, tmp_path / "y", _options())


def test_seed_changes_only_the_order(tmp_path, synth):
    json_path, images = synth
    build_lmdb(json_path, images, tmp_path / "s1", _options(seed=1))
    build_lmdb(json_path, images, tmp_path / "s2", _options(seed=2))
    a, b = _records(tmp_path / "s1"), _records(tmp_path / "s2")
    assert a.keys() == b.keys() and a != b

    def content(path):
        return sorted((r.meta.annolist_index, r.meta.people_index) for _, r in iter_records(path))
    assert content(tmp_path / "s1") == content(tmp_path / "s2")


def _bad_corpus(tmp_path, synth):
    json_path, images = synth
    doc = json.load(open(json_path))
    work = tmp_path / "bad_images"
    shutil.copytree(images, work)
    with_people = []
    for img in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] >= 5]
        if anns:
            with_people.append((img, anns))
    (missing, _), (corrupt, _), (resized, _), (outside, out_anns), (zero, zero_anns), (short, short_anns) = \
        with_people[:6]
    (work / missing["file_name"]).unlink()
    raw = (work / corrupt["file_name"]).read_bytes()
    (work / corrupt["file_name"]).write_bytes(raw[:len(raw) // 2])
    img = cv2.imread(str(work / resized["file_name"]))
    cv2.imwrite(str(work / resized["file_name"]), cv2.resize(img, (img.shape[1] // 2, img.shape[0])))
    out_anns[0]["keypoints"][out_anns[0]["keypoints"].index(2) - 2] = resized["width"] * 3.0
    zero_anns[0]["bbox"][2] = 0
    short_anns[0]["keypoints"] = short_anns[0]["keypoints"][:-3]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(doc))
    return bad_json, work


def test_bad_input_is_skipped_counted_and_keys_stay_contiguous(tmp_path, synth):
    bad_json, work = _bad_corpus(tmp_path, synth)
    summary = build_lmdb(bad_json, work, tmp_path / "out", _options())
    assert summary.finished
    assert summary.images_skipped == {MISSING: 1, CORRUPT: 1, SIZE_MISMATCH: 1}
    for reason in (coco.OUTSIDE, coco.BAD_BOX, coco.BAD_LENGTH, MISSING, CORRUPT, SIZE_MISMATCH):
        assert summary.people_skipped[reason] >= 1, reason
    text = "\n".join(summary.lines())
    assert "missing image: 1" in text and "wrong keypoint array length" in text
    with LmdbReader(tmp_path / "out") as reader:
        n = len(reader)
        assert n == summary.records_written < summary.records_planned
        for key, record in reader.items():
            assert record.meta.write_number == int(key)
            assert record.meta.total_write_number == summary.records_planned
    assert sorted(int(k) for k in _records(tmp_path / "out")) == list(range(n))
    assert summary.records_moved > 0


def test_not_coco_json_gives_one_clear_message(tmp_path, synth):
    _, images = synth
    bad = tmp_path / "notcoco.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(coco.CocoFormatError, match=r"notcoco\.json.*'annotations'"):
        build_lmdb(bad, images, tmp_path / "o", _options())
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 5}], "annotations": []}))
    runner = CliRunner()
    res = runner.invoke(cli_main, ["lmdb", "--json", str(bad), "--images", str(images), "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code == 1 and "images[0] has no 'height'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_encoded_lmdb_decodes_like_raw(tmp_path, synth):
    json_path, images = synth
    build_lmdb(json_path, images, tmp_path / "raw", _options())
    build_lmdb(json_path, images, tmp_path / "enc", _options(encoded=True))
    raw, enc = dict(iter_records(tmp_path / "raw")), dict(iter_records(tmp_path / "enc"))
    assert raw.keys() == enc.keys()
    for key in raw:
        a, b = raw[key], enc[key]
        assert b.encoded and a.meta == b.meta
        assert np.array_equal(a.mask_miss, b.mask_miss)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 4
    size = lambda p: (p / "data.mdb").stat().st_size  # noqa: E731
    assert size(tmp_path / "enc") * 3 < size(tmp_path / "raw")


def test_map_grows_when_full_and_workers_give_the_same_records(tmp_path, synth):
    json_path, images = synth
    build_lmdb(json_path, images, tmp_path / "ref", _options())
    build_lmdb(json_path, images, tmp_path / "small", _options(map_size=1 << 20, txn_bytes=4 << 20, workers=2))
    assert _records(tmp_path / "small") == _records(tmp_path / "ref")


def test_background_lmdb_from_a_folder(tmp_path, synth):
    _, images = synth
    folder = tmp_path / "neg"
    folder.mkdir()
    for p in sorted(images.iterdir())[:5]:
        shutil.copy(p, folder / p.name)
    summary = build_lmdb(None, folder, tmp_path / "bg", _options(background=True))
    assert summary.records_written == 5
    stored = sorted(r.image.tobytes() for _, r in iter_records(tmp_path / "bg"))
    assert stored == sorted(cv2.imread(str(p)).tobytes() for p in folder.iterdir())


def test_cli_synth_lmdb_inspect(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli_main, ["synth", "--out", str(tmp_path / "d"), "--images", "12", "--seed", "2",
                                   "--width", "128", "--height", "128"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli_main, ["lmdb", "--json", str(tmp_path / "d/annotations/person_keypoints_train2017.json"),
                                   "--images", str(tmp_path / "d/train2017"), "--out", str(tmp_path / "l"),
                                   "--quiet", "--encoded"])
    assert res.exit_code == 0, res.output
    assert "records from" in res.output
    res = runner.invoke(cli_main, ["inspect", str(tmp_path / "l"), "--model", "BODY_25", "--n", "3",
                                   "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    grid = cv2.imread(str(tmp_path / "g.png"))
    assert grid is not None and grid.shape[0] >= 320 and grid.std() > 10
    res = runner.invoke(cli_main, ["inspect", str(tmp_path / "l"), "--model", "NOPE", "--out", str(tmp_path / "h.png")])
    assert res.exit_code == 1 and "unknown model" in res.output and "Traceback" not in res.output


KILL_SCRIPT = """
import os, signal, sys
from openpose_train.dataset_tools import lmdb_writer as w
calls = {"n": 0}
original = w.TxnWriter.add
def dying_add(self, result):
    calls["n"] += 1
    original(self, result)
    if calls["n"] == 9:                    # killed inside an open write transaction
        os.kill(os.getpid(), signal.SIGKILL)
w.TxnWriter.add = dying_add
w.build_lmdb(sys.argv[1], sys.argv[2], sys.argv[3], w.BuildOptions(seed=5, txn_bytes=350_000, workers=1,
             progress=False))
"""


def test_resume_after_sigkill_inside_a_transaction(tmp_path, synth):
    import subprocess
    import sys
    json_path, images = synth
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(json_path), str(images), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert (tmp_path / "killed.partial" / PROGRESS_FILE).exists() and not out.exists()
    summary = build_lmdb(json_path, images, out, _options(seed=5))
    assert summary.finished and summary.resumed_images > 0
    build_lmdb(json_path, images, tmp_path / "full", _options(seed=5))
    assert _records(out) == _records(tmp_path / "full")


@pytest.mark.parametrize("name,n_kp,key,dataset_string,width", [
    ("hand", 21, "hand21", "hand21_dome", 200), ("hand", 42, "hand42", "hand42_mpii", 200),
    ("face", 70, "face70", "face70_mask_out", 200)])
def test_hand_and_face_coco_style(tmp_path, synth, name, n_kp, key, dataset_string, width):
    from openpose_train.dataset_tools.cli import resolve_dataset_key
    _, images = synth
    src = sorted(images.iterdir())[:3]
    rng = np.random.default_rng(n_kp)
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(src):
        img = cv2.resize(cv2.imread(str(p)), (width, 150))
        cv2.imwrite(str(folder / p.name), img)
        doc["images"].append({"id": i + 1, "file_name": p.name, "width": width, "height": 150})
        kp = np.concatenate([rng.uniform(40, 140, (n_kp, 2)), np.full((n_kp, 1), 2)], 1)
        doc["annotations"].append({"id": i + 1, "image_id": i + 1, "iscrowd": 0, "num_keypoints": n_kp,
                                   "area": 4000.0, "bbox": [30, 30, 120, 100], "category_id": 1,
                                   "keypoints": kp.reshape(-1).tolist(), "segmentation": [[30, 30, 150, 30, 150, 130]]})
        doc["annotations"].append({"id": 100 + i, "image_id": i + 1, "iscrowd": 0, "num_keypoints": 0,
                                   "area": 400.0, "bbox": [0, 0, 20, 20], "category_id": 1,
                                   "keypoints": [0] * (3 * n_kp), "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]})
    json_path = tmp_path / "kp.json"
    json_path.write_text(json.dumps(doc))
    assert resolve_dataset_key(name, json_path) == key
    summary = build_lmdb(json_path, folder, tmp_path / "out", _options(dataset=key))
    assert summary.records_written == 3
    for _, rec in iter_records(tmp_path / "out"):
        assert rec.meta.dataset == dataset_string and rec.meta.num_parts == n_kp
        assert rec.mask_miss is not None and rec.mask_miss[5, 5] == 0 and rec.mask_miss[80, 80] == 255
        expected_width = 300 if dataset_string == "face70_mask_out" else width    # narrow face images padded
        assert rec.image.shape[1] == expected_width and rec.meta.img_width == width


def test_inspect_overlays_labels_when_the_data_layer_is_installed(tmp_path, synth):
    pytest.importorskip("openpose_train.caffe_layers.augment")
    from openpose_train.dataset_tools.inspect import render_grid
    json_path, images = synth
    build_lmdb(json_path, images, tmp_path / "l", _options())
    info = render_grid(tmp_path / "l", tmp_path / "g.png", model="BODY_25", count=2, labels=True)
    grid = cv2.imread(str(tmp_path / "g.png"))
    assert "not installed" not in info and grid.shape[1] == 8 * 320
    label_tile = grid[:320, 320:640].astype(int)
    assert (label_tile[..., 2] - label_tile[..., 0]).max() > 100       # red heatmap peaks drawn


@pytest.mark.slow
def test_benchmark_quick_prints_the_contract_lines():
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "lmdb_build.py"
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    benches = {(x["bench"], x["case"]) for x in lines}
    assert ("lmdb_images_per_s", "images=40") in benches and ("lmdb_rss_growth_mb", "20->40") in benches
    for x in lines:
        assert set(x) >= {"bench", "case", "value", "unit", "baseline", "baseline_name"}
        assert x["value"] == x["value"]                                    # not NaN


def test_progress_line_cut_by_a_kill_is_repaired(tmp_path, synth):
    json_path, images = synth
    out = tmp_path / "cut"
    build_lmdb(json_path, images, out, _options(seed=5, txn_bytes=350_000, stop_after_images=10))
    progress = tmp_path / "cut.partial" / PROGRESS_FILE
    progress.write_text(progress.read_text() + '{"done": [40, 41')             # killed mid-write
    build_lmdb(json_path, images, out, _options(seed=5, txn_bytes=350_000, stop_after_images=10))
    lines = progress.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    summary = build_lmdb(json_path, images, out, _options(seed=5))
    assert summary.resumed_images >= 10
    build_lmdb(json_path, images, tmp_path / "full", _options(seed=5))
    assert _records(out) == _records(tmp_path / "full")


def test_wholebody_lmdb_pads_to_fit_133_keypoints(tmp_path):
    r = make_synthetic_dataset(tmp_path / "wb", SynthConfig(images=12, seed=2, width=256, height=192, wholebody=True))
    summary = build_lmdb(r.splits["train2017"], r.image_dirs["train2017"], tmp_path / "l", _options(dataset="wholebody"))
    assert summary.records_written > 5 and "metadata does not fit" not in "\n".join(summary.lines())
    for _, rec in iter_records(tmp_path / "l"):
        assert rec.meta.dataset == "COCO_WholeBody" and rec.meta.num_parts == 133
        assert rec.image.shape[1] == 532 and rec.meta.img_width == 256
        assert (rec.image[:, 256:] == 128).all() and not rec.mask_miss[:, 256:].any()


def test_shared_datum_buffer_gives_each_record_its_own_bytes():
    """Records of one image share one buffer (only the metadata rows change): each must equal the
    protobuf serialisation of its own (C, H, W) array, whatever record came before (more rows)."""
    from openpose_train.caffe_layers import caffe_pb2
    from openpose_train.caffe_layers.datum import DatumBuilder
    from openpose_train.caffe_layers.metadata import Metadata, encode_metadata
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (90, 140, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (90, 140), dtype=np.uint8) * 255

    def meta(n_other, seed):
        r = np.random.default_rng(seed)
        return Metadata(dataset="COCO", img_height=90, img_width=140, objpos=r.uniform(0, 90, 2),
                        scale_provided=0.5, joints=r.uniform(1, 90, (17, 3)), people_index=seed,
                        annolist_index=3, write_number=seed, total_write_number=9,
                        others_objpos=r.uniform(0, 90, (n_other, 2)), others_scale=r.uniform(0.1, 1, n_other),
                        others_joints=r.uniform(1, 90, (n_other, 17, 3)))

    builder = DatumBuilder(img, mask)
    builder.prepare_raw(metadata=True)
    for i, m in enumerate([meta(3, 1), meta(0, 2), meta(1, 3), meta(0, 4)]):
        value = bytes(builder.raw_datum(builder.metadata_rows(m)))
        arr = np.concatenate([img.transpose(2, 0, 1), encode_metadata(m, 90, 140)[None], mask[None]])
        assert value == caffe_pb2.Datum(channels=5, height=90, width=140, data=arr.tobytes(),
                                        label=0).SerializeToString(), f"record {i}"
    negatives = DatumBuilder(img)
    assert bytes(negatives.raw_datum()) == caffe_pb2.Datum(
        channels=3, height=90, width=140, data=img.transpose(2, 0, 1).tobytes(), label=0).SerializeToString()


def test_data_file_holds_only_used_pages_and_reads_without_writemap(tmp_path, synth):
    """The writer maps the file writable (LMDB then extends it to the map size): the finished
    LMDB is cut back to its pages and reads with default settings like any other."""
    import lmdb
    json_path, images = synth
    out = tmp_path / "l"
    summary = build_lmdb(json_path, images, out, _options(map_size=1 << 30))
    size = (out / "data.mdb").stat().st_size
    assert size < 64 << 20
    with lmdb.open(str(out), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == summary.records_written
        assert size == (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    # more decode threads and small transactions (a remap after each commit): the same records
    build_lmdb(json_path, images, tmp_path / "threads", _options(workers=3, txn_bytes=1 << 20))
    assert _records(out) == _records(tmp_path / "threads")


def test_too_little_disk_space_stops_before_writing(tmp_path, synth, monkeypatch):
    import collections

    from openpose_train.dataset_tools import lmdb_writer
    json_path, images = synth
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(lmdb_writer.shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 1 << 20))
    with pytest.raises(LmdbBuildError, match="need at least .* GiB, the disk has 0.0 GiB free"):
        build_lmdb(json_path, images, tmp_path / "l", _options())
    monkeypatch.undo()
    summary = build_lmdb(json_path, images, tmp_path / "l", _options())    # resumes once there is room
    assert summary.finished and summary.records_written > 30


def test_cli_synth_person_height(tmp_path):
    """--person-height bounds the drawn people (bbox heights follow, give or take pose and limbs)."""
    runner = CliRunner()
    res = runner.invoke(cli_main, ["synth", "--out", str(tmp_path / "d"), "--images", "8", "--seed", "1",
                                   "--person-height", "0.5", "0.6"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "d/annotations/person_keypoints_train2017.json").read_text())
    heights = [a["bbox"][3] / 256 for a in data["annotations"] if a.get("num_keypoints", 0) > 0]
    assert heights and 0.4 <= min(heights) and max(heights) <= 0.65
    res = runner.invoke(cli_main, ["synth", "--out", str(tmp_path / "e"), "--person-height", "0.7", "0.6"])
    assert res.exit_code != 0 and "MIN 0.7 is above MAX 0.6" in res.output
