"""What the fleet shipper is told: its share of the settings."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ..settings import Settings

__all__ = ["FleetOptions"]


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """The settings the fleet shipper owns; the engine builds them once from :class:`Settings`."""

    url: str
    replica: str
    raw: float
    lookback: float
    flush_interval: float
    storage_options: str | None = field(default=None, repr=False)  # may hold credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> FleetOptions:
        """The shipper's options, read from the one settings object (``fleet_url`` set)."""
        return cls(
            url=settings.fleet_url or "",
            replica=settings.replica or socket.gethostname(),
            raw=settings.fleet_raw,
            lookback=settings.fleet_lookback,
            flush_interval=settings.flush_interval,
            storage_options=settings.fleet_storage_options,
        )
