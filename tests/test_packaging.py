"""`pip install .` (not editable) puts everything under the one namespace `openpose_train`,
ships the templates, the proto and the example skeleton, and installs no generic top-level names."""
import hashlib
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_install_is_self_contained(tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin")
    assert top == ["openpose_train"], top  # no `generator`, `validation`, ... in site-packages
    for data in ["templates/deploy.prototxt.j2", "caffe_layers/caffe.proto", "generator/example_skeleton.yaml"]:
        assert (target / "openpose_train" / data).is_file(), data
    code = ("import hashlib, openpose_train.generator.render as r; "
            "assert r.__file__.startswith(%r); "
            "print(hashlib.md5(r.render_deploy('BODY_25').encode()).hexdigest())" % str(target))
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "451938635cf007327c3cf235ed483844"
