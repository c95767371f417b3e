"""Several models behind one server: each model's baseline, and cursors that see only its rows.

The log store records the model each request path named (``requests.model`` and the ``model``
of ``feature_columns``). A scoped cursor shadows ``features``, ``requests`` and ``row_scores``
with temporary views of one model's rows, so that every check, written for the whole store, reads
one model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MonitorError

if TYPE_CHECKING:  # a worker reads its baselines setting without loading DuckDB
    import duckdb

__all__ = ["baseline_files", "scoped_cursors"]


def baseline_files(spec: str | None) -> dict[str, str]:
    """Model name to baseline file, from the ``baselines`` setting: a folder of ``<model>.json``
    files, or comma-separated ``model=path`` pairs."""
    if not spec:
        return {}
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.endswith(".json") and len(n) > 5)
        return {n.removesuffix(".json"): os.path.join(spec, n) for n in names}
    found = {}
    for pair in spec.split(","):
        model, sep, path = pair.strip().partition("=")
        if not sep or not model.strip() or not path.strip():
            raise MonitorError(f"baselines needs a folder or model=path pairs, not {pair!r}")
        found[model.strip()] = path.strip()
    return found


def _literal(text: str) -> str:
    # a view cannot take bound parameters; a quoted literal with its quotes doubled is safe
    return "'" + text.replace("'", "''") + "'"


def _identifier(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def scoped_cursors(
    factory: Callable[[], duckdb.DuckDBPyConnection], model: str | None
) -> Callable[[], duckdb.DuckDBPyConnection]:
    """``factory``, or for a model a factory of cursors whose ``features``, ``requests`` and
    ``row_scores`` are that model's rows only."""
    if model is None:
        return factory

    def cursor() -> duckdb.DuckDBPyConnection:
        opened = factory()
        try:
            (database,) = opened.execute("SELECT current_database()").fetchone()
            main, named = f"{_identifier(database)}.main", _literal(model)
            for table in ("features", "requests"):
                opened.execute(
                    f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM "  # noqa: S608
                    f"{main}.{table} WHERE model = {named}"
                )
            # a row score is the model's when its request is
            opened.execute(
                f"CREATE OR REPLACE TEMP VIEW row_scores AS SELECT * FROM "  # noqa: S608
                f"{main}.row_scores WHERE request_id IN "
                f"(SELECT request_id FROM {main}.requests WHERE model = {named})"
            )
        except BaseException:
            opened.close()
            raise
        return opened

    return cursor
