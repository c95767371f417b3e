"""A worker's garbage collections, counted in the worker and read from outside it: a
``gc.callbacks`` hook counts the collections of each generation and times the full
(generation-2) ones into a small file the process maps (``<dir>/<pid>.gc``), and the benchmark
reads that file at the start and end of a measured run. Nothing runs on the request path and
nothing is asked of the worker: the hook runs once per collection, the file is read by the
benchmark's own process.

The file: three counters (generations 0, 1, 2) and a ring of the last :data:`RING` generation-2
pauses, the pause of the n-th full collection in slot ``n % RING``; a run's pauses are the slots
between its two snapshots' generation-2 counts, so their total and longest are exact.
"""

from __future__ import annotations

import gc
import math
import mmap
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = "BENCH_GC_DIR"
"""Where a worker keeps its counters; the hook is installed only where the benchmark sets it."""
RING = 4096  # generation-2 pauses kept: minutes of 1-2 a second
_COUNTS = struct.Struct("<3q")
_COUNT = struct.Struct("<q")
_PAUSE = struct.Struct("<d")
_SIZE = _COUNTS.size + RING * _PAUSE.size

_installed = False


def watch_gc(where: str | None = None) -> bool:
    """Count this process's collections into ``<where>/<pid>.gc`` (``where`` by default from
    BENCH_GC_DIR); nothing where neither names a folder. Once per process; True if installed."""
    global _installed
    where = where or os.environ.get(ENV)
    if _installed or not where:
        return _installed
    path = Path(where) / f"{os.getpid()}.gc"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w+b") as handle:
        handle.truncate(_SIZE)
        # The mapping outlives the file object; the kernel keeps what it holds readable by
        # another process's read() at once, with no flush and no syscall in the hook.
        view = mmap.mmap(handle.fileno(), _SIZE)
    counts = [0, 0, 0]
    began = 0.0
    clock = time.perf_counter
    pack_count, pack_pause = _COUNT.pack_into, _PAUSE.pack_into

    def hook(phase: str, info: dict[str, Any]) -> None:
        nonlocal began
        generation = info["generation"]
        if phase == "start":
            if generation == 2:
                began = clock()
            return
        if generation == 2:
            # The pause before the count: a reader that sees the count sees its pause.
            offset = _COUNTS.size + (counts[2] % RING) * _PAUSE.size
            pack_pause(view, offset, clock() - began)
        counts[generation] += 1
        pack_count(view, generation * _COUNT.size, counts[generation])

    gc.callbacks.append(hook)
    _installed = True
    return True


@dataclass
class Snapshot:
    """One worker's counters at one moment; ``pauses`` the generation-2 pauses in its ring (s)."""

    counts: tuple[int, int, int]
    pauses: list[float] = field(repr=False)


def snapshot(where: Path, pid: int) -> Snapshot | None:
    """What the worker ``pid`` has counted so far; None where it keeps no counters."""
    try:
        data = (where / f"{pid}.gc").read_bytes()
    except OSError:
        return None
    if len(data) < _SIZE:
        return None
    counts = _COUNTS.unpack_from(data)
    pauses = [p for (p,) in _PAUSE.iter_unpack(data[_COUNTS.size : _SIZE])]
    return Snapshot((counts[0], counts[1], counts[2]), pauses)


@dataclass
class Collections:
    """The collections of some workers between two snapshots: how many of each generation,
    and the total and the longest pause of the generation-2 ones (ms). NaN where unknown."""

    gen0: float = math.nan
    gen1: float = math.nan
    gen2: float = math.nan
    gen2_ms: float = math.nan
    gen2_max_ms: float = math.nan


def snapshots(where: Path, pids: Iterable[int]) -> dict[int, Snapshot | None]:
    return {pid: snapshot(where, pid) for pid in pids}


def between(before: dict[int, Snapshot | None], after: dict[int, Snapshot | None]) -> Collections:
    """The collections of every worker from ``before`` to ``after``, added up (the longest pause
    the longest of any); all NaN unless every worker has both snapshots."""
    counts = [0, 0, 0]
    pauses: list[float] = []
    for pid, first in before.items():
        last = after.get(pid)
        if first is None or last is None:
            return Collections()
        for g in range(3):
            counts[g] += last.counts[g] - first.counts[g]
        full = range(first.counts[2], last.counts[2])
        if len(full) > RING:
            return Collections(*counts)  # the ring went round: the pauses are lost
        pauses += [last.pauses[n % RING] for n in full]
    return Collections(
        *counts, gen2_ms=sum(pauses) * 1e3, gen2_max_ms=max(pauses, default=0.0) * 1e3
    )
