"""What summaries cost: the writer's fold, checks over long windows, and the store's size.

- fold: the writer's CPU (process time, DuckDB's threads included) per captured row for its
  insert with the fold against without it, on batches of the middleware benchmark's captures
  (4 records of 10 features and their predictions per request), under a baseline of them;
- checks: a skew check over 1 hour and over 24 hours at 5,000 requests/s, from summaries
  generated directly (each minute's bins, types and row counts of 300,000 rows of 25 features);
- size: the store file holding 30 days of summaries of 100 features after maintenance has
  rolled minutes older than ``summary_rollup_after`` into hours.

    python benchmarks/summaries.py [--quick]
"""

# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import random

from _common import make_bodies, make_prediction_bodies, make_record

from inferwatch.middleware.baseline.build import build_baseline, load_baseline
from inferwatch.middleware.drift.summary_check import check_window
from inferwatch.middleware.payload.exchange import CaptureCounters
from inferwatch.middleware.payload.parse import ParseLimits
from inferwatch.middleware.settings import Settings
from inferwatch.middleware.store.columns import Columnizer
from inferwatch.middleware.store.database import Store
from inferwatch.middleware.summaries.fold import SummaryFolder
from inferwatch.middleware.summaries.retention import maintain_summaries
from inferwatch.middleware.summaries.spec import summary_spec

RATE = 5_000  # requests per second


def fold_cost(tmp: Path, batch: int, batches: int) -> float:
    """CPU µs per captured row that the fold takes inside the writer's insert transaction.

    Timing inserts with the fold against inserts without it on alternate batches was tried and
    not kept: alternate batches differ by 3 µs a row with a fold that does nothing."""
    rng = random.Random(3)
    with open(tmp / "train.jsonl", "w") as out:
        for _ in range(4_000):
            out.write(json.dumps({**make_record(rng), "prediction": rng.random()}) + "\n")
    build_baseline(
        str(tmp / "train.jsonl"), out=str(tmp / "b.json"), prediction_column="prediction"
    )
    baseline = load_baseline(str(tmp / "b.json"))
    bodies, answers = make_bodies(64, 4), make_prediction_bodies(64, 4)
    columnizer = Columnizer(limits=ParseLimits(), max_names=1_000, counters=CaptureCounters())
    now = time.time()
    made = []
    for b in range(batches):
        captured = [
            (now + (b * batch + i) * 2e-4, f"{b:06x}{i:010x}", "POST", "/predict", "/predict",
             200, 0.003, 0.002, (bodies[i % 64],), len(bodies[i % 64]), False,
             "application/json", (answers[i % 64],), len(answers[i % 64]), False,
             "application/json", None)
            for i in range(batch)
        ]  # fmt: skip
        columns = columnizer.columns(captured)
        if columns.new_columns is not None:  # as the writer does once they are stored
            columnizer.ids.mark_stored(columns.new_columns["id"])
        made.append(columns)
    store = Store(str(Path(tempfile.mkdtemp(dir=tmp)) / "fold.duckdb"), threads=1)
    folder = SummaryFolder(lambda: {None: baseline})
    inside: list[float] = []

    def fold(*args: object) -> None:
        begin = time.process_time()
        folder.fold(*args)  # type: ignore[arg-type]
        inside.append(time.process_time() - begin)

    for columns in made:
        store.insert(*columns, fold=fold)
    store.close()
    return statistics.median(inside) / (batch * 4) * 1e6


def fill(store: Store, digest: str, features: int, bins: int, start: datetime, minutes: int):
    """Summaries of ``minutes`` minutes at RATE requests/s: per feature its type row and
    ``bins`` bin rows, and the rows and requests of each minute."""
    per_minute = RATE * 60
    store.writer.execute(
        f"""INSERT INTO summaries
        WITH m AS (SELECT $start::TIMESTAMP + to_minutes(i) AS minute FROM range($minutes) t(i)),
             f AS (SELECT 'f' || i AS name FROM range({features}) t(i)),
             b AS (SELECT i AS code FROM range({bins}) t(i))
        SELECT minute, 60, '', $d, 'input', name, 'bin', code::VARCHAR,
               {per_minute // bins}, 0.5 * {per_minute // bins}, NULL, NULL, NULL
        FROM m, f, b
        UNION ALL
        SELECT minute, 60, '', $d, 'input', name, 'type', 'number', {per_minute},
               0.5 * {per_minute}, 0.3 * {per_minute}, 0.0, 1.0 FROM m, f
        UNION ALL
        SELECT minute, 60, '', $d, r, '', 'rows', '', {per_minute}, NULL, NULL, NULL, NULL
        FROM m, (VALUES ('input'), ('output')) v(r)
        UNION ALL
        SELECT minute, 60, '', $d, 'request', '', 'requests', '', {per_minute}, NULL, NULL,
               NULL, NULL FROM m""",
        {"start": start, "minutes": minutes, "d": digest},
    )
    store.writer.execute(
        "INSERT OR IGNORE INTO summary_baselines VALUES ('', ?, ?)", [digest, datetime(2000, 1, 1)]
    )


