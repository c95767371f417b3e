"""Which captured output field is the prediction, and which the probability.

A response may carry several fields; the evaluation reads the window's output fields once
(counts per bucket, types and ranges) and picks by name first, then by what the values look
like. docs/evaluation.md lists the rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np

__all__ = ["OUTPUT_WINDOW", "PREDICTION_NAMES", "FieldChoice", "choose_fields", "output_fields"]

PREDICTION_NAMES = frozenset(
    {"prediction", "predictions", "label", "class", "y", "output", "finish_reason"}
)
"""Last name segments that mark an output field as the prediction."""
OUTPUT_WINDOW = "role = 'output' AND ts >= $start AND ts < $end"
"""SQL filter of ``features`` rows: the outputs captured in [$start, $end)."""

_LABEL_TYPES = ("BYTES", "BOOL", "INT", "UINT")  # tensor datatypes of class labels
_PROBABILITY = re.compile(r"prob|score|confidence", re.IGNORECASE)
_SLOT = re.compile(r"^(.*)\[(\d+)\]$")
_MAX_SLOTS = 100  # a longer probability vector is not read: n x k floats in memory


@dataclass(slots=True)
class FieldChoice:
    """The prediction field and the probability field(s) chosen, with notes on why."""

    prediction: str | None = None
    vector: list[str] = field(default_factory=list)  # probability fields, by class slot
    scalar: str | None = None  # a single probability field
    argmax: bool = False  # the prediction is the vector's most likely slot
    notes: list[str] = field(default_factory=list)
    reason: str | None = None  # why the prediction is this output, in one sentence


def output_fields(
    cursor: duckdb.DuckDBPyConnection, span: dict[str, datetime], buckets: int
) -> dict[str, dict]:
    """Each output field of the window: rows per bucket, strings, numbers, range, integrality."""
    finite = "type = 'number' AND isfinite(num)"
    width = max((span["end"] - span["start"]).total_seconds() * 1e6 / buckets, 1.0)
    found = cursor.execute(
        "SELECT name, floor((epoch_us(ts) - epoch_us($start)) / $width)::BIGINT AS b, "  # noqa: S608
        f"count(*), count(*) FILTER (WHERE type = 'string'), count(*) FILTER (WHERE {finite}), "
        f"min(num) FILTER (WHERE {finite}), max(num) FILTER (WHERE {finite}), "
        f"bool_and(num = trunc(num)) FILTER (WHERE {finite}) "
        f"FROM features WHERE {OUTPUT_WINDOW} GROUP BY name, b",
        {**span, "width": width},
    ).fetchall()
    fields: dict[str, dict] = {}
    for name, bucket, rows, strings, numbers, low, high, integral in found:
        stats = fields.setdefault(
            name,
            {
                "buckets": np.zeros(buckets, dtype=np.int64),
                "strings": 0,
                "numbers": 0,
                "low": math.inf,
                "high": -math.inf,
                "integral": True,
            },
        )
        stats["buckets"][min(max(int(bucket), 0), buckets - 1)] += rows
        stats["strings"] += strings
        stats["numbers"] += numbers
        if numbers:
            stats["low"], stats["high"] = min(stats["low"], low), max(stats["high"], high)
            stats["integral"] = stats["integral"] and integral
    return fields


def _is_probability(stats: dict) -> bool:
    return stats["numbers"] > 0 and stats["low"] >= 0 and stats["high"] <= 1


def _fits(stats: dict, dtype: str | None) -> bool:
    """Whether an output's values are of the type the baseline's prediction has."""
    if dtype == "string":
        return stats["strings"] > 0
    return stats["numbers"] > 0 if dtype == "number" else True  # booleans are neither


def _is_label(stats: dict) -> bool:
    """Class labels: strings, or whole numbers (probabilities are fractions in [0, 1])."""
    return stats["strings"] > 0 or (stats["numbers"] > 0 and stats["integral"])


def _same(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return "".join(c for c in name.rsplit(".", 1)[-1].lower() if c.isalnum())

    return norm(a) == norm(b)


def choose_fields(
    fields: dict[str, dict],
    prediction: str | None,
    probability: str | None,
    expected: str | None = None,
    expected_dtype: str | None = None,
    datatypes: Mapping[str, str] | None = None,
) -> FieldChoice:
    """Which output field is the prediction and which the probability (docs: inference).

    ``prediction`` (the ``prediction_output`` setting) overrides; else the baseline's prediction
    column ``expected`` (of type ``expected_dtype``) when it is served under its own name, else
    the output whose name matches it, else the only output, else the one whose values fit (class
    labels before probabilities); a probability vector stands for its most likely class.
    ``datatypes`` are the outputs' tensor datatypes from the model's metadata, which tell class
    labels (``BYTES``, integers, ``BOOL``) from scores (``FP32``) better than the values do.
    """
    choice = FieldChoice()
    vectors: dict[str, list[tuple[int, str]]] = {}
    for name in fields:
        if match := _SLOT.match(name):
            vectors.setdefault(match[1], []).append((int(match[2]), name))
    slots = {base: [n for _, n in sorted(v)] for base, v in vectors.items()}
    scalars = [n for n in fields if not _SLOT.match(n)]

    def leaf(name: str) -> str:
        return name.rsplit(".", 1)[-1].lower()

    def probable(name: str) -> bool:
        return bool(_PROBABILITY.search(leaf(name))) and _is_probability(fields[name])

    def take(name: str, reason: str) -> None:
        if name in slots:
            choice.prediction, choice.argmax, choice.vector = name, True, slots[name]
            reason += "; its most likely class is the prediction"
        else:
            choice.prediction = name
        choice.reason = reason

    prob_vectors = [
        base
        for base, names in slots.items()
        if all(_is_probability(fields[n]) for n in names) and len(names) <= _MAX_SLOTS
    ]
    if prediction is not None:
        base = prediction.removesuffix("[*]")
        if prediction in fields or base in slots:
            take(prediction if prediction in fields else base, "set by prediction_output")
        else:
            choice.notes.append(f"No output field {prediction!r} in the window.")
            return choice
    elif expected is not None and (expected in fields or expected in slots):
        take(expected, f"the baseline's prediction column {expected!r}")
    elif expected is not None and (
        matched := [n for n in [*scalars, *prob_vectors] if _same(n, expected)]
    ):
        take(matched[0], f"its name matches the baseline's prediction column {expected!r}")
    elif len(scalars) + len(slots) == 1 and (scalars or prob_vectors):
        take([*scalars, *prob_vectors][0], "the only output")
    else:
        fit = [n for n in scalars if _fits(fields[n], expected_dtype)]
        named = [n for n in fit if leaf(n) in PREDICTION_NAMES]
        declared = datatypes or {}

        def label(name: str) -> bool:
            if name in declared:
                return str(declared[name]).upper().startswith(_LABEL_TYPES)
            return _is_label(fields[name])

        # class labels beat probabilities: fractions in [0, 1], or a probability's name
        others = [n for n in fit if not probable(n) and label(n)]
        others += [n for n in fit if not label(n) and not _is_probability(fields[n])]
        typed = f"{expected_dtype} " if expected_dtype else ""
        if len(named) == 1:
            take(named[0], "the only output with a prediction's name")
        elif len(others) == 1:
            kind = "class labels" if label(others[0]) else "values"
            take(others[0], f"the only output of {typed}{kind} that are not probabilities")
        elif not fit and len(prob_vectors) == 1:
            take(prob_vectors[0], "the only probability vector")
        else:
            listed = ", ".join(sorted(fields)[:10]) or "none"
            choice.notes.append(
                f"Cannot tell which output field is the prediction (output fields: {listed}); "
                "set the prediction_output setting."
            )
            return choice
    if choice.argmax:
        return choice
    if probability is not None:
        base = probability.removesuffix("[*]")
        if probability in fields:
            choice.scalar = probability
        elif base in slots:
            choice.vector = slots[base]
        else:
            choice.notes.append(f"No output field {probability!r} in the window.")
        return choice
    singles = [n for n in scalars if n != choice.prediction and probable(n)]
    vectors_named = [b for b in prob_vectors if _PROBABILITY.search(leaf(b))]
    if len(singles) == 1:
        choice.scalar = singles[0]
    elif not singles and len(vectors_named) == 1:
        choice.vector = slots[vectors_named[0]]
    elif not singles and not vectors_named and len(prob_vectors) == 1:
        choice.vector = slots[prob_vectors[0]]  # beside the labels, a [0, 1] vector is theirs
    elif singles or vectors_named:
        choice.notes.append("More than one output field could be the probability; none is used.")
    return choice
