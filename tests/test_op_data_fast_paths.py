"""The fast paths of the OPData layer against independent references: the in-place datum reader
against protobuf parsing, the LUT normalisation against the torch ops, the windowed renderer's
Gaussian cut-off and PAF band against full-grid evaluations of the formulas (docs/labels.md §Gaussians, §PAFs)."""
import numpy as np
import pytest
import torch

from openpose_train.caffe_layers import labels as L
from openpose_train.caffe_layers import opdata_batch
from openpose_train.caffe_layers.datum import parse_datum, raw_datum_planes, serialize_datum


def test_raw_datum_planes_equal_the_parsed_message():
    rng = np.random.default_rng(0)
    for c, h, w in [(5, 7, 130), (3, 4, 5), (1, 2, 300)]:
        data = rng.integers(0, 256, c * h * w, dtype=np.uint8).tobytes()
        value = serialize_datum(c, h, w, data, 0)
        planes = raw_datum_planes(value)
        msg = parse_datum(value)
        assert planes.shape == (msg.channels, msg.height, msg.width)
        assert planes.tobytes() == msg.data
        assert raw_datum_planes(memoryview(value)).tobytes() == msg.data      # LMDB buffers
    # encoded, truncated and garbage values are left to the protobuf reader
    assert raw_datum_planes(serialize_datum(3, 2, 2, b"abcd", 0, encoded=True)) is None
    value = serialize_datum(3, 4, 5, bytes(60), 0)
    for cut in (1, 5, len(value) - 1):
        assert raw_datum_planes(value[:cut]) is None
    assert raw_datum_planes(b"\xff" * 12) is None


def test_interleaved_records_equal_the_plain_and_the_parsed_ones(monkeypatch):
    """read_datum's three readings of one datum: in place + interleaved (the data layer's), in place
    (image, mask copies), and through the protobuf message (the in-place reader declining)."""
    from openpose_train.caffe_layers import datum
    from openpose_train.caffe_layers.datum import read_datum
    from openpose_train.caffe_layers.metadata import Metadata, encode_metadata
    rng = np.random.default_rng(1)
    h, w = 40, 140
    meta = Metadata(dataset="COCO", img_height=h, img_width=w, objpos=(20, 20), scale_provided=0.5,
                    joints=rng.uniform(0, 30, (17, 3)).astype(np.float32))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for mask_value in (None, 255):
        mask = rng.integers(0, 256, (h, w), dtype=np.uint8) if mask_value is None else np.full((h, w), 255, np.uint8)
        planes = np.concatenate([image.transpose(2, 0, 1), encode_metadata(meta, h, w)[None], mask[None]])
        value = serialize_datum(5, h, w, planes.tobytes(), 0)
        fast = read_datum(value, interleaved=True)
        plain = read_datum(memoryview(value))
        with monkeypatch.context() as patch:
            patch.setattr(datum, "raw_datum_planes", lambda value: None)
            parsed = read_datum(value, interleaved=True)
        assert fast.planes.shape == (h, w, 4) and fast.mask_full == (mask_value == 255)
        for record in (fast, plain, parsed):
            np.testing.assert_array_equal(record.image, image)
            np.testing.assert_array_equal(record.mask_miss, mask)
            assert record.meta == meta
        assert plain.planes is None and parsed.planes is None and not plain.mask_full


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_lut_normalisation_equals_the_torch_ops(mode):
    img = np.random.default_rng(mode).integers(0, 256, (2, 3, 9, 11), dtype=np.uint8)
    img[0, :, 0, :3] = [[0, 128, 255]] * 3
    expected = opdata_batch.normalize_batch(torch.from_numpy(img), mode)
    assert torch.equal(opdata_batch.normalize_batch_lut(img, mode), expected)


