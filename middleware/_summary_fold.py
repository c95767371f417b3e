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

__all__ = ["BATCH_FEATURES", "SummaryFolder", "fold_span"]

# The batch as rows of the ``features`` view: NumPy floats carry no NULL, so a number (type
# code 0) that reads NULL was NaN, as in the insert itself.
BATCH_FEATURES = """(
    SELECT v.ts, v.request_id, v.row_index, c.role, c.name, c.type,
           CASE WHEN v.column_id // 2 % 4 = 0 AND v.num IS NULL THEN 'nan'::DOUBLE
                ELSE v.num END AS num, v.str, c.model
    FROM feature_batch v JOIN feature_columns c ON c.id = v.column_id{where})"""
_NO_FEATURES = "(SELECT * FROM features WHERE false)"


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
            if has_features:
                where = "" if model is None else " WHERE c.model = $model_scope"
                features = BATCH_FEATURES.format(where=where)
            else:
                features = _NO_FEATURES
            requests = (
                "request_batch"
                if model is None
                else "(SELECT * FROM request_batch WHERE model = $model_scope)"
            )
            sql, params = fold_sql(spec, features, requests, model=label)
            if model is not None:
                params["model_scope"] = model
            cursor.execute(f"INSERT INTO summaries {sql}", params)
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
    prefix: str = "e",
) -> tuple[str, dict[str, Any]]:
    """A SELECT of summary rows of the store's own rows in ``spans`` (the edges of a window
    that whole minutes of summaries do not cover), with its parameters."""
    params: dict[str, Any] = {}
    tests = []
    for i, (lo, hi) in enumerate(spans):
        params[f"{prefix}_lo{i}"], params[f"{prefix}_hi{i}"] = lo, hi
        tests.append(f"(ts >= ${prefix}_lo{i} AND ts < ${prefix}_hi{i})")
    within = " OR ".join(tests) or "false"
    sql, more = fold_sql(
        spec,
        f"(SELECT * FROM features WHERE {within})",
        f"(SELECT * FROM requests WHERE {within})",
        prefix=prefix,
    )
    return sql, params | more
