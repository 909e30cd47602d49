"""The training net's inputs, one batch ahead, on the training device.

:class:`BatchFeed` reads one batch from every source (:mod:`training.data_sources`) and moves it to
the device. The loop asks for the next batch right after queuing a step's backward
(:meth:`BatchFeed.prefetch`): on CUDA the host work of the next batch (waiting for the data
workers, copying into pinned memory, launching the label kernels) then runs while the GPU still
computes the previous step, and CPU tensors travel through pinned memory with non-blocking copies.

Exact resume: the sources' states are taken before each batch is read, so :meth:`state_dicts` is the
state of the next batch the net will see (a batch read ahead is read again after a resume).

``wait_s`` adds up the time spent obtaining batches: on the CPU all of it is time the step does not
compute; the loop logs the fraction (``data_wait``) and warns above :data:`DATA_WAIT_WARNING`.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

#: warn when the step waited on data for more than this fraction of the wall time
DATA_WAIT_WARNING = 0.10


class BatchFeed:
    def __init__(self, sources: Sequence, device: torch.device):
        self.sources = list(sources)
        self.device = torch.device(device)
        self._ahead: Optional[Tuple[List[Dict], Dict[str, torch.Tensor]]] = None
        self.wait_s = 0.0

    def _to_device(self, value) -> torch.Tensor:
        tensor = torch.as_tensor(value)
        if tensor.device == self.device:
            return tensor
        if self.device.type == "cuda" and tensor.device.type == "cpu":
            # a pinned copy makes the host-to-device copy asynchronous (pageable memory would block)
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _load(self):
        states = [src.state_dict() for src in self.sources]
        start = time.perf_counter()
        inputs = {}
        for src in self.sources:
            for name, value in src.next_batch().items():
                inputs[name] = self._to_device(value)
        self.wait_s += time.perf_counter() - start
        return states, inputs

    def prefetch(self) -> None:
        """Read the next batch now (the loop calls it while the device still runs the last step)."""
        if self._ahead is None:
            self._ahead = self._load()

    def next(self) -> Dict[str, torch.Tensor]:
        """The next batch: the one read ahead, or a fresh one."""
        self.prefetch()
        _, inputs = self._ahead
        self._ahead = None
        return inputs

    def state_dicts(self) -> List[Dict]:
        """Every source's state as of the next batch :meth:`next` returns."""
        if self._ahead is not None:
            return self._ahead[0]
        return [src.state_dict() for src in self.sources]

    def load_state_dicts(self, states: Sequence[Dict]) -> None:
        self._ahead = None
        for src, state in zip(self.sources, states):
            src.load_state_dict(state)
