"""The hand-off's parts: where a store's collector lives, frames, and drops counted while the
collector is away and reported once it is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from middleware.collector import wire
from middleware.collector.paths import CollectorPaths
from tests.conftest import ROOT, uvicorn_process, wait_until


def test_sockets_sit_beside_the_store_unless_the_path_is_too_long(tmp_path: Path) -> None:
    short = CollectorPaths.for_db(str(tmp_path / "m.duckdb"))
    assert short.ingest == os.path.realpath(tmp_path / "m.duckdb") + ".sock"
    assert short.api.endswith("m.duckdb.api.sock")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    long = CollectorPaths.for_db(str(deep / "m.duckdb"))
    assert len(long.api.encode()) < 108 and not long.api.startswith(str(tmp_path))
    assert long == CollectorPaths.for_db(str(deep / "." / "m.duckdb"))  # same store, same names
    assert long.lock == os.path.realpath(deep / "m.duckdb") + ".collector.lock"


def test_frames_survive_any_split_of_the_stream() -> None:
    messages = [
        (wire.HELLO, 12, 34, (0, 0), [(1_700_000_000, {200: 3})]),
        (wire.BATCH, [("POST", "/p", 200, 0.01, None)], (1, 0, 0, 0), 0, 1),
        (wire.MARKER, 7),
    ]
    stream = b"".join(wire.encode(message) for message in messages)
    for step in (1, 3, 7, len(stream)):
        reader = wire.FrameReader()
        got = []
        for start in range(0, len(stream), step):
            got.extend(reader.feed(stream[start : start + step]))
        assert got == messages


def test_drops_while_the_collector_is_away_are_reported_once_it_is_back(tmp_path: Path) -> None:
    db = str(tmp_path / "m.duckdb")
    env = {
        "INFERWATCH_DB": db,
        "INFERWATCH_COLLECTOR_AUTOSTART": "false",
        "INFERWATCH_QUEUE_SIZE": "50",
    }
    with uvicorn_process("tests.apps.model_app:app", env=env) as (_, url):
        with httpx.Client(base_url=url) as client:
            for number in range(200):
                response = client.post("/predict", json={"instances": [{"a": number}]})
                assert response.status_code == 200  # no collector: traffic is untouched
            ready = client.get("/monitor/readyz")
            assert ready.status_code == 503 and "collector" in ready.json()["reasons"][0]
        collector = subprocess.Popen([sys.executable, "-m", "middleware.collector", "--db", db],
                                     cwd=ROOT)  # fmt: skip
        try:
            wait_until(lambda: httpx.get(url + "/monitor/readyz").status_code == 200)
            # The counts ride on the worker's next frame after it connects.
            wait_until(lambda: httpx.get(url + "/monitor/health").json()["capture"]["dropped"])
            health = httpx.get(url + "/monitor/health").json()
        finally:
            collector.send_signal(signal.SIGTERM)
            assert collector.wait(30) == 0
    capture = health["capture"]
    # The worker kept what fitted in 50 requests (whole frames of a few) and counted the rest.
    kept = health["requests"]["count"]
    assert 0 < kept <= 50
    assert (capture["sampled"], capture["stored"], capture["dropped"]) == (200, kept, 200 - kept)
    assert capture["requests_dropped"] == 200 - kept
