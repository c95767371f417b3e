"""What the log store and its writer thread are told: the store's share of the settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings

__all__ = ["StoreOptions"]


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """The settings the store writer owns; the engine builds them once from :class:`Settings`."""

    db: str
    db_memory: int
    db_threads: int | None
    flush_interval: float
    retention: float
    max_db_bytes: int
    max_features: int
    max_fields_per_row: int
    summary_retention: float
    summary_rollup_after: float
    redact: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreOptions:
        """The store's options, read from the one settings object."""
        return cls(
            db=settings.db,
            db_memory=settings.db_memory,
            db_threads=settings.db_threads,
            flush_interval=settings.flush_interval,
            retention=settings.retention,
            max_db_bytes=settings.max_db_bytes,
            max_features=settings.max_features,
            max_fields_per_row=settings.max_fields_per_row,
            summary_retention=settings.summary_retention,
            summary_rollup_after=settings.summary_rollup_after,
            redact=settings.redact,
        )
