"""Render a model's files through the Jinja2 templates in ``templates/``.

Public API::

    render_deploy(model_name, preset=None, **options) -> str
    render_training(model_name, preset=None, **options) -> str
    render_solver(model_name, preset=None, **options) -> str
    render_model_files(model_name, out_dir, preset=None, **options) -> {file kind: path}

``options`` are the fields of :class:`GeneratorOptions` (batch_size, crop_size, datasets, base_lr,
paf_stages, ...); anything left ``None`` comes from the preset's recipe. All model facts (channel
counts, background channel, training model strings, file names) come from the registry.

Mapping of the old OPData field names (body_25 / 1_25BBkg reference files) onto today's fork proto
(``docs/formats.md`` §Prototxt dialect), as written by :func:`render_training`:

=============================  =============================================================
reference field                written as
=============================  =============================================================
``data_param.source``          first entry of ``op_transform_param.sources``
``model``                      first entry of ``models``
``source_secondary``           second entry of ``sources``
``model_secondary``            second entry of ``models``
``prob_secondary: p``          ``probabilities: "1-p;p"`` (body_25: ``0.05;0.95``)
``max_rotate_degree: 45``      ``max_degree_rotations: "45.0;..."`` (one value per source)
``scale_min`` / ``scale_max``  ``scale_mins`` / ``scale_maxs`` (one value per source)
``number_max_occlusions: 2``   ``number_max_occlusions: "2;..."`` (string, one per source)
(sigmas absent)                ``sigmas: "7.0;..."`` (the proto default, written out)
=============================  =============================================================

Per-source lists are always written with one entry per source. The fork pads a short list with
its first entry, so ``scale_maxs: "1.5"`` (1_25BBkg) and ``"1.5;1.5;1.5"`` train the same; the
BODY_135 reference's 15-entry scale strings are written as the 9 values the fork actually reads.
Parameter blocks: deploy files keep the reference's exact format; training files write every
``decay_mult`` as an integer (the body_25 reference wrote ``1.0``/``0.0``: same value) and every
PReLU with ``prelu_param { channel_shared: false }`` (the proto default, also written by 1_25BBkg).
The solver keeps the reference values (Adam, momentum 0.9/0.999, weight decay 5e-4, multistep with
gamma 0.5 at the ten step values, display 20, snapshot 2000, max_iter 1e6) without its comments.
"""
from __future__ import annotations

import shlex
import struct
from dataclasses import dataclass, field, fields as dc_fields, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import jinja2

from openpose_train.common import files
from openpose_train.common.errors import OpenPoseTrainError

from . import families
from .families import DatasetSpec, Float32Text, Layer, Net, Preset, Token
from .output_paths import make_output_folder
from .registry import get_model


TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"
DEFAULT_STEPVALUES = (200000, 300000, 360000, 420000, 480000, 540000, 600000, 700000, 800000, 900000)
FILE_KINDS = ("deploy", "training", "solver", "train_script", "resume_script")
DEFAULT_RANDOM_SEED = 1
# The Caffe fork copies occluders out of a background image, so occlusions need a background LMDB
# (docs/compatibility.md).
# torchvision's VGG-19 ImageNet weights file: `openpose-train vgg` converts it into the -weights caffemodel.
TORCHVISION_VGG19 = families.INITIAL_WEIGHTS["vgg19"].torchvision_file
NO_BACKGROUND_NOTE = ("no --background-lmdb: occlusions set to 0 (the Caffe fork copies occluders from "
                      "background images)")


class GeneratorError(OpenPoseTrainError, ValueError):
    """Options that cannot produce a valid training setup (the message says which)."""


