"""cgroup v2 figures: memory and CPU use against the container's limits, and CPU throttling.

Read from the files under a cgroup v2 directory (``/sys/fs/cgroup`` in a container), so that
/health shows what the kubelet enforces, not only what the machine has.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cgroup_dir", "read_cgroup", "usable_cpus"]


def read_cgroup(
    root: str, previous: dict | None = None, elapsed_s: float | None = None
) -> dict | None:
    """Read one cgroup v2 directory; None when ``root`` is not a cgroup v2 directory.

    ``previous`` is this function's result from ``elapsed_s`` seconds earlier; with it (and a CPU
    limit) ``cpu_percent_of_limit`` is the CPU used since then as a share of the limit. A missing
    or unreadable file gives None for its fields.
    """
    base = Path(root)
    if not (base / "cgroup.controllers").is_file():
        return None
    cpu = _read_keyed(base / "cpu.stat")
    events = _read_keyed(base / "memory.events")
    current = _read_int(base / "memory.current")
    mem_max = _read_int(base / "memory.max")  # "max" (no limit) parses to None
    limit = _read_cpu_limit(base / "cpu.max")
    usage = _usec(cpu.get("usage_usec"))

    percent_of_limit = None
    before = (previous or {}).get("cpu_usage_seconds")
    if usage is not None and before is not None and limit and elapsed_s and elapsed_s > 0:
        used = usage - before
        if used >= 0:  # a drop means the counter restarted (a new container)
            percent_of_limit = round(used / elapsed_s / limit * 100, 2)
    return {
        "memory_current_bytes": current,
        "memory_max_bytes": mem_max,
        "memory_used_percent": (
            round(current / mem_max * 100, 2) if current is not None and mem_max else None
        ),
        "memory_oom_kills": events.get("oom_kill"),
        "cpu_usage_seconds": usage,
        "cpu_limit_cores": limit,
        "cpu_percent_of_limit": percent_of_limit,
        "throttled_periods": cpu.get("nr_throttled"),
        "nr_periods": cpu.get("nr_periods"),
        "throttled_seconds": _usec(cpu.get("throttled_usec")),
    }


def usable_cpus(root: str = "/sys/fs/cgroup", proc_root: str = "/proc") -> int:
    """CPUs this process may run on: its CPU affinity, cut to its cgroup's CPU quota (rounded up).

    Libraries that size thread pools by the machine's cores (DuckDB does) would otherwise start
    more threads than a pinned process or a container's CPU limit lets run, and pay for them in
    context switches on the cores the model uses.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    own = cgroup_dir(root, os.getpid(), proc_root)
    quota = _read_cpu_limit(Path(own) / "cpu.max") if own is not None else None
    if quota:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    return int(text) if text and text.isdigit() else None


def _read_keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _read_cpu_limit(path: Path) -> float | None:
    quota, _, period = (_read_text(path) or "").partition(" ")
    if not (quota.isdigit() and period.strip().isdigit()) or int(period) == 0:
        return None
    return int(quota) / int(period)


def _usec(value: int | None) -> float | None:
    return None if value is None else value / 1e6


def _proc_cgroup(path: Path) -> str | None:
    for line in (_read_text(path) or "").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def cgroup_dir(root: str, pid: int, proc_root: str = "/proc") -> str | None:
    """The cgroup v2 directory of ``pid`` as seen under ``root``; None when it can't be placed."""
    base = Path(root)
    if not (base / "cgroup.controllers").is_file():
        return None
    rel = _proc_cgroup(Path(proc_root, str(pid), "cgroup"))
    own = _proc_cgroup(Path(proc_root, str(os.getpid()), "cgroup"))
    if rel is None or rel == "/":
        return root
    # A container's own cgroup mounted at the root has limit files; a host's root cgroup never does.
    if rel == own and ((base / "memory.max").exists() or (base / "cpu.max").exists()):
        return root
    candidate = base / rel.lstrip("/")
    if ".." not in Path(rel).parts and candidate.is_dir():
        return str(candidate)
    # Another container's cgroup (sidecar mode) lies outside our mount: showing ours would mislead.
    return root if rel == own else None
