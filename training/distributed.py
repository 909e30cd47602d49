"""Multi-GPU and multi-node training through torch.distributed (torchrun; NCCL on GPUs, gloo on CPU).

What matches Caffe's multi-GPU (``P2PSync`` / NCCL in ``parallel.cpp``):

* ``batch_size`` in the prototxt is per process (per GPU): N processes see N x batch images per iteration;
* each process reads its own shard of the data (rank / world_size passed to the data source);
* gradients: Caffe all-reduces (sums) the diffs and scales them by ``1 / solver_count``; we all-reduce
  with SUM and divide by ``world_size`` -- the same mean, computed before ``ApplyUpdate`` (before
  clipping, normalisation and weight decay, as in Caffe's ``on_gradients_ready`` callback). Since
  every process then applies the same update to the same weights with the same solver history,
  the replicas stay identical without exchanging weights again;
* the root (rank 0) writes the log and snapshots; the displayed loss is the root's own loss, as in Caffe;
* with ``random_seed`` set, rank r seeds with ``random_seed + r`` (Caffe's ``solver_rank`` offset) and
  the initial weights are broadcast from rank 0 (Caffe's root solver weights).

Launch either with ``torchrun --nproc_per_node N -m openpose_train.cli train ...`` (multi-node: the usual
``--nnodes/--node_rank/--rdzv_endpoint`` flags), or with ``-gpu 0,1`` in a single process, which spawns
one worker per listed GPU on this machine (:func:`spawn`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 16 * 1024 * 1024  # 64 MB of float32 per all-reduce


@dataclass
class DistContext:
    """This process's place in the group, with the collectives the training loop needs."""

    rank: int
    world_size: int
    local_rank: int = 0
    backend: str = "gloo"

    def broadcast_params(self, tensors: Sequence[torch.Tensor]) -> None:
        """Every replica starts from rank 0's weights."""
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def average_gradients(self, tensors: Sequence[torch.Tensor]) -> None:
        """Mean of ``.grad`` over the processes (sum, then / world_size), in flat buckets."""
        with torch.no_grad():
            grads = [t.grad for t in tensors if t.grad is not None]
            bucket: List[torch.Tensor] = []
            size = 0
            for g in grads:
                bucket.append(g)
                size += g.numel()
                if size >= BUCKET_ELEMENTS:
                    self._reduce_bucket(bucket)
                    bucket, size = [], 0
            if bucket:
                self._reduce_bucket(bucket)

    def _reduce_bucket(self, grads: List[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def max_int(self, value: int) -> int:
        """The maximum of an int over the processes (signal actions, NaN flags)."""
        t = torch.tensor([int(value)], dtype=torch.int64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def gather_objects(self, obj) -> list:
        """Every process's ``obj`` as a list by rank (on every rank)."""
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def _device(self):
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set WORLD_SIZE > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(use_cuda: bool) -> Optional[DistContext]:
    """Join the process group described by torchrun's environment; None for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def shutdown(ctx: Optional[DistContext]) -> None:
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_entry(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                       "RANK": str(local_rank), "LOCAL_RANK": str(local_rank)})
    fn(*args)


def spawn(fn: Callable, world_size: int, args: tuple = ()) -> None:
    """Run ``fn(*args)`` in ``world_size`` local processes with torchrun's environment variables set.

    ``fn`` must be a module-level function (it is pickled); it calls :func:`init_from_env` itself.
    """
    import torch.multiprocessing as mp

    port = free_port()
    mp.spawn(_spawned_entry, args=(world_size, port, fn, args), nprocs=world_size, join=True)