@dataclass(frozen=True)
class GeneratorOptions:
    """Everything a user may set without editing code. ``None`` = the preset's value."""

    batch_size: Optional[int] = None
    crop_size: Optional[Tuple[int, int]] = None          # (width, height)
    datasets: Optional[Tuple[DatasetSpec, ...]] = None    # probability None = shares what is left
    dataset_dir: str = "dataset"                          # where the preset's default LMDB names live
    drop_sources: Tuple[str, ...] = ()                    # preset source folder names left out
    background_lmdb: Optional[str] = None                 # "" = none
    prob_only_background: Optional[float] = None
    media_directory: Optional[str] = None
    stride: int = 8
    target_dist: float = 0.6
    scale_prob: float = 1.0
    center_perterb_max: float = 40.0
    center_swap_prob: float = 0.0
    normalization: int = 0
    # solver
    solver_type: str = "Adam"
    base_lr: Optional[float] = None
    momentum: float = 0.9
    momentum2: float = 0.999
    weight_decay: float = 0.0005
    lr_policy: str = "multistep"
    gamma: float = 0.5
    stepvalues: Optional[Tuple[int, ...]] = None
    stepsize: Optional[int] = None
    power: Optional[float] = None
    max_iter: int = 1000000
    snapshot_interval: int = 2000
    snapshot_prefix: str = "model/pose"
    display: int = 20
    gpus: str = "0"                                       # "" = CPU (solver_mode CPU, no -gpu)
    vgg_weights: Optional[str] = None                     # -weights of train_pose.sh: None = the preset's
                                                          # ImageNet caffemodel (VGG-19 or MobileNetV2), "" = none
    random_seed: int = DEFAULT_RANDOM_SEED                # < 0: not written (Caffe draws a seed per run)
    # evaluation during training, passed by the scripts to `openpose-train train` (0 = none)
    val_images: str = ""
    val_annotations: str = ""
    val_interval: int = 0
    val_metric: str = "body"
    # a YAML skeleton's file, copied beside the scripts, which pass it to `openpose-train train`
    model_yaml: str = ""
    # network controls
    paf_stages: Optional[int] = None
    heat_stages: Optional[int] = None
    width: Optional[int] = None


def _options(kwargs) -> GeneratorOptions:
    known = {f.name for f in dc_fields(GeneratorOptions)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown generator option(s): {', '.join(unknown)}")
    return GeneratorOptions(**kwargs)


# -------------------------------------------------------------------------------------------
# Jinja2 environment
# -------------------------------------------------------------------------------------------
def format_value(value) -> str:
    """A protobuf text-format scalar: enums bare, strings quoted, bools lower case, floats repr."""
    if isinstance(value, Float32Text):
        text = "%.12g" % struct.unpack("<f", struct.pack("<f", value))[0]
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_list_number(value) -> str:
    """A number inside a ';'-joined OPData list, as the training fork's Python 2 scripts wrote it."""
    if isinstance(value, int):
        return str(value)
    text = "%.12g" % value
    return text if any(c in text for c in ".en") else text + ".0"


_ENV = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), trim_blocks=True,
                                 lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
                                 undefined=jinja2.StrictUndefined)
        env.filters["pbvalue"] = format_value
        env.tests["submessage"] = lambda v: isinstance(v, tuple)
        _ENV = env
    return _ENV


# -------------------------------------------------------------------------------------------
# Network
# -------------------------------------------------------------------------------------------
def resolve_preset(model_name: str, preset: Optional[str]) -> Preset:
    return families.get_preset(preset or families.default_preset_name(get_model(model_name).name))


def build_net(model_name: str, preset: Optional[str] = None, paf_stages=None, heat_stages=None,
              width=None) -> Net:
    """The network of ``model_name`` built by its (or the given) preset's family."""
    model = get_model(model_name)
    fam = resolve_preset(model_name, preset).family
    if paf_stages is not None or heat_stages is not None or width is not None:
        fam = fam.with_controls(paf_stages=paf_stages, heat_stages=heat_stages, width=width)
    heat = model.num_parts + int(model.has_background)
    return fam.build(heat, 2 * model.num_pafs)


def _styled(pre: Preset, layers, deploy: bool):
    """Apply the preset's text conventions (BODY_25's bare deploy, BODY_135's float32 text)."""
    if deploy and not pre.deploy_learning_params:
        layers = [l.without_learning_params() for l in layers]
    if deploy:
        # Deploy nets always normalise with the stored statistics; training files leave use_global_stats
        # to Caffe's phase default (false in TRAIN, true in TEST), docs/compatibility.md §Light models.
        layers = [replace(l, fields=l.fields + (("batch_norm_param", (("use_global_stats", True),)),))
                  if l.type == "BatchNorm" else l for l in layers]
    if not pre.prelu_param:
        layers = [replace(l, fields=tuple(f for f in l.fields if f[0] != "prelu_param")) for l in layers]
    if pre.float32_text:
        layers = [l.with_float32_text() for l in layers]
    return layers


