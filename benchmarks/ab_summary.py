"""Tables of medians from the JSON files ``benchmarks/ab.sh`` wrote, before against after.

python benchmarks/ab_summary.py /tmp/inferwatch-ab ingest      # or middleware, proxy
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

SIDES = ("before", "after")


def _runs(out: Path, kind: str, side: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{kind}-{side}-*.json"))]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ingest(out: Path) -> str:
    rows = [
        "| records/request | before: rows per CPU-s | after | ratio |",
        "| --- | --- | --- | --- |",
    ]
    figures: dict[tuple[str, str], list[float]] = {}
    for side in SIDES:
        for payload in _runs(out, "ingest", side):
            for size, runs in payload["throughput"].items():
                figures.setdefault((size, side), []).append(runs[0]["instance_rows_per_cpu_s"])
            for size, run in payload["breakdown"].items():
                insert = run["timers"]["DuckDB insert"] / run["captures"] * 1e6
                figures.setdefault((f"insert {size}", side), []).append(insert)
            for run in payload["batch_sweep"]:
                key = (f"batch {run['batch_captures']}", side)
                figures.setdefault(key, []).append(run["cpu_seconds"] / run["captures"] * 1e6)
    for size in sorted({k for k, _ in figures if k.isdigit()}, key=int):
        b, a = _median(figures[(size, "before")]), _median(figures[(size, "after")])
        rows.append(f"| {size} | {b:,.0f} | {a:,.0f} | {a / b:.2f} |")
    rows += [
        "",
        "| records/request | before: DuckDB insert µs/capture | after | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for key in sorted({k for k, _ in figures if k.startswith("insert")}, key=lambda k: int(k[7:])):
        b, a = _median(figures[(key, "before")]), _median(figures[(key, "after")])
        rows.append(f"| {key[7:]} | {b:,.1f} | {a:,.1f} | {a / b:.2f} |")
    rows += [
        "",
        "| captures per batch | before: CPU µs/request | after | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for key in sorted({k for k, _ in figures if k.startswith("batch")}, key=lambda k: int(k[6:])):
        b, a = _median(figures[(key, "before")]), _median(figures[(key, "after")])
        rows.append(f"| {key[6:]} | {b:,.0f} | {a:,.0f} | {b / a:.2f} |")
    return "\n".join(rows)


def served(out: Path, kind: str) -> str:
    reference = "nginx" if kind == "proxy" else "bare"
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for side in SIDES:
        for payload in _runs(out, kind, side):
            runs = payload["runs"]
            base = next(r for r in runs if r["variant"] == reference)["main"]["rps"]
            for r in runs:
                cpu = r.get("proxy_cpu_us") or (r.get("other_cpu_us") or 0)
                ratio = r["main"]["rps"] / base
                figures.setdefault((r["variant"], side), []).append(
                    (ratio, r["main"]["p99_ms"], cpu)
                )
    cpu_name = "proxy CPU µs/req" if kind == "proxy" else "writer CPU µs/req"
    rows = [
        f"| variant | before: vs {reference} | after | before: p99 ms | after | "
        f"before: {cpu_name} | after | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant in sorted({v for v, _ in figures if v != reference}):
        b, a = figures.get((variant, "before"), []), figures.get((variant, "after"), [])
        if not b or not a:
            continue
        cells = [_median([x[i] for x in side]) for i in range(3) for side in (b, a)]
        rows.append(
            f"| {variant} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.1f} | {cells[3]:.1f} | "
            f"{cells[4]:.0f} | {cells[5]:.0f} | {len(b)}/{len(a)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("kind", choices=("ingest", "middleware", "proxy"))
    args = parser.parse_args()
    print(ingest(args.out) if args.kind == "ingest" else served(args.out, args.kind))


if __name__ == "__main__":
    main()
