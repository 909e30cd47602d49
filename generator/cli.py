"""``openpose-train prototxt`` (= ``python generate_prototxt.py``): render a model's training files.

Writes the deploy prototxt (under the file name OpenPose expects), ``pose_training.prototxt``,
``pose_solver.prototxt``, ``train_pose.sh`` and ``resume_train.sh`` into ``--out``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence

import click

from openpose_train.common.errors import reports_errors

from . import families, fork_check, render
from .output_paths import check_not_an_input
from .registry import get_model, load_skeleton_yaml, register

# LMDB folder name fragments -> registry dataset key (checked in order: hand_mpii before mpii).
NAME_HINTS = (("hand_mpii", "hand42"), ("hand42", "hand42"), ("hand_dome", "hand21"), ("hand21", "hand21"),
              ("face", "face70"), ("dome135", "dome135"), ("foot", "coco_foot"), ("wholebody", "wholebody"),
              ("whole_body", "wholebody"), ("mpii", "mpii"), ("posetrack", "posetrack"), ("coco", "coco"))


def absolute(path: Optional[str]) -> Optional[str]:
    """Paths written into the files are made absolute: train_pose.sh runs from the output folder."""
    return str(Path(path).expanduser().resolve()) if path else path


def parse_lmdb_arg(text: str):
    """``PATH[:PROBABILITY]`` -> (absolute path, probability or None)."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return absolute(path), float(tail)
        except ValueError:
            pass
    return absolute(text), None


