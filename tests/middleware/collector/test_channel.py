"""The hand-off's parts: where a store's collector lives, frames, and drops counted while the
collector is away and reported once it is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from inferwatch.middleware.collector import wire
from inferwatch.middleware.collector.paths import CollectorPaths
from inferwatch.middleware.collector.pod import PodEngine
from inferwatch.middleware.settings import Settings
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
        collector = subprocess.Popen(
            [sys.executable, "-m", "inferwatch.middleware.collector", "--db", db], cwd=ROOT
        )
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


def _capture(request_id: str) -> tuple[Any, ...]:
    body = (b'{"instances": [{"a": 1}]}',)
    return (time.time(), request_id, "POST", "/predict", "/predict", 200, 0.01, 0.005, body,
            len(body[0]), False, "application/json", (b'{"predictions": [1]}',), 20, False,
            "application/json", None)  # fmt: skip


def test_captures_sent_again_are_written_once(tmp_path: Path) -> None:
    """A batch sent again after a collector died: what the store holds already is counted, not
    written twice."""
    engine = PodEngine(Settings.load({"db": str(tmp_path / "m.duckdb"), "flush_interval": 0.05}))
    engine.start()
    try:
        state = engine.worker_joined(1, 2, (0, 0), [])
        engine.ingest(state, [_capture("written-1"), _capture("written-2")], (2, 2, 0, 0), 0)
        assert engine.write_through(10)
        again = [_capture("written-1"), ("POST", "/predict", 200, 0.02, None), _capture("new-1")]
        records = engine.not_yet_stored(again)
        # The stored capture is now its timing alone; the others are untouched.
        assert records == [("POST", "/predict", 200, 0.01, 0.005), again[1], again[2]]
        engine.ingest(state, records, (5, 3, 0, 0), 0)
        assert engine.write_through(10)
        ids = [row[0] for row in engine.writer.store.query("SELECT request_id FROM requests")]
        assert sorted(ids) == ["new-1", "written-1", "written-2"]
        assert engine.health()["requests"]["count"] == 5
    finally:
        engine.stop()


def test_a_new_collector_counts_what_earlier_ones_confirmed(tmp_path: Path) -> None:
    engine = PodEngine(Settings.load({"db": str(tmp_path / "m.duckdb")}))
    engine.start()
    try:
        now = int(time.time())
        history = [(now - 400, {200: 50}), (now - 2, {200: 7, 503: 1}), (now - 1, {200: 3})]
        state = engine.worker_joined(7, 8, (4, 2), history)
        # The drops earlier collectors reported are not reported again; new ones are.
        engine.ingest(state, [("POST", "/p", 200, 0.01, None)], (12, 0, 5, 2), 0)
        health = engine.health()
        requests = health["requests"]
        assert requests["count"] == 7 + 1 + 3 + 1  # the 50 of 400 s ago are out of the window
        assert requests["from_earlier_collectors"] == 11
        assert requests["by_status"] == {"200": 11, "503": 1}
        assert requests["errors"] == 1
        assert health["capture"]["requests_dropped"] == 1
        assert health["capture"]["dropped"] == 0
        # The same worker connecting again to this collector brings nothing new to count.
        engine.worker_joined(7, 8, (5, 2), history)
        assert engine.health()["requests"]["count"] == 12
    finally:
        engine.stop()
