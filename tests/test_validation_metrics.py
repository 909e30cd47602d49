"""validation.metrics: body / foot / whole-body OKS AP against plain pycocotools, hand PCK and
face NME on known errors, and the one-line reasons for metrics a model cannot produce."""
import contextlib
import io
import json

import numpy as np
import pytest

from conftest import shared_path
from openpose_train.generator.registry import get_dataset_layout, get_model
from openpose_train.validation import metrics
from openpose_train.validation.coco_eval import evaluate as coco_evaluate, load_coco, people_to_coco
from openpose_train.validation.crop_nets import CropSample
from openpose_train.validation.metrics_coco import (annotation_keypoints, annotation_layout,
                                                    model_group_reorder)
from openpose_train.validation.metrics_face import face_metrics
from openpose_train.validation.metrics_hand import hand_metrics


def people_from_annotations(model, doc, shift=0.0, seed=0):
    """Detections made of the annotations themselves (model order), every point shifted by
    ``shift`` px in a random direction; score 1 - 0.01 * index so the order is fixed."""
    layout = annotation_layout(doc)
    group = "wholebody" if layout.key == "wholebody" else ("foot" if layout.key == "coco_foot" else "body")
    names = [g for g, _, _ in layout.keypoint_groups] if group == "wholebody" else [group]
    rng = np.random.default_rng(seed)
    people = {}
    for k, ann in enumerate(doc["annotations"]):
        if ann.get("iscrowd") or not ann.get("num_keypoints"):
            continue
        points = annotation_keypoints(ann, layout)
        person = np.zeros((model.num_parts, 3), np.float32)
        for name in names:
            first, count = dict((g, (f, c)) for g, f, c in layout.keypoint_groups)[name]
            if model.coco_group_reorder(name) is None:
                continue
            reorder = np.asarray(model.coco_group_reorder(name))
            part = points[first:first + count]
            have = (reorder >= 0) & (part[:, 2] > 0)
            angle = rng.uniform(0, 2 * np.pi, have.sum())
            person[reorder[have], 0] = part[have, 0] + shift * np.cos(angle)
            person[reorder[have], 1] = part[have, 1] + shift * np.sin(angle)
            person[reorder[have], 2] = 0.9
        kp, sc = people.setdefault(ann["image_id"], ([], []))
        kp.append(person)
        sc.append(1 - 0.01 * k)
    return {i: (np.asarray(k), np.asarray(s)) for i, (k, s) in people.items()}


