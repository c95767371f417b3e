"""Alert rules: what is wrong, read from the health, drift and evaluation reports.

A rule's check returns a :class:`Finding` (its condition holds or not, in a sentence that says by
how much) or None when the report cannot tell: no baseline, too few rows or labels, no cgroup
limit, no GPU. None neither advances nor clears an episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MonitorError
from .options import AlertOptions

__all__ = ["RULES", "Finding", "Rule", "make_rules", "percentile_key", "select_rules"]

Report = dict[str, Any]
_UNKNOWN_DRIFT = {"insufficient_data", "no_baseline"}
_UNKNOWN_QUALITY = {"insufficient_labels", "no_labels", "unknown_prediction"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one report: whether its condition holds, and a sentence saying so."""

    met: bool
    summary: str
    value: float | None = None
    threshold: float | None = None
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """A named condition on one kind of report (``health``, ``drift`` or ``evaluation``)."""

    name: str
    title: str
    source: str
    severity: str
    look: str
    check: Callable[[Report, AlertOptions], Finding | None]


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "?"


def _gib(size: Any) -> str:
    return f"{size / 2**30:.1f} GiB" if isinstance(size, int | float) else "?"


def _top(lines: Sequence[str], keep: int = 10) -> tuple[str, ...]:
    extra = len(lines) - keep
    return (*lines[:keep], f"and {extra} more") if extra > 0 else tuple(lines)


def _schema_skew(report: Report, _: AlertOptions) -> Finding | None:
    if report.get("status") in _UNKNOWN_DRIFT:
        return None
    anomalies = [a for a in report.get("schema_anomalies") or [] if isinstance(a, dict)]
    if not anomalies:
        return Finding(False, "no schema anomalies")
    lines = [
        f"{a.get('feature')}: {a.get('type')} in {_pct(a.get('share') or 0.0)} of rows"
        + (f" ({a['detail']})" if a.get("detail") else "")
        for a in anomalies
    ]
    more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
    worst = max(float(a.get("share") or 0.0) for a in anomalies)
    summary = f"{len(lines)} schema anomal{'y' if len(lines) == 1 else 'ies'}: {lines[0]}{more}"
    return Finding(True, summary, worst, None, _top(lines))


def _drift(group: str, noun: str) -> Callable[[Report, AlertOptions], Finding | None]:
    def check(report: Report, _: AlertOptions) -> Finding | None:
        if report.get("status") in _UNKNOWN_DRIFT:
            return None
        items = {k: v for k, v in (report.get(group) or {}).items() if isinstance(v, dict)}
        drifted = [(name, item) for name, item in items.items() if item.get("drifted")]
        if not drifted:
            return Finding(False, f"no {noun} drifted ({len(items)} checked)")

        def excess(pair: tuple[str, dict]) -> float:
            score, threshold = pair[1].get("score"), pair[1].get("threshold")
            ok = isinstance(score, int | float) and isinstance(threshold, int | float)
            return score / threshold if ok and threshold > 0 else 0.0

        def weight(pair: tuple[str, dict]) -> tuple[float, float]:
            # the baseline's feature importance first, when it has one: the drift that matters
            importance = pair[1].get("importance")
            return (importance if isinstance(importance, int | float) else -1.0, excess(pair))

        drifted.sort(key=weight, reverse=True)
        names = ", ".join(name for name, _ in drifted[:5]) + (", ..." if len(drifted) > 5 else "")
        lines = [
            f"{name}: score {_num(item.get('score'))} over threshold {_num(item.get('threshold'))}"
            + (f" ({item['method']})" if item.get("method") else "")
            + (f", importance {_num(item['importance'])}" if "importance" in item else "")
            for name, item in drifted
        ]
        summary = f"{len(drifted)} of {len(items)} {noun} drifted: {names}"
        return Finding(True, summary, float(len(drifted)), None, _top(lines))

    return check


def _scored(report: Report, key: str) -> dict[str, Any] | None:
    """A drift report's ``multivariate`` or ``outliers`` section when it gives a verdict."""
    section = report.get(key)
    if report.get("status") in _UNKNOWN_DRIFT or not isinstance(section, dict):
        return None
    return None if section.get("status") == "insufficient_data" else section


