"""The folder an output goes into, checked before any work and created when the output is written,
with one message for every command when that cannot be (a regular file on the way, no permission).
Every folder of the project may import this."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Type, Union

from openpose_train.common.errors import OpenPoseTrainError

PathLike = Union[str, "os.PathLike[str]"]


class OutputFolderError(OpenPoseTrainError, OSError):
    """A folder for an output cannot be created; the message names it and says why."""


def _blocker(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be created and written in, judged from its nearest existing ancestor
    (a regular file there, no write permission); None when nothing stands in the way."""
    for candidate in (folder, *folder.parents):
        try:
            os.stat(candidate)
        except OSError:
            continue
        if not candidate.is_dir():
            return f"{candidate} is a file, not a folder"
        if not os.access(candidate, os.W_OK | os.X_OK):
            return f"{candidate} is not writable"
        return None
    return None


def _fail(error: Type[Exception], prefix: str, what: str, folder: Path, why: str) -> Exception:
    return error(f"{prefix}cannot create the {what} {folder}: {why}")


def check_output_folder(folder: PathLike, what: str = "folder", error: Type[Exception] = OutputFolderError,
                        prefix: str = "") -> Path:
    """Refuse (``error``, the message of :func:`make_output_folder`) a ``folder`` that surely cannot be
    created or written in, without creating anything: a refused command leaves no empty folder."""
    folder = Path(folder)
    why = _blocker(folder)
    if why:
        raise _fail(error, prefix, what, folder, why)
    return folder


def make_output_folder(folder: PathLike, what: str = "folder", error: Type[Exception] = OutputFolderError,
                       prefix: str = "") -> Path:
    """Create ``folder`` and its parents (nothing when it exists). On failure raise ``error`` with the
    one line ``<prefix>cannot create the <what> <folder>: <why>``; returns the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(error, prefix, what, folder, _blocker(folder) or exc.strerror or str(exc)) from None
    return folder


def make_parent_folder(path: PathLike, error: Type[Exception] = OutputFolderError, label: str = "",
                       create: bool = True) -> Path:
    """Create (``create=False``: only check) the folder of the output file ``path`` (see
    :func:`make_output_folder`), and refuse a ``path`` that is an existing folder. ``label`` names the
    option (``--out``) in the message. Returns the folder."""
    path = Path(path)
    name = f"{label} {path}" if label else str(path)
    if path.is_dir():
        raise error(f"{name}: is a folder, not a file")
    return (make_output_folder if create else check_output_folder)(path.parent, error=error, prefix=f"{name}: ")


def check_not_an_input(output: PathLike, inputs, label: str = "--out",
                       error: Type[Exception] = OutputFolderError, folder: bool = False) -> None:
    """Refuse an output that would overwrite one of the command's inputs: ``output`` is an input
    itself (after resolving links) or, for an output ``folder`` that a rerun may replace, holds one
    of them. ``inputs``: ``(option, path)`` pairs, None paths skipped. One line naming both
    (docs/refusals.md §Outputs)."""
    out = Path(os.path.realpath(output))
    for option, path in inputs:
        if not path:
            continue
        source = Path(os.path.realpath(path))
        if out == source or (folder and out in source.parents):
            what = "is" if out == source else "holds"
            raise error(f"{label} {output} {what} the input {option} {path}: the output would overwrite it; "
                        f"choose another {label}")
