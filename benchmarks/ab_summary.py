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


def _table(
    figures: dict[tuple[str, str, str], list[float]], table: str, head: str, digits: int
) -> list[str]:
    """Rows of ``table``: each size's median before, after and after / before."""
    sizes = sorted({size for name, size, _ in figures if name == table}, key=int)
    rows = [f"| {head} | after | ratio |", "| --- | --- | --- | --- |"]
    for size in sizes:
        b = _median(figures[(table, size, "before")])
        a = _median(figures[(table, size, "after")])
        rows.append(f"| {size} | {b:,.{digits}f} | {a:,.{digits}f} | {a / b:.2f} |")
    return rows


def ingest(out: Path) -> str:
    figures: dict[tuple[str, str, str], list[float]] = {}
    for side in SIDES:
        for payload in _runs(out, "ingest", side):
            for size, runs in payload["throughput"].items():
                rate = runs[0]["instance_rows_per_cpu_s"]
                figures.setdefault(("rows", size, side), []).append(rate)
            for size, run in payload["breakdown"].items():
                insert = run["timers"]["DuckDB insert"] / run["captures"] * 1e6
                figures.setdefault(("insert", size, side), []).append(insert)
            for run in payload["batch_sweep"]:
                key = ("batch", str(run["batch_captures"]), side)
                figures.setdefault(key, []).append(run["cpu_seconds"] / run["captures"] * 1e6)
    tables = (
        ("rows", "records/request | before: rows per CPU-s", 0),
        ("insert", "records/request | before: DuckDB insert µs/capture", 1),
        ("batch", "captures per batch | before: CPU µs/request", 0),
    )
    return "\n\n".join("\n".join(_table(figures, *table)) for table in tables)


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