def parse_crop(text: Optional[str]):
    """``368`` or ``432x368`` (width x height) -> (w, h)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise click.BadParameter(f"'{text}' is not N or WxH", param_hint="--crop-size")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise click.BadParameter(f"crop {w}x{h} must be positive multiples of the stride 8",
                                 param_hint="--crop-size")
    return w, h


def _dataset_from_lmdb(path: str, model) -> Optional[str]:
    """Dataset key of an existing LMDB: metadata dataset string + keypoint count of its first record."""
    from openpose_train.caffe_layers.lmdb_reader import LmdbTruncatedError
    try:
        from openpose_train.caffe_layers.datum import read_datum
        from .registry import get_dataset_layout
        value = fork_check.first_record(path)
        meta = read_datum(value).meta if value is not None else None
    except LmdbTruncatedError:     # a training file pointing at it would only fail later
        raise
    except Exception:   # unreadable or foreign LMDB: fall back to the name / explicit --lmdb-model
        return None
    if meta is None:
        return None
    for variant in model.variants:
        layout = get_dataset_layout(variant.dataset)
        if layout.lmdb_dataset == meta.dataset and layout.num_keypoints == meta.num_parts:
            return variant.dataset
    return None


def infer_op_model(path: str, model) -> str:
    """The fork model string for an LMDB given without ``--lmdb-model``."""
    by_dataset = {v.dataset: v.op_model for v in model.variants}
    key = _dataset_from_lmdb(path, model)
    if key is None:
        name = Path(path.rstrip("/")).name.lower()
        key = next((k for hint, k in NAME_HINTS if hint in name and k in by_dataset), None)
    if key is None and len(by_dataset) == 1:
        key = next(iter(by_dataset))
    if key is None and not Path(path).exists():
        raise click.ClickException(f"--lmdb {path} does not exist (and its name does not tell its dataset "
                                   "layout): build it first, or pass --lmdb-model")
    if key is None:
        raise click.ClickException(
            f"cannot tell which dataset layout the LMDB '{path}' holds; pass --lmdb-model with one of "
            f"{', '.join(by_dataset) and ', '.join(by_dataset.values()) or '(none for ' + model.name + ')'}")
    return by_dataset[key]


def _per_source(values: Sequence, count: int, name: str, default):
    if not values:
        return [default] * count
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise click.BadParameter(f"give it once or once per --lmdb ({count}), got {len(values)}", param_hint=name)
    return list(values)


def build_datasets(model, lmdbs, lmdb_models, scale_min, scale_max, sigma, max_rotation, occlusions):
    """--lmdb and its per-dataset options -> DatasetSpec tuple (None: keep the preset's sources).
    A probability left out stays None: the renderer shares what is left (render.resolve_sources)."""
    if not lmdbs:
        if lmdb_models or scale_min or scale_max or sigma or max_rotation or occlusions:
            raise click.UsageError("per-dataset options (--lmdb-model, --scale-min, ...) need --lmdb")
        return None
    parsed = [parse_lmdb_arg(t) for t in lmdbs]
    n = len(parsed)
    if lmdb_models and len(lmdb_models) != n:
        raise click.BadParameter(f"give one per --lmdb ({n}), got {len(lmdb_models)}", param_hint="--lmdb-model")
    models = list(lmdb_models) if lmdb_models else [infer_op_model(p, model) for p, _ in parsed]
    for op_model in models:
        model.variant(op_model)         # an unknown one raises UnknownModelError naming it
    cols = zip(_per_source(scale_min, n, "--scale-min", 1.0 / 3.0), _per_source(scale_max, n, "--scale-max", 1.5),
               _per_source(max_rotation, n, "--max-rotation", 45), _per_source(occlusions, n, "--occlusions", 2),
               _per_source(sigma, n, "--sigma", 7.0))
    return tuple(render.DatasetSpec(path, prob, op_model, model.variant(op_model).dataset, smin, smax, rot, occ, sig)
                 for (path, prob), op_model, (smin, smax, rot, occ, sig) in zip(parsed, models, cols))


def lmdb_warnings(sources: render.Sources) -> List[str]:
    """One line per training LMDB the Caffe fork cannot read (encoded) and one for those not built yet."""
    lines, missing = [], []
    for path in [d.lmdb for d in sources.datasets] + ([sources.background] if sources.background else []):
        try:
            encoded = fork_check.lmdb_is_encoded(path)
        except (OSError, ValueError):      # unreadable or foreign: training reports it with its cause
            continue
        if encoded:
            lines.append(f"warning: {path} {fork_check.ENCODED_WARNING}")
        elif encoded is None and not Path(path).exists():
            missing.append(path)
    if missing:
        lines.append(f"note: not built yet (train_pose.sh needs them): {', '.join(missing)}")
    return lines


def _preset_sources_help() -> str:
    """--dataset-dir help: the folder names each training preset reads."""
    parts = []
    for name, pre in families.PRESETS.items():
        if pre.recipe.datasets:
            names = [d.lmdb for d in pre.recipe.datasets] + ([pre.recipe.background_lmdb]
                                                             if pre.recipe.background_lmdb else [])
            parts.append(f"{name}: {', '.join(names)}")
    return "; ".join(parts)


def _lmdb_path(text: str) -> str:
    """The path of a ``--lmdb PATH[:PROB]`` value."""
    path, _, prob = text.rpartition(":")
    try:
        float(prob)
    except ValueError:
        return text
    return path or text


@click.command("prototxt", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", help="Registry model (BODY_25, BODY_25B, BODY_135, COCO_18, MPI_15, "
              "MPI_15_4, HAND_21, FACE_70, ...; `openpose-train models` lists them).")
@click.option("--yaml", "yaml_path", type=click.Path(exists=True, dir_okay=False),
              help="Custom skeleton YAML (replaces --model).")
@click.option("--preset", help="Network preset: " + ", ".join(families.PRESETS) + " (default per model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder [out/<model>_<preset>].")
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--crop-size", help="N or WxH (multiples of 8).")
@click.option("--lmdb", "lmdbs", multiple=True, metavar="PATH[:PROBABILITY]",
              help="Training LMDB (repeatable; replaces the preset's sources). LMDBs without a probability share "
                   "1 - prob_only_background - the given ones equally; given ones plus prob_only_background must "
                   "sum to 1. Encoded (--encoded) LMDBs train with openpose-train only, not the Caffe fork.")
@click.option("--lmdb-model", "lmdb_models", multiple=True,
              help="Fork model string per --lmdb (COCO_25_17, COCO_25B_23, ...); inferred when omitted.")
@click.option("--scale-min", multiple=True, type=float, help="Per --lmdb (or once for all).")
@click.option("--scale-max", multiple=True, type=float, help="Per --lmdb (or once for all).")
@click.option("--sigma", multiple=True, type=float, help="Gaussian sigma in input pixels, per --lmdb.")
@click.option("--max-rotation", multiple=True, type=float, help="Max rotation (degrees), per --lmdb.")
@click.option("--occlusions", multiple=True, type=int,
              help="Max background occlusions, per --lmdb; 0 without a background LMDB (the Caffe fork copies "
                   "occluders from background images).")
@click.option("--dataset-dir", default="dataset", show_default=True,
              help="Folder holding the preset's LMDBs when no --lmdb is given. Paths are written absolute. "
                   "Folder names per preset: " + _preset_sources_help() + ".")
@click.option("--drop-source", "drop_sources", multiple=True, metavar="NAME",
              help="Leave out one of the preset's sources (its folder name, e.g. lmdb_face_frgc; repeatable); "
                   "the rest keep their relative probabilities, scaled to 1 - prob_only_background.")
@click.option("--background-lmdb", help="Background (no people) LMDB; default: the preset's with its own LMDBs, "
              "none with --lmdb ('' = none).")
@click.option("--prob-only-background", type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Probability of a background-only batch [the preset's with a background LMDB, else 0].")
@click.option("--media-directory", help="Image folder for DOME records.")
@click.option("--base-lr", type=float)
@click.option("--lr-policy", type=click.Choice(["fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid"]),
              default="multistep", show_default=True)
@click.option("--stepvalue", "stepvalues", multiple=True, type=int, help="multistep iterations (repeatable).")
@click.option("--stepsize", type=int, help="step policy period.")
@click.option("--gamma", type=float, default=0.5, show_default=True)
@click.option("--power", type=float, help="poly/inv policy power.")
@click.option("--max-iter", type=int, default=1000000, show_default=True)
@click.option("--snapshot-interval", type=int, default=2000, show_default=True)
@click.option("--snapshot-prefix", default="model/pose", show_default=True)
@click.option("--display", type=int, default=20, show_default=True)
@click.option("--gpus", default="0", show_default=True, help="Default -gpu of train_pose.sh; '' = CPU.")
@click.option("--vgg-weights", default=None,
              help="Initial weights train_pose.sh passes as -weights (it refuses to start while they are missing). "
                   "Default: the preset's ImageNet front end, dataset/vgg/VGG_ILSVRC_19_layers.caffemodel (make it "
                   "with `openpose-train vgg " + render.TORCHVISION_VGG19 + " PATH`) or, for mobilenet_v2, "
                   "dataset/mobilenet/mobilenet_v2.caffemodel (`openpose-train mobilenet`).")
@click.option("--no-vgg", is_flag=True, help="No -weights: train from random initialisation (= --vgg-weights '').")
@click.option("--random-seed", type=int, default=render.DEFAULT_RANDOM_SEED, show_default=True,
              help="Solver random_seed (reruns reproduce); -1 leaves it out (a new seed each run, as Caffe).")
@click.option("--val-images", type=click.Path(file_okay=False),
              help="Held-out image folder that train_pose.sh scores every --val-interval iterations.")
@click.option("--val-annotations", type=click.Path(dir_okay=False), help="COCO keypoint JSON of --val-images.")
@click.option("--val-interval", type=click.IntRange(min=1),
              help="train --val-interval: iterations between evaluations (the best snapshot is kept).")
@click.option("--val-metric", default="body", show_default=True, help="train --val-metric.")
@click.option("--stages", help="Stage counts: 'PAF,HEAT' (BODY_25 family) or N (COCO/hand/face).")
@click.option("--width", type=click.IntRange(min=1), help="Width of the refinement-stage convs.")
@click.option("--deploy-only", is_flag=True, help="Write only the deploy prototxt.")
@reports_errors
def prototxt(model_name, yaml_path, preset, out_dir, batch_size, crop_size, lmdbs, lmdb_models, scale_min,
             scale_max, sigma, max_rotation, occlusions, dataset_dir, background_lmdb, prob_only_background,
             media_directory, base_lr, lr_policy, stepvalues, stepsize, gamma, power, max_iter, snapshot_interval,
             snapshot_prefix, display, gpus, vgg_weights, no_vgg, random_seed, stages, width, deploy_only,
             drop_sources, val_images, val_annotations, val_interval, val_metric):
    """Render deploy/training/solver prototxts and train_pose.sh / resume_train.sh for a model."""
    if yaml_path and model_name:
        raise click.UsageError("give --model NAME or --yaml SKELETON, not both")
    if yaml_path and re.search(r'["$`\\]', Path(yaml_path).name):   # train_pose.sh passes it in double quotes
        raise click.BadParameter(f"the file name {Path(yaml_path).name!r} holds a character the generated scripts "
                                 "would expand (\" $ ` \\): rename the file", param_hint="--yaml")
    if yaml_path:
        model = register(load_skeleton_yaml(yaml_path))
        if not model.variants and not deploy_only:
            raise click.ClickException(
                f"{yaml_path}: variants: none, so nothing can be trained: map a dataset layout onto the parts "
                "(docs/formats.md §YAML skeletons), or give --deploy-only for the deploy prototxt alone")
    elif model_name:
        model = get_model(model_name)
    else:
        raise click.UsageError("give --model NAME or --yaml SKELETON")
    preset_name = preset or families.default_preset_name(model.name)
    families.get_preset(preset_name)
    paf_stages = heat_stages = None
    if stages:
        parts = [s.strip() for s in stages.split(",")]
        try:
            numbers = [int(s) for s in parts]
        except ValueError:
            raise click.BadParameter(f"'{stages}' is not N or PAF,HEAT", param_hint="--stages") from None
        paf_stages, heat_stages = (numbers[0], numbers[-1]) if len(numbers) <= 2 else (None, None)
        if len(numbers) > 2:
            raise click.BadParameter(f"'{stages}' is not N or PAF,HEAT", param_hint="--stages")
    options = dict(
        batch_size=batch_size, crop_size=parse_crop(crop_size), dataset_dir=absolute(dataset_dir),
        datasets=build_datasets(model, lmdbs, lmdb_models, scale_min, scale_max, sigma, max_rotation,
                                occlusions), drop_sources=tuple(drop_sources),
        background_lmdb=absolute(background_lmdb), prob_only_background=prob_only_background,
        media_directory=media_directory, base_lr=base_lr, lr_policy=lr_policy,
        stepvalues=tuple(stepvalues) if stepvalues else None, stepsize=stepsize, gamma=gamma, power=power,
        max_iter=max_iter, snapshot_interval=snapshot_interval, snapshot_prefix=snapshot_prefix,
        display=display, gpus=gpus,
        vgg_weights="" if no_vgg else absolute(render.initial_weights(preset_name, vgg_weights)),
        random_seed=random_seed, paf_stages=paf_stages,
        heat_stages=heat_stages, width=width, val_images=absolute(val_images) or "",
        val_annotations=absolute(val_annotations) or "", val_interval=val_interval or 0, val_metric=val_metric)
    out = Path(out_dir or f"out/{model.name}_{preset_name}")
    check_not_an_input(out, [("--lmdb", _lmdb_path(text)) for text in lmdbs] +
                       [("--background-lmdb", background_lmdb), ("--yaml", yaml_path)])
    if yaml_path:     # the scripts pass the skeleton to `openpose-train train`; the prototxts record it
        options["model_yaml"] = Path(yaml_path).name
    if deploy_only:
        text = render.render_deploy(model.name, preset_name, **options)
        paths = {"deploy": render.write_atomic(out / render.file_names(model.name)["deploy"], text)}
    else:
        paths = render.render_model_files(model.name, out, preset_name, **options)
        if yaml_path:
            paths["skeleton"] = render.write_atomic(out / Path(yaml_path).name, Path(yaml_path).read_text())
        sources = render.training_sources(model.name, preset_name, **options)
    if not deploy_only:
        for line in sources.notes + tuple(lmdb_warnings(sources)):
            click.echo(line, err=True)
        weights = options["vgg_weights"]
        if weights and not Path(weights).is_file():
            click.echo(f"note: initial weights {weights} not found (train_pose.sh refuses to start without them): "
                       f"make them with `{render.vgg_command(weights, preset_name)}`, or regenerate with --no-vgg", err=True)
    click.echo(f"{model.name} (preset {preset_name}, {model.num_channels} output channels) -> {out}")
    for kind, path in paths.items():
        click.echo(f"  {kind:14s} {path}")
    if not deploy_only:
        click.echo(f"train: bash {out / 'train_pose.sh'} [GPUS]   (CAFFE=/path/to/caffe to use the Caffe fork)")