def plain_pycocotools(doc, results, field_slices, sigmas, image_ids):
    """COCOeval on a document rewritten independently: 'keypoints' = the given fields' slices."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    layout = annotation_layout(doc)
    gt = json.loads(json.dumps(doc))
    for ann in gt["annotations"]:
        full = []
        for name, flag in zip(layout.json_fields, layout.validity_fields or ("",) * 5):
            values = list(ann.get(name, []))
            if flag and not ann.get(flag):
                values = [0] * len(values)
            full += values
        kps = [v for a, b in field_slices for v in full[3 * a:3 * b]]
        ann["keypoints"] = kps
        ann["num_keypoints"] = sum(1 for v in kps[2::3] if v > 0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_body_ap_equals_pycocotools():
    path = shared_path("data", "mmpose_coco", "test_coco.json")
    doc = json.loads(path.read_text())
    model = get_model("BODY_25")
    people = people_from_annotations(model, doc, shift=3.0)
    ids = [im["id"] for im in doc["images"]]
    ours = metrics.evaluate(model, doc, people, metrics=["body"], image_ids=ids)
    results = [r for i, (k, s) in people.items() for r in people_to_coco(model, k, s, i)]
    reference = coco_evaluate(load_coco(str(path)), results, ids)["stats"]
    assert 0.2 < ours["body_ap"] < 1.0
    assert ours["body_ap"] == pytest.approx(reference["AP"], abs=1e-12)
    assert ours["body_ar"] == pytest.approx(reference["AR"], abs=1e-12)


@pytest.mark.parametrize("group", ["foot", "face", "lefthand", "righthand", "wholebody"])
def test_wholebody_groups_equal_pycocotools_with_their_sigmas(group):
    doc = json.loads(shared_path("data", "coco_wholebody", "evaluation", "example_gt.json").read_text())
    model = get_model("BODY_135")
    layout = get_dataset_layout("wholebody")
    shift = {"foot": 6.0, "face": 1.0, "lefthand": 2.0, "righthand": 2.0, "wholebody": 1.0}[group]
    people = people_from_annotations(model, doc, shift=shift)
    ids = [im["id"] for im in doc["images"]]
    ours = metrics.evaluate(model, doc, people, metrics=["wholebody", "foot"], image_ids=ids)
    groups = {g: (f, f + c) for g, f, c in layout.keypoint_groups}
    slices = list(groups.values()) if group == "wholebody" else [groups[group]]
    sigmas = [s for a, b in slices for s in layout.oks_sigmas[a:b]]
    reorder = model_group_reorder(model, layout, group)
    results = []
    for image_id, (kps, scores) in people.items():
        for person, score in zip(kps, scores):
            picked = person[reorder]
            if not (picked[:, 2] > 0).any():
                continue
            flat = np.where(picked[:, 2:] > 0, np.column_stack([picked[:, :2], np.ones(len(picked))]),
                            [-1, -1, 0])
            results.append({"image_id": image_id, "category_id": 1, "score": float(score),
                            "keypoints": [round(float(v), 3) for v in flat.reshape(-1)]})
    reference = plain_pycocotools(doc, results, slices, sigmas, ids)
    key = "wholebody" if group == "wholebody" else f"wholebody_{group}"
    assert 0.05 < ours[f"{key}_ap"] < 1.0
    assert ours[f"{key}_ap"] == pytest.approx(reference[0], abs=1e-12)
    assert ours[f"{key}_ap50"] == pytest.approx(reference[1], abs=1e-12)
    if group == "foot":
        assert ours["foot_ap"] == ours["wholebody_foot_ap"]


def test_invalid_group_is_ignored_ground_truth():
    doc = json.loads(shared_path("data", "coco_wholebody", "evaluation", "example_gt.json").read_text())
    layout = get_dataset_layout("wholebody")
    ann = dict(next(a for a in doc["annotations"] if a["lefthand_valid"]), lefthand_valid=False)
    assert ann["lefthand_kpts"][2] > 0
    assert not annotation_keypoints(ann, layout)[91:112, 2].any()
    assert annotation_keypoints(ann, layout)[112:, 2].any() == ann["righthand_valid"]


def test_reasons_for_metrics_a_model_cannot_produce():
    doc = json.loads(shared_path("data", "mmpose_coco", "test_coco.json").read_text())
    out = metrics.evaluate(get_model("COCO_18"), doc, {}, metrics=["body", "foot", "wholebody", "hand"])
    notes = out["metric_notes"]
    assert "COCO_18 has no foot keypoints" in notes["foot"]
    assert "not the hand crop net" in notes["hand"]
    assert "no wholebody keypoints" in notes["wholebody"]      # COCO-17 annotations
    assert out["body_ap"] is None       # no image evaluated: nothing measured, not 0
    assert metrics.default_metrics(get_model("HAND_21")) == ["hand"]
    assert metrics.default_metrics(get_model("BODY_135")) == ["body", "foot", "wholebody"]
    assert metrics.default_metrics(get_model("BODY_25B")) == ["body", "foot", "wholebody"]
    assert metrics.default_metrics(get_model("MPI_15")) == []
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.parse_metrics("body,feet")


def _sample(keypoints, box=(0, 0, 100, 50), group="righthand"):
    kps = np.column_stack([np.asarray(keypoints, float), np.ones(len(keypoints))])
    return CropSample(1, 1, group, box, kps)


def test_hand_pck_auc_and_face_nme_on_known_errors():
    truth = np.stack([np.arange(21) * 4.0, np.zeros(21)], 1)
    sample = _sample(truth)
    shifted = truth.copy()
    shifted[:10, 0] += 25          # 25 px > 0.2 * 100: wrong; the other 11 right
    shifted[10:, 1] += 15          # 15 px: right
    out = hand_metrics([(sample, shifted)])
    assert out["hand_pck"] == pytest.approx(11 / 21)
    assert out["hand_epe"] == pytest.approx((10 * 25 + 11 * 15) / 21)
    # AUC: thresholds 0.01..0.50; 15 px (0.15) passes 36 of 50, 25 px passes 26 of 50
    assert out["hand_auc"] == pytest.approx((11 * 36 + 10 * 26) / (21 * 50))
    assert hand_metrics([(sample, None)])["hand_pck"] == 0.0
    face = np.zeros((68, 2))
    face[36], face[45] = (0, 0), (40, 0)            # inter-ocular 40 px
    predicted = face + [2.0, 0.0]                   # every landmark 2 px off
    out = face_metrics([(_sample(face, group="face"), predicted)])
    assert out["face_nme"] == pytest.approx(2 / 40)


# ------------------------------------------------------------------------------ the command
HAND_TINY = """name: "tiny_hand"
input: "image"
input_dim: 1
input_dim: 3
input_dim: 368
input_dim: 368
layer { name: "conv1" type: "Convolution" bottom: "image" top: "conv1"
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 8 stride: 8 } }
layer { name: "Mconv7_stage6" type: "Convolution" bottom: "pool1" top: "net_output"
  convolution_param { num_output: 22 pad: 0 kernel_size: 1 } }
