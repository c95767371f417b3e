"""The benchmarks' shared helpers: rounds and medians, the figures table, and the store checks
against a real DuckDB file written by a real engine."""

from __future__ import annotations

import math
import random
from pathlib import Path

import orjson

from benchmarks._lib.records import make_record
from benchmarks._lib.report import Figure, figures_table, table
from benchmarks._lib.rounds import interleaved, medians_by
from benchmarks._lib.store import accounted, complete, count_db
from inferwatch import Engine, Settings
from tests.conftest import make_capture


def test_every_round_runs_every_variant_and_no_variant_always_goes_first() -> None:
    order = interleaved(["a", "b", "c"], 3)
    assert [v for rnd, v in order if rnd == 1] == ["a", "b", "c"]
    assert [v for rnd, v in order if rnd == 2] == ["b", "c", "a"]
    assert {v for rnd, v in order if rnd == 3} == {"a", "b", "c"}
    assert [order[i][1] for i in (0, 3, 6)] == ["a", "b", "c"]


def test_medians_by_key_leave_out_a_pass_that_did_not_run() -> None:
    runs = [("bare", 10.0, None), ("bare", 30.0, 2.0), ("bare", 20.0, None), ("mon", 5.0, 1.0)]
    med = medians_by(runs, lambda r: r[0], {"rps": lambda r: r[1], "light": lambda r: r[2]})
    assert list(med) == ["bare", "mon"]
    assert med["bare"] == {"rps": 20.0, "light": 2.0}
    assert med["mon"] == {"rps": 5.0, "light": 1.0}
    empty = medians_by([("x", None)], lambda r: r[0], {"light": lambda r: r[1]})
    assert math.isnan(empty["x"]["light"])


def test_each_figure_stands_beside_its_target_and_the_peers() -> None:
    text = figures_table(
        [
            Figure("share", 0.97, "≥ 0.98", 0.99, ".3f", lambda x: x >= 0.98),
            Figure("p99 added, ms", 0.5, "≤ 1", None, "+.2f", lambda x: x <= 1.0),
            Figure("not run", math.nan, "≤ 1", 3.0, ".1f", lambda x: x <= 1.0),
        ],
        peer="prometheus",
    )
    lines = text.splitlines()
    assert lines[0] == "| figure | target | inferwatch | prometheus | met |"
    assert lines[2] == "| share | ≥ 0.98 | 0.970 | 0.990 | **no** |"
    assert lines[3] == "| p99 added, ms | ≤ 1 | +0.50 | — | yes |"
    assert lines[4] == "| not run | ≤ 1 | — | 3.0 |  |"
    assert table([1, 2], {"n": lambda n: n, "twice": lambda n: 2 * n}).splitlines()[3] == (
        "| 2 | 4 |"
    )


def test_the_store_checks_hold_for_a_store_an_engine_wrote(tmp_path: Path) -> None:
    db = tmp_path / "bench.duckdb"
    engine = Engine(Settings.load({"db": str(db), "flush_interval": "50ms"}))
    rng = random.Random(3)
    for i in range(20):
        body = orjson.dumps({"instances": [make_record(rng) for _ in range(4)]})
        engine.queue.put(make_capture(f"r{i}", body, b'{"predictions": [0.1, 0.2, 0.3, 0.4]}'))
    engine.start()
    assert engine.flush(timeout=60)
    engine.stop()
    counts = count_db(db)
    assert counts["requests"] == 20
    assert complete(counts, 4)
    assert not complete(counts, 3)
    capture = engine.counters.snapshot()
    assert accounted(capture, counts["requests"])
    assert not accounted(capture, counts["requests"] - 1)
    assert accounted({}, None) is None
