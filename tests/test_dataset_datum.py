"""Datum / metadata codec: byte layout against the original rows (docs/formats.md §Metadata rows), protobuf wire compatibility, round trips."""
import struct

import cv2
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from openpose_train.caffe_layers.datum import DatumError, build_datum, parse_datum, read_datum, serialize_datum
from openpose_train.caffe_layers.metadata import Metadata, decode_metadata, encode_metadata, infer_num_parts, one_based


def _datum_class():
    """An independent Datum message built from caffe.proto's field numbers (not our codec)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="test_datum.proto", package="t", syntax="proto2")
    msg = fdp.message_type.add(name="Datum")
    F = descriptor_pb2.FieldDescriptorProto
    for name, number, ftype in [("channels", 1, F.TYPE_INT32), ("height", 2, F.TYPE_INT32),
                                ("width", 3, F.TYPE_INT32), ("data", 4, F.TYPE_BYTES),
                                ("label", 5, F.TYPE_INT32), ("encoded", 7, F.TYPE_BOOL)]:
        msg.field.add(name=name, number=number, type=ftype, label=F.LABEL_OPTIONAL)
    msg.field.add(name="float_data", number=6, type=F.TYPE_FLOAT, label=F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Datum"))


def _sample_meta(n_parts=17, n_other=2, dataset="COCO", seed=0):
    rng = np.random.default_rng(seed)
    joints = np.concatenate([rng.uniform(0, 300, (n_parts, 2)), rng.integers(0, 3, (n_parts, 1))], 1)
    others = np.concatenate([rng.uniform(0, 300, (n_other, n_parts, 2)),
                             rng.integers(0, 3, (n_other, n_parts, 1))], 2)
    return Metadata(dataset=dataset, img_height=240, img_width=320, objpos=[100.5, 80.25],
                    scale_provided=0.75, joints=joints, people_index=3, annolist_index=7,
                    write_number=12, total_write_number=40, others_objpos=rng.uniform(0, 300, (n_other, 2)),
                    others_scale=rng.uniform(0.1, 1, n_other), others_joints=others)


def test_metadata_rows_match_the_original_layout():
    meta = _sample_meta()
    plane = encode_metadata(meta, 240, 320)
    f = lambda row, i: struct.unpack_from("<f", plane[row].tobytes(), 4 * i)[0]  # noqa: E731
    assert plane[0, :5].tobytes() == b"COCO\0"
    assert (f(1, 0), f(1, 1)) == (240.0, 320.0)
    assert plane[2, 0] == 2 and plane[2, 1] == 3
    assert struct.unpack_from("<3f", plane[2].tobytes(), 2) == (7.0, 12.0, 40.0)
    assert (f(3, 0), f(3, 1), f(4, 0)) == (100.5, 80.25, 0.75)
    for axis in range(3):
        assert np.array_equal(plane[5 + axis, :68].view("<f4"), meta.joints[:, axis].astype(np.float32))
        assert not plane[5 + axis, 68:].any()
    assert np.array_equal(plane[8, :8].view("<f4"), meta.others_objpos[0])
    assert np.array_equal(plane[10, :8].view("<f4"), meta.others_scale)
    # other person 1, visibility row = 9 + n + 3p + 2
    assert np.array_equal(plane[9 + 2 + 3 + 2, :68].view("<f4"), meta.others_joints[1, :, 2])
    assert not plane[9 + 4 * 2:].any(), "rows after 8 + 4n + 1 stay zero"


def test_metadata_round_trip_and_inference():
    for n_other in (0, 1, 3):
        meta = _sample_meta(n_parts=23, n_other=n_other)
        plane = encode_metadata(meta, 100, 128)
        assert decode_metadata(plane, num_lmdb_parts=23) == meta
        assert decode_metadata(plane.tobytes(), width=128, num_lmdb_parts=23) == meta
        assert infer_num_parts(plane) == 23


def test_metadata_that_does_not_fit_is_refused():
    with pytest.raises(DatumError, match="row width"):
        encode_metadata(_sample_meta(n_parts=70), 100, 200)
    with pytest.raises(DatumError, match="rows"):
        encode_metadata(_sample_meta(n_other=5), 20, 300)


def test_one_based_shift_only_for_coco_category():
    meta = _sample_meta()
    stored = one_based(meta)
    assert np.array_equal(stored.joints[:, :2], meta.joints[:, :2] + 1)
    assert np.array_equal(stored.joints[:, 2], meta.joints[:, 2])
    assert np.array_equal(stored.others_objpos, meta.others_objpos + 1)
    back = stored.zero_based()
    assert np.allclose(back.joints, meta.joints) and np.allclose(back.others_joints, meta.others_joints)
    assert np.allclose(back.objpos, meta.objpos)
    mpii = _sample_meta(n_parts=16, dataset="MPII")
    assert one_based(mpii) == mpii and mpii.zero_based() == mpii


def test_raw_datum_bytes_equal_protobuf_serialisation():
    Datum = _datum_class()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (60, 150, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (60, 150), dtype=np.uint8) * 255
    meta = _sample_meta(n_other=1)
    value = build_datum(img, meta, mask)
    ref = Datum(channels=5, height=60, width=150, label=0)
    arr = np.concatenate([img.transpose(2, 0, 1), encode_metadata(meta, 60, 150)[None], mask[None]])
    ref.data = arr.tobytes()
    assert value == ref.SerializeToString()       # what pycaffe's array_to_datum writes
    parsed = Datum.FromString(value)
    assert (parsed.channels, parsed.height, parsed.width, parsed.encoded) == (5, 60, 150, False)
    rec = read_datum(value, num_lmdb_parts=17)
    assert np.array_equal(rec.image, img) and np.array_equal(rec.mask_miss, mask) and rec.meta == meta
    # other field orders and unknown fields parse too
    ref.float_data.extend([1.5])
    assert list(parse_datum(ref.SerializeToString()).float_data) == [1.5]


def test_narrow_image_is_padded_grey_and_mask_zero():
    img = np.full((200, 100, 3), 7, np.uint8)
    mask = np.full((200, 100), 255, np.uint8)
    rec = read_datum(build_datum(img, _sample_meta(n_other=0), mask))
    assert rec.image.shape == (200, 128, 3)
    assert (rec.image[:, 100:] == 128).all() and (rec.image[:, :100] == 7).all()
    assert not rec.mask_miss[:, 100:].any() and (rec.mask_miss[:, :100] == 255).all()
    assert rec.meta.img_width == 320.0     # the stored width stays the JSON value


def test_encoded_datum_decodes_equal_to_raw():
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img = cv2.resize(small, (320, 240), interpolation=cv2.INTER_LINEAR)   # smooth, JPEG-friendly
    mask = np.full((240, 320), 255, np.uint8)
    mask[50:90, 20:200] = 0
    meta = _sample_meta()
    raw, enc = build_datum(img, meta, mask), build_datum(img, meta, mask, encoded=True)
    assert len(enc) * 3 < len(raw)
    a, b = read_datum(raw), read_datum(enc)
    assert b.encoded and not a.encoded
    assert a.meta == b.meta == meta
    assert np.array_equal(a.mask_miss, b.mask_miss) and np.array_equal(a.meta_plane, b.meta_plane)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 3
    # the data starts with a plain JPEG: Caffe's DecodeDatumNative (cv::imdecode) sees the image
    jpeg = cv2.imdecode(np.frombuffer(parse_datum(enc).data, np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (240, 320, 3)


def test_background_and_dome_datums():
    img = np.zeros((50, 60, 3), np.uint8)
    value = build_datum(img)
    assert parse_datum(value).channels == 3
    rec = read_datum(value)
    assert rec.meta is None and rec.mask_miss is None and rec.image.shape == (50, 60, 3)
    dome = _sample_meta(n_parts=135, n_other=1, dataset="dome135")
    dome.image_path = "seq/00_01/00_01_00001234.jpg"
    rec = read_datum(build_datum(None, dome))
    assert rec.image is None and rec.meta_plane.shape == (100, 540)
    assert rec.meta == dome


def test_truncated_datum_is_a_clear_error():
    value = serialize_datum(3, 4, 4, bytes(48))
    with pytest.raises(DatumError, match="not a Caffe Datum"):
        read_datum(value[:20])
    with pytest.raises(DatumError, match="expected"):
        read_datum(serialize_datum(3, 4, 5, bytes(48)))


def test_reads_a_datum_written_like_the_original_generate_lmdb_file():
    """An independent emulation of generateLmdbFile.py (struct '<f' bytes per row, pycaffe Datum)."""
    h, w, n = 64, 130, 17
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.full((h, w), 255, np.uint8)
    joints = [[float(rng.integers(1, 120)), float(rng.integers(1, 60)), float(rng.integers(0, 3))] for _ in range(n)]
    other = [[float(rng.integers(1, 120)), float(rng.integers(1, 60)), 1.0] for _ in range(n)]
    meta = np.zeros((h, w), np.uint8)

    def put(row, data):
        meta[row, :len(data)] = np.frombuffer(data, np.uint8)
    put(0, b"COCO")
    put(1, struct.pack("<ff", 427, 640))
    put(2, bytes([1, 2]) + struct.pack("<fff", 9, 4, 100))
    put(3, struct.pack("<ff", 50.5, 30.5))
    put(4, struct.pack("<f", 0.8))
    for axis in range(3):
        put(5 + axis, b"".join(struct.pack("<f", j[axis]) for j in joints))
    put(8, struct.pack("<ff", 20, 25))
    put(9, struct.pack("<f", 0.4))
    for axis in range(3):
        put(10 + axis, b"".join(struct.pack("<f", j[axis]) for j in other))
    arr = np.concatenate([img.transpose(2, 0, 1), meta[None], mask[None]])
    value = _datum_class()(channels=5, height=h, width=w, data=arr.tobytes(), label=0).SerializeToString()
    rec = read_datum(value)
    m = rec.meta
    assert (m.dataset, m.img_height, m.img_width, m.people_index, m.annolist_index) == ("COCO", 427, 640, 2, 9)
    assert (m.write_number, m.total_write_number, m.scale_provided) == (4, 100, pytest.approx(0.8))
    assert np.array_equal(m.joints, np.asarray(joints, np.float32)) and m.num_parts == n
    assert np.array_equal(m.others_joints[0], np.asarray(other, np.float32))
    assert np.array_equal(m.others_objpos, [[20, 25]]) and np.allclose(m.others_scale, [0.4])
    assert np.allclose(m.zero_based().objpos, [49.5, 29.5])         # the fork's COCO -1
    assert np.array_equal(rec.image, img) and np.array_equal(rec.mask_miss, mask)
