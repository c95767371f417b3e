"""Hostile input end to end: names and values from strangers, floods of keys, huge bodies, and
clients that trickle, stall or stop reading.

Everything runs through real servers on 127.0.0.1: the model app with MonitorMiddleware in
uvicorn, and the sidecar in front of the test model server (tests/reliability/conftest.py). The
log store is read back through GET /export/TABLE.parquet, as an operator would while it runs.

``INFERWATCH_RELIABILITY_FULL=1`` sends 1 GiB bodies instead of 200 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psutil
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from inferwatch import MonitorMiddleware
from inferwatch.middleware import Engine, Settings
from inferwatch.sidecar._client import TimedHttpProtocol
from inferwatch.sidecar._direct import DirectPath
from inferwatch.sidecar._proxy import Proxy
from inferwatch.sidecar._upstream import Upstream, UpstreamPool
from tests.conftest import free_port, uvicorn_process, wait_until
from tests.middleware.api.test_dashboard import browser, opened  # noqa: F401 - the fixture
from tests.reliability.conftest import ADMIN_TOKEN, App
from tests.sidecar.conftest import ModelServer, Sidecar

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
MIB = 2**20
FULL = os.environ.get("INFERWATCH_RELIABILITY_FULL") == "1"
HUGE = 1024 * MIB if FULL else 200 * MIB
LONG = "n" * 10_000
HOSTILE = {
    "a'; DROP TABLE requests;--": "x'); DELETE FROM features; --",
    '"': '"',
    "<script>alert(1)</script>": "<script>alert(2)</script>",
    "<img src=x onerror=alert(1)>": "<img src=x onerror=alert(3)>",
    "\\": "\\\\",
    LONG: "v" * 10_000,
}
STORED = {name[:256]: value[:1024] for name, value in HOSTILE.items()}  # the contract's cuts


def _monitor(form: str, request: pytest.FixtureRequest) -> tuple[str, str, int]:
    """(traffic URL, monitor API URL, pid) of the middleware app or the sidecar."""
    if form == "middleware":
        app: App = request.getfixturevalue("guarded_app")
        return app.url + "/predict", app.url + "/monitor", app.pid
    sidecar: Sidecar = request.getfixturevalue("guarded_sidecar")
    return sidecar.url + "/echo", sidecar.admin, sidecar.process.pid


def _export(api: str, table: str, where: str = "true") -> list[dict[str, Any]]:
    """Rows of a table of the running monitor's store, through GET /export/TABLE.parquet."""
    answer = httpx.get(f"{api}/export/{table}.parquet", headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    with tempfile.NamedTemporaryFile(suffix=".parquet") as handle:
        handle.write(answer.content)
        handle.flush()
        con = duckdb.connect()
        try:
            cursor = con.execute(f"SELECT * FROM read_parquet(?) WHERE {where}", [handle.name])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()


def _capture(api: str) -> dict[str, Any]:
    return httpx.get(api + "/health", timeout=30).json()["capture"]


def _send(api: str, requests: Iterator[tuple[str, dict[str, Any]]]) -> None:
    """POST each (URL, httpx keywords) and wait until the monitor has stored them all."""
    start, sent = _capture(api)["stored"], 0
    with httpx.Client(timeout=60) as client:
        for url, keywords in requests:
            assert client.post(url, **keywords).status_code == 200
            sent += 1
    wait_until(lambda: _capture(api)["stored"] >= start + sent, timeout=60)


def _stored(api: str, request_id: str) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return _export(api, "requests", f"request_id = '{request_id}'")

    return _wait_for(found)


def _wait_for(get: Any, timeout: float = 60.0) -> Any:
    """Poll ``get`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := get()):
        if time.monotonic() > deadline:
            pytest.fail("nothing came in time")
        time.sleep(0.05)
    return value


# ------------------------------------------------------------------ hostile names and values


@pytest.mark.parametrize("form", ["middleware", "sidecar"])
def test_hostile_names_are_stored_exactly_and_shown_as_text(
    form: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    traffic, api, _ = _monitor(form, request)
    rng, tag = random.Random(5), f"hostile-{form}"
    _send(
        api,
        (
            (traffic, {"json": {"amount": rng.gauss(50, 5), "channel": "web", **HOSTILE},
                       "headers": {"x-request-id": f"{tag}-{i}"}})
            for i in range(20)
        ),
    )  # fmt: skip

    # Stored byte for byte (cut where the contract cuts), and every table still there.
    features = _export(api, "features", f"request_id LIKE '{tag}-%' AND role = 'input'")
    names = {row["name"] for row in features}
    assert set(STORED) <= names, names
    values = {row["name"]: row["str"] for row in features if row["type"] == "string"}
    for name, value in STORED.items():
        assert values[name] == value
    for table in ("requests", "features", "efficiency", "resources"):
        httpx.get(f"{api}/export/{table}.parquet", headers=AUTH, timeout=60).raise_for_status()
    assert len(_export(api, "requests", f"request_id LIKE '{tag}-%'")) == 20

    # /drift names them as unexpected features, in JSON that reads back exactly.
    checked = httpx.post(api + "/drift/check", headers=AUTH, timeout=60)
    assert checked.status_code == 200 and checked.headers["content-type"] == "application/json"
    report = json.loads(checked.content)
    unexpected = {a["feature"] for a in report["schema_anomalies"]}
    assert set(STORED) <= unexpected, unexpected
    assert b'"feature":"\\""' in checked.content  # the quote is escaped, not closing the string
    assert json.loads(httpx.get(api + "/drift", headers=AUTH, timeout=30).content) == report

    # The dashboard shows them as text; nothing in them runs.
    chromium = request.getfixturevalue("browser")
    with opened(chromium, api + "/dashboard#token=" + ADMIN_TOKEN) as watched:
        page = watched.page
        watched.wait_refreshed()
        page.wait_for_selector("#anomalies tbody tr.anomaly")
        shown = page.locator("#anomalies tbody td.name").all_text_contents()
        assert set(STORED) <= set(shown), shown
        page.wait_for_timeout(300)  # time for an injected onerror to fire, had there been one
        assert page.locator("img").count() == 0
        assert page.locator("script").count() == 1  # the page's own
        assert watched.dialogs == [] and watched.errors == []
        page.screenshot(path=str(tmp_path / f"{form}-hostile.png"), full_page=True)


# ------------------------------------------------------------------ floods of keys


def _key(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        i, r = divmod(i, 36)
        text = digits[r] + text
        if not i:
            return "k" + text


@pytest.mark.parametrize("form", ["middleware", "sidecar"])
def test_100000_keys_are_capped_counted_and_memory_stays_bounded(
    form: str, request: pytest.FixtureRequest
) -> None:
    traffic, api, pid = _monitor(form, request)
    process = psutil.Process(pid)
    before, rss = _capture(api), process.memory_info().rss
    one = "{" + ",".join(f'"{_key(i)}":0' for i in range(100_000)) + "}"
    assert len(one) < MIB  # under max_body_bytes: it is parsed, not skipped
    tag = f"flood-{form}"
    headers = {"content-type": "application/json", "x-request-id": f"{tag}-one"}
    # ... and 100,000 more distinct names across 10 requests of 10 instances of 1,000 keys
    batches = (
        {"instances": [{f"{tag}-{b}-{r}-{i}": i for i in range(1000)} for r in range(10)]}
        for b in range(10)
    )
    _send(
        api,
        iter([(traffic, {"content": one, "headers": headers}),
              *((traffic, {"json": batch}) for batch in batches)]),
    )  # fmt: skip

    after = _capture(api)
    assert after["fields_capped"] - before["fields_capped"] >= 99_000  # one body: 1,000 kept
    assert after["names_capped"] - before["names_capped"] >= 99_000  # names beyond max_features
    kept = _export(api, "features", f"request_id = '{tag}-one' AND role = 'input'")
    assert 0 < len(kept) <= 1000
    names = _export(api, "features", "role = 'input'")
    assert len({row["name"] for row in names}) <= 1000  # max_features
    growth = process.memory_info().rss - rss
    assert growth < 128 * MIB, f"RSS grew by {growth / MIB:.0f} MiB"


# ------------------------------------------------------------------ huge bodies


class _Upload:
    """A model route that reads a body of any size chunk by chunk: its size and digest."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        digest, size, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            digest.update(chunk)
            more = message.get("more_body", False)
        body = json.dumps({"bytes": size, "sha256": digest.hexdigest()}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


upload_app = MonitorMiddleware(_Upload())
"""``python -m uvicorn tests.reliability.test_hostile_input:upload_app`` (settings from env)."""


class PeakRss:
    """Samples a process' RSS in a thread while a block runs; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _stream_huge(url: str, request_id: str) -> dict[str, Any]:
    block = random.Random(11).randbytes(MIB)
    digest = hashlib.sha256()
    for _ in range(HUGE // MIB):
        digest.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(HUGE // MIB):
            yield block

    with httpx.Client(timeout=600) as client:
        answer = client.post(url, content=body(), headers={"x-request-id": request_id})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"bytes": HUGE, "sha256": digest.hexdigest()}  # every byte arrived
    return answer.json()


@pytest.fixture(scope="module")
def upload_monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    folder = tmp_path_factory.mktemp("upload")
    env = {"INFERWATCH_DB": str(folder / "u.duckdb"), "INFERWATCH_ADMIN_TOKEN": ADMIN_TOKEN}
    target = "tests.reliability.test_hostile_input:upload_app"
    with uvicorn_process(target, env=env) as (process, url):
        yield App(url, process.pid)


def test_a_huge_body_streams_through_the_sidecar_with_flat_memory(
    guarded_sidecar: Sidecar,
) -> None:
    with PeakRss(guarded_sidecar.process.pid) as rss:
        _stream_huge(guarded_sidecar.url + "/upload", "huge-sidecar")
    (row,) = _stored(guarded_sidecar.admin, "huge-sidecar")
    assert row["request_bytes"] == HUGE and row["input_status"] == "too_large"
    assert rss.growth < 64 * MIB, f"sidecar RSS grew by {rss.growth / MIB:.0f} MiB"


def test_a_huge_body_streams_through_the_middleware_with_flat_memory(
    upload_monitor: App,
) -> None:
    with PeakRss(upload_monitor.pid) as rss:
        _stream_huge(upload_monitor.url + "/upload", "huge-middleware")
    (row,) = _stored(upload_monitor.url + "/monitor", "huge-middleware")
    assert row["request_bytes"] == HUGE and row["input_status"] == "too_large"
    assert rss.growth < 64 * MIB, f"app RSS grew by {rss.growth / MIB:.0f} MiB"


# ------------------------------------------------------------------ slow clients


def _established(pid: int, port: int) -> int:
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in connections if c.laddr.port == port and c.status == "ESTABLISHED")


def _own_fds(sidecar: Sidecar) -> int:
    """The sidecar's open fds less its upstream connections (idle ones close on their own)."""
    connections = httpx.get(sidecar.admin + "/health", timeout=30).json()["upstream"]["connections"]
    return psutil.Process(sidecar.process.pid).num_fds() - connections["open"]


def _trickle(port: int, head: bytes, body: bytes, answers: list[bytes]) -> None:
    """Send the head and then the body one byte per 100 ms; keep the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for byte in head + body:
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    answers.append(answer)


def test_tricklers_get_their_answer_while_others_are_served(
    guarded_sidecar: Sidecar,
) -> None:
    pid, port = guarded_sidecar.process.pid, guarded_sidecar.port
    fds = _own_fds(guarded_sidecar)
    head = b"POST /upload HTTP/1.0\r\nContent-Length: 5\r\n\r\n"  # 1.0: closed after
    answers: list[bytes] = []
    tricklers = [
        threading.Thread(target=_trickle, args=(port, head, b"hello", answers)) for _ in range(20)
    ]
    for thread in tricklers:
        thread.start()
    served = 0
    with httpx.Client(base_url=guarded_sidecar.url, timeout=30) as client:
        while any(t.is_alive() for t in tricklers):  # others are served all along
            assert client.post("/upload", content=b"x" * 1000).json()["bytes"] == 1000
            served += 1
    for thread in tricklers:
        thread.join()
    assert served > 20
    assert len(answers) == 20
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["bytes"] == 5
    wait_until(lambda: _established(pid, port) == 0)
    wait_until(lambda: _own_fds(guarded_sidecar) <= fds)


@pytest.fixture(params=["asgi", "direct"])
def short_timeouts(
    request: pytest.FixtureRequest, guarded_upstream: ModelServer
) -> Iterator[tuple[int, UpstreamPool]]:
    """The sidecar's proxy and protocol in-process, with 1 s client timeouts and a 1 KiB head:
    through the ASGI cycle, or monitored on the direct path as the sidecar runs it."""
    pool = UpstreamPool(Upstream.parse(guarded_upstream.url), limit=4)
    proxy = Proxy(pool)
    engine = Engine(Settings.load({"db": ":memory:"}))
    engine.start()
    monitor = MonitorMiddleware(proxy, engine=engine, serve_api=False)

    class Quick(TimedHttpProtocol):
        timeout = 1.0
        max_head = 1024
        direct = DirectPath(monitor, proxy) if request.param == "direct" else None

    port = free_port()
    config = uvicorn.Config(
        monitor,
        host="127.0.0.1",
        port=port,
        http=Quick,
        lifespan="off",
        log_level="error",
        server_header=False,  # as the sidecar's proxy: the upstream's pass through
        date_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    yield port, pool
    server.should_exit = True
    thread.join(30)
    engine.stop()


def _answer_of(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_stalled_clients_time_out_and_free_what_they_held(
    short_timeouts: tuple[int, UpstreamPool],
) -> None:
    port, pool = short_timeouts
    fds = psutil.Process().num_fds()
    stalls = {
        "silent": b"",
        "half a head": b"POST /upload HTTP/1.1\r\nContent-Le",
        "half a body": b"POST /upload HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789",
        "half a chunked body": b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhel",
    }
    socks = {}
    for name, data in stalls.items():
        socks[name] = socket.create_connection(("127.0.0.1", port))
        socks[name].sendall(data)
    # Meanwhile another client is served.
    assert httpx.post(f"http://127.0.0.1:{port}/upload", content=b"ok").json()["bytes"] == 2
    for name, sock in socks.items():
        answer = _answer_of(sock)  # the server closes the connection
        assert answer.startswith(b"HTTP/1.1 408 "), (name, answer)
        assert b"connection: close" in answer
        sock.close()
    wait_until(lambda: pool.count - pool.idle == 0)  # no upstream connection left held
    wait_until(lambda: psutil.Process().num_fds() <= fds + pool.idle)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n",
        b"GET /echo HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100_000)) + b"\r\n",
    ],
    ids=["one 1 MiB header", "100,000 headers"],
)
def test_a_head_over_the_limit_is_refused(
    short_timeouts: tuple[int, UpstreamPool], guarded_sidecar: Sidecar, head: bytes
) -> None:
    """Found here: the sidecar buffered a head of any size (a 200 MiB header: +360 MiB RSS)."""
    port, pool = short_timeouts
    process = psutil.Process(guarded_sidecar.process.pid)
    rss = process.memory_info().rss
    for where in (port, guarded_sidecar.port):  # 1 KiB here, the default 64 KiB in the sidecar
        with socket.create_connection(("127.0.0.1", where)) as sock:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(head)
            assert _answer_of(sock).startswith(b"HTTP/1.1 431 ")
    assert process.memory_info().rss - rss < 16 * MIB
    assert pool.opened == 0  # nothing went upstream


def test_a_client_that_stops_reading_is_let_go(short_timeouts: tuple[int, UpstreamPool]) -> None:
    port, pool = short_timeouts
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /download?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 * MIB))
    # It reads nothing; the sidecar's buffers fill, it stops reading the upstream, then gives up.
    wait_until(lambda: pool.opened == 1 and pool.count - pool.idle == 0, timeout=60)
    sock.settimeout(30)
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(MIB):
            received += len(chunk)
    assert received < 64 * MIB  # cut off, not delivered
    sock.close()
