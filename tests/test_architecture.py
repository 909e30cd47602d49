"""The import rules of docs/architecture.md §Import rules hold: an ast walk over every .py file of
the project's folders (function-level imports included)."""
import ast
from pathlib import Path

import pytest

FOLDERS = ("common", "generator", "dataset_tools", "caffe_layers", "training", "validation", "openpose_train")
# folder -> what it may import besides itself: a folder, or one module of a folder
ALLOWED = {
    "common": set(),
    "generator": {"common"},
    "dataset_tools": {"common", "generator", "caffe_layers.caffe_pb2", "caffe_layers.caffe_io", "caffe_layers.datum",
                      "caffe_layers.metadata",
                      "caffe_layers.lmdb_reader"},
    "caffe_layers": {"common", "generator"},
    "training": {"common", "generator", "caffe_layers", "validation"},
    "validation": {"common", "generator", "caffe_layers"},
    "openpose_train": set(FOLDERS),
}
# modules with a documented extra
EXTRA = {
    "generator/cli.py": {"caffe_layers.datum", "caffe_layers.lmdb_reader", "caffe_layers.caffe_io"},
    "generator/fork_check.py": {"caffe_layers.datum", "caffe_layers.lmdb_reader", "caffe_layers.caffe_io"},
    "dataset_tools/inspect.py": {"caffe_layers.augment", "caffe_layers.labels"},
}


def project_imports(path: Path, folder: str, root: Path):
    """(line, 'folder' or 'folder.module') for every import of another project folder in ``path``
    (a file under ``root``, the folder imported as ``openpose_train.<folder>``);
    names imported from a package (``from openpose_train.caffe_layers import labels``) count as
    modules of it."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:       # relative: resolve against openpose_train.<folder>[.subpackage]
                parts = ["openpose_train", folder] + list(path.relative_to(root).parts[:-1])
                base = parts[:len(parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [(module, tuple(alias.name for alias in node.names))]
        else:
            continue
        for module, names in targets:
            parts = module.split(".")
            if parts[0] in FOLDERS[:-1] and parts[0] != "openpose_train":
                yield node.lineno, "GENERIC:" + module          # generic top-level names do not exist
                continue
            if parts[0] != "openpose_train":
                continue
            if len(parts) < 2 or parts[1] not in FOLDERS:      # the root package (cli, demo, version)
                if folder != "openpose_train":
                    yield node.lineno, "openpose_train"
                continue
            if parts[1] == folder:
                continue
            if len(parts) >= 3:
                yield node.lineno, f"{parts[1]}.{parts[2]}"
            elif names:
                for name in names:
                    yield node.lineno, f"{parts[1]}.{name}"
            else:
                yield node.lineno, parts[1]


def _violations(repo_root):
    bad = []
    for folder in FOLDERS:
        for path in sorted((repo_root / folder).rglob("*.py")):
            rel = path.relative_to(repo_root).as_posix()
            allowed = ALLOWED[folder] | EXTRA.get(rel, set())
            for line, target in project_imports(path, folder, repo_root / folder):
                if target.startswith("GENERIC:") or not (target in allowed or target.split(".")[0] in allowed):
                    bad.append(f"{rel}:{line} imports {target}")
    return bad


def test_import_rules_hold(repo_root):
    bad = _violations(repo_root)
    assert not bad, "see docs/architecture.md §Import rules:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from openpose_train.training.loop import x", "training.loop"),
    ("from openpose_train.caffe_layers import labels", "caffe_layers.labels"),
    ("import openpose_train.training", "training"),
    ("def f():\n    from ..training import logging_utils", "training.logging_utils"),
])
def test_the_walker_sees_each_import_form(tmp_path, source, expected):
    path = tmp_path / "validation" / "x.py"
    path.parent.mkdir()
    path.write_text(source)
    assert [t for _, t in project_imports(path, "validation", path.parent)] == [expected]


def test_the_rules_are_the_documented_ones(repo_root):
    text = (repo_root / "docs" / "architecture.md").read_text()
    section = text.split("## Import rules", 1)[1]
    for folder, allowed in ALLOWED.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{folder}` |"))
        for target in allowed - {"openpose_train"}:
            assert f"`{target}`" in row or folder == "openpose_train", (folder, target)
    for module, extra in EXTRA.items():
        assert Path(module).name in section and all(f"`{t}`" in section for t in extra), module


def test_the_registry_loads_without_the_heavy_stack():
    """docs/architecture.md §Import rules: `openpose-train models` needs neither torch, OpenCV, LMDB
    nor numpy."""
    import subprocess
    import sys
    code = ("import sys, openpose_train.generator.registry, openpose_train.generator.skeleton, "
            "openpose_train.generator.models_cli; "
            "print(' '.join(m for m in ('torch', 'cv2', 'lmdb', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_common_loads_on_the_standard_library_alone():
    """docs/architecture.md §Import rules: `common` is the lowest floor; it needs nothing but Python."""
    import subprocess
    import sys
    code = ("import sys, openpose_train.common.errors, openpose_train.common.files; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'cv2', 'lmdb', 'numpy', 'yaml', 'jinja2') or (m.startswith('openpose_train.') "
            "and not m.startswith('openpose_train.common'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


DATA_PATH = ("caffe_layers/op_data.py", "caffe_layers/opdata_config.py", "caffe_layers/opdata_plan.py",
             "caffe_layers/opdata_batch.py", "caffe_layers/opdata_workers.py", "caffe_layers/datum.py",
             "caffe_layers/metadata.py", "caffe_layers/lmdb_reader.py", "caffe_layers/augment.py",
             "caffe_layers/augment_config.py", "caffe_layers/labels.py", "caffe_layers/labels_layout.py",
             "caffe_layers/labels_keypoints.py", "caffe_layers/labels_kernel.py", "caffe_layers/labels_torch.py")


def test_data_path_modules_are_the_documented_ones_and_short(repo_root):
    """docs/architecture.md §Data path: one module per seam, each under 400 lines, each in the table;
    and the record codec needs neither torch nor the data tools (the LMDB writer imports it)."""
    import subprocess
    import sys
    section = (repo_root / "docs" / "architecture.md").read_text().split("## Data path", 1)[1].split("\n## ", 1)[0]
    seams = {path.relative_to(repo_root).as_posix() for pattern in ("labels*.py", "opdata*.py", "augment*.py")
             for path in (repo_root / "caffe_layers").glob(pattern)}
    assert seams <= set(DATA_PATH), sorted(seams - set(DATA_PATH))      # a module split off a seam is checked too
    for module in DATA_PATH:
        lines = len((repo_root / module).read_text().splitlines())
        assert lines <= 400, (module, lines)
        assert f"`{Path(module).name}`" in section, module
    code = ("import sys, openpose_train.caffe_layers.lmdb_reader, openpose_train.caffe_layers.datum; "
            "print(' '.join(m for m in sys.modules if m == 'torch' or m.startswith('openpose_train.dataset_tools')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
