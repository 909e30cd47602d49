"""The OPData loader's worker processes: how they start, and that they end with the training process.

Why each piece is hand-built: ``docs/architecture.md`` §Data path.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys

import cv2
import torch.utils.data

from openpose_train.common.processes import die_with_parent

from .opdata_config import register_custom_models


def init_worker(worker_id: int) -> None:
    """A loader worker: dies with the training process, even by ``kill -9``; one OpenCV thread (the
    workers are the parallelism); the layer's YAML skeletons registered (a fresh process knows only
    the registry's own tables).

    The loader's watchdog and the kernel's parent-death signal watch the parent, which is the
    forkserver, and the forkserver lives while any of its children (these workers) holds its
    liveness pipe: so the worker also waits for EOF on ``parent_watch``, a pipe whose only write end
    the training process holds (:func:`openpose_train.common.processes.die_with_parent`); the
    parent-death signal still covers a forkserver killed on its own."""
    dataset = torch.utils.data.get_worker_info().dataset
    die_with_parent(os.getppid(), dataset.parent_watch.fileno())
    cv2.setNumThreads(1)
    register_custom_models(dataset.config)


def worker_context():
    """forkserver where available (workers start from a clean process), with the loader's module
    preloaded in the server once instead of imported per worker; spawn elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["openpose_train.caffe_layers.op_data"])
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def main_module_hidden():
    """Start workers without re-running the caller's main script in them.

    spawn/forkserver children import ``__main__`` (by path or module name) so that pickled
    objects defined there resolve; ours live in this package, so hiding the main module's path and
    spec while the processes start keeps unguarded scripts (no ``if __name__ == "__main__"``)
    working, as with a plain fork.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)
