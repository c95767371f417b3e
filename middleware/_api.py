"""The monitor API: health, readiness, metrics, drift, labels, alerts and the dashboard.

Served under ``api_prefix`` by the middleware and on the admin port by the sidecar. Handlers
that read the log store run in worker threads with cursors of their own.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._engine import Engine
from ._metrics import build_registry
from ._settings import parse_duration

__all__ = ["JSONResponse", "build_api"]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


Handler = Callable[[Request], Awaitable[Response]]


def _require_token(engine: Engine, handler: Handler) -> Handler:
    token = engine.settings.admin_token

    async def guarded(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse(
                    {"error": "this endpoint needs Authorization: Bearer <admin token>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return guarded


def build_api(engine: Engine) -> Starlette:
    """The monitor API as an ASGI app over ``engine``."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reasons = engine.readiness_problems()
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def health(request: Request) -> Response:
        raw = request.query_params.get("window")
        try:
            window = None if raw is None else parse_duration(raw)
        except ValueError as exc:
            return JSONResponse({"error": f"window: {exc}"}, status_code=400)
        if window is not None and window <= 0:
            return JSONResponse({"error": "window must be above zero"}, status_code=400)
        return JSONResponse(await run_in_threadpool(engine.health, window))

    registry = build_registry(engine)

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/health", health),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes)
