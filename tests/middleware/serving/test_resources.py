"""ResourceSampler and find_process: real figures, cgroup and NVML fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from inferwatch.middleware.serving.resources import ResourceSampler, find_process
from tests.middleware.serving.conftest import CGROUP_DATA, CGROUP_KEYS, LIMITED_T0

REAL_CGROUP = Path("/sys/fs/cgroup")
GIB = 1024**3
NOT_SUPPORTED, NOT_FOUND, DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND = 3, 6, 9, 12, 13
NA = 0xFFFFFFFF  # NVML's "no MIG instance" id

PROCESS_KEYS = {"pid", "cpu_percent", "rss_bytes", "threads", "open_fds"}
SYSTEM_KEYS = {
    "cpu_percent",
    "cpu_count",
    "memory_total_bytes",
    "memory_available_bytes",
    "memory_used_percent",
    "load_1m",
}


# --- the process and the machine ----------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start child processes that sleep 30 s (extra arguments land on the command line)."""
    children: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        cmd = (
            [sys.executable, "-c", "import time; time.sleep(30)", *args]
            if args
            else ["sleep", "30"]
        )
        child = subprocess.Popen(cmd)
        children.append(child)
        # Popen returns once the child has exec'd, but the kernel sets the new command line a
        # moment later: under load a lookup right away read it empty.
        deadline = time.monotonic() + 10
        while args and time.monotonic() < deadline:
            if args[-1] in psutil.Process(child.pid).cmdline():
                break
            time.sleep(0.005)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def stop(child: subprocess.Popen) -> None:
    child.kill()
    child.wait()


@pytest.fixture
def token() -> str:
    return f"inferwatch-test-{uuid.uuid4().hex}"


def test_sample_reports_this_process_and_machine() -> None:
    sampler = ResourceSampler()
    first = sampler.sample()
    sum(i * i for i in range(200_000))  # some CPU time between samples
    result = sampler.sample()

    assert set(result) == {"process", "system", "cgroup", "gpus", "gpu_error"}
    assert set(result["process"]) == PROCESS_KEYS  # no note: nothing fell back
    assert set(result["system"]) == SYSTEM_KEYS
    process, system = result["process"], result["system"]
    assert process["pid"] == os.getpid()
    assert process["rss_bytes"] > 0
    assert process["threads"] >= 1
    assert process["open_fds"] >= 3
    assert isinstance(process["cpu_percent"], float)
    assert process["cpu_percent"] >= 0
    assert system["cpu_count"] == os.cpu_count()
    assert system["memory_total_bytes"] > 0
    assert 0 < system["memory_available_bytes"] <= system["memory_total_bytes"]
    assert 0 <= system["memory_used_percent"] <= 100
    assert system["load_1m"] >= 0
    for sample in (first, result):
        assert (
            sample["system"]["cpu_percent"] is None or 0 <= sample["system"]["cpu_percent"] <= 100
        )
    if not (REAL_CGROUP / "cgroup.controllers").exists():
        assert result["cgroup"] is None


def test_pid_of_a_child_is_watched(spawn: Callable[..., subprocess.Popen]) -> None:
    child = spawn()
    process = ResourceSampler(pid=child.pid).sample()["process"]
    assert process["pid"] == child.pid
    assert "note" not in process
    assert process["rss_bytes"] > 0


def test_own_pid_is_the_current_process() -> None:
    process = ResourceSampler(pid=os.getpid()).sample()["process"]
    assert process["pid"] == os.getpid()
    assert "note" not in process


def test_process_match_finds_a_child(spawn: Callable[..., subprocess.Popen], token: str) -> None:
    child = spawn(token)
    found = find_process(token)
    assert found is not None
    assert found.pid == child.pid
    assert ResourceSampler(process_match=token).sample()["process"]["pid"] == child.pid


