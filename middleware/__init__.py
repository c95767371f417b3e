"""inferwatch's monitoring engine and its pure-ASGI middleware.

>>> from inferwatch import MonitorMiddleware
>>> app.add_middleware(MonitorMiddleware, db="monitor.duckdb", sample_rate=0.2)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture.middleware import MonitorMiddleware
    from .engine.engine import Engine
    from .errors import MonitorError
    from .settings import Settings

__all__ = ["Engine", "MonitorError", "MonitorMiddleware", "Settings"]
__version__ = "0.1.0"

# Imported on first use: the collector process (``python -m inferwatch.middleware.collector``) binds
# its sockets before it pays for the engine's imports (DuckDB, numpy, starlette: about 0.5 s).
_HOMES = {
    "Engine": ".engine.engine",
    "MonitorError": ".errors",
    "MonitorMiddleware": ".capture.middleware",
    "Settings": ".settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
