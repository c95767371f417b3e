"""One collector per pod: the process that owns the log store, fed by every worker.

Workers hand their requests over through :class:`CollectorChannel` (``channel``); the collector
(``process``) reads them (``ingest``) into its engine (``pod``) and answers the monitor API
(``api``), which workers forward to it (``forward``). ``election`` decides who starts it.
"""

from .channel import CollectorChannel
from .forward import ApiForwarder
from .paths import CollectorPaths

__all__ = ["ApiForwarder", "CollectorChannel", "CollectorPaths"]
