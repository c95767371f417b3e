"""GET /dashboard: the page a person opens, and GET /health/history, the series it draws.

The page is static: HTML, CSS and a small hand-written SVG chart script shipped in
``middleware/api/static`` and read once at import. It holds no data; its script reads the same JSON
endpoints users script against. docs/dashboard.md explains the choices.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import duckdb
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..errors import MonitorError
from ..store.database import Store

__all__ = [
    "DEFAULT_HISTORY_POINTS",
    "DEFAULT_HISTORY_WINDOW",
    "MAX_HISTORY_POINTS",
    "dashboard_endpoint",
    "dashboard_page",
    "health_history",
    "parse_points",
]

Handler = Callable[[Request], Awaitable[Response]]

DEFAULT_HISTORY_WINDOW = 3600.0
"""Seconds of history GET /health/history returns without ``?window=``."""
DEFAULT_HISTORY_POINTS = 240
"""Points per series without ``?points=``: one every 15 s over an hour."""
MAX_HISTORY_POINTS = 2000
MAX_HISTORY_WINDOW = 400 * 86400.0  # longer windows are cut to this: no retention keeps more


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def _assemble(template: str, style: str, script: str) -> str:
    # str.replace, not format(): the CSS and script are full of braces.
    return template.replace("@@STYLE@@", style).replace("@@SCRIPT@@", script)


_STYLE = _read("dashboard.css")
_SCRIPT = _read("dashboard.js")
_SIGNIN_SCRIPT = _read("signin.js")
_PAGE = _assemble(_read("dashboard.html"), _STYLE, _SCRIPT)
_SIGNIN = _assemble(_read("signin.html"), _STYLE, _SIGNIN_SCRIPT)
# Only these two scripts may run: an inline handler smuggled in through a feature name would
# be refused even if escaping failed. The sign-in page writes the dashboard into its own
# document, which keeps this policy, so one policy covers both.
_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_sha256(_SCRIPT)} {_sha256(_SIGNIN_SCRIPT)}",
        f"style-src {_sha256(_STYLE)}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def dashboard_page(request: Request) -> Response:
    """The dashboard page itself (callers guard it with the admin token)."""
    return HTMLResponse(_PAGE, headers=_HEADERS)


def dashboard_endpoint(admin_token: str | None, guarded: Handler) -> Handler:
    """GET /dashboard: ``guarded`` (the page behind the token check), plus a sign-in page.

    A browser cannot send ``Authorization`` when a person opens a link, so when a token is set
    and a request that accepts HTML comes without the header, the answer is a 401 whose body is
    a sign-in form. Its script takes the token from the form or from ``#token=`` (a fragment
    never reaches the server or its logs) and loads the page again with the header.
    """

    async def endpoint(request: Request) -> Response:
        if (
            admin_token is not None
            and "authorization" not in request.headers
            and "text/html" in request.headers.get("accept", "")
        ):
            headers = {**_HEADERS, "WWW-Authenticate": "Bearer"}
            return HTMLResponse(_SIGNIN, status_code=401, headers=headers)
        return await guarded(request)

    return endpoint


_EFFICIENCY = """
    SELECT floor((epoch_us(ts) - $lo) / $step)::BIGINT AS b, max(ts), sum(interval_s),
           sum(requests), sum(errors),
           sum(p50_ms * requests) / nullif(sum(requests) FILTER (WHERE p50_ms IS NOT NULL), 0),
           max(p95_ms), max(p99_ms), max(max_ms)
    FROM efficiency
    WHERE route = '*' AND ts >= $start AND ts < $end
    GROUP BY b ORDER BY b
"""
_RESOURCES = """
    SELECT floor((epoch_us(ts) - $lo) / $step)::BIGINT AS b, max(ts),
           avg(process_cpu_percent), max(process_rss_bytes), avg(system_cpu_percent),
           avg(system_memory_used_percent), max(cgroup_memory_bytes),
           max(cgroup_memory_max_bytes), avg(gpu_utilization_percent), max(gpu_memory_used_bytes)
    FROM resources
    WHERE ts >= $start AND ts < $end
    GROUP BY b ORDER BY b
"""
_RESOURCE_COLUMNS = (
    "process_cpu_percent", "process_rss_bytes", "system_cpu_percent",
    "system_memory_used_percent", "cgroup_memory_bytes", "cgroup_memory_max_bytes",
    "gpu_utilization_percent", "gpu_memory_used_bytes",
)  # fmt: skip


def health_history(
    store: Store,
    window_s: float = DEFAULT_HISTORY_WINDOW,
    points: int = DEFAULT_HISTORY_POINTS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``efficiency`` (all routes) and ``resources`` series of the last ``window_s`` seconds.

    Each series has at most ``points`` points, one per step of ``window_s / points`` seconds.
    A point that merges several sampled intervals sums requests and errors, weights p50 by
    requests, and keeps the worst p95, p99 and max, so that a latency spike is never averaged
    away; resource percentages are averaged and byte figures keep their peak. A store that
    cannot be read raises :class:`MonitorError`.
    """
    points = max(1, min(int(points), MAX_HISTORY_POINTS))
    window_s = min(window_s, MAX_HISTORY_WINDOW)
    moment = now or datetime.now(UTC)
    end = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    start = end - timedelta(seconds=window_s)
    step_us = max(window_s * 1e6 / points, 1.0)
    params = {
        "start": start,
        "end": end,
        "lo": (start - datetime(1970, 1, 1)) // timedelta(microseconds=1),
        "step": step_us,
    }
    try:
        found, sampled = store.query(_EFFICIENCY, params), store.query(_RESOURCES, params)
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise MonitorError(f"Reading the health history failed: {first}.") from exc
    efficiency = []
    for _, ts, interval, requests, errors, p50, p95, p99, peak in found:
        requests = int(requests or 0)
        efficiency.append(
            {
                "ts": _iso(ts),
                "interval_s": _number(interval),
                "requests": requests,
                "errors": int(errors or 0),
                "per_second": _number(requests / interval) if interval else None,
                "error_rate": _number((errors or 0) / requests) if requests else None,
                "p50_ms": _number(p50),
                "p95_ms": _number(p95),
                "p99_ms": _number(p99),
                "max_ms": _number(peak),
            }
        )
    resources_rows = [
        {"ts": _iso(ts), **dict(zip(_RESOURCE_COLUMNS, map(_number, values), strict=True))}
        for _, ts, *values in sampled
    ]
    return {
        "window_s": window_s,
        "step_s": round(step_us / 1e6, 6),
        "start": _iso(start),
        "end": _iso(end),
        "efficiency": efficiency,
        "resources": resources_rows,
    }


_POINTS = re.compile(r"^[0-9]{1,6}$")


def parse_points(raw: str | None) -> int:
    """``?points=``: a whole number from 1 to :data:`MAX_HISTORY_POINTS`."""
    if raw is None:
        return DEFAULT_HISTORY_POINTS
    if not _POINTS.match(raw) or not 1 <= int(raw) <= MAX_HISTORY_POINTS:
        raise ValueError(f"points: {raw!r} is not a whole number from 1 to {MAX_HISTORY_POINTS}")
    return int(raw)


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return round(value, 3) if math.isfinite(value) else None


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
