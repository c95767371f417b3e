"""Who may read payloads or change state through the monitor API.

With ``admin_token`` set, the guarded routes need ``Authorization: Bearer <token>`` wherever the
request comes from. Without one they answer only local requests: from a loopback address (this
host, or this pod's network namespace) and not relayed by a proxy (no ``Forwarded``,
``X-Forwarded-For`` or ``X-Real-IP``). Anything else gets 403 saying to set ``admin_token``.

The decision is made per request, from the client's address, because the middleware cannot see
the address its server listens on, and because the sidecar's admin port listens on every address
by default (kubelet probes and Prometheus reach it from the pod network): probes and ``/metrics``
stay open to them, while ``kubectl port-forward`` and ``curl localhost`` in the pod reach
everything. A reverse proxy on the same host that adds no forwarding header looks local: set
``admin_token`` behind one.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CLOSED", "GUARDED", "guard", "is_loopback", "local_request"]

Handler = Callable[[Request], Awaitable[Response]]

GUARDED = (
    "/dashboard",
    "/drift",
    "/drift/check",
    "/drift/history",
    "/labels",
    "/alerts",
    "/export/{table}.parquet",
)
"""Routes that return payload values (raw captures, category values in drift reports and alert
details) or change state. Probes, /health, /metrics, /evaluation and /openapi.json are open."""

CLOSED = (
    "this endpoint returns payload data or changes state, and answers requests from beyond "
    "loopback only with an admin token: set admin_token (INFERWATCH_ADMIN_TOKEN) and send "
    "Authorization: Bearer <token>"
)
_UNAUTHORIZED = "this endpoint needs Authorization: Bearer <admin token>"
_RELAYED = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 (and IPv4-mapped loopback) and ``localhost``."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def local_request(scope: dict) -> bool:
    """From a loopback address, and not relayed by a proxy on this host."""
    client = scope.get("client")
    if not client or not is_loopback(client[0]):
        return False  # behind a Unix socket the client is unknown: the token is needed
    return not any(name in _RELAYED for name, _ in scope.get("headers", ()))


def guard(token: str | None, handler: Handler, json: Callable[..., Response]) -> Handler:
    """``handler`` behind the rule above; ``json`` builds the error responses."""

    async def guarded(request: Request) -> Response:
        if token is None:
            if local_request(request.scope):
                return await handler(request)
            return json({"error": CLOSED}, status_code=403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return json(
                {"error": _UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    return guarded
