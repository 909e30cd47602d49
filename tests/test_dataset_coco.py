"""Record selection, metadata and masks on the real third-party sample data (skipped when absent)."""
import json
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import shared_path
from openpose_train.dataset_tools import coco
from openpose_train.caffe_layers.lmdb_reader import LmdbReader
from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
from openpose_train.generator.registry import get_dataset_layout


def _minicoco():
    return shared_path("data", "minicoco", "annotations", "person_keypoints_train2017.json")


def test_minicoco_record_counts_per_filter():
    dataset = coco.load_keypoint_json(_minicoco(), "coco")
    skipped = Counter()
    plans = coco.plan_records(dataset, skipped)
    assert len(plans) == 43                              # data README: original main-person rules
    assert skipped == {coco.TOO_CLOSE: 6, coco.FEW_KEYPOINTS: 4}
    assert len(dataset.images) == 19                     # 30 images, 11 without people
    # each rule on its own: without the centre-distance rule 6 more people would be taken
    doc = json.load(open(_minicoco()))
    eligible = [a for a in doc["annotations"] if not a["iscrowd"] and a["num_keypoints"] >= 5
                and a["area"] >= 32 * 32]
    assert len(eligible) == 43 + 6


def test_metadata_follows_the_refined_json_rules():
    dataset = coco.load_keypoint_json(_minicoco(), "coco")
    layout = get_dataset_layout("coco")
    doc = json.load(open(_minicoco()))
    entry = max(dataset.images, key=lambda e: len(e.people))
    person = coco.select_main_people(entry, layout)[0]
    meta = coco.build_metadata(entry, person, layout)
    anns = [a for a in doc["annotations"] if a["image_id"] == entry.image_id]
    ann = anns[person]
    x, y, w, h = ann["bbox"]
    assert np.allclose(meta.objpos, [x + w / 2, y + h / 2])
    assert meta.scale_provided == pytest.approx(h / 368)
    kp = np.asarray(ann["keypoints"], float).reshape(17, 3)
    assert np.allclose(meta.joints[:, :2], kp[:, :2])
    expected_v = {0: 2, 1: 0, 2: 1}
    assert [int(v) for v in meta.joints[:, 2]] == [expected_v[int(v)] for v in kp[:, 2]]
    others = [a for i, a in enumerate(anns) if i != person and a["num_keypoints"] > 0 and not a["iscrowd"]]
    assert meta.num_other_people == len(others)
    assert np.allclose(meta.others_scale, [a["bbox"][3] / 368 for a in others])
    assert meta.people_index == person + 1 and meta.annolist_index == entry.index + 1


def _expected_masks(api, img_id):
    """mask_miss / mask_all composed independently with pycocotools' COCO.annToMask."""
    anns = api.loadAnns(api.getAnnIds(imgIds=[img_id], iscrowd=None))
    info = api.loadImgs([img_id])[0]
    shape = (info["height"], info["width"])
    people = np.zeros(shape, bool)
    unlabeled = np.zeros(shape, bool)
    crowd = np.zeros(shape, bool)
    for a in anns:
        m = api.annToMask(a).astype(bool)
        if a["iscrowd"]:
            crowd |= m
        else:
            people |= m
            if a["num_keypoints"] == 0:
                unlabeled |= m
    miss = np.where(unlabeled | (crowd & ~people), 0, 255)
    return miss, np.where(people | crowd, 255, 0)


def test_masks_equal_pycocotools_for_polygons_and_crowd_rle():
    api = COCO(str(_minicoco()))
    dataset = coco.load_keypoint_json(_minicoco(), "coco")
    layout = get_dataset_layout("coco")
    seen_crowd = seen_unlabeled = False
    for entry in dataset.images:
        miss, mask_all = coco.image_masks(entry, layout)
        exp_miss, exp_all = _expected_masks(api, entry.image_id)
        assert np.array_equal(miss, exp_miss), entry.file_name
        assert np.array_equal(mask_all, exp_all), entry.file_name
        seen_crowd |= any(p.iscrowd for p in entry.people)
        seen_unlabeled |= any(p.num_keypoints == 0 and not p.iscrowd for p in entry.people)
    assert seen_crowd and seen_unlabeled