def uniform_baseline(tmp: Path, features: int, bins: int):
    """A baseline of ``features`` uniform numbers on [0, 1) in ``bins`` bins."""
    rng = random.Random(5)
    with open(tmp / f"u{features}.jsonl", "w") as out:
        for _ in range(2_000):
            out.write(json.dumps({f"f{i}": rng.random() for i in range(features)}) + "\n")
    path = str(tmp / f"u{features}.json")
    build_baseline(str(tmp / f"u{features}.jsonl"), out=path, bins=bins)
    return load_baseline(path)


def check_seconds(tmp: Path, hours: int, features: int = 25, rounds: int = 5) -> float:
    baseline = uniform_baseline(tmp, features, 20)
    bins = len(next(iter(baseline.features.values())).counts)
    store = Store(str(tmp / f"check{hours}.duckdb"))
    end = datetime(2026, 3, 2)
    for hour in range(hours, 0, -1):
        fill(store, summary_spec(baseline).digest, features, bins, end - timedelta(hours=hour), 60)
    store.checkpoint()
    times = []
    check_window(store.cursor, baseline, model=None, window_s=60.0, now=end)  # imports, caches
    for _ in range(rounds):
        begin = time.perf_counter()
        report = check_window(store.cursor, baseline, model=None, window_s=hours * 3600.0,
                              now=end.replace(tzinfo=UTC))  # fmt: skip
        times.append(time.perf_counter() - begin)
    assert report["window"]["source"] == "summaries", report["window"]
    assert report["window"]["rows"] == RATE * 3600 * hours, report["window"]
    store.close()
    return statistics.median(times)


def size_mib(tmp: Path, days: int, features: int = 100) -> float:
    settings = Settings()
    baseline = uniform_baseline(tmp, features, 20)
    bins = len(next(iter(baseline.features.values())).counts)
    path = tmp / "size.duckdb"
    store = Store(str(path))
    end = datetime(2026, 3, 2)
    digest = summary_spec(baseline).digest
    for day in range(days):  # a day at a time, rolled up as maintenance would
        start = end - timedelta(days=days - day)
        for hour in range(24):
            fill(store, digest, features, bins, start + timedelta(hours=hour), 60)
        maintain_summaries(store.writer, start + timedelta(days=1),
                           retention_s=settings.summary_retention,
                           rollup_after_s=settings.summary_rollup_after)  # fmt: skip
    store.checkpoint()
    store.close()
    return os.path.getsize(path) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (no targets)")
    args = parser.parse_args(argv)
    quick = args.quick
    with tempfile.TemporaryDirectory(prefix="inferwatch-summaries-") as folder:
        tmp = Path(folder)
        figures = {
            "fold": fold_cost(tmp, 500 if quick else 2_000, 3 if quick else 20),
            "fold 500": fold_cost(tmp, 500, 3 if quick else 20),
            "1h": check_seconds(tmp, 1, rounds=2 if quick else 5),
            "24h": check_seconds(tmp, 2 if quick else 24, rounds=2 if quick else 5),
            "size": size_mib(tmp, 3 if quick else 30),
        }
    lines = [
        ("fold, CPU µs per captured row", figures["fold"], 5, "µs"),
        ("fold, at batches of 500 captures", figures["fold 500"], 5, "µs"),
        ("check over 1 h at 5,000 req/s (25 features)", figures["1h"] * 1e3, 100, "ms"),
        (f"check over {2 if quick else 24} h at 5,000 req/s", figures["24h"] * 1e3, 1_000, "ms"),
        (f"summaries of {3 if quick else 30} days x 100 features", figures["size"], 200, "MiB"),
    ]
    print("| figure | measured | target |\n|---|---|---|")
    for label, value, target, unit in lines:
        print(f"| {label} | {value:.2f} {unit} | < {target} {unit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
