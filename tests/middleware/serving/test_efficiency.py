from __future__ import annotations

import time

import httpx
import pytest

from inferwatch.middleware.serving.efficiency import EfficiencyTracker, summarize
from tests.conftest import uvicorn_process


def test_summary_of_known_requests() -> None:
    tracker = EfficiencyTracker()
    for latency in (0.010, 0.020, 0.030, 0.040):
        tracker.observe("POST", "/p", 200, latency, latency / 2)
    tracker.observe("POST", "/p", 503, 0.5, None)
    tracker.observe("POST", "/p", 404, 0.001, 0.001)
    figures = summarize(tracker.recent(60), 60)
    assert figures["requests"] == {
        "count": 6, "per_second": 0.1, "errors": 1, "error_rate": round(1 / 6, 6),
        "by_status": {"200": 4, "404": 1, "503": 1},
    }  # fmt: skip
    assert figures["latency_ms"] == {"p50": 20.0, "p90": 40.0, "p95": 40.0, "p99": 40.0,
                                     "max": 500.0}  # fmt: skip
    assert figures["ttfb_ms"]["max"] == 20.0


def test_window_forgets_what_is_older() -> None:
    tracker = EfficiencyTracker()
    tracker.observe("GET", "/a", 200, 0.01, None)
    time.sleep(0.05)
    tracker.observe("GET", "/a", 200, 0.01, None)
    assert len(tracker.recent(0.04)) == 1
    assert len(tracker.recent(10)) == 2


@pytest.mark.parametrize("ring_size", [100_000, 50])
def test_window_figures_agree_with_a_full_summary(ring_size: int) -> None:
    """The incremental window the status is read from equals summarizing the ring afresh."""
    tracker = EfficiencyTracker(ring_size=ring_size)
    # Batches 0.06 s apart against a 0.15 s window: the edge falls between batches, never on one.
    window = 0.15
    for step in range(6):
        for i in range(40):
            status = 500 if (i + step) % 7 == 0 else 200
            tracker.observe("POST", "/p", status, 0.001 * (i + 1) * (step + 1), None)
        time.sleep(0.06)
        figures = tracker.window_figures(window)
        full = summarize(tracker.recent(window), window)
        assert figures.count == full["requests"]["count"]
        assert figures.errors == full["requests"]["errors"]
        assert figures.p99_s is not None
        assert round(figures.p99_s * 1000, 3) == full["latency_ms"]["p99"]
    time.sleep(window + 0.01)
    assert tracker.window_figures(window).count == 0
    assert tracker.window_figures(window).p99_s is None


def test_empty_window() -> None:
    figures = summarize([], 300)
    assert figures["requests"]["count"] == 0
    assert figures["latency_ms"]["p99"] is None


def test_totals_by_route_and_status_class() -> None:
    tracker = EfficiencyTracker()
    tracker.observe("POST", "/p", 200, 0.0009, None)
    tracker.observe("POST", "/p", 201, 0.003, None)
    tracker.observe("POST", "/p", 500, 70.0, None)
    totals = tracker.totals[("POST", "/p")]
    assert totals.by_class == [0, 2, 0, 0, 1]
    assert totals.buckets[0] == 1  # <= 1 ms
    assert totals.buckets[2] == 1  # <= 5 ms
    assert totals.buckets[-1] == 1  # +Inf


