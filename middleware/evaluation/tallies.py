"""Label tallies: each labelled prediction folded into summary rows of its prediction's minute.

When labels are written (``labels.write_labels``, ``label_files.import_label_file``), every
captured output value of a labelled row is joined with its label and counted in the
``summaries`` table (role ``label``, the output's name, baseline ``''``; model ``''`` and,
for a request that named one, its model too): pairs of
(label class, predicted class) for classification, sums of labels and errors for regression.
A window's quality figures then follow from adding the tallies of its minutes, long after raw
rows have expired. A label written again or changed is first taken out (its old tally counted
with the opposite sign) and then counted anew, so nothing is counted twice. docs/summaries.md
lists the rows; docs/evaluation.md which figures come from them.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ..stats.summary_sql import number_key_sql
from .class_codes import sorted_classes
from .metrics import EPS, count_metrics

__all__ = ["TALLY_FIGURES", "Tallies", "fold_label_tallies", "read_tallies"]

TALLY_FIGURES = {
    "classification": ["labels", "accuracy", "macro_precision", "macro_recall", "macro_f1"],
    "regression": ["labels", "mae", "rmse", "mape", "r2"],
}
"""The figures tallies give per task (and per class: precision, recall, F1, support)."""


def _key(kind: str, num: str, text: str) -> str:
    numeric = f"{kind} IN ('number', 'boolean') AND isfinite({num})"
    return f"CASE WHEN {kind} = 'string' THEN {text} WHEN {numeric} THEN {number_key_sql(num)} END"


# One joined row per labelled output value: the prediction's minute and output name, its class
# key and number, the label's class key and number (NULL where a value is no class or number).
_JOINED = f"""
WITH joined AS (
    SELECT date_trunc('minute', p.ts) AS minute, p.name,
           unnest(CASE WHEN p.model IS NULL THEN [''] ELSE ['', p.model] END) AS scope,
           {_key("p.type", "p.num", "p.str")} AS pkey,
           CASE WHEN p.type IN ('number', 'boolean') AND isfinite(p.num) THEN p.num END AS pn,
           {_key("l.type", "l.num", "l.str")} AS lkey,
           CASE WHEN l.type IN ('number', 'boolean') AND isfinite(l.num) THEN l.num END AS ln
    FROM features p
    JOIN labels l ON l.request_id = p.request_id AND l.row_index = p.row_index
    JOIN (SELECT DISTINCT request_id, row_index FROM {{source}}) b
      ON b.request_id = l.request_id AND b.row_index = l.row_index
    WHERE p.role = 'output' AND NOT p.name LIKE '%]'),
fractional AS (SELECT *, pn IS NOT NULL AND pn <> trunc(pn) AS frac FROM joined),
errors AS (SELECT minute, name, scope, ln, pn - ln AS e FROM joined
           WHERE pn IS NOT NULL AND ln IS NOT NULL)
"""  # noqa: S608 (fixed SQL; its source is a table name of ours)
_ROW = (
    "SELECT minute, 60, scope, '', 'label', name, {what}, {key} AS key, {sign} * count(*), {sums}"
)
_SUMS = "{sign} * sum({x}), {sign} * sum(({x}) * ({x})), NULL, NULL"
_NONE = "NULL, NULL, NULL, NULL"
_PAIR = "to_json([lkey, {pkey}])::VARCHAR"
_CUT = "CASE WHEN pn >= 0.5 THEN '1' ELSE '0' END"
# what: (source and filter, key, value summed); each value's total and squares are kept
_PARTS = (
    ("'pairs'", "fractional WHERE lkey IS NOT NULL AND pkey IS NOT NULL AND NOT frac", "pkey"),
    ("'pairs_cut'", "fractional WHERE lkey IS NOT NULL AND frac AND pn BETWEEN 0 AND 1", _CUT),
    ("'fractional'", "fractional WHERE lkey IS NOT NULL AND frac", None),
    ("'label'", "errors", "ln"),
    ("'error'", "errors", "e"),
    ("'abs_error'", "errors", "abs(e)"),
    ("'squared_error'", "errors", "e * e"),
    ("'relative_error'", "errors", f"abs(e) / greatest(abs(ln), {EPS!r})"),
)


def _fold_sql(source: str, sign: int) -> str:
    selects = []
    for what, origin, value in _PARTS:
        key, sums, group = "''", _NONE, "minute, scope, name"
        if what.startswith("'pairs"):
            key, group = _PAIR.format(pkey=value), "minute, scope, name, key"
        elif value is not None:
            sums = _SUMS.format(sign=sign, x=value)
        row = _ROW.format(what=what, key=key, sign=sign, sums=sums)
        selects.append(f"{row} FROM {origin} GROUP BY {group}")
    return "INSERT INTO summaries " + _JOINED.format(source=source) + " UNION ALL ".join(selects)


def fold_label_tallies(cursor: duckdb.DuckDBPyConnection, source: str, sign: int) -> None:
    """Count (``sign`` 1) or take out (-1) the tallies of the stored labels of the rows in
    ``source`` (a table or registered view with ``request_id`` and ``row_index``). Run it in the
    labels' transaction: with -1 before their upsert and 1 after it."""
    cursor.execute(_fold_sql(source, sign))


