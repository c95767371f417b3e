"""The monitor API of a sidecar whose engine runs in a collector process.

The collector answers it (over its Unix socket, as it answers the middleware's workers); what
only the proxy's process knows, the upstream, is added here: its readiness to ``/readyz``, its
section to ``/health`` and its ``inferwatch_upstream_*`` families to ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from starlette.types import Message, Receive, Scope, Send

from inferwatch.middleware.collector import ApiForwarder

from ._admin import UpstreamFigures, UpstreamProbe

__all__ = ["CollectorAdmin"]

_MERGED = ("/readyz", "/health", "/metrics")


class _Upstream:
    """The upstream's metric families, as a prometheus_client collector."""

    def __init__(self, figures: UpstreamFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        yield from self.figures.metrics()


class CollectorAdmin:
    """The monitor API, forwarded to the collector, with the upstream's figures merged in."""

    def __init__(self, forward: ApiForwarder, probe: UpstreamProbe, figures: UpstreamFigures):
        self.forward = forward
        self.probe = probe
        self.figures = figures
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Upstream(figures))  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in ("/readyz", "/health"):
            await self.probe.check()
        if path not in _MERGED or scope["method"] not in ("GET", "HEAD"):
            await self.forward(scope, receive, send, path)
            return
        status, headers, body = await self._ask(scope, receive, path)
        if path == "/readyz":
            problems = self.figures.readiness_problems()
            if problems:
                reasons = _field(body, "reasons") if status == 503 else []
                content = {"status": "unavailable", "reasons": [*(reasons or []), *problems]}
                status, headers, body = 503, _JSON, orjson.dumps(content)
        elif path == "/health" and status == 200:
            report = orjson.loads(body)
            report["upstream"] = self.figures.health()
            headers, body = _JSON, orjson.dumps(report)
        elif path == "/metrics" and status == 200:
            body += generate_latest(self.registry)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _ask(
        self, scope: Scope, receive: Receive, path: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The collector's whole answer to this request."""
        said: dict[str, object] = {"status": 502, "headers": []}
        body = bytearray()

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                said["status"] = message["status"]
                said["headers"] = list(message.get("headers", ()))
            else:
                body.extend(message.get("body", b""))

        await self.forward(scope, receive, keep, path)
        return said["status"], said["headers"], bytes(body)  # type: ignore[return-value]


_JSON = [(b"content-type", b"application/json")]


def _field(body: bytes, name: str) -> list[str] | None:
    try:
        value = orjson.loads(body).get(name)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, list) else None
