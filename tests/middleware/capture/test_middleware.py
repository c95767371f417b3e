from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import duckdb
import httpx
import pytest

from inferwatch import MonitorMiddleware
from inferwatch.middleware.capture.exchange import Exchange
from tests.apps.model_app import build_app
from tests.conftest import in_process, uvicorn_process, wait_collector_gone

pytestmark = pytest.mark.anyio


@pytest.fixture
async def monitored(db_path: str) -> AsyncIterator[Callable[..., Any]]:
    """Build a monitored test app; yields a factory of (client, middleware)."""
    made: list[tuple[httpx.AsyncClient, MonitorMiddleware]] = []

    def make(**settings: Any) -> tuple[httpx.AsyncClient, MonitorMiddleware]:
        middleware = in_process(build_app(monitor=False), db=db_path, **settings)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=middleware), base_url="http://model"
        )
        made.append((client, middleware))
        return client, middleware

    yield make
    for client, middleware in made:
        await client.aclose()
        middleware.engine.stop()


def stored(middleware: MonitorMiddleware, sql: str, params: list[Any] | None = None) -> list[Any]:
    assert middleware.engine.flush()
    store = middleware.engine.writer.store
    assert store is not None
    return store.query(sql, params)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"a": 1, "b": "x"}, [(0, "a", "number", 1.0, None), (0, "b", "string", None, "x")]),
        ({"user": {"age": 3}}, [(0, "user.age", "number", 3.0, None)]),
        ([{"a": 1}, {"a": 2}], [(0, "a", "number", 1.0, None), (1, "a", "number", 2.0, None)]),
        (
            {"instances": [{"a": True}, {"a": None}]},
            [(0, "a", "boolean", 1.0, None), (1, "a", "null", None, None)],
        ),
        (
            {"instances": [[1, "x"]]},
            [(0, "f0", "number", 1.0, None), (0, "f1", "string", None, "x")],
        ),
        ({"dataframe_records": [{"a": 1}]}, [(0, "a", "number", 1.0, None)]),
        (
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
            [
                (0, "a", "number", 1.0, None),
                (0, "b", "number", 2.0, None),
                (1, "a", "number", 3.0, None),
                (1, "b", "number", 4.0, None),
            ],
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            [
                (0, "x[0]", "number", 1.0, None),
                (0, "x[1]", "number", 2.0, None),
                (1, "x[0]", "number", 3.0, None),
                (1, "x[1]", "number", 4.0, None),
            ],
        ),
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [5, 6]}]},
            [(0, "x", "number", 5.0, None), (1, "x", "number", 6.0, None)],
        ),
    ],
)
async def test_payload_formats_become_feature_rows(
    monitored: Callable[..., Any], body: Any, expected: list[tuple[Any, ...]]
) -> None:
    client, middleware = monitored()
    response = await client.post("/echo", json=body)
    assert response.status_code == 200
    rows = stored(
        middleware,
        "SELECT row_index, name, type, num, str FROM features WHERE role = 'input' "
        "ORDER BY row_index, name",
    )
    assert rows == sorted(expected)
    request_id = response.headers["x-request-id"]
    assert stored(middleware, "SELECT DISTINCT request_id FROM features") == [(request_id,)]


async def test_predictions_are_kept_apart_from_inputs(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored()
    response = await client.post("/predict", json={"instances": [{"a": 1}, {"a": 2}, {"a": 3}]})
    assert response.json() == {"predictions": [0.5, 0.5, 0.5]}
    rows = stored(middleware, "SELECT role, row_index, name, num FROM features ORDER BY ALL")
    assert rows == [
        ("input", 0, "a", 1.0),
        ("input", 1, "a", 2.0),
        ("input", 2, "a", 3.0),
        ("output", 0, "prediction", 0.5),
        ("output", 1, "prediction", 0.5),
        ("output", 2, "prediction", 0.5),
    ]


async def test_openai_chat_request_and_response(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored()
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 9}
    await client.post("/v1/chat/completions", json=chat)
    rows = stored(middleware, "SELECT role, name, coalesce(str, num::VARCHAR) FROM features")
    assert sorted(rows) == [
        ("input", "max_tokens", "9.0"),
        ("input", "message_count", "1.0"),
        ("input", "model", "tiny"),
        ("input", "prompt_chars", "5.0"),
        ("output", "completion_chars", "8.0"),
        ("output", "completion_tokens", "2.0"),
        ("output", "finish_reason", "stop"),
        ("output", "prompt_tokens", "3.0"),
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"a": 1,', "application/json", "parse_error"),
        (b"plain words", "text/plain", "not_json"),
        (b"", "application/json", "empty"),
        (b"[" * 10_000 + b"]" * 10_000, "application/json", "parse_error"),
        (b'{"a": NaN, "b": Infinity}', "application/json", "ok"),
        (b"\xff\xfe\x00garbage", "application/octet-stream", "not_json"),
        (b"7", "application/json", "unknown_shape"),
    ],
)
async def test_odd_bodies_pass_through_untouched_and_are_counted(
    monitored: Callable[..., Any], body: bytes, content_type: str, status: str
) -> None:
    client, middleware = monitored()
    response = await client.post("/echo", content=body, headers={"content-type": content_type})
    assert response.status_code == 200
    assert response.content == body
    assert stored(middleware, "SELECT input_status FROM requests") == [(status,)]