class Tallies:
    """The merged tallies of one output over the whole steps of a window."""

    def __init__(self, rows: list[tuple[str, str | None, int, float | None, float | None]]):
        self.pairs: dict[str, dict[tuple[str, str], int]] = {"pairs": {}, "pairs_cut": {}}
        self.sums: dict[str, tuple[int, float, float]] = {}
        for what, key, n, total, squares in rows:
            if what in self.pairs and key is not None and n:
                label, predicted = json.loads(key)
                self.pairs[what][(label, predicted)] = int(n)
            elif what not in self.pairs:
                self.sums[what] = (int(n), float(total or 0.0), float(squares or 0.0))

    def count(self, what: str) -> int:
        """Labelled values counted under ``what``."""
        if what in self.pairs:
            return sum(self.pairs[what].values())
        return self.sums.get(what, (0, 0.0, 0.0))[0]

    def labels(self, task: str, threshold: bool = False) -> int:
        """Labelled predictions the tallies count for ``task``."""
        if task == "regression":
            return self.count("error")
        return self.count("pairs") + (self.count("pairs_cut") if threshold else 0)

    def answers(self, task: str, threshold: bool = False) -> bool:
        """Whether the tallies give this task's figures (a fractional prediction is a class only
        when cut at 0.5)."""
        if task == "regression":
            return self.count("error") > 0
        if not threshold and self.count("fractional"):
            return False
        return self.labels(task, threshold) > 0

    def binary_cut(self) -> bool:
        """Whether the labels are 0 and 1 and the predictions probabilities: cut at 0.5."""
        cut = self.count("pairs_cut")
        keys = {k for part in self.pairs.values() for k, n in part.items() if n}
        return bool(cut) and cut == self.count("fractional") and {y for y, _ in keys} <= {"0", "1"}

    def inferred_task(self) -> tuple[str, bool]:
        """The task and whether predictions are cut at 0.5, as ``quality`` infers them from rows:
        probabilities with 0/1 labels are classes, fractional predictions or labels a regression."""
        if self.binary_cut():
            return "classification", True
        labels = {y for part in self.pairs.values() for (y, _), n in part.items() if n}
        if self.count("fractional") or any(_fractional(key) for key in labels):
            return "regression", False
        return "classification", False

    def metrics(self, task: str, threshold: bool = False) -> dict[str, Any]:
        """The figures that tallies give (``TALLY_FIGURES``), as ``metrics`` computes them."""
        if task == "regression":
            n, _, sse = self.sums["error"]
            _, sum_y, sum_y2 = self.sums["label"]
            sst = sum_y2 - sum_y * sum_y / n
            return {
                "labels": n,
                "mae": self.sums["abs_error"][1] / n,
                "rmse": math.sqrt(sse / n),
                "mape": self.sums["relative_error"][1] / n,
                "r2": 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0),
            }
        counts = dict(self.pairs["pairs"])
        for pair, n in self.pairs["pairs_cut"].items() if threshold else ():
            counts[pair] = counts.get(pair, 0) + n
        counts = {pair: n for pair, n in counts.items() if n}
        classes = sorted_classes({k for pair in counts for k in pair})
        code = {key: c for c, key in enumerate(classes)}
        support, predicted, hits = (np.zeros(len(classes), np.int64) for _ in range(3))
        for (label, guess), n in counts.items():
            support[code[label]] += n
            predicted[code[guess]] += n
            if label == guess:
                hits[code[label]] += n
        return count_metrics(support, predicted, hits, classes)

    def spreads(self) -> dict[str, float]:
        """Population standard deviations of the absolute and the squared errors."""
        n, mae, squares = self.sums["abs_error"]
        _, sse, fourth = self.sums["squared_error"]
        return {
            "mae": math.sqrt(max(squares / n - (mae / n) ** 2, 0.0)),
            "rmse": math.sqrt(max(fourth / n - (sse / n) ** 2, 0.0)),
        }


def _fractional(key: str) -> bool:
    try:
        value = float(key)
    except ValueError:
        return False
    return math.isfinite(value) and value != math.trunc(value)


def read_tallies(
    cursor: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    name: str | None = None,
    model: str = "",
) -> tuple[dict[str, Tallies], datetime]:
    """The tallies per output name (or of ``name``) over the whole steps in [start, end), of
    ``model``'s requests (``''``: every request), and the first whole minute they start at
    (naive UTC)."""
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += timedelta(minutes=1)
    params: dict[str, Any] = {"lo": first, "hi": end, "model": model}
    only = ""
    if name is not None:
        params["name"], only = name, "AND name = $name "
    rows = cursor.execute(
        "SELECT name, what, key, sum(n)::BIGINT, sum(total), sum(squares) FROM summaries "  # noqa: S608
        "WHERE role = 'label' AND model = $model AND baseline = '' AND minute >= $lo "
        f"AND minute + to_seconds(step_s) <= $hi {only}GROUP BY name, what, key",
        params,
    ).fetchall()
    grouped: dict[str, list[Any]] = {}
    for found, *rest in rows:
        grouped.setdefault(found, []).append(tuple(rest))
    return {found: Tallies(part) for found, part in grouped.items()}, first
