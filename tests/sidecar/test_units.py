"""The proxy's pure parts: the upstream URL, the request target and the forwarded headers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferwatch.sidecar._headers import request_head, response_headers, upstream_target
from inferwatch.sidecar._upstream import CHUNKED, NO_BODY, Upstream


@pytest.mark.parametrize(
    ("url", "host", "port", "base", "host_header"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1", 8080, b"", b"127.0.0.1:8080"),
        ("http://model/", "model", 80, b"", b"model"),
        ("https://model.svc:8443/api/v1/", "model.svc", 8443, b"/api/v1", b"model.svc:8443"),
        ("http://[::1]:9000", "::1", 9000, b"", b"[::1]:9000"),
    ],
)
def test_upstream_url(url: str, host: str, port: int, base: bytes, host_header: bytes) -> None:
    upstream = Upstream.parse(url)
    assert (upstream.host, upstream.port, upstream.base_path) == (host, port, base)
    assert upstream.host_header == host_header


@pytest.mark.parametrize(
    "url",
    ["ftp://model", "model:8080", "http://", "http://u:p@model", "http://m/?q=1", "http://m:x"],
)
def test_bad_upstream_url(url: str) -> None:
    with pytest.raises(ValueError):
        Upstream.parse(url)


UPSTREAM = Upstream.parse("http://127.0.0.1:9000/base")


def _scope(path: str, raw: bytes | None = None, query: bytes = b"", **extra: Any) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": raw if raw is not None else path.encode(),
        "query_string": query,
        "headers": extra.get("headers", []),
        "scheme": "http",
        "client": ("10.0.0.7", 5555),
    }


@pytest.mark.parametrize(
    ("path", "raw", "query", "target"),
    [
        ("/v1/models/m:predict", None, b"", b"/base/v1/models/m:predict"),
        ("/a b", b"/a%20b", b"x=1&y=2", b"/base/a%20b?x=1&y=2"),
        ("/m/a/b", b"/m/a%2Fb", b"", b"/base/m/a%2Fb"),
        ("//evil.example/x", None, b"", b"/base/evil.example/x"),
        ("/file.json", None, b"", b"/base/file.json"),
        ("/.well-known/x", None, b"", b"/base/.well-known/x"),
        ("/../etc/passwd", None, b"", None),
        ("/a/../../b", None, b"", None),
        ("/a/./b", None, b"", None),
        ("/..", None, b"", None),
        ("/../x", b"/%2e%2e/x", b"", None),
        ("/a/..\\b", b"/a/..%5cb", b"", None),
        ("/..;/admin", None, b"", None),
    ],
)
def test_target_stays_under_the_upstream(
    path: str, raw: bytes | None, query: bytes, target: bytes | None
) -> None:
    assert upstream_target(_scope(path, raw, query), UPSTREAM.base_path) == target


def _sent(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], int]:
    """The headers of the head sent upstream, read back, and the body's framing."""
    head, body = request_head(
        _scope("/", headers=headers), UPSTREAM.host_header, b"GET / HTTP/1.1\r\n"
    )
    line, _, rest = head.partition(b"\r\n")
    assert line == b"GET / HTTP/1.1"
    assert rest.endswith(b"\r\n\r\n") and rest.count(b"\r\n\r\n") == 1
    pairs = [tuple(item.split(b": ", 1)) for item in rest[:-4].split(b"\r\n")]
    return pairs, body  # type: ignore[return-value]


def test_request_head() -> None:
    headers = [
        (b"host", b"public.example"),
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"secret"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"proxy-authorization", b"Basic abc"),
        (b"upgrade", b"websocket"),
        (b"expect", b"100-continue"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"authorization", b"Bearer t"),
    ]
    out, body = _sent(headers)
    names = [name for name, _ in out]
    assert out[0] == (b"host", b"127.0.0.1:9000")
    assert names.count(b"host") == 1
    for gone in (b"connection", b"x-private", b"keep-alive", b"te", b"proxy-authorization",
                 b"upgrade", b"expect"):  # fmt: skip
        assert gone not in names
    found = dict(out)
    assert found[b"x-forwarded-for"] == b"1.2.3.4, 10.0.0.7"
    assert found[b"x-forwarded-proto"] == b"http"
    assert found[b"x-forwarded-host"] == b"public.example"
    assert found[b"authorization"] == b"Bearer t"
    assert found[b"content-length"] == b"12"
    assert body == 12
    # Without a Connection header, every end-to-end header goes, in the client's order.
    plain = [(b"accept", b"*/*"), (b"x-a", b"1"), (b"x-b", b"2")]
    out, body = _sent(plain)
    assert out[1:4] == plain
    assert body == NO_BODY
    out, _ = _sent([(b"connection", b"close"), *plain, (b"connection", b"X-B")])
    assert out[1:3] == plain[:2] and b"connection" not in dict(out) and b"x-b" not in dict(out)


def test_chunked_request_and_no_body() -> None:
    out, body = _sent([(b"transfer-encoding", b"chunked"), (b"content-length", b"5")])
    assert body == CHUNKED
    assert (b"transfer-encoding", b"chunked") in out
    assert b"content-length" not in dict(out)
    assert _sent([])[1] == NO_BODY


def test_response_headers_drop_hop_by_hop() -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"10"),
        (b"connection", b"x-hop"),
        (b"x-hop", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"x-end-to-end", b"kept"),
    ]
    assert response_headers(headers) == [
        (b"content-type", b"text/plain"),
        (b"content-length", b"10"),
        (b"x-end-to-end", b"kept"),
    ]
    chunked = [(b"transfer-encoding", b"chunked"), (b"content-length", b"3")]
    assert response_headers(chunked) == []
    assert response_headers([(b"content-length", b"3"), (b"etag", b"x")], 304) == [(b"etag", b"x")]


def test_the_sidecar_freezes_what_start_up_built() -> None:
    # In a child: freezing changes the whole process's collector, the test runner's included.
    script = (
        "import gc; from inferwatch.sidecar._serve import _settle_gc;"
        "before = gc.get_freeze_count();"
        "_settle_gc(); print(before, gc.get_freeze_count() > 10_000, *gc.get_threshold())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.split() == ["0", "True", "10000", "20", "20"]
