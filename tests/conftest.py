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
