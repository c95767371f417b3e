"""A full skew check of 1,000,000 logged rows, beside Evidently's DataDriftPreset on the same data.

    .venv/bin/python benchmarks/drift_check.py [--rows 1000000] [--build-rows 10000000]
        [--db-memory default,128MiB,unlimited] [--repeats 5] [--rounds 1] [--before DIR]
        [--skip-evidently] [--skip-build] [--workdir DIR]
    .venv/bin/python benchmarks/drift_check.py --quick    # smoke run: 100,000 rows, no build

Both sides get the same 20 numeric and 5 categorical features: a reference table (our baseline
is built from it) and a current table, which inferwatch reads from a log store in its real long
layout (25 rows of ``features`` per request) and Evidently from Parquet into pandas. Each side
runs in a child process of its own, so that wall time and peak memory (the child's peak RSS,
VmHWM) are its alone.

The check opens the store as the engine and ``inferwatch check`` do (``Store``, read-only, with
DuckDB's ``memory_limit`` at ``db_memory``): ``default`` is the engine's default ``db_memory``,
a size such as ``128MiB`` another ``db_memory``, and ``unlimited`` a plain DuckDB connection at
DuckDB's own default (80% of the machine's memory). Each child runs the check ``--repeats``
times; ``--rounds`` runs every child again, in turn, to spread the load of a shared machine.
``--before DIR`` names a copy of the code before a change (``mkdir DIR && git archive HEAD
middleware | tar -x -C DIR`` copies the last commit's): its check runs in children of its own,
alternating with this tree's, on the same data.

Evidently needs a virtual environment of its own:

    python3 -m venv .venv-evidently
    .venv-evidently/bin/pip install evidently 'pandas<3'

It runs with DO_NOT_TRACK=1. The script also times ``build_baseline`` over ``--build-rows`` rows
of Parquet and of CSV.

Measured with this script and not kept for the numeric bins, each against the nested-CASE binary
search (0.82 CPU s): DuckDB's ``histogram(x, boundaries)`` (1.29), a sum of comparisons (1.97), a
linear or two-level CASE (1.09, 0.89), 3- and 4-ary trees (no faster), an ASOF join to a table of
bins (13.6 against 1.6), a branchless search with ``list_extract`` (17.0), per-feature trees under
one CASE (9 to 16 against about 2), one scan for everything through a LEFT JOIN (3.0 to 3.5
against 2.2), a join on ``list_position`` (1.75 against 1.53); and the two small queries on
``column_id`` bits without the join (slower: arithmetic filters run row by row).
"""

# Every SQL text in this script is built from its own constants, never from input:
# ruff: noqa: S608

from __future__ import annotations

import argparse
import dataclasses
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVIDENTLY_PYTHON = ROOT / ".venv-evidently" / "bin" / "python"
NUMERIC, CATEGORICAL = 20, 5
START = datetime(2026, 1, 1)
SPAN_S = 3600.0
TARGET_S = 1.5  # a full check of 1,000,000 requests
TARGET_FASTER, TARGET_LESS_MEMORY = 40.0, 6.0  # against Evidently's DataDriftPreset


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
    from inferwatch.middleware.store.database import Store, append_features

    paths = {
        "reference": str(workdir / "reference.parquet"),
        "current": str(workdir / "current.parquet"),
        "store": str(workdir / "store.duckdb"),
    }
    con = duckdb.connect()
    for name, seed, drift in (("reference", 1, False), ("current", 2, True)):
        con.execute(f"CREATE TABLE {name} AS {_table_sql(rows, seed, drift)}")
        con.execute(f"COPY (SELECT * EXCLUDE (i) FROM {name}) TO '{paths[name]}' (FORMAT parquet)")
    con.close()
    store = Store(paths["store"])
    step_us = int(SPAN_S * 1e6 / rows)
    ts = f"TIMESTAMP '{START.isoformat()}' + to_microseconds(i * {step_us})"
    numbers = ", ".join(f"n{k}" for k in range(NUMERIC))
    names = ", ".join(f"c{k}" for k in range(CATEGORICAL))
    cursor = store.writer
    cursor.execute(  # the very rows of current.parquet, numbered in file order
        "CREATE TEMP TABLE current AS SELECT row_number() OVER () - 1 AS i, * FROM read_parquet(?)",
        [paths["current"]],
    )
    append_features(
        cursor,
        f"""SELECT {ts}, md5(CAST(i AS VARCHAR)), 0, 'input', name, type, num, str FROM (
            SELECT i, name, 'number' AS type, num, NULL AS str
            FROM (UNPIVOT current ON {numbers} INTO NAME name VALUE num)
            UNION ALL
            SELECT i, name, 'string', NULL, str
            FROM (UNPIVOT (SELECT i, {names} FROM current) ON {names} INTO NAME name VALUE str)
        ) ORDER BY i, name""",
    )
    cursor.execute(
        f"""INSERT INTO requests (ts, request_id, method, route, status, latency_ms,
               request_bytes, response_bytes, input_status, output_status, input_rows, output_rows)
        SELECT {ts}, md5(CAST(i AS VARCHAR)), 'POST', '/predict', 200, 3.0, 900, 40, 'ok', 'ok',
               1, 1 FROM current"""
    )
    store.close()
    return paths


