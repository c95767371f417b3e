"""Cores: this process, a running process's threads, and commands started on given cores."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence


def pin_to_core(core: int) -> bool:
    """Pin this process (and threads it starts later) to one core; False when it is not there."""
    if core not in os.sched_getaffinity(0) and core >= (os.cpu_count() or 1):
        return False
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        return False
    return True


def pin_threads(pid: int, cores: set[int]) -> None:
    """Move every thread of a running process to ``cores`` (as ``taskset -a -p`` does)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cores)


def taskset(cores: int | str, cmd: Sequence[str]) -> list[str]:
    """``cmd`` started on ``cores`` (one core, or a taskset list such as ``0,1``)."""
    return ["taskset", "-c", str(cores), *cmd]