def _multivariate(report: Report, _: AlertOptions) -> Finding | None:
    section = _scored(report, "multivariate")
    if section is None:
        return None
    mean, upper = section.get("mean_score"), section.get("upper")
    summary = (
        f"mean Mahalanobis distance {_num(mean)} over {section.get('rows')} rows; the baseline "
        f"gives {_num(section.get('lower'))} to {_num(upper)} for a window this size "
        f"(z {_num(section.get('z'))})"
    )
    return Finding(bool(section.get("drifted")), summary, mean, upper)


def _outliers(report: Report, _: AlertOptions) -> Finding | None:
    section = _scored(report, "outliers")
    if section is None:
        return None
    lines = [
        f"{row.get('request_id')} row {row.get('row_index')}: score {_num(row.get('score'))}"
        + (f" ({', '.join(str(f.get('name')) for f in row.get('features') or [])})")
        for row in section.get("top") or []
        if isinstance(row, dict)
    ]
    share, expected = section.get("share") or 0.0, section.get("expected_share") or 0.0
    summary = (
        f"{_pct(share)} of rows are outliers ({section.get('count')} of {section.get('rows')}); "
        f"the baseline has {_pct(expected)} (p = {_num(section.get('p_value'))})"
    )
    return Finding(bool(section.get("detected")), summary, share, expected, _top(lines))


def _attributions(report: Report, options: AlertOptions) -> Finding | None:
    section = _scored(report, "attributions")
    if section is None:
        return None
    features = {k: v for k, v in (section.get("features") or {}).items() if isinstance(v, dict)}
    drifted = [n for n in section.get("drifted_features") or [] if n in features]
    if not drifted:
        return Finding(False, f"no feature's attributions drifted ({len(features)} checked)")
    lines = [
        f"{name}: mean |attribution| {_num(features[name].get('mean_abs'))} (baseline "
        f"{_num(features[name].get('baseline_mean_abs'))}), score "
        f"{_num(features[name].get('score'))} over {_num(features[name].get('threshold'))}"
        for name in drifted
    ]
    names = ", ".join(drifted[:5]) + (", ..." if len(drifted) > 5 else "")
    summary = f"attributions of {len(drifted)} of {len(features)} features drifted: {names}"
    return Finding(True, summary, float(len(drifted)), None, _top(lines))


def _quality(report: Report, _: AlertOptions) -> Finding | None:
    if report.get("status") in _UNKNOWN_QUALITY:
        return None
    reasons = [str(reason) for reason in report.get("reasons") or []]
    if not (report.get("degraded") or report.get("status") == "degraded"):
        return Finding(False, "model quality is within its margin of the baseline's")
    metrics, baseline = report.get("metrics") or {}, report.get("baseline") or {}
    versus = [
        f"{key}: {_num(value)} (baseline {_num(baseline[key])})"
        for key, value in metrics.items()
        if isinstance(value, int | float) and isinstance(baseline.get(key), int | float)
    ]
    summary = "model quality degraded: " + ("; ".join(reasons[:3]) or "see /evaluation")
    return Finding(True, summary, None, None, _top(reasons + versus))


def _error_rate(report: Report, options: AlertOptions) -> Finding | None:
    requests = report.get("requests") or {}
    count, rate = requests.get("count"), requests.get("error_rate")
    if count is None or rate is None:
        return None
    limit = options.alert_error_rate
    summary = (
        f"5xx error rate {_pct(rate)} ({requests.get('errors', '?')} of {count} requests in the "
        f"last {_num(report.get('window_s'))} s); alert at {_pct(limit)}"
    )
    return Finding(count >= options.alert_min_requests and rate >= limit, summary, rate, limit)


def percentile_key(text: str) -> str:
    """``p99`` from ``p99``, ``P99`` or ``99``; ValueError for other percentiles."""
    key = "p" + text.strip().lower().removeprefix("p")
    if key not in {"p50", "p90", "p95", "p99"}:
        raise ValueError(f"{text!r} is not one of p50, p90, p95 or p99")
    return key


def _latency(report: Report, options: AlertOptions) -> Finding | None:
    key = percentile_key(options.alert_latency_percentile)
    count = (report.get("requests") or {}).get("count")
    value = (report.get("latency_ms") or {}).get(key)
    if count is None or value is None:
        return None
    target = options.alert_latency * 1000.0
    summary = (
        f"{key} latency {value:.0f} ms over {count} requests in the last "
        f"{_num(report.get('window_s'))} s; target {target:.0f} ms"
    )
    return Finding(count >= options.alert_min_requests and value > target, summary, value, target)


