"""TensorBoard event files of a training run, written with ``torch.utils.tensorboard.SummaryWriter``.

Beside the JSONL metrics, in ``<snapshot_prefix>_tensorboard/`` (``tensorboard --logdir`` that
folder or its parent):

* every iteration: ``loss/total``, ``loss/smoothed``, ``loss/<output blob>`` (one per stage and
  branch of the generated nets), ``lr``, ``speed/images_per_s``, ``speed/data_wait_s``;
* every validation (``--val-interval``): ``val/<name>`` (AP, AP50, AR ...) and ``val/best``;
* every K snapshots (``--tensorboard-maps-every``, with ``--val-images``): the predicted
  heatmaps and PAF magnitudes of the current weights on a fixed validation image, each channel
  a tile over the grey image (``maps/heatmaps``, ``maps/pafs``).

A resumed run purges the earlier events after its start iteration (``purge_step``), so the curves
continue without a doubled stretch (the snapshot's own step keeps its validation and maps); a fresh
run in the same folder purges them all. The ``tensorboard`` package is needed only when this is on
(``--no-tensorboard`` turns it off); without it, training stops at once with one line saying so.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .data_sources import TrainingError


def summary_writer(log_dir: str, purge_step: Optional[int] = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise TrainingError(f"TensorBoard logging needs the 'tensorboard' package ({exc}); "
                            f"pip install tensorboard, or train with --no-tensorboard") from None
    return SummaryWriter(log_dir=log_dir, purge_step=purge_step)


def tile_grid(tiles, columns: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """Equal-sized (h, w) tiles in a near-square grid with ``pad`` px of 1.0 between them."""
    n = len(tiles)
    h, w = tiles[0].shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.ones((rows * (h + pad) - pad, columns * (w + pad) - pad), np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tile
    return grid


def map_tiles(maps: np.ndarray, grey: np.ndarray, model):
    """(heatmap tiles, PAF tiles): each channel (heatmaps incl. background; PAF x/y pairs as
    magnitudes) clipped to [0, 1], over a dimmed copy of the image."""
    base = model.num_parts + int(model.has_background)
    under = 0.3 * grey

    def over(channel):
        return np.maximum(under, np.clip(channel, 0.0, 1.0))

    heat = [over(maps[c]) for c in range(base)]
    pafs = [over(np.hypot(maps[base + 2 * i], maps[base + 2 * i + 1])) for i in range(model.num_pafs)]
    return heat, pafs


class TensorBoardLog:
    """The event-file writer of one training run (rank 0)."""

    def __init__(self, log_dir: str, purge_step: Optional[int] = None, maps_every: int = 1, maps_source=None):
        self.log_dir = log_dir
        self.writer = summary_writer(log_dir, purge_step)
        self.maps_every = int(maps_every or 0)
        self.maps_source = maps_source      # training.evaluation.Evaluator: deploy net + validation images
        self._snapshots = 0
        self._maps_image = None

    def iteration(self, record: dict) -> None:
        it = record["iteration"]
        add = self.writer.add_scalar
        add("loss/total", record["loss"], it)
        add("loss/smoothed", record["smoothed_loss"], it)
        for name, value in record.get("outputs", {}).items():
            if isinstance(value, (int, float)):
                add(f"loss/{name}", value, it)
        add("lr", record["lr"], it)
        if "images_per_s" in record:
            add("speed/images_per_s", record["images_per_s"], it)
        if "data_wait_s" in record:
            add("speed/data_wait_s", record["data_wait_s"], it)

    def validation(self, iteration: int, values: dict, best: Optional[float] = None) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"val/{name}", value, iteration)
        if best is not None:
            self.writer.add_scalar("val/best", best, iteration)
        self.writer.flush()

    def snapshot(self, trainer) -> None:
        """Every ``maps_every``-th snapshot: the predicted maps on the fixed validation image."""
        self._snapshots += 1
        if not self.maps_every or self.maps_source is None or self._snapshots % self.maps_every:
            return
        if self._maps_image is None:
            self._maps_image = self.maps_source.first_image() or ""
        if not self._maps_image:
            return
        found = self.maps_source.predicted_maps(trainer.net.caffe_weights(), self._maps_image)
        if found is None:
            return
        heat, pafs = map_tiles(*found, self.maps_source.model)
        it = trainer.solver.iter
        self.writer.add_image("maps/heatmaps", tile_grid(heat)[None], it, dataformats="CHW")
        if pafs:
            self.writer.add_image("maps/pafs", tile_grid(pafs)[None], it, dataformats="CHW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