def render_deploy(model_name: str, preset: Optional[str] = None, **options) -> str:
    """The deploy prototxt text (byte-identical to upstream for the shipped models/presets)."""
    opts = _options(options)
    model = get_model(model_name)
    pre = resolve_preset(model_name, preset)
    net = build_net(model_name, preset, opts.paf_stages, opts.heat_stages, opts.width)
    layers = _styled(pre, net.layers, deploy=True)
    text = environment().get_template("deploy.prototxt.j2").render(
        header=pre.header, model_name=model.name, num_channels=model.num_channels, layers=layers)
    return _with_skeleton_header(text, model, opts.model_yaml)


def _with_skeleton_header(text: str, model, yaml_name: str) -> str:
    """A YAML skeleton's prototxt starts with a comment naming the skeleton and its digest, which training,
    validation and export compare with the YAML they are given (docs/refusals.md §YAML skeletons)."""
    if not yaml_name:
        return text
    from .skeleton import skeleton_header
    return skeleton_header(model, yaml_name) + text


# -------------------------------------------------------------------------------------------
# Training net
# -------------------------------------------------------------------------------------------
def default_datasets(model_name: str, preset: Optional[str] = None, dataset_dir: str = "dataset",
                     drop_sources: Sequence[str] = ()):
    """The preset's training sources with their registry model strings, less ``drop_sources``
    (preset LMDB folder names, e.g. ``lmdb_face_frgc``). Probabilities stay the preset's; the
    caller scales them to ``1 - prob_only_background`` (:func:`resolve_sources`)."""
    model = get_model(model_name)
    pre = resolve_preset(model_name, preset)
    recipe = pre.recipe
    names = [d.lmdb for d in recipe.datasets]
    unknown = [n for n in drop_sources if n not in names]
    if unknown:
        raise GeneratorError(f"--drop-source {unknown[0]}: preset {pre.name} has no such source; its sources are "
                             f"{', '.join(names) or 'none (one LMDB per model)'}")
    kept = [d for d in recipe.datasets if d.lmdb not in drop_sources]
    if recipe.datasets and not kept:
        raise GeneratorError(f"--drop-source leaves preset {pre.name} without sources; give --lmdb instead")
    by_dataset = {v.dataset: v for v in model.variants}
    specs = []
    for d in kept:
        variant = by_dataset.get(d.dataset)
        if variant is None:
            raise GeneratorError(f"model {model.name} has no training variant for dataset '{d.dataset}' "
                                 f"used by its preset; give --lmdb PATH --lmdb-model with one of: "
                                 f"{', '.join(v.op_model for v in model.variants) or 'none'}")
        specs.append(replace(d, lmdb=_join(dataset_dir, d.lmdb), op_model=variant.op_model))
    if not specs:
        if not model.variants:
            raise GeneratorError(f"model {model.name} has no training model string in the OpenPose training "
                                 "fork (no registry variant), so no OPData layer can feed it; "
                                 "use --deploy-only for its deploy prototxt")
        variant = model.variants[0]
        specs.append(DatasetSpec(_join(dataset_dir, f"lmdb_{variant.dataset}"), 1.0, variant.op_model,
                                 variant.dataset))
    return tuple(specs)


@dataclass(frozen=True)
class Sources:
    """The OPData layer's sources after the probability and fork-safety rules (README, generator bullet)."""

    datasets: Tuple[DatasetSpec, ...]
    background: str                       # "" = none
    prob_only_background: float
    notes: Tuple[str, ...] = ()           # one line each, printed by the CLI


def _list_text(values) -> str:
    """A ';'-joined per-source OPData list."""
    return ";".join(format_list_number(v) for v in values)