class _CaptureLoss:
    """Share of captures lost (queue full or store errors) since the previous health report."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def __call__(self, report: Report, options: AlertOptions) -> Finding | None:
        capture = report.get("capture") or {}
        if capture.get("sampled") is None:
            return None
        sampled = int(capture["sampled"])
        lost = int(capture.get("dropped") or 0) + int(capture.get("write_errors") or 0)
        before = self._last if sampled >= self._last[0] and lost >= self._last[1] else (0, 0)
        self._last = (sampled, lost)
        new, gone = sampled - before[0], lost - before[1]
        share = min(1.0, gone / new) if new > 0 else float(gone > 0)
        limit = options.alert_drop_rate
        summary = (
            f"{_pct(share)} of captured requests lost since the last check ({gone} of {new}: "
            f"writer queue full or log store errors); alert at {_pct(limit)}"
        )
        return Finding(gone > 0 and share >= limit, summary, share, limit)


def _memory(report: Report, options: AlertOptions) -> Finding | None:
    cgroup = (report.get("resources") or {}).get("cgroup") or {}
    used = cgroup.get("memory_used_percent")
    if used is None:
        return None
    limit = options.alert_memory_percent
    summary = (
        f"memory at {used:.1f}% of the cgroup limit ({_gib(cgroup.get('memory_current_bytes'))} "
        f"of {_gib(cgroup.get('memory_max_bytes'))}); alert at {limit:g}%"
    )
    return Finding(used >= limit, summary, used, limit)


def _gpu_memory(report: Report, options: AlertOptions) -> Finding | None:
    gpus = [
        (gpu, gpu["memory_used_bytes"] / gpu["memory_total_bytes"] * 100.0)
        for gpu in (report.get("resources") or {}).get("gpus") or []
        if gpu.get("memory_used_bytes") is not None and gpu.get("memory_total_bytes")
    ]
    if not gpus:
        return None
    limit = options.alert_gpu_memory_percent
    lines = [
        f"GPU {gpu.get('index')} ({gpu.get('name')}) memory {used:.1f}% full "
        f"({_gib(gpu['memory_used_bytes'])} of {_gib(gpu['memory_total_bytes'])})"
        for gpu, used in sorted(gpus, key=lambda pair: -pair[1])
    ]
    worst = max(used for _, used in gpus)
    return Finding(worst >= limit, f"{lines[0]}; alert at {limit:g}%", worst, limit, _top(lines))


def make_rules() -> list[Rule]:
    """Fresh rule objects (the capture rule keeps the previous report's counters)."""
    return [
        Rule("schema_skew", "Schema skew", "drift", "warning", "drift", _schema_skew),
        Rule("feature_drift", "Feature drift", "drift", "warning", "drift",
             _drift("features", "input features")),
        Rule("prediction_drift", "Prediction drift", "drift", "warning", "drift",
             _drift("prediction", "prediction outputs")),
        Rule("multivariate_drift", "Multivariate drift", "drift", "warning", "drift",
             _multivariate),
        Rule("outlier_share", "Outlier share", "drift", "warning", "drift", _outliers),
        Rule("attribution_drift", "Attribution drift", "drift", "warning", "drift",
             _attributions),
        Rule("quality", "Model quality", "evaluation", "critical", "evaluation", _quality),
        Rule("error_rate", "Error rate", "health", "critical", "health", _error_rate),
        Rule("latency", "Latency", "health", "warning", "health", _latency),
        Rule("capture_drops", "Capture drops", "health", "warning", "health", _CaptureLoss()),
        Rule("memory", "Memory pressure", "health", "critical", "health", _memory),
        Rule("gpu_memory", "GPU memory", "health", "warning", "health", _gpu_memory),
    ]  # fmt: skip


RULES: tuple[str, ...] = tuple(rule.name for rule in make_rules())
"""Every rule's name, as ``alert_rules`` takes them."""


def select_rules(names: Sequence[str]) -> set[str]:
    """The rules that ``alert_rules`` turns on: ``all``, ``none``, names and ``-name``."""
    chosen = set(RULES) if all(name.startswith("-") for name in names) else set()
    for name in names:
        bare = name.removeprefix("-")
        if bare not in {*RULES, "all", "none"}:
            raise MonitorError(
                f"Bad value for setting alert_rules: {bare!r} is not one of all, none, "
                + ", ".join(RULES)
                + "."
            )
        if bare == "none":
            chosen = set()
            continue
        group = set(RULES) if bare == "all" else {bare}
        chosen = chosen - group if name.startswith("-") else chosen | group
    return chosen
