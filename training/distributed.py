"""Multi-GPU and multi-node training through torch.distributed (torchrun; NCCL on GPUs, gloo on CPU).

What matches Caffe's multi-GPU (``P2PSync`` / NCCL in ``parallel.cpp``):

* ``batch_size`` in the prototxt is per process (per GPU): N processes see N x batch images per iteration;
* each process reads its own shard of the data (rank / world_size passed to the data source);
* gradients: Caffe all-reduces (sums) the diffs and scales them by ``1 / solver_count``. We wrap the net
  in ``torch.nn.parallel.DistributedDataParallel`` (:meth:`DistContext.wrap`), which averages the
  gradients over the processes during backward (buckets overlapped with the backward pass) -- the same
  mean, available before ``ApplyUpdate`` (before clipping, iter_size normalisation and weight decay, as
  in Caffe's ``on_gradients_ready`` callback). With ``iter_size > 1`` the first ``iter_size - 1``
  passes run under ``no_sync()``: the accumulated sum is averaged once, in the last pass. Since every
  process then applies the same update to the same weights with the same solver history, the replicas
  stay identical without exchanging weights again;
* the root (rank 0) writes the log and snapshots; the displayed loss is the root's own loss, as in Caffe;
* with ``random_seed`` set, rank r seeds with ``random_seed + r`` (Caffe's ``solver_rank`` offset) and
  the initial (or restored) weights are broadcast from rank 0 when DDP wraps the net (Caffe's root
  solver weights).

Launch either with ``torchrun --nproc_per_node N -m openpose_train.cli train ...`` (multi-node: the usual
``--nnodes/--node_rank/--rdzv_endpoint`` flags), or with ``-gpu 0,1`` in a single process, which spawns
one worker per listed GPU on this machine (:func:`spawn`).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.common.processes import process_running

from .data_sources import TrainingError



# DDP's "buffers synced once, at the start": `forward_sync_buffers=False` from torch 2.13 on (where
# `broadcast_buffers` warns that it is deprecated), `broadcast_buffers=False` before (setup.py allows 2.1)
_NO_FORWARD_BUFFER_SYNC = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})


@dataclass
class DistContext:
    """This process's place in the group, with the collectives the training loop needs."""

    rank: int
    world_size: int
    local_rank: int = 0
    backend: str = "gloo"
    peers: tuple = ()       # (host name, PID) of every rank, by rank (gathered at the start)

    def wrap(self, net: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
        """``net`` in DDP: rank 0's weights broadcast now, gradients averaged in every synced backward.

        Buffers are broadcast from rank 0 once, here, and not again each forward (Caffe never
        synchronises them after the start).
        """
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=device_ids, **_NO_FORWARD_BUFFER_SYNC)

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

    def dead_ranks(self, wait_s: float = 3.0) -> list:
        """The other ranks on this machine whose process is gone (after a collective failed; ranks on
        other machines cannot be checked from here). A dying process closes its sockets before it is
        gone, so the collective can fail first: look again for up to ``wait_s`` seconds."""
        import time

        host = socket.gethostname()
        deadline = time.monotonic() + wait_s
        while True:
            dead = [rank for rank, (peer_host, pid) in enumerate(self.peers)
                    if rank != self.rank and peer_host == host and not process_running(pid)]
            if dead or time.monotonic() > deadline:
                return dead
            time.sleep(0.05)

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
    ctx = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)
    ctx.peers = tuple(tuple(peer) for peer in ctx.gather_objects((socket.gethostname(), os.getpid())))
    return ctx


def shutdown(ctx: Optional[DistContext], clean: bool = True) -> None:
    """Leave the process group. ``clean`` (every rank finished the same collectives): wait for the others
    first, so that no rank closes its connections while a peer still completes the last collective (gloo
    then aborts the peer with SIGABRT, "terminate called without an active exception"); after a failure
    there is no barrier, since a peer may be gone."""
    if ctx is None or not dist.is_initialized():
        return
    try:
        if clean:
            dist.barrier()
    except RuntimeError:        # a peer died after all: tear down what is left
        pass
    try:
        dist.destroy_process_group()
    except RuntimeError:    # the group is broken (a process died): nothing left to tear down
        pass


@contextlib.contextmanager
def process_group(use_cuda: bool) -> Iterator[Optional[DistContext]]:
    """:func:`init_from_env` for the ``with`` block, then :func:`shutdown`, clean unless the block raised."""
    ctx = init_from_env(use_cuda)
    try:
        yield ctx
    except BaseException:
        shutdown(ctx, clean=False)
        raise
    shutdown(ctx, clean=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# exit status of a spawned rank that printed its own one-line error
REPORTED_EXIT = 3


class SpawnedRankFailed(TrainingError):
    """A process started by :func:`spawn` failed. ``reported``: a rank printed its own ``Error:`` line
    (then the command adds none)."""

    def __init__(self, message: str, reported: bool = False):
        super().__init__(message)
        self.reported = reported


def _spawned_entry(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                       "RANK": str(local_rank), "LOCAL_RANK": str(local_rank),
                       "LOCAL_WORLD_SIZE": str(world_size)})
    try:
        fn(*args)
    except OpenPoseTrainError as exc:   # bad input or a dead peer: one line, as from one process
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        sys.exit(REPORTED_EXIT)


def spawn(fn: Callable, world_size: int, args: tuple = ()) -> None:
    """Run ``fn(*args)`` in ``world_size`` local processes with torchrun's environment variables set.

    ``fn`` must be a module-level function (it is pickled); it calls :func:`init_from_env` itself.
    When one process fails, the others get SIGTERM (they snapshot, or stop with one line when their
    collectives fail) and :class:`SpawnedRankFailed` says which failed, unless a rank already did.
    """
    import torch.multiprocessing as mp

    port = free_port()
    context = mp.start_processes(_spawned_entry, args=(world_size, port, fn, args), nprocs=world_size, join=False,
                                 start_method="spawn")
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as exc:
        reported = any(p.exitcode == REPORTED_EXIT for p in context.processes)
        how = f"was ended by {exc.signal_name}" if exc.signal_name else f"exited with status {exc.exit_code}"
        raise SpawnedRankFailed(f"rank {exc.error_index} (PID {exc.error_pid}) {how}", reported=reported) from None
