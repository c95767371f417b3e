"""The skew check: summarize a window of the log store in DuckDB and compare it with a baseline.

:func:`run_check` assembles the /drift report. The window's counts come from
:mod:`._drift_window` (a handful of aggregate queries; Python sees only bin counts), each
feature's distribution test from :mod:`._drift_features` and the schema anomalies from
:mod:`._drift_schema`. docs/drift.md explains methods and margins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from ..baseline.file import Baseline, FeatureBaseline
from ..baseline.window import (
    CategoricalWindow,
    NumericWindow,
    categorical_counts,
    numeric_counts,
    parse_failures,
    type_counts,
    values_per_role,
    window_rows,
)
from ..evaluation.prediction_fields import choose_fields, output_fields
from ..payload.explanations import EXPLAINED_FIELD
from .anomalies import parse_anomaly, unexpected_features
from .argmax import argmax_window, slot_classes
from .attributions import attribution_section, rank
from .features import evaluate_feature
from .multivariate import score_sections

__all__ = [
    "CategoricalWindow",
    "NumericWindow",
    "categorical_counts",
    "evaluate_feature",
    "numeric_counts",
    "run_check",
    "window_rows",
]

_ROLES = (("input", "features"), ("output", "prediction"))


def run_check(
    connection_factory: Callable[[], duckdb.DuckDBPyConnection],
    baseline: Baseline | None,
    *,
    window_s: float,
    now: datetime | None = None,
    min_rows: int = 100,
    baseline_path: str | None = None,
    prediction_output: str | None = None,
    naming: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    attributions_field: str | None = None,
    figures: Callable[[Any, datetime, datetime], Any] | None = None,
) -> dict[str, Any]:
    """Compare the last ``window_s`` seconds of the log store with ``baseline``.

    Returns the /drift report of the contract. ``connection_factory`` gives a cursor of the
    store, which is closed before returning; fewer than ``min_rows`` rows give
    ``insufficient_data`` rather than a verdict, and no baseline gives ``no_baseline`` (with
    row counts and parse failures still reported). The baseline's prediction is compared with
    the served output :func:`choose_fields` takes for it (``prediction_output`` overrides);
    ``mapping`` says which and why, and ``naming`` (how request columns were named) too;
    ``metadata`` is the model server's account of the model (names, datatypes, shapes). With
    ``attributions_field`` and a baseline that holds training attributions, the attributions in
    that output field are compared too; without it, those of explainer answers, when the window
    holds any (``payload.explanations``). ``figures(cursor, start, end)`` gives the window's counts
    from elsewhere (``drift.summary_check``: summaries); by default, and when it gives None, they
    are read from the store's rows.
    """
    checked = now or datetime.now(UTC)
    end = checked.astimezone(UTC).replace(tzinfo=None) if checked.tzinfo else checked
    start = end - timedelta(seconds=window_s)
    cursor = connection_factory()
    try:
        found = figures(cursor, start, end) if figures is not None else None
        source = found if found is not None else _RawFigures(cursor, start, end)
        rows = source.window_rows()
        total_requests, failed = source.parse_failures()
        anomalies = parse_anomaly(total_requests, failed)
        inputs = rows.get("input", 0)
        counted = inputs if baseline is None or baseline.features else rows.get("output", 0)
        report: dict[str, Any] = {
            "status": "no_baseline" if baseline is None else "insufficient_data",
            "checked_at": _iso(end),
            "window": {"start": _iso(start), "end": _iso(end), "rows": inputs},
            "baseline": {
                "path": baseline_path or (baseline.path if baseline else None),
                "rows": baseline.rows if baseline else None,
            },
            "drift_detected": False,
            "skew_detected": bool(anomalies),
            "drifted_features": [],
            "features": {},
            "prediction": {},
            "schema_anomalies": anomalies,
            "mapping": {
                "prediction": None,
                "inputs": naming or {"method": None},
                "metadata": metadata,
            },
        }
        if figures is not None:  # which the counts came from: summaries or the store's rows
            report["window"]["source"] = "rows" if found is None else "summaries"
        if baseline is None:
            return report
        argmax: dict[str, tuple[list[str], list[str]]] = {}  # vector's fields, slots' classes
        outputs = _outputs(source, baseline, prediction_output, report["mapping"], argmax)
        if counted < min_rows:
            report["status"] = "alert" if anomalies else "insufficient_data"
            return report
        windows: dict[str, dict[str, Any]] = {}
        for role, _ in _ROLES:
            section = _section(baseline, role, outputs)
            numeric = [f for f in section.values() if f.kind == "numeric"]
            categorical = [f for f in section.values() if f.kind == "categorical"]
            windows[role] = source.numeric_counts(role, numeric)
            windows[role] |= source.categorical_counts(role, categorical)
        for served, (names, classes) in argmax.items():
            expected = outputs[served]
            windows["output"][served] = argmax_window(cursor, names, classes, expected, start, end)
        types = _types(source, baseline, outputs, windows)
        for served in argmax:  # each row with probabilities has a most likely class
            types["output", served] = {outputs[served].dtype: windows["output"][served].values}
        if baseline.outliers is not None:
            sections = score_sections(cursor, baseline.outliers, start, end, min_rows)
            report["outliers"], report["multivariate"] = sections
        if baseline.attributions:
            # explainer answers are stored under EXPLAINED_FIELD: read when no field is set
            field = attributions_field or EXPLAINED_FIELD
            section = attribution_section(cursor, baseline, field, start, end, min_rows)
            if attributions_field or any(e["rows"] for e in section["features"].values()):
                report["attributions"] = section
    finally:
        cursor.close()
    for role, key in _ROLES:
        section = _section(baseline, role, outputs)
        for name, fb in section.items():
            entry, found = evaluate_feature(
                fb, rows.get(role, 0), types.get((role, name), {}), windows[role].get(name)
            )
            own = baseline.prediction.name if role == "output" and baseline.prediction else name
            report[key][own] = entry
            anomalies.extend({**a, "feature": own} for a in found)
        if role == "input":  # outputs beside the prediction (probabilities) are expected
            anomalies.extend(unexpected_features(role, section, types, rows.get(role, 0)))
    importances = baseline.importances or baseline.attribution_means
    for name, entry in report["features"].items():
        if name in importances:
            entry["importance"] = importances[name]
    _verdict(report, baseline)
    return report


class _RawFigures:
    """The window's counts read from the store's rows (``baseline.window``)."""

    def __init__(self, cursor: Any, start: datetime, end: datetime) -> None:
        self.cursor, self.start, self.end = cursor, start, end

    def window_rows(self) -> dict[str, int]:
        return window_rows(self.cursor, self.start, self.end)

    def parse_failures(self) -> tuple[int, int]:
        return parse_failures(self.cursor, self.start, self.end)

    def numeric_counts(self, role: str, features: list[FeatureBaseline]) -> dict:
        return numeric_counts(self.cursor, role, features, self.start, self.end)

    def categorical_counts(self, role: str, features: list[FeatureBaseline]) -> dict:
        return categorical_counts(self.cursor, role, features, self.start, self.end)

    def values_per_role(self) -> dict[str, int]:
        return values_per_role(self.cursor, self.start, self.end)

    def type_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        return type_counts(self.cursor, self.start, self.end)

    def output_fields(self) -> dict[str, dict]:
        return output_fields(self.cursor, {"start": self.start, "end": self.end}, 1)


def _outputs(
    source: Any,
    baseline: Baseline,
    override: str | None,
    mapping: dict[str, Any],
    argmax: dict[str, tuple[list[str], list[str]]],
) -> dict[str, FeatureBaseline]:
    """The baseline's prediction keyed by the served output compared with it (the baseline's
    own name when none is), and the report's ``mapping.prediction``; a probability vector
    compared by its most likely class gets its fields and slot classes in ``argmax``."""
    expected = baseline.prediction
    if expected is None:
        return {}
    fields = source.output_fields()
    declared = {o["name"]: o["datatype"] for o in (mapping["metadata"] or {}).get("outputs", [])}
    choice = choose_fields(fields, override, None, expected.name, expected.dtype, declared)
    served = choice.prediction
    found = {"output": served, "argmax": choice.argmax, "reason": choice.reason}
    if served is None:
        found["reason"] = choice.notes[-1] if choice.notes else None
    elif choice.argmax:  # the window holds class probabilities; the baseline holds classes
        classes, how = slot_classes(expected, len(choice.vector))
        mapping["prediction"] = found
        if classes is None:
            found["reason"] = f"{choice.reason}; not compared: {how}"
            return {}
        found["reason"] = f"{choice.reason}; compared as classes, {how}"
        found["classes"] = classes
        argmax[served] = (choice.vector, classes)
    mapping["prediction"] = found
    # no output found: the baseline's name, which no output has, reports the prediction missing
    return {served or expected.name: replace(expected, name=served or expected.name)}


def _types(
    source: Any,
    baseline: Baseline,
    outputs: dict[str, FeatureBaseline],
    windows: dict[str, dict[str, NumericWindow | CategoricalWindow]],
) -> dict[tuple[str, str], dict[str, int]]:
    """Values per (role, name) and type, for the roles the report looks at.

    Nulls never count as present, so when the bins and categories account for every other
    stored value of those roles (each is a baseline feature's, of its type), the counts follow
    from them; otherwise one more query counts every (role, name, type).
    """
    roles = [role for role, _ in _ROLES if role == "input" or outputs]
    stored = source.values_per_role()
    if any(stored[role] != sum(w.values for w in windows[role].values()) for role in roles):
        return source.type_counts()
    types = {}
    for role in roles:
        section = _section(baseline, role, outputs)
        for name, window in windows[role].items():
            if window.values:
                types[role, name] = {section[name].dtype: window.values}
    return types


def _section(
    baseline: Baseline, role: str, outputs: dict[str, FeatureBaseline]
) -> dict[str, FeatureBaseline]:
    return baseline.features if role == "input" else outputs


def _verdict(report: dict[str, Any], baseline: Baseline) -> None:
    drifted_inputs = rank([n for n, e in report["features"].items() if e["drifted"]], baseline)
    drifted_outputs = [n for n, e in report["prediction"].items() if e["drifted"]]
    critical = any(e.get("critical") and e["drifted"] for e in report["features"].values())
    share = baseline.drift_share
    enough = bool(drifted_inputs) and (
        share is None or len(drifted_inputs) >= share * max(len(report["features"]), 1)
    )
    report["drifted_features"] = drifted_inputs + drifted_outputs
    multivariate = (report.get("multivariate") or {}).get("drifted", False)
    attributions = bool((report.get("attributions") or {}).get("drifted_features"))
    report["drift_detected"] = (
        critical or enough or bool(drifted_outputs) or multivariate or attributions
    )
    report["skew_detected"] = bool(report["schema_anomalies"])
    outliers = (report.get("outliers") or {}).get("detected", False)
    alert = report["drift_detected"] or report["skew_detected"] or outliers
    report["status"] = "alert" if alert else "ok"


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
