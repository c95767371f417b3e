"""The latest evaluation as Prometheus gauges, for the engine's ``/metrics`` families."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["evaluation_metrics"]

_QUALITY = ("accuracy", "macro_f1", "log_loss", "roc_auc", "mae", "rmse", "mape", "r2")


def evaluation_metrics(
    report: dict[str, Any] | None, by_model: dict[str, dict[str, Any]] | None = None
) -> Iterator[Metric]:
    """Gauges of the latest evaluation: model quality from joined labels. With ``by_model``
    (each model's latest evaluation) every sample has a ``model`` label, empty for ``report``."""
    reports = [(None, report)] if report else []
    reports += sorted((by_model or {}).items())
    if not reports:
        return
    extra = ["model"] if by_model else []
    quality = GaugeMetricFamily(
        "inferwatch_evaluation_quality",
        "Model quality over the evaluation window, from joined labels.",
        labels=["metric", *extra],
    )
    labels = GaugeMetricFamily(
        "inferwatch_evaluation_labels", "Labels joined in the evaluation window.", labels=extra
    )
    coverage = GaugeMetricFamily(
        "inferwatch_evaluation_label_coverage_ratio",
        "Share of predictions in the window that have a label.",
        labels=extra,
    )
    degraded = GaugeMetricFamily(
        "inferwatch_evaluation_degraded",
        "1 when quality is below the baseline's by more than the margin.",
        labels=extra,
    )
    change = GaugeMetricFamily(
        "inferwatch_evaluation_concept_change_detected",
        "1 when the change detector located a change in the error stream.",
        labels=extra,
    )
    for model, each in reports:
        tag = [model or ""] if by_model else []
        metrics = each.get("metrics") or {}
        for name in _QUALITY:
            if isinstance(metrics.get(name), int | float):
                quality.add_metric([name, *tag], float(metrics[name]))
        if metrics.get("labels") is not None:
            labels.add_metric(tag, metrics["labels"])
        if each.get("coverage") is not None:
            coverage.add_metric(tag, each["coverage"])
        degraded.add_metric(tag, 1.0 if each.get("degraded") else 0.0)
        detected = (each.get("change") or {}).get("detected")
        change.add_metric(tag, 1.0 if detected else 0.0)
    yield quality
    # a family without samples is left out, as before: no labels joined, no coverage yet
    yield from (family for family in (labels, coverage) if family.samples)
    yield from (degraded, change)
