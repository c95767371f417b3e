"""One background thread that runs the engine's periodic jobs: resource samples, checks.

A job that raises is logged and counted; it runs again at its next period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

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


class Periodic:
    """Runs named jobs at fixed periods on a daemon thread until stopped."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferwatch-periodic", daemon=True)

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
                        job.failures += 1
                        job.last_error = f"{type(exc).__name__}: {exc}"
                        logger.exception("inferwatch job %s failed", job.name)
            next_due = min((job.due for job in self._jobs.values()), default=now + 1.0)
            self._wake.wait(max(0.0, min(next_due - time.monotonic(), 1.0)))
            self._wake.clear()
