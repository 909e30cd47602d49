"""OPDataSource against the Caffe fork's own OPData batches (the shared reference data, `reference/opdata_fork`).

The fork wrote the first batch of 4 (records 0-3, key order) of the minicoco LMDB with every random
transform pinned except the flip, which its Python module cannot pin: each fork sample is compared
with ours drawn with flip_prob 0 and with flip_prob 1, and the closer one must match (image equal,
label within float rounding). Skips when the shared reference data is absent.
"""
import numpy as np
import pytest

from conftest import shared_path
from openpose_train.caffe_layers import caffe_pb2
from openpose_train.caffe_layers import op_data as OD
from openpose_train.dataset_tools.lmdb_writer import BuildOptions, build_lmdb

LABEL_TOLERANCE = 2e-7      # float rounding (the fork sums Gaussians/PAFs in another order)

# file -> (model string, crop_x, crop_y, scale): the fork's transform parameters of each file
FORK_BATCHES = {
    "b25_368x368.npz": ("COCO_25_17", 368, 368, None),
    "b25b_368x368.npz": ("COCO_25B_17", 368, 368, None),
    "b25_368x256_scale1.3.npz": ("COCO_25_17", 368, 256, 1.3),
}


@pytest.fixture(scope="module")
def minicoco_lmdb(tmp_path_factory):
    ann = shared_path("data", "minicoco", "annotations", "person_keypoints_train2017.json")
    images = shared_path("data", "minicoco", "images", "train2017")
    out = tmp_path_factory.mktemp("opdata_fork") / "lmdb"
    build_lmdb(ann, images, out, BuildOptions(workers=1, progress=False))
    return out


def fork_layer(lmdb, model, crop_x, crop_y, scale, flip_prob):
    """The fork's OPData layer of the reference README, with the flip pinned to ``flip_prob``."""
    lp = caffe_pb2.LayerParameter(name="data", type="OPData", top=["image", "label"])
    lp.data_param.batch_size = 4
    tp = lp.op_transform_param
    tp.stride, tp.crop_size_x, tp.crop_size_y = 8, crop_x, crop_y
    tp.max_degree_rotations, tp.center_perterb_max, tp.center_swap_prob = "0", 0, 0
    tp.target_dist, tp.number_max_occlusions, tp.sigmas = 0.6, "0", "7.0"
    tp.sources, tp.models, tp.probabilities, tp.source_background = str(lmdb), model, "1", ""
    tp.normalization, tp.add_distance, tp.flip_prob = 0, False, flip_prob
    if scale is None:
        tp.scale_prob = 0
    else:
        tp.scale_prob, tp.scale_mins, tp.scale_maxs = 1, str(scale), str(scale)
    return lp


@pytest.mark.parametrize("name", sorted(FORK_BATCHES))
def test_first_batch_equals_the_forks(minicoco_lmdb, name):
    fork = np.load(shared_path("reference", "opdata_fork", name))
    model, crop_x, crop_y, scale = FORK_BATCHES[name]
    ours = []
    for flip_prob in (0, 1):
        with OD.OPDataSource(fork_layer(minicoco_lmdb, model, crop_x, crop_y, scale, flip_prob),
                             seed=0, num_workers=0) as src:
            batch = next(src)
        ours.append((batch["image"].numpy(), batch["label"].numpy()))
    assert ours[0][0].shape == fork["data"].shape and ours[0][1].shape == fork["label"].shape
    for i in range(fork["data"].shape[0]):
        image_diff = [float(np.abs(img[i] - fork["data"][i]).max()) for img, _ in ours]
        closer = int(np.argmin(image_diff))
        assert image_diff[closer] == 0, (name, i, image_diff)
        label_diff = float(np.abs(ours[closer][1][i] - fork["label"][i]).max())
        assert label_diff <= LABEL_TOLERANCE, (name, i, closer, label_diff)
        # the other flip is far away: the comparison does tell flipped from unflipped
        assert image_diff[1 - closer] > 0.1, (name, i, image_diff)
