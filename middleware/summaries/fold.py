"""The writer's fold: each batch it inserts is summarized into ``summaries`` in the same
transaction, from the batch's own arrays (``summaries.arrays``), for each scope (docs/summaries.md).

A scope is the check over every request (model ``''``) or one model of the ``baselines``
setting; each is folded with the bins of the baseline in force for it. The rows of a batch are
appended as partial minute rows; readers merge them, and maintenance compacts closed minutes.
:func:`fold_span` is the same fold as SQL over the store's rows, for the edges of a window.
"""

# Every SQL text below is built from this module's constants.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ..baseline.file import Baseline
from .arrays import Column, fold_arrays
from .spec import SUMMARY_COLUMNS, SummarySpec, fold_sql, summary_spec

__all__ = ["SummaryFolder", "fold_span"]


class SummaryFolder:
    """Folds the writer's batches for each scope's baseline (``baselines()`` maps a model, or
    None for every request, to the baseline in force; None when there is none)."""

    def __init__(self, baselines: Callable[[], Mapping[str | None, Baseline | None]]) -> None:
        self._baselines = baselines
        self._specs: dict[int, tuple[Baseline, SummarySpec]] = {}
        self._known: set[tuple[str, str]] = set()
        self._columns: dict[int, Column] = {}

    def _spec(self, baseline: Baseline | None) -> SummarySpec:
        if baseline is None:
            return summary_spec(None)
        cached = self._specs.get(id(baseline))
        if cached is None or cached[0] is not baseline:
            cached = (baseline, summary_spec(baseline))
            self._specs[id(baseline)] = cached
        return cached[1]

    def fold(
        self,
        cursor: duckdb.DuckDBPyConnection,
        requests: Mapping[str, np.ndarray],
        values: Mapping[str, np.ndarray] | None,
    ) -> None:
        """Append the summaries of a batch of ``requests`` and their feature ``values`` (the
        writer's arrays, as just inserted)."""
        if values is not None and len(values["column_id"]):
            ids = np.unique(values["column_id"]).tolist()
            if any(i not in self._columns for i in ids):  # new names: read what they are
                self._columns = {
                    int(i): (role, name, kind, model)
                    for i, role, name, kind, model in cursor.execute(
                        "SELECT id, role, name, type, model FROM feature_columns"
                    ).fetchall()
                }
        scopes = dict(self._baselines())
        scopes.setdefault(None, None)
        for model, baseline in scopes.items():
            spec = self._spec(baseline)
            label = model or ""
            rows = fold_arrays(cursor, spec, values, requests, self._columns, model)
            _insert(cursor, rows, label, spec.digest)
            if (label, spec.digest) not in self._known:
                self._begin(cursor, label, spec.digest)

    def _begin(self, cursor: duckdb.DuckDBPyConnection, model: str, digest: str) -> None:
        """Record the first whole minute folded for (model, baseline), once."""
        now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
        cursor.execute(
            "INSERT OR IGNORE INTO summary_baselines VALUES (?, ?, ?)",
            [model, digest, now + timedelta(minutes=1)],
        )
        self._known.add((model, digest))


def fold_span(
    spec: SummarySpec,
    spans: list[tuple[datetime, datetime]],
    *,
    model: str = "",
    prefix: str = "e",
) -> tuple[str, dict[str, Any]]:
    """A SELECT of summary rows of the store's own rows in ``spans`` (the edges of a window
    that whole minutes of summaries do not cover) of ``model`` (``''``: every request), with
    its parameters. ``requests`` must be the scope's (``scoped_cursors`` makes it so)."""
    params: dict[str, Any] = {}
    tests = []
    for i, (lo, hi) in enumerate(spans):
        params[f"{prefix}_lo{i}"], params[f"{prefix}_hi{i}"] = lo, hi
        tests.append(f"(ts >= ${prefix}_lo{i} AND ts < ${prefix}_hi{i})")
    within = " OR ".join(tests) or "false"
    columns = "feature_columns"
    if model:
        params[f"{prefix}_scope"] = model
        columns = f"(SELECT * FROM feature_columns WHERE model = ${prefix}_scope)"
    mine = f"({within}) AND column_id IN (SELECT id FROM {columns})" if model else within
    sql, more = fold_sql(
        spec,
        f"(SELECT * FROM feature_values WHERE {mine})",
        columns,
        f"(SELECT * FROM requests WHERE {within})",
        prefix=prefix,
    )
    return sql, params | more


def _insert(cursor: duckdb.DuckDBPyConnection, rows: list[tuple], model: str, digest: str) -> int:
    if not rows:
        return 0
    # minute, role, name, what, key, n, then the four doubles: rows without them end early
    padded = [(*r, *([None] * (len(SUMMARY_COLUMNS) - 3 - len(r)))) for r in rows]
    cols = list(zip(*padded, strict=True))
    batch = {
        "minute": np.array(cols[0], dtype="datetime64[us]"),
        "step_s": np.full(len(rows), 60, dtype=np.int32),
        "model": np.full(len(rows), model, dtype=object),
        "baseline": np.full(len(rows), digest, dtype=object),
        "role": np.array(cols[1], dtype=object),
        "name": np.array(cols[2], dtype=object),
        "what": np.array(cols[3], dtype=object),
        "key": np.array(cols[4], dtype=object),
        "n": np.array(cols[5], dtype=np.int64),
    }
    for i, column in enumerate(("total", "squares", "low", "high")):
        batch[column] = np.array(cols[6 + i], dtype=object)
    cursor.register("iw_summary_batch", batch)
    try:
        cursor.execute(
            "INSERT INTO summaries SELECT minute, step_s, model, baseline, role, name, what, "
            "key, n, total::DOUBLE, squares::DOUBLE, low::DOUBLE, high::DOUBLE "
            "FROM iw_summary_batch"
        )
    finally:
        cursor.unregister("iw_summary_batch")
    return len(rows)
