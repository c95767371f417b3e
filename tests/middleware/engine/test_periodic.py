from __future__ import annotations

import itertools
import threading
import time

from inferwatch.middleware.engine.periodic import Periodic


def test_a_job_longer_than_its_period_rests_a_period_between_runs() -> None:
    starts: list[float] = []
    ran = threading.Event()

    def slow() -> None:
        starts.append(time.monotonic())
        time.sleep(0.3)
        if len(starts) == 3:
            ran.set()

    periodic = Periodic("test-periodic")
    periodic.add("slow", 0.1, slow)
    periodic.start()
    try:
        assert ran.wait(10)
    finally:
        periodic.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Each run takes 0.3 s; back to back would start them 0.3 s apart, resting makes it 0.4 s.
    assert all(gap >= 0.39 for gap in gaps), gaps


def test_run_now_during_a_long_run_is_not_lost() -> None:
    runs: list[float] = []
    second = threading.Event()
    periodic = Periodic("test-periodic")

    def job() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            periodic.run_now("job")  # asked for while running
            time.sleep(0.2)
        else:
            second.set()

    periodic.add("job", 60.0, job)
    periodic.start()
    try:
        assert second.wait(10)
    finally:
        periodic.stop()
