"""Joining 1,000,000 captured predictions with 1,000,000 labels and evaluating them.

A log store is filled the way the writer fills it (long form, one row per value): one request
per prediction over the last hour, each with 10 input features and its outputs. Labels arrive
as a Parquet file through ``inferwatch labels import`` (``import_label_file``). Then
``inferwatch.middleware.evaluation.quality.evaluate`` runs in a fresh process, as GET /evaluation
would: the join inside DuckDB, every metric for the window and its 12 buckets, and the change
detector.

Scenarios: a binary classifier with a probability (log loss and ROC AUC included), a
three-class classifier with string classes (the class dictionary path) and a regressor.

Figures: evaluation wall time (first run in a fresh process, median and best of the repeats)
and CPU time (user + system of all threads: what contention from other processes does not
inflate; DuckDB uses both cores, so on an idle machine wall time lies between CPU/2 and CPU),
peak resident memory of that process and its rise over the process before evaluating, label
import time, and one 100,000-label POST body through ``write_labels``. The machine is shared,
so its load average is printed beside the figures.

    python benchmarks/evaluation.py            # 1,000,000 rows, three scenarios, a few minutes
    python benchmarks/evaluation.py --quick    # 100,000 rows, smoke run
    python benchmarks/evaluation.py --workdir DIR [--reuse]   # keep the stores, measure again
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _lib.asgi import run_child, say
from _lib.machine import machine_info, machine_markdown
from _lib.report import Figure, command_line, figures_table, markdown_table
from _lib.rounds import median
from _lib.servers import workdir as make_workdir

from inferwatch.middleware.evaluation.label_files import import_label_file
from inferwatch.middleware.evaluation.labels import Label, write_labels
from inferwatch.middleware.evaluation.quality import evaluate
from inferwatch.middleware.store.database import Store
from inferwatch.middleware.store.schema import ROLE_CODES, TYPE_CODES

TARGET_S = 3.0
INPUTS = 10
CHUNK = 100_000
SCENARIOS = ("binary with probability", "string classes", "regression")


def truth_and_outputs(kind: str, n: int, rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
    """Labels and the response fields of ``n`` predictions (a 90%-ish accurate model)."""
    if kind == "binary with probability":
        y = (rng.random(n) < 0.4).astype(np.float64)
        score = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(4)
        return y, {"prediction.label": (score >= 0.5).astype(np.float64), "prediction.proba": score}
    if kind == "string classes":
        names = np.array(["cat", "dog", "bird"], dtype=object)
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.85, y, rng.integers(0, 3, n))
        return names[y], {"prediction.label": names[pred]}
    y = rng.lognormal(3, 0.5, n)
    return y, {"prediction": y + rng.normal(0, 2, n)}


def build_store(path: str, kind: str, n: int, now: datetime, seed: int = 1) -> tuple[list, Any]:
    """Fill a store with ``n`` predictions of the hour before ``now``; return ids and labels."""
    rng = np.random.default_rng(seed)
    truth, outputs = truth_and_outputs(kind, n, rng)
    now_us = int(now.timestamp() * 1e6)
    ts_all = np.sort(now_us - 1_000_000 - rng.integers(0, 3_590 * 1_000_000, n))
    ids_all = np.array([f"{seed:08x}{i:024x}" for i in range(n)], dtype=object)
    names = [*outputs, *(f"x{j}" for j in range(INPUTS))]
    roles = ["output"] * len(outputs) + ["input"] * INPUTS
    store = Store(path)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        m, k = hi - lo, len(names)
        ts = ts_all[lo:hi].astype("datetime64[us]")
        values = [outputs[name][lo:hi] for name in outputs]
        values += [rng.random(m) for _ in range(INPUTS)]
        text = [v.dtype == object for v in values]
        requests = {
            "ts": ts,
            "request_id": ids_all[lo:hi],
            "method": np.full(m, "POST", dtype=object),
            "route": np.full(m, "/predict", dtype=object),
            "status": np.full(m, 200, dtype=np.int16),
            "latency_ms": np.full(m, 4.0),
            "ttfb_ms": np.full(m, 3.8),
            "request_bytes": np.full(m, 300, dtype=np.int64),
            "response_bytes": np.full(m, 40, dtype=np.int64),
            "error": np.full(m, None, dtype=object),
            "input_status": np.full(m, "ok", dtype=object),
            "output_status": np.full(m, "ok", dtype=object),
            "input_rows": np.ones(m, dtype=np.int32),
            "output_rows": np.ones(m, dtype=np.int32),
        }
        kinds = ["string" if t else "number" for t in text]
        # column id: name index * 8 + type code * 2 + role code, as the writer assigns them
        ids = [j * 8 + TYPE_CODES[kind] * 2 + ROLE_CODES[role] for j, (kind, role) in
               enumerate(zip(kinds, roles, strict=True))]  # fmt: skip
        columns = None
        if lo == 0:
            columns = {
                "id": np.array(ids, dtype=np.int32),
                "role": np.array(roles, dtype=object),
                "name": np.array(names, dtype=object),
                "type": np.array(kinds, dtype=object),
            }
        features = {  # row-major: all values of one request together, as the writer emits them
            "ts": np.repeat(ts, k),
            "request_id": np.repeat(ids_all[lo:hi], k),
            "row_index": np.zeros(m * k, dtype=np.int32),
            "column_id": np.tile(np.array(ids, dtype=np.int32), m),
            "num": np.column_stack(
                [np.full(m, np.nan) if t else v for v, t in zip(values, text, strict=True)]
            ).ravel(),
            "str": np.column_stack(
                [v if t else np.full(m, None, object) for v, t in zip(values, text, strict=True)]
            ).ravel(),
        }
        store.insert(requests, features, columns)
    store.close()
    return ids_all.tolist(), truth


def labels_parquet(path: str, ids: list[str], truth: Any, seed: int = 2) -> None:
    """The labels, shuffled (they arrive in no particular order), as a Parquet file."""
    order = np.random.default_rng(seed).permutation(len(ids))
    con = duckdb.connect()
    con.register(
        "l",
        {
            "request_id": np.array(ids, dtype=object)[order],
            "index": np.zeros(len(ids), dtype=np.int32),
            "label": np.asarray(truth)[order],
        },
    )
    con.execute(f"COPY l TO '{path}' (FORMAT parquet)")
    con.close()


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(db: str, repeat: int, now: datetime) -> dict[str, Any]:
    """Run in a fresh process: evaluate ``repeat`` times; wall times and memory."""
    store = Store(db, read_only=True)
    before = rss_kib()
    times, cpu, report = [], [], {}
    for _ in range(repeat):
        cursor = store.cursor()
        used = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        report = evaluate(cursor, window_s=3600.0, now=now)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
        cursor.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.close()
    return {
        "times": times,
        "cpu": cpu,
        "before_kib": before,
        "peak_kib": peak,
        "labels": report["window"]["labels"],
        "predictions": report["window"]["predictions"],
        "task": report["task"],
        "metrics": {k: v for k, v in (report["metrics"] or {}).items() if k != "per_class"},
    }


def post_body_write(workdir: Path, ids: list[str]) -> float:
    """One POST /labels body at the cap (100,000 labels) through write_labels."""
    store = Store(str(workdir / "post.duckdb"))
    labels = [Label(request_id, 0, 1.0) for request_id in ids[:100_000]]
    start = time.perf_counter()
    write_labels(store, labels)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions and labels")
    parser.add_argument("--repeat", type=int, default=5, help="evaluations per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--workdir", help="where the DuckDB files go (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="100,000 rows, one repeat")
    parser.add_argument(
        "--reuse", action="store_true", help="evaluate the stores --workdir already holds"
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        say("EVAL_JSON", measure(args.measure, args.repeat, datetime.fromisoformat(args.now)))
        return 0
    if args.quick:
        args.rows, args.repeat = 100_000, 1
    command = command_line("evaluation.py", argv)
    workdir = make_workdir(args.workdir, "inferwatch-evaluation-")
    results, post_s = [], None
    for number, kind in enumerate(k.strip() for k in args.scenarios.split(",") if k.strip()):
        db = str(workdir / f"s{number}.duckdb")
        built = Path(db + ".json")
        if args.reuse and built.exists() and os.path.exists(db):
            saved = json.loads(built.read_text())
            now, counts, import_s = datetime.fromisoformat(saved["now"]), *saved["import"]
        else:
            for leftover in (db, db + ".wal"):
                if os.path.exists(leftover):
                    os.remove(leftover)
            print(f"[{kind}] building {args.rows:,} predictions ...", file=sys.stderr)
            now = datetime.now(UTC)
            ids, truth = build_store(db, kind, args.rows, now)
            labels_parquet(str(workdir / "labels.parquet"), ids, truth)
            store = Store(db)
            start = time.perf_counter()
            counts = import_label_file(store, str(workdir / "labels.parquet"))
            import_s = time.perf_counter() - start
            store.close()
            built.write_text(json.dumps({"now": now.isoformat(), "import": [counts, import_s]}))
            if post_s is None:
                post_s = post_body_write(workdir, ids)
        print(f"[{kind}] evaluating ...", file=sys.stderr)
        child = [sys.executable, __file__, "--measure", db, "--now", now.isoformat()]
        figures = run_child([*child, "--repeat", str(args.repeat)], "EVAL_JSON")
        results.append((kind, counts, import_s, figures, os.getloadavg()[0]))
    rows = []
    for kind, counts, import_s, f, load in results:
        times = f["times"]
        rows.append(
            (
                kind,
                f"{f['predictions']:,}",
                f"{f['labels']:,}",
                f"{times[0]:.2f}",
                f"{median(times):.2f}",
                f"{min(times):.2f}",
                f"{median(f['cpu']):.2f}",
                "yes" if min(times) < TARGET_S else "no",
                f"{f['peak_kib'] / 1024:.0f}",
                f"{(f['peak_kib'] - f['before_kib']) / 1024:.0f}",
                f"{import_s:.2f}",
                f"{counts['matched']:,}",
                f"{load:.1f}",
            )
        )
    headers = (
        "scenario",
        "predictions",
        "labels joined",
        "evaluate, first (s)",
        f"median of {args.repeat} (s)",
        f"best of {args.repeat} (s)",
        "CPU, median (s)",
        f"best under {TARGET_S:.0f} s",
        "peak RSS (MiB)",
        "rise while evaluating (MiB)",
        "label import (s)",
        "matched",
        "load avg (1 min)",
    )
    print(f"## Evaluation: {args.rows:,} predictions joined with {args.rows:,} labels\n")
    print(markdown_table(headers, rows))
    if post_s is not None:
        print(f"\nOne POST /labels body of 100,000 labels through write_labels: {post_s:.2f} s")
    print()
    for kind, *_, f, _ in results:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in f["metrics"].items()}
        print(f"- {kind}: task {f['task']}, {shown}")
    targets = [
        Figure(
            f"evaluate {f['predictions']:,} labelled predictions, {kind}, best of repeats, s",
            min(f["times"]),
            f"< {TARGET_S:g}",
            spec=".2f",
            ok=lambda x: x < TARGET_S,
        )
        for kind, *_, f, _ in results
    ]
    print("\nThe targets:\n\n" + figures_table(targets, peer="peer (none run)"))
    print(f"\nEach store: {INPUTS} inputs and the outputs per prediction, in long form.\n")
    print(machine_markdown(machine_info(["scikit-learn", "scipy"])))
    print(f"\nCommand: `{command}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
