"""One background thread that runs the engine's periodic jobs: resource samples, checks.

A job that raises is logged and counted; it runs again at its next period. Periods run on the
monotonic clock, so a step of the wall clock neither stops nor hurries them. A job that keeps
failing the same way is logged once (a :class:`MonitorError`, such as an unavailable log store,
as one line; anything else with its traceback), and once more when it runs again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MonitorError

__all__ = ["Periodic"]

logger = logging.getLogger("inferwatch")


@dataclass(slots=True)
class _Job:
    name: str
    every_s: float
    run: Callable[[], None]
    due: float
    failures: int = 0
    last_error: str | None = None
    failing: int = 0  # failures since the job last ran through
    overruns: int = 0  # runs that took longer than the period


class Periodic:
    """Runs named jobs at fixed periods on a daemon thread until stopped."""

    def __init__(self, name: str = "inferwatch-periodic") -> None:
        self._jobs: dict[str, _Job] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(
        self, name: str, every_s: float, run: Callable[[], None], *, first_in: float = 0.0
    ) -> None:
        self._jobs[name] = _Job(name, every_s, run, time.monotonic() + first_in)

    def run_now(self, name: str) -> None:
        """Make a job due at once (it runs on the periodic thread)."""
        self._jobs[name].due = 0.0
        self._wake.set()

    def failures(self) -> dict[str, tuple[int, str | None]]:
        return {job.name: (job.failures, job.last_error) for job in self._jobs.values()}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for job in list(self._jobs.values()):
                if job.due <= now and not self._stopping.is_set():
                    job.due = now + job.every_s
                    try:
                        job.run()
                    except Exception as exc:
                        if self._stopping.is_set():  # closing the store interrupts a running job
                            logger.info("inferwatch job %s stopped by shutdown: %s", job.name, exc)
                        else:
                            _failed(job, exc)
                    else:
                        if job.failing:
                            logger.info(
                                "inferwatch job %s runs again after %d failures",
                                job.name,
                                job.failing,
                            )
                            job.failing = 0
                    took = time.monotonic() - now
                    if took > job.every_s:
                        # A job longer than its period must not run back to back and take the
                        # model's CPU: it rests one period (unless run_now asked for it meanwhile).
                        if job.due > 0.0:
                            job.due = now + took + job.every_s
                        job.overruns += 1
                        if job.overruns == 1 or job.overruns % 100 == 0:
                            logger.warning(
                                "inferwatch job %s took %.1f s, longer than its %.1f s period "
                                "(%d times so far); it now runs %.1f s after it finishes",
                                job.name, took, job.every_s, job.overruns, job.every_s,
                            )  # fmt: skip
            next_due = min((job.due for job in self._jobs.values()), default=now + 1.0)
            self._wake.wait(max(0.0, min(next_due - time.monotonic(), 1.0)))
            self._wake.clear()


def _failed(job: _Job, exc: Exception) -> None:
    job.failures += 1
    job.failing += 1
    error = f"{type(exc).__name__}: {exc}"
    if error != job.last_error or job.failing == 1:
        if isinstance(exc, MonitorError):  # a state the engine reports, not a bug
            logger.warning("inferwatch job %s failed: %s", job.name, exc)
        else:
            logger.error("inferwatch job %s failed", job.name, exc_info=exc)
    job.last_error = error
