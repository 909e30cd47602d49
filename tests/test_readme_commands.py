"""The README's commands, run as written: the README cannot drift from the program.

Every fenced block of README.md is read; each command (backslash continuations joined, comments
dropped) runs with ``bash`` in a temporary folder laid out like a user's checkout, in README order:

* ``Makefile``, ``setup.py``, ``generate_prototxt.py`` and ``generator/`` are links into this
  repository; ``.venv`` is a folder whose ``bin`` links to the running interpreter's ``bin`` (so
  ``make lmdb`` and ``openpose-train`` are this installation), with its install stamp present.
* ``data/`` holds the folders the README names, made of links to the real third-party
  extracts (found as ``tests/conftest.py`` finds them): ``data/coco`` (minicoco's train2017 + COCO-WholeBody's images; val2017 =
  mmpose's 4 COCO val images), ``data/coco_wholebody``, ``data/mpii``.
* ``vgg19.pth`` is a VGG-19-shaped torchvision state dict with random weights, standing in for the
  download (the one command that needs the internet to make it); ``mobilenet_v2.pth`` likewise, from the
  torchvision-shaped MobileNetV2 of ``test_light_models.py``.
* small sizes come only through the variables the README documents (``GPUS``, ``BATCH_SIZE``,
  ``CROP_SIZE``, ``MAX_ITER``, ``NET_RESOLUTION``, ``OPENPOSE_DIR``); the text is never edited.

Commands that need the internet, an install, or a binary we do not have are listed in ``SKIPPED``
with the reason; every other command must run. A new README command is therefore either run here
or listed, and a listed command that left the README fails the listing test.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, shared_path

README = REPO / "README.md"

SKIPPED = {
    "make demo": "takes minutes; CI does not run it, but tests/test_e2e.py runs its pipeline "
                 "(openpose_train.demo.run_demo) in a tiny configuration",
    "make test": "this is the test suite",
    "make demo PRESET=mobilenet_v2": "trains the light model on the demo's schedule (about 36 minutes on one core); "
                                     "tests/test_light_models.py trains it, tests/test_e2e.py runs the demo pipeline",
    "make install": "installs (make test's prerequisite: already done)",
    'make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"':
        "installs a GPU build of torch (needs internet)",
    "source .venv/bin/activate": "changes the interactive shell; the test puts .venv/bin on PATH",
    "make coco COCO_DIR=data/coco": "downloads COCO 2017 (needs internet); the test links real "
                                    "extracts into data/coco instead",
    "pip install torchvision && python -c \"import torch, torchvision; torch.save(torchvision.models"
    ".vgg19(weights='IMAGENET1K_V1').state_dict(), 'vgg19.pth')\"":
        "downloads ImageNet VGG-19 (needs internet); the test writes a VGG-19-shaped vgg19.pth",
    "pip install torchvision && python -c \"import torch, torchvision; torch.save(torchvision.models"
    ".mobilenet_v2(weights='IMAGENET1K_V1').state_dict(), 'mobilenet_v2.pth')\"":
        "downloads ImageNet MobileNetV2 (needs internet); the test writes a MobileNetV2-shaped mobilenet_v2.pth",
    'CAFFE="torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint host0:29500 --rdzv_id body25 '
    '-m openpose_train.cli" bash training_results/body_25/train_pose.sh all':
        "needs 2 machines with 8 GPUs each; DDP itself is tested with gloo in test_train_loop.py",
}

# the documented variables, set to sizes a 2-core CPU trains in seconds
SMALL = {"GPUS": "", "BATCH_SIZE": "1", "CROP_SIZE": "64", "MAX_ITER": "2", "NET_RESOLUTION": "-1x64"}


def strip_comment(line: str) -> str:
    """The line without its shell comment (a ``#`` at a word start, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str):
    """Commands of the fenced blocks, in order: comments dropped, continuations joined."""
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        pending = ""
        for raw in block.splitlines():
            line = strip_comment(raw)
            if not line.strip():
                continue
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            commands.append((pending + line.strip()).strip())
            pending = ""
        assert not pending, f"README block ends inside a continued command: {pending}"
    return commands


def test_parser_joins_continuations_and_drops_comments():
    text = ("```\nmake a   # note\n# whole line\nrun --x 1 \\\n    --y '#not a comment' \\\n"
            "    --z 2    # tail\n          # a comment-only continuation of the layout\n```\n"
            "prose\n```\nsecond \"a # b\"\n```\n")
    assert readme_commands(text) == ["make a", "run --x 1 --y '#not a comment' --z 2",
                                     'second "a # b"']


def test_every_skipped_command_is_still_in_the_readme():
    commands = readme_commands(README.read_text())
    stale = [c for c in SKIPPED if c not in commands]
    assert not stale, f"SKIPPED lists commands the README no longer has: {stale}"
    assert commands[:2] == ["make demo", "make test"]      # the README opens with them


def _link_all(src: Path, dst: Path, pattern="*.jpg"):
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob(pattern)):
        assert not (dst / f.name).exists(), f"two extracts share the image name {f.name}"
        (dst / f.name).symlink_to(f)


