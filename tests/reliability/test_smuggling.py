"""Request smuggling through the sidecar, over raw sockets.

Each payload tries to make the sidecar and the model server disagree about where a request
ends, so that bytes the sidecar took for a body reach the model as a second request of their own.
The sidecar must refuse every ambiguous framing with 400 and close the connection, or, where
RFC 9112 gives the message one meaning, forward that one meaning, framed again by itself. Two
upstreams watch: the test model server (``ModelServer.seen()``: never a ``/smuggled`` request)
and a raw recorder that keeps every byte the sidecar sends, parsed strictly.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sidecar.conftest import ModelServer, Sidecar, sidecar_process

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: x\r\n"

# Ambiguous or malformed framing: 400, the connection closed, nothing reaches the model.
REFUSED = {
    "CL.TE": POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.CL": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    b"%x\r\n" % (len(SMUGGLED) + 1) + b"G" + SMUGGLED + b"\r\n0\r\n\r\n",
    "two different Content-Length": POST
    + b"Content-Length: 5\r\nContent-Length: %d\r\n\r\n" % (5 + len(SMUGGLED))
    + b"hello"
    + SMUGGLED,
    "two equal Content-Length": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "Content-Length list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "chunked, identity": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "two Transfer-Encoding": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"
    b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "unknown coding and CL": POST + b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n"
    b"hello" + SMUGGLED,
    "space before colon": POST + b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "obs-fold Transfer-Encoding": POST + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5"
    b"\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "obs-fold header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    "obs-fold injecting a header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n"
    b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "bare CR in a value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 35\r\n\r\n"
    + SMUGGLED,
    "bare LF in a value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\nContent-Length: 35\r\n\r\n"
    + SMUGGLED,
    "NUL in a value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED,
    "plus-signed Content-Length": POST + b"Content-Length: +5\r\n\r\nhello" + SMUGGLED,
    "negative Content-Length": POST + b"Content-Length: -1\r\n\r\n" + SMUGGLED,
    "overflowing Content-Length": POST + b"Content-Length: 99999999999999999999999\r\n\r\nx",
    "overflowing chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "bare LF line ends": b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello" + SMUGGLED,
    "bare LF chunk lines": POST + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n" + SMUGGLED,
    "space in a header name": b"GET /echo HTTP/1.1\r\nHost: x\r\nContent Length: 35\r\n\r\n"
    + SMUGGLED,
}

# Framing RFC 9112 gives one meaning: forwarded once, framed again, never as two requests.
ACCEPTED = {
    # The final coding is chunked, which frames the body; "identity" means nothing.
    "identity, chunked": (
        POST + b"Transfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"hello",
    ),
    "tab before the value": (
        POST + b"Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"hello",
    ),
    "chunk extensions": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n2;a=b\r\nhe\r\n3;x\r\nllo\r\n0\r\n\r\n",
        b"hello",
    ),
    # A request in the body is data: one request reaches the model, with that body.
    "request-shaped body": (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
        SMUGGLED,
    ),
}
# RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; the connection must close after.
HTTP10_CHUNKED = (
    b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
)


def exchange(
    port: int, data: bytes, *, responses: int = 1, closes: bool = False, timeout: float = 15.0
) -> tuple[bytes, bool]:
    """Send ``data``; read ``responses`` answers (and, if ``closes``, on to the end).

    Returns what was read and whether the server closed the connection.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while closes or _complete(answer) < responses:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return answer, False
            except ConnectionResetError:
                return answer, True
            if not chunk:
                return answer, True
            answer += chunk
        return answer, False


def _complete(answer: bytes) -> int:
    """How many whole responses ``answer`` holds (each framed by its Content-Length)."""
    count = 0
    while b"\r\n\r\n" in answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None or len(rest) < int(length.group(1)):
            break
        count += 1
        answer = rest[int(length.group(1)) :]
    return count


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer`` (a pipelined one follows a body directly)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


# ------------------------------------------------------------------ a raw recording upstream


@dataclass
class Forwarded:
    """One request as the upstream received it: the head's lines and the decoded body."""

    request_line: bytes
    headers: list[bytes]
    body: bytes
    framing: list[bytes] = field(default_factory=list)


