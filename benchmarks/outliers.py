"""What outlier scoring costs the writer, and what the multivariate check adds to a skew check.

    .venv/bin/python benchmarks/outliers.py [--rows 1000000] [--repeats 5] [--quick]
        [--workdir DIR]

The data are drift_check.py's: 20 numeric and 5 categorical features, a reference table that
the baseline (and its outlier model) is built from and a current table logged into a store in
the real long layout. Two figures:

- writer: captured single-row requests of the current table are parsed into a batch by the
  writer's own Columnizer, then scored by the writer's RowScorer; the time of the scoring alone,
  per row (median of ``--repeats``, batches of 2,000 captures as the writer takes them);
- check: ``run_check`` over the whole store (``--rows`` rows) with the baseline, and with the
  same baseline less its outlier model; the difference is what the ``outliers`` and
  ``multivariate`` sections cost, and ``score_sections`` timed alone says the same without the
  noise of two long checks. The store's ``row_scores`` are the current rows' own scores.

``--quick`` uses 100,000 rows and 3 repeats. Run ``core_speed.py`` beside it on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _lib.report import Figure, figures_table  # noqa: E402
from drift_check import CATEGORICAL, NUMERIC, SPAN_S, START, prepare  # noqa: E402

from inferwatch.middleware.baseline.build import build_baseline, load_baseline  # noqa: E402
from inferwatch.middleware.drift.multivariate import score_sections  # noqa: E402
from inferwatch.middleware.drift.report import run_check  # noqa: E402
from inferwatch.middleware.payload.exchange import CaptureCounters  # noqa: E402
from inferwatch.middleware.payload.parse import ParseLimits  # noqa: E402
from inferwatch.middleware.store.columns import Columnizer  # noqa: E402
from inferwatch.middleware.store.database import Store  # noqa: E402
from inferwatch.middleware.store.row_scores import RowScorer  # noqa: E402
from tests.conftest import make_capture  # noqa: E402

_BATCH = 2_000


def writer_cost(current: str, baseline_path: str, repeats: int) -> dict[str, float]:
    """Microseconds per row of RowScorer.scores on the writer's own batches."""
    model = load_baseline(baseline_path).outliers
    assert model is not None
    names = [f"n{k}" for k in range(NUMERIC)] + [f"c{k}" for k in range(CATEGORICAL)]
    rows = duckdb.sql(f"SELECT {', '.join(names)} FROM read_parquet('{current}') LIMIT {_BATCH}")  # noqa: S608
    records = [dict(zip(names, row, strict=True)) for row in rows.fetchall()]
    captures = [
        make_capture(f"r{i}", orjson.dumps({"instances": [record]}))
        for i, record in enumerate(records)
    ]
    columnizer = Columnizer(limits=ParseLimits(), max_names=10_000, counters=CaptureCounters())
    started = time.perf_counter()
    batch = columnizer.columns(captures)
    parse_us = (time.perf_counter() - started) / len(captures) * 1e6
    scorer = RowScorer()
    scorer.scores(model, columnizer.ids, batch.features)  # the first builds its lookups
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        scores = scorer.scores(model, columnizer.ids, batch.features)
        times.append(time.perf_counter() - started)
    assert scores is not None and len(scores["score"]) == len(captures)
    return {
        "score_us_per_row": statistics.median(times) / len(captures) * 1e6,
        "parse_us_per_row": parse_us,
        "features": len(model.names),
    }


def check_cost(paths: dict[str, str], baseline_path: str, rows: int, repeats: int) -> dict:
    baseline = load_baseline(baseline_path)
    model = baseline.outliers
    assert model is not None
    names = list(model.numeric) + list(model.categorical)
    table = duckdb.sql(f"SELECT {', '.join(names)} FROM read_parquet('{paths['current']}')")  # noqa: S608
    columns = table.fetchnumpy()
    numbers = np.column_stack([np.asarray(columns[n], dtype=float) for n in model.numeric])
    keys = list(zip(*(columns[n].tolist() for n in model.categorical), strict=True))
    score = model.score(numbers, model.codes(keys))
    step_us = int(SPAN_S * 1e6 / rows)
    store = Store(paths["store"])
    store.writer.register(
        "scored", {"i": np.arange(rows), "score": score, "outlier": score > model.threshold}
    )
    store.writer.execute(
        f"INSERT INTO row_scores SELECT TIMESTAMP '{START.isoformat()}' + "  # noqa: S608
        f"to_microseconds(i * {step_us}), md5(CAST(i AS VARCHAR)), 0, score, outlier FROM scored"
    )
    store.close()
    reader = Store(paths["store"], read_only=True)
    without = dataclasses.replace(baseline, outliers=None)
    timings: dict[str, list[float]] = {"with": [], "without": []}
    report = {}
    for _ in range(repeats):
        for label, chosen in (("without", without), ("with", baseline)):
            started = time.perf_counter()
            report = run_check(reader.cursor, chosen, window_s=SPAN_S + 1, now=_end())
            timings[label].append(time.perf_counter() - started)
    sections = []
    cursor = reader.cursor()
    start, end = START, _end()
    for _ in range(repeats):
        started = time.perf_counter()
        score_sections(cursor, model, start, end, 100)
        sections.append(time.perf_counter() - started)
    cursor.close()
    reader.close()
    with_s, without_s = (statistics.median(timings[k]) for k in ("with", "without"))
    return {
        "rows": rows,
        "check_without_s": without_s,
        "check_with_s": with_s,
        "with_less_without_s": with_s - without_s,
        "sections_alone_s": statistics.median(sections),
        "outlier_share": report["outliers"]["share"],
        "multivariate_z": report["multivariate"]["z"],
    }


def _end():
    from datetime import timedelta

    return START + timedelta(seconds=SPAN_S + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 100_000, 3
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        paths = prepare(Path(folder), args.rows)
        baseline_path = str(Path(folder) / "baseline.json")
        started = time.perf_counter()
        build_baseline(paths["reference"], out=baseline_path)
        build_s = time.perf_counter() - started
        result = {"build_baseline_s": build_s}
        result |= writer_cost(paths["current"], baseline_path, args.repeats)
        result |= check_cost(paths, baseline_path, args.rows, args.repeats)
    print(json.dumps(result, indent=2))
    # Nothing else scores rows inside a monitor's writer: these figures have no peer, and no
    # target beyond the check's own (drift_check.py).
    figures = [
        Figure("outlier scoring in the writer, µs per row", result["score_us_per_row"]),
        Figure("the check's outlier and multivariate sections, s", result["sections_alone_s"]),
        Figure("check with the outlier model less without, s", result["with_less_without_s"]),
    ]
    print("\n" + figures_table(figures, peer="peer (none)"))


if __name__ == "__main__":
    main()
