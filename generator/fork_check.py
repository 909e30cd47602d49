"""``openpose-train fork-check TRAINING_PROTOTXT``: refuse a training net the OpenPose Caffe fork would crash on.

The fork reads ``datum.data`` as raw image planes, so it segfaults on the first record of an
``--encoded`` (JPEG) LMDB; it copies occluders out of a background image, so occlusions without a
background LMDB crash it in ``doOcclusions`` (docs/compatibility.md). Our engine handles both, so the
generated ``train_pose.sh`` runs this check only when ``CAFFE`` names the fork.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import click

from openpose_train.common.errors import reports_errors

ENCODED_WARNING = ("is an encoded (JPEG) LMDB: the OpenPose Caffe fork cannot read it (it segfaults on the "
                   "first record); openpose-train train can. Rebuild it without --encoded for the fork")


def first_record(path) -> Optional[bytes]:
    """The first value of the LMDB at ``path``; ``None`` when nothing is there yet or it has no records.
    An unreadable LMDB raises ``LmdbReadError``."""
    from openpose_train.caffe_layers.lmdb_reader import LmdbReader

    if not Path(path).exists():
        return None
    with LmdbReader(path) as reader:
        return reader.first_value()


def lmdb_is_encoded(path) -> Optional[bool]:
    """The ``encoded`` flag of the first record (``None``: no record yet); a foreign record raises
    ``DatumError``, an unreadable LMDB ``LmdbReadError``."""
    from openpose_train.caffe_layers.datum import parse_datum

    value = first_record(path)
    return None if value is None else bool(parse_datum(value).encoded)


def _max_occlusions(text: str) -> int:
    try:
        return max((int(float(v)) for v in text.split(";") if v.strip()), default=0)
    except ValueError:
        return 0        # the fork's own parser reports a malformed list


def fork_problems(net_param) -> List[str]:
    """One line per known fork precondition that ``net_param`` (a NetParameter) breaks."""
    from openpose_train.caffe_layers.datum import DatumError
    from openpose_train.caffe_layers.lmdb_reader import LmdbReadError

    problems = []
    for layer in net_param.layer:
        if layer.type != "OPData":
            continue
        p = layer.op_transform_param
        paths = [s for s in p.sources.split(";") if s] + ([p.source_background] if p.source_background else [])
        for path in paths:
            try:
                encoded = lmdb_is_encoded(path)
            except (LmdbReadError, DatumError) as exc:
                problems.append(f"layer {layer.name}: {exc}")
                continue
            if encoded is None and not Path(path).exists():
                problems.append(f"layer {layer.name}: LMDB {path} does not exist")
            elif encoded:
                problems.append(f"layer {layer.name}: {path} {ENCODED_WARNING}")
        if not p.source_background and _max_occlusions(p.number_max_occlusions) > 0:
            problems.append(f"layer {layer.name}: number_max_occlusions \"{p.number_max_occlusions}\" without a "
                            "source_background (the fork copies occluders from background images): set them to 0")
    return problems


def skeleton_problems(training_prototxt) -> List[str]:
    """A net generated from a YAML skeleton: the fork has OpenPose's model tables compiled in, so it cannot
    train it; and the YAML the generator copied beside the prototxt must be the one it was made from."""
    from .registry import SkeletonError
    from .skeleton import generated_from_problem, load_skeleton_yaml, recorded_skeletons

    text = Path(training_prototxt).read_text(encoding="utf-8", errors="replace")
    problems = []
    for record in recorded_skeletons(text):
        problems.append(f"generated from the YAML skeleton {record.yaml_name} (model {record.model}): the "
                        "Caffe fork cannot train it (its model tables are compiled in); openpose-train train can")
        path = Path(training_prototxt).parent / record.yaml_name
        if path.is_file():
            try:
                loaded = {record.model: (record.yaml_name, load_skeleton_yaml(path))}
            except SkeletonError as exc:
                problems.append(str(exc))
                continue
            problem = generated_from_problem(Path(training_prototxt).name, text, loaded)
            problems += [problem] if problem else []
    return problems


@click.command("fork-check", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("training_prototxt", type=click.Path(exists=True, dir_okay=False))
@reports_errors
def fork_check(training_prototxt):
    """Check TRAINING_PROTOTXT against the OpenPose Caffe fork's known preconditions (raw, existing LMDBs;
    occlusions only with a background LMDB). Exit 1 with one line per problem; train_pose.sh runs it before
    launching CAFFE=... ."""
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt

    net_param = read_net_prototxt(training_prototxt)
    problems = skeleton_problems(training_prototxt) + fork_problems(net_param)
    for line in problems:
        click.echo(f"Error: {training_prototxt}: {line}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{training_prototxt}: fits the OpenPose Caffe fork's known preconditions")
