"""Label, augmentation and post-processing outputs pinned before the model-string rules moved
into the registry (issue 13): maskFeet pairs, the missing threshold, ROI codes, global and "-1"
masking, MASK_IS_BACKGROUND, the MPII_59 centre swap and the person filter's foot / BODY_135
groups.

``compute(group, workdir)`` returns ``{case name: array}``; ``tests/data/registry_golden.json``
holds the sha256 of each array's bytes (with dtype and shape) computed from the code before the
move, and ``tests/data/registry_golden.npz`` a few small arrays raw, so that a difference shows
where. Groups: ``synthetic`` (always runs) and ``real`` (LMDBs built from the extracts in
the third-party sample data, found as tests/conftest.py finds it; only hashes are stored, no
third-party pixels).

Regenerate (only when a label rule changes on purpose)::

    .venv/bin/python tests/registry_golden.py --write
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN_JSON = HERE / "data" / "registry_golden.json"
GOLDEN_NPZ = HERE / "data" / "registry_golden.npz"
#: arrays at most this many bytes are stored raw as well as hashed (synthetic group only)
RAW_LIMIT = 4096

POSTPROCESS_MODELS = ("BODY_25", "BODY_135", "BODY_25B", "COCO_18", "BODY_95", "BODY_65")
REAL_SOURCES = {
    # dataset key: (json path parts, image folder parts, fork model strings)
    "coco": (("data", "minicoco", "annotations", "person_keypoints_train2017.json"),
             ("data", "minicoco", "images", "train2017"),
             ("COCO_25_17", "COCO_23_17", "COCO_18", "COCO_25B_17", "COCO_135_17", "COCO_95_17")),
    "mpii": (("data", "mpii", "test_mpii.json"), ("data", "mpii"), ("MPII_25B_16", "MPII_135_16")),
    "wholebody": (("data", "coco_wholebody", "evaluation", "example_gt.json"),
                  ("data", "coco_wholebody", "images"), ("COCO_25B_133", "COCO_135_133", "COCO_25_133")),
}


def digest(array) -> dict:
    a = np.ascontiguousarray(array)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


# ----------------------------------------------------------------------------- synthetic inputs

def _people(rng, n_people, n_parts, width, height, visibility=(0, 1, 1, 1, 1, 2, 3, 4)):
    people = np.zeros((n_people, n_parts, 3), np.float32)
    people[..., 0] = rng.uniform(-10, width + 10, (n_people, n_parts))
    people[..., 1] = rng.uniform(-10, height + 10, (n_people, n_parts))
    people[..., 2] = rng.choice(np.asarray(visibility, np.float32), (n_people, n_parts))
    return people


def _mask_grid(rng, grid_w, grid_h):
    mask = np.full((grid_h, grid_w), 255, np.uint8)
    for _ in range(3):
        x, y = rng.integers(0, grid_w - 4), rng.integers(0, grid_h - 4)
        mask[y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = rng.integers(0, 200)
    return mask


def label_cases():
    """render_labels for every fork model string the renderer supports, synthetic people."""
    from openpose_train.caffe_layers import labels as L
    from openpose_train.generator.registry import get_training_variant, list_training_variants
    out = {}
    for op_model in list_training_variants():
        model, variant = get_training_variant(op_model)
        try:
            L.label_layout(model, variant)
        except L.LabelError:
            continue
        rng = np.random.default_rng(sum(map(ord, op_model)))
        for case, (n_people, with_mask) in {"three": (3, True), "one": (1, False)}.items():
            people = _people(rng, n_people, model.num_parts, 184, 184)
            mask = _mask_grid(rng, 23, 23) if with_mask else None
            label = L.render_labels(model, variant, people, mask, (23, 23), 8, 7.0)
            out[f"labels/{op_model}/{case}"] = label
    return out


def _augment(rng_seed, config, sample, op_model, background=None):
    """One augmentation with the rules of ``op_model``'s variant (before the move: augment_sample
    with ``mask_is_background = op_model in ("MPII_65_42", "CAR_12")``)."""
    from openpose_train.caffe_layers import augment as A
    from openpose_train.generator.registry import get_training_variant
    model, variant = get_training_variant(op_model)
    return A.augment_variant_sample(np.random.default_rng(rng_seed), config, sample, model, variant,
                                    background=background)


def augment_cases():
    """augment_sample for the model strings with their own augmentation rules, synthetic samples."""
    from openpose_train.caffe_layers import augment as A
    from openpose_train.generator.registry import get_training_variant
    out = {}
    for op_model in ("MPII_59", "HAND_135_21", "COCO_25_17", "COCO_23_17", "MPII_65_42", "CAR_12",
                     "FACE_135_70", "COCO_135_17"):
        model, _ = get_training_variant(op_model)
        # centre swaps by part count are defined for 23, 25 and 59 parts only (swapCenterPoint)
        config = A.AugmentConfig(stride=8, crop_x=184, crop_y=184, scale_prob=1, scale_mins=(0.5,),
                                 scale_maxs=(1.5,), target_dist=0.6, center_perterb_max=20,
                                 center_swap_prob=0.7 if model.num_parts in (23, 25, 59) else 0.0,
                                 max_occlusions=(2,))
        rng = np.random.default_rng(sum(map(ord, op_model)))
        h, w = 240, 320
        image = rng.integers(0, 255, (h, w, 3), np.uint8)
        mask = np.full((h, w), 255, np.uint8)
        mask[40:90, 60:150] = 0
        people = _people(rng, 2, model.num_parts, w, h, visibility=(0, 1, 1, 1, 2))
        background = rng.integers(0, 255, (300, 400, 3), np.uint8)
        for seed in range(4):
            # small scale_self -> large scale multiplier: the centre swaps' "big" branches run
            sample = A.Sample(image=image, mask_miss=mask, people=people, objpos=np.float32([w / 2, h / 2]),
                              scale_self=(0.15, 0.3, 0.6, 0.9)[seed], num_other_people=0)
            aug = _augment(seed, config, sample, op_model, background=background if seed % 2 else None)
            key = f"augment/{op_model}/{seed}"
            out[key + "/image"] = aug.image
            out[key + "/mask_grid"] = aug.mask_grid
            out[key + "/people"] = aug.people
            out[key + "/center"] = np.float64(aug.params.center)
    return out


def _maps_from_people(model, people, grid):
    from openpose_train.caffe_layers import labels as L
    from openpose_train.generator.registry import TrainingVariant
    # targets only: an identity variant with no masking rules renders every model (BODY_65 too)
    variant = TrainingVariant(op_model=f"GOLDEN_{model.name}", dataset="golden", category="DOME",
                              num_lmdb_parts=model.num_parts, sources=tuple((i,) for i in range(model.num_parts)))
    label = L.render_labels(model, variant, people, None, (grid, grid), 4, 7.0)
    return L.label_targets_to_net_output(model, label)


def _filter_people_for(model, rng, size):
    """People laid out in a grid of cells, each with a subset of parts that tests a count rule."""
    n = model.num_parts
    parts = np.arange(n)
    subsets = [parts[:min(n, 19)], parts[:4], parts[:5], parts[:3]]
    if n >= 25:
        feet = np.arange(19, 25)
        subsets += [np.r_[parts[:4], feet], np.r_[parts[:5], feet[:3]], np.r_[parts[:2], feet]]
    if n >= 135:
        subsets += [np.arange(65, 135), np.r_[parts[:3], np.arange(25, 45)],
                    np.r_[parts[:2], np.arange(45, 65), np.arange(65, 75)], np.r_[parts[:1], np.arange(65, 135)]]
    if n > 65:
        subsets += [np.r_[parts[:3], np.arange(25, 40)]]
    cells = int(np.ceil(np.sqrt(len(subsets))))
    cell = size / cells
    people = np.zeros((len(subsets), n, 3), np.float32)
    people[..., 2] = 4
    for i, subset in enumerate(subsets):
        cx, cy = (i % cells) * cell, (i // cells) * cell
        people[i, subset, 0] = cx + rng.uniform(0.1, 0.9, len(subset)) * cell
        people[i, subset, 1] = cy + rng.uniform(0.1, 0.9, len(subset)) * cell
        people[i, subset, 2] = 1
    return people


def postprocess_cases():
    """parse_people (and the plain reference) on maps rendered from people that test the filter."""
    from openpose_train.generator.registry import get_model
    from openpose_train.validation.postprocess import parse_people
    from openpose_train.validation.postprocess_reference import parse_people_reference
    out = {}
    for name in POSTPROCESS_MODELS:
        model = get_model(name)
        rng = np.random.default_rng(sum(map(ord, name)))
        people = _filter_people_for(model, rng, 368)
        maps = _maps_from_people(model, people, 92)
        for maximize in (False, True):
            kp, scores = parse_people(model, maps, scale=4.0, maximize_positives=maximize)
            out[f"postprocess/{name}/max{int(maximize)}/keypoints"] = kp
            out[f"postprocess/{name}/max{int(maximize)}/scores"] = scores
            kp_ref, scores_ref = parse_people_reference(model, maps, scale=4.0, maximize_positives=maximize)
            out[f"postprocess_reference/{name}/max{int(maximize)}/keypoints"] = kp_ref
            out[f"postprocess_reference/{name}/max{int(maximize)}/scores"] = scores_ref
    return out


# ----------------------------------------------------------------------------- OPData on LMDBs

def _layer(source, op_model, num_parts, batch=2):
    """The OPData layer of the pinned cases (test_op_data.layer's fields, copied on purpose: pinned
    inputs must not follow edits made for other tests)."""
    from openpose_train.caffe_layers import caffe_pb2
    lp = caffe_pb2.LayerParameter(name="data", type="OPData", top=["image", "label"])
    lp.data_param.batch_size = batch
    tp = lp.op_transform_param
    tp.stride, tp.crop_size_x, tp.crop_size_y = 8, 184, 184
    tp.target_dist, tp.scale_prob, tp.scale_mins, tp.scale_maxs = 0.6, 1, "0.5", "1.5"
    tp.center_perterb_max, tp.max_degree_rotations, tp.number_max_occlusions = 40, "45", "2"
    tp.center_swap_prob = 0.5 if num_parts in (23, 25) else 0.0
    tp.sources, tp.models, tp.probabilities = str(source), op_model, "1"
    return lp


def opdata_cases(lmdb, op_models, prefix, batches=3):
    """OPDataSource batches (image, label) and the post-processing of the label targets."""
    from openpose_train.caffe_layers import labels as L
    from openpose_train.caffe_layers import op_data as OD
    from openpose_train.generator.registry import get_training_variant
    from openpose_train.validation.postprocess import parse_people
    out = {}
    for op_model in op_models:
        model, _ = get_training_variant(op_model)
        with OD.OPDataSource(_layer(lmdb, op_model, model.num_parts), seed=11, num_workers=0) as src:
            for b in range(batches):
                batch = next(src)
                key = f"{prefix}/{op_model}/{b}"
                out[key + "/image"] = batch["image"].numpy()
                label = batch["label"].numpy()
                out[key + "/label"] = label
                for i in range(label.shape[0]):
                    maps = L.label_targets_to_net_output(model, label[i])
                    if model.runtime_pairs:
                        kp, scores = parse_people(model, np.ascontiguousarray(maps), scale=8.0)
                        out[f"{key}/{i}/people"] = kp
                        out[f"{key}/{i}/scores"] = scores
    return out


def synthetic_lmdb_cases(workdir: Path):
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
    from openpose_train.dataset_tools.synth import SynthConfig, make_synthetic_dataset
    res = make_synthetic_dataset(workdir / "synth", SynthConfig(images=6, seed=3, width=320, height=240))
    lmdb = workdir / "synth_coco"
    build_lmdb(res.splits["train2017"], res.image_dirs["train2017"], lmdb, BuildOptions(workers=1, progress=False))
    return opdata_cases(lmdb, ("COCO_25_17", "COCO_135_17", "COCO_25B_17"), "opdata_synth", batches=2)


def real_cases(shared_root: Path, workdir: Path):
    from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb
    out = {}
    for dataset, (json_parts, image_parts, op_models) in REAL_SOURCES.items():
        lmdb = workdir / f"real_{dataset}"
        build_lmdb(shared_root.joinpath(*json_parts), shared_root.joinpath(*image_parts), lmdb,
                   BuildOptions(dataset=dataset, workers=1, progress=False))
        out.update(opdata_cases(lmdb, op_models, f"opdata_real/{dataset}"))
    return out


def compute(group: str, workdir: Path, shared_root: Path = None):
    workdir.mkdir(parents=True, exist_ok=True)
    if group == "synthetic":
        out = {}
        out.update(label_cases())
        out.update(augment_cases())
        out.update(postprocess_cases())
        out.update(synthetic_lmdb_cases(workdir))
        return out
    if group == "real":
        return real_cases(shared_root, workdir)
    raise ValueError(group)


def main(argv):
    if argv != ["--write"]:
        print(__doc__)
        return 2
    from conftest import SHARED as shared_root      # the one place that knows where the sample data is
    table, raw = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in ("synthetic", "real"):
            arrays = compute(group, Path(tmp) / group, shared_root)
            table[group] = {k: digest(v) for k, v in arrays.items()}
            if group == "synthetic":
                raw.update({k: np.ascontiguousarray(v) for k, v in arrays.items() if np.asarray(v).nbytes <= RAW_LIMIT})
    GOLDEN_JSON.parent.mkdir(exist_ok=True)
    tmp_json, tmp_npz = GOLDEN_JSON.with_suffix(".json.tmp"), GOLDEN_NPZ.with_suffix(".tmp.npz")
    tmp_json.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    np.savez_compressed(tmp_npz, **raw)
    os.replace(tmp_json, GOLDEN_JSON)          # written whole, then renamed: nothing half-written
    os.replace(tmp_npz, GOLDEN_NPZ)
    print(f"{sum(map(len, table.values()))} arrays hashed, {len(raw)} stored raw -> {GOLDEN_JSON.name}, {GOLDEN_NPZ.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
