"""The worker's CPU per request on the request path, in one process, without network or load
generator: where a few microseconds show.

A trivial ASGI app (reads the body, answers 18 bytes) is called straight through ASGI, bare and
wrapped in ``MonitorMiddleware`` (the documented one line, a real DuckDB path) at
``sample_rate`` 0.0 and 1.0. Each round runs every variant once, in a rotating order, for
``--calls`` calls; the figure is the CPU time of the calling thread (``time.thread_time``) per
call, so the sender thread, which hands the requests over, is not in it. No collector runs:
the request path does not depend on one, and the sender keeps and drops as it would while one
restarts. Printed: each variant's median over ``--rounds`` rounds, and the median of its
difference to bare in the same round, against the targets (added ≤ 5 µs at 0.0, ≤ 15 µs at 1.0).

    python benchmarks/request_path.py --rounds 9 --calls 50000
    python benchmarks/request_path.py --quick        # smoke run: 3 rounds of 5,000 calls
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.report import Figure, figures_table
from _lib.rounds import interleaved, median

from inferwatch import MonitorMiddleware

_BODY = b'{"instances": [{"a": 1, "b": 2.5}]}'
_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/predict",
    "raw_path": b"/predict",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}
_TARGETS = {"monitor-0.0": 5.0, "monitor-1.0": 15.0}


async def model(scope: Any, receive: Any, send: Any) -> None:
    message = await receive()
    assert message["body"]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"predictions": [1]}'})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": _BODY, "more_body": False}


async def _send(message: Any) -> None:
    return None


async def _run(app: Any, calls: int) -> float:
    """CPU seconds of this thread per call."""
    scope = _SCOPE
    gc.collect()
    started = time.thread_time()
    for _ in range(calls):
        await app(dict(scope), _receive, _send)
    return (time.thread_time() - started) / calls


async def main(rounds: int, calls: int) -> None:
    logging.getLogger("inferwatch").setLevel(logging.ERROR)  # no collector: no warnings of it
    folder = Path(tempfile.mkdtemp(prefix="inferwatch-request-path-"))
    common = {"db": str(folder / "monitor.duckdb"), "collector_autostart": False}
    variants: dict[str, Any] = {
        "bare": model,
        "monitor-0.0": MonitorMiddleware(model, sample_rate=0.0, **common),
        "monitor-1.0": MonitorMiddleware(model, sample_rate=1.0, **common),
    }
    for name, app in variants.items():
        await _run(app, 2_000)  # warm up (and start the hand-off)
        if name != "bare":
            assert app.channel is not None and app.channel.running
    names = list(variants)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for _, name in interleaved(names, rounds):
        figures[name].append(await _run(variants[name], calls) * 1e6)
    for app in variants.values():
        if app is not model:
            app.channel.stop(0.1)
    print(f"{rounds} rounds of {calls} calls, CPU µs per call of the calling thread (median)")
    for name in names:
        print(f"{name:>12}: {median(figures[name]):6.2f} µs")
    added = {
        name: median([v - b for v, b in zip(figures[name], figures["bare"], strict=True)])
        for name in _TARGETS
    }
    table = [
        Figure(
            f"added per request, sample_rate {name.split('-')[1]}, µs",
            added[name],
            f"≤ {goal:g}",
            spec="+.2f",
            ok=lambda x, goal=goal: x <= goal,
        )
        for name, goal in _TARGETS.items()
    ]
    print("\n" + figures_table(table, peer="peer (none run)"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds of 5,000 calls")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls = 3, 5_000
    asyncio.run(main(args.rounds, args.calls))
