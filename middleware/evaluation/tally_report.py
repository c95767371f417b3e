"""The /evaluation report's figures from label tallies: beside the raw rows' figures, and in
their place once the window's raw rows have expired (docs/evaluation.md, "Tallies")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb

from .tallies import TALLY_FIGURES, Tallies, read_tallies

__all__ = ["tallies_beside", "tallies_instead"]


def _section(
    tallies: Tallies, task: str, threshold: bool, first: datetime, end: datetime
) -> dict[str, Any]:
    return {
        "start": _iso(first),
        "end": _iso(end),
        "labels": tallies.labels(task, threshold),
        "figures": TALLY_FIGURES[task],
        "metrics": tallies.metrics(task, threshold),
    }


def tallies_beside(
    cursor: duckdb.DuckDBPyConnection,
    span: dict[str, datetime],
    name: str,
    task: str,
    threshold: bool,
    model: str = "",
) -> dict[str, Any] | None:
    """The tallies' figures of output ``name`` over the window's whole minutes, or None where
    tallies do not give this task's figures (no label tallied, a prediction read from a vector)."""
    found, first = read_tallies(cursor, span["start"], span["end"], name, model)
    tallies = found.get(name)
    if tallies is None or not tallies.answers(task, threshold):
        return None
    return _section(tallies, task, threshold, first, span["end"])


def tallies_instead(
    cursor: duckdb.DuckDBPyConnection,
    span: dict[str, datetime],
    prediction: str | None,
    task: str | None,
    report: dict[str, Any],
    model: str = "",
) -> Tallies | None:
    """Fill ``report`` from the tallies when the raw rows give no label (they expired): the
    output is ``prediction``, else the only one tallied; the task is ``task``, else the one the
    tallies show. Returns the tallies used, or None (``report`` untouched)."""
    found, first = read_tallies(cursor, span["start"], span["end"], model=model)
    if prediction is None and len(found) == 1:
        prediction = next(iter(found))
    tallies = found.get(prediction) if prediction is not None else None
    if tallies is None:
        return None
    if task not in ("classification", "regression"):
        task, threshold = tallies.inferred_task()
    else:
        threshold = task == "classification" and tallies.binary_cut()
    if not tallies.answers(task, threshold):
        return None
    section = _section(tallies, task, threshold, first, span["end"])
    report |= {
        "task": task,
        "prediction_field": prediction,
        "prediction_reason": "the output that label tallies count",
        "metrics": section["metrics"],
        "metrics_source": "tallies",
        "tallies": section,
    }
    report["window"]["labels"] = section["labels"]
    report["notes"].append(
        "The window's raw rows have expired: its figures come from label tallies of its whole "
        "minutes; buckets, label delays, probability figures and change detection need raw rows."
    )
    return tallies


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
