"""``openpose-train export``: a snapshot into OpenPose's models folder (and optionally ONNX)."""
import os

import click

from openpose_train.common.errors import reports_errors
from openpose_train.generator.output_paths import check_not_an_input, make_parent_folder


@click.command("export")
@click.option("--snapshot", default=None, type=click.Path(dir_okay=False),
              help="pose_iter_N.caffemodel written by training.")
@click.option("--best", "best_dir", default=None, type=click.Path(),
              help="Instead of --snapshot: the best snapshot of a training run with --val-interval "
                   "(TRAINING_DIR holding <prefix>_best.json, or its parent, or the JSON itself).")
@click.option("--model", "model_name", default=None,
              help="Registry model, e.g. BODY_25, BODY_25B, BODY_135 (with --best: default the one it was scored as).")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False),
              help="OpenPose models/ folder (created if missing).")
@click.option("--preset", default=None, help="Generator preset the network was trained with.")
@click.option("--deploy", default=None, type=click.Path(dir_okay=False),
              help="Deploy prototxt (default: the generator's file beside the snapshot, else rendered).")
@click.option("--net-resolution", default=None, help="Printed in the OpenPose command (default per model).")
@click.option("--onnx", "onnx_path", default=None, type=click.Path(dir_okay=False),
              help="Also write an ONNX model (dynamic height/width), checked with onnxruntime.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
@click.option("--model-yaml", default=None, type=click.Path(dir_okay=False),
              help="Custom skeleton YAML the snapshot was trained with (instead of --model); written under its "
                   "model_folder.")
@click.option("--overwrite", is_flag=True,
              help="Replace a model already in the target folder (e.g. OpenPose's own), keeping its files as "
                   "<name>.bak.")
@reports_errors
def export(snapshot, best_dir, model_name, model_yaml, to, preset, deploy, net_resolution, onnx_path, opset,
           overwrite):
    """Write SNAPSHOT and its deploy prototxt where OpenPose expects them, after checking every layer."""
    from openpose_train.training.export import export_snapshot

    if (snapshot is None) == (best_dir is None):
        raise click.UsageError("give --snapshot SNAPSHOT or --best TRAINING_DIR (one of them)")
    if best_dir is not None:
        from openpose_train.training.evaluation import find_best

        snapshot, record = find_best(best_dir)
        model_name = model_name or record.get("model")
        net_resolution = net_resolution or record.get("net_resolution")
        if deploy is None and preset is None and record.get("deploy") and os.path.isfile(record["deploy"]):
            deploy = record["deploy"]
        click.echo(f"best:       iteration {record['iteration']}, {record['metric']} {record.get('key', '')} "
                   f"{record['score']:.4f} ({snapshot})")
    if model_yaml:
        from openpose_train.generator.registry import load_skeleton_yaml
        skeleton = load_skeleton_yaml(model_yaml, register_model=True)
        if model_name and model_name != skeleton.name:
            raise click.UsageError(f"--model {model_name} and --model-yaml {model_yaml} ({skeleton.name}): give one")
        model_name = skeleton.name
    if not model_name:
        raise click.UsageError("--model is required")
    if onnx_path:      # before the OpenPose files are written
        make_parent_folder(onnx_path, click.ClickException, label="--onnx", create=False)
        check_not_an_input(onnx_path, [("--snapshot", snapshot), ("--deploy", deploy)], "--onnx")
    result = export_snapshot(snapshot, model_name, to, preset=preset, deploy=deploy,
                             net_resolution=net_resolution, overwrite=overwrite)
    for backup in result.backups:
        click.echo(f"kept:       {backup} (the file --overwrite replaced)")
    click.echo(f"prototxt:   {result.prototxt}")
    click.echo(f"caffemodel: {result.caffemodel}")
    if onnx_path:
        from openpose_train.training.onnx_export import export_onnx

        report = export_onnx(result.prototxt, result.caffemodel, onnx_path, opset=opset)
        click.echo(f"onnx:       {onnx_path} (onnxruntime max |diff| vs engine = {report['max_abs_diff']:.2e})")
    click.echo("Run it with OpenPose:")
    click.echo(f"  {result.command}")
    for note in result.notes:
        click.echo(f"Note: {note}")
