"""Click commands of the dataset tools: ``synth``, ``lmdb``, ``inspect`` (registered in openpose_train/cli.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from openpose_train.common.errors import reports_errors

# user-facing dataset names -> registry keys (hand / face pick by keypoint count)
DATASET_CHOICES = ("coco", "coco_foot", "wholebody", "mpii", "hand", "face", "hand21", "hand42", "face70",
                   "posetrack")


def resolve_dataset_key(name: str, json_path) -> str:
    """Registry dataset key for a ``--dataset`` value; ``hand`` is hand21 or hand42 by keypoint count."""
    if name == "face":
        return "face70"
    if name != "hand":
        return name
    if json_path is None:
        return "hand21"
    try:
        with open(json_path) as f:
            doc = json.load(f)
        first = next(a for a in doc["annotations"] if a.get("keypoints"))
        return "hand42" if len(first["keypoints"]) == 3 * 42 else "hand21"
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return "hand21"          # the build itself reports what is wrong with the file


@click.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--images", "n_images", default=100, show_default=True, type=click.IntRange(1), help="number of images")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--width", default=256, show_default=True, type=click.IntRange(32))
@click.option("--height", default=256, show_default=True, type=click.IntRange(32))
@click.option("--max-people", default=4, show_default=True, type=click.IntRange(1))
@click.option("--val-fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="share of images written to val2017")
@click.option("--foot", is_flag=True, help="23 keypoints (COCO + 6 foot) in 'keypoints'")
@click.option("--wholebody", is_flag=True, help="add COCO-WholeBody fields (foot/face/hand kpts)")
@click.option("--person-height", nargs=2, type=click.FloatRange(0.05, 1.0), default=None,
              metavar="MIN MAX", help="person height range as a fraction of the image height [0.25 0.9]")
@reports_errors
def synth(out, n_images, seed, width, height, max_people, val_fraction, foot, wholebody, person_height):
    """Write a synthetic COCO-format stick-figure dataset (deterministic by seed)."""
    from .synth import SynthConfig, make_synthetic_dataset
    sizes = {}
    if person_height:
        low, high = person_height
        if low > high:
            raise click.BadParameter(f"MIN {low} is above MAX {high}", param_hint="--person-height")
        sizes = dict(min_person_height=low, max_person_height=high)
    config = SynthConfig(images=n_images, seed=seed, width=width, height=height, max_people=max_people,
                         val_fraction=val_fraction, foot=foot, wholebody=wholebody, **sizes)
    result = make_synthetic_dataset(out, config, progress=sys.stderr.isatty())
    for split, path in result.splits.items():
        click.echo(f"{split}: {result.num_images[split]} images in {result.image_dirs[split]}, annotations {path}")
    click.echo(f"{result.num_people} people")


@click.command("lmdb")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="COCO-style keypoint JSON (MPII: the list format); optional with --background")
@click.option("--images", "images_dir", required=True, type=click.Path(file_okay=False), help="image folder")
@click.option("--out", required=True, type=click.Path(), help="LMDB folder to create")
@click.option("--dataset", default="coco", show_default=True, metavar="NAME",
              help=f"keypoint layout: {', '.join(DATASET_CHOICES)}, or one that --model-yaml defines")
@click.option("--model-yaml", type=click.Path(dir_okay=False),
              help="YAML skeleton whose dataset_layouts --dataset may name (docs/formats.md §YAML skeletons)")
@click.option("--background", is_flag=True,
              help="negatives LMDB: JSON images without people, or every image of --images")
@click.option("--encoded", is_flag=True, help="store JPEG-encoded images (smaller; our data layer reads both, "
              "but the OpenPose Caffe fork cannot: it segfaults on encoded datums, so leave this off for CAFFE=...)")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="record shuffle seed")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0),
              help="decode/mask threads beside the writing thread (0 = one per CPU, at most 4)")
@click.option("--txn-mb", default=64, show_default=True, type=click.IntRange(1), help="write transaction size")
@click.option("--overwrite", is_flag=True, help="replace an existing --out")
@click.option("--quiet", is_flag=True, help="no progress bar")
@reports_errors
def lmdb(json_path, images_dir, out, dataset, model_yaml, background, encoded, seed, workers, txn_mb, overwrite,
         quiet):
    """COCO-style JSON + images to an OpenPose training LMDB (resumable: rerun after an interruption)."""
    from .lmdb_writer import BuildOptions, build_lmdb
    if json_path is None and not background:
        raise click.ClickException("--json is required (unless --background)")
    known = list(DATASET_CHOICES)
    if model_yaml:         # registers the layouts the skeleton defines, so that the writer reads them
        from openpose_train.generator.skeleton import defined_dataset_layouts
        known += defined_dataset_layouts(model_yaml)
    if dataset not in known:
        raise click.BadParameter(f"'{dataset}' is not one of {', '.join(known)}"
                                 + ("" if model_yaml else " (a YAML skeleton's layouts need --model-yaml)"),
                                 param_hint="--dataset")
    options = BuildOptions(dataset=resolve_dataset_key(dataset, json_path), seed=seed, encoded=encoded,
                           background=background, workers=workers, txn_bytes=txn_mb << 20,
                           overwrite=overwrite, progress=not quiet)
    summary = build_lmdb(json_path, images_dir, out, options)
    for line in summary.lines():
        click.echo(line)
    if not summary.finished:
        sys.exit(130)


@click.command("inspect")
@click.argument("lmdb_path", type=click.Path(exists=True))
@click.option("--model", default="BODY_25", show_default=True, help="model whose skeleton / labels to draw")
@click.option("--n", "count", default=16, show_default=True, type=click.IntRange(1), help="records to show")
@click.option("--start", default=0, show_default=True, type=click.IntRange(0), help="first record")
@click.option("--out", default="grid.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--labels", is_flag=True,
              help="also render augmented heatmaps and PAFs through the OPData layer (when installed)")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="augmentation seed for --labels")
@click.option("--model-yaml", type=click.Path(dir_okay=False),
              help="draw this YAML skeleton (its layouts known too) instead of --model")
@reports_errors
def inspect(lmdb_path, model, count, start, out, labels, seed, model_yaml):
    """Render LMDB records (image, mask, keypoints; optionally labels) into one PNG grid."""
    from openpose_train.generator.output_paths import check_not_an_input

    from .inspect import render_grid
    if model_yaml:
        from openpose_train.generator.registry import load_skeleton_yaml
        model = load_skeleton_yaml(model_yaml, register_model=True).name
    lmdb_files = [Path(lmdb_path) / name for name in ("data.mdb", "lock.mdb")] if Path(lmdb_path).is_dir() else []
    check_not_an_input(out, [("LMDB_PATH", path) for path in [lmdb_path, *lmdb_files]])
    info = render_grid(lmdb_path, Path(out), model=model, count=count, start=start, labels=labels, seed=seed)
    click.echo(info)
