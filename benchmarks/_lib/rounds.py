"""Interleaved rounds and their medians: on a machine whose speed drifts, only figures taken in
the same minutes compare, so every round runs every variant and the medians are reported."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleaved(variants: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """Each round runs every variant; the order rotates so that no variant always goes first."""
    order = []
    for rnd in range(rounds):
        shift = rnd % len(variants)
        for variant in (*variants[shift:], *variants[:shift]):
            order.append((rnd + 1, variant))
    return order


def ratio(value: float, base: float) -> float:
    """``value / base``; NaN where ``base`` is 0 or NaN."""
    return value / base if base else float("nan")
