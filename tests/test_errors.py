"""docs/architecture.md §Errors: every exception class the project defines derives from
OpenPoseTrainError, classes added later included (every module is imported and every class
statement is looked at)."""
import ast
import importlib
import importlib.util

from openpose_train.common.errors import OpenPoseTrainError

FOLDERS = ("common", "generator", "dataset_tools", "caffe_layers", "training", "validation", "openpose_train")


def project_modules(repo_root):
    """(import name, path) of every .py file of the project's folders."""
    for folder in FOLDERS:
        for path in sorted((repo_root / folder).rglob("*.py")):
            if path.name == "__main__.py":         # runs the command when imported; defines nothing
                continue
            parts = path.relative_to(repo_root / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            package = "openpose_train" if folder == "openpose_train" else f"openpose_train.{folder}"
            yield ".".join((package, *parts)), path


def exception_classes(module, path):
    """(checked, unrooted) for one imported module: the names of the exception classes its class
    statements define, and those of them that do not derive from OpenPoseTrainError. A class
    statement inside a function whose bases name an exception counts as unrooted (it cannot be
    imported to check; declare it at module level)."""
    tree = ast.parse(path.read_text(), str(path))
    checked, unrooted = [], []
    for node in tree.body:
        cls = getattr(module, node.name, None) if isinstance(node, ast.ClassDef) else None
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Warning):
            checked.append(node.name)
            if not issubclass(cls, OpenPoseTrainError):
                unrooted.append(f"{path.name}:{node.lineno} {node.name}")
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ClassDef) and any(
                        ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases):
                    unrooted.append(f"{path.name}:{node.lineno} {node.name} (inside {function.name})")
    return checked, unrooted


def test_every_project_exception_derives_from_one_base(repo_root):
    checked, unrooted = [], []
    for name, path in project_modules(repo_root):
        found, bad = exception_classes(importlib.import_module(name), path)
        checked += found
        unrooted += bad
    assert len(checked) >= 36, checked          # the walk sees the project's classes
    assert not unrooted, ("derive these from openpose_train.common.errors.OpenPoseTrainError "
                          "(docs/architecture.md §Errors):\n" + "\n".join(unrooted))


def test_the_check_finds_an_unrooted_class(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("from openpose_train.common.errors import OpenPoseTrainError\n"
                    "class Rooted(OpenPoseTrainError, ValueError):\n    pass\n"
                    "class Stray(ValueError):\n    pass\n"
                    "def f():\n    class Hidden(KeyError):\n        pass\n")
    spec = importlib.util.spec_from_file_location("probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checked, unrooted = exception_classes(module, path)
    assert checked == ["Rooted", "Stray"]
    assert unrooted == ["probe.py:4 Stray", "probe.py:7 Hidden (inside f)"]


def test_builtin_bases_stay_for_callers_that_catch_them():
    """Project errors that callers catch as OSError / KeyError still are those."""
    from openpose_train.caffe_layers.lmdb_reader import LmdbReadError
    from openpose_train.generator.output_paths import OutputFolderError
    from openpose_train.generator.registry import UnknownModelError
    assert issubclass(LmdbReadError, OSError) and issubclass(OutputFolderError, OSError)
    assert issubclass(UnknownModelError, KeyError)