def test_cutoff_d2_is_the_forks_float64_test():
    for sigma in (7.0, float(np.float32(7.0 * 0.8214285714285714)), 3.0, 11.5):
        t = L.cutoff_d2(sigma)
        assert float(t) / 2.0 / sigma / sigma <= L.GAUSSIAN_CUTOFF
        assert float(np.nextafter(t, np.float32(np.inf))) / 2.0 / sigma / sigma > L.GAUSSIAN_CUTOFF


def test_limb_band_cells_equal_the_full_grid_test():
    """The 4 candidates per step find exactly the cells of the band test evaluated on every cell."""
    rng = np.random.default_rng(3)
    gw, gh = 23, 17
    gx, gy = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    ends = rng.uniform(-4, 27, (400, 4)).astype(np.float32)
    ends[:60] = np.round(ends[:60])                          # grid-aligned: distances of exactly 1
    ends[60:70, 2:] = ends[60:70, :2]                        # zero length
    ends[70:80, 3] = ends[70:80, 1]                          # horizontal
    ends[80:90, 2] = ends[80:90, 0]                          # vertical
    limb, cell, ux, uy = L.limb_band_cells(ends[:, 0], ends[:, 1], ends[:, 2], ends[:, 3], gw, gh)
    for i, (ax, ay, bx, by) in enumerate(ends):
        d = np.float32(bx - ax), np.float32(by - ay)
        norm = np.sqrt(d[0] * d[0] + d[1] * d[1])
        got = np.sort(cell[limb == i])
        if norm == 0:
            assert got.size == 0
            continue
        u = d[0] / norm, d[1] / norm
        lo_x = max(0, L.round_half_away(np.float32(min(ax, bx) - 1)))
        hi_x = min(gw, L.round_half_away(np.float32(max(ax, bx) + 1)))
        lo_y = max(0, L.round_half_away(np.float32(min(ay, by) - 1)))
        hi_y = min(gh, L.round_half_away(np.float32(max(ay, by) + 1)))
        on = ((gx >= lo_x) & (gx < hi_x) & (gy >= lo_y) & (gy < hi_y)
              & (np.abs((gx - ax) * u[1] - (gy - ay) * u[0]) <= L.PAF_THRESHOLD))
        np.testing.assert_array_equal(got, np.flatnonzero(on), err_msg=f"limb {i}")
        assert np.all(ux[limb == i] == u[0]) and np.all(uy[limb == i] == u[1])


def test_full_mask_shortcut_equals_the_warps():
    """A mask_miss of 255 everywhere: no mask warp and no padding-mask warp, same crops and masks."""
    import dataclasses

    from openpose_train.caffe_layers import augment as A
    rng = np.random.default_rng(5)
    config = A.AugmentConfig(stride=8, crop_x=96, crop_y=80, scale_prob=1, scale_mins=(0.3,), scale_maxs=(2.5,),
                             center_perterb_max=30, max_rotations=(90.0,))
    for seed in range(40):
        h, w = int(rng.integers(20, 150)), int(rng.integers(20, 150))
        planes = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        planes[..., 3] = 255
        people = np.concatenate([rng.uniform(0, min(h, w), (1, 4, 2)), np.ones((1, 4, 1))], -1).astype(np.float32)
        full = A.Sample(image=planes[..., :3], mask_miss=planes[..., 3], people=people, objpos=people[0, 0, :2],
                        scale_self=float(rng.uniform(0.2, 1)), planes=planes, mask_full=True)
        background = rng.integers(0, 256, (int(rng.integers(40, 200)), int(rng.integers(40, 200)), 3), dtype=np.uint8)
        for sample in (full, dataclasses.replace(full, planes=None, mask_miss=None, mask_full=False)):
            got = A.augment_sample(np.random.default_rng(seed), config, sample, "COCO", "X", background=background)
            ref = A.augment_sample(np.random.default_rng(seed), config, dataclasses.replace(full, mask_full=False),
                                   "COCO", "X", background=background)
            np.testing.assert_array_equal(got.image, ref.image)
            np.testing.assert_array_equal(got.mask_grid, ref.mask_grid)
