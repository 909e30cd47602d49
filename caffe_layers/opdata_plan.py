"""Which records make each batch of the ``OPData`` layer: the plans, and the state to resume them.

A :class:`BatchPlan` names one batch completely: its number, the source drawn (``docs/labels.md``
§Sampling; -1 = background only), the record index of every item (and of its background image) and
the seed of its augmentation, derived from ``(seed, rank, batch number)``. The planner runs in the
calling process only, in batch order; whoever executes a plan (the calling thread or a data-loader
worker) needs nothing else, so the same seed gives the same batches whatever the number of workers.

Exact resume: the planner keeps the planning state from before each planned batch until that
batch is consumed; :meth:`BatchPlanner.state_before` is what ``state_dict()`` saves.

Multi-GPU: ``rank``/``world_size`` shard every LMDB as the fork's ``Skip()`` does (record offset
``% world_size == rank``); the source draw uses the un-ranked seed, so all ranks pick the same
source for the same step (the fork shares it through static atomics). TEST reads every record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from .opdata_config import OPDataConfig, OPDataError


def choose_source(probabilities: Sequence[float], dice: float) -> int:
    """§Sampling: the first source whose cumulative probability exceeds ``dice``; -1 = background only."""
    total = 0.0
    for i, p in enumerate(probabilities):
        total += p
        if dice < total:
            return i
    return -1


@dataclass(frozen=True)
class BatchPlan:
    number: int
    source: int
    keys: tuple          # record index per item (None for background-only)
    bg_keys: tuple       # background record index per item (None without a background LMDB)
    seed: tuple          # (seed, rank, number): the batch's augmentation generator


def _copy_state(state: dict) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}


class BatchPlanner:
    """Plans the batches of one layer in order, from ``sizes`` records per source (and
    ``background_size`` background records)."""

    def __init__(self, config: OPDataConfig, sizes: Sequence[int], background_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.config, self.sizes, self.background_size = config, list(sizes), int(background_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.load({"seed": int(seed), "rank": self.rank, "world_size": self.world_size, "batch": 0,
                   "dice_rng": np.random.default_rng(int(seed)).bit_generator.state,
                   "offsets": [0] * len(self.sizes), "bg_offset": 0})

    def load(self, state: dict) -> None:
        """Plan from ``state`` on (a :meth:`state_before` result); earlier plans are forgotten."""
        if state.get("world_size", self.world_size) != self.world_size or state.get("rank", self.rank) != self.rank:
            raise OPDataError(f"state of rank {state.get('rank')}/{state.get('world_size')} loaded into rank "
                              f"{self.rank}/{self.world_size}")
        if len(state["offsets"]) != len(self.sizes):
            raise OPDataError(f"state has {len(state['offsets'])} sources, the layer {len(self.sizes)}")
        self.seed = int(state["seed"])
        self._state = _copy_state(state)
        self._dice = np.random.default_rng(self.seed)
        self._dice.bit_generator.state = state["dice_rng"]
        self._before: Dict[int, dict] = {}        # batch number -> planning state before it was planned

    @property
    def next_number(self) -> int:
        """The number the next plan gets."""
        return self._state["batch"]

    def state_before(self, number: int) -> dict:
        """The planning state from before batch ``number`` was planned (the live state when it was not yet)."""
        state = self._before.get(number)
        if state is None:
            state = dict(self._state, dice_rng=self._dice.bit_generator.state)
        return _copy_state(state)

    def consumed(self, number: int) -> None:
        """Batch ``number`` was handed out: its state (and older ones) are no longer needed."""
        for n in [n for n in self._before if n <= number]:
            del self._before[n]

    def _next_key(self, offset: int, size: int, shard: bool):
        # the fork's Skip()/Next(): walk every record, keep offset % world_size == rank (TRAIN)
        if shard and self.world_size > 1:
            offset += (self.rank - offset) % self.world_size
        return offset % size, offset + 1

    def plan(self) -> BatchPlan:
        st = self._state
        number = st["batch"]
        self._before[number] = dict(_copy_state(st), dice_rng=self._dice.bit_generator.state)
        shard = self.config.phase == "TRAIN"
        source = choose_source([s.probability for s in self.config.sources], self._dice.random())
        if source < 0 and not self.config.background:
            raise OPDataError(f"layer '{self.config.layer_name}': background-only batch drawn without "
                              f"source_background")
        keys, bg_keys = [], []
        for _ in range(self.config.batch_size):
            key = None
            if source >= 0:
                key, st["offsets"][source] = self._next_key(st["offsets"][source], self.sizes[source], shard)
            keys.append(key)
            bg = None
            if self.config.background:
                bg, st["bg_offset"] = self._next_key(st["bg_offset"], self.background_size, shard)
            bg_keys.append(bg)
        st["batch"] = number + 1
        return BatchPlan(number, source, tuple(keys), tuple(bg_keys), (self.seed, self.rank, number))

    def __iter__(self):
        """Plans without end (a data-loader sampler): each ``iter()`` continues from the current state."""
        while True:
            yield self.plan()
