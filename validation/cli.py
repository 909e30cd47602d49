"""``openpose-train validate``, ``validate-snapshots`` and ``plot``."""
from __future__ import annotations

import json
import os
from typing import Optional

import click

from openpose_train.common.errors import OpenPoseTrainError, reports_errors


class SnapshotTableError(OpenPoseTrainError, ValueError):
    """ap.jsonl of validate-snapshots holds a line that is not one of its rows; names file and line."""


def _common_options(fn):
    options = [
        click.option("--model", "model_name", default="BODY_25", show_default=True,
                     help="registry model or --model_pose string (BODY_25, COCO, BODY_25B, ...)"),
        click.option("--model-yaml", default=None, type=click.Path(dir_okay=False),
                     help="custom skeleton YAML (used instead of --model)"),
        click.option("--images", required=True, type=click.Path(file_okay=False),
                     help="image folder"),
        click.option("--annotations", default=None, type=click.Path(dir_okay=False),
                     help="COCO keypoint JSON; without it (test-dev) only the results JSON is written"),
        click.option("--net-resolution", default="-1x368", show_default=True),
        click.option("--net-resolution-dynamic", default=1.0, show_default=True, type=float),
        click.option("--scale-number", default=1, show_default=True, type=int),
        click.option("--scale-gap", default=0.25, show_default=True, type=float),
        click.option("--maximize-positives", is_flag=True, help="OpenPose's --maximize_positives"),
        click.option("--openpose-build", type=click.Choice(["cuda", "cpu"]), default="cuda",
                     show_default=True,
                     help="reproduce the post-processing of OpenPose's CUDA build or of its "
                          "CPU-only build (cv::resize, nmsCpu, the CPU connector; BODY_25, "
                          "COCO and MPI only)"),
        click.option("--backend", type=click.Choice(["torch", "opencv", "caffe"]), default="torch",
                     show_default=True),
        click.option("--device", default=None, help="torch/caffe device, e.g. cpu, cuda, cuda:1"),
        click.option("--batch-size", default=1, show_default=True, type=int,
                     help="images per forward (torch; equal net sizes share a batch)"),
        click.option("--limit", default=None, type=int, help="validate only the first N images"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _model(model_name: str, model_yaml: Optional[str]):
    from openpose_train.generator.registry import get_model
    if model_yaml:
        from openpose_train.generator.skeleton import load_skeleton_yaml
        return load_skeleton_yaml(model_yaml)
    return get_model(model_name)


def _estimator(model, prototxt, caffemodel, opts):
    from openpose_train.validation.inference import (InferenceSettings, PoseEstimator,
                                                     check_memory, load_backend)
    settings = InferenceSettings(net_resolution=opts["net_resolution"],
                                 scale_number=opts["scale_number"], scale_gap=opts["scale_gap"],
                                 net_resolution_dynamic=opts["net_resolution_dynamic"],
                                 maximize_positives=opts["maximize_positives"],
                                 openpose_build=opts["openpose_build"])
    backend = load_backend(opts["backend"], prototxt, caffemodel, opts["device"], model=model)
    estimator = PoseEstimator(model, backend, settings)
    if getattr(backend, "net_param", None) is not None:       # (pycaffe: its own memory)
        check_memory(backend.net_param, settings, model.num_channels, opts["batch_size"],
                     getattr(backend, "device", None))
    return estimator


def _settings(model, prototxt, caffemodel, opts) -> dict:
    estimator_settings = {k: opts[k] for k in ("net_resolution", "net_resolution_dynamic",
                                               "scale_number", "scale_gap", "maximize_positives",
                                               "openpose_build", "backend", "device",
                                               "batch_size")}
    return dict(estimator_settings, model=model.name, prototxt=os.path.abspath(prototxt),
                caffemodel=os.path.abspath(caffemodel) if caffemodel else None)


def _echo_stats(summary: dict) -> None:
    if summary.get("AP") is not None:       # None: nothing measured (pycocotools' -1), "n/a"
        click.echo("  ".join(f"{k} {'n/a' if summary.get(k) is None else format(summary[k], '.3f')}"
                             for k in ("AP", "AP50", "AP75", "APm", "APl", "AR")))
    if summary.get("note"):
        click.echo(summary["note"], err=True)


def _echo_metrics_table(summary: dict) -> None:
    """One table: every metric's headline numbers, then one line per metric that does not apply."""
    from openpose_train.validation.metrics import table_rows
    rows = table_rows(summary)
    if not rows:
        return
    width = max(len(name) for name, _ in rows)
    click.echo(f"{'metric':<{width}}  value")
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


@click.command("validate")
@click.option("--model-folder", default=None, type=click.Path(file_okay=False),
              help="OpenPose models/ folder, or a folder with a deploy prototxt and a caffemodel")
@click.option("--prototxt", default=None, type=click.Path(dir_okay=False))
@click.option("--caffemodel", default=None, type=click.Path(dir_okay=False))
@_common_options
@click.option("--out", default="results.json", show_default=True,
              help="COCO results JSON; the summary goes to <out>_summary.json")
@click.option("--write-json", "write_json", default=None, type=click.Path(file_okay=False),
              help="also write OpenPose --write_json files here")
@click.option("--render", default=None, type=click.Path(file_okay=False),
              help="also write PNGs with the detected skeletons here")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--metrics", "metrics", default=None,
              help="comma list of body,foot,wholebody,hand,face (default: all the model and the "
                   "annotations allow)")
@click.option("--groundtruth-maps", is_flag=True,
              help="score each image's own annotations drawn as heatmaps/PAFs at the net's output "
                   "resolution instead of running a network: the post-processing ceiling")
@reports_errors
def validate(model_folder, prototxt, caffemodel, model_name, model_yaml, images, annotations,
             out, write_json, render, quiet, metrics, groundtruth_maps, **opts):
    """COCO keypoint AP (and foot, whole-body, hand, face metrics) of a model, detected as
    OpenPose would."""
    from openpose_train.validation.inference import find_model_files
    from openpose_train.validation.metrics import parse_metrics
    from openpose_train.validation.runner import run_validation
    model = _model(model_name, model_yaml)
    wanted = parse_metrics(metrics)
    if groundtruth_maps:
        estimator, settings = _ground_truth_estimator(model, annotations, opts)
    else:
        prototxt, caffemodel = find_model_files(model, model_folder, prototxt, caffemodel)
        estimator = _network_estimator(model, prototxt, caffemodel, opts)
        settings = _settings(model, prototxt, caffemodel, opts)
    _check_output_folders(out, write_json, render)
    _check_outputs_are_not_inputs(out, write_json, render, images, annotations, prototxt, caffemodel)
    summary = run_validation(estimator, images, out, annotations, write_json, render,
                             batch_size=opts["batch_size"], limit=opts["limit"],
                             settings=settings, progress=not quiet, echo=click.echo,
                             metrics=wanted)
    _echo_stats(summary)
    _echo_metrics_table(summary)
    click.echo(f"results: {out}")


def _check_output_folders(out, write_json, render) -> None:
    """Refuse --out, --write-json and --render paths that cannot be written (one line naming the
    option) before any image is read; the folders are created as the files are written."""
    from openpose_train.generator.output_paths import check_output_folder, make_parent_folder
    make_parent_folder(out, label="--out", create=False)
    for option, folder in (("--write-json", write_json), ("--render", render)):
        if folder:
            check_output_folder(folder, f"{option} folder")


def _check_outputs_are_not_inputs(out, write_json, render, images, annotations, prototxt, caffemodel) -> None:
    """--out is none of the input files, and --write-json / --render are not the image folder (their
    files would overwrite or join the images): docs/refusals.md §Outputs."""
    from openpose_train.generator.output_paths import check_not_an_input
    files = [("--annotations", annotations), ("--prototxt", prototxt), ("--caffemodel", caffemodel)]
    check_not_an_input(out, files + [("--images", images)], "--out")
    check_not_an_input(f"{os.path.splitext(out)[0]}_summary.json", files, "--out (its _summary.json)")
    for option, folder in (("--write-json", write_json), ("--render", render)):
        if folder:
            check_not_an_input(folder, [("--images", images)] + files, option, folder=True)


def _network_estimator(model, prototxt, caffemodel, opts):
    """The whole-image estimator, or for HAND_21 / FACE_70 the one that runs on crops."""
    if not model.crop_net:
        return _estimator(model, prototxt, caffemodel, opts)
    from openpose_train.validation.crop_nets import CropNetEstimator
    from openpose_train.validation.inference import load_backend
    return CropNetEstimator(model, load_backend(opts["backend"], prototxt, caffemodel, opts["device"],
                                                model=model))


def _ground_truth_estimator(model, annotations, opts):
    """The --groundtruth-maps stand-in for the network, and its settings for the summary."""
    from openpose_train.validation.groundtruth_maps import (GroundTruthCropEstimator,
                                                            GroundTruthEstimator)
    from openpose_train.validation.inference import InferenceSettings
    from openpose_train.validation.metrics import load_annotations
    if not annotations:
        raise click.ClickException("--groundtruth-maps draws the annotations: give --annotations")
    settings = {k: opts[k] for k in ("net_resolution", "net_resolution_dynamic", "scale_number",
                                     "scale_gap", "maximize_positives", "openpose_build")}
    summary_settings = dict(settings, model=model.name, groundtruth_maps=True)
    if model.crop_net:
        return GroundTruthCropEstimator(model), summary_settings
    return (GroundTruthEstimator(model, load_annotations(annotations), InferenceSettings(**settings)),
            summary_settings)


def _read_ap_table(path: str, scored_with: dict) -> tuple:
    """``({iteration: row}, stale rows, [settings that differ])`` of the ap.jsonl an earlier
    validate-snapshots wrote: the rows scored with ``scored_with``
    (:func:`openpose_train.validation.runner.scoring_settings`), the number of the others (other
    settings, or rows written before they carried their settings) and what differed. A torn last
    line (a run killed while appending) is dropped with a warning and the file repaired, so that
    snapshot is scored again (common/jsonl.py)."""
    from openpose_train.common.jsonl import read_json_lines

    done, stale, differing = {}, 0, set()
    if not os.path.isfile(path):
        return done, stale, []
    for number, row in read_json_lines(path, warn=lambda text: click.echo(f"warning: {text}", err=True),
                                       repair=True):
        try:
            iteration = row["iteration"]
        except (KeyError, TypeError):
            raise SnapshotTableError(f"{path}:{number}: not a row of validate-snapshots (a JSON object "
                                     "with an 'iteration'); delete the file to validate every snapshot "
                                     "again") from None
        recorded = row.get("scored_with")
        if recorded == scored_with:
            done[iteration] = row
            continue
        stale += 1
        if isinstance(recorded, dict):
            differing.update(k for k in set(recorded) | set(scored_with) if recorded.get(k) != scored_with.get(k))
        else:
            differing.add("settings not recorded")
    return done, stale, sorted(differing)


@click.command("validate-snapshots")
@click.argument("training_dir", type=click.Path(file_okay=False))
@click.option("--prototxt", default=None, type=click.Path(dir_okay=False),
              help="deploy prototxt (default: the model's deploy file, else a *deploy*.prototxt, "
                   "of TRAINING_DIR, the snapshot folder or the folder above)")
@_common_options
@click.option("--out-dir", default=None, type=click.Path(file_okay=False),
              help="where results, ap.jsonl and the PNG go (default TRAINING_DIR/validation)")
@click.option("--every", default=1, show_default=True, type=int, help="validate every N-th snapshot")
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option("--metrics", "metrics", default=None,
              help="comma list of body,foot,wholebody,hand,face kept per snapshot in ap.jsonl "
                   "(default: all the model and the annotations allow)")
@reports_errors
def validate_snapshots(training_dir, prototxt, model_name, model_yaml, images, annotations,
                       out_dir, every, quiet, metrics, **opts):
    """Validate every pose_iter_N.caffemodel of a training run; plot AP against iteration beside
    the training loss (PNG). Snapshots already in ap.jsonl are not validated again.

    TRAINING_DIR is the generator's output folder (snapshots in the folder of its solver's
    snapshot_prefix, e.g. model/) or the snapshot folder itself."""
    from openpose_train.generator.output_paths import check_not_an_input, check_output_folder
    from openpose_train.caffe_layers.caffe_io import read_net_prototxt
    from openpose_train.validation.inference import check_output_channels, find_deploy_prototxt
    from openpose_train.validation.plots import (PlotError, find_loss_sources, plot_ap_and_loss,
                                                 read_loss_curve)
    from openpose_train.validation.metrics import CROP_HEADLINE, LOWER_IS_BETTER, parse_metrics
    from openpose_train.validation.runner import (ap_table_row, check_limit, list_snapshots,
                                                  run_validation, scoring_settings,
                                                  snapshot_folder)
    model = _model(model_name, model_yaml)
    wanted = parse_metrics(metrics)
    snapshot_dir = snapshot_folder(training_dir)
    snapshots = list_snapshots(snapshot_dir)[::max(1, every)]
    if not snapshots:
        raise click.ClickException(f"no *_iter_N.caffemodel snapshots in {snapshot_dir}")
    # the generator writes the deploy file beside the solver; TRAINING_DIR may be model/
    deploy_dirs = list(dict.fromkeys(os.path.normpath(d) for d in (
        training_dir, snapshot_dir, os.path.join(training_dir, os.pardir))))
    for folder in ([] if prototxt else deploy_dirs):
        prototxt = find_deploy_prototxt(model, folder)
        if prototxt:
            break
    if prototxt is None:
        raise click.ClickException(f"no deploy prototxt ({model.deploy_name} or *deploy*.prototxt) "
                                   f"in {', '.join(deploy_dirs)}; give --prototxt")
    check_output_channels(prototxt, read_net_prototxt(prototxt), model)   # before any snapshot runs
    out_dir = out_dir or os.path.join(training_dir, "validation")
    check_output_folder(out_dir, "--out-dir folder")    # created by the first results file
    check_not_an_input(out_dir, [("--images", images), ("--annotations", annotations)], "--out-dir", folder=True)
    check_limit(opts["limit"])
    table_path = os.path.join(out_dir, "ap.jsonl")
    # a cached score is reused only when it was made with these settings (images, annotations,
    # deploy, resolution, scales, thresholds, limit, metrics): docs/refusals.md §Evaluation and metrics
    scored_with = scoring_settings(model, images, annotations, _settings(model, prototxt, None, opts),
                                   opts["limit"], wanted)
    done, stale, differing = _read_ap_table(table_path, scored_with)
    if stale:
        click.echo(f"{table_path}: {stale} snapshot score(s) made with other settings "
                   f"({', '.join(differing)}) are not reused; scoring with these settings", err=True)
    for iteration, caffemodel in snapshots:
        if iteration in done:
            continue
        click.echo(f"snapshot {os.path.basename(caffemodel)}")
        estimator = _network_estimator(model, prototxt, caffemodel, opts)
        summary = run_validation(
            estimator, images, os.path.join(out_dir, f"results_iter_{iteration}.json"),
            annotations, batch_size=opts["batch_size"], limit=opts["limit"],
            settings=_settings(model, prototxt, caffemodel, opts), progress=not quiet,
            metrics=wanted, echo=click.echo)
        _echo_stats(summary)
        _echo_metrics_table(summary)
        done[iteration] = dict(ap_table_row(iteration, summary), scored_with=scored_with)
        with open(table_path, "a") as f:
            f.write(json.dumps(done[iteration]) + "\n")
    loss = {}
    sources = [s for d in dict.fromkeys((snapshot_dir, training_dir)) for s in find_loss_sources(d)]
    for source in sources:
        try:
            loss[os.path.basename(source)] = read_loss_curve(source)
        except PlotError:
            continue
        break           # one source: the metrics file, else the first log with losses
    keys = CROP_HEADLINE.get(model.crop_net, ("AP", "AP50", "AR"))
    png = plot_ap_and_loss(list(done.values()), loss, os.path.join(out_dir, "ap_vs_iteration.png"),
                           title=f"{model.name}: {keys[0] if model.crop_net else 'COCO keypoint AP'} "
                                 f"per snapshot", keys=keys)
    scored = [r for r in done.values() if isinstance(r.get(keys[0]), (int, float)) and r[keys[0]] >= 0]
    if scored:
        sign = -1 if keys[0] in LOWER_IS_BETTER else 1
        best = max(scored, key=lambda r: sign * r[keys[0]])
        click.echo(f"best: iteration {best['iteration']} {keys[0]} {best[keys[0]]:.3f}")
    click.echo(f"plot: {png}")


@click.command("plot")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", default="loss.png", show_default=True, help="PNG to write")
@click.option("--smooth", default=20, show_default=True, type=int,
              help="running-mean window (displayed iterations)")
@reports_errors
def plot(sources, out, smooth):
    """Loss curve(s) from training logs, metrics JSONL files or training folders."""
    from openpose_train.validation.plots import (PlotError, find_loss_sources, plot_loss,
                                                 read_loss_curve)
    from openpose_train.generator.output_paths import check_not_an_input
    files = []
    for source in sources:
        files += find_loss_sources(source) if os.path.isdir(source) else [source]
    check_not_an_input(out, [("SOURCE", path) for path in files])
    curves = {}
    for path in files:
        try:
            curves[path] = read_loss_curve(path)
        except PlotError as exc:
            if len(files) == 1:
                raise
            click.echo(f"skipped: {exc}", err=True)
    if not curves:
        raise click.ClickException(f"no loss values in {', '.join(sources)}")
    plot_loss(curves, out, smooth=smooth)
    click.echo(f"plot: {out}")
