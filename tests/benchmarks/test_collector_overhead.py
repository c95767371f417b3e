"""collector_overhead.py's figures against bare pair each run with bare's run of the same round."""

from __future__ import annotations

import math

from benchmarks._lib.load import WrkResult
from benchmarks.collector_overhead import Run, medians


def run(variant: str, rnd: int, rps: float, p99: float, cpu: float) -> Run:
    result = WrkResult(int(rps), 1.0, rps, 1.0, 2.0, p99, p99, 0, 0)
    return Run("model", 1, variant, rnd, result, int(rps), cpu)


def test_a_figure_against_bare_is_the_median_of_its_rounds_pairs() -> None:
    # The machine's speed moves between rounds: in two of three the monitor keeps 0.9 of bare and
    # adds 10 µs; medians taken apart (1,600 / 1,500 req/s, 190 - 200 µs) would say it gained.
    runs = [
        run("bare", 1, 1000, 20.0, 300.0),
        run("monitor-0.0", 1, 900, 21.0, 310.0),
        run("bare", 2, 2000, 10.0, 150.0),
        run("monitor-0.0", 2, 1800, 11.0, 160.0),
        run("bare", 3, 1500, 15.0, 200.0),
        run("monitor-0.0", 3, 1600, 14.0, 190.0),
    ]
    med = medians(runs)
    ours = med["model 1w monitor-0.0"]
    assert math.isclose(ours["vs_bare"], 0.9)
    assert math.isclose(ours["p99_added"], 1.0)
    assert math.isclose(ours["worker_added"], 10.0)
    assert med["model 1w bare"]["vs_bare"] == 1.0


def test_a_run_without_bare_in_its_round_is_left_out_of_the_pairs() -> None:
    runs = [
        run("bare", 1, 1000, 20.0, 300.0),
        run("floor", 1, 950, 20.5, 305.0),
        run("floor", 2, 3000, 5.0, 100.0),  # round 2 was cut short before bare ran
    ]
    ours = medians(runs)["model 1w floor"]
    assert math.isclose(ours["vs_bare"], 0.95)
    assert math.isclose(ours["worker_added"], 5.0)
