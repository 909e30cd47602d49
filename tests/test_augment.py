"""OPData augmentation (caffe_layers/augment.py): geometry consistent with the image warp, draws, quirks."""
import numpy as np
import pytest

from openpose_train.caffe_layers import augment as A

TOY_FLIP = ((0, 2),)


def dot_sample(points, size=(300, 200), others=0):
    """An image with one bright blob per keypoint (so the warp can be checked against the points)."""
    w, h = size
    image = np.zeros((h, w, 3), np.uint8)
    people = np.zeros((1, 4, 3), np.float32)
    for j, (x, y) in enumerate(points):
        people[0, j] = (x, y, 1)
    return A.Sample(image=image, mask_miss=None, people=people, objpos=np.float32([w / 2, h / 2]),
                    scale_self=0.4, num_other_people=others)


def blob_image(sample, part):
    img = sample.image.copy()
    x, y = sample.people[0, part, :2]
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    img[..., 1] = np.clip(255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2)), 0, 255).astype(np.uint8)
    return img


@pytest.mark.parametrize("seed", range(6))
def test_keypoints_follow_the_image_warp(seed):
    config = A.AugmentConfig(stride=8, crop_x=368, crop_y=368, max_rotations=(40.0,), center_perterb_max=40,
                             scale_prob=1, scale_mins=(0.5,), scale_maxs=(1.5,), target_dist=0.6)
    sample = dot_sample([(120.3, 80.6), (200.0, 150.0), (60.0, 30.0), (150, 100)])
    for part in range(4):
        s = A.Sample(**{**sample.__dict__, "image": blob_image(sample, part)})
        out = A.augment_sample(np.random.default_rng(seed), config, s, "COCO", "TOY", TOY_FLIP)
        # after a flip, part j of the output is the source part it was swapped with
        src_part = {0: 2, 2: 0}.get(part, part) if out.params.flip else part
        x, y = out.people[0, src_part, :2]
        if not (5 <= x < 363 and 5 <= y < 363):
            continue
        g = out.image[..., 1].astype(np.float64)
        yy, xx = np.mgrid[:368, :368]
        win = (np.abs(xx - x) < 8) & (np.abs(yy - y) < 8)
        cx = (g * win * xx).sum() / (g * win).sum()
        cy = (g * win * yy).sum() / (g * win).sum()
        assert abs(cx - x) < 0.75 and abs(cy - y) < 0.75, (seed, part, (cx, cy), (x, y))


def test_same_seed_same_sample_and_draw_order():
    config = A.AugmentConfig(stride=8, scale_prob=1, scale_mins=(0.5,), scale_maxs=(1.5,), max_occlusions=(3,))
    sample = dot_sample([(120, 80), (200, 150), (60, 30), (150, 100)])
    sample.image[:] = np.random.default_rng(1).integers(0, 255, sample.image.shape, np.uint8)
    bg = np.random.default_rng(2).integers(0, 255, (500, 700, 3), np.uint8)
    a = A.augment_sample(np.random.default_rng(7), config, sample, "COCO", "TOY", TOY_FLIP, background=bg)
    b = A.augment_sample(np.random.default_rng(7), config, sample, "COCO", "TOY", TOY_FLIP, background=bg)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.people, b.people)
    # draw order (docs/labels.md §Draw order): background x and y offsets (700x500 covers the crop, wider after the
    # resize), scale d + d2, centre swap d, rotation, dx, dy, flip
    rng = np.random.default_rng(7)
    d = rng.random(9)
    assert a.params.background_offset == (round(147 * d[0]), round(0 * d[1]))
    assert a.params.scale_mult == pytest.approx((1.5 - 0.5) * d[3] + 0.5, rel=1e-6)
    assert a.params.rotation == pytest.approx((d[5] - 0.5) * 2 * 45.0)
    assert a.params.flip == (d[8] <= 0.5)
    # the background covers the padding: mask border 255 -> no zero in the mask grid where bg shows
    assert a.mask_grid.dtype == np.uint8


def test_per_dataset_lists_pad_with_the_first_entry():
    assert A.per_dataset((1.0, 2.0), 1) == 2.0
    assert A.per_dataset((1.0, 2.0), 5) == 1.0
    assert A.parse_list("0.333;0.333; 0.5") == (0.333, 0.333, 0.5)


def test_rotation_box_half_pixel_shift():
    # at 0 degrees the OpenCV box is Ws+1 x Hs+1: R translates by +0.5 px (docs/labels.md §Quirks)
    rot = A.rotation_matrix((300, 200), 1.0, 0.0)
    np.testing.assert_allclose(rot, [[1, 0, 0.5], [0, 1, 0.5]])


