"""What the alerts are told: the alert rules', channels' and delivery's share of the settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..settings import Settings

__all__ = ["AlertOptions"]


@dataclass(frozen=True, slots=True)
class AlertOptions:
    """The settings the alerts own, named as in :class:`Settings`; built once, by the engine.

    Their defaults live in :class:`Settings` alone.
    """

    alert_rules: tuple[str, ...]
    alert_for: int
    alert_cooldown: float
    alert_error_rate: float
    alert_min_requests: int
    alert_latency: float
    alert_latency_percentile: str
    alert_drop_rate: float
    alert_memory_percent: float
    alert_gpu_memory_percent: float
    alert_base_url: str | None
    alert_source: str | None
    alert_webhook_url: str | None = field(repr=False)
    alert_slack_url: str | None = field(repr=False)
    alert_teams_url: str | None = field(repr=False)
    alert_smtp_host: str | None
    alert_smtp_port: int | None
    alert_smtp_tls: str
    alert_smtp_user: str | None
    alert_smtp_password: str | None = field(repr=False)
    alert_email_from: str | None
    alert_email_to: tuple[str, ...]
    alert_timeout: float
    alert_attempts: int
    alert_backoff: float

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertOptions:
        """The alerts' options, read from the one settings object."""
        return cls(**{spec.name: getattr(settings, spec.name) for spec in dataclasses.fields(cls)})
