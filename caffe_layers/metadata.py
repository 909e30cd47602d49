"""The metadata plane of an OpenPose training datum: one record's annotations as byte rows.

Layout (``docs/formats.md`` §Metadata rows): rows of ``W`` bytes (the datum width), floats
little-endian float32 written from column 0, the rest of each row zero (see :func:`encode_metadata`).

Coordinates (decision). The original COCO LMDBs hold MATLAB-style **1-based** pixel coordinates
and the training fork's ``readMetaData`` subtracts 1 for the COCO category. We keep that file
convention so that our LMDBs train correctly with the original Caffe fork too: for every
dataset whose registry category is COCO (``COCO``, ``COCO_WholeBody``: :func:`one_based_dataset`) the
writer stores ``x + 1, y + 1`` for joints and objpos of the main person and of the others, and
decoding gives back the stored (1-based) numbers; :meth:`Metadata.zero_based` (and our OPData
layer) subtracts 1, exactly as the fork does. MPII, hand, face: stored 0-based, no shift.
LMDBs of the original pipeline therefore decode the same way as ours.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.registry import get_dataset_layout, list_dataset_layouts

def one_based_dataset(dataset: str) -> bool:
    """Whether records of this dataset string store coordinates 1-based: a registered layout of the fork's
    COCO category writes it (asked when needed, so that a YAML skeleton's layouts count once loaded)."""
    return any(layout.one_based and layout.lmdb_dataset == dataset
               for layout in map(get_dataset_layout, list_dataset_layouts()))


class DatumError(OpenPoseTrainError, ValueError):
    """A datum or metadata plane that cannot be encoded or decoded (message says why)."""


@dataclass
class Metadata:
    """One training record's metadata (row layout of ``docs/formats.md`` §Metadata rows).

    Coordinates are as stored in the LMDB (1-based where :func:`one_based_dataset`).
    ``joints`` is (N, 3) float32 ``[x, y, v]`` with OpenPose visibility codes (0 occluded,
    1 visible, 2 unlabeled/outside, 4 not in dataset); ``others_joints`` is (n, N, 3).
    """

    dataset: str
    img_height: float
    img_width: float
    objpos: np.ndarray                       # (2,) x, y
    scale_provided: float
    joints: np.ndarray                       # (N, 3)
    people_index: int = 1
    annolist_index: float = 1.0
    write_number: float = 0.0
    total_write_number: float = 1.0
    others_objpos: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    others_scale: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    others_joints: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))
    image_path: Optional[str] = None         # Dome category only

    def __post_init__(self):
        self.objpos = np.asarray(self.objpos, np.float32).reshape(2)
        self.joints = np.asarray(self.joints, np.float32).reshape(-1, 3)
        n_parts = self.joints.shape[0]
        self.others_objpos = np.asarray(self.others_objpos, np.float32).reshape(-1, 2)
        self.others_scale = np.asarray(self.others_scale, np.float32).reshape(-1)
        self.others_joints = np.asarray(self.others_joints, np.float32).reshape(-1, n_parts, 3)

    @property
    def num_parts(self) -> int:
        return int(self.joints.shape[0])

    @property
    def num_other_people(self) -> int:
        return int(self.others_objpos.shape[0])

    @property
    def num_rows(self) -> int:
        """Rows of the metadata plane: ``8 + (n>0)*(4n+1)`` (+1 with an image path)."""
        n = self.num_other_people
        return 8 + (4 * n + 1 if n else 0) + (1 if self.image_path is not None else 0)

    def zero_based(self) -> "Metadata":
        """A copy in 0-based pixel coordinates (subtracts 1 for the COCO category, as the fork)."""
        if not one_based_dataset(self.dataset):
            return replace(self)
        return _shift_coordinates(self, -1.0)

    def __eq__(self, other):
        if not isinstance(other, Metadata):
            return NotImplemented
        scalars = ("dataset", "img_height", "img_width", "scale_provided", "people_index",
                   "annolist_index", "write_number", "total_write_number", "image_path")
        arrays = ("objpos", "joints", "others_objpos", "others_scale", "others_joints")
        return (all(getattr(self, k) == getattr(other, k) for k in scalars)
                and all(getattr(self, k).shape == getattr(other, k).shape
                        and np.array_equal(getattr(self, k), getattr(other, k)) for k in arrays))


