"""The OpenPose training datum: metadata plane codec and Caffe ``Datum`` (de)serialisation.

One codec shared by the LMDB writer, the LMDB reader, the inspector and the OPData layer.
Layout (``docs/formats.md`` §Datum, §Metadata rows):

* raw datum (default, what the original pipeline writes): ``channels=C, height=H, width=W,
  data = uint8 (C, H, W) C-order, label = 0``; channels are B, G, R, metadata plane and,
  where the dataset has one, ``mask_miss`` (255 = train, 0 = ignore). Negatives: B, G, R only.
  The bytes equal pycaffe's ``array_to_datum(arr, 0).SerializeToString()``.
* metadata plane: rows of ``W`` bytes, floats little-endian float32 written from column 0,
  the rest of each row zero (see :func:`encode_metadata`).

Coordinates (decision). The original COCO LMDBs hold MATLAB-style **1-based** pixel coordinates
and the training fork's ``readMetaData`` subtracts 1 for the COCO category. We keep that file
convention so that our LMDBs train correctly with the original Caffe fork too: for every
dataset whose registry category is COCO (``COCO``, ``COCO_WholeBody``: :func:`one_based_dataset`) the
writer stores ``x + 1, y + 1`` for joints and objpos of the main person and of the others, and
decoding gives back the stored (1-based) numbers; :meth:`Metadata.zero_based` (and our OPData
layer) subtracts 1, exactly as the fork does. MPII, hand, face: stored 0-based, no shift.
LMDBs of the original pipeline therefore decode the same way as ours.

Encoded datums (``encoded=True``, an opt-in to cut LMDB size several-fold): Caffe's
``encoded`` flag means ``data`` holds an image file. We store

    data = JPEG(B,G,R) || PNG(extra planes) || trailer
    trailer = uint32 LE len(JPEG), uint32 LE len(PNG), b"OPTE"

where "extra planes" are the metadata plane and ``mask_miss`` stacked vertically into one
grey (C-3)*H x W image, PNG being lossless so metadata and mask stay bit-exact. ``channels``,
``height`` and ``width`` keep the decoded shape. The data still starts with a valid JPEG,
so a plain ``cv2.imdecode`` (Caffe's ``DecodeDatumNative``) sees the image. A datum whose
data has no trailer is read as an ordinary Caffe encoded image (e.g. a negatives JPEG).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Optional

import cv2
import numpy as np

from google.protobuf.message import DecodeError

from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.registry import get_dataset_layout, list_dataset_layouts

from . import caffe_pb2


def one_based_dataset(dataset: str) -> bool:
    """Whether records of this dataset string store coordinates 1-based: a registered layout of the fork's
    COCO category writes it (asked when needed, so that a YAML skeleton's layouts count once loaded)."""
    return any(layout.one_based and layout.lmdb_dataset == dataset
               for layout in map(get_dataset_layout, list_dataset_layouts()))


#: minimum datum width: narrower images are padded on the right (grey image, mask 0)
MINIMUM_WIDTH = 128
MINIMUM_WIDTH_FACE_MASK_OUT = 300

DOME_CANVAS = (100, 540)      # metadata-only datum of the Dome category (H, W)

ENCODED_MAGIC = b"OPTE"
_TRAILER = struct.Struct("<II4s")


class DatumError(OpenPoseTrainError, ValueError):
    """A datum or metadata plane that cannot be encoded or decoded (message says why)."""


# ----------------------------------------------------------------------------- metadata

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


# ----------------------------------------------------------------------------- protobuf

def serialize_datum(channels: int, height: int, width: int, data, label: int = 0,
                    encoded: bool = False) -> bytes:
    """Caffe ``Datum`` wire bytes, equal to pycaffe's ``array_to_datum(...).SerializeToString()``.

    ``data`` is bytes or a list of bytes-like chunks (1-D uint8 arrays too) concatenated in place (one copy of the image
    instead of three): the small fields are serialised by caffe_pb2 and the ``data`` field
    (number 4, length-delimited) is spliced in between, in field-number order as protobuf does.
    """
    chunks = data if isinstance(data, list) else [data]
    length = sum(memoryview(c).nbytes for c in chunks)
    return b"".join([_datum_head(channels, height, width, length), *chunks, _datum_tail(label, encoded)])


def _datum_head(channels: int, height: int, width: int, length: int) -> bytes:
    """Wire bytes before the ``data`` payload: fields 1-3, then field 4's tag and length."""
    head = caffe_pb2.Datum(channels=channels, height=height, width=width).SerializeToString()
    length_varint = caffe_pb2.Datum(channels=length).SerializeToString()[1:]   # the varint of `length`
    return head + b"\x22" + length_varint


def _datum_tail(label: int = 0, encoded: bool = False) -> bytes:
    """Wire bytes after the ``data`` payload: ``label`` (always written, as pycaffe) and ``encoded``."""
    tail = caffe_pb2.Datum(label=label).SerializeToString()
    if encoded:
        tail += caffe_pb2.Datum(encoded=True).SerializeToString()
    return tail


def parse_datum(value) -> "caffe_pb2.Datum":
    """Parse Caffe ``Datum`` wire bytes; :class:`DatumError` when they are not a Datum."""
    try:
        return caffe_pb2.Datum.FromString(bytes(value))
    except DecodeError as exc:
        raise DatumError(f"not a Caffe Datum (truncated or corrupt: {exc})") from None


# ----------------------------------------------------------------------------- datum

@dataclass
class Record:
    """A decoded datum: image (H, W, 3) BGR or None, metadata (or None), mask_miss (H, W) or None."""

    image: Optional[np.ndarray]
    meta: Optional[Metadata]
    mask_miss: Optional[np.ndarray]
    meta_plane: Optional[np.ndarray] = None   # the raw metadata plane (H, W) uint8
    encoded: bool = False


def minimum_width(dataset: Optional[str], num_parts: int = 0) -> int:
    """Datum width below which the writer pads: 128 (300 for face70_mask_out) as the original,
    and at least 4 bytes per keypoint so that a metadata row holds them (the original did not
    check; e.g. COCO-WholeBody's 133 keypoints need 532)."""
    base = MINIMUM_WIDTH_FACE_MASK_OUT if dataset and "face70_mask_out" in dataset else MINIMUM_WIDTH
    return max(base, 4 * num_parts)


def pad_to_minimum_width(image: np.ndarray, mask_miss: Optional[np.ndarray], min_width: int):
    """Pad on the right to ``min_width``: image grey (128,128,128), mask 0 (as the original writer)."""
    width = image.shape[1]
    if width >= min_width:
        return image, mask_miss
    pad = min_width - width
    image = cv2.copyMakeBorder(image, 0, 0, 0, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    if mask_miss is not None:
        mask_miss = cv2.copyMakeBorder(mask_miss, 0, 0, 0, pad, cv2.BORDER_CONSTANT, value=0)
    return image, mask_miss


class DatumBuilder:
    """Datums of the records of one image: the image planes (or its JPEG) and mask are prepared once.

    ``image`` BGR uint8 (H, W, 3) or None (Dome: metadata-only datums); ``mask_miss`` (H, W) uint8
    or None (dataset without a mask channel); ``min_width``: pad narrow images on the right to it
    (the writer does for records with metadata; None = never).

    Raw datums of one image differ only in the metadata plane, so :meth:`raw_datum` keeps one
    serialized datum per channel count in a buffer of its own (header, B, G, R planes, metadata
    plane, mask, tail written once) and rewrites only the metadata rows per record: the writer
    hands that buffer to LMDB without another copy.
    """

    def __init__(self, image: Optional[np.ndarray], mask_miss: Optional[np.ndarray] = None,
                 encoded: bool = False, jpeg_quality: int = 95, min_width: Optional[int] = None):
        self.encoded = encoded
        self.image = None
        if image is None:
            return
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DatumError(f"image must be uint8 (H, W, 3) BGR, got {image.dtype} {image.shape}")
        if mask_miss is not None and mask_miss.shape != image.shape[:2]:
            raise DatumError(f"mask_miss {mask_miss.shape} differs from the image {image.shape[:2]}")
        if min_width is not None:
            image, mask_miss = pad_to_minimum_width(image, mask_miss, min_width)
        self.image = image
        self.height, self.width = image.shape[:2]
        self.mask = None if mask_miss is None else np.ascontiguousarray(mask_miss, np.uint8)
        self._raw = {}          # channels -> (serialized datum buffer, its metadata plane view)
        self._meta_rows_used = 0
        if encoded:
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:
                raise DatumError("JPEG encoding failed")
            self._jpeg = jpeg.tobytes()

    def metadata_rows(self, metadata: Metadata) -> np.ndarray:
        """:func:`metadata_rows` of one record for this image (checks that it fits)."""
        return metadata_rows(metadata, self.height, self.width)

    def _raw_buffer(self, channels: int):
        if channels not in self._raw:
            h, w = self.height, self.width
            head, tail = _datum_head(channels, h, w, channels * h * w), _datum_tail()
            buffer = np.empty(len(head) + channels * h * w + len(tail), np.uint8)
            buffer[:len(head)] = np.frombuffer(head, np.uint8)
            buffer[len(buffer) - len(tail):] = np.frombuffer(tail, np.uint8)
            planes = buffer[len(head):len(head) + channels * h * w].reshape(channels, h, w)
            # HWC -> CHW straight into the datum; OpenCV would silently write elsewhere if it
            # could not use the views, so check and fall back to numpy
            split = cv2.split(self.image, [planes[0], planes[1], planes[2]])
            if any(a.ctypes.data != b.ctypes.data for a, b in zip(split, planes)):
                np.copyto(planes[:3], self.image.transpose(2, 0, 1))
            meta_plane = None
            if channels > 3:
                meta_plane = planes[3]
                meta_plane.fill(0)
                if channels > 4:
                    planes[4] = self.mask
            self._raw[channels] = (buffer, meta_plane)
        return self._raw[channels]

    def prepare_raw(self, metadata: bool = True) -> None:
        """Write the parts that all raw datums of this image share (header, image planes, mask)
        now, e.g. in a worker thread; :meth:`raw_datum` then only adds the metadata rows."""
        self._raw_buffer(4 + (self.mask is not None) if metadata else 3)

    def raw_datum(self, meta_rows: Optional[np.ndarray] = None) -> memoryview:
        """One raw record's serialized Datum, in this builder's buffer (no copy): valid until the
        next call. ``meta_rows`` from :meth:`metadata_rows`; None: a 3-channel negatives datum."""
        if self.image is None or self.encoded:
            raise DatumError("raw_datum needs an image and a raw (not encoded) builder")
        if meta_rows is None:
            if self.mask is not None:
                raise DatumError("a mask_miss channel needs metadata (channel 3)")
            return memoryview(self._raw_buffer(3)[0])
        buffer, plane = self._raw_buffer(4 + (self.mask is not None))
        rows = meta_rows.shape[0]
        plane[:rows] = meta_rows
        plane[rows:self._meta_rows_used] = 0         # rows the previous record used
        self._meta_rows_used = rows
        return memoryview(buffer)

    def build(self, metadata: Optional[Metadata] = None) -> bytes:
        """The serialized Datum of one record (``metadata`` in stored form; None: negatives)."""
        if self.image is None:
            if metadata is None:
                raise DatumError("a datum needs an image or metadata")
            plane = encode_metadata(metadata, *DOME_CANVAS)
            return serialize_datum(1, DOME_CANVAS[0], DOME_CANVAS[1], plane.tobytes())
        if not self.encoded:
            return bytes(self.raw_datum(None if metadata is None else self.metadata_rows(metadata)))
        extra = []
        if metadata is not None:
            extra.append(encode_metadata(metadata, self.height, self.width))
            if self.mask is not None:
                extra.append(self.mask)
        elif self.mask is not None:
            raise DatumError("a mask_miss channel needs metadata (channel 3)")
        channels = 3 + len(extra)
        png = b""
        if extra:
            ok, png_arr = cv2.imencode(".png", np.concatenate(extra, axis=0), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise DatumError("PNG encoding failed")
            png = png_arr.tobytes()
        data = b"".join([self._jpeg, png, _TRAILER.pack(len(self._jpeg), len(png), ENCODED_MAGIC)])
        return serialize_datum(channels, self.height, self.width, data, encoded=True)


def build_datum(image: Optional[np.ndarray], metadata: Optional[Metadata] = None,
                mask_miss: Optional[np.ndarray] = None, encoded: bool = False,
                jpeg_quality: int = 95) -> bytes:
    """Serialized Caffe Datum of one record.

    ``image`` BGR uint8 (H, W, 3); ``metadata`` already in stored form (see :func:`one_based`);
    ``mask_miss`` (H, W) uint8 or None (dataset without a mask channel). Narrow images are
    padded to the minimum width. ``image`` None with metadata: a Dome metadata-only datum.
    No metadata: a negatives (background) datum of 3 channels.
    """
    min_width = minimum_width(metadata.dataset, metadata.num_parts) if metadata is not None else None
    return DatumBuilder(image, mask_miss, encoded, jpeg_quality, min_width).build(metadata)


def _decode_encoded(fields):
    """(image, extra planes array or None) of an encoded datum."""
    data = fields.data
    if len(data) >= _TRAILER.size and data[-4:] == ENCODED_MAGIC:
        jpeg_len, png_len, _ = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
        if jpeg_len + png_len + _TRAILER.size != len(data):
            raise DatumError("encoded datum trailer does not match its data length")
        image = cv2.imdecode(np.frombuffer(data, np.uint8, jpeg_len), cv2.IMREAD_COLOR)
        extra = None
        if png_len:
            extra = cv2.imdecode(np.frombuffer(data, np.uint8, png_len, jpeg_len), cv2.IMREAD_UNCHANGED)
            if extra is None:
                raise DatumError("the PNG planes of an encoded datum do not decode")
    else:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        extra = None
    if image is None:
        raise DatumError("the image of an encoded datum does not decode")
    return image, extra


def read_datum(value, num_lmdb_parts: Optional[int] = None, decode_meta: bool = True) -> Record:
    """Decode a datum value (raw or encoded; ours or the original pipeline's) into a :class:`Record`.

    Channel meaning by count: 1 = Dome metadata only, 3 = negatives image, 4 = image + metadata,
    5 = image + metadata + mask_miss (extra channels, e.g. mask_all of older LMDBs, are ignored).
    """
    fields = parse_datum(value)
    c, h, w = fields.channels, fields.height, fields.width
    if fields.encoded:
        image, extra = _decode_encoded(fields)
        h, w = image.shape[:2]
        planes = [] if extra is None else list(extra.reshape(-1, h, w))
    else:
        if not fields.data:
            raise DatumError("datum has an empty data field (float_data is not supported)")
        if len(fields.data) != c * h * w:
            raise DatumError(f"datum data has {len(fields.data)} bytes, expected {c}x{h}x{w}")
        arr = np.frombuffer(fields.data, np.uint8).reshape(c, h, w)
        if c == 1:
            image, planes = None, [arr[0]]
        else:
            image = cv2.merge([arr[0], arr[1], arr[2]])      # CHW -> HWC: ~30x faster than a transpose copy
            planes = list(arr[3:])
    meta_plane = planes[0] if planes else None
    mask = np.ascontiguousarray(planes[1]) if len(planes) > 1 else None
    meta = None
    if meta_plane is not None and decode_meta:
        meta = decode_metadata(meta_plane, num_lmdb_parts=num_lmdb_parts)
    return Record(image=image, meta=meta, mask_miss=mask, meta_plane=meta_plane,
                  encoded=fields.encoded)


def set_write_number(value: bytes, write_number: int) -> bytes:
    """The same datum with metadata row 2's ``writeNumber`` replaced (image bytes untouched).

    Used when records are renumbered (the writer closing gaps left by undecodable images).
    """
    fields = parse_datum(value)
    number = struct.pack("<f", float(write_number))
    if not fields.encoded:
        if fields.channels < 4:
            return value                     # negatives: no metadata
        h, w = fields.height, fields.width
        offset = 3 * h * w + 2 * w + 6
        data = fields.data[:offset] + number + fields.data[offset + 4:]
        return serialize_datum(fields.channels, h, w, data, fields.label)
    data = fields.data
    if data[-4:] != ENCODED_MAGIC:
        return value
    jpeg_len, png_len, _ = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if not png_len:
        return value
    extra = cv2.imdecode(np.frombuffer(data, np.uint8, png_len, jpeg_len), cv2.IMREAD_UNCHANGED)
    extra[2, 6:10] = np.frombuffer(number, np.uint8)
    ok, png = cv2.imencode(".png", extra, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    png = png.tobytes()
    data = data[:jpeg_len] + png + _TRAILER.pack(jpeg_len, len(png), ENCODED_MAGIC)
    return serialize_datum(fields.channels, fields.height, fields.width, data, fields.label, encoded=True)
