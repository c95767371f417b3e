"""Driving an ASGI app with no network, in this process or in a child pinned to a core: the
lifespan, one request at a time, and the child's figures handed back as one marked JSON line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any


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


def find_monitor(app: Any) -> Any:
    """The ``MonitorMiddleware`` inside a started Starlette app, or None."""
    node = getattr(app, "middleware_stack", None)
    for _ in range(32):
        if node is None or type(node).__name__ == "MonitorMiddleware":
            return node
        node = getattr(node, "app", None)
    return None


def find_engine(app: Any) -> Any:
    """The engine of the ``MonitorMiddleware`` inside a started app, when it writes in this
    process; None without one (bare, a peer, or captures handed to a collector)."""
    return getattr(find_monitor(app), "engine", None)


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop where it is installed (as the servers do), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def say(marker: str, result: Mapping[str, Any]) -> None:
    """What a child prints for its driver: ``marker`` and its figures as JSON on one line."""
    print(f"{marker} " + json.dumps(result), flush=True)


def run_child(
    cmd: Sequence[str], marker: str, env: Mapping[str, str] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run a child process and return the JSON it printed after ``marker``."""
    done = subprocess.run(
        list(cmd), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(marker + " ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"{' '.join(cmd[-4:])} failed ({done.returncode}): {done.stdout}\n{done.stderr[-3000:]}"
        )
    return json.loads(line[len(marker) + 1 :])
