from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferwatch import MonitorMiddleware, Settings
from inferwatch.middleware.collector.election import collector_running
from inferwatch.middleware.collector.paths import CollectorPaths
from inferwatch.middleware.engine.engine import Engine
from inferwatch.middleware.payload.exchange import Capture

ROOT = Path(__file__).resolve().parent.parent


def in_process(app: Any, **values: Any) -> MonitorMiddleware:
    """MonitorMiddleware with its engine in this process (``engine=``), for tests that look at
    the engine's internals; the default form hands over to a collector process instead."""
    return MonitorMiddleware(app, engine=Engine(Settings.load(values)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def uvicorn_process(
    target: str, env: dict[str, str] | None = None, ready_path: str = "/monitor/healthz"
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``target`` (module:app) in a real uvicorn process on 127.0.0.1."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + ready_path, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn {target} did not start")
            time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def make_capture(
    request_id: str,
    body: bytes,
    response: bytes = b'{"predictions": [1]}',
    *,
    ts: float | None = None,
) -> Capture:
    """A captured POST /predict as the middleware hands it to the writer."""
    return Capture(
        ts=time.time() if ts is None else ts,
        request_id=request_id,
        method="POST",
        path="/predict",
        route="/predict",
        status=200,
        latency_s=0.002,
        ttfb_s=0.001,
        request_body=(body,),
        request_bytes=len(body),
        request_truncated=False,
        request_content_type="application/json",
        response_body=(response,),
        response_bytes=len(response),
        response_truncated=False,
        response_content_type="application/json",
        error=None,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition did not hold in time")
        time.sleep(0.02)


def wait_collector_gone(db: str, timeout: float = 30.0) -> None:
    """Wait until the collector of ``db`` has written everything and let go of the store."""
    paths = CollectorPaths.for_db(db)
    wait_until(lambda: not collector_running(paths), timeout)


def require_tool(name: str) -> str:
    """The tool's path; skip without it, except in CI where a missing tool is a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("INFERWATCH_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{name} is required here and is not installed")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "monitor.duckdb")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
