"""Upstreams that answer in unusual but legal ways, or not in HTTP at all, over a raw socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sidecar.conftest import sidecar_process

ANSWERS = {
    # A body delimited by the end of the connection (no Content-Length, not chunked).
    b"/until-close": b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nread to the end",
    # An interim 103 Early Hints before the real response.
    b"/interim": b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    b"/garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"/silence": b"",  # reads the request, then closes without a word
    b"/chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    # Headers that stop at the proxy: those the Connection header names, Keep-Alive, and an
    # X-Request-ID other than the request's.
    b"/named": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close, X-Hop\r\n"
    b"X-Hop: secret\r\nkeep-alive: timeout=5\r\nx-request-id: upstream-own\r\n"
    b"Content-Type: text/plain\r\nx-end: 1\r\n\r\nok",
    # Both framings at once is how responses get smuggled; httptools refuses it.
    b"/smuggle": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
}


class ScriptedUpstream:
    """Answers each request with the bytes ANSWERS holds for its path, then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                path = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b""
                conn.sendall(ANSWERS.get(path, b"HTTP/1.1 404 Not Found\r\n\r\n"))


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    yield upstream
    upstream.sock.close()


def test_unusual_answers(scripted: ScriptedUpstream, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{scripted.port}"
    with sidecar_process(url, tmp_path) as sidecar, httpx.Client(base_url=sidecar.url) as client:
        until_close = client.get("/until-close", timeout=10)
        assert until_close.status_code == 200 and until_close.text == "read to the end"
        interim = client.get("/interim", timeout=10)
        assert interim.status_code == 200 and interim.text == "ok"
        named = client.get("/named", headers={"x-request-id": "mine-1"}, timeout=10)
        assert named.text == "ok" and named.headers["content-type"] == "text/plain"
        assert named.headers["x-end"] == "1" and named.headers["x-request-id"] == "mine-1"
        assert "x-hop" not in named.headers and "keep-alive" not in named.headers
        assert named.headers.get_list("x-request-id") == ["mine-1"]
        chunked = client.get("/chunked", timeout=10)
        assert chunked.text == "abcde" and chunked.headers["transfer-encoding"] == "chunked"
        assert client.get("/smuggle", timeout=10).status_code == 502
        garbage = client.get("/garbage", timeout=10)
        assert garbage.status_code == 502
        assert garbage.json()["error"].startswith("invalid upstream response:")
        silence = client.get("/silence", timeout=10)
        assert silence.status_code == 502
        assert silence.json()["error"] == (
            "upstream closed the connection: the upstream closed the connection before responding"
        )
        errors = client.get(sidecar.admin + "/health", timeout=5).json()["upstream"]["errors"]
        assert errors == {"unreachable": 0, "timeout": 0, "closed": 1, "protocol": 2}
