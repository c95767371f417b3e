"""The baseline file: what every feature looked like in the data a model was trained on.

:class:`FeatureBaseline` and :class:`Baseline` are the validated contents of an
``inferwatch-baseline/1`` JSON document; :func:`load_baseline` reads one from disk and refuses a
broken one with one sentence. docs/drift.md describes the format.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ..errors import MonitorError
from ..stats.outliers import OutlierModel
from ..stats.statistics import METHODS

__all__ = ["FORMAT", "Baseline", "FeatureBaseline", "load_baseline"]

FORMAT = "inferwatch-baseline/1"
"""The ``format`` field of every baseline file this version writes and reads."""


@dataclass(frozen=True, slots=True)
class FeatureBaseline:
    """One feature's summary; counts are of the baseline's rows, ``missing`` included."""

    name: str
    kind: str  # numeric | categorical
    dtype: str  # number | string | boolean: the type its values arrive as
    missing: int = 0
    non_finite: int = 0
    invalid: int = 0  # values of another type than ``dtype``
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    values: tuple[str, ...] = ()
    other: int = 0
    distinct: int = 0
    method: str = "jensenshannon"
    threshold: float | None = None
    critical: bool = False

    @property
    def rows(self) -> int:
        """Rows the summary covers: every value, missing and invalid ones included."""
        return sum(self.counts) + self.other + self.missing + self.non_finite + self.invalid

    @property
    def missing_share(self) -> float:
        """Share of the rows where the feature was absent or null."""
        return self.missing / self.rows if self.rows else 0.0

    @property
    def complete(self) -> bool:
        """True when ``values`` lists every category the baseline saw."""
        return self.other == 0

    def bin_counts(self) -> np.ndarray:
        """Counts aligned with the window's bins (docs/drift.md, "Bins").

        numeric: [bins..., below, above, missing, invalid]
        categorical: [values..., other, unseen, missing, invalid]
        """
        extra = [0, 0] if self.kind == "numeric" else [self.other, 0]
        tail = [self.missing, self.non_finite + self.invalid]
        return np.asarray([*self.counts, *extra, *tail], dtype=float)

    def to_json(self) -> dict[str, Any]:
        """The feature's entry of a baseline document (docs/drift.md, "The file")."""
        doc: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype, "missing": self.missing}
        doc["required"] = self.missing == 0
        for key in ("non_finite", "invalid"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        if self.kind == "numeric":
            doc |= {"min": self.minimum, "max": self.maximum, "mean": self.mean, "std": self.std}
            doc |= {"edges": list(self.edges), "counts": list(self.counts)}
        else:
            doc |= {"values": list(self.values), "counts": list(self.counts)}
            doc |= {"other": self.other, "distinct": self.distinct}
        if self.method != "jensenshannon":
            doc["method"] = self.method
        if self.threshold is not None:
            doc["threshold"] = self.threshold
        if self.critical:
            doc["critical"] = True
        return doc

    @classmethod
    def from_json(cls, name: str, doc: Mapping[str, Any]) -> FeatureBaseline:
        """Validate one feature entry; raises ValueError naming what is wrong."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"feature {name!r} is not an object")
        unknown = sorted(set(doc) - _FEATURE_KEYS)
        if unknown:
            raise ValueError(f"feature {name!r} has an unknown key {unknown[0]!r}")
        kind, dtype = doc.get("kind"), doc.get("dtype", "number")
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {name!r} has kind {kind!r}, not numeric or categorical")
        if dtype not in ("number", "string", "boolean"):
            raise ValueError(f"feature {name!r} has dtype {dtype!r}")
        counts = tuple(_count(name, "counts", value) for value in doc.get("counts", ()))
        method = doc.get("method", "jensenshannon")
        if method not in METHODS or (method == "wasserstein" and kind != "numeric"):
            raise ValueError(f"feature {name!r} cannot use method {method!r}")
        threshold = doc.get("threshold")
        if threshold is not None and not (_is_number(threshold) and threshold > 0):
            raise ValueError(f"feature {name!r} has threshold {threshold!r}, not a positive number")
        common: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "dtype": dtype,
            "missing": _count(name, "missing", doc.get("missing", 0)),
            "non_finite": _count(name, "non_finite", doc.get("non_finite", 0)),
            "invalid": _count(name, "invalid", doc.get("invalid", 0)),
            "counts": counts,
            "method": method,
            "threshold": None if threshold is None else float(threshold),
            "critical": bool(doc.get("critical", False)),
        }
        if kind == "categorical":
            values = tuple(doc.get("values", ()))
            if len(values) != len(counts) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"feature {name!r} needs as many string values as counts")
            other = _count(name, "other", doc.get("other", 0))
            distinct = _count(name, "distinct", doc.get("distinct", len(values)))
            return cls(**common, values=values, other=other, distinct=distinct)
        edges = tuple(float(e) for e in doc.get("edges", ()) if _is_number(e))
        if len(edges) != len(doc.get("edges", ())) or (counts and len(edges) != len(counts) + 1):
            raise ValueError(f"feature {name!r} needs numeric edges, one more than its counts")
        constant = len(edges) == 2 and edges[0] == edges[1]
        if not constant and any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"feature {name!r} has edges out of order")
        stats = {k: doc.get(k) for k in ("min", "max", "mean", "std")}
        if any(v is not None and not _is_number(v) for v in stats.values()):
            raise ValueError(f"feature {name!r} has a non-numeric min, max, mean or std")
        return cls(
            **common,
            edges=edges,
            minimum=stats["min"],
            maximum=stats["max"],
            mean=stats["mean"],
            std=stats["std"],
        )


# Every key a baseline file may hold: a misspelt setting (`threshhold`) is an error, not ignored.
_DOCUMENT_KEYS = frozenset(
    {"format", "created_at", "source", "rows", "bins", "columns", "features", "predictions"}
    | {"label", "quality", "drift_share", "outliers", "attributions", "importances"}
)
_FEATURE_KEYS = frozenset(
    {"kind", "dtype", "missing", "required", "non_finite", "invalid", "column"}
    | {"min", "max", "mean", "std", "edges", "counts", "values", "other", "distinct"}
    | {"method", "threshold", "critical"}
)


def parse_attributions(doc: Any) -> tuple[dict[str, FeatureBaseline], dict[str, float]]:
    """The baseline's ``attributions`` entry: a numeric summary and the mean absolute value of
    each feature's training attributions. Raises ValueError naming what is wrong."""
    if not isinstance(doc, Mapping) or set(doc) - {"features", "mean_abs"}:
        raise ValueError("attributions needs only features and mean_abs")
    features, means = doc.get("features"), doc.get("mean_abs")
    if not isinstance(features, Mapping) or not isinstance(means, Mapping):
        raise ValueError("attributions.features and attributions.mean_abs must be objects")
    summaries = {n: FeatureBaseline.from_json(n, v) for n, v in features.items()}
    if any(s.kind != "numeric" for s in summaries.values()) or set(means) != set(summaries):
        raise ValueError("attributions must be numeric, with a mean_abs for each feature")
    return summaries, parse_importances(means, "attributions.mean_abs")


def parse_importances(doc: Any, key: str = "importances") -> dict[str, float]:
    """A map of feature names to non-negative numbers; raises ValueError otherwise."""
    if not isinstance(doc, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in doc.values()
    ):
        raise ValueError(f"{key} must map feature names to non-negative numbers")
    return {str(n): float(v) for n, v in doc.items()}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(name: str, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"feature {name!r} has {key} {value!r}, not a count")
    return value


@dataclass(frozen=True, slots=True)
class Baseline:
    """A loaded, validated baseline (see :func:`load_baseline`)."""

    rows: int
    features: dict[str, FeatureBaseline]
    predictions: dict[str, FeatureBaseline] = field(default_factory=dict)
    label: FeatureBaseline | None = None
    label_column: str | None = None
    quality: dict[str, Any] | None = None
    columns: tuple[str, ...] = ()
    bins: int = 20
    drift_share: float | None = None
    outliers: OutlierModel | None = None
    attributions: dict[str, FeatureBaseline] = field(default_factory=dict)
    attribution_means: dict[str, float] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    path: str | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def prediction(self) -> FeatureBaseline | None:
        """The prediction column's summary (the first of ``predictions``), if it has one."""
        return next(iter(self.predictions.values()), None)

    @classmethod
    def from_document(cls, doc: Any, path: str | None = None) -> Baseline:
        """Validate a parsed baseline document; raises ValueError naming what is wrong."""
        if not isinstance(doc, dict):
            raise ValueError("the file is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
        unknown = sorted(set(doc) - _DOCUMENT_KEYS)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}")
        rows = doc.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError("rows is missing or not a count")
        sections = {}
        for key in ("features", "predictions"):
            section = doc.get(key, {})
            if not isinstance(section, dict):
                raise ValueError(f"{key} is not an object")
            sections[key] = {n: FeatureBaseline.from_json(n, v) for n, v in section.items()}
        label_doc = doc.get("label")
        label = None
        if label_doc is not None:
            if not isinstance(label_doc, dict) or not isinstance(label_doc.get("column"), str):
                raise ValueError("label needs a column name")
            label = FeatureBaseline.from_json(label_doc["column"], label_doc)
        share = doc.get("drift_share")
        if share is not None and not (_is_number(share) and 0 <= share <= 1):
            raise ValueError("drift_share is not a share between 0 and 1")
        columns = doc.get("columns", list(sections["features"]))
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValueError("columns is not a list of names")
        quality = doc.get("quality")
        outliers = doc.get("outliers")
        attributions, means = ({}, {})
        if doc.get("attributions") is not None:
            attributions, means = parse_attributions(doc["attributions"])
        importances = doc.get("importances")
        return cls(
            rows=rows,
            features=sections["features"],
            predictions=sections["predictions"],
            label=label,
            label_column=label.name if label else None,
            quality=quality if isinstance(quality, dict) else None,
            columns=tuple(columns),
            bins=int(doc.get("bins", 20)),
            drift_share=share,
            outliers=OutlierModel.from_json(outliers) if outliers is not None else None,
            attributions=attributions,
            attribution_means=means,
            importances=parse_importances(importances) if importances is not None else {},
            path=path,
            document=doc,
        )


def load_baseline(path: str) -> Baseline:
    """Read and validate a baseline file; raises :class:`MonitorError` on a bad one."""
    try:
        with open(path, "rb") as handle:
            doc = orjson.loads(handle.read())
        return Baseline.from_document(doc, path)
    except OSError as exc:
        raise MonitorError(f"cannot read baseline file {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise MonitorError(f"baseline file {path} is not valid JSON: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise MonitorError(f"baseline file {path} is not a valid baseline: {exc}") from exc
