"""From a training snapshot to OpenPose's ``models/`` folder.

OpenPose finds a body model only by fixed relative paths (``docs/formats.md`` §Models folder):
``pose/body_25/pose_deploy.prototxt`` + ``pose/body_25/pose_iter_584000.caffemodel`` and so on.
The names come from the registry (``PoseModel.model_folder``, ``deploy_name``,
``caffemodel_name``); nothing here is specific to one model.

Before anything is written the caffemodel is checked against the deploy prototxt: Caffe
copies weights by layer name only and silently leaves a misnamed layer at its initial value,
so every parameterised layer must be present with the right blob count and shapes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.common.files import atomic_path
from openpose_train.generator.output_paths import make_output_folder
from openpose_train.generator.registry import get_model


class ExportError(OpenPoseTrainError):
    """The snapshot cannot be exported; the message names the file or layer."""


@dataclass
class ExportResult:
    model: str
    prototxt: Path
    caffemodel: Path
    models_dir: Path
    command: str
    notes: tuple
    backups: tuple = ()                 # the files --overwrite replaced, kept under these names


def find_deploy_prototxt(snapshot: Path, model) -> Optional[Path]:
    """The deploy file the snapshot was trained with: beside it or one folder up (generator layout)."""
    names = [model.deploy_name, "pose_deploy.prototxt"]
    for folder in (snapshot.parent, snapshot.parent.parent):
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _atomic_write(dst: Path, write) -> None:
    """``write(tmp)`` then rename onto ``dst``; on an OSError (a full disk) the partial file is
    removed and ExportError names ``dst``."""
    try:
        with atomic_path(dst) as tmp:
            write(tmp)
    except OSError as exc:
        raise ExportError(f"{dst}: cannot write ({exc.strerror or exc})") from None


def _prepare_target(target_dir: Path, needed: int) -> None:
    """Create the OpenPose model folder and refuse at once when the files surely do not fit."""
    make_output_folder(target_dir, "models folder", ExportError)
    free = shutil.disk_usage(target_dir).free
    if needed > free:
        raise ExportError(f"{target_dir}: the export needs {needed / 2**20:.1f} MiB, the disk has "
                          f"{free / 2**20:.1f} MiB free")


def check_snapshot(deploy_path: Path, snapshot: Path, model=None, deploy_text: Optional[str] = None):
    """Raise ExportError unless every parameterised deploy layer is in the caffemodel with the right
    shapes (and, given a registry ``model``, the deploy's output has that model's channels).
    ``deploy_text``: the deploy itself (``deploy_path`` then only names it)."""
    from openpose_train.caffe_layers import caffe_io

    try:
        if deploy_text is None:
            net = caffe_io.read_net_prototxt(str(deploy_path))
        else:
            net = caffe_io.parse_prototxt(deploy_text, caffe_io.caffe_pb2.NetParameter(), deploy_path)
        weights = caffe_io.read_caffemodel(str(snapshot))
    except OpenPoseTrainError as exc:  # the I/O layer already names file and position
        raise ExportError(str(exc)) from exc
    if model is not None:
        from openpose_train.validation.inference import InferenceError, check_output_channels
        try:
            check_output_channels(deploy_path, net, model)
        except InferenceError as exc:
            raise ExportError(str(exc)) from None
    try:
        return caffe_io.check_weights_against_net(net, weights)
    except OpenPoseTrainError as exc:  # a mismatch, or a deploy whose shapes cannot be inferred
        raise ExportError(f"{snapshot} does not match {deploy_path}: {exc}") from exc


def fold_deploy(deploy_path: Path, snapshot: Path, deploy_text: Optional[str] = None):
    """``(folded deploy text, folded weights, folded net, folded conv count)`` when the deploy has
    BatchNorm layers (the light models), else None: OpenPose then loads plain convolutions
    (caffe_layers/fold.py)."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.fold import fold_batch_norm, has_batch_norm

    net = (caffe_io.read_net_prototxt(str(deploy_path)) if deploy_text is None
           else caffe_io.parse_prototxt(deploy_text, caffe_io.caffe_pb2.NetParameter(), deploy_path))
    if not has_batch_norm(net):
        return None
    weights = caffe_io.read_caffemodel(str(snapshot))
    folded, folded_weights, names = fold_batch_norm(net, weights)
    left = [layer.name for layer in folded.layer if layer.type == "BatchNorm"]
    if left:
        raise ExportError(f"{deploy_path}: BatchNorm layer '{left[0]}' does not follow a Convolution it can be "
                          "folded into (OpenPose's deploy must hold plain convolutions)")
    folded_weights = {name: blobs for name, blobs in folded_weights.items()
                      if name in {layer.name for layer in folded.layer}}
    return caffe_io.prototxt_string(folded), folded_weights, folded, len(names)


def openpose_command(model, models_dir: Path, net_resolution: str = "-1x368") -> str:
    if model.model_folder.startswith(("hand", "face")):
        flag = "--hand" if model.model_folder.startswith("hand") else "--face"
        return f"./build/examples/openpose/openpose.bin --model_folder {models_dir}/ {flag}"
    return (f"./build/examples/openpose/openpose.bin --model_pose {model.openpose_name or model.name} "
            f"--model_folder {models_dir}/ --net_resolution {net_resolution}")


