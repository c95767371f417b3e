"""The floor middleware does what the benchmarks say it does: it times every request of the real
model app and writes one record each, in batches."""

from __future__ import annotations

import asyncio
import os

import pytest

from benchmarks._lib.asgi import asgi_request
from benchmarks._lib.floor_middleware import BATCH, RECORD, FloorMiddleware
from benchmarks._lib.records import make_bodies
from benchmarks.collector_overhead import create_app


def test_every_request_is_timed_and_written_once_a_batch_is_full() -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    app = FloorMiddleware(create_app("model", "bare"), out=write)
    body = make_bodies(1, 1)[0]

    async def requests(count: int, path: str) -> list[int]:
        return [await asgi_request(app, "POST", path, body) for _ in range(count)]

    try:
        statuses = asyncio.run(requests(BATCH - 2, "/predict"))
        assert statuses == [200] * (BATCH - 2)
        with pytest.raises(BlockingIOError):  # nothing written before the batch is full
            os.read(read, 65_536)
        assert asyncio.run(requests(2, "/nowhere")) == [404, 404]
        data = os.read(read, 65_536)
    finally:
        os.close(read)
        os.close(write)
    records = [RECORD.unpack_from(data, i * RECORD.size) for i in range(BATCH)]
    assert len(data) == BATCH * RECORD.size
    assert [status for _, status in records] == [200] * (BATCH - 2) + [404, 404]
    assert all(0 < latency < 5 for latency, _ in records)