def resolve_sources(model_name: str, preset: Optional[str], opts: GeneratorOptions) -> Sources:
    """Training sources, background LMDB and probabilities, by these rules:

    * ``prob_only_background``: ``--prob-only-background`` if given, else the preset's when there is a
      background LMDB, else 0.
    * the preset's own sources (no ``--lmdb``) keep their relative weights, scaled to sum to
      ``1 - prob_only_background`` (so ``--drop-source`` re-normalises the rest);
    * ``--lmdb`` sources without a probability share ``1 - prob_only_background - (the given ones)``
      equally; given probabilities plus ``prob_only_background`` must sum to 1;
    * no background LMDB: every source's occlusions are 0 (the fork copies occluders out of
      background images and crashes without one; docs/compatibility.md).
    """
    recipe = resolve_preset(model_name, preset).recipe
    user = opts.datasets is not None
    if user and opts.drop_sources:
        raise GeneratorError("--drop-source leaves out preset sources; with --lmdb list only the sources you want")
    datasets = list(opts.datasets if user else default_datasets(model_name, preset, opts.dataset_dir,
                                                                 opts.drop_sources))
    background = opts.background_lmdb
    if background is None:
        # The preset's background LMDB goes with the preset's sources; user LMDBs come without one.
        background = _join(opts.dataset_dir, recipe.background_lmdb) if not user and recipe.background_lmdb else ""
    if opts.prob_only_background is not None:
        pob = opts.prob_only_background
        if pob and not background:
            raise GeneratorError("--prob-only-background needs --background-lmdb")
    else:
        pob = recipe.prob_only_background if background else 0.0
    if not 0.0 <= pob < 1.0:
        raise GeneratorError(f"prob_only_background must be in [0, 1), got {pob}")
    if user:
        given = [d.probability for d in datasets if d.probability is not None]
        missing = sum(d.probability is None for d in datasets)
        rest = 1.0 - pob - sum(given)
        if missing:
            if rest <= 1e-9:
                raise GeneratorError(
                    f"--lmdb probabilities {_list_text(given)} plus prob_only_background {pob:g} leave "
                    f"nothing for the {missing} --lmdb without one: lower them to sum below {1.0 - pob:g}")
            datasets = [d if d.probability is not None else replace(d, probability=rest / missing)
                        for d in datasets]
        elif abs(rest) > 1e-6:
            raise GeneratorError(
                f"--lmdb probabilities {_list_text(given)} sum to {sum(given):g}, but with "
                f"prob_only_background {pob:g} they must sum to {1.0 - pob:g} (the OPData layer refuses otherwise): "
                f"change the PATH:PROBABILITY values, leave one out to take the rest, or set --prob-only-background")
    else:
        total = sum(d.probability for d in datasets)
        if abs(total - (1.0 - pob)) > 1e-9:
            datasets = [replace(d, probability=d.probability * (1.0 - pob) / total) for d in datasets]
    notes = []
    if not background and any(d.max_occlusions for d in datasets):
        datasets = [replace(d, max_occlusions=0) for d in datasets]
        notes.append(NO_BACKGROUND_NOTE)
    return Sources(tuple(datasets), background, float(pob), tuple(notes))


def training_sources(model_name: str, preset: Optional[str] = None, **options) -> Sources:
    """The training net's sources as :func:`render_training` writes them (``notes``: what was changed
    for the Caffe fork's sake, one line each)."""
    return resolve_sources(model_name, preset, _options(options))


def _join(folder, name):
    return f"{folder.rstrip('/')}/{name}" if folder else name


def _label_plumbing(model, net: Net):
    paf = 2 * model.num_pafs
    heat = model.num_parts + int(model.has_background)
    layers = []
    if paf:
        points = (paf, paf + heat, 2 * paf + heat)
        tops = ("vec_weight", "heat_weight", "vec_temp", "heat_temp")
    else:
        points, tops = (heat,), ("heat_weight", "heat_temp")
    layers.append(Layer(tops[0], "Slice", ("label",), tops, fields=(
        ("slice_param", tuple(("slice_point", p) for p in points) + (("axis", 1),)),)))
    prod = (("eltwise_param", (("operation", Token("PROD")),)),)
    layers.append(Layer("label_heat", "Eltwise", ("heat_weight", "heat_temp"), ("label_heat",), fields=prod))
    if paf:
        layers.append(Layer("label_vec", "Eltwise", ("vec_weight", "vec_temp"), ("label_vec",), fields=prod))
    return layers


