"""COCO-style JSON + images to an OpenPose training LMDB (and background LMDBs). Streaming, resumable.

Build steps:

1. plan (annotations only, no pixels): main people per image (:mod:`.coco`); the records
   are shuffled by ``numpy.random.default_rng(seed).permutation`` and record ``r`` gets the key
   ``record_key(perm[r])`` (``%07d``). ``totalWriteNumber`` in every record = number of planned records (the
   original's "number of JSON entries").
2. images in plan order, each decoded once and its mask made once in worker threads (JPEG
   decoding and the plane copies release the GIL), one datum per main person; the main thread
   only writes: the records of one image share one serialized buffer in which only the metadata
   rows change (:meth:`DatumBuilder.raw_datum`), handed to LMDB as is, and LMDB runs with
   ``writemap`` so that ``put`` copies it straight into the file's pages (one copy per record;
   raw builds only, whose size is checked against the free space first).
   Large write transactions (``txn_bytes``); the map grows when full.
3. close the gaps that undecodable images left: the records with the highest keys move into the
   holes (their ``writeNumber`` rewritten), so keys stay ``0 .. n-1``.

Everything is written into ``<out>.partial``; ``progress.jsonl`` there lists the images whose
records are committed, so an interrupted build (Ctrl-C, kill) resumes without redoing them and
gives the same records as an uninterrupted one. At the end the progress file is removed and the
directory renamed to ``<out>``. Memory does not grow with the dataset (a few images in flight
plus the annotation plan; the transaction's pages live in the file mapping).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import lmdb
import numpy as np

from openpose_train.common.files import atomic_file, write_atomic
from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.output_paths import check_not_an_input, make_output_folder
from openpose_train.generator.registry import get_dataset_layout

from . import coco
from openpose_train.caffe_layers.datum import DatumBuilder, DatumError, minimum_width, set_write_number
from openpose_train.caffe_layers.lmdb_reader import record_key
from openpose_train.caffe_layers.metadata import one_based

PROGRESS_FILE = "progress.jsonl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FORMAT_VERSION = 1

# image skip reasons
MISSING = "missing image"
CORRUPT = "corrupt image"
SIZE_MISMATCH = "image size differs from the JSON"
NO_FIT = "metadata does not fit the image"
BAD_SEGMENTATION = "unreadable segmentation"
LEAVES_FOLDER = "path leaves the images folder"
SKIPPED_LIST_SUFFIX = "_skipped.tsv"


class LmdbBuildError(OpenPoseTrainError, RuntimeError):
    """A build that cannot start or go on (message names the path and what to do)."""


@dataclass
class BuildOptions:
    dataset: str = "coco"              # registry dataset key
    seed: int = 0
    encoded: bool = False              # JPEG + PNG encoded datums (see datum.py)
    background: bool = False           # negatives LMDB: images without people, 3 channels
    workers: int = 1                   # decode/mask threads beside the writing thread; 0 = one per CPU (max 4)
    txn_bytes: int = 64 << 20          # commit a write transaction after this many value bytes
    map_size: Optional[int] = None     # initial LMDB map size; None = estimate from the plan
    jpeg_quality: int = 95
    progress: bool = True
    overwrite: bool = False
    stop_after_images: Optional[int] = None   # stop (as if interrupted) after N images: tests


@dataclass
class BuildSummary:
    out: Path
    records_planned: int = 0
    records_written: int = 0
    images_planned: int = 0
    images_read: int = 0
    images_skipped: Counter = field(default_factory=Counter)
    people_skipped: Counter = field(default_factory=Counter)
    records_moved: int = 0
    resumed_images: int = 0
    finished: bool = False
    seconds: float = 0.0
    skipped_list: Optional[Path] = None    # <out>_skipped.tsv: every skipped image and annotation, named

    def lines(self) -> List[str]:
        out = [f"LMDB {self.out}: {self.records_written} records from {self.images_read} images read "
               f"({self.images_planned} planned, {self.resumed_images} already done before this run)"
               f" in {self.seconds:.1f} s"]
        for title, counter in (("images skipped", self.images_skipped), ("people skipped", self.people_skipped)):
            if counter:
                out.append(f"{title}: " + ", ".join(f"{reason}: {n}" for reason, n in sorted(counter.items())))
        if self.skipped_list is not None:
            out.append(f"skipped images and people listed in {self.skipped_list}")
        if self.records_moved:
            out.append(f"{self.records_moved} records renumbered to close the gaps of skipped images")
        if not self.finished:
            out.append(f"interrupted: run the same command again to resume from {self.out}.partial")
        return out


@dataclass
class WorkItem:
    """One image to process and the keys of its records."""

    index: int                          # position in the plan (progress bookkeeping)
    path: str
    entry: Optional[coco.ImageEntry]    # None for background images
    records: List[Tuple[int, int]]      # (key, person index)
    width: int = 0
    height: int = 0
    reason: Optional[str] = None        # skipped before reading (a file name that leaves the folder)
    name: str = ""                      # the file name as the JSON (or the folder) gives it


@dataclass
class WorkerConfig:
    dataset: str
    total: int
    encoded: bool
    jpeg_quality: int


@dataclass
class ImageResult:
    """One image's records, ready to write: ``parts`` are (key, metadata rows) for raw datums
    (None: a negatives datum), (key, datum bytes) for encoded ones."""

    index: int
    reason: Optional[str] = None        # image skipped
    failed_keys: List[int] = field(default_factory=list)   # records that did not fit (metadata too big)
    builder: Optional[DatumBuilder] = None
    parts: List[Tuple[int, object]] = field(default_factory=list)

    def records(self) -> Iterator[Tuple[bytes, object]]:
        """(key, value) pairs; a raw value is a view into the image's buffer, valid until the next
        pair is taken (LMDB's ``put`` copies it at once)."""
        for key, part in self.parts:
            yield record_key(key), part if isinstance(part, bytes) else self.builder.raw_datum(part)


# ----------------------------------------------------------------------------- worker side

def _read_image(path: str):
    """(image, reason): BGR image or a skip reason for a missing / corrupt file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None, MISSING
    # libjpeg fills a truncated JPEG with grey and succeeds: check the end-of-image marker
    if not raw or (raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in raw[-1024:]):
        return None, CORRUPT
    try:
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        return None, CORRUPT
    return image, None


def image_path(images_dir, file_name) -> Optional[str]:
    """``images_dir / file_name``, or None when the name leaves the folder (absolute, or ``..``
    above it): a dataset file must not make us read arbitrary files. Checked on the name, not on
    resolved symlinks, so a folder of links to images elsewhere still works."""
    name = str(file_name)
    normal = os.path.normpath(name)
    if os.path.isabs(name) or "\0" in name or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return None
    return str(Path(images_dir) / normal)


def process_image(item: WorkItem, config: WorkerConfig) -> ImageResult:
    """Decode one image, make its mask, the metadata of its records and the datum buffer they
    share (runs in a worker thread; the writer only fills in metadata rows and writes)."""
    image, reason = (None, item.reason) if item.reason else _read_image(item.path)
    if reason:
        return ImageResult(item.index, reason)
    if item.entry is None:           # background
        builder = DatumBuilder(image, None, config.encoded, config.jpeg_quality)
        part = None                  # raw: a 3-channel datum, no metadata
        if config.encoded:
            part = builder.build()
        else:
            builder.prepare_raw(metadata=False)
        return ImageResult(item.index, builder=builder, parts=[(key, part) for key, _ in item.records])
    if image.shape[:2] != (item.entry.height, item.entry.width):
        return ImageResult(item.index, SIZE_MISMATCH)
    layout = get_dataset_layout(config.dataset)
    try:
        mask_miss = coco.mask_miss(item.entry, layout) if layout.has_mask else None
    except (ValueError, TypeError):
        return ImageResult(item.index, BAD_SEGMENTATION)
    builder = DatumBuilder(image, mask_miss, config.encoded, config.jpeg_quality,
                           minimum_width(layout.lmdb_dataset, layout.num_keypoints))
    parts, failed = [], []
    for key, person in item.records:
        meta = coco.build_metadata(item.entry, person, layout)
        if layout.one_based:
            meta = one_based(meta)
        meta.write_number = float(key)
        meta.total_write_number = float(config.total)
        try:
            parts.append((key, builder.build(meta) if config.encoded else builder.metadata_rows(meta)))
        except DatumError:
            failed.append(key)
    if parts and not config.encoded:
        builder.prepare_raw(metadata=True)
    return ImageResult(item.index, failed_keys=failed, builder=builder, parts=parts)


# ----------------------------------------------------------------------------- planning

def _plan_keypoints(json_path, images_dir, options, summary, named) -> List[WorkItem]:
    dataset = coco.load_keypoint_json(json_path, options.dataset, images_dir=images_dir, mask_miss_only=True)
    for reason, n in dataset.problems.items():
        summary.people_skipped[reason] += n
    plans = coco.plan_records(dataset, summary.people_skipped, named)
    perm = np.random.default_rng(options.seed).permutation(len(plans))
    by_image: Dict[int, List[Tuple[int, int]]] = {}
    for plan, key in zip(plans, perm.tolist()):
        by_image.setdefault(plan.image_index, []).append((key, plan.person))
    items = []
    for entry in dataset.images:
        records = by_image.get(entry.index)
        if records:
            path = image_path(images_dir, entry.file_name)
            items.append(WorkItem(len(items), path or entry.file_name, entry, records, entry.width, entry.height,
                                  reason=None if path else LEAVES_FOLDER, name=entry.file_name))
    return items


def _background_files(json_path, images_dir) -> List[Tuple[str, int, int]]:
    """(file name, width, height) of the people-free images: JSON images without any
    annotation (crowd included, as a1), or every image file of the folder when no JSON."""
    if json_path is None:
        names = sorted(p.name for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return [(n, 0, 0) for n in names]
    path = Path(json_path)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise coco.CocoFormatError(f"{path}: cannot read ({exc})") from None
    images = coco._need(doc, "images", path, "the document")
    annotations = coco._need(doc, "annotations", path, "the document")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise coco.CocoFormatError(f"{path}: not a COCO-style keypoint file: 'images' and 'annotations' must be lists")
    used = {coco._need(a, "image_id", path, f"annotations[{j}]") for j, a in enumerate(annotations)}
    out = []
    for i, img in enumerate(images):
        for key in ("id", "file_name"):
            coco._need(img, key, path, f"images[{i}]")
        if img["id"] not in used:
            try:
                out.append((str(img["file_name"]), int(img.get("width", 0)), int(img.get("height", 0))))
            except (ValueError, TypeError):
                raise coco.CocoFormatError(f"{path}: images[{i}] 'width' / 'height' is not a number") from None
    return out


def _plan_background(json_path, images_dir, options) -> List[WorkItem]:
    files = _background_files(json_path, images_dir)
    perm = np.random.default_rng(options.seed).permutation(len(files)).tolist()
    items = []
    for i, (name, w, h) in enumerate(files):
        path = image_path(images_dir, name)
        items.append(WorkItem(i, path or name, None, [(perm[i], 0)], w, h, reason=None if path else LEAVES_FOLDER,
                              name=name))
    return items


def _fingerprint(json_path, images_dir, options, items) -> str:
    h = hashlib.sha1()
    stat = Path(json_path).stat() if json_path else None
    h.update(json.dumps([FORMAT_VERSION, str(Path(json_path).resolve()) if json_path else None,
                         stat.st_size if stat else None, stat.st_mtime_ns if stat else None,
                         str(Path(images_dir).resolve()), options.dataset, options.seed, options.encoded,
                         options.background, options.jpeg_quality, len(items),
                         sum(len(i.records) for i in items)]).encode())
    return h.hexdigest()


def _estimate_map_size(items, options, channels) -> int:
    total = 0
    for item in items:
        if item.width and item.height:
            w = max(item.width, minimum_width(None, 135))
            per = channels * item.height * w + 64
            total += len(item.records) * (per // 3 if options.encoded else per)
        else:
            total += 4 << 20
    return int(total * 1.25) + (64 << 20)


# ----------------------------------------------------------------------------- writing

def _open_env(path: Path, map_size: int, writemap: bool = True) -> lmdb.Environment:
    # writemap: put copies a value straight into the file's mapped pages; without it LMDB copies it
    # into malloc'd pages and write()s them at commit, a second copy that took twice as long in
    # total for 1.5 MB records. No fsync per commit: a killed process loses nothing (the OS has the
    # pages) and LMDB never overwrites the last committed state; one sync at the end.
    # Encoded builds run without writemap: their records are small, and a full disk then fails a
    # commit with ENOSPC (an error we report) instead of a SIGBUS in the middle of a put.
    return lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False, max_dbs=0, sync=False,
                     writemap=writemap, map_async=True, readahead=False)


def _check_disk_space(partial: Path, todo: List[WorkItem], channels: int) -> None:
    """Refuse to start when the raw records surely do not fit the disk: with ``writemap`` a full
    disk shows up as SIGBUS in the middle of a ``put``, not as an error. ``needed`` is a lower
    bound (no padding, no LMDB pages), so a build that fits is never refused."""
    needed = sum(len(item.records) * channels * item.height * item.width for item in todo)
    folder = partial
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent          # a new build: the disk its folder will be created on
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise LmdbBuildError(f"{partial}: the records need at least {needed / 2**30:.1f} GiB, the disk has "
                             f"{free / 2**30:.1f} GiB free; free some space and rerun to resume")


def _close_env(env: lmdb.Environment, data_file: Path) -> None:
    """Sync, close, and cut the data file back to the pages in use: with ``writemap`` LMDB
    extends it (sparse) to the whole map size; without, it would end at the last page."""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    env.sync(True)
    env.close()
    if data_file.stat().st_size > used:
        os.truncate(data_file, used)


class TxnWriter:
    """One large write transaction at a time, filled as image results arrive (no second copy
    of the datums in Python). When the map is full, the transaction is aborted, the map doubled
    and the images of this transaction are processed again (rare: the map starts at an estimate)."""

    def __init__(self, env, redo):
        self.env, self.redo = env, redo       # redo(image index) -> ImageResult
        self.txn = env.begin(write=True)
        self.indexes: List[int] = []
        self.bytes = 0

    def _grow_and_replay(self, indexes):
        while True:
            self.txn.abort()
            self.env.set_mapsize(self.env.info()["map_size"] * 2)
            self.txn = self.env.begin(write=True)
            self.bytes = 0
            try:
                for index in indexes:
                    self.put_records(self.redo(index))
                return
            except lmdb.MapFullError:
                continue

    def put_records(self, result: ImageResult) -> None:
        for key, value in result.records():
            self.txn.put(key, value)
            self.bytes += len(value)

    def add(self, result: ImageResult) -> None:
        self.indexes.append(result.index)
        while True:
            try:
                self.put_records(result)
                break
            except lmdb.MapFullError:
                self._grow_and_replay(self.indexes[:-1])

    def commit(self) -> None:
        while True:
            try:
                self.txn.commit()
                break
            except lmdb.MapFullError:          # a failed commit has aborted the transaction
                self.txn = self.env.begin(write=True)
                self._grow_and_replay(self.indexes)
        # with writemap the pages written stay mapped and count as our resident memory until the
        # map is dropped: remapping (set_mapsize to the same size) keeps it at one transaction's worth
        self.env.set_mapsize(self.env.info()["map_size"])
        self.txn = self.env.begin(write=True)
        self.indexes, self.bytes = [], 0

    def abort(self) -> None:
        self.txn.abort()


def _read_progress(partial: Path, fingerprint: str, repair: bool = False):
    """(done image indexes, skip reasons by index, keys of records that failed) of an earlier run.

    ``repair``: rewrite the file without a last line cut by a kill, so that lines appended by
    this run stay readable."""
    progress = partial / PROGRESS_FILE
    done, reasons, failed = set(), {}, []
    with open(progress) as f:
        lines = f.read().splitlines()
    header = json.loads(lines[0]) if lines else {}
    if header.get("fingerprint") != fingerprint:
        raise LmdbBuildError(
            f"{partial} is a partial build made from other inputs or options; delete it or rerun "
            "the command that started it")
    valid = lines[:1]
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break                   # a line cut by a kill: the images after it are redone
        valid.append(line)
        done.update(entry.get("done", []))
        reasons.update({int(k): v for k, v in entry.get("skipped", {}).items()})
        failed.extend(entry.get("failed_keys", []))
    if repair and len(valid) < len(lines):
        write_atomic(progress, "".join(line + "\n" for line in valid))
    return done, reasons, failed


def skipped_list_path(out: Path) -> Path:
    """Where the list of skipped images and annotations of the LMDB ``out`` goes (beside it)."""
    return out.with_name(out.name + SKIPPED_LIST_SUFFIX)


def _write_skipped_list(out: Path, rows) -> Optional[Path]:
    """``<out>_skipped.tsv`` (file_name, annotation_id, reason; annotation_id empty for a whole
    image), written to a temporary name and renamed; a stale list is removed when nothing was skipped."""
    import csv
    path = skipped_list_path(out)
    if not rows:
        path.unlink(missing_ok=True)
        return None
    rows = sorted(rows, key=lambda row: tuple("" if v is None else str(v) for v in row))
    with atomic_file(path, newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(("file_name", "annotation_id", "reason"))
        writer.writerows(("" if v is None else v for v in row) for row in rows)
    return path


def _close_gaps(env, holes, total: int) -> int:
    """Move the highest-keyed records into the missing keys ``holes`` so that keys are 0..n-1.

    Computed from the plan (no scan of the database); one transaction, so a run killed here
    either moved everything or nothing (a mover already gone means it was done)."""
    holes = set(holes)
    n = total - len(holes)
    targets = sorted(k for k in holes if k < n)
    movers = sorted(k for k in range(n, total) if k not in holes)
    if not targets:
        return 0
    while True:
        try:
            with env.begin(write=True) as txn:
                if txn.get(record_key(movers[0])) is None:
                    return 0
                for hole, mover in zip(targets, movers):
                    value = txn.get(record_key(mover))
                    txn.put(record_key(hole), set_write_number(value, hole))
                    txn.delete(record_key(mover))
            return len(targets)
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def _results(items, config, workers):
    """Yield ImageResult in item order, made by ``workers`` threads ahead of the writer (a bounded
    window of images, so memory stays flat). Threads, not processes: the datums would cross a
    pipe, a copy as costly as the decoding it spares."""
    window = 2 * workers + 2
    with ThreadPoolExecutor(workers, thread_name_prefix="lmdb-decode") as pool:
        pending = deque()
        try:
            for item in items:
                pending.append(pool.submit(process_image, item, config))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def build_lmdb(json_path, images_dir, out, options: Optional[BuildOptions] = None) -> BuildSummary:
    """Build the LMDB ``out`` from a COCO-style JSON and its image folder (see the module docstring).

    ``json_path`` may be None for a background LMDB of every image in ``images_dir``.
    Raises :class:`LmdbBuildError` / :class:`coco.CocoFormatError` with a one-line message.
    """
    out = Path(out)
    partial = _partial_path(out)
    check_not_an_input(out, [("--json", json_path), ("--images", images_dir)], error=LmdbBuildError, folder=True)
    try:
        with _BuildLock(out):
            return _build_lmdb(json_path, images_dir, out, partial, options or BuildOptions())
    except (lmdb.Error, OSError) as exc:
        if isinstance(exc, lmdb.Error) or exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _write_failed(partial, exc) from None
        raise


class _BuildLock:
    """``<out>.lock`` (an flock, common/locks.py): two builds of one LMDB (two terminals) would write
    the same ``.partial`` and progress file; the second is refused with one line naming the first
    (docs/refusals.md §Outputs). The folder of ``out`` is made for the lock when it can be (and removed
    again if the build leaves it empty); where it cannot, the build itself says why."""

    def __init__(self, out: Path):
        from openpose_train.common.locks import ExclusiveLock
        self.out, self.lock, self.created = out, None, None
        if out.name in ("", ".", "..") or _folder_blocked(out.parent):
            return
        self.lock = ExclusiveLock(
            f"{out}.lock",
            busy=lambda holder: LmdbBuildError(
                f"{out}: another 'openpose-train lmdb' ({holder}) is building this LMDB; wait for it to end "
                f"(then run this command again: it finds the LMDB built) or choose another --out"),
            failed=LmdbBuildError)

    def __enter__(self):
        if self.lock is not None:
            folder = self.out.parent.absolute()
            while not folder.exists():
                self.created, folder = folder, folder.parent
            make_output_folder(self.out.parent, "LMDB folder", LmdbBuildError)
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        if self.lock is not None:
            self.lock.release()
            if self.created is not None:
                for folder in sorted((p for p in [self.created, *self.created.rglob("*")] if p.is_dir()),
                                     key=lambda p: -len(p.parts)):
                    try:
                        folder.rmdir()      # only when the build left it empty
                    except OSError:
                        pass


def _folder_blocked(folder: Path) -> bool:
    from openpose_train.generator.output_paths import OutputFolderError, check_output_folder
    try:
        check_output_folder(folder)
    except OutputFolderError:
        return True
    return False


def _write_failed(partial: Path, exc: Exception) -> LmdbBuildError:
    """The error for a write that failed during a build: a full disk (an encoded build, without
    ``writemap``, sees it as ENOSPC, or EIO after a short write; the raw sizes are checked before the
    start). Committed images are kept for a resume; a partial build that holds none is removed."""
    progress = partial / PROGRESS_FILE
    try:
        with open(progress) as f:
            committed = sum(1 for line in f if line.strip()) > 1      # a line after the header
    except OSError:
        committed = False
    folder = partial if partial.exists() else partial.parent
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    why = getattr(exc, "strerror", None) or str(exc)
    then = "free some space and rerun to resume" if committed else "nothing was kept; free some space and rerun"
    if not committed:
        shutil.rmtree(partial, ignore_errors=True)
    return LmdbBuildError(f"{partial}: cannot write the LMDB ({why}), {free / 2**20:.1f} MiB free on its disk; {then}")


def _build_lmdb(json_path, images_dir, out: Path, partial: Path, options: BuildOptions) -> BuildSummary:
    """The steps of :func:`build_lmdb`: check, plan, start or resume, write, finish. The LMDB is
    closed whatever happens (so that this process can resume it)."""
    start = time.time()
    _check_target(out, images_dir, options)
    summary = BuildSummary(out=out)
    named = []          # (file name, annotation id, reason) of the annotations that are not records
    items, channels = _plan(json_path, images_dir, options, summary, named)
    total = sum(len(i.records) for i in items)
    summary.records_planned, summary.images_planned = total, len(items)
    if total == 0:
        if options.background:
            raise LmdbBuildError(f"{out}: no record to write: no background image in "
                                 f"{json_path or images_dir}; nothing was written")
        raise _nothing_to_write(out, f"no person of {json_path} qualifies as a record", summary.people_skipped)
    fingerprint = _fingerprint(json_path, images_dir, options, items)
    done = _start_or_resume(partial, fingerprint, items, total, channels, options)
    summary.resumed_images = len(done)
    config = WorkerConfig(options.dataset, total, options.encoded, options.jpeg_quality)
    with _open_env(partial, options.map_size or _estimate_map_size(items, options, channels),
                   writemap=not options.encoded) as env:
        with _progress_bar(options, out, len(items), len(done)) as bar:
            processed, complete = _write_records(env, items, [i for i in items if i.index not in done], config,
                                                 options, partial / PROGRESS_FILE, bar)
        if complete:
            _finish(env, partial, out, items, fingerprint, total, summary, named)
        else:
            summary.images_read = processed
    summary.seconds = time.time() - start
    return summary


def _nothing_to_write(out: Path, what: str, skipped: Counter) -> LmdbBuildError:
    """The refusal of a build that would write no record (an empty LMDB would only fail later, in
    training, far from its cause): what became of the people, counted."""
    why = (", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
           or "no annotation is a person with labelled keypoints outside crowd regions")
    return LmdbBuildError(f"{out}: no record to write: {what} ({why}); nothing was written")


def _partial_path(out: Path) -> Path:
    """``<out>.partial``, the folder a build writes (kept across a kill for the resume)."""
    if out.name in ("", ".", ".."):
        raise LmdbBuildError(f"--out {str(out)!r}: name the LMDB folder to create (e.g. out/lmdb_coco)")
    return out.with_name(out.name + ".partial")


def _check_target(out: Path, images_dir, options: BuildOptions) -> None:
    """Refuse a missing image folder and an existing ``out`` (unless ``--overwrite`` and an LMDB)."""
    if images_dir is None or not Path(images_dir).is_dir():
        raise LmdbBuildError(f"{images_dir}: image folder not found")
    if out.exists():
        if not options.overwrite:
            raise LmdbBuildError(f"{out} exists; remove it or pass --overwrite")
        if not (out / "data.mdb").is_file():     # --overwrite deletes it: only ever an LMDB
            raise LmdbBuildError(f"{out} exists and is not an LMDB (no data.mdb); --overwrite only replaces an LMDB")


def _plan(json_path, images_dir, options: BuildOptions, summary: BuildSummary, named) -> Tuple[List[WorkItem], int]:
    """(the images to write, datum channels): negatives, or the people of a keypoint JSON."""
    if options.background:
        return _plan_background(json_path, images_dir, options), 3
    if json_path is None:
        raise LmdbBuildError("a keypoint LMDB needs --json")
    items = _plan_keypoints(json_path, images_dir, options, summary, named)
    return items, 4 + int(get_dataset_layout(options.dataset).has_mask)


def _start_or_resume(partial: Path, fingerprint: str, items: List[WorkItem], total: int, channels: int,
                     options: BuildOptions) -> set:
    """The image indexes an earlier run of the same build committed (resumed from ``partial``), or
    none after creating ``partial`` with its progress header. A raw build that surely does not fit
    the disk is refused before anything is created."""
    resuming = partial.exists() and (partial / PROGRESS_FILE).exists()
    done = _read_progress(partial, fingerprint, repair=True)[0] if resuming else set()
    if not options.encoded:
        _check_disk_space(partial, [item for item in items if item.index not in done], channels)
    if not resuming:
        shutil.rmtree(partial, ignore_errors=True)
        make_output_folder(partial, "LMDB", LmdbBuildError)
        header = json.dumps({"fingerprint": fingerprint, "records": total, "images": len(items)}) + "\n"
        try:
            (partial / PROGRESS_FILE).write_text(header)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise LmdbBuildError(f"{partial}: cannot create the LMDB there ({exc.strerror or exc})") from None
    return done


def _progress_bar(options: BuildOptions, out: Path, images: int, done: int):
    """A tqdm bar over the images (a context manager), or a null one without ``options.progress``."""
    if not options.progress:
        return contextlib.nullcontext()
    from tqdm import tqdm
    return tqdm(total=images, initial=done, unit="img", desc=f"lmdb {out.name}", dynamic_ncols=True,
                mininterval=0.5)


class _ProgressLog:
    """The progress file of a partial build: after each LMDB commit, one JSON line with the images
    it wrote, the images skipped and the records that did not fit. Written after the commit, so a
    kill in between only makes the next run redo those images."""

    def __init__(self, path: Path):
        self.file = open(path, "a")
        self.skipped: Dict[int, str] = {}
        self.failed: List[int] = []

    def note(self, result: ImageResult) -> None:
        if result.reason:
            self.skipped[result.index] = result.reason
        self.failed.extend(result.failed_keys)

    def commit(self, writer: TxnWriter) -> None:
        """Commit ``writer``'s transaction, then log what it held."""
        done_now = writer.indexes
        writer.commit()
        if done_now:
            self.file.write(json.dumps({"done": done_now, "skipped": self.skipped,
                                        "failed_keys": self.failed}) + "\n")
            self.file.flush()
        self.skipped, self.failed = {}, []

    def __enter__(self) -> "_ProgressLog":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def _write_records(env, items: List[WorkItem], todo: List[WorkItem], config: WorkerConfig, options: BuildOptions,
                   progress_path: Path, bar) -> Tuple[int, bool]:
    """Write the records of the images ``todo``, committing every ``options.txn_bytes``; returns
    (images processed, complete). An interrupt (Ctrl-C, or ``options.stop_after_images``) ends it
    incomplete at the last commit: the next run resumes from there."""
    writer = TxnWriter(env, lambda index: process_image(items[index], config))
    processed = 0
    workers = options.workers or min(os.cpu_count() or 1, 4)
    with _ProgressLog(progress_path) as log, contextlib.closing(_results(todo, config, workers)) as results:
        try:
            for result in results:
                writer.add(result)
                log.note(result)
                processed += 1
                if bar is not None:
                    bar.update(1)
                if writer.bytes >= options.txn_bytes:
                    log.commit(writer)
                if options.stop_after_images is not None and processed >= options.stop_after_images:
                    raise KeyboardInterrupt
            log.commit(writer)
            return processed, True
        except KeyboardInterrupt:
            return processed, False
        finally:
            writer.abort()      # the open transaction: empty after the last commit


def _finish(env, partial: Path, out: Path, items: List[WorkItem], fingerprint: str, total: int,
            summary: BuildSummary, named) -> None:
    """Count what was skipped, close the key gaps it left, close the LMDB and rename ``partial``
    to ``out``, beside the list of skipped images and people."""
    _, reasons, failed_keys = _read_progress(partial, fingerprint)
    holes = list(failed_keys)
    for index, reason in sorted(reasons.items()):
        summary.images_skipped[reason] += 1
        summary.people_skipped[reason] += len(items[index].records)
        holes.extend(key for key, _ in items[index].records)
        named.append((items[index].name, None, reason))
    if failed_keys:
        summary.people_skipped[NO_FIT] += len(failed_keys)
        by_key = {key: (item, person) for item in items for key, person in item.records}
        for key in sorted(failed_keys):
            item, person = by_key[key]
            named.append((item.name, item.entry.people[person].ann_id, NO_FIT))
    summary.records_moved = _close_gaps(env, holes, total)
    summary.records_written = int(env.stat()["entries"])
    summary.images_read = len(items) - len(reasons)
    if summary.records_written == 0:
        _close_env(env, partial / "data.mdb")
        shutil.rmtree(partial, ignore_errors=True)
        listed = _write_skipped_list(out, named)
        raise _nothing_to_write(out, f"every planned image was skipped (listed in {listed})", summary.people_skipped)
    _close_env(env, partial / "data.mdb")
    os.remove(partial / PROGRESS_FILE)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(partial, out)
    summary.skipped_list = _write_skipped_list(out, named)
    summary.finished = True
