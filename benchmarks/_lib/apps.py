"""The variants the benchmarks compare an app in: bare, monitored at a sample rate (writing to a
real DuckDB file), instrumented by the peer, prometheus-fastapi-instrumentator, or behind the
floor, the least a middleware does to hand each request's timing over (``floor_middleware``).
Where the benchmark sets BENCH_GC_DIR, the process that builds the app also counts its garbage
collections (``gcstats``), whatever the variant."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from .gcstats import watch_gc

PEER = "prometheus"
"""The peer every in-worker benchmark measures beside inferwatch, in the same run."""
FLOOR = "floor"
"""The least any monitor in Python costs a worker, where a benchmark runs it too."""


def instrument(
    app: Any, variant: str, db: str, sample_rates: Mapping[str, float], engine_here: bool = False
) -> Any:
    """``app`` as ``variant``: ``MonitorMiddleware`` at ``sample_rates[variant]`` writing to
    ``db`` (its log on stderr, kept in the server log), the peer, or bare. With ``engine_here``
    the engine runs in this process instead of the collector the worker would start."""
    watch_gc()  # only where the benchmark asks (BENCH_GC_DIR): bare and monitored alike
    if variant in sample_rates:
        from inferwatch import MonitorMiddleware

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log = logging.getLogger("inferwatch")
        if not log.handlers:
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        values = {"db": db, "sample_rate": sample_rates[variant]}
        if engine_here:
            from inferwatch import Engine, Settings  # else a worker never loads the engine

            app.add_middleware(MonitorMiddleware, engine=Engine(Settings.load(values)))
        else:
            app.add_middleware(MonitorMiddleware, **values)
    elif variant == PEER:
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    elif variant == FLOOR:
        from .floor_middleware import FloorMiddleware

        app.add_middleware(FloorMiddleware)
    return app
