"""What the serving tests share: recorded cgroup v2 folders and what is read from them."""

from __future__ import annotations

from pathlib import Path

CGROUP_DATA = Path(__file__).parent / "data" / "cgroup"
CGROUP_KEYS = {
    "memory_current_bytes",
    "memory_max_bytes",
    "memory_used_percent",
    "memory_oom_kills",
    "cpu_usage_seconds",
    "cpu_limit_cores",
    "cpu_percent_of_limit",
    "throttled_periods",
    "nr_periods",
    "throttled_seconds",
}

LIMITED_T0 = {
    "memory_current_bytes": 268435456,
    "memory_max_bytes": 536870912,
    "memory_used_percent": 50.0,
    "memory_oom_kills": 2,
    "cpu_usage_seconds": 10.0,
    "cpu_limit_cores": 2.0,
    "cpu_percent_of_limit": None,
    "throttled_periods": 40,
    "nr_periods": 1000,
    "throttled_seconds": 2.5,
}
UNLIMITED = {
    "memory_current_bytes": 104857600,
    "memory_max_bytes": None,
    "memory_used_percent": None,
    "memory_oom_kills": 0,
    "cpu_usage_seconds": 5.0,
    "cpu_limit_cores": None,
    "cpu_percent_of_limit": None,
    "throttled_periods": 0,
    "nr_periods": 0,
    "throttled_seconds": 0.0,
}
SPARSE = {
    **dict.fromkeys(CGROUP_KEYS),
    "memory_current_bytes": 1048576,
    "cpu_usage_seconds": 1.5,
}
