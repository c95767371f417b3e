"""SQL pieces shared by the summaries that baselines, checks and evaluations compute in DuckDB.

Category keys (how a logged value is named as a category), the binary search that puts a value
in its bin, quoting of column names, and running one long aggregate with progress reports.
Feature names and values never enter the SQL text: they travel as bound parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "NUMBER_TEXT",
    "VALUE_TYPES",
    "bin_tree_sql",
    "feature_key_sql",
    "number_key_sql",
    "quote_name",
    "run_with_progress",
]

VALUE_TYPES = ("number", "string", "boolean")
"""The ``type`` of a logged value that a baseline feature can expect (``null`` never is one)."""

NUMBER_TEXT = r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
"""A regular expression of a number as a CSV writer or a JSON encoder writes it: CSV text that
is a number in JSON. A leading zero (``01234``) marks a code, which stays text."""


def number_key_sql(x: str) -> str:
    """SQL for the category key of a DOUBLE expression: ``3`` for 3.0, else DuckDB's text."""
    return (
        f"CASE WHEN {x} = trunc({x}) AND abs({x}) < 1e15 "
        f"THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) ELSE CAST({x} AS VARCHAR) END"
    )


def feature_key_sql(alias: str = "f", types: Iterable[str] = VALUE_TYPES) -> str:
    """SQL for the category key of a ``features`` row, for rows whose type is in ``types``.

    Strings are their own key, booleans ``true``/``false`` and numbers :func:`number_key_sql`.
    With one type only, the key needs no CASE on the type (DuckDB runs that several times
    faster); rows of other types must then be filtered out by the query.
    """
    wanted = [t for t in VALUE_TYPES if t in set(types)]
    keys = {
        "string": f"{alias}.str",
        "boolean": f"CASE WHEN {alias}.num = 1 THEN 'true' ELSE 'false' END",
        "number": number_key_sql(f"{alias}.num"),
    }
    if len(wanted) == 1:
        return keys[wanted[0]]
    branches = " ".join(f"WHEN '{t}' THEN {keys[t]}" for t in wanted)
    return f"CASE {alias}.type {branches} END"


def bin_tree_sql(tests: Sequence[str], leaf: Callable[[int], str] = str) -> str:
    """SQL for the index of the first true of ``tests`` (``len(tests)`` when none is true).

    ``tests`` must be monotone (each true implies the next), such as ``x < e1``, ``x < e2``...:
    then the index is the bin of ``x``. A binary search of nested CASEs takes about log2 of
    the bins comparisons per value, which DuckDB runs several times faster than a list lookup,
    a sum of comparisons, its ``histogram`` aggregate or an ASOF join. ``leaf`` gives the SQL
    of each result.
    """

    def tree(lo: int, hi: int) -> str:
        if lo == hi:
            return leaf(lo)
        mid = (lo + hi) // 2
        return f"CASE WHEN {tests[mid]} THEN {tree(lo, mid)} ELSE {tree(mid + 1, hi)} END"

    return tree(0, len(tests))


def quote_name(name: str) -> str:
    """``name`` as a quoted SQL identifier (a column of a file being summarized)."""
    return '"' + name.replace('"', '""') + '"'


def run_with_progress(
    con: Any, sql: str, params: dict[str, Any], phase: str, say: Callable[[str], None]
) -> list[tuple[Any, ...]]:
    """Run one query and fetch its rows, reporting DuckDB's progress once a second."""
    say(phase)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            share = con.query_progress()
            if share >= 0:
                say(f"{phase}: {share:.0f}%")

    watcher = threading.Thread(target=watch, name="inferwatch-baseline-progress", daemon=True)
    watcher.start()
    try:
        return con.execute(sql, params).fetchall()
    finally:
        done.set()
        watcher.join()
