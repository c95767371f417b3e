"""Alert delivery off the request path: one worker thread and bounded queue per channel.

A dead or hanging channel delays only its own queue. Each event is retried with exponential
backoff on errors that may pass (network errors, 5xx, 429, SMTP 4xx) and given up on others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .channels import Channel, DeliveryError, scrub

__all__ = ["MAX_BACKOFF_S", "Dispatcher", "backoff_delay"]

logger = logging.getLogger("inferwatch")

MAX_BACKOFF_S = 300.0
Report = Callable[[str, str, str, int, str | None], None]
"""Outcome callback: (event id, channel name, status, attempts, scrubbed error or None)."""


def backoff_delay(base_s: float, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return min(base_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


class _Worker:
    """One channel's queue and thread: delivers in order, retrying each event with backoff."""

    def __init__(
        self, channel: Channel, attempts: int, backoff: float, size: int, report: Report
    ) -> None:
        self.channel, self._attempts, self._backoff, self._size = channel, attempts, backoff, size
        self._report = report
        self._items: deque[Mapping[str, Any]] = deque()
        self._cond = threading.Condition()
        self._closing, self.busy = False, False
        self.abandon = threading.Event()
        self.counts = {"sent": 0, "failed": 0, "dropped": 0, "retries": 0}
        self.last_error: str | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"inferwatch-alerts-{channel.name}", daemon=True
        )
        self.thread.start()

    def submit(self, event: Mapping[str, Any]) -> None:
        with self._cond:
            accepted = not self._closing and len(self._items) < self._size
            if accepted:
                self._items.append(event)
                self._cond.notify()
        if not accepted:
            self._finish(event, "dropped", 0, "queue full or shutting down")

    def pending(self) -> int:
        return len(self._items) + self.busy

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    break
                event, self.busy = self._items.popleft(), True
            try:
                self._deliver(event)
            except Exception as exc:  # a bug here must not stop this channel for good
                logger.warning("inferwatch alert channel %s: %s", self.channel.name, repr(exc))
            self.busy = False
        try:
            self.channel.close()
        except Exception as exc:
            logger.debug("inferwatch alert channel %s close: %s", self.channel.name, repr(exc))

    def _deliver(self, event: Mapping[str, Any]) -> None:
        attempt, error = 0, "not sent before shutdown"
        while not self.abandon.is_set():
            attempt += 1
            try:
                self.channel.send(event)
            except Exception as exc:
                retryable = isinstance(exc, DeliveryError) and exc.retryable
                error = scrub(str(exc) if isinstance(exc, DeliveryError) else repr(exc))
                self.last_error = error
                if not retryable or attempt >= self._attempts:
                    break
                self.counts["retries"] += 1
                self._finish(event, "retrying", attempt, error)
                asked = getattr(exc, "retry_after", None) or 0.0  # a 429's Retry-After
                delay = min(max(backoff_delay(self._backoff, attempt), asked), MAX_BACKOFF_S)
                self.abandon.wait(delay)
            else:
                self._finish(event, "sent", attempt, None)
                return
        logger.warning(
            "inferwatch alert %s not delivered to %s after %d attempts: %s",
            event["id"], self.channel.name, attempt, error,
        )  # fmt: skip
        self._finish(event, "failed", attempt, error)

    def _finish(
        self, event: Mapping[str, Any], status: str, attempts: int, error: str | None
    ) -> None:
        if status != "retrying":
            self.counts[status] += 1
        try:
            self._report(event["id"], self.channel.name, status, attempts, error)
        except Exception as exc:  # a broken callback must not kill the channel's thread
            logger.warning("inferwatch alert outcome not recorded: %s", scrub(repr(exc)))


class Dispatcher:
    """Hands each event to every channel's worker; never blocks the caller."""

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        attempts: int = 6,
        backoff: float = 2.0,
        queue_size: int = 100,
        report: Report | None = None,
    ) -> None:
        done: Report = report or (lambda *_: None)
        self._workers = [_Worker(c, attempts, backoff, queue_size, done) for c in channels]

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` on every channel (a full queue drops it for that channel)."""
        for worker in self._workers:
            worker.submit(event)

    def describe(self) -> list[dict[str, Any]]:
        """Each channel's masked target, counts, queue and last error."""
        return [
            {"name": w.channel.name, "target": w.channel.target, **w.counts,
             "pending": w.pending(), "last_error": w.last_error}
            for w in self._workers
        ]  # fmt: skip

    def metrics(self) -> Iterator[Metric]:
        """Delivery counters and queue depths, labelled by channel name."""
        deliveries = CounterMetricFamily(
            "inferwatch_alert_deliveries",
            "Alert messages by channel and outcome (sent, failed or dropped).",
            labels=["channel", "outcome"],
        )
        retries = CounterMetricFamily(
            "inferwatch_alert_delivery_retries",
            "Failed delivery attempts retried.",
            labels=["channel"],
        )
        queued = GaugeMetricFamily(
            "inferwatch_alert_queue_depth",
            "Alert messages queued or in flight.",
            labels=["channel"],
        )
        for worker in self._workers:
            name = worker.channel.name
            for outcome in ("sent", "failed", "dropped"):
                deliveries.add_metric([name, outcome], worker.counts[outcome])
            retries.add_metric([name], worker.counts["retries"])
            queued.add_metric([name], worker.pending())
        yield from (deliveries, retries, queued)

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued within ``timeout`` seconds; True when every queue emptied."""
        for worker in self._workers:
            worker.close()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(worker.thread.is_alive() for worker in self._workers)
        for worker in self._workers:
            worker.abandon.set()  # a worker still busy gives up its queue when its attempt ends
        return finished
