"""Schema anomalies: what a window holds that the baseline says it should not (TFDV's skew).

Each anomaly has ``feature``, ``type``, ``share`` and a one-line ``detail``; the margins keep
sampling noise out (docs/drift.md, "Schema anomalies").
"""

from __future__ import annotations

import math
from typing import Any

from ..baseline.file import FeatureBaseline
from ..baseline.window import CategoricalWindow, NumericWindow

__all__ = [
    "MAX_UNEXPECTED",
    "MISSING_MARGIN",
    "SMALL_SHARE",
    "feature_anomalies",
    "parse_anomaly",
    "rounded",
    "unexpected_features",
]

# the share above which type_mismatch, unseen_categories, out_of_range, unexpected_feature
# and parse_error are raised (docs/drift.md, "Schema anomalies")
SMALL_SHARE = 0.01
MISSING_MARGIN = 0.05  # completeness: a missing share 5 points over the baseline's, plus noise
MAX_UNEXPECTED = 20


def rounded(value: float) -> float:
    """A figure of the report, to 6 decimals."""
    return round(float(value), 6)


def feature_anomalies(
    fb: FeatureBaseline,
    rows: int,
    present: int,
    same_type: int,
    other_types: int,
    types: dict[str, int],
    w: Any,
) -> list[dict[str, Any]]:
    """One feature's anomalies: ``rows`` in the window, ``present`` values of any type,
    ``same_type`` of its dtype, ``other_types`` of others (per type in ``types``) and ``w``
    its window counts."""
    found: list[dict[str, Any]] = []

    def add(kind: str, share: float, detail: str) -> None:
        found.append({"feature": fb.name, "type": kind, "share": rounded(share), "detail": detail})

    base_missing = fb.missing_share
    if present == 0:
        if rows * (1.0 - base_missing) >= 5:
            add(
                "missing_feature",
                1.0,
                f"no value in {rows} rows; the baseline has one in "
                f"{100 * (1 - base_missing):.1f}% of rows",
            )
        return found
    missing_share = max(rows - present, 0) / rows
    if missing_share > base_missing + _margin_of(base_missing, rows, MISSING_MARGIN):
        add(
            "completeness",
            missing_share,
            f"missing in {100 * missing_share:.1f}% of rows; "
            f"the baseline in {100 * base_missing:.1f}%",
        )
    if other_types / present > SMALL_SHARE:
        seen = ", ".join(
            f"{n} {t}" for t, n in sorted(types.items()) if t not in (fb.dtype, "null")
        )
        add("type_mismatch", other_types / present, f"{seen} values; the baseline has {fb.dtype}")
    if same_type == 0:
        return found
    non_finite = (w.nan + w.inf) if isinstance(w, NumericWindow) else w.non_finite
    base_share = fb.non_finite / max(fb.rows - fb.missing, 1)
    share = non_finite / same_type
    if non_finite and (
        fb.non_finite == 0 or share > base_share + _margin_of(base_share, same_type, 0.0)
    ):
        add(
            "non_finite",
            share,
            f"{non_finite} NaN or infinite values; the baseline has {100 * base_share:.2f}%",
        )
    if isinstance(w, NumericWindow) and fb.edges:
        far = w.far_below + w.far_above
        if far / same_type > SMALL_SHARE:
            add(
                "out_of_range",
                far / same_type,
                f"{w.far_below} values below {fb.edges[0]:.6g} and "
                f"{w.far_above} above {fb.edges[-1]:.6g}, by more than a tenth of the range",
            )
    if isinstance(w, CategoricalWindow) and fb.complete and w.outside / same_type > SMALL_SHARE:
        shown = ", ".join(repr(k) for k, _ in w.examples)
        add(
            "unseen_categories",
            w.outside / same_type,
            f"{w.outside_distinct} values the baseline never had, such as {shown}",
        )
    return found


def _margin_of(share: float, n: int, floor: float) -> float:
    """The floor plus four binomial standard errors, so that noise alone stays under it."""
    return floor + 4.0 * math.sqrt(max(share * (1.0 - share), 1.0 / max(n, 1)) / max(n, 1))


def unexpected_features(
    role: str, section: dict[str, FeatureBaseline], types: dict, rows: int
) -> list[dict[str, Any]]:
    """``unexpected_feature`` anomalies: names of ``role`` in ``types`` but not in ``section``,
    present in more than 1% of the window's ``rows``, the most frequent first."""
    extra = []
    for (r, name), by_type in types.items():
        if r == role and name not in section:
            present = sum(n for t, n in by_type.items() if t != "null")
            if rows and present / rows > SMALL_SHARE:
                extra.append((present, name))
    extra.sort(key=lambda item: (-item[0], item[1]))
    what = "input feature" if role == "input" else "prediction output"
    found = [
        {
            "feature": name,
            "type": "unexpected_feature",
            "share": rounded(n / rows),
            "detail": f"{what} not in the baseline, present in {n} of {rows} rows",
        }
        for n, name in extra[:MAX_UNEXPECTED]
    ]
    if len(extra) > MAX_UNEXPECTED:
        found.append(
            {
                "feature": None,
                "type": "unexpected_feature",
                "share": None,
                "detail": f"{len(extra) - MAX_UNEXPECTED} more {what}s not listed",
            }
        )
    return found


def parse_anomaly(total: int, failed: int) -> list[dict[str, Any]]:
    """A ``parse_error`` anomaly when more than 1% of ``total`` requests ``failed`` to parse."""
    if not total or failed / total <= SMALL_SHARE:
        return []
    return [
        {
            "feature": None,
            "type": "parse_error",
            "share": rounded(failed / total),
            "detail": f"{failed} of {total} request bodies could not be parsed "
            "(not JSON, malformed, or of no known shape)",
        }
    ]
