"""JSON-lines side files that are read back (the training metrics, ``validate-snapshots``' ``ap.jsonl``):
one reader, so that a line that is not JSON is always named by file and line, and the torn last line a
crash leaves behind (a write cut short, so without its newline) is dropped with a warning instead of
blocking every later run (docs/refusals.md §Metrics and side files read back)."""
from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, Tuple

from .errors import OpenPoseTrainError
from .files import write_atomic


class JsonLinesError(OpenPoseTrainError, ValueError):
    """A line of a JSON-lines file is not JSON (the message names the file and the line)."""


def read_json_lines(path: str, *, warn: Optional[Callable[[str], None]] = None,
                    repair: bool = False) -> List[Tuple[int, Any]]:
    """``[(line number, value)]`` of the non-blank lines of ``path``.

    A last line without its newline that is not JSON was cut short by a crash: it is dropped, and
    ``warn`` told (file and line). With ``repair`` the file is rewritten without it (or, when that last
    line is whole, with its newline), so that the next appended record starts on a line of its own.
    Any other line that is not JSON raises :class:`JsonLinesError` naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise JsonLinesError(f"{path}: not a UTF-8 JSON-lines file (byte {exc.start})") from None
    except OSError as exc:
        raise JsonLinesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    records, keep = [], len(lines)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except ValueError as exc:
            torn = number == len(lines) and not line.endswith("\n")
            if not torn:
                raise JsonLinesError(f"{path}:{number}: not a JSON line ({getattr(exc, 'msg', exc)}); "
                                     f"repair or delete the line") from None
            keep = number - 1
            if warn is not None:
                warn(f"{path}:{number}: dropped a torn last line (a write cut short, e.g. by a crash)")
    if repair and lines and (keep < len(lines) or not lines[-1].endswith("\n")):
        kept = lines[:keep]
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        write_atomic(path, "".join(kept))
    return records
