"""inferwatch: monitoring for self-hosted model endpoints.

>>> from inferwatch import MonitorMiddleware
>>> app.add_middleware(MonitorMiddleware, db="monitor.duckdb", sample_rate=0.2)

``inferwatch.middleware`` is the engine and its pure-ASGI middleware; ``inferwatch.sidecar`` the
reverse proxy and the command line (``inferwatch``, or ``python -m inferwatch``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .middleware import Engine, MonitorError, MonitorMiddleware, Settings

__all__ = ["Engine", "MonitorError", "MonitorMiddleware", "Settings"]
__version__ = "0.1.0"

# Installed, middleware/ and sidecar/ sit inside this package (pyproject's package-dir puts them
# there). In a source checkout they sit beside this folder, which shadows an editable install
# whenever the checkout is on sys.path (pytest's rootdir, `python -m` from it): look there too.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (
    not (Path(__file__).parent / "middleware").is_dir()
    and (_CHECKOUT / "middleware" / "__init__.py").is_file()
):
    __path__.append(str(_CHECKOUT))


def __getattr__(name: str) -> Any:
    # Imported on first use, as ``inferwatch.middleware`` does: the CLI and the collector start
    # without paying for the engine's imports.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".middleware", __name__), name)
    globals()[name] = value
    return value
