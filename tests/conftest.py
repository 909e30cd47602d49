"""Shared fixtures. Tests that read the third-party sample data in ../shared skip when it is absent."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OPENPOSE_TRAIN_SHARED", REPO.parent / "shared"))


def shared_path(*parts):
    """Path under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"third-party sample data not found at {p} (set OPENPOSE_TRAIN_SHARED)")
    return p


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(scope="session")
def repo_root():
    return REPO


def synthetic_training_folder(tmp_path, images, size, *prototxt_args):
    """`synth` (``images`` COCO images of size x size, up to 2 people) -> `lmdb` -> `prototxt` COCO_18 with
    ``prototxt_args`` (preset, crop, batch, schedule), run as a user would; returns the net folder."""
    from click.testing import CliRunner
    from openpose_train.cli import main

    def cli(*args):
        r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    cli("synth", "--out", tmp_path / "synth", "--images", images, "--width", size, "--height", size, "--max-people", 2)
    cli("lmdb", "--json", tmp_path / "synth/annotations/person_keypoints_train2017.json",
        "--images", tmp_path / "synth/train2017", "--out", tmp_path / "lmdb_coco", "--workers", 1, "--quiet")
    out = tmp_path / "net"
    cli("prototxt", "--model", "COCO_18", "--out", out, "--lmdb", tmp_path / "lmdb_coco", "--vgg-weights", "",
        *prototxt_args)
    return out


@pytest.fixture
def one_thread():
    """torch on one thread: 2 threads on a busy 2-core machine is several times slower than 1."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
