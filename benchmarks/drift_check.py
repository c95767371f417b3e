"""A full skew check of 1,000,000 logged rows, beside Evidently's DataDriftPreset on the same data.

    .venv/bin/python benchmarks/drift_check.py [--rows 1000000] [--build-rows 10000000]
                                               [--skip-evidently] [--skip-build] [--workdir DIR]

Both sides get the same 20 numeric and 5 categorical features: a reference table (our baseline
is built from it) and a current table, which inferwatch reads from a log store in its real long
layout (25 rows of ``features`` per request) and Evidently from Parquet into pandas. Each side
runs in a child process of its own, so that wall time and peak memory (the child's
``ru_maxrss``) are its alone. Evidently needs a virtual environment of its own:

    python3 -m venv .venv-evidently
    .venv-evidently/bin/pip install evidently 'pandas<3'

It runs with DO_NOT_TRACK=1. The script also times ``build_baseline`` over ``--build-rows`` rows
of Parquet and of CSV.
"""

# Every SQL text in this script is built from its own constants, never from input:
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVIDENTLY_PYTHON = ROOT / ".venv-evidently" / "bin" / "python"
NUMERIC, CATEGORICAL = 20, 5
START = datetime(2026, 1, 1)
SPAN_S = 3600.0


def _columns_sql(drift: bool) -> str:
    """SELECT list of the 25 features; ``drift`` moves three numeric ones and one categorical."""
    shift = 0.5 if drift else 0.0
    scale = 1.5 if drift else 1.0
    normal = "sqrt(-2 * ln(u{a})) * cos(2 * pi() * u{b})"
    parts = []
    for k in range(NUMERIC):
        z = normal.format(a=k % 7, b=(k + 3) % 7)
        kind = k % 4
        if kind == 0:
            expr = f"{10 * k} + {1 + k} * ({z} + {shift if k in (0, 4) else 0})"
        elif kind == 1:
            expr = f"exp(0.5 * {z} * {scale if k == 1 else 1.0})"
        elif kind == 2:
            expr = f"u{(k + 1) % 7} * {k + 1}"
        else:
            expr = f"-ln(u{(k + 2) % 7}) * {k}"
        parts.append(f"{expr} AS n{k}")
    for k in range(CATEGORICAL):
        size = [3, 8, 12, 25, 50][k]
        skew = "u5 * u5" if drift and k == 0 else "u5"
        parts.append(f"'cat' || CAST(floor({size} * {skew}) AS INT) AS c{k}")
    return ", ".join(parts)


def _table_sql(rows: int, seed: int, drift: bool) -> str:
    uniforms = ", ".join(f"random() + 1e-12 AS u{j}" for j in range(7))
    return (
        f"SELECT i, {_columns_sql(drift)} FROM (SELECT setseed({seed / 100}) AS _s) s, "
        f"LATERAL (SELECT i, {uniforms} FROM range({rows}) t(i))"
    )


def prepare(workdir: Path, rows: int) -> dict[str, str]:
    """Reference and current Parquet files, and a log store holding the current rows."""
    import duckdb

    sys.path.insert(0, str(ROOT))
    from middleware._schema import STATEMENTS

    paths = {
        "reference": str(workdir / "reference.parquet"),
        "current": str(workdir / "current.parquet"),
        "store": str(workdir / "store.duckdb"),
    }
    con = duckdb.connect()
    for name, seed, drift in (("reference", 1, False), ("current", 2, True)):
        con.execute(f"CREATE TABLE {name} AS {_table_sql(rows, seed, drift)}")
        con.execute(f"COPY (SELECT * EXCLUDE (i) FROM {name}) TO '{paths[name]}' (FORMAT parquet)")
    con.execute(f"ATTACH '{paths['store']}' AS store")
    for statement in STATEMENTS:
        con.execute(statement.replace("IF NOT EXISTS ", "IF NOT EXISTS store.main."))
    step_us = int(SPAN_S * 1e6 / rows)
    ts = f"TIMESTAMP '{START.isoformat()}' + to_microseconds(i * {step_us})"
    numbers = ", ".join(f"n{k}" for k in range(NUMERIC))
    names = ", ".join(f"c{k}" for k in range(CATEGORICAL))
    con.execute(
        f"""INSERT INTO store.features
        SELECT {ts}, md5(CAST(i AS VARCHAR)), 0, 'input', name, type, num, str FROM (
            SELECT i, name, 'number' AS type, num, NULL AS str
            FROM (UNPIVOT current ON {numbers} INTO NAME name VALUE num)
            UNION ALL
            SELECT i, name, 'string', NULL, str
            FROM (UNPIVOT (SELECT i, {names} FROM current) ON {names} INTO NAME name VALUE str)
        ) ORDER BY i, name"""
    )
    con.execute(
        f"""INSERT INTO store.requests (ts, request_id, method, route, status, latency_ms,
               request_bytes, response_bytes, input_status, output_status, input_rows, output_rows)
        SELECT {ts}, md5(CAST(i AS VARCHAR)), 'POST', '/predict', 200, 3.0, 900, 40, 'ok', 'ok',
               1, 1 FROM current"""
    )
    con.execute("DETACH store")
    con.close()
    return paths


