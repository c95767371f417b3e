"""The monitor API: health, readiness, metrics, drift, labels, alerts and the dashboard.

Served under ``api_prefix`` by the middleware and on the admin port by the sidecar. Handlers
that read the log store run in worker threads with cursors of their own. The reports on traffic
(/health, /drift/check, /evaluation) first wait, briefly, for the captures already queued to be
written: a client that has its response sees its request in them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ..drift.summary_check import Against, parse_against
from ..engine.engine import Engine
from ..engine.metrics import build_registry
from ..errors import MonitorError
from ..evaluation.labels import MAX_BODY_BYTES, LabelError, parse_labels, write_labels
from ..settings import parse_duration
from .access import guard
from .dashboard import dashboard_endpoint, dashboard_page, health_history, parse_points
from .openapi import openapi_endpoint

__all__ = ["JSONResponse", "build_api"]

logger = logging.getLogger("inferwatch")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


Handler = Callable[[Request], Awaitable[Response]]

# How long a report waits for queued captures to be written; past it, it answers without them.
_SETTLE_S = 5.0


def _require_token(engine: Engine, handler: Handler) -> Handler:
    return guard(engine.settings.admin_token, handler, JSONResponse)


def _query_time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: {raw!r} is not an ISO-8601 time") from exc
    if moment.tzinfo is None:  # a time without an offset is UTC
        return moment.replace(tzinfo=UTC)
    try:  # here, so that 0001-01-01T00:00+01:00 is a 400 and not an OverflowError later
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{name}: {raw!r} is outside the years 1 to 9999 in UTC") from exc


def _history_query(request: Request, *, default_limit: int) -> tuple[datetime | None, int]:
    """``?since=`` and ``?limit=`` of a history endpoint; the limit is kept to 1..1000."""
    raw = request.query_params.get("limit", str(default_limit))
    try:
        limit = int(raw)
    except ValueError as exc:
        raise ValueError(f"limit: {raw!r} is not a whole number") from exc
    return _query_time(request, "since"), max(1, min(limit, 1000))


def _asks_window(request: Request) -> bool:
    return any(request.query_params.get(k) for k in ("window", "against"))


def _window_query(request: Request) -> tuple[float | None, Against | None]:
    """``?window=`` (``24h``, ``7d``) and ``?against=`` (``7d-ago``, ``30d@7d-ago``) of a check."""
    raw = request.query_params.get("window")
    try:
        window_s = parse_duration(raw) if raw else None
    except ValueError as exc:
        raise ValueError(f"window: {exc}") from exc
    if window_s is not None and window_s <= 0:
        raise ValueError("window: it must be above zero")
    try:
        against = parse_against(request.query_params.get("against"))
    except ValueError as exc:
        raise ValueError(f"against: {exc}") from exc
    return window_s, against


def build_api(engine: Engine) -> Starlette:
    """The monitor API as an ASGI app over ``engine``."""

    async def settled() -> None:
        """Wait (off the event loop, at most ``_SETTLE_S``) until what was captured is stored."""
        try:
            await run_in_threadpool(engine.flush, _SETTLE_S)
        except Exception as exc:  # a report of what is stored beats a 500
            logger.warning("inferwatch: answering without waiting for the writer: %s", exc)

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
        await settled()
        return JSONResponse(await run_in_threadpool(engine.health, window))

    async def history(request: Request) -> Response:
        try:
            window = parse_duration(request.query_params.get("window", "1h"))
        except ValueError as exc:
            return JSONResponse({"error": f"window: {exc}"}, status_code=400)
        try:
            points = parse_points(request.query_params.get("points"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if window <= 0:
            return JSONResponse({"error": "window must be above zero"}, status_code=400)
        store = engine.writer.store
        if store is None:
            return JSONResponse({"error": "the log store is unavailable"}, status_code=503)
        try:
            return JSONResponse(await run_in_threadpool(health_history, store, window, points))
        except MonitorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    registry = build_registry(engine)

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def export(request: Request) -> Response:
        table = request.path_params["table"]
        try:
            since = _query_time(request, "since")
            until = _query_time(request, "until")
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        store = engine.writer.store
        if store is None:
            return JSONResponse({"error": "the log store is unavailable"}, status_code=503)
        folder = tempfile.mkdtemp(prefix="inferwatch-export-")
        path = os.path.join(folder, f"{table}.parquet")
        try:
            await run_in_threadpool(store.export_parquet, table, path, since, until)
        except MonitorError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            status = 404 if "No table" in str(exc) else 500
            return JSONResponse({"error": str(exc)}, status_code=status)
        return FileResponse(
            path,
            media_type="application/vnd.apache.parquet",
            filename=f"{table}.parquet",
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    def model_checks(request: Request) -> Any:
        """The checks ``?model=`` names (every request's without it), or a 404 response."""
        try:
            return engine.checks_for(request.query_params.get("model"))
        except MonitorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    async def drift(request: Request) -> Response:
        checks = model_checks(request)
        if isinstance(checks, Response):
            return checks
        report = checks.latest
        if report is None or _asks_window(request):
            return await drift_check(request)
        return JSONResponse(report)

    async def drift_check(request: Request) -> Response:
        checks = model_checks(request)
        if isinstance(checks, Response):
            return checks
        try:
            window_s, against = _window_query(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        await settled()
        try:
            if window_s is not None or against is not None:
                report = await run_in_threadpool(checks.run, window_s, against)
            elif checks.model is None:
                report = await run_in_threadpool(engine.run_checks)
            else:
                report = await run_in_threadpool(checks.run)
        except MonitorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(report)

    async def drift_history(request: Request) -> Response:
        checks = model_checks(request)
        if isinstance(checks, Response):
            return checks
        try:
            since, limit = _history_query(request, default_limit=50)
            window_s, _ = _window_query(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if since is None and window_s is not None:  # ?window=7d: the reports of the last 7 days
            since = datetime.now(UTC) - timedelta(seconds=window_s)
        reports = await run_in_threadpool(checks.history, since, limit)
        return JSONResponse({"reports": reports})

    async def labels(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse(
                    {"error": f"a labels body may hold at most {MAX_BODY_BYTES} bytes"},
                    status_code=413,
                )
        try:
            parsed = await run_in_threadpool(parse_labels, bytes(body))
        except LabelError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            future = engine.writer.call(lambda store: write_labels(store, parsed))
            counts = await asyncio.wrap_future(future)
        except MonitorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(counts)

    async def evaluation(request: Request) -> Response:
        checks = model_checks(request)
        if isinstance(checks, Response):
            return checks
        await settled()
        try:
            report = await run_in_threadpool(engine.evaluate, checks.model)
        except MonitorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(report)

    async def alerts(request: Request) -> Response:
        try:
            since, limit = _history_query(request, default_limit=100)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        manager = engine.alerts
        return JSONResponse(
            {
                "active": manager.active(),
                "history": manager.history(since, limit),
                "channels": manager.channels(),
            }
        )

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/health", health),
        Route("/health/history", history),
        Route("/metrics", metrics),
        Route("/drift", _require_token(engine, drift)),
        Route("/drift/check", _require_token(engine, drift_check), methods=["POST"]),
        Route("/drift/history", _require_token(engine, drift_history)),
        Route("/labels", _require_token(engine, labels), methods=["POST"]),
        Route("/evaluation", evaluation),
        Route("/alerts", _require_token(engine, alerts)),
        Route("/export/{table}.parquet", _require_token(engine, export)),
        Route("/openapi.json", openapi_endpoint(engine.settings.admin_token is not None)),
        Route(
            "/dashboard",
            dashboard_endpoint(engine.settings.admin_token, _require_token(engine, dashboard_page)),
        ),
    ]
    return Starlette(routes=routes)
