"""What the evaluation tests share: captured predictions stored as the writer stores them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from inferwatch.middleware.store.database import Store, append_features

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = 3600.0


def insert(
    store: Store,
    outputs: Mapping[str, Any],
    *,
    inputs: Mapping[str, Any] | None = None,
    end: datetime = NOW,
    span_s: float = HOUR - 1,
    ids: list[str] | None = None,
) -> list[str]:
    """Store one captured request per row (ids ``r0``, ``r1``, ...) spread evenly over the
    ``span_s`` seconds before ``end``, in long form as the writer stores them; return the ids."""
    n = len(next(iter(outputs.values())))
    ids = ids or [f"r{i}" for i in range(n)]
    start_us = int((end.timestamp() - span_s) * 1e6)
    ts = (start_us + np.linspace(0, span_s * 1e6, n, endpoint=False)).astype("datetime64[us]")
    columns: dict[str, list[Any]] = {k: [] for k in ("ts", "id", "role", "name", "type", "num")}
    columns["str"] = []
    for role, fields in (("output", outputs), ("input", inputs or {})):
        for name, values in fields.items():
            for i, value in enumerate(values):
                if value is None:
                    continue
                kind = type(value)
                is_text = kind is str or isinstance(value, np.str_)
                is_bool = kind is bool or isinstance(value, np.bool_)
                columns["ts"].append(ts[i])
                columns["id"].append(ids[i])
                columns["role"].append(role)
                columns["name"].append(name)
                columns["type"].append("string" if is_text else "boolean" if is_bool else "number")
                columns["num"].append(math.nan if is_text else float(value))
                columns["str"].append(str(value) if is_text else None)
    m = len(columns["ts"])
    requests = {
        "ts": ts,
        "request_id": np.array(ids, dtype=object),
        "method": np.full(n, "POST", dtype=object),
        "route": np.full(n, "/predict", dtype=object),
        "status": np.full(n, 200, dtype=np.int16),
        **{c: np.zeros(n) for c in ("latency_ms", "ttfb_ms")},
        **{c: np.zeros(n, dtype=np.int64) for c in ("request_bytes", "response_bytes")},
        "error": np.full(n, None, dtype=object),
        **{c: np.full(n, "ok", dtype=object) for c in ("input_status", "output_status")},
        **{c: np.ones(n, dtype=np.int32) for c in ("input_rows", "output_rows")},
    }
    features = {
        "ts": np.array(columns["ts"], dtype="datetime64[us]"),
        "request_id": np.array(columns["id"], dtype=object),
        "row_index": np.zeros(m, dtype=np.int32),
        "role": np.array(columns["role"], dtype=object),
        "name": np.array(columns["name"], dtype=object),
        "type": np.array(columns["type"], dtype=object),
        "num": np.array(columns["num"], dtype=np.float64),
        "str": np.array(columns["str"], dtype=object),
    }
    store.insert(requests, None)
    store.writer.register("long_rows", features)
    append_features(store.writer, "SELECT * FROM long_rows")
    store.writer.unregister("long_rows")
    return ids
