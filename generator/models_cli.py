"""``openpose-train models``: list the registry's models or describe one (or a YAML skeleton)."""
from __future__ import annotations

import dataclasses

import click

from openpose_train.common.errors import reports_errors
from openpose_train.generator import registry


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def model_table_rows():
    """One row per registered model: the columns of ``openpose-train models``."""
    header = ("name", "--model_pose", "parts", "PAFs", "C", "2C", "bkg", "training variants")
    rows = [header]
    for name in registry.list_models():
        m = registry.get_model(name)
        rows.append((m.name, m.openpose_name or "-", str(m.num_parts), str(m.num_pafs),
                     str(m.num_channels), str(m.label_channels), _yes_no(m.has_background),
                     " ".join(v.op_model + ("" if v.upstream else "*") for v in m.variants) or "-"))
    return rows


def dataset_table_rows():
    """One row per dataset layout: the columns of ``openpose-train models --datasets``."""
    rows = [("key", "keypoints", "LMDB string", "category", "mask", "COCO-JSON fields")]
    for key in registry.list_dataset_layouts():
        d = registry.get_dataset_layout(key)
        rows.append((d.key, str(d.num_keypoints), d.lmdb_dataset, d.category, _yes_no(d.has_mask),
                     " + ".join(d.json_fields)))
    return rows


def format_table(rows) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1]
        for row in rows)


def _source_text(source, layout) -> str:
    names = [f"{j}:{layout.keypoints[j]}" if layout else str(j) for j in source]
    return names[0] if len(names) == 1 else "avg(" + ", ".join(names) + ")"


def describe_model(model: registry.PoseModel) -> str:
    """A multi-line description of one model: parts, pairs, flips, variants with mappings."""
    parts = model.parts
    lines = [
        f"{model.name}: {model.description}".rstrip(": "),
        f"  --model_pose: {model.openpose_name or '- (not an OpenPose --model_pose)'}",
        f"  files: models/{model.model_folder}/{model.deploy_name}, "
        f"models/{model.model_folder}/{model.caffemodel_name}",
        f"  parts: {model.num_parts}  PAFs: {model.num_pafs}  background: "
        f"{_yes_no(model.has_background)}  net_output channels C = {model.num_channels}  "
        f"label channels 2C = {model.label_channels}  stride: {model.stride}",
        "  part names:",
    ]
    for i, name in enumerate(parts):
        ratio = model.sigma_ratios[i]
        lines.append(f"    {i:3d} {name}" + ("" if ratio == 1.0 else f"  (sigma ratio {ratio:.6g})"))
    runtime_index = {pair: k for k, pair in enumerate(model.runtime_pairs)}
    lines.append("  PAF pairs (training / channel order; runtime POSE_BODY_PART_PAIRS index):")
    for k, (a, b) in enumerate(model.paf_pairs):
        lines.append(f"    {k:3d} {a}-{b} {parts[a]}->{parts[b]}  "
                     f"channels {2 * k}/{2 * k + 1}  runtime {runtime_index.get((a, b), '-')}")
    flips = ", ".join(f"{parts[a]}/{parts[b]}" for a, b in model.flip_pairs) or "none"
    lines.append(f"  flip swaps: {flips}")
    t = model.thresholds
    lines.append(f"  thresholds: nms {t.nms_threshold}, connect inter {t.connect_inter_threshold}, "
                 f"min above {t.connect_inter_min_above_threshold}, min subset count "
                 f"{t.connect_min_subset_cnt}, min subset score {t.connect_min_subset_score}")
    if model.to_coco17 is not None:
        lines.append("  COCO-17 reorder: " + " ".join(map(str, model.to_coco17))
                     + ("" if model.to_coco_foot is None
                        else "   foot: " + " ".join(map(str, model.to_coco_foot))))
    if not model.variants:
        lines.append("  training variants: none")
    for v in model.variants:
        try:
            layout = registry.get_dataset_layout(v.dataset)
        except registry.UnknownModelError:
            layout = None
        lines.append(f"  training variant {v.op_model}{'' if v.upstream else ' (our extension)'}: "
                     f"dataset {v.dataset} ({v.num_lmdb_parts} keypoints, category {v.category})"
                     + (f": {layout.description}" if layout is not None and layout.description else ""))
        for i, source in enumerate(v.sources):
            if source:
                lines.append(f"    {parts[i]} <- {_source_text(source, layout)}")
        unmapped = [parts[i] for i, s in enumerate(v.sources) if not s]
        if unmapped:
            lines.append(f"    not in dataset: {', '.join(unmapped)}")
        if v.minus1_parts:
            lines.append(f"    mask person boxes only ({{-1}}): "
                         f"{', '.join(parts[i] for i in v.minus1_parts)}")
        masked = [parts[i] for i in v.empty_mask_parts if v.sources[i]]
        if masked:
            lines.append(f"    labeled but never trained (empty CHANNELS_TO_MASK): {', '.join(masked)}")
        rules = _rule_text(v, parts)
        if rules:
            lines.append(f"    label rules: {rules}")
    groups = model.person_filter
    if groups != registry.PersonFilter():
        named = [("foot parts", groups.foot_parts), ("face parts", groups.face_parts)]
        named += [(f"hand {k}", hand) for k, hand in enumerate(groups.hand_groups)]
        lines.append("  person filter: " + "; ".join(
            f"{label} {_part_range(group, parts)}" for label, group in named if group))
    return "\n".join(lines)


_RULE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(registry.TrainingVariant)
                  if f.name in registry.LABEL_RULE_FIELDS}


def _rule_text(variant, parts) -> str:
    """The variant's label-rule fields that differ from the defaults (docs/labels.md §Per-model rules)."""
    out = []
    for name in registry.LABEL_RULE_FIELDS:
        value = getattr(variant, name)
        if value == _RULE_DEFAULTS[name]:
            continue
        if name == "mask_feet_pairs":
            value = " ".join(f"{parts[a]}/{parts[b]}" for a, b in value)
        elif isinstance(value, tuple):
            value = " ".join(map(str, value))
        out.append(f"{name} {value}")
    return ", ".join(out)


def _part_range(group, parts) -> str:
    """``LBigToe..RHeel (19-24)`` for a run of consecutive parts, else the names."""
    if list(group) == list(range(group[0], group[0] + len(group))) and len(group) > 2:
        return f"{parts[group[0]]}..{parts[group[-1]]} ({group[0]}-{group[-1]})"
    return ", ".join(parts[i] for i in group)


@click.command("models")
@click.argument("name", required=False)
@click.option("--yaml", "yaml_path", type=click.Path(dir_okay=False),
              help="Describe a user skeleton YAML file (validated).")
@click.option("--datasets", is_flag=True, help="List the dataset (LMDB keypoint) layouts (with --yaml, its own too).")
@reports_errors
def models(name, yaml_path, datasets):
    """List the registered pose models, or describe NAME (registry name, --model_pose string or
    training model string such as COCO_25B_17)."""
    model = registry.load_skeleton_yaml(yaml_path) if yaml_path else None   # registers the layouts it defines
    if datasets:
        click.echo(format_table(dataset_table_rows()))
        return
    if model is not None:
        click.echo(describe_model(model))
        return
    if name is None:
        click.echo(format_table(model_table_rows()))
        click.echo("(* = our extension, not in the training fork)")
        return
    try:
        model = registry.get_model(name)
    except registry.UnknownModelError:
        try:
            model, _ = registry.get_training_variant(name)
        except registry.UnknownModelError:
            raise click.ClickException(
                f"unknown model '{name}'; known models: {', '.join(registry.list_models())}")
    click.echo(describe_model(model))