def _same_bytes(path: Path, source: Optional[Path], text: Optional[str]) -> bool:
    """``path`` holds exactly ``source``'s bytes (or ``text``; neither: not known, so not the same)."""
    from openpose_train.common.digest import file_sha256
    if source is None and text is None:
        return False
    if text is not None:
        return path.read_bytes() == text.encode()
    return path.stat().st_size == source.stat().st_size and file_sha256(path) == file_sha256(source)


def _free_backup_name(path: Path) -> Path:
    """``<path>.bak``, or ``.bak1``, ``.bak2``, ... when taken: an earlier backup (OpenPose's own
    model, say) is never replaced."""
    candidate, n = path.with_name(path.name + ".bak"), 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.bak{n}")
    return candidate


def _replaced_files(targets, overwrite: bool, target_dir: Path) -> tuple:
    """The target files that hold something else than the export: refused (ExportError naming them)
    without ``overwrite``, else renamed to a free ``.bak`` name first; returns the backups.
    ``targets``: (target path, source path or None, source text or None)."""
    different = [t for t, source, text in targets if t.exists() and not _same_bytes(t, source, text)]
    if not different:
        return ()
    names = ", ".join(t.name for t in different)
    if not overwrite:
        raise ExportError(f"{target_dir} already holds a model ({names}; OpenPose's own files, or an earlier "
                          f"export): choose another --to, or pass --overwrite to replace them (the replaced files "
                          f"are kept as <name>.bak)")
    backups = []
    for target in different:
        backup = _free_backup_name(target)
        target.rename(backup)       # a new name in the same folder: nothing is copied
        backups.append(backup)
    return tuple(backups)


def export_snapshot(snapshot, model_name: str, to, preset: Optional[str] = None,
                    deploy: Optional[str] = None, net_resolution: Optional[str] = None,
                    overwrite: bool = False) -> ExportResult:
    """Copy ``snapshot`` and its deploy prototxt into the OpenPose models folder ``to``.

    The deploy prototxt is, in this order: ``deploy`` if given; the one the generator wrote beside
    the snapshot's training folder; else one rendered from the registry (with ``preset``). Files
    already in the target folder with other content (OpenPose's own model, say) are refused unless
    ``overwrite``, which keeps them as ``<name>.bak`` (docs/refusals.md §Outputs).
    """
    snapshot = Path(snapshot)
    if not snapshot.is_file():
        raise ExportError(f"snapshot not found: {snapshot}")
    model = get_model(model_name)
    if not model.model_folder:
        raise ExportError(f"model {model.name} has no OpenPose models/ folder (custom skeletons need "
                          "OpenPose to be recompiled with their tables; use --prototxt_path/--caffemodel_path)")
    rendered_text = None
    if deploy is not None:
        deploy_path = Path(deploy)
        if not deploy_path.is_file():
            raise ExportError(f"deploy prototxt not found: {deploy_path}")
    else:
        deploy_path = None if preset else find_deploy_prototxt(snapshot, model)
        if deploy_path is None:
            from openpose_train.generator.render import render_deploy
            rendered_text = render_deploy(model.name, preset=preset)
            deploy_path = Path(f"<{model.name} deploy rendered from the registry>")
    check_snapshot(deploy_path, snapshot, model, rendered_text)
    notes = []
    folded = fold_deploy(deploy_path, snapshot, rendered_text)
    if folded is not None:
        rendered_text, folded_weights, folded_net, count = folded
        notes.append(f"BatchNorm+Scale folded into {count} convolutions (the deploy has no normalisation layers)")
    models_dir = Path(to)
    target_dir = models_dir / model.model_folder
    target_prototxt = target_dir / model.deploy_name
    target_caffemodel = target_dir / model.caffemodel_name
    deploy_size = len(rendered_text.encode()) if rendered_text is not None else deploy_path.stat().st_size
    _prepare_target(target_dir, snapshot.stat().st_size + deploy_size)
    # a folded caffemodel is new bytes: a model already there is another one (no cheap identity check)
    backups = _replaced_files([(target_prototxt, None if rendered_text is not None else deploy_path, rendered_text),
                               (target_caffemodel, None if folded is not None else snapshot, None)],
                              overwrite, target_dir)
    if rendered_text is not None:
        _atomic_write(target_prototxt, lambda tmp: tmp.write_text(rendered_text))
    else:
        _atomic_write(target_prototxt, lambda tmp: shutil.copyfile(deploy_path, tmp))
    if folded is not None:
        from openpose_train.caffe_layers.caffe_io import write_caffemodel
        try:
            write_caffemodel(target_caffemodel, folded_weights, net=folded_net)
        except OSError as exc:
            raise ExportError(f"{target_caffemodel}: cannot write ({exc.strerror or exc})") from None
    else:
        _atomic_write(target_caffemodel, lambda tmp: shutil.copyfile(snapshot, tmp))

    if net_resolution is None:
        from openpose_train.generator.render import resolve_preset
        net_resolution = resolve_preset(model.name, preset).net_resolution
    if not model.upstream:
        notes.append(f"{model.name} is a custom skeleton: OpenPose runs it only after its tables are added to "
                     f"OpenPose's source and OpenPose is rebuilt (our validate and --onnx use it directly).")
    if model.openpose_name and not model.openpose_cpu_connector:
        notes.append(f"{model.name} runs only with OpenPose's CUDA build (its CPU body connector "
                     "supports BODY_25, COCO, MPI and MPI_4_layers).")
    return ExportResult(model=model.name, prototxt=target_prototxt, caffemodel=target_caffemodel,
                        models_dir=models_dir, command=openpose_command(model, models_dir.resolve(), net_resolution),
                        notes=tuple(notes), backups=backups)
