"""Child processes that end with their parent, even when the parent is killed with ``kill -9``
(then nothing tells the child). Two guards (docs/refusals.md §Processes): on Linux the kernel's
parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), and everywhere a thread that waits for
EOF on a pipe whose only write end the parent holds, and checks that the parent is still the same."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

PR_SET_PDEATHSIG = 1    # <linux/prctl.h>


def die_with_parent(parent_pid: int, watch_fd: Optional[int] = None) -> None:
    """Call first thing in the child: it is killed when ``parent_pid`` ends (``watch_fd``: the read end
    of the parent's pipe). Exits at once when the parent is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:      # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while os.getppid() == parent_pid:
            if watch_fd is None:
                threading.Event().wait(1.0)
                continue
            try:
                if not os.read(watch_fd, 1):    # EOF: the parent's write end closed, so the parent is gone
                    break
            except OSError:
                break
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def signal_on_parent_death(sig: int = signal.SIGTERM):
    """A ``subprocess.Popen`` ``preexec_fn`` for a command that is not ours to edit: the kernel sends it
    ``sig`` when this process ends, even by ``kill -9`` (Linux; None elsewhere, where nothing can)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def arm():
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return arm


def parent_watch_pipe() -> tuple:
    """``(read_fd, write_fd)``: pass ``read_fd`` to the child (``pass_fds``) and close it here; keep
    ``write_fd`` open (not inherited by other children) for the child's lifetime."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, False)
    return read_fd, write_fd


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its launcher, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