def _child(args: list[str], python: str = sys.executable) -> dict:
    env = os.environ | {"DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [python, __file__, "--child", *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def _peak_rss() -> int:
    """This process's peak RSS since it started: VmHWM, which exec resets and ru_maxrss does not
    (a child would report the parent's high-water mark from before its exec)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_check(store: str, baseline_path: str, memory_limit: str, repeats: int) -> dict:
    import duckdb

    from middleware._baseline import load_baseline
    from middleware._drift import run_check

    started = time.perf_counter()
    config = {} if memory_limit == "default" else {"memory_limit": memory_limit}
    con = duckdb.connect(store, read_only=True, config=config)
    baseline = load_baseline(baseline_path)
    times, cpu, report = [], [], {}
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        report = run_check(
            con.cursor,
            baseline,
            window_s=SPAN_S + 60,
            now=START + timedelta(seconds=SPAN_S + 1),
            baseline_path=baseline_path,
        )
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "first_s": times[0],
        "median_s": statistics.median(times),
        "cpu_s": statistics.median(cpu),
        "total_s": time.perf_counter() - started,
        "rows": report["window"]["rows"],
        "drifted": report["drifted_features"],
        "anomalies": len(report["schema_anomalies"]),
        "peak_rss_bytes": _peak_rss(),
    }


def child_evidently(reference: str, current: str) -> dict:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    started, cpu = time.perf_counter(), time.process_time()
    ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
    definition = DataDefinition(
        numerical_columns=[f"n{k}" for k in range(NUMERIC)],
        categorical_columns=[f"c{k}" for k in range(CATEGORICAL)],
    )
    loaded = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    result = snapshot.dict()
    finished = time.perf_counter()
    import evidently

    drifted = [
        m["config"].get("column")
        for m in result.get("metrics", [])
        if isinstance(m.get("value"), int | float)
        and m["config"].get("type", "").endswith("ValueDrift")
        and m["value"] > m["config"].get("threshold", 0.1)
    ]
    return {
        "total_s": finished - started,
        "cpu_s": time.process_time() - cpu,
        "run_s": finished - loaded,
        "drifted": drifted,
        "version": evidently.__version__,
        "peak_rss_bytes": _peak_rss(),
    }


def child_build(source: str, out: str) -> dict:
    from middleware._baseline import build_baseline

    started, cpu = time.perf_counter(), time.process_time()
    doc = build_baseline(source, out=out)
    return {
        "total_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "rows": doc["rows"],
        "bytes": os.path.getsize(out),
        "peak_rss_bytes": _peak_rss(),
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--build-rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--memory-limit",
        default="128MB",
        help="DuckDB memory_limit of the store connection for the second check run",
    )
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        run = {"check": child_check, "evidently": child_evidently, "build": child_build}[kind]
        extra = [args.repeats] if kind == "check" else []
        print(json.dumps(run(*rest, *extra)))
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks._common import machine_info, machine_markdown

    with tempfile.TemporaryDirectory(prefix="inferwatch-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        paths = prepare(work, args.rows)
        print(
            f"data: {args.rows:,} rows x {NUMERIC + CATEGORICAL} features, "
            f"{NUMERIC + CATEGORICAL} x {args.rows:,} rows in the store's features table "
            f"({time.perf_counter() - t0:.0f} s to prepare)"
        )
        baseline = str(work / "baseline.json")
        built = _child(["build", paths["reference"], baseline])
        print(
            f"baseline from {args.rows:,} reference rows: {built['total_s']:.2f} s, "
            f"{built['bytes']:,} bytes"
        )
        checks = {}
        for limit in ("default", args.memory_limit):
            ours = checks[limit] = _child(["check", paths["store"], baseline, limit])
            print(
                f"inferwatch check (store opened with memory_limit {limit}): first "
                f"{ours['first_s']:.3f} s, median of {args.repeats} {ours['median_s']:.3f} s "
                f"({ours['cpu_s']:.2f} CPU s), peak RSS {_mb(ours['peak_rss_bytes'])}, "
                f"{ours['rows']:,} rows, drifted {ours['drifted']}"
            )
        if not args.skip_evidently:
            if not EVIDENTLY_PYTHON.exists():
                raise SystemExit(f"no {EVIDENTLY_PYTHON}: create it as this file's docstring says")
            theirs = _child(
                ["evidently", paths["reference"], paths["current"]], python=str(EVIDENTLY_PYTHON)
            )
            print(
                f"Evidently {theirs['version']} DataDriftPreset: {theirs['total_s']:.2f} s "
                f"({theirs['cpu_s']:.1f} CPU s; the report alone {theirs['run_s']:.2f} s), "
                f"peak RSS {_mb(theirs['peak_rss_bytes'])}, drifted {theirs['drifted']}"
            )
            for limit, ours in checks.items():
                print(
                    f"ratios, memory_limit {limit}: "
                    f"{theirs['total_s'] / ours['median_s']:.0f}x faster "
                    f"({theirs['cpu_s'] / ours['cpu_s']:.0f}x less CPU), "
                    f"{theirs['peak_rss_bytes'] / ours['peak_rss_bytes']:.1f}x less memory"
                )
        if not args.skip_build:
            build_scale(work, args.build_rows)
        print("\nmachine:\n" + machine_markdown(machine_info()))


def build_scale(work: Path, rows: int) -> None:
    import duckdb

    con = duckdb.connect(config={"preserve_insertion_order": False})
    table = _table_sql(rows, 3, False).replace("SELECT i, ", "SELECT ", 1)
    for fmt, options in (("parquet", "(FORMAT parquet)"), ("csv", "(HEADER)")):
        path = work / f"big.{fmt}"
        t0 = time.perf_counter()
        con.execute(f"COPY ({table}) TO '{path}' {options}")
        size = path.stat().st_size
        built = _child(["build", str(path), str(work / f"big-{fmt}.json")])
        print(
            f"build_baseline over {rows:,} rows of {fmt} ({size / 1e9:.1f} GB, written in "
            f"{time.perf_counter() - t0 - built['process_s']:.0f} s): {built['total_s']:.1f} s "
            f"({built['cpu_s']:.0f} CPU s), peak RSS {_mb(built['peak_rss_bytes'])}"
        )
        path.unlink()


if __name__ == "__main__":
    main()
