"""The ``OPData`` layer's configuration: an ``OPData`` LayerParameter checked (``docs/labels.md``
§Sampling) into a picklable :class:`OPDataConfig` that the planner, the record readers and the
data-loader workers share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from openpose_train.common.errors import OpenPoseTrainError

from ..generator.registry import get_dataset_layout, get_training_variant, register, register_dataset_layout
from .augment_config import AugmentConfig, AugmentError, parse_list


class OPDataError(OpenPoseTrainError, ValueError):
    """Bad OPData configuration or record (the message names the layer, LMDB or record)."""


@dataclass(frozen=True)
class SourceSpec:
    path: str
    op_model: str
    probability: float


@dataclass(frozen=True)
class OPDataConfig:
    """Everything a worker needs, picklable."""

    layer_name: str
    sources: tuple                      # SourceSpec per source
    background: Optional[str]
    prob_only_background: float
    batch_size: int
    augment: AugmentConfig
    phase: str
    media_directory: str
    top_names: tuple
    # models from YAML skeletons (and their dataset layouts): workers start from a clean process
    # and register them again, since only the registry's own tables are known there
    custom_models: tuple = ()
    custom_layouts: tuple = ()


def parse_layer(layer_param, phase: str = "TRAIN", **augment_overrides) -> OPDataConfig:
    """Validate an OPData ``LayerParameter`` (the checks of §Sampling) into an :class:`OPDataConfig`."""
    name = layer_param.name or "OPData"
    if layer_param.type and layer_param.type != "OPData":
        raise OPDataError(f"layer '{name}' has type '{layer_param.type}', expected 'OPData'")
    tp = layer_param.op_transform_param
    try:
        aug = AugmentConfig.from_proto(tp, **augment_overrides)
    except AugmentError as exc:
        raise OPDataError(f"layer '{name}': {exc}") from None
    if tp.add_distance:
        raise OPDataError(f"layer '{name}': add_distance (deprecated distance channels) is not supported")
    if tp.taf_topology:
        raise OPDataError(f"layer '{name}': taf_topology {tp.taf_topology} (video TAFs) is not supported")
    paths = parse_list(tp.sources, str)
    if not paths:
        raise OPDataError(f"layer '{name}': op_transform_param.sources is empty")
    models = parse_list(tp.models, str)
    probs = parse_list(tp.probabilities, float)
    if len(models) == 1:
        models = models * len(paths)
    if not (len(paths) == len(models) == len(probs)):
        raise OPDataError(f"layer '{name}': {len(paths)} sources, {len(models)} models and "
                          f"{len(probs)} probabilities must match")
    if any(not 0 <= p <= 1 for p in probs):
        raise OPDataError(f"layer '{name}': probabilities {probs} must lie in [0, 1]")
    background = tp.source_background or None
    only_bkg = float(tp.prob_only_background) if background else 0.0
    if not 0 <= only_bkg < 1:
        raise OPDataError(f"layer '{name}': prob_only_background {only_bkg} must lie in [0, 1)")
    if abs(sum(probs) + only_bkg - 1) > 1e-6:
        raise OPDataError(f"layer '{name}': probabilities sum to {sum(probs)} + prob_only_background "
                          f"{only_bkg}, not 1")
    channels = set()
    custom_models, custom_layouts = {}, {}
    for m in models:
        try:
            model, variant = get_training_variant(m)
        except KeyError as exc:
            raise OPDataError(f"layer '{name}': {exc}") from None
        if not model.upstream:
            custom_models[model.name] = model
            custom_layouts[variant.dataset] = get_dataset_layout(variant.dataset)
        if not variant.label_rules_implemented:
            raise OPDataError(f"layer '{name}': model string {m}: its special label rules are not implemented")
        channels.add(model.label_channels)
    if len(channels) != 1:
        raise OPDataError(f"layer '{name}': the models {models} give different label channel counts "
                          f"{sorted(channels)} (are you using compatible models?)")
    if phase not in ("TRAIN", "TEST"):
        raise OPDataError(f"phase must be TRAIN or TEST, got {phase}")
    tops = tuple(layer_param.top) or ("image", "label")
    if layer_param.data_param.batch_size < 1:      # the fork CHECKs a positive batch size
        raise OPDataError(f"layer '{name}': data_param.batch_size is {layer_param.data_param.batch_size}; "
                          f"it must be >= 1")
    return OPDataConfig(
        layer_name=name, sources=tuple(SourceSpec(p, m, float(q)) for p, m, q in zip(paths, models, probs)),
        background=background, prob_only_background=only_bkg,
        batch_size=int(layer_param.data_param.batch_size), augment=aug, phase=phase,
        media_directory=tp.media_directory, top_names=tops,
        custom_models=tuple(custom_models.values()), custom_layouts=tuple(custom_layouts.values()))


def register_custom_models(config: OPDataConfig) -> None:
    """Make a worker know the config's YAML skeletons (see ``OPDataConfig.custom_models``)."""
    for layout in config.custom_layouts:
        register_dataset_layout(layout)
    for model in config.custom_models:
        register(model)