async def test_non_finite_numbers_are_stored_as_numbers(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored()
    await client.post("/echo", content=b'{"a": NaN, "b": -Infinity, "c": 1}')
    rows = stored(
        middleware,
        "SELECT name, type, isnan(num), isinf(num) FROM features "
        "WHERE role = 'input' ORDER BY name",
    )
    assert rows == [
        ("a", "number", True, False),
        ("b", "number", False, True),
        ("c", "number", False, False),
    ]


async def test_oversized_bodies_pass_through_and_are_not_parsed(
    monitored: Callable[..., Any],
) -> None:
    client, middleware = monitored(max_body_bytes="1KiB")
    body = json.dumps({"a": "x" * 5000}).encode()
    response = await client.post("/echo", content=body)
    assert response.content == body
    rows = stored(
        middleware,
        "SELECT input_status, output_status, request_bytes, response_bytes FROM requests",
    )
    assert rows == [("too_large", "too_large", len(body), len(body))]
    assert stored(middleware, "SELECT count(*) FROM features") == [(0,)]


async def test_hostile_feature_names_are_stored_as_data(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored()
    names = ["a'; DROP TABLE features; --", '"quoted"', "<script>alert(1)</script>", "x" * 10_000]
    await client.post("/echo", json={name: 1 for name in names})
    rows = stored(middleware, "SELECT name FROM features WHERE role = 'input'")
    got = {row[0] for row in rows}
    assert set(names[:3]) <= got
    assert "x" * 256 in got  # long names are cut to max_name_length
    assert middleware.engine.counters.fields_capped >= 1
    assert stored(middleware, "SELECT count(*) FROM requests") == [(1,)]


async def test_distinct_names_and_fields_per_row_are_capped(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored(max_features=50, max_fields_per_row=200, max_body_bytes="4MiB")
    await client.post("/echo", json={f"k{i}": i for i in range(100_000)})
    assert stored(middleware, "SELECT count(DISTINCT name) FROM features WHERE role = 'input'") == [
        (50,)
    ]
    counters = middleware.engine.counters
    assert counters.fields_capped >= 100_000 - 200
    assert counters.names_capped >= 150


async def test_redacted_fields_are_never_stored(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored(redact="ssn,password")
    await client.post("/echo", json={"age": 3, "ssn": "123", "user": {"password": "pw", "id": 4}})
    names = {row[0] for row in stored(middleware, "SELECT name FROM features")}
    assert names == {"age", "user.id"}
    assert middleware.engine.counters.fields_redacted >= 2


async def test_request_id_is_propagated_or_made(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored()
    given = await client.post("/predict", json={"a": 1}, headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.post("/predict", json={"a": 1})
    assert len(made.headers["x-request-id"]) == 32
    hostile = await client.post("/predict", json={"a": 1}, headers={"x-request-id": "z" * 500})
    assert len(hostile.headers["x-request-id"]) == 32
    ids = {row[0] for row in stored(middleware, "SELECT request_id FROM requests")}
    assert ids == {"abc-123", made.headers["x-request-id"], hostile.headers["x-request-id"]}


async def test_route_templates_and_status_are_recorded(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored()
    for item in range(5):
        await client.post(f"/items/{item}/score")
    await client.post("/fail")
    await client.get("/nowhere")
    rows = stored(
        middleware, "SELECT route, status, count(*) FROM requests GROUP BY ALL ORDER BY 1"
    )
    assert rows == [("/fail", 503, 1), ("/items/{item_id}/score", 200, 5), ("<unmatched>", 404, 1)]


async def test_sampling_keeps_every_server_error(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored(sample_rate=0.0)
    for _ in range(20):
        await client.post("/predict", json={"a": 1})
    for _ in range(3):
        await client.post("/fail")
    with pytest.raises(RuntimeError):
        await client.post("/crash")
    rows = stored(middleware, "SELECT route, status, error FROM requests ORDER BY route")
    assert rows == [("/crash", 500, "RuntimeError")] + [("/fail", 503, None)] * 3
    assert middleware.engine.counters.sampled == 4


async def test_sample_rate_keeps_about_that_share(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored(sample_rate=0.3)
    for _ in range(400):
        await client.post("/predict", json={"a": 1})
    kept = stored(middleware, "SELECT count(*) FROM requests")[0][0]
    assert 60 <= kept <= 180  # binomial(400, 0.3): mean 120, sd 9.2; this is > 6 sd wide


async def test_full_queue_drops_and_counts(monitored: Callable[..., Any]) -> None:
    client, middleware = monitored(queue_size=5)
    engine = middleware.engine
    engine.start()
    engine.writer._stopping.set()  # stop the writer draining, so the queue fills
    engine.writer._wake.set()
    engine.writer._thread.join(5)
    for _ in range(12):
        response = await client.post("/predict", json={"a": 1})
        assert response.status_code == 200
    assert (engine.counters.sampled, engine.counters.dropped, len(engine.queue)) == (12, 7, 5)


async def test_streamed_response_reaches_the_client_chunk_by_chunk(db_path: str) -> None:
    middleware = in_process(build_app(monitor=False), db=db_path)
    first_chunk_seen = asyncio.Event()
    messages: list[dict[str, Any]] = []

    async def app_waits_for_client(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.wait_for(first_chunk_seen.wait(), 5)  # only the client can release this
        await send({"type": "http.response.body", "body": b"two", "more_body": False})

    middleware.app = app_waits_for_client

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message.get("body") == b"one":
            first_chunk_seen.set()

    scope = {"type": "http", "method": "GET", "path": "/s", "headers": [], "query_string": b""}
    await middleware(scope, receive, send)
    assert [m.get("body") for m in messages[1:]] == [b"one", b"two"]
    assert (b"x-request-id", messages[0]["headers"][0][1]) in messages[0]["headers"]
    rows = stored(middleware, "SELECT response_bytes, ttfb_ms <= latency_ms FROM requests")
    assert rows == [(6, True)]
    middleware.engine.stop()


async def test_app_lifespan_still_runs_and_engine_follows_it(db_path: str) -> None:
    events: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    middleware = in_process(app, db=db_path)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        running.append(middleware.engine.running)

    running: list[bool] = []
    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert running == [True, False]  # stopped (and flushed) before the server may exit


async def test_a_request_after_the_engine_stopped_passes_through(db_path: str) -> None:
    middleware = in_process(build_app(monitor=False), db=db_path)
    middleware.engine.start()
    middleware.engine.stop()  # as at lifespan shutdown: the engine does not start again
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        response = await client.post("/predict", json={"instances": [[1.0, 2.0]]})
    assert response.status_code == 200
    assert middleware.engine.counters.sampled == 0


async def test_websocket_scopes_pass_straight_through(db_path: str) -> None:
    seen: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    middleware = in_process(app, db=db_path)
    await middleware({"type": "websocket", "path": "/ws", "headers": []}, None, None)
    assert seen == ["websocket"]
    assert not middleware.engine.running


def test_broken_db_file_never_changes_responses(tmp_path: Any) -> None:
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a duckdb file" * 1000)
    env = {"INFERWATCH_DB": str(broken)}
    with uvicorn_process("tests.apps.model_app:app", env) as (_, url):
        for _ in range(5):
            response = httpx.post(url + "/predict", json={"instances": [{"a": 1}]})
            assert response.json() == {"predictions": [0.5]}
        ready = httpx.get(url + "/monitor/readyz")
        assert ready.status_code == 503
        assert "log store is unavailable" in ready.json()["reasons"][0]
        capture = httpx.get(url + "/monitor/health").json()["capture"]
        assert capture["sampled"] == 5
        assert capture["stored"] == 0
        assert capture["write_errors"] + capture["queue_depth"] == 5
        assert "Cannot open the log store" in capture["last_error"]


def test_store_locked_by_another_process_fails_open(db_path: str) -> None:
    holder = duckdb.connect(db_path)  # this process holds the file's lock
    try:
        with uvicorn_process("tests.apps.model_app:app", {"INFERWATCH_DB": db_path}) as (_, url):
            response = httpx.post(url + "/predict", json={"instances": [{"a": 1}]})
            assert response.json() == {"predictions": [0.5]}
            assert httpx.get(url + "/monitor/readyz").status_code == 503
    finally:
        holder.close()


def test_sigterm_under_load_loses_no_sampled_record(db_path: str) -> None:
    env = {
        "INFERWATCH_DB": db_path,
        "INFERWATCH_FLUSH_INTERVAL": "5s",
        "INFERWATCH_COLLECTOR_LINGER": "0.5s",
    }
    served: list[str] = []
    with uvicorn_process("tests.apps.model_app:app", env) as (process, url):
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url) as client:
                while not stop.is_set():
                    try:
                        response = client.post("/predict", json={"instances": [{"a": 1, "b": 2}]})
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        served.append(response.headers["x-request-id"])

        workers = [threading.Thread(target=load) for _ in range(8)]
        for worker in workers:
            worker.start()
        while len(served) < 300:
            threading.Event().wait(0.01)
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal for an honest exit status.
        assert process.wait(60) in (0, -signal.SIGTERM)
        stop.set()
        for worker in workers:
            worker.join()
    wait_collector_gone(db_path)
    with duckdb.connect(db_path, read_only=True) as con:
        stored_ids = {row[0] for row in con.execute("SELECT request_id FROM requests").fetchall()}
        rows = con.execute("SELECT count(*) FROM features WHERE role = 'input'").fetchone()[0]
    assert set(served) <= stored_ids
    assert rows == 2 * len(stored_ids)


def test_a_worker_imports_no_scipy() -> None:
    # Each worker imports the middleware; SciPy would add seconds to every worker's start, and
    # gunicorn's max_requests starts workers all the time. The collector imports it when it checks.
    code = "import sys, middleware; print(sorted(m for m in sys.modules if m.startswith('scipy')))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert found.stdout.strip() == "[]"


async def test_response_header_names_are_read_whatever_their_case(db_path: str) -> None:
    # ASGI asks for lowercase names; apps that send others still get one X-Request-ID, and their
    # error note is still read.
    middleware = in_process(build_app(monitor=False), db=db_path)
    body = b'data: {"predictions": [0.25, 0.75]}\n\n'

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [
            (b"X-Request-ID", b"the-app-s-own"),
            (b"Content-Type", b"text/event-stream"),
            (b"Content-Length", b"%d" % len(body)),
            (b"X-Inferwatch-Error", b"upstream_timeout: no answer in 1 s"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    middleware.app = app
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/predict", "query_string": b"",
        "headers": [(b"x-request-id", b"client-given")],
    }  # fmt: skip
    await middleware(scope, receive, send)
    names = [name.lower() for name, _ in messages[0]["headers"]]
    assert names.count(b"x-request-id") == 1
    assert (b"x-request-id", b"client-given") in messages[0]["headers"]
    rows = stored(middleware, "SELECT request_id, error FROM requests")
    assert rows == [("client-given", "upstream_timeout: no answer in 1 s")]
    middleware.engine.stop()


def test_the_capture_notes_the_content_type_whatever_the_name_s_case() -> None:
    records: list[tuple[Any, ...]] = []
    scope = {"type": "http", "method": "POST", "path": "/p", "headers": []}
    exchange = Exchange(
        scope, _nothing, _nothing, b"id-1", None, records.append, lambda s, st: "/p", 1.0, 1024
    )
    headers = [(b"CONTENT-TYPE", b"text/event-stream"), (b"Content-Length", b"2")]
    assert exchange.started(200, headers) == [*headers, (b"x-request-id", b"id-1")]
    exchange.gave(b"{}")
    exchange.record(None)
    (record,) = records
    assert (record[5], record[15], record[16]) == (200, "text/event-stream", None)


async def _nothing() -> None:
    raise AssertionError("not called")