def _shift_coordinates(meta: Metadata, delta: float) -> Metadata:
    """Copy of ``meta`` with ``delta`` added to every x, y (joints and objpos, self and others)."""
    joints = meta.joints.copy()
    joints[:, :2] += delta
    others = meta.others_joints.copy()
    others[:, :, :2] += delta
    return replace(meta, objpos=meta.objpos + delta, joints=joints,
                   others_objpos=meta.others_objpos + delta, others_joints=others)


def one_based(meta: Metadata) -> Metadata:
    """The stored form of 0-based annotations: +1 on coordinates for COCO-category datasets."""
    if not one_based_dataset(meta.dataset):
        return meta
    return _shift_coordinates(meta, 1.0)


def _put_floats(plane: np.ndarray, row: int, values) -> None:
    data = np.ascontiguousarray(values, dtype="<f4").reshape(-1).view(np.uint8)
    plane[row, :data.size] = data


def encode_metadata(meta: Metadata, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 metadata plane of ``meta`` (bytes exactly as generateLmdbFile).

    Raises :class:`DatumError` when the record does not fit the plane (row width < 4*N,
    fewer rows than needed, more than 255 other people, dataset string too long).
    """
    rows = metadata_rows(meta, height, width)
    plane = np.zeros((height, width), np.uint8)
    plane[:rows.shape[0]] = rows
    return plane


def metadata_rows(meta: Metadata, height: int, width: int) -> np.ndarray:
    """The leading ``meta.num_rows`` rows of :func:`encode_metadata`'s plane (the rest is zero);
    checks that the record fits a (height, width) plane (:class:`DatumError` otherwise)."""
    n_parts, n_other = meta.num_parts, meta.num_other_people
    name = meta.dataset.encode("ascii")
    need_width = max(4 * n_parts, 4 * n_other, 14, len(name) + 1)
    if width < need_width:
        raise DatumError(f"metadata needs a row width of {need_width} bytes, the image is {width} wide")
    if height < meta.num_rows:
        raise DatumError(f"metadata needs {meta.num_rows} rows, the image is {height} high")
    if n_other > 255 or not 0 <= meta.people_index <= 255:
        raise DatumError(f"numOtherPeople={n_other} / people_index={meta.people_index} exceed a byte")
    plane = np.zeros((meta.num_rows, width), np.uint8)
    plane[0, :len(name)] = np.frombuffer(name, np.uint8)
    _put_floats(plane, 1, [meta.img_height, meta.img_width])
    plane[2, 0] = n_other
    plane[2, 1] = meta.people_index
    plane[2, 2:14] = np.asarray([meta.annolist_index, meta.write_number, meta.total_write_number],
                                "<f4").view(np.uint8)
    _put_floats(plane, 3, meta.objpos)
    _put_floats(plane, 4, [meta.scale_provided])
    for axis in range(3):
        _put_floats(plane, 5 + axis, meta.joints[:, axis])
    row = 8
    if n_other:
        for p in range(n_other):
            _put_floats(plane, 8 + p, meta.others_objpos[p])
        _put_floats(plane, 8 + n_other, meta.others_scale)
        for p in range(n_other):
            for axis in range(3):
                _put_floats(plane, 9 + n_other + 3 * p + axis, meta.others_joints[p, :, axis])
        row = 9 + 4 * n_other
    if meta.image_path is not None:
        path = meta.image_path.encode("ascii")
        if len(path) >= width:
            raise DatumError(f"image path '{meta.image_path}' longer than the row width {width}")
        plane[row, :len(path)] = np.frombuffer(path, np.uint8)
    return plane


def _floats(plane: np.ndarray, row: int, count: int, start: int = 0) -> np.ndarray:
    return plane[row, start:start + 4 * count].copy().view("<f4").astype(np.float32)


def _c_string(row: np.ndarray) -> str:
    raw = row.tobytes()
    end = raw.find(b"\0")
    return raw[:end if end >= 0 else len(raw)].decode("ascii", "replace")


def infer_num_parts(plane: np.ndarray) -> int:
    """Keypoints per person, guessed from the plane: 1 + last non-zero slot of rows 5-7.

    Unlabeled points carry v=2 and labeled ones non-zero coordinates (>= 1 for 1-based data),
    so trailing slots are non-zero up to N; pass N explicitly where it is known.
    """
    rows = plane[5:8, :].reshape(3, -1)
    usable = rows.shape[1] // 4 * 4
    slots = rows[:, :usable].reshape(3, -1, 4).any(axis=(0, 2))
    nonzero = np.flatnonzero(slots)
    if nonzero.size == 0:
        raise DatumError("metadata has no keypoints (rows 5-7 are empty)")
    return int(nonzero[-1]) + 1


def decode_metadata(plane, width: Optional[int] = None, num_lmdb_parts: Optional[int] = None,
                    with_image_path: Optional[bool] = None) -> Metadata:
    """Decode a metadata plane (bytes or uint8 array; rows of ``width`` bytes).

    ``num_lmdb_parts`` None: inferred (:func:`infer_num_parts`). ``with_image_path`` None:
    read the path row for ``dome*`` datasets. Values are returned as stored (no 1-based shift).
    """
    if isinstance(plane, (bytes, bytearray, memoryview)):
        if width is None:
            raise DatumError("decode_metadata needs the row width for a bytes plane")
        plane = np.frombuffer(bytes(plane), np.uint8).reshape(-1, width)
    plane = np.asarray(plane, np.uint8)
    if plane.ndim != 2 or plane.shape[0] < 8 or plane.shape[1] < 14:
        raise DatumError(f"metadata plane of shape {plane.shape} is too small")
    n_parts = infer_num_parts(plane) if num_lmdb_parts is None else int(num_lmdb_parts)
    if 4 * n_parts > plane.shape[1]:
        raise DatumError(f"{n_parts} keypoints do not fit a metadata row of {plane.shape[1]} bytes")
    dataset = _c_string(plane[0])
    height_width = _floats(plane, 1, 2)
    n_other = int(plane[2, 0])
    counters = plane[2, 2:14].copy().view("<f4")
    joints = np.stack([_floats(plane, 5 + a, n_parts) for a in range(3)], axis=1)
    need_rows = 8 + (4 * n_other + 1 if n_other else 0)
    if plane.shape[0] < need_rows:
        raise DatumError(f"metadata says {n_other} other people but has only {plane.shape[0]} rows")
    others_objpos = np.stack([_floats(plane, 8 + p, 2) for p in range(n_other)]) if n_other \
        else np.zeros((0, 2), np.float32)
    others_scale = _floats(plane, 8 + n_other, n_other) if n_other else np.zeros(0, np.float32)
    others_joints = np.stack([
        np.stack([_floats(plane, 9 + n_other + 3 * p + a, n_parts) for a in range(3)], axis=1)
        for p in range(n_other)]) if n_other else np.zeros((0, n_parts, 3), np.float32)
    if with_image_path is None:
        with_image_path = dataset.startswith("dome")
    path_row = 9 + 4 * n_other if n_other else 8
    image_path = _c_string(plane[path_row]) if with_image_path and path_row < plane.shape[0] else None
    return Metadata(dataset=dataset, img_height=float(height_width[0]), img_width=float(height_width[1]),
                    objpos=_floats(plane, 3, 2), scale_provided=float(_floats(plane, 4, 1)[0]),
                    joints=joints, people_index=int(plane[2, 1]),
                    annolist_index=float(counters[0]), write_number=float(counters[1]),
                    total_write_number=float(counters[2]), others_objpos=others_objpos,
                    others_scale=others_scale, others_joints=others_joints, image_path=image_path)

