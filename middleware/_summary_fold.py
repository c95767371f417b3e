"""The writer's fold: each batch it inserts is summarized into ``summaries`` in the same
transaction, from the registered batch itself, by one INSERT per scope (docs/summaries.md).

A scope is the check over every request (model ``''``) or one model of the ``baselines``
setting; each is folded with the bins of the baseline in force for it. The rows of a batch are
appended as partial minute rows; readers merge them, and maintenance compacts closed minutes.
"""

# Every SQL text below is built from this module's constants.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from ._baseline_file import Baseline
from ._summaries import SummarySpec, fold_sql, summary_spec
from ._summary_batch import fold_batch

__all__ = ["BATCH_VALUES", "SummaryFolder", "fold_span"]

# The batch's values: ``row`` numbers its rows, and ``request_id`` is not read (scanning a NumPy
# array of Python strings costs most). NumPy floats carry no NULL, so a number (type code 0)
# that reads NULL was NaN, as in the insert itself.
BATCH_VALUES = """(
    SELECT ts, "row", column_id,
           CASE WHEN column_id // 2 % 4 = 0 AND num IS NULL THEN 'nan'::DOUBLE ELSE num END
               AS num, str
    FROM feature_batch{where})"""
_NO_VALUES = "(SELECT ts, 0 AS row, column_id, num, str FROM feature_values WHERE false)"


class SummaryFolder:
    """Folds the writer's batches for each scope's baseline (``baselines()`` maps a model, or
    None for every request, to the baseline in force; None when there is none)."""

    def __init__(self, baselines: Callable[[], Mapping[str | None, Baseline | None]]) -> None:
        self._baselines = baselines
        self._specs: dict[int, tuple[Baseline, SummarySpec]] = {}
        self._known: set[tuple[str, str]] = set()

    def _spec(self, baseline: Baseline | None) -> SummarySpec:
        if baseline is None:
            return summary_spec(None)
        cached = self._specs.get(id(baseline))
        if cached is None or cached[0] is not baseline:
            cached = (baseline, summary_spec(baseline))
            self._specs = {k: v for k, v in self._specs.items() if k != id(baseline)}
            self._specs[id(baseline)] = cached
        return cached[1]

    def fold(self, cursor: duckdb.DuckDBPyConnection, has_features: bool) -> None:
        """Append the summaries of the registered ``feature_batch`` and ``request_batch``."""
        scopes = dict(self._baselines())
        scopes.setdefault(None, None)
        for model, baseline in scopes.items():
            spec = self._spec(baseline)
            label = model or ""
            if model is None:
                values = BATCH_VALUES.format(where="") if has_features else _NO_VALUES
                columns, requests = "feature_columns", "request_batch"
            else:
                mine = " WHERE column_id IN (SELECT id FROM feature_columns WHERE model = $scope)"
                values = BATCH_VALUES.format(where=mine) if has_features else _NO_VALUES
                columns = "(SELECT * FROM feature_columns WHERE model = $scope)"
                requests = "(SELECT * FROM request_batch WHERE model = $scope)"
            params = {} if model is None else {"scope": model}
            fold_batch(cursor, spec, values, columns, requests, model=label, params=params)
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
    if model:
        within = f"({within}) AND column_id IN (SELECT id FROM {columns})"
    sql, more = fold_sql(
        spec,
        f"(SELECT * FROM feature_values WHERE {within})",
        columns,
        f"(SELECT * FROM requests WHERE {within})",
        prefix=prefix,
    )
    return sql, params | more
