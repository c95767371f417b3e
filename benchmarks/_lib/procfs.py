"""CPU and memory of processes, threads and cores, read from /proc."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, all its threads, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of ``pid`` (user + system)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def core_times(core: int) -> tuple[float, float]:
    """(busy, total) seconds of one core since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"cpu{core} "):
                    values = [int(v) for v in line.split()[1:]]
                    idle = values[3] + (values[4] if len(values) > 4 else 0)
                    total = sum(values[:8])
                    return (total - idle) / _TICK, total / _TICK
    except OSError:
        pass
    return 0.0, 0.0


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MiB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key = line.split(":", 1)[0]
                if key in values:
                    values[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid`` and all its descendants; 0 for None."""
    return 0.0 if pid is None else sum(process_cpu(p) for p in process_tree(pid))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def allowed_cores(pid: int | None) -> str:
    """The cores any thread of ``pid`` may run on, e.g. ``1`` or ``0,1``."""
    if pid is None:
        return ""
    cores: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            cores |= os.sched_getaffinity(int(tid))
    return ",".join(str(c) for c in sorted(cores))


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of these processes together."""
    return sum(process_cpu(pid) for pid in pids)


def busy_seconds(cores: Iterable[int]) -> float:
    """Busy seconds of these cores together since boot."""
    return sum(core_times(core)[0] for core in set(cores))


def rss_total_mib(pids: Iterable[int]) -> float:
    """Resident memory of these processes together, in MiB."""
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20
