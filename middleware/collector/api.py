"""The monitor API as the collector serves it: every read that must see all workers first asks
them for what they hold (the flush barrier), then answers from the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.app import JSONResponse, build_api
from ..errors import MonitorError
from ..evaluation.label_files import import_label_file
from ..store.database import Store
from .ingest import IngestServer
from .pod import PodEngine
from .wire import CLIENT_HEADER, ROOT_PATH_HEADER

__all__ = ["collector_api"]

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
    local = {"/snapshot.duckdb": _snapshot(engine, ingest), "/labels/import": _import(engine)}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if trusted and path in local:
                await local[path](scope, receive, send)
                return
            if (method, path) in _BARRIER or path.startswith("/export/"):
                await run_in_threadpool(ingest.barrier)
            if trusted:
                scope = _as_forwarded(scope)
        await api(scope, receive, send)

    return app


# Routes for the command line, on the workers' socket only (reached by who may read the store).


def _snapshot(engine: PodEngine, ingest: IngestServer) -> ASGIApp:
    """GET: a consistent copy of the store, taken on the writer thread after a checkpoint."""

    def copy(store: Store, target: str) -> None:
        store.checkpoint()
        shutil.copyfile(store.path, target)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await run_in_threadpool(ingest.barrier)
        folder = tempfile.mkdtemp(prefix="inferwatch-snapshot-")
        target = os.path.join(folder, "snapshot.duckdb")
        try:
            await asyncio.wrap_future(engine.writer.call(lambda store: copy(store, target)))
        except (MonitorError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            response: Response = JSONResponse({"error": str(exc)}, status_code=503)
        else:
            cleanup = BackgroundTask(shutil.rmtree, folder, ignore_errors=True)
            response = FileResponse(target, background=cleanup)
        await response(scope, receive, send)

    return endpoint


def _import(engine: PodEngine) -> ASGIApp:
    """POST a label file's bytes (its name in ``x-inferwatch-filename``): imported as a file."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        name = os.path.basename(request.headers.get("x-inferwatch-filename", "labels.csv"))
        folder = tempfile.mkdtemp(prefix="inferwatch-labels-")
        path = os.path.join(folder, name or "labels.csv")
        try:
            with open(path, "wb") as out:
                async for chunk in request.stream():
                    out.write(chunk)
            future = engine.writer.call(lambda store: import_label_file(store, path))
            counts = await asyncio.wrap_future(future)
            response = JSONResponse(counts)
        except MonitorError as exc:
            response = JSONResponse({"error": str(exc)}, status_code=400)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
        await response(scope, receive, send)

    return endpoint


def _as_forwarded(scope: Scope) -> Scope:
    """The scope as the worker saw it: its root path and its client's address."""
    scope = {**scope, "client": None}
    for key, value in scope["headers"]:
        if key == ROOT_PATH_HEADER:
            scope["root_path"] = value.decode("latin-1")
        elif key == CLIENT_HEADER:
            host, _, port = value.decode("latin-1").rpartition(":")
            scope["client"] = (host, int(port)) if port.isdigit() else None
    return scope