class RecordingUpstream:
    """An HTTP/1.1 server on a raw socket that parses strictly and keeps what it received.

    Anything it cannot parse unambiguously is recorded as an error rather than guessed at.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[Forwarded] = []
        self.errors: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forwarded(self) -> list[Forwarded]:
        return [r for r in self.requests if not r.request_line.startswith(b"GET /health ")]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()

        def need(n: int) -> bool:
            while len(buffer) < n:
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                buffer.extend(chunk)
            return True

        def line() -> bytes | None:
            while b"\r\n" not in buffer:
                if not need(len(buffer) + 1):
                    return None
            end = buffer.index(b"\r\n")
            text = bytes(buffer[:end])
            del buffer[: end + 2]
            return text

        with conn:
            try:
                while (request_line := line()) is not None:
                    headers = []
                    while (header := line()) not in (b"", None):
                        headers.append(header)
                    self._read(request_line, headers, line, need, buffer)
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            except (OSError, ValueError) as exc:
                self.errors.append(repr(exc))

    def _read(
        self,
        request_line: bytes,
        headers: list[bytes],
        line: Callable[[], bytes | None],
        need: Callable[[int], bool],
        buffer: bytearray,
    ) -> None:
        names = [h.split(b":", 1)[0].lower() for h in headers]
        framing = [
            h
            for h, n in zip(headers, names, strict=True)
            if n in (b"content-length", b"transfer-encoding")
        ]
        bad = [
            h
            for h in headers
            if h[:1] in (b" ", b"\t") or b"\r" in h or b"\n" in h or b":" not in h
        ]
        if len(framing) > 1 or bad:
            self.errors.append(f"ambiguous head: {headers!r}")
        body = b""
        if framing and framing[0].lower().startswith(b"transfer-encoding:"):
            if framing[0].split(b":", 1)[1].strip().lower() != b"chunked":
                self.errors.append(f"coding {framing[0]!r}")
            while True:
                size_line = line()
                if size_line is None or not size_line or b";" in size_line:
                    raise ValueError(f"bad chunk size line {size_line!r}")
                size = int(size_line, 16)
                if not need(size + 2) or buffer[size : size + 2] != b"\r\n":
                    raise ValueError("bad chunk")
                body += bytes(buffer[:size])
                del buffer[: size + 2]
                if size == 0:
                    break
        elif framing:
            size = int(framing[0].split(b":", 1)[1])
            if not need(size):
                raise ValueError("short body")
            body = bytes(buffer[:size])
            del buffer[:size]
        self.requests.append(Forwarded(request_line, headers, body, framing))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def recorded_sidecar(
    recorder: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    folder: Path = tmp_path_factory.mktemp("smuggling")
    with sidecar_process(recorder.url, folder) as running:
        yield running


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("payload", REFUSED.values(), ids=REFUSED.keys())
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    payload: bytes,
    guarded_sidecar: Sidecar,
    guarded_upstream: ModelServer,
    recorded_sidecar: Sidecar,
    recorder: RecordingUpstream,
) -> None:
    seen, forwarded = len(guarded_upstream.seen()), len(recorder.forwarded())
    for sidecar in (guarded_sidecar, recorded_sidecar):
        answer, closed = exchange(sidecar.port, payload, closes=True)
        assert statuses(answer) == [400], answer[:300]
        assert closed, "the connection must not be reused after a framing error"
    assert guarded_upstream.seen()[seen:] == []
    assert recorder.forwarded()[forwarded:] == [] and recorder.errors == []


@pytest.mark.parametrize(("payload", "body"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_unambiguous_framing_is_forwarded_once_and_framed_again(
    payload: bytes,
    body: bytes,
    guarded_sidecar: Sidecar,
    guarded_upstream: ModelServer,
    recorded_sidecar: Sidecar,
    recorder: RecordingUpstream,
) -> None:
    seen = len(guarded_upstream.seen())
    answer, _ = exchange(guarded_sidecar.port, payload)
    assert statuses(answer) == [200] and answer.endswith(b"\r\n\r\n" + body), answer[:300]
    assert [r["path"] for r in guarded_upstream.seen()[seen:]] == ["/echo"]

    forwarded = len(recorder.forwarded())
    answer, _ = exchange(recorded_sidecar.port, payload)
    assert statuses(answer) == [200]
    (request,) = recorder.forwarded()[forwarded:]
    assert request.request_line.startswith(b"POST /echo " if payload[:4] == b"POST" else b"GET ")
    assert request.body == body
    assert len(request.framing) == 1  # one framing header: chunked or a length, never both
    assert request.framing[0].lower() in (
        b"transfer-encoding: chunked",
        b"content-length: %d" % len(body),
    )
    assert recorder.errors == []


def test_transfer_encoding_in_http_10_is_answered_then_the_connection_closed(
    recorded_sidecar: Sidecar, recorder: RecordingUpstream
) -> None:
    forwarded = len(recorder.forwarded())
    answer, closed = exchange(recorded_sidecar.port, HTTP10_CHUNKED + SMUGGLED, closes=True)
    assert statuses(answer) == [200] and closed
    (request,) = recorder.forwarded()[forwarded:]
    assert request.body == b"hello" and recorder.errors == []


def test_a_framing_header_in_the_trailer_never_becomes_a_second_request(
    guarded_sidecar: Sidecar, guarded_upstream: ModelServer
) -> None:
    """The sidecar starts forwarding before the trailer arrives; then it is refused whole."""
    seen = len(guarded_upstream.seen())
    payload = (
        POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"
    )
    answer, closed = exchange(guarded_sidecar.port, payload + SMUGGLED, closes=True)
    assert 400 in statuses(answer) and closed
    assert "/smuggled" not in [r["path"] for r in guarded_upstream.seen()[seen:]]


def test_pipelined_requests_stay_two_requests_in_order(
    recorded_sidecar: Sidecar, recorder: RecordingUpstream
) -> None:
    forwarded = len(recorder.forwarded())
    first = POST + b"Content-Length: 5\r\n\r\nhello"
    second = b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer, closed = exchange(recorded_sidecar.port, first + second, closes=True)
    assert statuses(answer) == [200, 200] and closed
    lines = [r.request_line for r in recorder.forwarded()[forwarded:]]
    assert lines == [b"POST /echo HTTP/1.1", b"GET /second HTTP/1.1"]
    assert recorder.errors == []
