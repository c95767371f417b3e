"""The model app as it runs when monitoring cannot: untouched, with the reason on the monitor API.

A bad setting fails the app's lifespan start-up with one line (uvicorn then exits non-zero
without a traceback). Served without lifespan events, or when the engine fails to start, the
model's requests pass straight through, ``/readyz`` answers 503 with the reason, and the log
says it once.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MonitoringOff", "api_path", "fallback_prefix"]

logger = logging.getLogger("inferwatch")


def fallback_prefix(values: dict[str, Any]) -> str:
    """Where the monitor API would answer, as far as settings that failed to load tell."""
    prefix = values.get("api_prefix") or os.environ.get("INFERWATCH_API_PREFIX") or "/monitor"
    if isinstance(prefix, str) and prefix.startswith("/") and not prefix.endswith("/"):
        return prefix
    return "/monitor"


def api_path(scope: Scope, prefix: str) -> str | None:
    """The path below the root that ``scope`` asks for, when it is under ``prefix``."""
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
        return path
    return None


class MonitoringOff:
    """``app`` unmonitored, because of ``reason``; the monitor API under ``prefix`` says why."""

    def __init__(self, app: ASGIApp, prefix: str, reason: str, *, logged: bool = False) -> None:
        self.app = app
        self.prefix = prefix
        self.reason = reason
        self._logged = logged

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": self.reason})
            else:
                await send({"type": "lifespan.shutdown.complete"})
            return
        if not self._logged:
            self._logged = True
            logger.error("inferwatch is off, requests pass through: %s", self.reason)
        if scope["type"] == "http" and (path := api_path(scope, self.prefix)) is not None:
            await self._answer(path[len(self.prefix) :], send)
            return
        await self.app(scope, receive, send)

    async def _answer(self, path: str, send: Send) -> None:
        if path == "/healthz":  # the process serves: restarting it would not help
            status, body = 200, {"status": "ok"}
        else:
            status, body = 503, {"status": "unavailable", "reasons": [self.reason]}
        content = orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
