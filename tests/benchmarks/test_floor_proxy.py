"""The benchmark's ``floor`` proxy forwards for real: a floor that skipped work would flatter it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, uvicorn_process

FLOOR = Path(__file__).resolve().parents[2] / "benchmarks" / "_lib" / "floor_proxy.py"


@pytest.fixture
def floor() -> Iterator[str]:
    with uvicorn_process(
        "tests.apps.model_app:app", env={"MODEL_APP_BARE": "1"}, ready_path="/echo"
    ) as (_, upstream):
        port = free_port()
        proxy = subprocess.Popen([sys.executable, str(FLOOR), str(port), upstream])
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proxy.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the floor proxy did not start") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proxy.terminate()
            proxy.wait(10)


def test_the_floor_proxy_forwards_requests_and_streams_answers(floor: str) -> None:
    with (
        httpx.Client(base_url=floor, timeout=10) as client,
        httpx.Client(base_url=floor, timeout=10) as other,
    ):
        for i in range(3):  # one kept connection, request after request
            body = b'{"instances": [{"x": %d}]}' % i
            answer = client.post("/echo", content=body, headers={"content-type": "text/x-a"})
            assert answer.status_code == 200
            assert answer.content == body and answer.headers["content-type"].startswith("text/x-a")
        assert client.post("/score", json={}).status_code == 404
        with client.stream("GET", "/stream") as stream:
            assert stream.headers["transfer-encoding"] == "chunked"
            chunks = stream.iter_raw()
            assert next(chunks) == b"first;"
            assert other.post("/release").json() == {"released": True}
            assert b"".join(chunks) == b"second;third"
