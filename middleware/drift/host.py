"""What a periodic check needs of the engine that runs it, named here so that the check does not
import the engine (which imports the checks)."""

from __future__ import annotations

from typing import Any, Protocol

from ..store.writer import StoreWriter
from .options import CheckOptions

__all__ = ["CheckHost"]


class CheckHost(Protocol):
    """The engine as a check sees it: the check's options (built once from the settings), its
    writer (the store, and the thread reports are written on) and what the model server says
    about a model."""

    check_options: CheckOptions
    writer: StoreWriter

    def served_metadata(self, model: str | None) -> dict[str, Any] | None: ...
