"""inferwatch's monitoring engine and its pure-ASGI middleware.

>>> from middleware import MonitorMiddleware
>>> app.add_middleware(MonitorMiddleware, db="monitor.duckdb", sample_rate=0.2)
"""

from ._engine import Engine
from ._errors import MonitorError
from ._middleware import MonitorMiddleware
from ._settings import Settings

__all__ = ["Engine", "MonitorError", "MonitorMiddleware", "Settings"]
__version__ = "0.1.0"
