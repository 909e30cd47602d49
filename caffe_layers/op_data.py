"""The ``OPData`` layer as a data source: LMDB records -> augmented images + labels, batched.

``OPDataSource`` is what the training engine reads from, a plain Python iterator of
``{top_name: tensor}``: a ``torch.utils.data.DataLoader`` over batch plans (``docs/architecture.md``
§Data path, which also says why each hand-built piece here stays):

* the calling process *plans* every batch (``opdata_plan.BatchPlanner``: source draw, record keys,
  augmentation seed) through the loader's sampler, so the same seed gives the same batches
  whatever the workers do, and ``state_dict()`` resumes exactly;
* a :class:`PlanDataset` executes a plan (``opdata_batch.run_plan``: read, augment, and in
  ``label_device="workers"`` mode render the labels) into a shared :class:`BatchSlots` slot, in the
  loader's workers or, with ``num_workers=0``, in the calling thread;
* the calling process copies each batch out of its slot: the uint8 images normalised (``cv2.LUT``
  of the 256 results of the torch ops), the labels, or, with ``label_device`` a torch device, the
  labels of the whole batch rendered there (``labels_torch``; workers then send the mask grids and
  keypoints only).

Workers start from a ``forkserver`` (a plain fork would inherit the caller's OpenCV/OpenMP thread
pools and CUDA state, which deadlock in the child), persist between resets, and die with the
training process (``opdata_workers``).

Not implemented (refused with a clear message): ``add_distance``, ``taf_topology`` and the
MPII_65_42 / CAR_12 / COCO_59_17 label rules.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.utils.data

from . import augment as A
from .opdata_batch import RecordReaders, normalize_batch, normalize_batch_lut, run_plan
from .opdata_config import OPDataConfig, OPDataError, parse_layer
from .opdata_plan import BatchPlanner
from .opdata_workers import init_worker, main_module_hidden, worker_context

__all__ = ["OPDataSource", "OPDataError", "default_workers", "source_from_prototxt"]


class BatchSlots:
    """The batches being made: ``count`` (images, labels) buffers, in shared memory when workers write
    them. Created in the calling process and handed to the workers once, at their start: a task
    names its slot, and a finished batch comes back as its slot number, read in place.

    Why not a fresh tensor per batch, sent back through the loader's queue (``default_collate``'s
    way): each then costs a new shared-memory mapping, its page faults in both processes and a file
    descriptor handed over per tensor, measured at about twice the calling process's time per
    batch (docs/architecture.md §Data path)."""

    def __init__(self, count: int, image_shape, label_shape, with_labels: bool, shared: bool):
        self.images = torch.empty((count,) + tuple(image_shape), dtype=torch.uint8)
        self.labels = torch.empty((count,) + tuple(label_shape)) if with_labels else None
        if shared:
            self.images.share_memory_()
            if self.labels is not None:
                self.labels.share_memory_()
        self.free = list(range(count))

    def take(self) -> int:
        return self.free.pop()

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def reset(self) -> None:
        self.free = list(range(self.images.shape[0]))

    def __getstate__(self):                   # workers need the buffers, not the free list
        return {"images": self.images, "labels": self.labels, "free": []}


class PlanSampler(torch.utils.data.Sampler):
    """The loader's sampler: the planner's plans, each with a free slot to write its batch into."""

    def __init__(self, planner: BatchPlanner, slots: BatchSlots):
        self.planner, self.slots = planner, slots

    def __iter__(self):
        for plan in self.planner:
            yield plan, self.slots.take()


class PlanDataset(torch.utils.data.Dataset):
    """``dataset[(plan, slot)]`` -> ``(plan number, slot, label inputs or None, error or None)``: the
    batch is written into the slot (labels too, in ``label_device="workers"`` mode).

    A known data error (a bad record, say) comes back as a message, raised in the calling process
    as a one-line :class:`OPDataError`; anything else is a bug and propagates with its traceback.
    """

    def __init__(self, config: OPDataConfig, slots: BatchSlots):
        self.config, self.slots = config, slots
        self.readers = RecordReaders(config)
        self.parent_watch = None    # workers: the read end of a pipe only the training process writes to

    def __getitem__(self, task):
        plan, slot = task
        labels = None if self.slots.labels is None else self.slots.labels[slot].numpy()
        try:
            inputs = run_plan(self.readers, plan, self.slots.images[slot].numpy(), labels)
        except (OPDataError, A.AugmentError) as exc:
            return plan.number, slot, None, str(exc)
        return plan.number, slot, None if labels is not None else inputs, None


def _unchanged(batch):
    return batch        # a task's result is a few numbers and small arrays: nothing to collate


class OPDataSource:
    """Batches of the OPData layer: ``{top_name: torch.float32 tensor}`` per ``next()``.

    ``layer_param``: caffe_pb2.LayerParameter of type "OPData". ``num_workers`` 0 runs in the
    calling thread, None uses :func:`default_workers`. ``prefetch``: batches ready ahead of the one
    being read (at least two per worker). ``label_device`` "workers": workers render labels with
    numpy; a torch device ("cpu", "cuda:0"): the image is normalised and the labels of the whole batch
    rendered there in one pass (``labels_torch``). ``pin_memory`` (default: on a CUDA label device):
    batches are copied out of their slots into page-locked memory, so their copies to the GPU run
    asynchronously.
    """

    def __init__(self, layer_param, phase: str = "TRAIN", seed: Optional[int] = None, rank: int = 0,
                 world_size: int = 1, num_workers: Optional[int] = None, prefetch: int = 4,
                 label_device="workers", pin_memory: Optional[bool] = None, **augment_overrides):
        self.config = parse_layer(layer_param, phase, **augment_overrides)
        if not 0 <= rank < world_size:
            raise OPDataError(f"rank {rank} outside world_size {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        seed = int(np.random.SeedSequence().entropy % (2 ** 63)) if seed is None else int(seed)
        self.num_workers = default_workers() if num_workers is None else int(num_workers)
        self.prefetch = max(1, int(prefetch or layer_param.data_param.prefetch or 4))
        self.label_device = str(label_device)
        self.readers = RecordReaders(self.config)     # this process's handles (num_workers=0; sizes)
        self.sizes = [self._source_size(i) for i in range(len(self.config.sources))]
        background_size = len(self.readers.background()) if self.config.background else 0
        if self.config.background and background_size == 0:
            raise OPDataError(f"{self.config.background}: the background LMDB is empty")
        model, _ = self.readers.models[0]
        aug = self.config.augment
        if phase == "TEST":
            height, width = self.readers.source(0)[0].image.shape[:2]
        else:
            width, height = aug.crop_x, aug.crop_y
        grid_w, grid_h = aug.grid_size
        n = self.config.batch_size
        self.image_shape = (n, 3, height, width)
        self.label_shape = (n, model.label_channels, grid_h, grid_w)
        self.planner = BatchPlanner(self.config, self.sizes, background_size, seed, self.rank, self.world_size)
        with_labels = self.label_device == "workers"
        if pin_memory is None:
            pin_memory = not with_labels and torch.device(self.label_device).type == "cuda"
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        # batches a worker works on ahead: its share of prefetch plus the one it is on; a slot for each
        # task in flight, and one for the batch being read
        per_worker = max(2, -(-(self.prefetch + self.num_workers) // max(1, self.num_workers)))
        self.slots = BatchSlots(per_worker * self.num_workers + 1 if self.num_workers > 0 else 1, self.image_shape,
                                self.label_shape, with_labels, shared=self.num_workers > 0)
        self.dataset = PlanDataset(self.config, self.slots)
        if self.num_workers > 0:
            self.readers.close()        # the workers open their own; this process holds no LMDB
        # in_order=False: a new plan goes to a worker with room (not strictly in turn), so a slow or
        # descheduled worker does not hold the others back; __next__ puts the batches back in order
        workers = {} if self.num_workers <= 0 else dict(
            multiprocessing_context=worker_context(), worker_init_fn=init_worker, persistent_workers=True,
            prefetch_factor=per_worker, in_order=False)
        if self.num_workers <= 0:
            self.dataset.readers = self.readers
        self._loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, sampler=PlanSampler(self.planner, self.slots),
            num_workers=max(0, self.num_workers), collate_fn=_unchanged, **workers)
        self._batches = None
        self._ready = {}                # batch number -> batch that came before its turn
        self._next_number = self.planner.next_number     # of the batch next() returns
        self._copy_stream = None
        self._parent_watch = None

    @property
    def seed(self) -> int:
        return self.planner.seed

    def _source_size(self, i: int) -> int:
        try:
            size = len(self.readers.source(i))
        except OPDataError:                 # names the LMDB already
            raise
        except Exception as exc:
            raise OPDataError(f"layer '{self.config.layer_name}': source {self.config.sources[i].path}: "
                              f"{exc}") from None
        if size == 0:
            raise OPDataError(f"{self.config.sources[i].path}: the LMDB is empty")
        return size

    def __iter__(self):
        return self

    def __next__(self):
        if self._batches is None:
            self._start_iteration()
        number = self._next_number
        while number not in self._ready:
            try:
                received, slot, inputs, error = next(self._batches)
            except RuntimeError as exc:
                if "DataLoader worker" not in str(exc):
                    raise
                raise OPDataError(f"layer '{self.config.layer_name}': a data worker died ({exc})") from None
            try:
                if error is not None:
                    raise OPDataError(f"layer '{self.config.layer_name}': {error}")
                self._ready[received] = self._batch_out(slot, inputs)
            finally:
                self.slots.release(slot)
        self.planner.consumed(number)
        self._next_number = number + 1
        return self._ready.pop(number)

    def _batch_out(self, slot: int, inputs) -> dict:
        """``{top: tensor}`` of the batch in ``slot``, copied out of it: normalised images, labels
        (both page-locked with ``pin_memory``), or labels rendered on the label device."""
        names = self.config.top_names
        mode = self.config.augment.normalization
        images = self.slots.images[slot]
        if self.slots.labels is not None:
            out = {names[0]: normalize_batch_lut(images.numpy(), mode, self.pin_memory)}
            labels = torch.empty(self.label_shape, pin_memory=self.pin_memory).copy_(self.slots.labels[slot])
        else:
            labels = None
            out = {names[0]: normalize_batch(self._images_to_device(images), mode)}
        if len(names) > 1:
            out[names[1]] = labels if labels is not None else self._device_labels(inputs, out[names[0]].device)
        return out

    def _start_iteration(self):
        """Workers start at the first ``iter()`` and persist; later ones (resume) restart the planning."""
        if self.num_workers <= 0 or self._loader._iterator is not None:
            self._batches = iter(self._loader)
            return
        watch_r, self._parent_watch = self._loader.multiprocessing_context.Pipe(duplex=False)
        self.dataset.parent_watch = watch_r
        try:
            with main_module_hidden():
                self._batches = iter(self._loader)
        finally:
            self.dataset.parent_watch = None
            watch_r.close()               # the workers hold the read ends now, this process the write end

    def _images_to_device(self, images: torch.Tensor) -> torch.Tensor:
        """The uint8 batch of a slot on the label device (on the CPU the caller's normalisation copies
        it out of the slot). CUDA: staged in page-locked memory, then copied on a side stream, so the
        copy overlaps the work already queued; the current stream waits for it."""
        device = torch.device(self.label_device)
        if device.type != "cuda":
            return images.to(device)
        staged = torch.empty(images.shape, dtype=torch.uint8, pin_memory=self.pin_memory).copy_(images)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device)
        with torch.cuda.stream(self._copy_stream):
            out = staged.to(device, non_blocking=True)     # the pinned block is kept until this copy ends
        current = torch.cuda.current_stream(device)
        current.wait_stream(self._copy_stream)
        out.record_stream(current)
        return out

    def _device_labels(self, inputs, device):
        from .labels_torch import render_labels_batch
        source = inputs["source"]
        model, variant = self.readers.models[max(source, 0)]
        aug = self.config.augment
        return render_labels_batch(model, variant, inputs["items"], aug.grid_size, aug.stride,
                                   aug.sigma(max(source, 0)), device=device)

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Planning state as of the next batch ``next()`` returns (exact resume)."""
        return self.planner.state_before(self._next_number)

    def load_state_dict(self, state: dict):
        """Resume at ``state`` (from :meth:`state_dict`); batches planned ahead are discarded (the
        workers keep running: the next ``next()`` restarts the loader's iteration at ``state``)."""
        self.planner.load(state)
        self._next_number = self.planner.next_number
        self._batches, self._ready = None, {}   # the next iter() (persistent workers: a reset) drops what was in flight
        self.slots.reset()              # ... after the tasks in flight end, before new ones start

    def close(self):
        """Stop the workers and close the LMDBs."""
        batches, self._batches = self._batches, None
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader._iterator = None
        if self._parent_watch is not None:
            self._parent_watch.close()
            self._parent_watch = None
        self.readers.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def default_workers() -> int:
    """Data worker processes per training process: the cores this process may use
    (``os.sched_getaffinity``), shared by the processes of this node (``LOCAL_WORLD_SIZE``), less one
    for the training loop itself; 0 (in the calling thread) on a single core."""
    import os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, cores // local - 1)


def source_from_prototxt(path, layer_name: Optional[str] = None, phase: str = "TRAIN", **kwargs) -> OPDataSource:
    """The :class:`OPDataSource` of the (first, or named) OPData layer of a training prototxt."""
    from .caffe_io import read_net_prototxt
    net = read_net_prototxt(path)
    for layer in net.layer:
        if layer.type == "OPData" and (layer_name is None or layer.name == layer_name):
            phases = {rule.phase for rule in layer.include}
            if phases and {"TRAIN": 0, "TEST": 1}[phase] not in phases and layer_name is None:
                continue
            return OPDataSource(layer, phase=phase, **kwargs)
    raise OPDataError(f"{path}: no OPData layer named '{layer_name}'" if layer_name else f"{path}: no OPData layer")