def test_compressed_rle_and_every_polygon_are_used():
    api = COCO(str(_minicoco()))
    crowd = next(a for a in api.dataset["annotations"] if a["iscrowd"])
    img = api.loadImgs([crowd["image_id"]])[0]
    h, w = img["height"], img["width"]
    reference = api.annToMask(crowd)
    compressed = mask_utils.frPyObjects(crowd["segmentation"], h, w)
    compressed["counts"] = compressed["counts"].decode("ascii")          # as stored in JSON
    assert np.array_equal(coco.annotation_mask(compressed, h, w), reference)
    assert np.array_equal(coco.annotation_mask(crowd["segmentation"], h, w), reference)
    multi = next(a for a in api.dataset["annotations"]
                 if not a["iscrowd"] and isinstance(a["segmentation"], list) and len(a["segmentation"]) > 1)
    img = api.loadImgs([multi["image_id"]])[0]
    ours = coco.annotation_mask(multi["segmentation"], img["height"], img["width"])
    assert np.array_equal(ours, api.annToMask(multi))
    first_only = coco.annotation_mask(multi["segmentation"][:1], img["height"], img["width"])
    assert ours.sum() > first_only.sum()                 # the original's first-polygon mask misses parts


def test_mpii_list_conversion():
    path = shared_path("data", "mpii", "test_mpii.json")
    dataset = coco.load_keypoint_json(path, "mpii")
    entries = json.load(open(path))
    assert len(dataset.images) == len(entries) == 5
    plans = coco.plan_records(dataset)
    assert len(plans) == 5
    layout = get_dataset_layout("mpii")
    entry = dataset.images[0]
    meta = coco.build_metadata(entry, plans[0].person, layout)
    assert meta.dataset == "MPII" and meta.num_parts == 16
    assert meta.annolist_index == 0 and meta.people_index == 0           # 0-based for MPII
    joints = np.asarray(entries[0]["joints"])
    vis = np.asarray(entries[0]["joints_vis"])
    assert np.allclose(meta.joints[vis > 0, :2], joints[vis > 0])
    assert set(meta.joints[vis > 0, 2]) == {1.0} and set(meta.joints[vis == 0, 2]) <= {2.0}
    keep, _ = coco.image_masks(entry, layout)
    x, y, w, h = entry.people[0].bbox
    assert keep[int(y + h / 2), int(x + w / 2)] == 255 and keep[0, 0] == 0      # positive thin box
    assert (keep > 0).sum(axis=1).max() <= int(np.ceil(min(w, 0.3 * h))) + 1


def test_wholebody_fields_and_validity():
    path = shared_path("data", "coco_wholebody", "evaluation", "example_gt.json")
    dataset = coco.load_keypoint_json(path, "wholebody")
    layout = get_dataset_layout("wholebody")
    doc = json.load(open(path))
    plans = coco.plan_records(dataset)
    assert len(plans) == 20
    anns = {a["id"]: a for a in doc["annotations"]}
    checked = Counter()
    for plan in plans:
        entry = dataset.images[plan.image_index]
        meta = coco.build_metadata(entry, plan.person, layout)
        assert meta.joints.shape == (133, 3) and meta.dataset == layout.lmdb_dataset
        ann = [a for a in doc["annotations"] if a["image_id"] == entry.image_id][plan.person]
        assert anns[ann["id"]] is ann
        groups = (("foot", 17, 23), ("face", 23, 91), ("lefthand", 91, 112), ("righthand", 112, 133))
        for name, a, b in groups:
            v = meta.joints[a:b, 2]
            if not ann[f"{name}_valid"]:
                assert (v == 4).all()                       # group not in the dataset for this person
                checked["invalid"] += 1
            else:
                kp = np.asarray(ann[f"{name}_kpts"], float).reshape(-1, 3)
                assert np.allclose(meta.joints[a:b, :2][kp[:, 2] > 0], kp[kp[:, 2] > 0, :2])
                # every v > 0 is labeled (hands store confidences in (0, 1)), v = 0 is not
                assert (v[kp[:, 2] > 0] < 2).all() and (v[kp[:, 2] == 0] == 2).all()
                fractional = (kp[:, 2] > 0) & (kp[:, 2] < 1)
                checked["fractional"] += int(fractional.sum())
                checked["valid"] += 1
    assert checked["valid"] and checked["invalid"] and checked["fractional"]


