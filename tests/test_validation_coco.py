"""COCO results JSON (CocoJsonSaver conventions), OpenPose --write_json files, COCOeval wrapper."""
import json

import numpy as np
import pytest

from openpose_train.generator.registry import get_model
from openpose_train.validation.coco_eval import (
    CocoEvalError, STAT_NAMES, evaluate, image_id_from_name, load_coco, openpose_json,
    people_to_coco, write_openpose_json)

# OpenPose's CocoJsonSaver: index for each COCO keypoint (nose, l/r eye, l/r ear, ...)
BODY_25_TO_COCO = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]
COCO_18_TO_COCO = [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]


def test_registry_mappings_match_openpose_lists():
    assert list(get_model("BODY_25").to_coco17) == BODY_25_TO_COCO
    assert list(get_model("COCO_18").to_coco17) == COCO_18_TO_COCO
    assert list(get_model("BODY_25B").to_coco17) == list(range(17))


def test_people_to_coco_reorders_marks_missing_and_skips_empty():
    model = get_model("BODY_25")
    kp = np.zeros((3, 25, 3), np.float32)
    kp[0, :, 0] = np.arange(25) * 10 + 0.5     # x encodes the BODY_25 index
    kp[0, :, 1] = 7
    kp[0, :, 2] = 0.8
    kp[0, 16, 2] = 0                             # LEye missing
    kp[1, 1, 2] = 0.9                            # only a neck: no COCO keypoint -> skipped
    kp[2, 0] = (3, 4, 0.5)                       # only a nose
    out = people_to_coco(model, kp, np.array([0.7, 0.6, 0.1]), image_id=42)
    assert len(out) == 2
    first = np.array(out[0]["keypoints"]).reshape(17, 3)
    assert out[0]["image_id"] == 42 and out[0]["category_id"] == 1
    assert out[0]["score"] == pytest.approx(0.7)
    expected_x = [i * 10 + 0.5 for i in BODY_25_TO_COCO]
    expected_x[1] = -1                           # COCO left_eye <- BODY_25 LEye (16), missing
    assert first[:, 0].tolist() == pytest.approx(expected_x)
    assert first[1].tolist() == [-1, -1, 0]
    assert set(first[:, 2].tolist()) == {0.0, 1.0}
    assert np.array(out[1]["keypoints"]).reshape(17, 3)[0].tolist() == [3, 4, 1]


def test_mpi_has_no_coco_mapping():
    with pytest.raises(CocoEvalError, match="MPI_15"):
        people_to_coco(get_model("MPI_15"), np.zeros((1, 15, 3)), np.zeros(1), 1)


def test_image_id_from_file_name():
    assert image_id_from_name("COCO_val2014_000000000192.jpg") == 192
    assert image_id_from_name("/x/000000397133.png") == 397133
    with pytest.raises(CocoEvalError, match="no trailing digits"):
        image_id_from_name("holiday.jpg")


def test_openpose_write_json_format(tmp_path):
    kp = np.arange(2 * 25 * 3, dtype=np.float32).reshape(2, 25, 3)
    path = write_openpose_json(str(tmp_path), "dir/000000000785.jpg", kp)
    assert path.endswith("000000000785_keypoints.json")
    data = json.loads(open(path).read())
    assert data["version"] == 1.3
    assert len(data["people"]) == 2
    person = data["people"][1]
    assert person["pose_keypoints_2d"] == kp[1].reshape(-1).tolist()
    for field in ("face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
                  "pose_keypoints_3d", "face_keypoints_3d", "hand_left_keypoints_3d",
                  "hand_right_keypoints_3d"):
        assert person[field] == []
    assert openpose_json(np.zeros((0, 25, 3)))["people"] == []


def _tiny_gt(tmp_path):
    kps = [[100, 50, 2, 110, 45, 2, 90, 45, 2] + [0, 0, 0] * 14,
           [300, 60, 2, 310, 55, 2, 290, 55, 1] + [0, 0, 0] * 14]
    gt = {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 400, "height": 300},
                     {"id": 2, "file_name": "000000000002.jpg", "width": 400, "height": 300}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                           "keypoints": k, "num_keypoints": 3, "area": 2500.0,
                           "bbox": [k[0] - 30, k[1] - 20, 60, 80]} for i, k in enumerate(kps)],
          "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path), kps


def test_evaluate_perfect_no_detections_and_bad_file(tmp_path):
    path, kps = _tiny_gt(tmp_path)
    coco = load_coco(path)
    perfect = [{"image_id": 1, "category_id": 1, "keypoints": [float(v) if (i % 3) != 2 else
                                                               (1.0 if v else 0.0)
                                                               for i, v in enumerate(k)],
                "score": 0.9} for k in kps]
    for entry in perfect:          # missing keypoints as OpenPose writes them
        arr = np.array(entry["keypoints"]).reshape(17, 3)
        arr[arr[:, 2] == 0] = (-1, -1, 0)
        entry["keypoints"] = arr.reshape(-1).tolist()
    res = evaluate(coco, perfect, [1, 2])
    assert set(res["stats"]) == set(STAT_NAMES)
    assert res["stats"]["AP"] == pytest.approx(1.0)
    assert "Average Precision" in res["summary"]
    # one person shifted far away: AP drops
    moved = json.loads(json.dumps(perfect))
    moved[1]["keypoints"][0] += 40
    assert evaluate(coco, moved, [1, 2])["stats"]["AP"] < 0.9
    empty = evaluate(coco, [], [1, 2])
    assert empty["stats"]["AP"] == 0 and "no detections" in empty["note"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CocoEvalError, match="bad.json"):
        load_coco(str(bad))
    with pytest.raises(CocoEvalError, match="not found"):
        load_coco(str(tmp_path / "missing.json"))