def test_health_matches_what_was_sent() -> None:
    with uvicorn_process("tests.apps.model_app:app", {"INFERWATCH_DB": ":memory:"}) as (_, url):
        client_ms: list[float] = []
        with httpx.Client(base_url=url) as client:
            for _ in range(10):
                start = time.perf_counter()
                assert client.get("/sleep", params={"ms": 30}).status_code == 200
                client_ms.append((time.perf_counter() - start) * 1000)
            for _ in range(3):
                assert client.post("/fail").status_code == 503
            for _ in range(2):
                assert client.get("/nowhere").status_code == 404
            health = client.get("/monitor/health", params={"window": "5m"}).json()
    assert health["window_s"] == 300
    assert health["requests"]["count"] == 15
    assert health["requests"]["errors"] == 3
    assert health["requests"]["error_rate"] == pytest.approx(0.2)
    assert health["requests"]["by_status"] == {"200": 10, "404": 2, "503": 3}
    assert health["status"] == "failing"  # 20% errors is above the 10% default
    latency = health["latency_ms"]
    # The server's timer starts after the client's and stops before it, and asyncio.sleep
    # never wakes early: so 30 ms <= server figure <= client figure.
    assert 30.0 <= latency["p50"] <= sorted(client_ms)[5] + 0.001
    assert latency["max"] <= max(client_ms)
    assert health["resources"]["process"]["rss_bytes"] > 0
    assert health["resources"]["gpus"] == [] or health["resources"]["gpus"][0]["name"]
    assert health["capture"]["sampled"] == 15


@pytest.mark.parametrize("window", ["soon", "-5", "0"])
def test_bad_window_is_a_400(window: str) -> None:
    from inferwatch import MonitorMiddleware
    from tests.apps.model_app import build_app

    app = MonitorMiddleware(build_app(monitor=False), db=":memory:")

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            return (await client.get("/monitor/health", params={"window": window})).status_code

    import asyncio

    try:
        assert asyncio.run(go()) == 400
    finally:
        app.engine.stop()


def test_time_series_lands_in_the_store(db_path: str) -> None:
    from inferwatch import Engine, Settings

    engine = Engine(Settings.load({"db": db_path, "resource_interval": 0.1}, environ={}))
    engine.start()
    try:
        for status in (200, 200, 500):
            engine.efficiency.observe("POST", "/p", status, 0.01, 0.005)
        time.sleep(0.35)
        assert engine.flush()
        store = engine.writer.store
        assert store is not None
        rows = store.query(
            "SELECT route, sum(requests), sum(errors) FROM efficiency GROUP BY route ORDER BY 1"
        )
        assert rows == [("*", 3, 1), ("/p", 3, 1)]
        samples = store.query("SELECT count(*), min(process_rss_bytes) FROM resources")
        assert samples[0][0] >= 2
        assert samples[0][1] > 0
        # DuckDB's own part of the memory, read each tick, under its limit.
        used = engine.health()["capture"]["db_memory_bytes"]
        assert isinstance(used, int)
        assert 0 <= used <= engine.settings.db_memory
    finally:
        engine.stop()


def test_per_second_divides_by_the_time_the_requests_cover() -> None:
    """500 quick requests in a 5-minute window read as their own rate, not 500/300 s."""
    env = {"INFERWATCH_DB": ":memory:"}
    with (
        uvicorn_process("tests.apps.model_app:app", env) as (_, url),
        httpx.Client(base_url=url) as client,
    ):
        sent = time.monotonic()
        client.get("/sleep", params={"ms": 0})
        first_answered = time.monotonic()
        for _ in range(499):
            client.get("/sleep", params={"ms": 0})
        asked = time.monotonic()
        health = client.get("/monitor/health", params={"window": "5m"}).json()
        answered = time.monotonic()
    requests = health["requests"]
    assert requests["count"] == 500
    # The server saw the first request start after `sent` and read its clock before
    # `answered`, and not before `asked`, so the time covered lies between these bounds.
    assert 500 / (answered - sent) <= requests["per_second"] <= 500 / (asked - first_answered)
    assert requests["per_second"] > 500 / 300


def test_per_second_over_the_window_when_the_requests_span_it() -> None:
    now = time.monotonic()
    requests = [(now - 50 + i, 200, 0.5, None, "/p") for i in range(40)]
    assert summarize(requests, 30, now=now)["requests"]["per_second"] == round(40 / 30, 3)
    assert summarize(requests, 60, now=now)["requests"]["per_second"] == round(40 / 50.5, 3)