def _vgg19_state_dict(path: Path):
    """A torchvision VGG-19 ``features`` state dict (random weights, conv layers only)."""
    import torch

    from openpose_train.training.vgg import VGG19_LAYERS
    gen = torch.Generator().manual_seed(0)
    state = {}
    for _, key, shape in VGG19_LAYERS:
        if key.startswith("features"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[f"{key}.weight"] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
            state[f"{key}.bias"] = torch.zeros(shape[0])
    torch.save(state, path)


def _mobilenet_v2_state_dict(path: Path):
    """A torchvision MobileNetV2 state dict (random weights, torchvision's module tree)."""
    import torch

    from test_light_models import random_reference
    torch.save(random_reference().state_dict(), path)


def make_checkout(root: Path) -> Path:
    """A folder laid out like a user's checkout with the README's data folders (module docstring)."""
    root.mkdir(parents=True)
    for name in ("Makefile", "setup.py", "generate_prototxt.py", "generator"):
        (root / name).symlink_to(REPO / name)
    venv = root / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)       # make lmdb's $(VENV)/bin/openpose-train
    (venv / ".installed").touch()                       # newer than setup.py: make installs nothing
    minicoco, mmpose = shared_path("data", "minicoco"), shared_path("data", "mmpose_coco")
    wholebody, mpii = shared_path("data", "coco_wholebody"), shared_path("data", "mpii")
    coco = root / "data" / "coco"
    _link_all(minicoco / "images" / "train2017", coco / "train2017")
    _link_all(wholebody / "images", coco / "train2017")            # COCO-WholeBody annotates COCO images
    _link_all(mmpose, coco / "val2017")
    (coco / "annotations").mkdir()
    (coco / "annotations" / "person_keypoints_train2017.json").symlink_to(
        minicoco / "annotations" / "person_keypoints_train2017.json")
    (coco / "annotations" / "person_keypoints_val2017.json").symlink_to(mmpose / "test_coco.json")
    (root / "data" / "coco_wholebody").mkdir()
    (root / "data" / "coco_wholebody" / "coco_wholebody_train_v1.0.json").symlink_to(
        wholebody / "evaluation" / "example_gt.json")
    _link_all(mpii, root / "data" / "mpii" / "images")
    (root / "data" / "mpii" / "annotations").mkdir()
    (root / "data" / "mpii" / "annotations" / "mpii_train.json").symlink_to(mpii / "test_mpii.json")
    _vgg19_state_dict(root / "vgg19.pth")
    _mobilenet_v2_state_dict(root / "mobilenet_v2.pth")
    return root


def run_readme(root: Path, commands, env):
    """Run the commands in order; returns [(command, seconds)] or fails with the first error."""
    timings = []
    for command in commands:
        start = time.time()
        proc = subprocess.run(["bash", "-c", "set -eo pipefail\n" + command], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        timings.append((command, time.time() - start))
        print(f"{timings[-1][1]:6.1f} s  rc {proc.returncode}  {command[:100]}")
        assert proc.returncode == 0, (f"README command failed (rc {proc.returncode}):\n{command}\n"
                                      f"--- output (tail) ---\n{proc.stdout[-4000:]}")
    return timings


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    root = make_checkout(tmp_path / "checkout")
    commands = [c for c in readme_commands(README.read_text()) if c not in SKIPPED]
    env = dict(os.environ, **SMALL, OPENPOSE_DIR=str(tmp_path / "openpose"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    run_readme(root, commands, env)

    # what the commands made, checked by reading it back
    from openpose_train.caffe_layers.caffe_io import read_caffemodel
    from openpose_train.caffe_layers.lmdb_reader import LmdbReader
    from openpose_train.generator.registry import get_model
    for name, count in (("out/lmdb_coco", 43), ("dataset/lmdb_background", 11)):
        assert len(LmdbReader(str(root / name))) == count, name
    assert (root / "dataset" / "vgg" / "VGG_ILSVRC_19_layers.caffemodel").stat().st_size > 0
    exported = tmp_path / "openpose" / "models" / "pose" / "body_25b"
    snapshot = root / "training_results" / "body_25b" / "model" / "pose_iter_2.caffemodel"
    assert (exported / get_model("BODY_25B").caffemodel_name).read_bytes() == snapshot.read_bytes()
    assert (root / "training_results" / "body_25b" / "validation" / "ap.jsonl").is_file()
    fine_tuned = read_caffemodel(str(root / "training_results" / "body_25b_ft" / "model" / "pose_iter_2.caffemodel"))
    assert fine_tuned and all(np.isfinite(b).all() for blobs in fine_tuned.values() for b in blobs)
    for folder in ("body_25", "body_25b_bkg", "body_25b_fullvgg", "body_135", "hand", "face", "coco", "mine"):
        assert (root / "training_results" / folder / "pose_solver.prototxt").is_file(), folder