def test_find_process_skips_this_process_and_its_ancestors() -> None:
    me = psutil.Process()
    found = find_process(" ".join(me.cmdline()))
    assert found is None or found.pid not in {me.pid, *(p.pid for p in me.parents())}
    assert find_process(f"no-such-process-{uuid.uuid4().hex}") is None


def test_vanished_pid_falls_back_with_a_note(spawn: Callable[..., subprocess.Popen]) -> None:
    child = spawn()
    stop(child)
    process = ResourceSampler(pid=child.pid).sample()["process"]
    assert process["pid"] == os.getpid()
    assert str(child.pid) in process["note"]


@pytest.mark.parametrize("reap", [True, False], ids=["exited", "zombie"])
def test_pid_exiting_between_samples_falls_back(
    spawn: Callable[..., subprocess.Popen], reap: bool
) -> None:
    child = spawn()
    sampler = ResourceSampler(pid=child.pid)
    assert sampler.sample()["process"]["pid"] == child.pid
    child.kill()
    if reap:
        child.wait()
    else:
        deadline = time.monotonic() + 5
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    for _ in range(2):  # stays on this process: a pid is never followed again once it exited
        process = sampler.sample()["process"]
        assert process["pid"] == os.getpid()
        assert str(child.pid) in process["note"]
        assert process["rss_bytes"] > 0


def test_process_match_is_resolved_again_after_a_restart(
    spawn: Callable[..., subprocess.Popen], token: str
) -> None:
    sampler = ResourceSampler(process_match=token)
    process = sampler.sample()["process"]
    assert process["pid"] == os.getpid()
    assert token in process["note"]

    first = spawn(token)
    process = sampler.sample()["process"]
    assert (process["pid"], "note" in process) == (first.pid, False)

    stop(first)
    process = sampler.sample()["process"]
    assert process["pid"] == os.getpid()
    assert token in process["note"]

    second = spawn(token)
    process = sampler.sample()["process"]
    assert (process["pid"], "note" in process) == (second.pid, False)


# --- cgroup v2 -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (REAL_CGROUP / "cgroup.controllers").exists(),
    reason="this machine's /sys/fs/cgroup is not cgroup v2",
)
def test_real_cgroup_v2_values_are_sane() -> None:
    sampler = ResourceSampler()
    first = sampler.sample()["cgroup"]
    second = sampler.sample()["cgroup"]
    assert first is not None
    assert second is not None
    assert set(second) == CGROUP_KEYS
    assert first["cpu_percent_of_limit"] is None
    assert second["memory_current_bytes"] is None or second["memory_current_bytes"] > 0
    assert second["cpu_usage_seconds"] is None or second["cpu_usage_seconds"] > 0
    for key in ("memory_max_bytes", "cpu_limit_cores"):
        assert second[key] is None or second[key] > 0
    for key in ("memory_oom_kills", "throttled_periods", "nr_periods", "throttled_seconds"):
        assert second[key] is None or second[key] >= 0
    if second["cpu_limit_cores"] is not None:
        assert second["cpu_percent_of_limit"] >= 0


def test_sampler_reads_a_container_cgroup_at_the_root() -> None:
    sampler = ResourceSampler(cgroup_root=str(CGROUP_DATA / "k8s_limited_t0"))
    assert sampler.sample()["cgroup"] == LIMITED_T0
    # The files did not change between samples: no CPU used.
    assert sampler.sample()["cgroup"] == {**LIMITED_T0, "cpu_percent_of_limit": 0.0}


def test_sampler_without_cgroup_v2_reports_none() -> None:
    assert ResourceSampler(cgroup_root=str(CGROUP_DATA / "not_v2")).sample()["cgroup"] is None


# --- GPUs ----------------------------------------------------------------------------------------


def test_real_pynvml_without_a_driver_reports_no_gpus() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present on this machine")
    sampler = ResourceSampler()
    result = sampler.sample()
    assert result["gpus"] == []
    assert isinstance(result["gpu_error"], str)
    assert result["gpu_error"]
    assert "\n" not in result["gpu_error"]
    sampler.close()


