"""What the sidecar adds to the monitor API: the upstream in /readyz, /health and /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Receive, Scope, Send

from ._proxy import UpstreamStats
from ._upstream import Upstream, UpstreamPool

__all__ = ["HEALTH_ROUTES", "AdminApp", "UpstreamFigures", "UpstreamProbe"]

HEALTH_ROUTES = ("/v2/health/ready", "/v1/models", "/health", "/healthz")
"""Readiness routes tried in turn when none is set: Open Inference Protocol (Triton, MLServer,
KServe V2), KServe V1 and TF Serving-like servers, then the usual ``/health`` and ``/healthz``."""

logger = logging.getLogger("inferwatch")
_PROBE_TTL = 1.0  # kubelet probes every few seconds; a burst of checks costs one upstream call
_PROBE_TIMEOUT = 1.0
_REASONS = ("unreachable", "timeout", "closed", "protocol")


class UpstreamProbe:
    """Check the upstream's readiness, at most once per second however often it is asked.

    With a ``path``, a GET of it must answer 2xx. Without one, the route is found from the
    upstream: the first of ``HEALTH_ROUTES`` to answer 2xx is used from then on; when every one
    answers 4xx (a plain model app has none), a TCP connect is; while one answers 5xx, the
    upstream is not ready yet. It uses httpx: the probe is not on the request path, and httpx is
    already a dependency.
    """

    def __init__(self, upstream: Upstream, path: str | None) -> None:
        self.upstream = upstream
        self.path = path
        self.url: str | None = None if path is None else upstream.url + "/" + path.lstrip("/")
        self.tcp = False
        self.reachable: bool | None = None
        self.ready = False
        self.status: int | None = None
        self.error: str | None = "the upstream has not been checked yet"
        self.checked = float("-inf")
        self._client: httpx.AsyncClient | None = None
        self._running: asyncio.Future[None] | None = None

    def describe(self) -> str:
        """How readiness is checked, in words for the start-up log."""
        if self.tcp:
            return f"a TCP connect to {self.upstream.host}:{self.upstream.port}"
        if self.url is not None:
            return f"GET {self.url}"
        return (
            f"not found yet ({self.error}); trying {', '.join(HEALTH_ROUTES)}, then a TCP connect"
        )

    async def check(self) -> None:
        """Refresh the result unless it is under a second old."""
        if time.monotonic() - self.checked < _PROBE_TTL:
            return
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
        await asyncio.shield(self._running)

    async def _probe(self) -> None:
        if self._client is None:
            # trust_env=False: an HTTP_PROXY meant for the outside must not carry this call.
            self._client = httpx.AsyncClient(timeout=_PROBE_TIMEOUT, trust_env=False)
        try:
            if self.tcp:
                await self._connect()
            elif self.url is not None:
                await self._get(self.url)
            else:
                await self._discover()
        finally:
            self.checked = time.monotonic()
            self._running = None

    async def _get(self, url: str) -> bool:
        """GET ``url`` and record the outcome; False when the upstream did not answer."""
        assert self._client is not None
        where = f"upstream health check GET {url}"
        try:
            response = await self._client.get(url)
        except httpx.TimeoutException:
            self.reachable, self.ready, self.status = False, False, None
            self.error = f"{where} got no answer within {_PROBE_TIMEOUT:g} s"
            return False
        except httpx.HTTPError as exc:
            self.reachable, self.ready, self.status = False, False, None
            self.error = f"{where} failed: {exc or type(exc).__name__}"
            return False
        self.reachable, self.status = True, response.status_code
        self.ready = 200 <= response.status_code < 300
        self.error = None if self.ready else f"{where} answered {response.status_code}"
        return True

    async def _discover(self) -> None:
        answers = []
        for route in HEALTH_ROUTES:
            url = self.upstream.url + route
            if not await self._get(url):
                return
            if self.ready:
                self.path, self.url = route, url
                logger.info("upstream readiness: GET %s answered %d; using it", url, self.status)
                return
            answers.append(f"{route} {self.status}")
            if self.status is not None and self.status >= 500:
                return  # a health route that says "not yet"
        self.tcp = True
        await self._connect()
        logger.info(
            "upstream readiness: no health route (%s); using %s",
            ", ".join(answers),
            self.describe(),
        )

    async def _connect(self) -> None:
        host, port = self.upstream.host, self.upstream.port
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=_PROBE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            self.reachable = self.ready = False
            self.error = (
                f"upstream TCP connect to {host}:{port} failed: {exc or type(exc).__name__}"
            )
        else:
            writer.close()
            self.reachable = self.ready = True
            self.status, self.error = None, None

    def problems(self) -> list[str]:
        return [] if self.ready else [self.error or "the upstream is not ready"]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class UpstreamFigures:
    """The upstream as the engine reports it (an ``EngineExtension``): its readiness in /readyz,
    the ``upstream`` section of /health, and the ``inferwatch_upstream_*`` metrics."""

    name = "upstream"

    def __init__(self, probe: UpstreamProbe, pool: UpstreamPool, stats: UpstreamStats) -> None:
        self.probe = probe
        self.pool = pool
        self.stats = stats
        self.draining = False

    def readiness_problems(self) -> list[str]:
        problems = ["the sidecar is shutting down"] if self.draining else []
        return problems + self.probe.problems()

    def health(self) -> dict[str, Any]:
        probe, pool = self.probe, self.pool
        return {
            "url": pool.upstream.url,
            "reachable": probe.reachable,
            "ready": probe.ready,
            "health_url": (
                f"tcp://{pool.upstream.host}:{pool.upstream.port}" if probe.tcp else probe.url
            ),
            "health_status": probe.status,
            "problem": probe.error,
            "connections": {"open": pool.count, "idle": pool.idle, "opened": pool.opened},
            "errors": {reason: self.stats.errors.get(reason, 0) for reason in _REASONS},
            "client_disconnects": self.stats.client_gone,
        }

    def metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "inferwatch_upstream_up", "1 when the upstream's health route answered 2xx last time."
        )
        up.add_metric([], 1.0 if self.probe.ready else 0.0)
        yield up
        errors = CounterMetricFamily(
            "inferwatch_upstream_errors",
            "Requests the upstream failed, by reason (502/504 unless the response had started).",
            labels=["reason"],
        )
        for reason in _REASONS:
            errors.add_metric([reason], float(self.stats.errors.get(reason, 0)))
        yield errors
        connections = GaugeMetricFamily(
            "inferwatch_upstream_connections", "Connections to the upstream.", labels=["state"]
        )
        idle = self.pool.idle
        connections.add_metric(["idle"], float(idle))
        connections.add_metric(["active"], float(max(self.pool.count - idle, 0)))
        yield connections


class AdminApp:
    """The monitor API, with a fresh upstream check before /readyz and /health answer."""

    def __init__(self, api: ASGIApp, probe: UpstreamProbe) -> None:
        self.api = api
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/readyz", "/health"):
            await self.probe.check()
        await self.api(scope, receive, send)