def _loss_layers(out: families.StageOutput):
    weight, label = ("vec_weight", "label_vec") if out.branch == "paf" else ("heat_weight", "label_heat")
    prod = (("eltwise_param", (("operation", Token("PROD")),)),)
    return [Layer(f"weight_{out.suffix}", "Eltwise", (out.top, weight), (f"weight_{out.suffix}",), fields=prod),
            Layer(f"loss_{out.suffix}", "EuclideanLoss", (f"weight_{out.suffix}", label), (f"loss_{out.suffix}",),
                  fields=(("loss_weight", 1.0),))]


def _data_layer(model_name, preset, opts: GeneratorOptions) -> Layer:
    recipe = resolve_preset(model_name, preset).recipe
    sources = resolve_sources(model_name, preset, opts)
    datasets, background, pob = sources.datasets, sources.background, sources.prob_only_background
    probs = [d.probability for d in datasets]
    crop = opts.crop_size or recipe.crop_size
    media = opts.media_directory if opts.media_directory is not None else recipe.media_directory
    joined = _list_text
    transform = [
        ("stride", opts.stride),
        ("max_degree_rotations", joined(d.max_rotation for d in datasets)),
        ("crop_size_x", crop[0]), ("crop_size_y", crop[1]),
        ("center_perterb_max", float(opts.center_perterb_max)),
        ("center_swap_prob", float(opts.center_swap_prob)),
        ("scale_prob", float(opts.scale_prob)),
        ("scale_mins", joined(d.scale_min for d in datasets)),
        ("scale_maxs", joined(d.scale_max for d in datasets)),
        ("target_dist", float(opts.target_dist)),
        ("number_max_occlusions", joined(int(d.max_occlusions) for d in datasets)),
        ("sigmas", joined(float(d.sigma) for d in datasets)),
        ("models", ";".join(d.op_model for d in datasets)),
        ("sources", ";".join(d.lmdb for d in datasets)),
        ("probabilities", joined(probs)),
    ]
    if background:
        transform += [("source_background", background), ("prob_only_background", float(pob))]
    if media is not None:
        transform.append(("media_directory", media))
    transform += [("normalization", opts.normalization), ("add_distance", False)]
    batch = opts.batch_size or recipe.batch_size
    return Layer("image", "OPData", (), ("image", "label"), fields=(
        ("data_param", (("batch_size", batch), ("backend", Token("LMDB")))),
        ("op_transform_param", tuple(transform))))


def training_layers(model_name: str, preset: Optional[str] = None, **options):
    """The training net as Layer records: OPData, label Slice/Eltwise, the network, one
    weighted EuclideanLoss per stage and branch (right after that stage's output conv)."""
    opts = _options(options)
    model = get_model(model_name)
    net = build_net(model_name, preset, opts.paf_stages, opts.heat_stages, opts.width)
    losses = {}
    for out in net.stage_outputs:
        losses[out.top] = _loss_layers(out)
    layers = [_data_layer(model_name, preset, opts)] + _label_plumbing(model, net)
    for l in net.layers:
        if l.deploy_only:
            continue
        layers.append(l)
        if l.type == "Convolution" and l.tops[0] in losses:
            layers += losses.pop(l.tops[0])
    return layers


def render_training(model_name: str, preset: Optional[str] = None, **options) -> str:
    """``pose_training.prototxt`` text."""
    layers = _styled(resolve_preset(model_name, preset), training_layers(model_name, preset, **options), False)
    text = environment().get_template("training.prototxt.j2").render(layers=layers)
    return _with_skeleton_header(text, get_model(model_name), _options(options).model_yaml)


def render_solver(model_name: str, preset: Optional[str] = None, **options) -> str:
    """``pose_solver.prototxt`` text (reference values; see module docstring)."""
    opts = _options(options)
    recipe = resolve_preset(model_name, preset).recipe
    stepvalues = opts.stepvalues if opts.stepvalues is not None else (
        DEFAULT_STEPVALUES if opts.lr_policy == "multistep" else ())
    if opts.lr_policy == "multistep" and not stepvalues:
        raise GeneratorError("lr_policy multistep needs at least one --stepvalue")
    if opts.lr_policy == "step" and not opts.stepsize:
        raise GeneratorError("lr_policy step needs --stepsize")
    return environment().get_template("solver.prototxt.j2").render(
        o=opts, base_lr=opts.base_lr if opts.base_lr is not None else recipe.base_lr,
        stepvalues=stepvalues, fmt=format_value)