def test_missing_pynvml_reports_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    result = ResourceSampler().sample()
    assert result["gpus"] == []
    assert result["gpu_error"] == "pynvml (nvidia-ml-py) is not installed"


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError: the NVML return code is in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def raising(code: int) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise FakeNVMLError(code)

    return fail


def fake_nvml(pid: int, **overrides: Any) -> types.ModuleType:
    """A pynvml stand-in with one H100-like device; ``overrides`` replaces its functions."""
    ns = types.SimpleNamespace

    def memory_info(handle: str, version: int | None = None) -> Any:
        if version is None:  # v1: "used" includes what the driver reserves
            return ns(total=80 * GIB, free=78 * GIB, used=int(1.5 * GIB))
        return ns(version=version, total=80 * GIB, reserved=GIB // 2, free=78.5 * GIB, used=GIB)

    functions: dict[str, Callable[..., Any]] = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda index: f"handle-{index}",
        "nvmlDeviceGetName": lambda handle: b"NVIDIA H100 80GB HBM3",  # old bindings give bytes
        "nvmlDeviceGetUUID": lambda handle: "GPU-5d2c6f1e-0000-4a8b-9c1d-123456789abc",
        "nvmlDeviceGetUtilizationRates": lambda handle: ns(gpu=87, memory=40),
        "nvmlDeviceGetMemoryInfo": memory_info,
        "nvmlDeviceGetTemperature": lambda handle, sensor: 64,
        "nvmlDeviceGetPowerUsage": lambda handle: 312_500,
        "nvmlDeviceGetComputeRunningProcesses": lambda handle: [
            ns(pid=pid, usedGpuMemory=6 * GIB, gpuInstanceId=NA, computeInstanceId=NA),
            ns(pid=1, usedGpuMemory=GIB, gpuInstanceId=NA, computeInstanceId=NA),
        ],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda handle: [],
        "nvmlDeviceGetProcessUtilization": lambda handle, seen: [
            ns(pid=pid, timeStamp=100, smUtil=50, memUtil=20, encUtil=0, decUtil=0),
            ns(pid=1, timeStamp=150, smUtil=10, memUtil=5, encUtil=0, decUtil=0),
            ns(pid=pid, timeStamp=200, smUtil=70, memUtil=30, encUtil=0, decUtil=0),
        ],
    }
    functions.update(overrides)
    module = types.ModuleType("pynvml")
    module.calls = []  # type: ignore[attr-defined]
    module.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    for name, value in {
        "NVML_ERROR_NOT_SUPPORTED": NOT_SUPPORTED,
        "NVML_ERROR_NOT_FOUND": NOT_FOUND,
        "NVML_ERROR_DRIVER_NOT_LOADED": DRIVER_NOT_LOADED,
        "NVML_ERROR_LIBRARY_NOT_FOUND": LIBRARY_NOT_FOUND,
        "NVML_ERROR_FUNCTION_NOT_FOUND": FUNCTION_NOT_FOUND,
        "NVML_TEMPERATURE_GPU": 0,
        "nvmlMemory_v2": 0x02000028,
    }.items():
        setattr(module, name, value)

    def recorded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            module.calls.append((name, args, kwargs))  # type: ignore[attr-defined]
            return function(*args, **kwargs)

        return call

    for name, function in functions.items():
        setattr(module, name, recorded(name, function))
    return module


def install(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> types.ModuleType:
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def calls(module: types.ModuleType, name: str) -> list[tuple]:
    return [call for call in module.calls if call[0] == name]  # type: ignore[attr-defined]


EXPECTED_GPU = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "uuid": "GPU-5d2c6f1e-0000-4a8b-9c1d-123456789abc",
    "utilization_percent": 87,
    "memory_used_bytes": GIB,  # v2, as nvidia-smi shows it
    "memory_total_bytes": 80 * GIB,
    "temperature_c": 64,
    "power_watts": 312.5,
    "process_memory_bytes": 6 * GIB,
    "process_utilization_percent": 60.0,  # mean of this pid's samples, 50 and 70
}


