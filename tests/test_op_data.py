"""OPDataSource (caffe_layers/op_data.py and the opdata_* modules): configuration checks, determinism, resume,
sharding, real data."""
import numpy as np
import pytest
import torch

from conftest import shared_path
from openpose_train.caffe_layers import caffe_pb2
from openpose_train.caffe_layers import op_data as OD
from openpose_train.caffe_layers import opdata_batch, opdata_config, opdata_plan
from openpose_train.caffe_layers.metadata import decode_metadata
from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset
from openpose_train.generator.registry import get_training_variant


@pytest.fixture(scope="module")
def synth_lmdbs(tmp_path_factory):
    root = tmp_path_factory.mktemp("opdata_synth")
    res = make_synthetic_dataset(root / "data", SynthConfig(images=12, seed=1, width=320, height=240))
    json_path, images = res.splits["train2017"], res.image_dirs["train2017"]
    build_lmdb(json_path, images, root / "coco", BuildOptions(workers=1, progress=False))
    build_lmdb(json_path, images, root / "bg", BuildOptions(workers=1, progress=False, background=True))
    return root / "coco", root / "bg"


def layer(sources, models="COCO_25_17", probabilities="1", background="", only_bkg=0.0, batch=4, **fields):
    lp = caffe_pb2.LayerParameter(name="data", type="OPData", top=["image", "label"])
    lp.data_param.batch_size = batch
    tp = lp.op_transform_param
    tp.stride, tp.crop_size_x, tp.crop_size_y = 8, 184, 184
    tp.target_dist, tp.scale_prob, tp.scale_mins, tp.scale_maxs = 0.6, 1, "0.5", "1.5"
    tp.center_perterb_max, tp.max_degree_rotations, tp.number_max_occlusions = 40, "45", "2"
    tp.sources, tp.models, tp.probabilities = sources, models, probabilities
    tp.source_background, tp.prob_only_background = background, only_bkg
    for key, value in fields.items():
        setattr(tp, key, value)
    return lp


def batches(src, n):
    return [next(src) for _ in range(n)]


def assert_same(a, b):
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_choose_source_walks_the_cumulative_probabilities():
    assert opdata_plan.choose_source([0.05, 0.9, 0.03], 0.04) == 0
    assert opdata_plan.choose_source([0.05, 0.9, 0.03], 0.05) == 1
    assert opdata_plan.choose_source([0.05, 0.9, 0.03], 0.99) == -1      # background-only


def test_configuration_errors(synth_lmdbs):
    coco, bg = synth_lmdbs
    with pytest.raises(OD.OPDataError, match="sum"):
        opdata_config.parse_layer(layer(str(coco), probabilities="0.5"))
    with pytest.raises(OD.OPDataError, match="NOPE"):
        opdata_config.parse_layer(layer(str(coco), models="NOPE"))
    with pytest.raises(OD.OPDataError, match="compatible"):
        opdata_config.parse_layer(layer(f"{coco};{coco}", models="COCO_25_17;COCO_18", probabilities="0.5;0.5"))
    with pytest.raises(OD.OPDataError, match="must match"):
        opdata_config.parse_layer(layer(f"{coco};{coco}", probabilities="1"))
    with pytest.raises(OD.OPDataError, match="no such LMDB"):
        OD.OPDataSource(layer("/nonexistent/lmdb"), num_workers=0)
    # prob_only_background is forced to 0 without a background LMDB (then the sum must be 1)
    assert opdata_config.parse_layer(layer(str(coco), only_bkg=0.3)).prob_only_background == 0


def test_shapes_normalisation_and_background_batches(synth_lmdbs):
    coco, bg = synth_lmdbs
    src = OD.OPDataSource(layer(str(coco), probabilities="0.5", background=str(bg), only_bkg=0.5),
                          seed=5, num_workers=0)
    kinds = set()
    for b in batches(src, 6):
        assert b["image"].shape == (4, 3, 184, 184) and b["image"].dtype == torch.float32
        assert b["label"].shape == (4, 156, 23, 23)
        assert b["image"].min() >= -0.5 and b["image"].max() <= 127 / 256
        weights, targets = b["label"][:, :78], b["label"][:, 78:]
        bkg_only = bool((weights == 1).all() and (targets[:, :77] == 0).all() and (targets[:, 77] == 1).all())
        kinds.add(bkg_only)
    assert kinds == {True, False}          # p=0.5 over 6 batches with this seed: both kinds occur
    src.close()


