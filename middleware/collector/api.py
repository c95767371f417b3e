"""The monitor API as the collector serves it: every read that must see all workers first asks
them for what they hold (the flush barrier), then answers from the store."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from .._api import build_api
from .ingest import IngestServer
from .pod import PodEngine

__all__ = ["ROOT_PATH_HEADER", "collector_api"]

ROOT_PATH_HEADER = b"x-inferwatch-root-path"
"""Where a worker tells the collector under which path it serves the API (for links)."""

# Reads that promise to see every response already sent before the call.
_BARRIER = {
    ("GET", "/health"),
    ("GET", "/drift"),
    ("POST", "/drift/check"),
    ("GET", "/evaluation"),
    ("POST", "/labels"),
}


def collector_api(engine: PodEngine, ingest: IngestServer, *, trusted: bool) -> ASGIApp:
    """The monitor API over ``engine``; ``trusted`` (the workers' socket) honours the root path
    a worker forwards, which the admin port, open to the network, never does."""
    api = build_api(engine)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if (method, path) in _BARRIER or path.startswith("/export/"):
                await run_in_threadpool(ingest.barrier)
            if trusted:
                for key, value in scope["headers"]:
                    if key == ROOT_PATH_HEADER:
                        scope = {**scope, "root_path": value.decode("latin-1")}
                        break
        await api(scope, receive, send)

    return app