def _child(args: list[str], python: str = sys.executable, code: Path = ROOT) -> dict:
    """Run this file's ``child_<args[0]>`` in a new process importing inferwatch from ``code``."""
    env = os.environ | {"DO_NOT_TRACK": "1", "PYTHONPATH": str(code)}
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


_QUERY_KINDS = (
    ("count(DISTINCT hash", "instance rows"),
    ("FROM requests", "parse status"),
    ("unnest($lo_m", "numeric bins"),
    ("unnest($dkeys", "categories"),
    ("type <> 'null'", "values per role"),
    ("SELECT role, name, type, count(*)", "values per (role, name, type)"),
)


class _TimedCursor:
    """A store cursor that adds each query's wall and CPU time to ``spent`` by kind."""

    def __init__(self, cursor: Any, spent: dict[str, list[float]]) -> None:
        self._cursor, self._spent = cursor, spent

    def execute(self, sql: str, params: Any = None) -> Any:
        flat = " ".join(sql.split())
        kind = next((k for key, k in _QUERY_KINDS if key in flat), flat[:40])
        t0, c0 = time.perf_counter(), time.process_time()
        rows = self._cursor.execute(sql, params).fetchall()
        wall, cpu = self._spent.setdefault(kind, [0.0, 0.0])
        self._spent[kind] = [wall + time.perf_counter() - t0, cpu + time.process_time() - c0]
        return _Fetched(rows)

    def close(self) -> None:
        self._cursor.close()


class _Fetched:
    def __init__(self, rows: list[tuple]) -> None:
        self._rows = rows

    def fetchall(self) -> list[tuple]:
        return self._rows

    def fetchone(self) -> tuple | None:
        return self._rows[0] if self._rows else None