def test_fake_gpu_fields_are_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = install(monkeypatch, fake_nvml(os.getpid()))
    sampler = ResourceSampler()
    result = sampler.sample()
    assert result["gpu_error"] is None
    assert result["gpus"] == [EXPECTED_GPU]
    assert calls(nvml, "nvmlDeviceGetMemoryInfo")[0][2] == {"version": nvml.nvmlMemory_v2}

    sampler.sample()
    assert len(calls(nvml, "nvmlInit")) == 1
    # The second look asks only for samples newer than the last one seen.
    assert [c[1][1] for c in calls(nvml, "nvmlDeviceGetProcessUtilization")] == [0, 200]
    sampler.close()
    sampler.close()
    assert len(calls(nvml, "nvmlShutdown")) == 1


@pytest.mark.parametrize(
    ("function", "fields"),
    [
        ("nvmlDeviceGetName", ["name"]),
        ("nvmlDeviceGetUUID", ["uuid"]),
        ("nvmlDeviceGetUtilizationRates", ["utilization_percent"]),
        ("nvmlDeviceGetMemoryInfo", ["memory_used_bytes", "memory_total_bytes"]),
        ("nvmlDeviceGetTemperature", ["temperature_c"]),
        ("nvmlDeviceGetPowerUsage", ["power_watts"]),
        ("nvmlDeviceGetProcessUtilization", ["process_utilization_percent"]),
    ],
)
def test_one_failing_nvml_call_blanks_one_field(
    monkeypatch: pytest.MonkeyPatch, function: str, fields: list[str]
) -> None:
    install(monkeypatch, fake_nvml(os.getpid(), **{function: raising(NOT_SUPPORTED)}))
    result = ResourceSampler().sample()
    assert result["gpu_error"] is None
    assert result["gpus"] == [{**EXPECTED_GPU, **dict.fromkeys(fields)}]


def test_process_lists_failing_blank_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    install(
        monkeypatch,
        fake_nvml(
            os.getpid(),
            nvmlDeviceGetComputeRunningProcesses=raising(NOT_SUPPORTED),
            nvmlDeviceGetGraphicsRunningProcesses=raising(NOT_SUPPORTED),
        ),
    )
    assert ResourceSampler().sample()["gpus"] == [{**EXPECTED_GPU, "process_memory_bytes": None}]


def test_process_memory_counts_each_context_once(monkeypatch: pytest.MonkeyPatch) -> None:
    pid, ns = os.getpid(), types.SimpleNamespace
    compute = [
        ns(pid=pid, usedGpuMemory=2 * GIB, gpuInstanceId=1, computeInstanceId=0),
        ns(pid=pid, usedGpuMemory=3 * GIB, gpuInstanceId=2, computeInstanceId=0),
    ]
    # A process with compute and graphics contexts appears in both lists with the same memory.
    graphics = [ns(pid=pid, usedGpuMemory=2 * GIB, gpuInstanceId=1, computeInstanceId=0)]
    install(
        monkeypatch,
        fake_nvml(
            pid,
            nvmlDeviceGetComputeRunningProcesses=lambda handle: compute,
            nvmlDeviceGetGraphicsRunningProcesses=lambda handle: graphics,
        ),
    )
    assert ResourceSampler().sample()["gpus"][0]["process_memory_bytes"] == 5 * GIB


