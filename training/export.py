"""From a training snapshot to OpenPose's ``models/`` folder.

OpenPose finds a body model only by fixed relative paths (``spec/openpose_runtime.md`` 1.1-1.2):
``pose/body_25/pose_deploy.prototxt`` + ``pose/body_25/pose_iter_584000.caffemodel`` and so on.
The names come from the registry (``PoseModel.model_folder``, ``deploy_name``,
``caffemodel_name``); nothing here is specific to one model.

Before anything is written the caffemodel is checked against the deploy prototxt: Caffe
copies weights by layer name only and silently leaves a misnamed layer at its initial value,
so every parameterised layer must be present with the right blob count and shapes.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from openpose_train.generator.registry import get_model


class ExportError(Exception):
    """The snapshot cannot be exported; the message names the file or layer."""


@dataclass
class ExportResult:
    model: str
    prototxt: Path
    caffemodel: Path
    models_dir: Path
    command: str
    notes: tuple


def find_deploy_prototxt(snapshot: Path, model) -> Optional[Path]:
    """The deploy file the snapshot was trained with: beside it or one folder up (generator layout)."""
    names = [model.deploy_name, "pose_deploy.prototxt"]
    for folder in (snapshot.parent, snapshot.parent.parent):
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _atomic_write_text(text: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, dst)


def check_snapshot(deploy_path: Path, snapshot: Path):
    """Raise ExportError unless every parameterised deploy layer is in the caffemodel with the right shapes."""
    from openpose_train.caffe_layers import caffe_io

    try:
        net = caffe_io.read_net_prototxt(str(deploy_path))
        weights = caffe_io.read_caffemodel(str(snapshot))
    except Exception as exc:  # the I/O layer already names file and position
        raise ExportError(str(exc)) from exc
    try:
        return caffe_io.check_weights_against_net(net, weights)
    except Exception as exc:
        raise ExportError(f"{snapshot} does not match {deploy_path}: {exc}") from exc


def openpose_command(model, models_dir: Path, net_resolution: str = "-1x368") -> str:
    if model.model_folder.startswith(("hand", "face")):
        flag = "--hand" if model.model_folder.startswith("hand") else "--face"
        return f"./build/examples/openpose/openpose.bin --model_folder {models_dir}/ {flag}"
    return (f"./build/examples/openpose/openpose.bin --model_pose {model.openpose_name} "
            f"--model_folder {models_dir}/ --net_resolution {net_resolution}")


def export_snapshot(snapshot, model_name: str, to, preset: Optional[str] = None,
                    deploy: Optional[str] = None, net_resolution: Optional[str] = None) -> ExportResult:
    """Copy ``snapshot`` and its deploy prototxt into the OpenPose models folder ``to``.

    The deploy prototxt is, in this order: ``deploy`` if given; the one the generator wrote beside
    the snapshot's training folder; else one rendered from the registry (with ``preset``).
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
            to_check = Path(str(snapshot) + ".deploy_check.prototxt")
            _atomic_write_text(rendered_text, to_check)
            deploy_path = to_check
    try:
        check_snapshot(deploy_path, snapshot)
        models_dir = Path(to)
        target_dir = models_dir / model.model_folder
        target_prototxt = target_dir / model.deploy_name
        target_caffemodel = target_dir / model.caffemodel_name
        if rendered_text is not None:
            _atomic_write_text(rendered_text, target_prototxt)
        else:
            _atomic_copy(deploy_path, target_prototxt)
        _atomic_copy(snapshot, target_caffemodel)
    finally:
        if rendered_text is not None:
            deploy_path.unlink(missing_ok=True)

    if net_resolution is None:
        from openpose_train.generator.render import resolve_preset
        net_resolution = resolve_preset(model.name, preset).net_resolution
    notes = []
    if model.openpose_name and not model.openpose_cpu_connector:
        notes.append(f"{model.name} runs only with OpenPose's CUDA build (its CPU body connector "
                     "supports BODY_25, COCO, MPI and MPI_4_layers).")
    return ExportResult(model=model.name, prototxt=target_prototxt, caffemodel=target_caffemodel,
                        models_dir=models_dir, command=openpose_command(model, models_dir.resolve(), net_resolution),
                        notes=tuple(notes))
