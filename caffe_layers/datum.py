"""The OpenPose training datum: Caffe ``Datum`` records (de)serialised, the metadata plane through ``metadata.py``.

One codec shared by the LMDB writer, the LMDB reader, the inspector and the OPData layer.
Layout (``docs/formats.md`` §Datum, §Metadata rows):

* raw datum (default, what the original pipeline writes): ``channels=C, height=H, width=W,
  data = uint8 (C, H, W) C-order, label = 0``; channels are B, G, R, metadata plane and,
  where the dataset has one, ``mask_miss`` (255 = train, 0 = ignore). Negatives: B, G, R only.
  The bytes equal pycaffe's ``array_to_datum(arr, 0).SerializeToString()``.
* metadata plane: :mod:`.metadata` (rows of ``W`` bytes, coordinates as stored).

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
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from google.protobuf.message import DecodeError

from . import caffe_pb2
from .caffe_io import CaffemodelError, wire_fields
from .metadata import DatumError, Metadata, decode_metadata, encode_metadata, metadata_rows

#: minimum datum width: narrower images are padded on the right (grey image, mask 0)
MINIMUM_WIDTH = 128
MINIMUM_WIDTH_FACE_MASK_OUT = 300

DOME_CANVAS = (100, 540)      # metadata-only datum of the Dome category (H, W)

ENCODED_MAGIC = b"OPTE"
_TRAILER = struct.Struct("<II4s")


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
    # read_datum(..., interleaved=True) of an image + metadata + mask datum: B, G, R and mask_miss in
    # one (H, W, 4) array (augmentation warps it in one pass); image and mask_miss are views of it
    planes: Optional[np.ndarray] = None
    mask_full: bool = False                   # with planes: mask_miss is 255 everywhere


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


def raw_datum_planes(value) -> Optional[np.ndarray]:
    """The ``(channels, height, width)`` uint8 planes of a raw (not encoded) Caffe Datum, read in
    place from ``value`` (bytes or an LMDB buffer; no copy), or None for anything else (encoded,
    float_data, malformed: :func:`read_datum` then parses the message and says what is wrong).

    Reads the protobuf wire format directly: parsing the message and reading its ``data`` field
    copy the 1.5 MB of a 640x480 datum twice.
    """
    fields = {}
    try:
        for number, _, field_value in wire_fields(value, 0, len(value)):
            fields[number] = field_value
    except (CaffemodelError, IndexError):
        return None
    c, h, w = fields.get(1, 0), fields.get(2, 0), fields.get(3, 0)
    data = fields.get(4)
    if fields.get(7, 0) or 6 in fields or not isinstance(data, tuple) or not isinstance(c, int) or c <= 0 \
            or data[1] - data[0] != c * h * w:
        return None
    return np.frombuffer(value, np.uint8, data[1] - data[0], data[0]).reshape(c, h, w)


def _parsed_planes(value):
    """(image or None, extra planes, encoded) of a datum that :func:`raw_datum_planes` does not read."""
    fields = parse_datum(value)
    c, h, w = fields.channels, fields.height, fields.width
    if fields.encoded:
        image, extra = _decode_encoded(fields)
        h, w = image.shape[:2]
        return image, ([] if extra is None else list(extra.reshape(-1, h, w))), True
    if not fields.data:
        raise DatumError("datum has an empty data field (float_data is not supported)")
    if len(fields.data) != c * h * w:
        raise DatumError(f"datum data has {len(fields.data)} bytes, expected {c}x{h}x{w}")
    arr = np.frombuffer(fields.data, np.uint8).reshape(c, h, w)
    return (None, [arr[0]], False) if c == 1 else (cv2.merge([arr[0], arr[1], arr[2]]), list(arr[3:]), False)


def read_datum(value, num_lmdb_parts: Optional[int] = None, decode_meta: bool = True,
               interleaved: bool = False) -> Record:
    """Decode a datum value (raw or encoded; ours or the original pipeline's) into a :class:`Record`.

    Channel meaning by count: 1 = Dome metadata only, 3 = negatives image, 4 = image + metadata,
    5 = image + metadata + mask_miss (extra channels, e.g. mask_all of older LMDBs, are ignored).
    ``value`` may be a buffer into an LMDB map: the record holds copies only. Raw planes are read in
    place and interleaved with ``cv2.merge`` (about 30x cheaper than a CHW -> HWC transpose);
    ``interleaved`` fills :attr:`Record.planes` for a datum with a mask (the data layer's reads).
    """
    arr = raw_datum_planes(value)
    planes, mask_full = None, False
    if arr is None:
        image, extra, encoded = _parsed_planes(value)
        mask = extra[1].copy() if len(extra) > 1 else None
    else:
        encoded, extra = False, list(arr[3:]) if arr.shape[0] > 1 else [arr[0]]
        if arr.shape[0] == 1:
            image, mask = None, None
        elif interleaved and arr.shape[0] >= 5:
            planes = cv2.merge([arr[0], arr[1], arr[2], arr[4]])
            image, mask, mask_full = planes[..., :3], planes[..., 3], cv2.minMaxLoc(arr[4])[0] == 255
        else:
            image = cv2.merge([arr[0], arr[1], arr[2]])
            mask = extra[1].copy() if len(extra) > 1 else None
    meta_plane = extra[0].copy() if extra else None
    meta = None
    if meta_plane is not None and decode_meta:
        meta = decode_metadata(meta_plane, num_lmdb_parts=num_lmdb_parts)
    return Record(image=image, meta=meta, mask_miss=mask, meta_plane=meta_plane, encoded=encoded,
                  planes=planes, mask_full=mask_full)


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