def child_check(store: str, baseline_path: str, memory: str, repeats: str) -> dict:
    """Open the store (``memory``: ``unlimited`` or the bytes of ``db_memory``) and check it
    ``repeats`` times; the figures of every run, of every kind of query and the peak RSS."""
    import duckdb

    import inferwatch.middleware as middleware
    from inferwatch.middleware.baseline.build import load_baseline
    from inferwatch.middleware.drift.report import run_check
    from inferwatch.middleware.store.database import Store

    started = time.perf_counter()
    if memory == "unlimited":
        con = duckdb.connect(store, read_only=True)
        cursor = con.cursor
    else:  # as the engine and `inferwatch check` open it
        cursor = Store(store, read_only=True, memory_bytes=int(memory)).cursor
    baseline = load_baseline(baseline_path)
    times, cpu, queries, report = [], [], [], {}
    load = [os.getloadavg()[0]]
    for _ in range(int(repeats)):
        spent: dict[str, list[float]] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        report = run_check(
            lambda spent=spent: _TimedCursor(cursor(), spent),
            baseline,
            window_s=SPAN_S + 60,
            now=START + timedelta(seconds=SPAN_S + 1),
            baseline_path=baseline_path,
        )
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        queries.append(spent)
    load.append(os.getloadavg()[0])
    return {
        "code": str(Path(middleware.__file__).parent.parent),
        "times_s": times,
        "cpu_s": cpu,
        "queries": queries,
        "total_s": time.perf_counter() - started,
        "rows": report["window"]["rows"],
        "drifted": report["drifted_features"],
        "anomalies": len(report["schema_anomalies"]),
        "peak_rss_bytes": _peak_rss(),
        "load": load,
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
    from inferwatch.middleware.baseline.build import build_baseline

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


def _memory_options(spec: str) -> dict[str, str]:
    """``--db-memory`` entries by label: the bytes of ``db_memory``, or ``unlimited``."""
    sys.path.insert(0, str(ROOT))
    from inferwatch.middleware.settings import Settings, parse_size

    default = {f.name: f.default for f in dataclasses.fields(Settings)}["db_memory"]
    options = {}
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item == "unlimited":
            options["unlimited (DuckDB's default)"] = "unlimited"
        elif item == "default":
            options[f"db_memory {default // 2**20} MiB (default)"] = str(default)
        else:
            size = parse_size(item)
            options[f"db_memory {size // 2**20} MiB"] = str(size)
    return options


def run_checks(args: argparse.Namespace, paths: dict[str, str], baseline: str) -> dict:
    """Every (code, memory) child, round after round; the runs of each, merged."""
    codes = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    merged: dict[tuple[str, str], dict] = {}
    for _ in range(args.rounds):
        for label, memory in _memory_options(args.db_memory).items():
            for version, code in codes.items():
                what = ["check", paths["store"], baseline, memory, str(args.repeats)]
                run = _child(what, code=code)
                empty = {"times_s": [], "cpu_s": [], "queries": [], "load": []}
                into = merged.setdefault((version, label), run | empty)
                for key in empty:
                    into[key] += run[key]
                into["peak_rss_bytes"] = max(into["peak_rss_bytes"], run["peak_rss_bytes"])
                print(
                    f"inferwatch check ({version}: {run['code']}; {label}): runs "
                    f"{', '.join(f'{t:.2f}' for t in run['times_s'])} s, CPU "
                    f"{', '.join(f'{t:.2f}' for t in run['cpu_s'])} s, peak RSS "
                    f"{_mb(run['peak_rss_bytes'])}, {run['rows']:,} rows, drifted "
                    f"{run['drifted']}, load {run['load'][0]:.1f} to {run['load'][1]:.1f}"
                )
    for ours in merged.values():
        ours["median_s"] = statistics.median(ours["times_s"])
        ours["median_cpu_s"] = statistics.median(ours["cpu_s"])
    return merged


def _breakdown(checks: dict[tuple[str, str], dict]) -> str:
    """Median wall and CPU seconds per check of each kind of query, per code and setting."""
    from benchmarks._lib.report import markdown_table

    kinds = sorted({k for ours in checks.values() for q in ours["queries"] for k in q})
    rows = []
    for (version, label), ours in checks.items():
        cells = []
        for kind in kinds:
            spent = [q.get(kind, [0.0, 0.0]) for q in ours["queries"]]
            wall = statistics.median(w for w, _ in spent)
            cpu = statistics.median(c for _, c in spent)
            cells.append(f"{wall:.3f} ({cpu:.2f})" if wall or cpu else "")
        rows.append([version, label, *cells])
    return markdown_table(["code", "store opened with", *kinds], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--build-rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5, help="checks per child process")
    parser.add_argument("--rounds", type=int, default=1, help="child processes per setting")
    parser.add_argument(
        "--db-memory",
        default="default,128MiB,unlimited",
        help="how the store is opened for each check: default, a size, unlimited",
    )
    parser.add_argument("--before", type=Path, default=None, help="a checkout to compare with")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 100,000 rows, one check, default db_memory, no build at scale; "
        "Evidently only where its venv is there",
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats, args.rounds, args.db_memory = 100_000, 1, 1, "default"
        args.skip_build = True
        args.skip_evidently = args.skip_evidently or not EVIDENTLY_PYTHON.exists()
    if args.child:
        kind, *rest = args.child
        run = {"check": child_check, "evidently": child_evidently, "build": child_build}[kind]
        print(json.dumps(run(*rest)))
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks._lib.machine import machine_info, machine_markdown
    from benchmarks._lib.report import Figure, figures_table, markdown_table

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
        checks = run_checks(args, paths, baseline)
        theirs = None
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
        rows = []
        for (version, label), ours in checks.items():
            ratios = ["", "", ""]
            if theirs is not None:
                ratios = [
                    f"{theirs['total_s'] / ours['median_s']:.0f}x",
                    f"{theirs['cpu_s'] / ours['median_cpu_s']:.0f}x",
                    f"{theirs['peak_rss_bytes'] / ours['peak_rss_bytes']:.1f}x",
                ]
            rows.append(
                [
                    version,
                    label,
                    f"{ours['times_s'][0]:.2f} s",
                    f"median of {len(ours['times_s'])}: {ours['median_s']:.2f} s",
                    f"{ours['median_cpu_s']:.2f}",
                    _mb(ours["peak_rss_bytes"]),
                    ", ".join(ours["drifted"]),
                    *ratios,
                ]
            )
        headers = ["code", "store opened with", "first", "wall", "CPU s", "peak RSS", "drifted"]
        headers += ["faster than Evidently", "less CPU", "less memory"]
        print("\n" + markdown_table(headers, rows))
        print("\nmedian wall s (CPU s) per check, by query:\n" + _breakdown(checks))
        ours = next(iter(checks.values()))  # this tree's, at the first --db-memory setting
        peer = theirs or {}
        figures = [
            Figure(
                f"check of {args.rows:,} requests, wall s (median)",
                ours["median_s"],
                f"< {TARGET_S:g} at 1,000,000",
                peer.get("total_s"),
                ".2f",
                (lambda x: x < TARGET_S) if args.rows >= 1_000_000 else None,
            ),
            Figure(
                "times as fast as Evidently",
                peer["total_s"] / ours["median_s"] if peer else None,
                f"≥ {TARGET_FASTER:g}",
                1.0 if peer else None,
                ".0f",
                lambda x: x >= TARGET_FASTER,
            ),
            Figure(
                "peak RSS, MB (target: times less than Evidently's)",
                ours["peak_rss_bytes"] / 1e6,
                f"≥ {TARGET_LESS_MEMORY:g}x less",
                peer["peak_rss_bytes"] / 1e6 if peer else None,
                ",.0f",
                (lambda x: peer["peak_rss_bytes"] / 1e6 / x >= TARGET_LESS_MEMORY)
                if peer
                else None,
            ),
        ]
        name = f"Evidently {theirs['version']}" if theirs else "Evidently (not run)"
        print("\nThe targets:\n\n" + figures_table(figures, peer=name))
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
