"""What each column of ``feature_values`` costs the writer's insert, layout against layout.

The writer's real columns (``inferwatch.middleware.store.columns.Columnizer`` over captures of the
middleware benchmark's bodies: 4 records of 10 features and 4 predictions, 44 values a capture) are
inserted, batch by batch, into tables that differ only in their columns:

- ``narrow``: ``ts, row_index, column_id, num``, the least a long-form value needs;
- ``+key``: plus a ``BIGINT`` request key (what a request id could become);
- ``+str``: plus the ``str`` column;
- ``+key+str``: both;
- ``+request_id``: plus the request id as ``VARCHAR``, without ``str``;
- ``schema 2``: the store's layout today (``request_id VARCHAR`` and ``str``).

Each layout gets its own table; the layouts take turns ``--rounds`` times and the medians of the
CPU time per capture are printed (``BEGIN``, register, ``INSERT``, ``COMMIT``), on one core.

    python benchmarks/insert_layouts.py [--rounds 5] [--batch 2048] [--captures 12288]
    python benchmarks/insert_layouts.py --quick      # smoke run: 1 round of 2,048 captures
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _lib.pinning import pin_to_core
from _lib.records import make_bodies, make_prediction_bodies
from _lib.report import command_line, markdown_table
from _lib.rounds import median

from inferwatch.middleware.payload.exchange import CaptureCounters
from inferwatch.middleware.payload.parse import ParseLimits
from inferwatch.middleware.store.columns import Columnizer

TYPES = {
    "ts": "TIMESTAMP",
    "request_key": "BIGINT",
    "request_id": "VARCHAR",
    "row_index": "INTEGER",
    "column_id": "INTEGER",
    "num": "DOUBLE",
    "str": "VARCHAR",
}
NARROW = ("ts", "row_index", "column_id", "num")
LAYOUTS = {
    "narrow": NARROW,
    "+key": ("request_key", *NARROW),
    "+str": (*NARROW, "str"),
    "+key+str": ("request_key", *NARROW, "str"),
    "+request_id": ("request_id", *NARROW),
    "schema 2": ("request_id", *NARROW, "str"),
}


def batches(captures: int, batch: int) -> list[dict[str, np.ndarray]]:
    """The writer's ``feature_values`` columns for ``captures`` captures, ``batch`` at a time,
    with a ``request_key`` column (the capture's position) added."""
    bodies, answers = make_bodies(64, 4), make_prediction_bodies(64, 4)
    start = time.time()
    captured = [
        (start + i * 1e-4, f"{i:016x}", "POST", "/predict", "/predict", 200, 0.003, 0.002,
         (bodies[i % 64],), len(bodies[i % 64]), False, "application/json",
         (answers[i % 64],), len(answers[i % 64]), False, "application/json", None)
        for i in range(captures)
    ]  # fmt: skip
    columnizer = Columnizer(limits=ParseLimits(), max_names=1_000, counters=CaptureCounters())
    out = []
    for first in range(0, captures, batch):
        made = columnizer.columns(captured[first : first + batch])
        assert made.features is not None
        owner = {rid: first + i for i, rid in enumerate(made.requests["request_id"])}
        features = dict(made.features)
        features["request_key"] = np.fromiter(
            map(owner.__getitem__, features["request_id"]), np.int64, len(features["num"])
        )
        out.append(features)
    return out


def insert_us(con: duckdb.DuckDBPyConnection, table: str, select: str, data: list, n: int) -> float:
    start = time.process_time()
    for features in data:
        con.execute("BEGIN TRANSACTION")
        con.register("feature_batch", features)
        con.execute(f'INSERT INTO "{table}" SELECT {select} FROM feature_batch')  # noqa: S608
        con.execute("COMMIT")
        con.unregister("feature_batch")
    return (time.process_time() - start) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2_048, help="captures per insert")
    parser.add_argument("--captures", type=int, default=12_288, help="captures per round")
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2,048 captures")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.captures, args.batch = 1, 2_048, min(args.batch, 512)
    pinned = pin_to_core(args.core)
    data = batches(args.captures, args.batch)
    spent: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    with tempfile.TemporaryDirectory(prefix="inferwatch-layouts-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "layouts.duckdb"))
        for name, columns in LAYOUTS.items():
            con.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c} {TYPES[c]}" for c in columns)})')
        for _ in range(args.rounds):
            for name, columns in LAYOUTS.items():
                spent[name].append(insert_us(con, name, ", ".join(columns), data, args.captures))
        con.close()
    narrow = median(spent["narrow"])
    rows = [
        [
            name,
            " / ".join(f"{v:.1f}" for v in values),
            f"{median(values):.1f}",
            f"{median(values) - narrow:+.1f}",
        ]
        for name, values in spent.items()
    ]
    command = command_line("insert_layouts.py", argv)
    where = f"pinned to core {args.core}" if pinned else "not pinned"
    print(
        f"Command: `{command}`; {where}; {args.captures:,} captures of 44 values, "
        f"{args.batch:,} per insert; CPU µs per capture.\n"
    )
    print(markdown_table(["layout", "per round", "median", "vs narrow"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