def render_scripts(model_name: str, preset: Optional[str] = None, **options) -> Dict[str, str]:
    """``train_pose.sh`` and ``resume_train.sh`` (run ``${CAFFE:-openpose-train} train ...``)."""
    opts = _options(options)
    pre = resolve_preset(model_name, preset)
    ctx = dict(model=get_model(model_name).name, preset=pre.name, gpus=opts.gpus,
               vgg_weights=initial_weights(pre.name, opts.vgg_weights), snapshot_prefix=opts.snapshot_prefix,
               vgg_command=vgg_command("$WEIGHTS", pre.name), val_args=val_args(opts), model_yaml=opts.model_yaml)
    env = environment()
    return {"train_script": env.get_template("train_pose.sh.j2").render(**ctx),
            "resume_script": env.get_template("resume_train.sh.j2").render(**ctx)}


def val_args(opts: GeneratorOptions) -> str:
    """The ``train --val-*`` flags of the scripts, shell-quoted ('' without --val-interval)."""
    given = {"--val-images": opts.val_images, "--val-annotations": opts.val_annotations,
             "--val-interval": opts.val_interval}
    if not any(given.values()):
        return ""
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise GeneratorError(f"evaluation during training needs --val-images, --val-annotations and "
                             f"--val-interval; missing {', '.join(missing)}")
    if opts.val_interval < 0:
        raise GeneratorError(f"--val-interval {opts.val_interval}: must be a positive number of iterations")
    args = [*given.items(), ("--val-metric", opts.val_metric)]
    return " ".join(f"{name} {shlex.quote(str(value))}" for name, value in args)


def initial_weights(preset: str, given: Optional[str] = None) -> str:
    """``-weights`` of train_pose.sh: ``given`` ("" = none), else the preset's ImageNet caffemodel."""
    return given if given is not None else families.get_preset(preset).init.path


def vgg_command(path: str, preset: Optional[str] = None) -> str:
    """The command that makes the initial ImageNet weights at ``path`` (VGG-19 unless the preset's
    front end starts from another network)."""
    init = families.get_preset(preset).init if preset else families.INITIAL_WEIGHTS["vgg19"]
    return init.command(path)


def write_atomic(path: Path, text: str, mode: Optional[int] = None) -> Path:
    """Write through a temporary name in the same folder, then rename (docs/architecture.md
    §Writing files), with Unix line ends and mode 0644 unless ``mode`` is given. A folder that cannot
    be made or written raises :class:`GeneratorError` naming the path."""
    path = Path(path)
    make_output_folder(path.parent, "output folder", GeneratorError)
    try:
        files.write_atomic(path, text, mode=mode if mode is not None else 0o644, newline="\n")
    except OSError as exc:
        raise GeneratorError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def file_names(model_name: str) -> Dict[str, str]:
    model = get_model(model_name)
    return {"deploy": model.deploy_name or "pose_deploy.prototxt", "training": "pose_training.prototxt",
            "solver": "pose_solver.prototxt", "train_script": "train_pose.sh", "resume_script": "resume_train.sh"}


def render_model_files(model_name: str, out_dir, preset: Optional[str] = None, **options) -> Dict[str, Path]:
    """Render all five files into ``out_dir`` (atomic writes); returns {file kind: path}.

    Everything is rendered before anything is written, so bad options leave ``out_dir`` untouched.
    """
    texts = {"deploy": render_deploy(model_name, preset, **options),
             "training": render_training(model_name, preset, **options),
             "solver": render_solver(model_name, preset, **options)}
    texts.update(render_scripts(model_name, preset, **options))
    names = file_names(model_name)
    out = Path(out_dir)
    paths = {}
    for kind in FILE_KINDS:
        paths[kind] = write_atomic(out / names[kind], texts[kind], 0o755 if kind.endswith("script") else None)
    return paths
