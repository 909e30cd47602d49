"""Batched torch labels == the CPU reference within 1e-5 (CPU torch here; CUDA too when present)."""
import numpy as np
import pytest
import torch

from openpose_train.caffe_layers import labels as L
from openpose_train.caffe_layers import labels_torch as LT
from openpose_train.generator.registry import get_training_variant

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
GRID, STRIDE = (46, 40), 8          # non-square grid: catches x/y mix-ups


def random_people(rng, n_parts, n_people):
    """People with plausible limb lengths: a centre plus part offsets, visibilities of every code."""
    centres = rng.uniform(-20, 390, (n_people, 1, 2))
    spread = rng.uniform(15, 120, (n_people, 1, 1))
    pts = centres + rng.normal(0, 1, (n_people, n_parts, 2)) * spread
    vis = rng.choice([0, 1, 2, 3, 4], (n_people, n_parts), p=[0.2, 0.55, 0.1, 0.05, 0.1])
    return np.concatenate([pts, vis[..., None]], -1).astype(np.float32)


def make_items(rng, n_parts, grid):
    items = []
    for i in range(7):
        mask = None if i % 3 == 0 else rng.choice([0, 128, 255], (grid[1], grid[0])).astype(np.uint8)
        items.append((random_people(rng, n_parts, int(rng.integers(1, 7))), mask, True))
    items.append((np.zeros((0, n_parts, 3), np.float32), None, False))        # background only
    items.append(None)                                                        # invalid record
    # exact grid-aligned cases (ties of round() and of the PAF distance)
    exact = np.zeros((2, n_parts, 3), np.float32)
    exact[..., 0] = rng.integers(0, 46, (2, n_parts)) * 8
    exact[..., 1] = rng.integers(0, 40, (2, n_parts)) * 4
    exact[..., 2] = 1
    items.append((exact, None, True))
    return items


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op_model", ["COCO_25_17", "COCO_25", "COCO_18", "COCO_25B_17", "COCO_25B_23",
                                      "MPII_25B_16", "COCO_135_23"])
def test_batch_equals_cpu_reference(op_model, device):
    model, variant = get_training_variant(op_model)
    rng = np.random.default_rng(hash(op_model) % 2 ** 32)
    items = make_items(rng, model.num_parts, GRID)
    got = LT.render_labels_batch(model, variant, items, GRID, STRIDE, 7.0, device=device).cpu().numpy()
    assert got.shape == (len(items), model.label_channels, GRID[1], GRID[0])
    for i, it in enumerate(items):
        if it is None:
            assert np.all(got[i] == 0)
            continue
        ref = L.render_labels(model, variant, it[0], it[1], GRID, STRIDE, 7.0, filled=it[2])
        np.testing.assert_allclose(got[i], ref, atol=1e-5, rtol=0, err_msg=f"{op_model} item {i}")


def test_warp_batch_matches_opencv_within_a_grey_level():
    import cv2
    rng = np.random.default_rng(0)
    src = cv2.GaussianBlur(rng.integers(0, 256, (120, 160), np.uint8), (0, 0), 3)
    m = cv2.getRotationMatrix2D((80, 60), 17, 1.3)
    m[:, 2] += (5, -7)
    ref = cv2.warpAffine(src, m, (100, 90), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    got = LT.warp_batch(torch.from_numpy(src).float()[None, None], m[None], (100, 90))[0, 0].numpy()
    inner = np.zeros_like(ref, bool)
    inner[10:-10, 10:-10] = True
    assert np.abs(got - ref)[inner].max() <= 1.5
