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

__all__ = [
    "connection_tokens",
    "request_head",
    "response_drop",
    "response_headers",
    "upstream_target",
]

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
# Connection tokens that name no header of the request's own (``close``, or one dropped anyway).
_NOT_OWN = _REQUEST_SPECIAL | {b"close"}
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


def request_head(scope: Scope, host: bytes, request_line: bytes) -> tuple[bytes, int]:
    """The head sent upstream: ``request_line``, the end-to-end request headers plus Host and
    X-Forwarded-*; and the body's framing (its length, ``NO_BODY`` or ``CHUNKED``)."""
    # The head's bytes are gathered in the one pass over the headers: a list of header tuples,
    # then the head from it in a second pass, cost 3 % more of the proxy's instructions.
    parts = [request_line, b"host: ", host, b"\r\n"]
    connection: list[bytes] = []
    forwarded_for = proto = forwarded_host = original_host = length = None
    chunked = False
    for item in scope["headers"]:
        name = item[0]
        if name not in _REQUEST_SPECIAL:
            parts += (name, b": ", item[1], b"\r\n")
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
            connection.append(value)
    # Rare: the client named headers of its own as hop-by-hop; they stop here too.
    named = connection_tokens(connection) - _NOT_OWN if connection else None
    if named:
        parts = parts[:4]
        for name, value in scope["headers"]:
            if name not in _REQUEST_SPECIAL and name not in named:
                parts += (name, b": ", value, b"\r\n")
    client = scope.get("client")
    if client:
        address = client[0].encode("ascii")
        forwarded_for = address if forwarded_for is None else forwarded_for + b", " + address
    if forwarded_for is not None:
        parts += (b"x-forwarded-for: ", forwarded_for, b"\r\n")
    # A proxy in front of this one knows the original scheme and host better.
    parts += (b"x-forwarded-proto: ", proto or scope["scheme"].encode("ascii"), b"\r\n")
    if forwarded_host or original_host:
        parts += (b"x-forwarded-host: ", forwarded_host or original_host, b"\r\n")  # type: ignore[list-item]
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
        return b"".join(parts), CHUNKED
    if length is not None:
        parts += (b"content-length: ", length, b"\r\n\r\n")
        return b"".join(parts), int(length) or NO_BODY
    parts.append(b"\r\n")
    return b"".join(parts), NO_BODY


def connection_tokens(values: list[bytes]) -> set[bytes]:
    """The header names that Connection headers with these ``values`` declare hop-by-hop."""
    return {token.strip().lower() for value in values for token in value.split(b",")}


def response_drop(status: int, chunked: bool, connection: list[bytes]) -> frozenset[bytes]:
    """The response headers that stop at the proxy: the hop-by-hop ones, those the Connection
    headers (``connection``, their values) name, and the length of a body framed again."""
    # uvicorn (or the direct path) would expect a body of the length a chunked one names
    drop = _HOP_AND_LENGTH if chunked or status in (204, 304) else _HOP_BY_HOP
    return drop | connection_tokens(connection) if connection else drop


def response_headers(
    headers: list[tuple[bytes, bytes]], status: int = 200
) -> list[tuple[bytes, bytes]]:
    """End-to-end response headers; uvicorn frames the body again itself."""
    connection = [value for name, value in headers if name == b"connection"]
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    drop = response_drop(status, chunked, connection)
    return [item for item in headers if item[0] not in drop]
