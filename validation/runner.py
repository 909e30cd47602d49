"""One validation run: images -> people -> COCO results JSON (+ summary, OpenPose JSONs, PNGs),
and the per-snapshot loop of ``validate-snapshots``.

Never crashes on data: a missing or unreadable image, an image without people or a run without
any detection is counted and reported in the summary; test-dev mode (no annotations) writes the
results JSON only (ids from the file names' trailing digits, as OpenPose does).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

from openpose_train.caffe_layers.caffe_io import read_solver_prototxt
from openpose_train.generator.output_paths import make_output_folder
from openpose_train.generator.registry import PoseModel
from openpose_train.validation.coco_eval import (
    CocoEvalError, NothingToScore, STAT_NAMES, duplicate_file_names, evaluate, image_id_from_name,
    image_ids_by_name, load_coco, people_to_coco, scorable_people, write_json_atomic,
    write_openpose_json)
from openpose_train.validation.inference import PoseEstimator, iter_batches
from openpose_train.validation.metrics import evaluate as evaluate_metrics

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ImageEntry:
    path: str
    image_id: int


@dataclass
class ImageList:
    entries: List[ImageEntry] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)       # listed in the annotations, no file
    # file name -> ids of the annotation entries that share it (scored once, as the first id)
    duplicates: Dict[str, List[int]] = field(default_factory=dict)
    listed: int = 0                                          # images the annotations list

    def problems(self) -> List[str]:
        """One line per kind of listed image that is not scored: absent files, shared names."""
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing image(s) skipped, not scored ({len(self.missing)} of the "
                         f"{self.listed} listed in the annotations are not in the image folder), e.g. "
                         f"{', '.join(self.missing[:3])}")
        if self.duplicates:
            extra = sum(len(ids) - 1 for ids in self.duplicates.values())
            name, ids = next(iter(self.duplicates.items()))
            lines.append(f"{extra} image entr{'y' if extra == 1 else 'ies'} of the annotations repeat the "
                         f"file name of an earlier entry ({len(self.duplicates)} file name(s), e.g. {name}: ids "
                         f"{', '.join(map(str, ids))}); each file is scored once, as its first id")
        return lines


def check_limit(limit: Optional[int], option: str = "--limit") -> None:
    """A limit must keep at least one image (0 or a negative number would slice the list)."""
    if limit is not None and limit < 1:
        raise CocoEvalError(f"{option} {limit}: must be at least 1 (the number of images to score)")


def list_images(images_dir: str, coco=None, limit: Optional[int] = None) -> ImageList:
    """Images to validate: those of the annotation file (ids from it) or, without annotations,
    every image file of the folder (ids from the file names). With annotations, CocoEvalError
    when none of the listed images is in the folder."""
    check_limit(limit)
    if not os.path.isdir(images_dir):
        raise CocoEvalError(f"image folder not found: {images_dir}")
    out = ImageList()
    if coco is not None:
        ids = image_ids_by_name(coco)
        out.duplicates = duplicate_file_names(coco)
        out.listed = len(ids)
        for name in sorted(ids, key=lambda n: ids[n]):
            path = os.path.join(images_dir, name)
            if os.path.isfile(path):
                out.entries.append(ImageEntry(path, ids[name]))
            else:
                out.missing.append(name)
        if ids and not out.entries:
            raise CocoEvalError(f"none of the {len(ids)} images listed in the annotations is in the image "
                                f"folder {images_dir} (e.g. {out.missing[0]}): is it the right folder?")
    else:
        for name in sorted(os.listdir(images_dir)):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                out.entries.append(ImageEntry(os.path.join(images_dir, name),
                                              image_id_from_name(name)))
    if limit:
        out.entries = out.entries[:limit]
    return out


def check_something_to_score(coco, images: ImageList, annotations: str, limit: Optional[int] = None,
                             option: str = "--limit") -> None:
    """NothingToScore when the images chosen hold no annotated person (every AP would be
    pycocotools' -1)."""
    if scorable_people(coco, [e.image_id for e in images.entries]):
        return
    chosen = f"the first {len(images.entries)} image(s) ({option} {limit})" if limit and \
        len(images.entries) == limit else f"the {len(images.entries)} image(s) found"
    raise NothingToScore(f"nothing to score: {chosen} of {annotations} hold no annotated person with "
                         f"keypoints")


def summary_path_for(results_path: str) -> str:
    stem, _ = os.path.splitext(results_path)
    return f"{stem}_summary.json"


def run_validation(estimator: PoseEstimator, images_dir: str, out: str,
                   annotations: Optional[str] = None, write_json_dir: Optional[str] = None,
                   render_dir: Optional[str] = None, batch_size: int = 1,
                   limit: Optional[int] = None, settings: Optional[dict] = None,
                   progress: bool = True, echo: Callable[[str], None] = lambda s: None,
                   metrics: Optional[Sequence[str]] = None) -> dict:
    """Validate one model; writes ``out`` (COCO results) and ``<out>_summary.json``; returns
    the summary (AP..ARl are None in test-dev mode) with every metric of
    :func:`openpose_train.validation.metrics.evaluate` under flat keys (``metrics``: default
    the model's; the notes of those that do not apply are in ``metric_notes``)."""
    from tqdm import tqdm
    model: PoseModel = estimator.model
    coco = load_coco(annotations) if annotations else None
    if model.crop_net:
        return _run_crop_validation(estimator, images_dir, out, annotations, coco, limit,
                                    settings, progress, echo, metrics)
    images = list_images(images_dir, coco, limit)
    if coco is not None:
        check_something_to_score(coco, images, annotations, limit)
    results, evaluated, unreadable = [], [], []
    people_by_image = {}
    without_people = 0
    bar = tqdm(total=len(images.entries), desc="validate", unit="img", disable=not progress,
               dynamic_ncols=True)
    for chunk in iter_batches(images.entries, max(1, batch_size)):
        loaded = []
        for entry in chunk:
            image = cv2.imread(entry.path, cv2.IMREAD_COLOR)
            if image is None:
                unreadable.append(os.path.basename(entry.path))
            else:
                loaded.append((entry, image))
        # the ground-truth stand-in (--groundtruth-maps) draws each image's own annotations
        ids = {"image_ids": [e.image_id for e, _ in loaded]} \
            if getattr(estimator, "needs_image_ids", False) else {}
        people = estimator.estimate_batch([img for _, img in loaded], **ids) if loaded else []
        for (entry, image), (keypoints, scores) in zip(loaded, people):
            evaluated.append(entry.image_id)
            people_by_image[entry.image_id] = (keypoints, scores)
            entries = people_to_coco(model, keypoints, scores, entry.image_id) \
                if model.to_coco17 is not None else []
            results += entries
            without_people += not len(keypoints)
            if write_json_dir:
                write_openpose_json(write_json_dir, entry.path, keypoints)
            if render_dir:
                from openpose_train.validation.plots import draw_people
                make_output_folder(render_dir, "--render folder")
                stem = os.path.splitext(os.path.basename(entry.path))[0]
                cv2.imwrite(os.path.join(render_dir, f"{stem}_rendered.png"),
                            draw_people(image, model, keypoints))
        bar.update(len(chunk))
    bar.close()
    write_json_atomic(out, results)
    summary = {name: None for name in STAT_NAMES}
    note = "test-dev mode: no annotations, results JSON only"
    if coco is not None:
        if model.to_coco17 is not None:
            ev = evaluate(coco, results, evaluated)
            summary.update(ev["stats"])
            note = ev["note"]
            if ev["summary"]:
                echo(ev["summary"])
        else:
            note = f"{model.name}: no COCO body keypoints (see metric_notes)"
        summary.update(evaluate_metrics(model, coco.dataset, people_by_image, metrics=metrics,
                                        image_ids=evaluated))
    _echo_problems(images, unreadable, echo)
    summary.update({
        "model": model.name, "images": len(images.entries) + len(images.missing),
        "images_evaluated": len(evaluated), "images_missing": images.missing,
        "images_unreadable": unreadable, "images_duplicate_names": images.duplicates,
        "images_without_detections": without_people,
        "detections": len(results), "results": os.path.abspath(out),
        "annotations": os.path.abspath(annotations) if annotations else None,
        "settings": settings or estimator.settings.describe(), "note": note})
    write_json_atomic(summary_path_for(out), summary, indent=2)
    return summary


def _echo_problems(images: ImageList, unreadable: List[str], echo) -> None:
    for line in images.problems():
        echo(line)
    if unreadable:
        echo(f"{len(unreadable)} unreadable image(s) skipped, e.g. {', '.join(unreadable[:3])}")


def _run_crop_validation(estimator, images_dir, out, annotations, coco, limit, settings, progress,
                         echo, metrics) -> dict:
    """HAND_21 / FACE_70: the net on every annotated hand / face box of each image
    (:mod:`openpose_train.validation.crop_nets`); ``out`` gets one entry per crop."""
    from tqdm import tqdm
    from openpose_train.validation.crop_nets import crop_samples, predictions_for
    from openpose_train.validation.metrics_coco import annotation_layout
    model = estimator.model
    if coco is None:
        raise CocoEvalError(f"{model.name} runs on annotated {model.crop_net} boxes: "
                            f"give --annotations (COCO-WholeBody JSON)")
    samples = crop_samples(coco.dataset, annotation_layout(coco.dataset), model)
    images = list_images(images_dir, coco, limit)
    crops, results, evaluated, unreadable = {}, [], [], []
    for entry in tqdm(images.entries, desc="validate", unit="img", disable=not progress,
                      dynamic_ncols=True):
        image = cv2.imread(entry.path, cv2.IMREAD_COLOR)
        if image is None:
            unreadable.append(os.path.basename(entry.path))
            continue
        evaluated.append(entry.image_id)
        found = predictions_for(estimator, image, samples.get(entry.image_id))
        crops.update(found)
        results += [{"image_id": entry.image_id, "annotation_id": ann_id, "group": group,
                     "keypoints": [round(float(v), 3) for v in kps.reshape(-1)]}
                    for (ann_id, group), kps in found.items()]
    write_json_atomic(out, results)
    _echo_problems(images, unreadable, echo)
    summary = {name: None for name in STAT_NAMES}
    summary.update(evaluate_metrics(model, coco.dataset, crops=crops, metrics=metrics,
                                    image_ids=evaluated))
    summary.update({
        "model": model.name, "images": len(images.entries) + len(images.missing),
        "images_evaluated": len(evaluated), "images_missing": images.missing,
        "images_unreadable": unreadable, "images_duplicate_names": images.duplicates,
        "crops": len(results),
        "results": os.path.abspath(out), "annotations": os.path.abspath(annotations),
        "settings": settings or {}, "note": f"{model.name}: {model.crop_net} crops of the annotated boxes"})
    write_json_atomic(summary_path_for(out), summary, indent=2)
    return summary


_SNAPSHOT = re.compile(r"_iter_(\d+)\.caffemodel$")


def list_snapshots(training_dir: str) -> List[tuple]:
    """[(iteration, path)] of ``*_iter_N.caffemodel`` in a training folder, by iteration."""
    if not os.path.isdir(training_dir):
        raise CocoEvalError(f"training folder not found: {training_dir}")
    found = []
    for name in os.listdir(training_dir):
        m = _SNAPSHOT.search(name)
        if m:
            found.append((int(m.group(1)), os.path.join(training_dir, name)))
    return sorted(found)


def snapshot_folder(training_dir: str) -> str:
    """Where the snapshots of a training folder are: the folder of its solver's
    ``snapshot_prefix`` (relative to the training folder, where ``train_pose.sh`` runs), else the
    training folder itself (also when it is the snapshot folder)."""
    if not os.path.isdir(training_dir):
        raise CocoEvalError(f"training folder not found: {training_dir}")
    solvers = sorted(n for n in os.listdir(training_dir)
                     if n.endswith(".prototxt") and "solver" in n)
    if "pose_solver.prototxt" in solvers:
        solvers.remove("pose_solver.prototxt")
        solvers.insert(0, "pose_solver.prototxt")
    for name in solvers:
        prefix = read_solver_prototxt(os.path.join(training_dir, name)).snapshot_prefix
        if prefix:
            return os.path.dirname(os.path.join(training_dir, prefix)) or training_dir
    return training_dir


def ap_table_row(iteration: int, summary: dict) -> dict:
    """The per-snapshot record ``validate-snapshots`` keeps (iteration + the 10 numbers + the
    flat metric keys of :mod:`openpose_train.validation.metrics`: ``foot_ap``, ``hand_pck``, ...)."""
    from openpose_train.validation.metrics import METRICS
    row = {"iteration": iteration}
    row.update({k: summary.get(k) for k in STAT_NAMES})
    row.update({k: v for k, v in summary.items() if k.split("_")[0] in METRICS
                and (v is None or isinstance(v, (int, float)))})
    return row




# settings that change a snapshot's score; the rest (device, batch size, the caffemodel's own path)
# do not, so a row scored with them may be reused
_UNSCORED_SETTINGS = ("caffemodel", "device", "batch_size")


def image_folder_digest(images_dir: str) -> str:
    """sha256 of the image files of a folder: name, size and modification time of each."""
    import hashlib
    digest = hashlib.sha256()
    with os.scandir(images_dir) as entries:
        for entry in sorted((e for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS)),
                            key=lambda e: e.name):
            info = entry.stat()
            digest.update(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def scoring_settings(model: PoseModel, images_dir: str, annotations: Optional[str], settings: dict,
                     limit: Optional[int], metrics: Optional[Sequence[str]]) -> dict:
    """What a ``validate-snapshots`` score depends on besides the snapshot: the image set, the
    annotation file (path and content), the deploy prototxt (content), the inference settings, the
    post-processing thresholds, ``--limit`` and ``--metrics``. A cached row is reused only when its
    record equals this one."""
    from openpose_train.common.digest import file_sha256
    record = {k: v for k, v in sorted(settings.items()) if k not in _UNSCORED_SETTINGS}
    record.update(
        images=os.path.abspath(images_dir), images_digest=image_folder_digest(images_dir),
        annotations=os.path.abspath(annotations) if annotations else None,
        annotations_sha256=file_sha256(annotations) if annotations else None,
        prototxt_sha256=file_sha256(settings["prototxt"]) if settings.get("prototxt") else None,
        thresholds=repr(model.thresholds), limit=limit, metrics=sorted(metrics) if metrics else None)
    return record

