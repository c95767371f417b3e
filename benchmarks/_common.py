"""Helpers the benchmark scripts share: the machine's description and markdown tables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import metadata
from typing import Any

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


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pin_to_core(core: int) -> bool:
    """Pin this process (and threads it starts later) to one core; False when it is not there."""
    if core not in os.sched_getaffinity(0) and core >= (os.cpu_count() or 1):
        return False
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        return False
    return True


# The benchmarks' model input: a churn model's 10 features, of the types real records carry.
COUNTRIES = ("DE", "FR", "US", "GB", "ES", "IT", "NL", "PL")
CHANNELS = ("web", "mobile", "branch", "partner")


def make_record(rng: random.Random) -> dict[str, Any]:
    """One realistic 10-feature record: five ints, three floats, a bool and two categoricals."""
    return {
        "age": rng.randint(18, 90),
        "income": round(rng.lognormvariate(10.5, 0.6), 2),
        "tenure_months": rng.randint(0, 240),
        "balance": round(rng.uniform(-2_000, 60_000), 2),
        "num_products": rng.randint(1, 6),
        "credit_score": rng.randint(300, 850),
        "utilization": round(rng.random(), 4),
        "is_active": rng.random() < 0.7,
        "country": rng.choice(COUNTRIES),
        "channel": rng.choice(CHANNELS),
    }


def make_bodies(count: int, batch: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct ``{"instances": [...]}`` request bodies of ``batch`` records each."""
    rng = random.Random(seed)
    return [
        json.dumps({"instances": [make_record(rng) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]


def make_prediction_bodies(count: int, batch: int, seed: int = 11) -> list[bytes]:
    """``count`` distinct ``{"predictions": [...]}`` response bodies of ``batch`` scores each."""
    rng = random.Random(seed)
    return [
        json.dumps({"predictions": [round(rng.random(), 6) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan startup, yield, then its shutdown (as a server would)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    said: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        said.append(message)

    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, receive, send))
    while not said:
        await asyncio.sleep(0.001)
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


async def asgi_request(app: Any, method: str, path: str, body: bytes) -> int:
    """One HTTP request straight into ``app``, no network; returns the response status."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    await app(scope, receive, send)
    return status
