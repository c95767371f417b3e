"""What goes upstream and what comes back: the request target and the headers, both ways.

The upstream address is fixed at start; a request contributes only its path and query, appended
to the upstream's base path, and its end-to-end headers. Hop-by-hop headers (RFC 9110 7.6.1) and
those a Connection header names stop here.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from starlette.types import Scope

from ._upstream import CHUNKED, NO_BODY

__all__ = ["request_headers", "response_headers", "upstream_target"]

# RFC 9110 7.6.1 hop-by-hop headers, plus what the proxy sets itself.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_HOP_AND_LENGTH = _HOP_BY_HOP | {b"content-length"}
_REQUEST_SPECIAL = _HOP_BY_HOP | {
    b"host",
    b"expect",  # uvicorn already answered 100-continue to the client
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_DOT_SEGMENT = re.compile(r"(?:^|[/\\])\.{1,2}(?:[/\\;]|$)")


def upstream_target(scope: Scope, base: bytes) -> bytes | None:
    """Upstream base path + the request's path and query; None for dot segments."""
    path: str = scope["path"]
    if "." in path and _DOT_SEGMENT.search(path):
        return None
    raw: bytes = scope.get("raw_path") or quote(path).encode("ascii")
    if raw[:2] == b"//":  # would read as a network-path reference to some parsers
        raw = b"/" + raw.lstrip(b"/")
    if raw[:1] != b"/":
        return None
    query: bytes = scope["query_string"]
    return base + raw + b"?" + query if query else base + raw


def request_headers(scope: Scope, host: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """End-to-end request headers plus Host, X-Forwarded-*, and the body's framing."""
    out: list[tuple[bytes, bytes]] = [(b"host", host)]
    named: set[bytes] | None = None
    forwarded_for = proto = forwarded_host = original_host = length = None
    chunked = False
    for item in scope["headers"]:
        name = item[0]
        if name not in _REQUEST_SPECIAL:
            out.append(item)
            continue
        value = item[1]
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"host":
            original_host = value
        elif name == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
        elif name == b"x-forwarded-proto":
            proto = value
        elif name == b"x-forwarded-host":
            forwarded_host = value
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            named = tokens if named is None else named | tokens
    if named:
        out = [out[0], *(item for item in out[1:] if item[0] not in named)]
    client = scope.get("client")
    if client:
        address = client[0].encode("ascii")
        forwarded_for = address if forwarded_for is None else forwarded_for + b", " + address
    if forwarded_for is not None:
        out.append((b"x-forwarded-for", forwarded_for))
    # A proxy in front of this one knows the original scheme and host better.
    out.append((b"x-forwarded-proto", proto or scope["scheme"].encode("ascii")))
    if forwarded_host or original_host:
        out.append((b"x-forwarded-host", forwarded_host or original_host))  # type: ignore[arg-type]
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))
        return out, CHUNKED
    if length is not None:
        out.append((b"content-length", length))
        return out, int(length) or NO_BODY
    return out, NO_BODY


def response_headers(
    headers: list[tuple[bytes, bytes]], status: int = 200
) -> list[tuple[bytes, bytes]]:
    """End-to-end response headers; uvicorn frames the body again itself."""
    named: set[bytes] | None = None
    chunked = False
    for name, value in headers:
        if name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            named = tokens if named is None else named | tokens
        elif name == b"transfer-encoding":
            chunked = True
    # uvicorn (or the direct path) would expect a body of the length a chunked one names
    drop = _HOP_AND_LENGTH if chunked or status in (204, 304) else _HOP_BY_HOP
    if named:
        drop = drop | named
    return [item for item in headers if item[0] not in drop]
