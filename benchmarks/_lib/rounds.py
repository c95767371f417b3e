"""Interleaved rounds and their medians: on a machine whose speed drifts, only figures taken in
the same minutes compare, so every round runs every variant and the medians are reported."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


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


def medians_by(
    items: Iterable[T],
    key: Callable[[T], Hashable],
    figures: Mapping[str, Callable[[T], float | None]],
) -> dict[Any, dict[str, float]]:
    """Per ``key`` (a variant, say), the median of each figure over its items, in the order
    the keys first appear; an item whose figure is None (a pass switched off) is left out."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    out: dict[Any, dict[str, float]] = {}
    for name, group in groups.items():
        values = {fig: [get(item) for item in group] for fig, get in figures.items()}
        out[name] = {fig: median([v for v in vs if v is not None]) for fig, vs in values.items()}
    return out
