from __future__ import annotations

import numpy as np

from inferwatch.middleware.serving.series import SeriesRows
from inferwatch.middleware.store.database import Store


def _figures(count: int, p50: float | None) -> dict:
    latency = {"p50": p50, "p90": p50, "p95": p50, "p99": p50, "max": p50}
    return {
        "requests": {"count": count, "errors": 1},
        "latency_ms": latency,
        "ttfb_ms": {**latency, "p50": None},
    }


def _sample(rss: int | None, gpus: list[dict]) -> dict:
    return {
        "process": {"cpu_percent": 12.5, "rss_bytes": rss},
        "system": {"cpu_percent": 50.0, "memory_used_percent": 40.0},
        "cgroup": None,
        "gpus": gpus,
    }


def test_rows_wait_and_land_in_order_with_nulls(db_path: str) -> None:
    store = Store(db_path)
    try:
        series = SeriesRows(store.insert_series, every_s=5.0)
        first, second = (
            np.datetime64("2026-01-01T00:00:00", "us"),
            np.datetime64("2026-01-01T00:00:01", "us"),
        )
        series.add_efficiency(first, 1.0, [("*", _figures(3, 2.5)), ("/p", _figures(3, 2.5))])
        gpus = [
            {"utilization_percent": 50, "memory_used_bytes": 7},
            {"utilization_percent": 70, "memory_used_bytes": 3},
        ]
        series.add_resources(first, _sample(1000, gpus))
        series.add_efficiency(second, 1.0, [("*", _figures(0, None))])
        series.add_resources(second, _sample(None, []))
        series.submit_due()  # not five seconds old yet
        assert store.query("SELECT count(*) FROM efficiency")[0][0] == 0
        series.submit()
        rows = store.query("SELECT ts, route, requests, p50_ms, ttfb_p50_ms FROM efficiency")
        assert [(r[1], r[2]) for r in rows] == [("*", 3), ("/p", 3), ("*", 0)]
        assert rows[0][3] == 2.5
        assert rows[2][3] is None  # no latency in an empty interval is NULL, not NaN
        assert rows[0][4] is None
        resources = store.query(
            "SELECT process_rss_bytes, gpu_utilization_percent, gpu_memory_used_bytes"
            " FROM resources ORDER BY ts"
        )
        assert resources == [(1000, 60.0, 10), (None, None, None)]
        series.submit()  # nothing left: no empty inserts
        assert store.query("SELECT count(*) FROM resources")[0][0] == 2
    finally:
        store.close()