def test_flip_quirk_and_fix_for_non_square_crops():
    params = A.AugmentParams(flip=True, rotation_matrix=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                             crop_center=(200, 100))
    pts = np.float32([[200, 100]])
    quirk = A.AugmentConfig(crop_x=400, crop_y=200)
    fixed = A.AugmentConfig(crop_x=400, crop_y=200, fix_flip_width=True)
    # the crop centre maps to (200, 100); flipped around crop_y - 1 = 199 (quirk) or crop_x - 1 = 399
    assert A.transform_points(pts, params, quirk)[0, 0] == 199 - 200
    assert A.transform_points(pts, params, fixed)[0, 0] == 399 - 200
    m = A.warp_matrix(params, quirk)
    assert m[0, 0] * 200 + m[0, 2] == 399 - 200          # the image always flips around crop_x - 1


def test_background_offset_quirk():
    tall = np.zeros((900, 400, 3), np.uint8)
    tall[::2] = 255                                       # rows differ, so the offset shows
    config = A.AugmentConfig(crop_x=368, crop_y=368)
    _, offset = A.read_background(tall, config, np.random.default_rng(0))
    assert offset == (0, 0)                               # tall: always top-aligned (xDiff == 0)
    _, offset = A.read_background(tall, A.AugmentConfig(fix_background_offset=True), np.random.default_rng(0))
    assert offset[1] > 0


def test_normalization_modes():
    img = np.full((2, 2, 3), 128, np.uint8)
    assert np.all(A.normalize_image(img, 0) == 0)
    np.testing.assert_allclose(A.normalize_image(img, 1)[:, 0, 0], 128 - np.float32(A.MEAN_BGR_1), rtol=1e-6)
    with pytest.raises(A.AugmentError):
        A.normalize_image(img, 3)


def test_skipping_the_padding_mask_warp_is_exact():
    # whenever crop_inside_source says so, the padding mask warp is all zero
    import cv2
    config = A.AugmentConfig(crop_x=368, crop_y=368)
    rng = np.random.default_rng(0)
    inside = 0
    for _ in range(200):
        m = cv2.getRotationMatrix2D((float(rng.uniform(100, 540)), float(rng.uniform(100, 380))),
                                    float(rng.uniform(-45, 45)), float(rng.uniform(0.6, 2.5)))
        m[:, 2] += rng.uniform(-250, 50, 2)
        warped = cv2.warpAffine(np.zeros((480, 640), np.uint8), m, (368, 368), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=255)
        if A.crop_inside_source(m, config, 640, 480):
            inside += 1
            assert warped.max() == 0
    assert inside > 20


# ---- centre swap (docs/labels.md §Centre swap): the fork's index literals are registry data ------------
class _Draws:
    """An rng whose random() returns the given values in order."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def _joints(num_parts):
    joints = np.zeros((num_parts, 3), np.float32)
    joints[:, 0] = np.arange(num_parts) * 10
    joints[:, 1] = np.arange(num_parts) * 10 + 1
    return joints


def test_center_swap_parts_are_set_for_the_forks_23_and_25_part_models():
    from openpose_train.generator.registry import FORK_CENTER_SWAP, get_model, list_models
    with_swap = {name for name in list_models() if get_model(name).center_swap is not None}
    assert with_swap == {name for name in list_models() if get_model(name).num_parts in (23, 25)
                         and get_model(name).upstream}
    assert all(get_model(name).center_swap is FORK_CENTER_SWAP for name in with_swap)


@pytest.mark.parametrize("name, d2, expected", [
    ("BODY_25", 0.6, (10, 11)),        # the neck
    ("BODY_25B", 0.6, (10, 11)),       # part 1, which is BODY_25B's LEye: the fork's index, kept
    ("BODY_25B", 0.92, (55, 56)),      # mean of parts 4 and 7
    ("BODY_23", 0.97, (115, 116)),     # mean of parts 10 and 13
    ("BODY_25", 0.3, (-1, -1)),        # the second draw keeps objpos
])
def test_center_swap_uses_the_forks_indexes(name, d2, expected):
    from openpose_train.generator.registry import get_model
    model = get_model(name)
    config = A.AugmentConfig(center_swap_prob=1.0)
    objpos = np.float32([-1, -1])
    center = A.swap_center(_Draws(0.2, d2), config, "COCO", "X", _joints(model.num_parts), objpos, 1.5,
                           model.center_swap)
    assert tuple(center) == expected


def test_center_swap_elsewhere_is_refused_as_the_fork_does():
    from openpose_train.generator.registry import get_model
    model = get_model("BODY_135")
    with pytest.raises(A.AugmentError, match="COCO_135_17 .135 parts.* 23- and 25-part"):
        A.swap_center(_Draws(0.2, 0.6), A.AugmentConfig(center_swap_prob=1.0), "COCO", "COCO_135_17",
                      _joints(135), np.float32([0, 0]), 1.5, model.center_swap)
    # the HAND branch does not need them: BODY_135's wrists 9 / 10, whatever the model
    hand = A.swap_center(_Draws(0.9, 0.7), A.AugmentConfig(), "HAND", "MPII_59", _joints(59),
                         np.float32([0, 0]), 2.5, None)
    assert tuple(hand) == (90, 91)
