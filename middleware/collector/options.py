"""What a worker's channel to the collector is told: its share of the settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings

__all__ = ["ChannelOptions"]


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """The settings a :class:`CollectorChannel` owns; the middleware builds them once.

    The collector it may start gets the worker's whole :class:`Settings`, through the ``start``
    that the middleware hands the channel beside these.
    """

    db: str
    queue_size: int
    health_window: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelOptions:
        """The channel's options, read from the one settings object."""
        return cls(
            db=settings.db, queue_size=settings.queue_size, health_window=settings.health_window
        )
