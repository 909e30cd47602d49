"""Where the training loop reads a net's inputs from: one :class:`BatchSource` per data layer.

* ``OPData`` / ``Data``: ``caffe_layers.op_data.OPDataSource`` (sharded by rank, a DataLoader with workers),
  wrapped by :class:`IterableSource`;
* ``DummyData``: Caffe's DummyData layer (fillers; refilled every batch unless all are constant);
* ``Input`` / net-level ``input:`` blobs have no source in a prototxt: ``train`` refuses such nets,
  and library users (and tests) pass their own :class:`BatchSource`.

Every source has ``state_dict()`` / ``load_state_dict()`` so snapshots resume the data stream exactly.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from openpose_train.common.errors import OpenPoseTrainError


class TrainingError(OpenPoseTrainError, RuntimeError):
    """Training cannot go on (bad files, shapes, resume mismatch); the message names the file or layer."""


class BatchSource:
    """``next_batch() -> {top: tensor}`` plus resumable state."""

    def next_batch(self) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> Dict:
        return {}

    def load_state_dict(self, state: Dict) -> None:
        pass

    def close(self) -> None:
        """Stop worker processes, close files."""


class IterableSource(BatchSource):
    """Wraps an iterable data source that has state_dict/load_state_dict (e.g. OPDataSource)."""

    def __init__(self, source):
        self.source = source
        self._it = None

    def next_batch(self):
        if self._it is None:
            self._it = iter(self.source)
        return next(self._it)

    def state_dict(self):
        return self.source.state_dict() if hasattr(self.source, "state_dict") else {}

    def load_state_dict(self, state):
        if hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state)
        self._it = None

    def close(self):
        if hasattr(self.source, "close"):
            self.source.close()


def dummy_data_shapes(layer) -> List[tuple]:
    """Top shapes of a DummyData layer (``shape`` or the legacy num/channels/height/width lists)."""
    p = layer.dummy_data_param
    shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
    if not shapes and len(p.num):
        shapes = [(int(n), int(c), int(h), int(w)) for n, c, h, w in zip(p.num, p.channels, p.height, p.width)]
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    if len(shapes) != len(layer.top):
        raise TrainingError(f"DummyData layer '{layer.name}': {len(shapes)} shapes for {len(layer.top)} tops")
    return shapes


def known_input_shapes(net_param, phase: str = "TRAIN") -> Dict[str, tuple]:
    """Input blob shapes the net builder cannot infer itself (DummyData tops of ``phase``), by blob name."""
    from openpose_train.caffe_layers.net import layer_included

    shapes = {}
    for layer in net_param.layer:
        if layer.type == "DummyData" and layer_included(layer, phase):
            shapes.update(zip(layer.top, dummy_data_shapes(layer)))
    return shapes


class DummyDataSource(BatchSource):
    """Caffe's DummyData layer: one shape and filler per top (or one for all); constant fillers
    are filled once, any other filler refills every batch from a seeded generator."""

    def __init__(self, layer, seed: int = 0):
        from openpose_train.caffe_layers.layers import fill_blob

        self._fill = fill_blob
        p = layer.dummy_data_param
        self.layer = layer
        tops = list(layer.top)
        shapes = dummy_data_shapes(layer)
        fillers = list(p.data_filler) or [None]
        if len(fillers) == 1:
            fillers = fillers * len(tops)
        if len(fillers) != len(tops):
            raise TrainingError(f"DummyData layer '{layer.name}': {len(fillers)} data_fillers for {len(tops)} tops")
        self.tops, self.shapes, self.fillers = tops, shapes, fillers
        self.refill = any(f is not None and f.type != "constant" for f in fillers)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._cache = None

    def next_batch(self):
        if self._cache is not None and not self.refill:
            return dict(self._cache)
        batch = {t: self._fill(s, f, self.generator, self.layer.name)
                 for t, s, f in zip(self.tops, self.shapes, self.fillers)}
        self._cache = batch
        return dict(batch)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self._cache = None


def make_sources(net, phase: str, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, label_device="workers", pin_memory: bool = False) -> List[BatchSource]:
    """One source per data layer of ``net`` (a CaffeNet), in layer order. ``label_device``: where OPData
    renders labels ("workers": numpy in the worker processes; a torch device: per batch there);
    ``pin_memory``: OPData batches in page-locked memory (training on a GPU)."""
    sources: List[BatchSource] = []
    for layer in net.data_layers:
        if layer.type == "DummyData":
            sources.append(DummyDataSource(layer, seed + 7919 * rank))
        elif layer.type in ("OPData", "Data"):
            try:
                from openpose_train.caffe_layers.op_data import OPDataSource
            except ImportError as exc:
                raise TrainingError(f"layer '{layer.name}' ({layer.type}): the OPData reader is not "
                                    f"available ({exc})") from exc
            try:
                source = OPDataSource(layer, phase=phase, seed=seed, rank=rank, world_size=world_size,
                                      num_workers=num_workers, label_device=label_device, pin_memory=pin_memory)
            except (ValueError, OSError) as exc:  # OPDataError, a missing LMDB: one clear line
                where = f"layer '{layer.name}'"
                msg = str(exc)
                raise TrainingError(msg if msg.startswith(where) else f"{where} ({layer.type}): {msg}") from exc
            sources.append(IterableSource(source))
        else:
            raise TrainingError(f"layer '{layer.name}' ({layer.type}): the train command cannot read inputs "
                                f"for this layer type (use OPData, Data or DummyData)")
    covered = {t for layer in net.data_layers for t in layer.top}
    missing = [b for b in net.input_blobs if b not in covered]
    if missing:
        raise TrainingError(f"net '{net.name}': input blobs {', '.join(missing)} come from no data layer "
                            f"(net-level 'input:' fields); the train command needs OPData/Data/DummyData layers")
    return sources
