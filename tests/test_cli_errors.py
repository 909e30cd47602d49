"""docs/architecture.md §Errors: every command turns a project error into one `Error:` line in one
place (common.errors.reports_errors), and nothing else: a bug keeps its traceback, and no command
catches a bare ValueError / KeyError / OSError around its work."""
import ast
import importlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from openpose_train.cli import BUG_NOTE, SUBCOMMANDS, main
from openpose_train.common.errors import OpenPoseTrainError

BROAD = {"ValueError", "KeyError", "OSError", "IOError", "EnvironmentError", "LookupError", "Exception",
         "BaseException", "RuntimeError", "TypeError"}
COMMAND_MODULES = sorted({module for _, module, _ in SUBCOMMANDS} | {"openpose_train.demo", "openpose_train.cli"})


def _names(node):
    if node is None:
        return {"(bare except)"}
    if isinstance(node, ast.Tuple):
        return set().union(*(_names(e) for e in node.elts))
    return {ast.unparse(node).split(".")[-1]}


def _is_command(function):
    return any("command" in ast.unparse(d) for d in function.decorator_list)


def broad_catches(path):
    """``file:line`` of every ``except`` in a click command's function that catches a builtin
    exception class (or everything) around more than one statement."""
    tree = ast.parse(Path(path).read_text(), str(path))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or not _is_command(function):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Try):
                continue
            narrow = len(node.body) == 1 and not isinstance(node.body[0], (ast.For, ast.While, ast.With, ast.If))
            for handler in node.handlers:
                if _names(handler.type) & (BROAD | {"(bare except)"}) and not narrow:
                    found.append(f"{Path(path).name}:{handler.lineno} in {function.name}")
    return found


def test_every_command_reports_errors_in_one_place():
    for name, module, attr in SUBCOMMANDS + [("demo", "openpose_train.demo", "main")]:
        command = getattr(importlib.import_module(module), attr)
        assert getattr(command.callback, "reports_errors", False), f"{name}: decorate it with reports_errors"


def test_no_command_catches_a_builtin_error_around_its_work():
    found = []
    for module in COMMAND_MODULES:
        found += broad_catches(importlib.import_module(module).__file__)
    assert not found, ("raise an OpenPoseTrainError naming the file where the error happens instead "
                       "(docs/architecture.md §Errors):\n" + "\n".join(found))


def test_the_scan_sees_a_broad_catch(tmp_path):
    path = tmp_path / "cmd.py"
    path.write_text("import click\n@click.command('x')\ndef x():\n    try:\n        a()\n        b()\n"
                    "    except (KeyError, OSError):\n        pass\n    try:\n        int('3')\n"
                    "    except ValueError:\n        pass\n")
    assert broad_catches(path) == ["cmd.py:7 in x"]


@pytest.fixture
def failing_models(monkeypatch):
    """`openpose-train models --datasets` raising what the test gives."""
    from openpose_train.generator import models_cli

    def use(exc):
        def fail():
            raise exc
        monkeypatch.setattr(models_cli, "dataset_table_rows", fail)
    return use


def test_a_project_error_is_one_line(failing_models):
    class Bad(OpenPoseTrainError, KeyError):
        pass
    failing_models(Bad("data.json: no 'images'"))
    result = CliRunner().invoke(main, ["models", "--datasets"])
    assert result.exit_code == 1 and result.output == "Error: data.json: no 'images'\n"


def test_a_bug_keeps_its_traceback(failing_models):
    failing_models(ValueError("operands could not be broadcast together"))
    result = CliRunner().invoke(main, ["models", "--datasets"])
    assert isinstance(result.exception, ValueError)
    assert BUG_NOTE in result.output and "Error:" not in result.output


def test_click_usage_errors_are_not_bugs():
    result = CliRunner().invoke(main, ["models", "--no-such-option"])
    assert result.exit_code == 2 and BUG_NOTE not in result.output