def test_same_seed_same_batches_whatever_the_workers(synth_lmdbs):
    coco, bg = synth_lmdbs
    lp = layer(str(coco), background=str(bg))
    with OD.OPDataSource(lp, seed=11, num_workers=0) as a:
        ref = batches(a, 3)
    with OD.OPDataSource(lp, seed=11, num_workers=2, prefetch=2) as b:
        got = batches(b, 3)
    assert_same(ref, got)
    with OD.OPDataSource(lp, seed=12, num_workers=0) as c:
        other = batches(c, 1)
    assert not torch.equal(other[0]["image"], ref[0]["image"])


def test_state_dict_resumes_exactly(synth_lmdbs):
    coco, bg = synth_lmdbs
    lp = layer(str(coco), background=str(bg))
    with OD.OPDataSource(lp, seed=3, num_workers=2, prefetch=3) as src:
        batches(src, 2)
        state = src.state_dict()
        expected = batches(src, 3)
    with OD.OPDataSource(lp, seed=999, num_workers=0) as fresh:
        fresh.load_state_dict(state)
        assert_same(expected, batches(fresh, 3))


def test_rank_sharding_takes_disjoint_records(synth_lmdbs):
    coco, _ = synth_lmdbs
    lp = layer(str(coco))
    keys = []
    for rank in (0, 1):
        src = OD.OPDataSource(lp, seed=1, rank=rank, world_size=2, num_workers=0)
        plans = [src.planner.plan() for _ in range(3)]
        keys.append([k for p in plans for k in p.keys])
        assert all(k % 2 == rank for k in keys[-1][:src.sizes[0] // 2])
        src.close()
    assert not set(keys[0][:5]) & set(keys[1][:5])


def test_label_device_path_matches_worker_labels(synth_lmdbs):
    coco, bg = synth_lmdbs
    lp = layer(str(coco), background=str(bg))
    with OD.OPDataSource(lp, seed=4, num_workers=0) as a, \
            OD.OPDataSource(lp, seed=4, num_workers=0, label_device="cpu:0") as b:
        for x, y in zip(batches(a, 2), batches(b, 2)):
            assert torch.equal(x["image"], y["image"])
            torch.testing.assert_close(x["label"], y["label"], atol=1e-5, rtol=0)


def test_real_data_keypoints_on_heatmap_peaks(tmp_path_factory):
    """64 augmented minicoco samples: every visible keypoint, warped with the IMAGE's matrix from the raw
    stored metadata, sits on its heatmap peak (within one cell) in the channel of the (flipped) part."""
    ann = shared_path("data", "minicoco", "annotations", "person_keypoints_train2017.json")
    images = shared_path("data", "minicoco", "images", "train2017")
    out = tmp_path_factory.mktemp("minicoco") / "lmdb"
    build_lmdb(ann, images, out, BuildOptions(workers=1, progress=False))
    model, variant = get_training_variant("COCO_25_17")
    lp = layer(str(out), batch=1)
    lp.op_transform_param.crop_size_x = lp.op_transform_param.crop_size_y = 368
    cfg = opdata_config.parse_layer(lp)
    readers = opdata_batch.RecordReaders(cfg)
    raw = readers.source(0)
    heat0 = 2 * model.num_pafs
    flip = {a: b for a, b in model.flip_pairs} | {b: a for a, b in model.flip_pairs}
    checked = 0
    for i in range(64):
        key = i % len(raw)
        _, label, aug = opdata_batch.render_item(readers, 0, key, None, np.random.default_rng(i))
        targets = label[model.num_channels:]
        meta = decode_metadata(raw[key].meta_plane, num_lmdb_parts=17)
        people = np.concatenate([meta.joints[None], meta.others_joints], 0)
        for person in people:
            for j in range(17):
                x, y, v = person[j]
                if v > 1:                      # stored visibility: 0 occluded, 1 visible
                    continue
                src = np.array([x - 1, y - 1, 1.0])          # stored 1-based (COCO category)
                px, py = aug.params.warp @ src
                part = model.to_coco17[j]
                if aug.params.flip:
                    part = flip.get(part, part)
                gx, gy = int(round((px - 3.5) / 8)), int(round((py - 3.5) / 8))
                if not (1 <= gx < 45 and 1 <= gy < 45):
                    continue
                # >= 0.7 at the nearest cell means a Gaussian centred within 5.9 px of that cell's
                # centre (exp(-d^2 / 98) >= 0.7): the peak is within one cell of the keypoint
                heat = targets[heat0 + part]
                assert heat[gy, gx] >= 0.7, (i, j, px, py, heat[gy, gx])
                checked += 1
    readers.close()
    assert checked > 100


def test_source_from_generated_training_prototxt(synth_lmdbs, tmp_path):
    from openpose_train.generator.families import DatasetSpec
    from openpose_train.generator.render import render_training
    coco, bg = synth_lmdbs
    text = render_training("BODY_25", datasets=(DatasetSpec(str(coco), 0.9, "COCO_25_17", "coco"),),
                           background_lmdb=str(bg), prob_only_background=0.1, batch_size=2, crop_size=(184, 184))
    path = tmp_path / "pose_training.prototxt"
    path.write_text(text)
    with OD.source_from_prototxt(path, seed=0, num_workers=0) as src:
        batch = next(src)
        assert src.config.sources[0].op_model == "COCO_25_17"
    assert batch["image"].shape == (2, 3, 184, 184)
    assert batch["label"].shape == (2, 156, 23, 23)
    with pytest.raises(OD.OPDataError, match="no OPData layer named"):
        OD.source_from_prototxt(path, layer_name="nope")


def test_benchmark_quick_smoke(repo_root):
    import json
    import subprocess
    import sys
    run = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "op_data.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    cases = {(line["bench"], line["case"]) for line in lines}
    assert {("labels_ms", f"{model}people={n}") for n in (1, 3, 6, 12)
            for model in ("", "BODY_135,", "BODY_135_wholebody,")} | {("samples_per_s", "workers=2")} <= cases
    for line in lines:
        assert line["value"] > 0 and line["baseline"] > 0 and line["baseline_name"]
        if line["bench"] == "labels_ms":          # the floor, timed in the same loop, and the ratio to it
            assert 0 < line["floor_ms"] and line["ratio"] == pytest.approx(line["value"] / line["floor_ms"], abs=0.02)
    if not torch.cuda.is_available():
        assert "skipped" in run.stderr


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_batch_normalisation_equals_the_reference(mode):
    from openpose_train.caffe_layers.augment import normalize_image
    img = np.random.default_rng(mode).integers(0, 256, (5, 7, 3), np.uint8)
    ref = normalize_image(img, mode)
    got = opdata_batch.normalize_batch(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None], mode)[0]
    np.testing.assert_array_equal(got.numpy(), ref)


def test_test_phase_is_unaugmented_and_unsharded(synth_lmdbs):
    coco, _ = synth_lmdbs
    lp = layer(str(coco), batch=2)
    lp.op_transform_param.crop_size_x, lp.op_transform_param.crop_size_y = 320, 240
    with OD.OPDataSource(lp, phase="TEST", seed=0, num_workers=0, rank=1, world_size=2) as src:
        plan = src.planner.plan()
        assert plan.keys == (0, 1)                       # TEST keeps every record
        readers = src.readers
        image, label, out = opdata_batch.render_item(readers, 0, 0, None, np.random.default_rng(0))
        record = readers.source(0)[0]
        np.testing.assert_array_equal(image, record.image)
        model, variant = readers.models[0]
        meta = record.meta
        expected = np.concatenate([meta.joints[None], meta.others_joints])[..., :2] - 1    # COCO: 1-based
        got = out.people[..., :2]
        np.testing.assert_allclose(got[:, model.to_coco17[0]], expected[:, 0], atol=1e-4)   # nose
        assert label.shape == (156, 30, 40)


def test_unsupported_fields_are_refused(synth_lmdbs):
    coco, _ = synth_lmdbs
    with pytest.raises(OD.OPDataError, match="add_distance"):
        opdata_config.parse_layer(layer(str(coco), add_distance=True))


def test_batch_images_are_the_augmented_crops(synth_lmdbs):
    coco, bg = synth_lmdbs
    with OD.OPDataSource(layer(str(coco), background=str(bg), batch=3), seed=2, num_workers=0) as src:
        plan = src.planner.plan()
        images = np.zeros((3, 3, 184, 184), np.uint8)
        labels = np.zeros((3, 156, 23, 23), np.float32)
        opdata_batch.run_plan(src.readers, plan, images, labels)
        rng = np.random.default_rng(list(plan.seed))
        for i, (key, bg_key) in enumerate(zip(plan.keys, plan.bg_keys)):
            image, label, _ = opdata_batch.render_item(src.readers, plan.source, key, bg_key, rng)
            np.testing.assert_array_equal(images[i], image.transpose(2, 0, 1))
            np.testing.assert_array_equal(labels[i], label)


def test_workers_from_an_unguarded_script(synth_lmdbs, tmp_path):
    """A plain script without ``if __name__ == "__main__"`` must not be re-run in the workers."""
    import subprocess
    import sys
    coco, _ = synth_lmdbs
    script = tmp_path / "plain.py"
    script.write_text(
        "from openpose_train.caffe_layers import caffe_pb2\n"
        "from openpose_train.caffe_layers.op_data import OPDataSource\n"
        "lp = caffe_pb2.LayerParameter(name='data', type='OPData', top=['image', 'label'])\n"
        "lp.data_param.batch_size = 2\n"
        "tp = lp.op_transform_param\n"
        "tp.stride, tp.crop_size_x, tp.crop_size_y = 8, 184, 184\n"
        f"tp.sources, tp.models = {str(coco)!r}, 'COCO_25_17'\n"
        "print('RUN', flush=True)\n"
        "with OPDataSource(lp, seed=0, num_workers=2) as src:\n"
        "    print(tuple(next(src)['label'].shape))\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["RUN", "(2,", "156,", "23,", "23)"]


def test_resume_with_workers_keeps_them_and_repeats_the_batches(synth_lmdbs):
    """load_state_dict on a running DataLoader: the same worker processes (persistent_workers), and the
    batches from the saved state on, as a fresh source in the calling thread gives them."""
    coco, bg = synth_lmdbs
    lp = layer(str(coco), background=str(bg))
    with OD.OPDataSource(lp, seed=8, num_workers=2, prefetch=2) as src:
        batches(src, 1)
        state = src.state_dict()
        first = batches(src, 2)
        pids = [w.pid for w in src._loader._iterator._workers]
        batches(src, 2)                          # move on, with batches planned ahead in flight
        src.load_state_dict(state)
        again = batches(src, 2)
        assert [w.pid for w in src._loader._iterator._workers] == pids
        assert isinstance(src._loader, torch.utils.data.DataLoader) and src._loader.persistent_workers
    assert_same(first, again)
    with OD.OPDataSource(lp, seed=1, num_workers=0) as fresh:
        fresh.load_state_dict(state)
        assert_same(first, batches(fresh, 2))


def test_a_bad_record_in_a_worker_is_one_line_naming_it(synth_lmdbs, tmp_path):
    import shutil

    import lmdb

    from openpose_train.caffe_layers.lmdb_reader import record_key
    coco, _ = synth_lmdbs
    broken = tmp_path / "broken"
    shutil.copytree(coco, broken)
    env = lmdb.open(str(broken), map_size=64 << 20)
    with env.begin(write=True) as txn:
        txn.put(record_key(1), b"\xff" * 12)
    env.close()
    with OD.OPDataSource(layer(str(broken)), seed=0, num_workers=1) as src:
        with pytest.raises(OD.OPDataError) as err:
            next(src)
    message = str(err.value)
    assert message.startswith("layer 'data': ") and f"{broken} record 0000001: not a Caffe Datum" in message
    assert "\n" not in message and "Traceback" not in message


def test_readers_of_one_lmdb_share_it_in_a_process(synth_lmdbs):
    """py-lmdb refuses a second open of one LMDB in a process: readers share its environment, which
    closes with the last of them (a source in the calling thread beside another reader of its LMDB)."""
    from openpose_train.caffe_layers.lmdb_reader import LmdbReader
    coco, _ = synth_lmdbs
    first = LmdbReader(coco)
    with OD.OPDataSource(layer(f"{coco};{coco}", probabilities="0.5;0.5"), seed=0, num_workers=0) as src:
        next(src)
        assert src.readers.source(0).env is first.env is src.readers.source(1).env
    second, env = LmdbReader(coco), first.env
    first.close()
    assert second.env is env and second[0].meta is not None      # still open: the second reader holds it
    second.close()
    third = LmdbReader(coco)                                       # closed with the last: opened anew
    assert third.env is not env and len(third) == len(src.readers.models) * 0 + src.sizes[0]
    third.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU label path)")
def test_cuda_label_device_and_pinned_batches_through_the_loader(synth_lmdbs):
    """--labels device on CUDA: images staged and copied on a side stream, labels rendered there, equal
    to the workers' labels; --labels workers on a GPU trainer: batches copied into page-locked memory."""
    coco, bg = synth_lmdbs
    lp = layer(str(coco), background=str(bg))
    with OD.OPDataSource(lp, seed=4, num_workers=1, label_device="workers", pin_memory=True) as a, \
            OD.OPDataSource(lp, seed=4, num_workers=1, label_device="cuda:0") as b:
        for x, y in zip(batches(a, 3), batches(b, 3)):
            assert x["image"].is_pinned() and x["label"].is_pinned()
            assert y["image"].device.type == "cuda" and y["label"].device.type == "cuda"
            assert torch.equal(x["image"], y["image"].cpu())
            torch.testing.assert_close(y["label"].cpu(), x["label"], atol=1e-5, rtol=0)
