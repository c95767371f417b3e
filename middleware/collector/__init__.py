"""One collector per pod: the process that owns the log store, fed by every worker.

Workers hand their requests over through :class:`CollectorChannel` (``channel``); the collector
(``process``) reads them (``ingest``) into its engine (``pod``) and answers the monitor API
(``api``), which workers forward to it (``forward``). ``election`` decides who starts it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channel import CollectorChannel
    from .forward import ApiForwarder
    from .paths import CollectorPaths

__all__ = ["ApiForwarder", "CollectorChannel", "CollectorPaths"]

# Imported on first use, so that the collector's own start imports neither httpx nor the engine.
_HOMES = {"ApiForwarder": ".forward", "CollectorChannel": ".channel", "CollectorPaths": ".paths"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
