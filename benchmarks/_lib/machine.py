"""What the figures were measured on, and the tools a benchmark needs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata

PACKAGES = (
    "inferwatch",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "duckdb",
    "orjson",
    "numpy",
    "prometheus-fastapi-instrumentator",
    "prometheus-client",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def machine_info(extra: Iterable[str] = ()) -> dict[str, str]:
    """What the figures were measured on: cores, CPU, kernel, Python and package versions."""
    info = {
        "nproc": str(os.cpu_count()),
        "usable cores": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "load average (1/5/15 min) when the figures were printed": " / ".join(
            f"{v:.2f}" for v in os.getloadavg()
        ),
    }
    for name in (*PACKAGES, *extra):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


def missing_tools(tools: Iterable[str]) -> str | None:
    """A one-line complaint naming the tools not on PATH, or None when all are there."""
    missing = [t for t in tools if not (shutil.which(t) or shutil.which(t, path="/usr/sbin"))]
    if not missing:
        return None
    return f"{', '.join(missing)} not installed (Debian: apt-get install -y wrk util-linux nginx)"