@pytest.mark.parametrize(
    ("listed_pid", "memory", "utilization"),
    [
        (1, 0, 0.0),  # every listed pid is visible here: the watched process uses none
        (2**31 - 1, None, None),  # a pid we can't see (NVML lists host pids in a container)
    ],
)
def test_process_without_gpu_entries(
    monkeypatch: pytest.MonkeyPatch, listed_pid: int, memory: int | None, utilization: Any
) -> None:
    ns = types.SimpleNamespace
    other = ns(pid=listed_pid, usedGpuMemory=GIB, gpuInstanceId=NA, computeInstanceId=NA)
    install(
        monkeypatch,
        fake_nvml(
            os.getpid(),
            nvmlDeviceGetComputeRunningProcesses=lambda handle: [other],
            nvmlDeviceGetProcessUtilization=raising(NOT_FOUND),  # no samples at all
        ),
    )
    gpu = ResourceSampler().sample()["gpus"][0]
    assert (gpu["process_memory_bytes"], gpu["process_utilization_percent"]) == (
        memory,
        utilization,
    )


@pytest.mark.parametrize("bindings_know_v2", [True, False])
def test_memory_falls_back_to_v1(monkeypatch: pytest.MonkeyPatch, bindings_know_v2: bool) -> None:
    def v1_only(handle: str, version: int | None = None) -> Any:
        if version is not None:
            raise FakeNVMLError(FUNCTION_NOT_FOUND)
        return types.SimpleNamespace(total=80 * GIB, free=78 * GIB, used=int(1.5 * GIB))

    nvml = install(monkeypatch, fake_nvml(os.getpid(), nvmlDeviceGetMemoryInfo=v1_only))
    if not bindings_know_v2:
        del nvml.nvmlMemory_v2
    gpu = ResourceSampler().sample()["gpus"][0]
    assert (gpu["memory_used_bytes"], gpu["memory_total_bytes"]) == (int(1.5 * GIB), 80 * GIB)
    asked_v2 = any(call[2] for call in calls(nvml, "nvmlDeviceGetMemoryInfo"))
    assert asked_v2 == bindings_know_v2


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (LIBRARY_NOT_FOUND, "NVML library not found"),
        (DRIVER_NOT_LOADED, "no NVIDIA driver"),
        (999, "NVML failed to start: NVML error 999"),
    ],
)
def test_nvml_init_failure(monkeypatch: pytest.MonkeyPatch, code: int, message: str) -> None:
    install(monkeypatch, fake_nvml(os.getpid(), nvmlInit=raising(code)))
    sampler = ResourceSampler()
    assert sampler.sample()["gpus"] == []
    assert sampler.sample()["gpu_error"] == message
    sampler.close()  # nothing to shut down


def test_nvml_init_is_retried_at_most_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def init() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise FakeNVMLError(DRIVER_NOT_LOADED)

    nvml = install(monkeypatch, fake_nvml(os.getpid(), nvmlInit=init))
    sampler = ResourceSampler()
    assert sampler.sample()["gpu_error"] == "no NVIDIA driver"
    assert sampler.sample()["gpu_error"] == "no NVIDIA driver"
    assert len(attempts) == 1

    sampler._nvml_tried_at -= 61  # a minute passes
    result = sampler.sample()
    assert len(attempts) == 2
    assert (result["gpu_error"], len(result["gpus"])) == (None, 1)
    sampler.close()
    assert len(calls(nvml, "nvmlShutdown")) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nvmlDeviceGetCount": lambda: 0}, "no NVIDIA GPU found"),
        ({"nvmlDeviceGetCount": raising(999)}, "NVML could not count devices: NVML error 999"),
    ],
)
def test_no_devices(monkeypatch: pytest.MonkeyPatch, overrides: dict, message: str) -> None:
    install(monkeypatch, fake_nvml(os.getpid(), **overrides))
    result = ResourceSampler().sample()
    assert (result["gpus"], result["gpu_error"]) == ([], message)


def test_device_without_a_handle_keeps_its_index(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, fake_nvml(os.getpid(), nvmlDeviceGetHandleByIndex=raising(15)))
    gpu = ResourceSampler().sample()["gpus"][0]
    assert gpu == {**dict.fromkeys(EXPECTED_GPU), "index": 0}