"""


def _cli(*args):
    from click.testing import CliRunner
    from openpose_train.cli import main
    return CliRunner().invoke(main, ["validate", *map(str, args)])


def test_validate_hand_net_on_wholebody_crops_with_a_real_backend(tmp_path):
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt, write_caffemodel
    from openpose_train.caffe_layers.shapes import random_weights
    ann = shared_path("data", "mmpose_coco", "test_coco_wholebody.json")
    proto = tmp_path / "pose_deploy.prototxt"
    proto.write_text(HAND_TINY)
    net = read_net_prototxt(str(proto))
    caffemodel = tmp_path / "pose_iter_1.caffemodel"
    write_caffemodel(str(caffemodel), random_weights(net, seed=1), net=net)
    out = tmp_path / "hand.json"
    result = _cli("--model", "HAND_21", "--prototxt", proto, "--caffemodel", caffemodel,
                  "--images", ann.parent, "--annotations", ann, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "hand_summary.json").read_text())
    doc = json.loads(ann.read_text())
    hands = sum(bool(a[f"{g}_valid"]) and min(a[f"{g}_box"][2:]) > 0
                for a in doc["annotations"] for g in ("lefthand", "righthand"))
    assert summary["hand_count"] == hands == len(json.loads(out.read_text()))
    assert 0 <= summary["hand_pck"] < 0.9                # random weights
    assert "hand_pck" in result.output and "hand_auc" in result.output


def test_validate_groundtruth_maps_table_summary_keys_and_reasons(tmp_path):
    ann = shared_path("data", "mmpose_coco", "test_coco_wholebody.json")
    out = tmp_path / "gt.json"
    result = _cli("--model", "COCO_18", "--groundtruth-maps", "--images", ann.parent,
                  "--annotations", ann, "--metrics", "body,foot,face", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "gt_summary.json").read_text())
    assert summary["body_ap"] >= 0.8 and summary["AP"] == summary["body_ap"]
    assert "foot_ap" not in summary and "COCO_18 has no foot keypoints" in summary["metric_notes"]["foot"]
    assert "COCO_18 has no foot keypoints" in result.output
    assert "not the face crop net" in result.output
    result = _cli("--model", "BODY_25", "--groundtruth-maps", "--images", ann.parent,
                  "--annotations", ann, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "gt_summary.json").read_text())
    for key in ("body_ap", "body_ap50", "body_ar", "foot_ap", "wholebody_body_ap", "wholebody_foot_ap"):
        assert isinstance(summary[key], float), key
    assert "BODY_25 has no face, lefthand, righthand keypoints" in summary["metric_notes"]["wholebody"]
    result = _cli("--model", "BODY_25", "--groundtruth-maps", "--openpose-build", "cpu", "--images",
                  ann.parent, "--annotations", ann, "--metrics", "body", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    cpu = json.loads((tmp_path / "gt_summary.json").read_text())
    assert cpu["settings"]["openpose_build"] == "cpu" and cpu["body_ap"] >= 0.8
    result = _cli("--model", "BODY_25", "--groundtruth-maps", "--images", ann.parent, "--out", out)
    assert result.exit_code != 0 and "give --annotations" in result.output
    result = _cli("--model", "BODY_25", "--groundtruth-maps", "--images", ann.parent,
                  "--annotations", ann, "--metrics", "body,toes", "--out", out)
    assert result.exit_code != 0 and "unknown metric(s) toes" in result.output
    assert "Traceback" not in result.output


def test_validate_snapshots_of_a_hand_net_keeps_hand_pck_per_snapshot(tmp_path):
    from click.testing import CliRunner
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt, write_caffemodel
    from openpose_train.caffe_layers.shapes import random_weights
    from openpose_train.cli import main
    ann = shared_path("data", "mmpose_coco", "test_coco_wholebody.json")
    run = tmp_path / "hand_run"
    run.mkdir()
    (run / "pose_deploy.prototxt").write_text(HAND_TINY)
    net = read_net_prototxt(str(run / "pose_deploy.prototxt"))
    for it in (1, 2):
        write_caffemodel(str(run / f"pose_iter_{it}.caffemodel"), random_weights(net, seed=it), net=net)
    result = CliRunner().invoke(main, ["validate-snapshots", str(run), "--model", "HAND_21",
                                       "--images", str(ann.parent), "--annotations", str(ann), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "validation" / "ap.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(0 <= r["hand_pck"] <= 1 and r["hand_count"] > 0 for r in rows)
    assert rows[0]["hand_pck"] != rows[1]["hand_pck"] or rows[0]["hand_epe"] != rows[1]["hand_epe"]
    best = max(rows, key=lambda r: r["hand_pck"])
    assert f"best: iteration {best['iteration']} hand_pck {best['hand_pck']:.3f}" in result.output
    assert (run / "validation" / "ap_vs_iteration.png").stat().st_size > 0


def test_foot_ap_on_coco_foot_style_annotations_equals_the_wholebody_feet():
    """CMU's COCO-foot files hold 23 points in 'keypoints' (17 body + 6 foot): the same feet
    written that way score the same foot AP as COCO-WholeBody's foot_kpts."""
    doc = json.loads(shared_path("data", "coco_wholebody", "evaluation", "example_gt.json").read_text())
    foot_style = json.loads(json.dumps(doc))
    for ann in foot_style["annotations"]:
        feet = ann["foot_kpts"] if ann["foot_valid"] else [0] * 18
        ann["keypoints"] = ann["keypoints"] + feet
        for key in ("foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts"):
            ann.pop(key)
    assert annotation_layout(foot_style).key == "coco_foot"
    model = get_model("BODY_25")
    people = people_from_annotations(model, doc, shift=6.0)
    ids = [im["id"] for im in doc["images"]]
    wholebody = metrics.evaluate(model, doc, people, metrics=["foot"], image_ids=ids)
    foot_style_out = metrics.evaluate(model, foot_style, people, metrics=["foot", "wholebody"], image_ids=ids)
    assert 0.1 < foot_style_out["foot_ap"] < 1.0
    assert foot_style_out["foot_ap"] == wholebody["foot_ap"]
    assert foot_style_out["foot_ar"] == wholebody["foot_ar"]
    assert "no wholebody keypoints" in foot_style_out["metric_notes"]["wholebody"]
