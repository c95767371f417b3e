"""What the periodic drift check is told: its share of the settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings

__all__ = ["CheckOptions"]


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """The settings a drift check owns; the engine builds them once from :class:`Settings`."""

    baseline: str | None
    window: float
    max_window_rows: int
    min_rows: int
    prediction_output: str | None
    attributions_field: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckOptions:
        """The check's options, read from the one settings object."""
        return cls(
            baseline=settings.baseline,
            window=settings.window,
            max_window_rows=settings.max_window_rows,
            min_rows=settings.min_rows,
            prediction_output=settings.prediction_output,
            attributions_field=settings.attributions_field,
        )
