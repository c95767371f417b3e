"""Resource figures for /health: the watched process, the machine, its cgroup v2 and NVIDIA GPUs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from .cgroup import cgroup_dir, read_cgroup

__all__ = ["ResourceSampler", "find_process"]

_NVML_RETRY_S = 60.0
_OWN_NOTE = "showing inferwatch's own process instead"
_PROCESS_LISTS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")
# fmt: off
_GPU_KEYS = ("index", "name", "uuid", "utilization_percent", "memory_used_bytes",
             "memory_total_bytes", "temperature_c", "power_watts", "process_memory_bytes",
             "process_utilization_percent")
# fmt: on


def find_process(match: str) -> psutil.Process | None:
    """Return the lowest-pid process whose command line contains ``match``, or None.

    The current process and its ancestors are skipped: they often carry ``match`` on their command
    line only because they started inferwatch with it.
    """
    me = psutil.Process()
    skip = {me.pid}
    with contextlib.suppress(psutil.Error):
        skip.update(p.pid for p in me.parents())
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline")
        if proc.pid not in skip and cmdline and match in " ".join(cmdline):
            return proc
    return None


def _field(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except psutil.AccessDenied:
        return None


def _read_process(proc: psutil.Process) -> dict:
    with proc.oneshot():
        # A reused pid is another process; psutil counts zombies as running, we count them gone.
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            raise psutil.NoSuchProcess(proc.pid)
        return {
            "pid": proc.pid,
            # CPU times tick in 10 ms steps, so a very short interval can read above every core.
            "cpu_percent": _field(
                lambda: round(min(proc.cpu_percent(None), 100.0 * (os.cpu_count() or 1)), 2)
            ),
            "rss_bytes": _field(lambda: proc.memory_info().rss),
            "threads": _field(proc.num_threads),
            "open_fds": _field(proc.num_fds),
        }


def _cpu_busy_total() -> tuple[float, float]:
    t = psutil.cpu_times()
    # Linux already counts guest time inside user time.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total - t.idle - getattr(t, "iowait", 0.0), total


def _nvml_get(read: Callable[[], Any]) -> Any:
    # Bindings raise NVMLError, but version-mismatch and decoding quirks raise others: never fail.
    try:
        return read()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class ResourceSampler:
    """Reads process, system, cgroup v2 and GPU figures for one process.

    The process watched is ``pid`` if given, else the first process whose command line contains
    ``process_match`` (a sidecar sharing the pod's process namespace), else this process. When the
    named process is missing, the figures are this process's and ``process["note"]`` says so; a
    ``process_match`` is looked up again on later samples. The process's ``cpu_percent`` is
    psutil's (100 per busy core) since the previous sample. Safe to call from a background thread.
    """

    def __init__(
        self,
        *,
        pid: int | None = None,
        process_match: str | None = None,
        cgroup_root: str = "/sys/fs/cgroup",
    ) -> None:
        self._pid = pid
        self._match = process_match
        self._cgroup_root = cgroup_root
        self._lock = threading.Lock()
        self._own = psutil.Process()
        self._proc = self._own
        self._note: str | None = None
        self._pid_lost = False
        self._cgroup_pid: int | None = None
        self._cgroup_path: str | None = None
        self._cgroup_prev: dict | None = None
        self._cgroup_at: float | None = None
        self._nvml: Any = None
        self._nvml_error: str | None = None
        self._nvml_tried_at: float | None = None
        self._util_seen: dict[int, int] = {}
        self._own.cpu_percent(None)  # start the interval that the first sample reads
        self._cpu_prev: tuple[float, float] | None = _cpu_busy_total()
        self._watch()

    def sample(self) -> dict:
        """Return the contract's ``resources`` object; unavailable figures are None."""
        with self._lock:
            process = self._process()
            gpus, gpu_error = self._gpus()
            return {
                "process": process,
                "system": self._system(),
                "cgroup": self._cgroup(),
                "gpus": gpus,
                "gpu_error": gpu_error,
            }

    def close(self) -> None:
        """Shut NVML down if this sampler initialised it."""
        with self._lock:
            if self._nvml is not None:
                _nvml_get(self._nvml.nvmlShutdown)
            self._nvml, self._nvml_tried_at = None, None

    def _watch(self) -> None:
        target: psutil.Process | None = None
        note = None
        if self._pid is not None:
            if not self._pid_lost:
                try:
                    target = psutil.Process(self._pid)
                except psutil.Error:
                    self._pid_lost = True
            note = f"process {self._pid} not found or exited; {_OWN_NOTE}"
        elif self._match is not None:
            target = find_process(self._match)
            note = f"no process matches {self._match!r}; {_OWN_NOTE}"
        if target is None:
            target = self._own
        else:
            note = None
        if target.pid == self._own.pid:
            target = self._own
        if target is not self._proc:
            with contextlib.suppress(psutil.Error):
                target.cpu_percent(None)  # start the interval that the next sample reads
        self._proc, self._note = target, note

    def _process(self) -> dict:
        if self._note is not None and self._match is not None:
            self._watch()  # the model container may have restarted
        try:
            figures = _read_process(self._proc)
        except psutil.NoSuchProcess:
            if self._proc is self._own:
                raise
            self._pid_lost = True  # a pid may be reused; never follow a pid once it exited
            self._watch()
            figures = _read_process(self._proc)
        if self._note is not None:
            figures["note"] = self._note
        return figures

    def _system(self) -> dict:
        busy, total = _cpu_busy_total()
        percent = None
        if self._cpu_prev is not None and total > self._cpu_prev[1]:
            share = (busy - self._cpu_prev[0]) / (total - self._cpu_prev[1]) * 100
            percent = round(min(100.0, max(0.0, share)), 2)
        self._cpu_prev = (busy, total)
        memory = psutil.virtual_memory()
        try:
            load = psutil.getloadavg()[0]
        except (OSError, AttributeError):
            load = None
        return {
            "cpu_percent": percent,
            "cpu_count": psutil.cpu_count(),
            "memory_total_bytes": memory.total,
            "memory_available_bytes": memory.available,
            "memory_used_percent": memory.percent,
            "load_1m": load,
        }

    def _cgroup(self) -> dict | None:
        if self._cgroup_pid != self._proc.pid:
            self._cgroup_pid = self._proc.pid
            self._cgroup_path = cgroup_dir(self._cgroup_root, self._proc.pid)
            self._cgroup_prev = self._cgroup_at = None
        if self._cgroup_path is None:
            return None
        now = time.monotonic()
        elapsed = None if self._cgroup_at is None else now - self._cgroup_at
        self._cgroup_prev = read_cgroup(self._cgroup_path, self._cgroup_prev, elapsed)
        self._cgroup_at = now
        return self._cgroup_prev

    def _nvml_ready(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        now = time.monotonic()
        if self._nvml_tried_at is not None and now - self._nvml_tried_at < _NVML_RETRY_S:
            return None
        self._nvml_tried_at = now
        try:
            import pynvml
        except ImportError:
            self._nvml_error = "pynvml (nvidia-ml-py) is not installed"
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            code = getattr(exc, "value", None)
            if code == getattr(pynvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12):
                self._nvml_error = "NVML library not found"
            elif code == getattr(pynvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9):
                self._nvml_error = "no NVIDIA driver"
            else:
                self._nvml_error = "NVML failed to start: " + " ".join(str(exc).split())
            return None
        self._nvml, self._nvml_error = pynvml, None
        return pynvml

    def _gpus(self) -> tuple[list[dict], str | None]:
        nvml = self._nvml_ready()
        if nvml is None:
            return [], self._nvml_error
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:
            return [], "NVML could not count devices: " + " ".join(str(exc).split())
        if not count:
            return [], "no NVIDIA GPU found"
        return [self._gpu(nvml, index) for index in range(count)], None

    def _gpu(self, nvml: Any, index: int) -> dict:
        handle = _nvml_get(lambda: nvml.nvmlDeviceGetHandleByIndex(index))
        if handle is None:
            return {**dict.fromkeys(_GPU_KEYS), "index": index}
        memory = _nvml_get(lambda: self._gpu_memory(nvml, handle))
        process_memory, comparable = self._process_gpu_memory(nvml, handle)
        return {
            "index": index,
            "name": _nvml_get(lambda: _text(nvml.nvmlDeviceGetName(handle))),
            "uuid": _nvml_get(lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
            "utilization_percent": _nvml_get(
                lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            ),
            "memory_used_bytes": memory and memory.used,
            "memory_total_bytes": memory and memory.total,
            "temperature_c": _nvml_get(
                lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            ),
            "power_watts": _nvml_get(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
            "process_memory_bytes": process_memory,
            "process_utilization_percent": _nvml_get(
                lambda: self._process_gpu_utilization(nvml, handle, index, comparable)
            ),
        }

    @staticmethod
    def _gpu_memory(nvml: Any, handle: Any) -> Any:
        # v2 keeps driver-reserved memory out of "used", which is what nvidia-smi shows.
        if hasattr(nvml, "nvmlMemory_v2"):
            memory = _nvml_get(
                lambda: nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            )
            if memory is not None:
                return memory
        return nvml.nvmlDeviceGetMemoryInfo(handle)

    def _process_gpu_memory(self, nvml: Any, handle: Any) -> tuple[int | None, bool]:
        """(GPU memory of the watched pid or None, whether NVML's pids are comparable to ours)."""
        listings = [
            _nvml_get(lambda name=name: getattr(nvml, name)(handle)) for name in _PROCESS_LISTS
        ]
        if all(listing is None for listing in listings):
            return None, False
        entries = [p for listing in listings if listing is not None for p in listing]
        # A process with both contexts is listed twice with the same memory: count it once.
        mine: dict[tuple[Any, Any], int | None] = {}
        for p in entries:
            if p.pid == self._proc.pid:
                key = (getattr(p, "gpuInstanceId", None), getattr(p, "computeInstanceId", None))
                prior = mine.get(key)
                mine[key] = p.usedGpuMemory if prior is None else max(prior, p.usedGpuMemory or 0)
        if mine:
            known = [v for v in mine.values() if v is not None]
            return (sum(known) if known else None), True
        # In a container NVML lists host pids: absence means zero only when we can see every pid.
        if all(psutil.pid_exists(p.pid) for p in entries):
            return 0, True
        return None, False

    def _process_gpu_utilization(
        self, nvml: Any, handle: Any, index: int, comparable: bool
    ) -> float | None:
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._util_seen.get(index, 0))
        except Exception as exc:
            if getattr(exc, "value", None) != getattr(nvml, "NVML_ERROR_NOT_FOUND", 6):
                raise
            samples = []  # nothing ran since the last look
        if samples:
            self._util_seen[index] = max(s.timeStamp for s in samples)
        mine = [s.smUtil for s in samples if s.pid == self._proc.pid and s.smUtil <= 100]
        if mine:
            return round(sum(mine) / len(mine), 2)
        return 0.0 if comparable else None
