"""Printing what a benchmark found: markdown tables, each figure beside its target and the
peer's figure from the same run, and the same text (and JSON) written where asked."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def table(items: Iterable[T], columns: Mapping[str, Callable[[T], object]]) -> str:
    """A markdown table with a row per item: each column's header beside how its cell is made."""
    return markdown_table(list(columns), ([get(i) for get in columns.values()] for i in items))


def cell(value: float | None, spec: str) -> str:
    """A figure in a table; a dash where there is none (None, or NaN for a run switched off)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


@dataclass
class Figure:
    """One figure of a run, its target, and the peer's figure from the same run."""

    name: str
    value: float | None
    target: str = "—"  # as printed: "≥ 0.98", "≤ 1 ms", "—" where there is none
    peer: float | None = None
    spec: str = ".2f"
    ok: Callable[[float], bool] | None = None  # whether ``value`` meets the target
    note: str = ""  # printed in the "met" column instead, where there is no verdict

    @property
    def met(self) -> str:
        if self.note:
            return self.note
        if self.ok is None or self.value is None or math.isnan(self.value):
            return ""
        return met(self.ok(self.value))


def figures_table(
    figures: Iterable[Figure],
    ours: str = "inferwatch",
    peer: str = "peer",
    lead: Sequence[str] = (),
    leads: Sequence[Sequence[object]] = (),
) -> str:
    """A table of figures: figure, target, ours, the peer's, met. ``lead`` names columns put in
    front, ``leads`` their cells, one row a figure."""
    rows = []
    for i, f in enumerate(figures):
        front = list(leads[i]) if leads else []
        rows.append([*front, f.name, f.target, cell(f.value, f.spec), cell(f.peer, f.spec), f.met])
    return markdown_table([*lead, "figure", "target", ours, peer, "met"], rows)


def emit(
    text: str,
    markdown: str | None = None,
    json_out: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Print ``text``; write it to ``markdown`` and ``payload`` to ``json_out`` where named."""
    print(text)
    if markdown:
        Path(markdown).write_text(text + "\n", encoding="utf-8")
    if json_out and payload is not None:
        Path(json_out).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def add_run_args(
    parser: argparse.ArgumentParser,
    rounds: int,
    duration: float,
    connections: int,
    warmup: float = 3.0,
    quick: str = "smoke run",
) -> None:
    """The flags every wrk benchmark takes: interleaved rounds of measured runs after a warm-up
    at some connections, the folder its files are kept in, where the report goes, --quick."""
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (median)")
    parser.add_argument("--duration", type=float, default=duration, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of load first")
    parser.add_argument("--connections", type=int, default=connections, help="wrk connections")
    parser.add_argument("--workdir", help="where DuckDB files and server logs go (kept)")
    parser.add_argument("--quick", action="store_true", help=quick)
    add_output_args(parser)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--markdown``: where the figures are written besides stdout."""
    parser.add_argument("--json", dest="json_out", help="write every run's figures here")
    parser.add_argument("--markdown", help="write the report here as well")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How this run was started, to print with its figures."""
    return "python " + " ".join([f"benchmarks/{script}", *(argv or sys.argv[1:])])


def verdict(ok: bool | None) -> str:
    """A check's cell: blank where it did not apply, loud where it failed."""
    return "" if ok is None else ("yes" if ok else "**NO**")
