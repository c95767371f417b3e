"""The alert manager: episodes, history, metrics, and hand-off to the channels.

An episode starts when a rule's condition has held for ``alert_for`` consecutive observations and
ends when it has been clear as many times: one alert when it starts, one 'resolved' when it ends.
After a resolve the rule stays quiet for ``alert_cooldown``; a condition that still holds then
alerts again. Rules are in :mod:`inferwatch.middleware.alerts.rules`, delivery in
:mod:`inferwatch.middleware.alerts.channels`.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import MonitorError
from .channels import Channel, build_channels, scrub
from .delivery import Dispatcher
from .options import AlertOptions
from .rules import RULES, Finding, Report, Rule, make_rules, percentile_key, select_rules

__all__ = ["RULES", "AlertManager"]

logger = logging.getLogger("inferwatch")

_FINAL = {"sent", "failed", "dropped"}


def _utc(moment: datetime | str | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


@dataclass(slots=True)
class _State:
    met: int = 0  # consecutive observations where the condition held
    clear: int = 0  # consecutive clear observations while an episode is firing
    since: datetime | None = None  # first observation of the current run of met ones
    held: bool = False  # this run was counted as held back by the cooldown
    quiet_until: datetime | None = None
    firing: dict[str, Any] | None = None
    episode_since: datetime = field(default_factory=lambda: datetime.now(UTC))
    worst: Finding | None = None
    last: Finding | None = None


class AlertManager:
    """Turns each round of check reports into alert episodes and hands their messages to channels.

    ``record`` receives one row per alert event, shaped for the ``alerts`` table, and
    ``record_delivery`` one row per final delivery outcome (sent, failed or dropped), shaped for
    ``alert_deliveries``. They run on the caller's thread and on the channels' threads; a callback
    that raises is logged and otherwise ignored. ``channels`` replaces those that ``options``
    configure. A bad setting raises :class:`MonitorError` naming it.
    """

    def __init__(
        self,
        options: AlertOptions,
        *,
        record: Callable[[dict[str, Any]], None] | None = None,
        record_delivery: Callable[[dict[str, Any]], None] | None = None,
        channels: Sequence[Channel] | None = None,
        queue_size: int = 100,
        history_size: int = 1000,
    ) -> None:
        try:
            percentile_key(options.alert_latency_percentile)
        except ValueError as exc:
            raise MonitorError(f"Bad value for setting alert_latency_percentile: {exc}.") from None
        if options.alert_timeout <= 0:
            raise MonitorError("Bad value for setting alert_timeout: it must be above zero.")
        enabled = select_rules(options.alert_rules)
        self._options, self._record, self._record_delivery = options, record, record_delivery
        self._rules = [rule for rule in make_rules() if rule.name in enabled]
        self._states = {rule.name: _State() for rule in self._rules}
        self._for, self._cooldown = options.alert_for, timedelta(seconds=options.alert_cooldown)
        self._source = options.alert_source or socket.gethostname() or "inferwatch"
        self._base = (options.alert_base_url or "").rstrip("/")
        self._lock = threading.Lock()
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._seen: dict[str, tuple[Report, Any]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._held: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        chosen = build_channels(options) if channels is None else list(channels)
        self._channel_names = [channel.name for channel in chosen]
        self._dispatcher = Dispatcher(
            chosen,
            attempts=options.alert_attempts,
            backoff=options.alert_backoff,
            queue_size=queue_size,
            report=self._delivered,
        )

    def evaluate(
        self,
        health: Report | None = None,
        drift: Report | None = None,
        evaluation: Report | None = None,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Feed the latest reports (None = no new one) and return the alert events this made.

        Call it after each check. A drift or evaluation report already seen (the same object, or
        the same ``checked_at``) is not counted twice. Delivery happens on the channels' threads,
        so this never waits on a channel.
        """
        now = _utc(now)
        events: list[dict[str, Any]] = []
        with self._lock:
            reports = {
                "health": health,
                "drift": self._fresh("drift", drift),
                "evaluation": self._fresh("evaluation", evaluation),
            }
            for rule in self._rules:
                report = reports[rule.source]
                if report is None:
                    continue
                try:
                    finding = rule.check(report, self._options)
                except Exception as exc:  # one odd report must not silence the other rules
                    self._errors[rule.name] = self._errors.get(rule.name, 0) + 1
                    logger.warning("inferwatch alert rule %s failed: %s", rule.name, repr(exc))
                    continue
                event = None if finding is None else self._step(rule, finding, now)
                if event is not None:
                    self._history.append(event)
                    key = (rule.name, event["state"])
                    self._counts[key] = self._counts.get(key, 0) + 1
                    events.append(copy.deepcopy(event))
        for event in events:
            self._emit(event)
        return events

    def _fresh(self, source: str, report: Report | None) -> Report | None:
        if report is None:
            return None
        stamp = report.get("checked_at") or report.get("evaluated_at")
        seen = self._seen.get(source)
        if seen is not None and (seen[0] is report or (stamp is not None and stamp == seen[1])):
            return None
        self._seen[source] = (report, stamp)
        return report

    def _step(self, rule: Rule, finding: Finding, now: datetime) -> dict[str, Any] | None:
        state = self._states[rule.name]
        state.last = finding
        if not finding.met:
            state.met, state.since = 0, None
            if state.firing is None:
                return None
            state.clear += 1
            if state.clear < self._for:
                return None
            worst, episode = state.worst, state.firing["episode"]
            state.firing, state.clear, state.worst = None, 0, None
            state.quiet_until = now + self._cooldown
            return self._event(rule, "resolved", finding, state.episode_since, now, episode, worst)
        state.clear = 0
        if state.met == 0:
            state.since, state.held = now, False
        state.met += 1
        if state.firing is not None:
            worst = state.worst
            if finding.value is not None and (worst is None or (worst.value or 0) < finding.value):
                state.worst = finding
            return None
        if state.met < self._for:
            return None
        if state.quiet_until is not None and now < state.quiet_until:
            if not state.held:
                state.held = True
                self._held[rule.name] = self._held.get(rule.name, 0) + 1
            return None
        state.worst, state.episode_since = finding, state.since or now
        state.firing = self._event(rule, "firing", finding, state.episode_since, now)
        return state.firing

    def _event(
        self,
        rule: Rule,
        state: str,
        finding: Finding,
        since: datetime,
        now: datetime,
        episode: str | None = None,
        worst: Finding | None = None,
    ) -> dict[str, Any]:
        episode = episode or uuid.uuid4().hex
        return {
            "id": f"{episode}-{state}",
            "episode": episode,
            "rule": rule.name,
            "title": rule.title,
            "state": state,
            "severity": rule.severity,
            "at": _iso(now),
            "since": _iso(since),
            "duration_s": round((now - since).total_seconds(), 3),
            "summary": finding.summary,
            "details": list(finding.details),
            "value": finding.value,
            "threshold": finding.threshold,
            "worst": None if worst is None else worst.summary,
            "source": self._source,
            "links": {
                "dashboard": f"{self._base}/dashboard",
                rule.look: f"{self._base}/{rule.look}",
            },
            "deliveries": {
                name: {"status": "pending", "attempts": 0, "error": None}
                for name in self._channel_names
            },
        }

    def _emit(self, event: dict[str, Any]) -> None:
        level = logging.WARNING if event["state"] == "firing" else logging.INFO
        logger.log(
            level, "inferwatch alert %s %s: %s", event["rule"], event["state"], event["summary"]
        )
        if self._record is not None:
            try:
                self._record(_row(event))
            except Exception as exc:
                logger.warning(
                    "inferwatch could not store alert %s: %s", event["id"], scrub(repr(exc))
                )
        self._dispatcher.submit({k: v for k, v in event.items() if k != "deliveries"})

    def _delivered(
        self, event_id: str, channel: str, status: str, attempts: int, error: str | None
    ) -> None:
        with self._lock:
            for event in reversed(self._history):
                if event["id"] == event_id:
                    event["deliveries"][channel] = {
                        "status": status, "attempts": attempts, "error": error,
                    }  # fmt: skip
                    break
        if status in _FINAL and self._record_delivery is not None:
            row = {
                "ts": datetime.now(UTC).replace(tzinfo=None),
                "event_id": event_id,
                "channel": channel,
                "outcome": status,
                "attempts": attempts,
                "error": error,
            }
            try:
                self._record_delivery(row)
            except Exception as exc:
                logger.warning("inferwatch could not store a delivery: %s", scrub(repr(exc)))

    def history(
        self, since: datetime | str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Alert events of this process (and restored ones), newest first, with deliveries."""
        cutoff = None if since is None else _utc(since)
        with self._lock:
            items = [
                e for e in reversed(self._history) if cutoff is None or _utc(e["at"]) >= cutoff
            ]
            return copy.deepcopy(items[: max(0, limit)])

    def active(self) -> list[dict[str, Any]]:
        """The firing alert of every rule that has one, with the latest finding as ``current``."""
        with self._lock:
            return [
                {**copy.deepcopy(state.firing), "current": state.last and state.last.summary}
                for state in self._states.values()
                if state.firing is not None
            ]

    def channels(self) -> list[dict[str, Any]]:
        """Each channel's name, masked target, delivery counts, queue and last error."""
        return self._dispatcher.describe()

    def metrics(self) -> Iterator[Metric]:
        """Prometheus families: alert events, active alerts, cooldown holds, deliveries."""
        alerts = CounterMetricFamily(
            "inferwatch_alerts", "Alert events by rule and state (firing or resolved).",
            labels=["rule", "state"],
        )  # fmt: skip
        active = GaugeMetricFamily(
            "inferwatch_alerts_active", "1 while the rule's alert is firing.", labels=["rule"]
        )
        held = CounterMetricFamily(
            "inferwatch_alerts_suppressed", "Alert episodes held back by alert_cooldown.",
            labels=["rule"],
        )  # fmt: skip
        errors = CounterMetricFamily(
            "inferwatch_alert_rule_errors", "Reports an alert rule failed to read.", labels=["rule"]
        )
        with self._lock:
            for rule in self._rules:
                for state in ("firing", "resolved"):
                    alerts.add_metric([rule.name, state], self._counts.get((rule.name, state), 0))
                active.add_metric([rule.name], float(self._states[rule.name].firing is not None))
                held.add_metric([rule.name], self._held.get(rule.name, 0))
                errors.add_metric([rule.name], self._errors.get(rule.name, 0))
        yield from (alerts, active, held, errors)
        yield from self._dispatcher.metrics()

    def restore(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Carry on from a previous process's ``alerts`` rows (oldest first).

        An episode that alerted and never resolved stays firing, so its resolve is still sent
        and no second alert is; a recent resolve keeps its cooldown.
        """
        titles = {rule.name: rule.title for rule in self._rules}
        with self._lock:
            for row in rows:
                event = _from_row(row, titles)
                self._history.append(event)
                state = self._states.get(event["rule"])
                if state is None:
                    continue
                if event["state"] == "firing":
                    state.firing, state.met, state.clear = event, self._for, 0
                    state.episode_since = _utc(event["since"])
                    state.worst = state.last = Finding(
                        True, event["summary"], event["value"], event["threshold"]
                    )
                else:
                    if state.firing is not None and state.firing["episode"] == event["episode"]:
                        state.firing, state.met, state.worst = None, 0, None
                    state.quiet_until = _utc(event["at"]) + self._cooldown

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued within ``timeout`` seconds, then stop.

        True when every channel worked off its queue in time (each message sent or given up);
        False when some channel was still busy, and what it held is given up.
        """
        return self._dispatcher.close(timeout)


_JSON_FIELDS = ("details", "links")


def _row(event: Mapping[str, Any]) -> dict[str, Any]:
    """The ``alerts`` table row of an event: naive UTC timestamps, JSON text for lists."""
    row = {k: v for k, v in event.items() if k not in {"at", "title", "deliveries"}}
    row["ts"] = _utc(event["at"]).replace(tzinfo=None)
    row["since"] = _utc(event["since"]).replace(tzinfo=None)
    for name in _JSON_FIELDS:
        row[name] = json.dumps(event[name])
    return row


def _from_row(row: Mapping[str, Any], titles: Mapping[str, str]) -> dict[str, Any]:
    event = {k: v for k, v in row.items() if k != "ts"}
    event["at"] = _iso(_utc(row["ts"] if "ts" in row else row["at"]))
    event["since"] = _iso(_utc(row["since"]))
    for name in _JSON_FIELDS:
        if isinstance(event.get(name), str):
            event[name] = json.loads(event[name])
    event.setdefault("title", titles.get(event["rule"], event["rule"]))
    event["deliveries"] = {}
    return event
