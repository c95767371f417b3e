"""Explainer answers read as per-feature attributions, stored where ``attributions_field`` reads.

KServe's V1 ``/v1/models/NAME:explain`` answers an Alibi explanation as JSON, and MLServer's
alibi-explain runtime answers a V2 response whose ``explain`` output is a BYTES tensor holding
the same JSON. For SHAP explainers (KernelShap, TreeShap) its ``data.shap_values`` holds one
(instances x features) array per model output. The writer rewrites such an answer as
``{"predictions": [{"attributions": {feature: value}}, ...]}``, one row per instance, so that the
attributions are stored as ``prediction.attributions.<feature>`` and checked by the same code as
attributions a model returns itself.

Of several outputs (classes), each instance keeps the attributions of the class it was
predicted (``data.raw.prediction``), as the attributions that explain the answer the client
got; without predicted classes, the mean absolute attribution over classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["EXPLAINED_FIELD", "explained_body"]

EXPLAINED_FIELD = "prediction.attributions"
"""The output field that explainer attributions are stored under."""


def explained_body(body: bytes, columns: Sequence[str] | None = None) -> bytes | None:
    """``body`` rewritten as attributions per instance when it is a SHAP explanation (either
    form), else None. Feature names come from the explanation, else ``columns`` (the baseline's
    column order), else the attributions are stored by position."""
    if b"shap_values" not in body:  # a cheap test: most answers are no explanation
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    explanation = _v2_explanation(doc) if isinstance(doc, dict) and "outputs" in doc else doc
    rows = _attributions(explanation, columns)
    return orjson.dumps({"predictions": rows}) if rows is not None else None


def _v2_explanation(doc: dict[str, Any]) -> Any:
    """The explanation JSON inside an Open Inference Protocol response's BYTES output."""
    for output in doc.get("outputs") or ():
        if isinstance(output, dict) and output.get("datatype") == "BYTES":
            data = output.get("data")
            text = data[0] if isinstance(data, list) and len(data) == 1 else None
            if isinstance(text, str) and "shap_values" in text:
                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError:
                    return None
    return None


def _attributions(explanation: Any, columns: Sequence[str] | None) -> list[dict[str, Any]] | None:
    data = explanation.get("data") if isinstance(explanation, dict) else None
    if not isinstance(data, dict):
        return None
    arrays = data.get("shap_values")
    if not _is_array3(arrays):
        return None
    instances, width = len(arrays[0]), len(arrays[0][0]) if arrays[0] else 0
    if any(len(a) != instances or any(len(r) != width for r in a) for a in arrays):
        return None
    raw = data.get("raw")
    predicted = raw.get("prediction") if isinstance(raw, dict) else None
    meta = explanation.get("meta")
    names = data.get("feature_names") or (
        meta.get("feature_names") if isinstance(meta, dict) else None
    )
    if not (
        isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names)
    ):
        names = list(columns) if columns is not None and len(columns) == width else None
    rows = []
    for i in range(instances):
        values = _row(arrays, i, predicted)
        rows.append({"attributions": dict(zip(names, values, strict=True)) if names else values})
    return rows


def _row(arrays: list[list[list[Any]]], i: int, predicted: Any) -> list[float | None]:
    """Instance ``i``'s attribution per feature (see the module's note on several classes)."""
    if len(arrays) == 1:
        return [_number(v) for v in arrays[0][i]]
    if isinstance(predicted, list) and len(predicted) == len(arrays[0]):
        label = predicted[i]
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(arrays):
            return [_number(v) for v in arrays[label][i]]
    per_class = [[_number(v) for v in a[i]] for a in arrays]
    return [
        sum(abs(v) for v in column) / len(column) if None not in column else None  # type: ignore[arg-type]
        for column in zip(*per_class, strict=True)
    ]


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _is_array3(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(a, list) and all(isinstance(r, list) for r in a) for a in value)
    )
