"""Labels, augmentation and post-processing are bit-identical to the arrays saved before the
model-string rules moved into the registry (issue 13; inputs and cases in registry_golden.py)."""
import json

import numpy as np
import pytest

import registry_golden as G
from conftest import SHARED, shared_path

REGENERATE = ("outputs differ from tests/data/registry_golden.*; if a label, augmentation, LMDB or "
              "post-processing rule changed on purpose, regenerate them: .venv/bin/python tests/registry_golden.py --write")


def _mismatches(group, arrays):
    expected = json.loads(G.GOLDEN_JSON.read_text())[group]
    raw = np.load(G.GOLDEN_NPZ)
    assert sorted(arrays) == sorted(expected), "the set of golden cases changed"
    bad = []
    for key, array in arrays.items():
        if G.digest(array) != expected[key]:
            detail = ""
            if key in raw.files and raw[key].shape == np.shape(array):
                diff = np.abs(np.asarray(array, np.float64) - raw[key].astype(np.float64))
                detail = f" (max |diff| {diff.max():.3g} at {np.unravel_index(diff.argmax(), diff.shape)})"
            bad.append(key + detail)
    return bad


def test_synthetic_outputs_are_bit_identical(tmp_path):
    arrays = G.compute("synthetic", tmp_path)
    # the cases exercise what they are meant to: the filter drops people unless maximising positives
    for name in ("BODY_25", "BODY_135"):
        kept = arrays[f"postprocess/{name}/max0/keypoints"].shape[0]
        assert 0 < kept < arrays[f"postprocess/{name}/max1/keypoints"].shape[0], name
    assert not _mismatches("synthetic", arrays), REGENERATE


def test_real_extract_outputs_are_bit_identical(tmp_path):
    shared_path("data")
    arrays = G.compute("real", tmp_path, SHARED)
    assert not _mismatches("real", arrays), REGENERATE
