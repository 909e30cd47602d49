"""Regenerate ``experimental_models/``: openpose_train's experimental deploy prototxts and model cards.

    python -m openpose_train.generator.experimental [--out DIR] [--check]

Layout follows the upstream repository: ``<experiment>/<model dir>/pose_deploy.prototxt`` (plus our
``MODEL_CARD.md`` beside it), so a ``<model dir>`` folder can be copied into OpenPose's
``models/pose/`` as it is.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

import click

from . import families, render
from .registry import get_model

# (preset, registry model) of each upstream experiment folder.
EXPERIMENTS = (
    ("body_25", "BODY_25"),
    ("1_25BBkg", "BODY_25B"),
    ("1_25BSuperModel11FullVGG", "BODY_25B"),
    ("100_135AlmostSameBatchAllGPUs", "BODY_135"),
)
# openpose_train's experimental_models/README: every released snapshot is pose_iter_464000.
RELEASED_ITERATIONS = {"body_25": 584000}
DEFAULT_RELEASED_ITERATIONS = 464000
# The repository's folder (editable install / checkout); ./experimental_models for a site-packages install.
_REPO_OUT = Path(__file__).resolve().parents[1] / "experimental_models"
DEFAULT_OUT = _REPO_OUT if _REPO_OUT.is_dir() else Path("experimental_models")


def experiment_files(preset_name: str, model_name: str) -> Dict[str, str]:
    """{relative path: text} for one experiment: its deploy prototxt and model card."""
    model = get_model(model_name)
    preset = families.get_preset(preset_name)
    net = render.build_net(model_name, preset_name)
    folder = f"{preset.upstream_folder}/{Path(model.model_folder).name}"
    deploy = render.render_deploy(model_name, preset_name)
    datasets = render.default_datasets(model_name, preset_name)
    recipe = preset.recipe
    card = render.environment().get_template("MODEL_CARD.md.j2").render(
        model=model, preset=preset, recipe=recipe, datasets=datasets, folder=folder,
        params=net.parameter_count(), layers=len(net.layers),
        heat=model.num_parts + int(model.has_background), pafs=2 * model.num_pafs,
        stage_counts=_stage_counts(net), cpu_ok=model.openpose_cpu_connector,
        iterations=RELEASED_ITERATIONS.get(preset_name, DEFAULT_RELEASED_ITERATIONS),
        solver=render.GeneratorOptions(), fmt=lambda v: "%.3g" % v,
        stepvalues=render.DEFAULT_STEPVALUES)
    return {f"{folder}/{model.deploy_name}": deploy, f"{folder}/MODEL_CARD.md": card}


def _stage_counts(net) -> Dict[str, int]:
    counts = {"paf": 0, "heat": 0}
    for out in net.stage_outputs:
        counts[out.branch] += 1
    return counts


def all_files() -> Dict[str, str]:
    files: Dict[str, str] = {}
    for preset_name, model_name in EXPERIMENTS:
        files.update(experiment_files(preset_name, model_name))
    return files


def write_experimental_models(out_dir=DEFAULT_OUT) -> List[Path]:
    """Write every experiment's files under ``out_dir`` (atomic writes); returns the paths."""
    return [render.write_atomic(Path(out_dir) / rel, text) for rel, text in all_files().items()]


def differences(out_dir=DEFAULT_OUT) -> List[str]:
    """Relative paths whose content under ``out_dir`` differs from a fresh generation (or is missing)."""
    diff = []
    for rel, text in all_files().items():
        path = Path(out_dir) / rel
        if not path.is_file() or path.read_text() != text:
            diff.append(rel)
    return diff


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=str(DEFAULT_OUT), show_default=True)
@click.option("--check", is_flag=True, help="Only compare; exit 1 when a file differs.")
def main(out_dir, check):
    """Regenerate experimental_models/ (deploy prototxts + MODEL_CARD.md)."""
    if check:
        diff = differences(out_dir)
        for rel in diff:
            click.echo(f"differs: {rel}")
        sys.exit(1 if diff else 0)
    for path in write_experimental_models(out_dir):
        click.echo(str(path))


if __name__ == "__main__":
    main()
