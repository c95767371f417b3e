"""The baseline: what every feature looked like in the data a model was trained on.

``build_baseline`` summarizes a CSV, Parquet or JSON lines file (or a span of the log store) with
DuckDB aggregates, out of core, into a compact JSON document; ``load_baseline`` reads one back as a
:class:`Baseline`. docs/drift.md describes the file format. The work is split by idea:
:mod:`._baseline_file` (the format, validation and reading), :mod:`._baseline_from_file` and
:mod:`._baseline_from_store` (the scans of each source), :mod:`._baseline_profiles` (edges,
domains and the document) and :mod:`._summary_sql` (SQL shared with the check).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import duckdb
import orjson

from ..errors import MonitorError
from ..stats.summary_sql import bin_tree_sql, number_key_sql
from .file import FORMAT, Baseline, FeatureBaseline, load_baseline
from .from_file import summarize_file
from .from_store import summarize_store
from .profiles import MAX_SIZE, classification_quality, fit_size
from .training_attributions import attribution_source, read_importances, summarize_attributions

__all__ = [
    "FORMAT",
    "MAX_SIZE",
    "Baseline",
    "FeatureBaseline",
    "bin_tree_sql",
    "build_baseline",
    "classification_quality",
    "load_baseline",
    "number_key_sql",
]

_FORMATS = {
    "csv": "csv",
    "tsv": "csv",
    "txt": "csv",
    "parquet": "parquet",
    "pq": "parquet",
    "json": "json",
    "jsonl": "json",
    "ndjson": "json",
}
_STORE_SUFFIXES = ("duckdb", "db")


def build_baseline(
    source: str,
    *,
    out: str | None,
    label_column: str | None = None,
    prediction_column: str | None = None,
    exclude: Iterable[str] = (),
    categorical: Iterable[str] = (),
    booleans: Iterable[str] = (),
    bins: int = 20,
    time_range: tuple[datetime, datetime] | None = None,
    progress: Callable[[str], None] | None = None,
    memory_limit: str = "1GB",
    temp_directory: str | None = None,
    attributions: str | None = None,
    importances: str | None = None,
) -> dict[str, Any]:
    """Summarize ``source`` into a baseline document, write it to ``out`` and return it.

    ``source`` is a CSV, Parquet or JSON lines file, read by DuckDB out of core within
    ``memory_limit`` (spilling to ``temp_directory``) in three scans, or a DuckDB log store
    (``.duckdb``) whose inputs logged within ``time_range`` become the features and whose
    outputs the prediction section. Each column of a file gets the type its values have in
    served JSON: CSV text stays text unless every value is a number, and only Parquet or JSON
    booleans, or the columns in ``booleans``, are booleans. ``progress`` receives one line per
    phase and per second of a long scan. Raises :class:`MonitorError` with one sentence when
    the source cannot be read. ``attributions`` names a file of training attributions (one
    column per feature) or the prefix of such columns in ``source``; ``importances`` a file of
    feature importances (a JSON object, or CSV rows of feature and importance).
    """
    if not 2 <= bins <= 64:
        raise MonitorError(f"bins must be between 2 and 64, not {bins}")
    say = progress or (lambda _line: None)
    suffix = _suffix(source)
    if attributions is not None and suffix in _STORE_SUFFIXES:
        raise MonitorError("--attributions applies to files; a log store has none")
    temp = tempfile.TemporaryDirectory(prefix="inferwatch-baseline-", dir=temp_directory)
    config = {"memory_limit": memory_limit, "temp_directory": temp.name}
    config["preserve_insertion_order"] = False
    try:
        if suffix in _STORE_SUFFIXES:
            con = duckdb.connect(source, read_only=True, config=config)
        elif suffix in _FORMATS:
            con = duckdb.connect(config=config)
        else:
            raise MonitorError(f"{source} is not CSV, Parquet, JSON lines or a DuckDB log store")
    except duckdb.Error as exc:
        temp.cleanup()
        raise MonitorError(f"cannot open {source}: {_first_line(exc)}") from exc
    try:
        if suffix in _STORE_SUFFIXES:
            if booleans:
                raise MonitorError("--boolean applies to files; a log store keeps JSON's types")
            skip = frozenset(exclude)
            doc = summarize_store(con, bins, time_range, frozenset(categorical), skip, say)
        else:
            keep = {"label": label_column, "prediction": prediction_column}
            if attributions is not None:
                found = attribution_source(attributions, source, _FORMATS[suffix])
                if found[0] == source:  # attribution columns of the training file: not features
                    exclude = [*exclude, *found[2].values()]
            doc = summarize_file(
                con, source, _FORMATS[suffix], keep, exclude, categorical, bins, say, booleans
            )
    except duckdb.Error as exc:
        raise MonitorError(f"cannot summarize {source}: {_first_line(exc)}") from exc
    finally:
        con.close()
        temp.cleanup()
    if attributions is not None:
        say("attributions")
        doc["attributions"] = summarize_attributions(build_baseline, *found)
    if importances is not None:
        doc["importances"] = read_importances(importances)
    doc["source"] = {"path": source, "time_range": _range_json(time_range)}
    fit_size(doc, MAX_SIZE)
    Baseline.from_document(doc, out)  # what we write, we can read back
    if out is not None:
        say(f"writing {out}")
        try:
            with open(out, "wb") as handle:
                handle.write(orjson.dumps(doc))
        except OSError as exc:
            raise MonitorError(f"cannot write baseline file {out}: {exc.strerror}") from exc
    return doc


def _suffix(path: str) -> str:
    parts = os.path.basename(path).lower().split(".")
    while len(parts) > 2 and parts[-1] in ("gz", "zst", "zstd"):
        parts.pop()
    return parts[-1] if len(parts) > 1 else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _range_json(time_range: tuple[datetime, datetime] | None) -> list[str] | None:
    return [t.isoformat() for t in time_range] if time_range else None
