"""read_cgroup and cgroup_dir: cgroup v2 files of a container, from fixtures and made-up trees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inferwatch.middleware.serving.cgroup import cgroup_dir, read_cgroup, usable_cpus
from tests.middleware.serving.conftest import (
    CGROUP_DATA,
    CGROUP_KEYS,
    LIMITED_T0,
    SPARSE,
    UNLIMITED,
)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [("k8s_limited_t0", LIMITED_T0), ("k8s_unlimited", UNLIMITED), ("sparse", SPARSE)],
)
def test_read_cgroup_fixture(fixture: str, expected: dict) -> None:
    assert read_cgroup(str(CGROUP_DATA / fixture), None, None) == expected


def test_cpu_percent_of_limit_from_two_samples() -> None:
    before = read_cgroup(str(CGROUP_DATA / "k8s_limited_t0"), None, None)
    after = read_cgroup(str(CGROUP_DATA / "k8s_limited_t1"), before, 2.0)
    # 3 CPU-seconds in 2 s is 1.5 cores: 75 % of a 2-core limit.
    assert after == {
        **LIMITED_T0,
        "memory_current_bytes": 402653184,
        "memory_used_percent": 75.0,
        "cpu_usage_seconds": 13.0,
        "cpu_percent_of_limit": 75.0,
        "throttled_periods": 45,
        "nr_periods": 1020,
        "throttled_seconds": 2.75,
    }


@pytest.mark.parametrize(
    ("fixture", "previous", "elapsed_s"),
    [
        ("k8s_limited_t1", None, 2.0),  # first sample
        ("k8s_limited_t1", "k8s_limited_t0", None),
        ("k8s_limited_t1", "k8s_limited_t0", 0.0),
        ("k8s_limited_t0", "k8s_limited_t1", 2.0),  # the counter went back: a new container
        ("k8s_unlimited", "k8s_unlimited", 2.0),  # no limit
    ],
)
def test_cpu_percent_of_limit_is_none_when_unknown(
    fixture: str, previous: str | None, elapsed_s: float | None
) -> None:
    before = read_cgroup(str(CGROUP_DATA / previous), None, None) if previous else None
    after = read_cgroup(str(CGROUP_DATA / fixture), before, elapsed_s)
    assert after is not None
    assert after["cpu_percent_of_limit"] is None


@pytest.mark.parametrize("fixture", ["not_v2", "does_not_exist"])
def test_read_cgroup_without_cgroup_v2_is_none(fixture: str) -> None:
    assert read_cgroup(str(CGROUP_DATA / fixture), None, None) is None


def test_read_cgroup_tolerates_malformed_files(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    (tmp_path / "memory.current").write_text("lots\n")
    (tmp_path / "memory.max").write_text("")
    (tmp_path / "cpu.max").write_text("200000 0\n")
    (tmp_path / "cpu.stat").write_text("usage_usec\nnr_periods -3\nthrottled_usec 10\n")
    (tmp_path / "memory.events").write_bytes(b"\xff\xfe")
    assert read_cgroup(str(tmp_path), None, None) == {
        **dict.fromkeys(CGROUP_KEYS),
        "throttled_seconds": 1e-5,
    }


OTHER_PID = 424242


@pytest.mark.parametrize(
    ("own", "watched", "expected"),
    [
        ("/", "/", "."),  # a container with its own cgroup namespace
        ("/kubepods/pod1/ctr-a", "/kubepods/pod1/ctr-a", "kubepods/pod1/ctr-a"),  # on a host
        ("/system.slice/x.service", "/kubepods/pod1/ctr-b", "kubepods/pod1/ctr-b"),  # host, other
        ("/", "/../ctr-b", None),  # sidecar: the model's cgroup lies outside our mount
        ("/kubepods/pod1/ctr-a", "/gone", None),
        (None, None, "."),  # no cgroup v2 line: read what the root has
    ],
)
def test_cgroup_dir_follows_the_watched_process(
    tmp_path: Path, own: str | None, watched: str | None, expected: str | None
) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    for rel in ("", "kubepods/pod1/ctr-a", "kubepods/pod1/ctr-b"):
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "cgroup.controllers").write_text("cpu memory\n")
    for pid, path in ((os.getpid(), own), (OTHER_PID, watched)):
        (proc / str(pid)).mkdir(parents=True)
        lines = "1:name=systemd:/x\n" + (f"0::{path}\n" if path else "")
        (proc / str(pid) / "cgroup").write_text(lines)

    found = cgroup_dir(str(root), OTHER_PID, str(proc))
    assert found == (None if expected is None else str(root / expected).removesuffix("/."))


def test_cgroup_dir_prefers_limit_files_at_the_root(tmp_path: Path) -> None:
    # cgroupns=host: /proc says /kubepods/..., but the container's cgroup is what is mounted.
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (root / "kubepods" / "ctr").mkdir(parents=True)
    for directory in (root, root / "kubepods" / "ctr"):
        (directory / "cgroup.controllers").write_text("cpu memory\n")
    (root / "memory.max").write_text("536870912\n")
    (proc / str(os.getpid())).mkdir(parents=True)
    (proc / str(os.getpid()) / "cgroup").write_text("0::/kubepods/ctr\n")
    assert cgroup_dir(str(root), os.getpid(), str(proc)) == str(root)
    assert cgroup_dir(str(tmp_path / "proc"), os.getpid(), str(proc)) is None


@pytest.mark.parametrize(
    ("cpu_max", "quota_cores"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
)
def test_usable_cpus_is_cut_to_the_cgroup_quota(
    tmp_path: Path, cpu_max: str, quota_cores: int | None
) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cpu.max").write_text(cpu_max + "\n")
    (proc / str(os.getpid())).mkdir(parents=True)
    (proc / str(os.getpid()) / "cgroup").write_text("0::/\n")
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota_cores is None else min(affinity, quota_cores)
    assert usable_cpus(str(root), str(proc)) == expected


def test_usable_cpus_without_cgroup_v2_is_the_affinity() -> None:
    assert usable_cpus(str(CGROUP_DATA / "not_v2")) == len(os.sched_getaffinity(0))


def test_a_pinned_process_runs_duckdb_on_one_thread(tmp_path: Path) -> None:
    # A sidecar pinned to one core (taskset, a cpuset) must not start DuckDB threads per core.
    script = (
        "import os, sys; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]});"
        "from inferwatch.middleware.serving.cgroup import usable_cpus;"
        "from inferwatch.middleware.store.database import Store;"
        "store = Store(sys.argv[1]);"
        "print(usable_cpus(), store.query(\"SELECT current_setting('threads')\")[0][0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pinned.duckdb")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.stdout.split() == ["1", "1"]