@pytest.mark.parametrize("key, groups", [
    ("coco_foot", (("keypoints", 17), ("foot_kpts", 6))),
    ("hand21", (("righthand_kpts", 21),)),
    ("hand42", (("lefthand_kpts", 21), ("righthand_kpts", 21))),
    ("face70", (("face_kpts", 68),)),
])
def test_wholebody_annotations_stand_in_for_foot_hand_face_files(key, groups):
    """A COCO-WholeBody annotation read as coco_foot / hand / face gives the metadata of the same
    points written in the CMU file's layout (all in ``keypoints``); a group whose ``*_valid`` is
    false and points COCO-WholeBody lacks (face70's pupils) are "not in this dataset" (4)."""
    path = shared_path("data", "coco_wholebody", "evaluation", "example_gt.json")
    doc = json.load(open(path))
    layout = get_dataset_layout(key)
    flat = json.loads(json.dumps(doc))
    for ann in flat["annotations"]:
        points = []
        for name, count in groups:
            valid = ann.get(name.replace("_kpts", "_valid"), True)
            points += ann[name] if valid else [0, 0, 3] * count
        points += [0, 0, 3] * (layout.num_keypoints - len(points) // 3)
        ann["keypoints"] = points
        for name, _ in groups[1 if key == "coco_foot" else 0:]:
            del ann[name]
    wholebody = coco.parse_keypoint_json(doc, layout, path)
    cmu = coco.parse_keypoint_json(flat, layout, "flat.json")
    plans = coco.plan_records(wholebody)
    assert plans and [(p.image_index, p.person) for p in plans] == \
        [(p.image_index, p.person) for p in coco.plan_records(cmu)]
    seen = Counter()
    for plan in plans:
        ours = coco.build_metadata(wholebody.images[plan.image_index], plan.person, layout)
        theirs = coco.build_metadata(cmu.images[plan.image_index], plan.person, layout)
        np.testing.assert_array_equal(ours.joints, theirs.joints)
        assert ours.joints.shape == (layout.num_keypoints, 3)
        seen.update({"labeled": int((ours.joints[:, 2] < 2).sum()), "absent": int((ours.joints[:, 2] == 4).sum())})
    assert seen["labeled"] > 0 and (seen["absent"] > 0 or key == "coco_foot")
    if key == "coco_foot":      # every record has >= 2 labeled feet (foot_valid false = no feet)
        for plan in plans:
            meta = coco.build_metadata(wholebody.images[plan.image_index], plan.person, layout)
            assert int((meta.joints[17:23, 2] < 2).sum()) >= 2


def test_minicoco_lmdb_round_trip(tmp_path):
    images = shared_path("data", "minicoco", "images", "train2017")
    out = tmp_path / "lmdb_coco"
    summary = build_lmdb(_minicoco(), images, out, BuildOptions(progress=False, workers=1))
    assert summary.finished and summary.records_written == 43
    dataset = coco.load_keypoint_json(_minicoco(), "coco")
    layout = get_dataset_layout("coco")
    by_key = {}
    with LmdbReader(out, num_lmdb_parts=17) as reader:
        assert len(reader) == 43
        for key, record in reader.items():
            by_key[int(key)] = record
            assert record.meta.write_number == int(key) and record.meta.total_write_number == 43
            assert record.image.shape[:2] == record.mask_miss.shape
    assert sorted(by_key) == list(range(43))
    # every planned record is present once, with the 1-based stored coordinates
    expected = []
    for plan in coco.plan_records(dataset):
        meta = coco.build_metadata(dataset.images[plan.image_index], plan.person, layout)
        expected.append((meta.annolist_index, meta.people_index, tuple(np.round(meta.joints[:, 0] + 1, 2))))
    got = [(r.meta.annolist_index, r.meta.people_index, tuple(np.round(r.meta.joints[:, 0], 2)))
           for r in by_key.values()]
    assert sorted(got) == sorted(expected)


def test_minicoco_background_lmdb(tmp_path):
    images = shared_path("data", "minicoco", "images", "train2017")
    summary = build_lmdb(_minicoco(), images, tmp_path / "bg", BuildOptions(progress=False, background=True))
    assert summary.records_written == 11                 # images without any annotation (a1)
    with LmdbReader(tmp_path / "bg") as reader:
        rec = reader[0]
        assert rec.meta is None and rec.image.ndim == 3


def test_fast_mask_miss_equals_the_full_composition():
    dataset = coco.load_keypoint_json(_minicoco(), "coco")
    layout = get_dataset_layout("coco")
    for entry in dataset.images:
        assert np.array_equal(coco.mask_miss(entry, layout), coco.image_masks(entry, layout)[0])
    light = coco.load_keypoint_json(_minicoco(), "coco", mask_miss_only=True)
    for entry in light.images:
        assert np.array_equal(coco.mask_miss(entry, layout), coco.image_masks(dataset.images[entry.index], layout)[0])
