"""``python -m openpose_train.training.background_validate PARENT_PID WATCH_FD ARGS...``: the
``openpose-train validate`` process of ``train --val-mode background``, which ends with the training
process even after ``kill -9`` (common/processes.py), so that no evaluation outlives its training.
``ARGS`` are those of ``openpose-train validate``."""
from __future__ import annotations

import sys


def main(argv=None) -> None:
    from openpose_train.common.processes import die_with_parent

    argv = list(sys.argv[1:] if argv is None else argv)
    parent_pid, watch_fd, args = int(argv[0]), int(argv[1]), argv[2:]
    die_with_parent(parent_pid, watch_fd)
    from openpose_train.validation.cli import validate

    validate.main(args=args, prog_name="openpose-train validate")


if __name__ == "__main__":
    main()
