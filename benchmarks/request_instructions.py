"""Instructions the middleware adds to one request of the FastAPI apps, counted by callgrind.

CPU time per request moves by several µs between two runs of the same worker on a shared virtual
machine; an instruction count moves far less, whatever else the machine does. The model app's sync
route runs in a thread, and how many turns the event loop takes while it waits depends on how
valgrind interleaves the two threads: a variant's figure moves by up to 10,000 a request from run to
run, while the monitored variants less the floor moved by under 4,000 in three runs. So this script
runs ``collector_overhead.py``'s app (``model``: pydantic models and a sync route; or ``light``)
straight through ASGI, bare and monitored, under ``valgrind --tool=callgrind``, each twice: once
with ``--calls`` requests and once with none after the same warm-up. The difference over ``--calls``
is each variant's instructions per request, and a variant's figure less bare's is what the
middleware adds: its request path, the extra coroutine resumptions and the garbage collections its
objects cause (each variant's collections among the counted requests are printed); the peer,
prometheus-fastapi-instrumentator, is counted the same way, and so is the floor
(``_lib/floor_middleware.py``: a middleware that only times each request and hands the timings over
in batches), what any monitor written in Python adds at least. The hand-off's sender thread does not
run (its records are discarded), as no collector does: the request path is what is counted.

    python benchmarks/request_instructions.py                 # model app, about 10 minutes
    python benchmarks/request_instructions.py --app light --calls 500

Needs valgrind (Debian: ``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.callgrind import total_instructions
from _lib.report import Figure, figures_table

_VARIANTS = ("bare", "floor", "monitor-0.0", "monitor-1.0", "prometheus")
_WARMUP = 300


def child(app_kind: str, variant: str, calls: int, db: str) -> None:
    """Run in the counted process: warm up, then ``calls`` requests, then exit at once."""
    from _lib.asgi import asgi_request, lifespan
    from _lib.records import make_bodies
    from collector_overhead import BODIES, RECORDS, create_app

    if variant.startswith("monitor"):
        from inferwatch.middleware.collector.channel import CollectorChannel

        # No sender thread and no collector: only the request path runs in this process.
        def start(self: CollectorChannel) -> None:
            self.running = self.connected = True

        CollectorChannel.start = start  # type: ignore[method-assign]

    async def main() -> None:
        app = create_app(app_kind, variant, db)
        bodies = make_bodies(BODIES, RECORDS)
        async with lifespan(app):
            monitor = getattr(app, "middleware_stack", None)
            while monitor is not None and type(monitor).__name__ != "MonitorMiddleware":
                monitor = getattr(monitor, "app", None)
            pending = monitor.channel.pending if monitor is not None else []
            for i in range(_WARMUP + calls):
                if i == _WARMUP:
                    before = [s["collections"] for s in gc.get_stats()]
                await asgi_request(app, "POST", "/predict", bodies[i % BODIES])
                del pending[:]
            if calls:
                after = [s["collections"] for s in gc.get_stats()]
                print(json.dumps([a - b for a, b in zip(after, before, strict=True)]), flush=True)
            os._exit(0)  # the count ends here: no shutdown in it

    asyncio.run(main())


def count(app_kind: str, variant: str, calls: int, workdir: Path) -> tuple[int, list[int]]:
    """Instructions of one child run under callgrind, and the garbage collections of each
    generation during its counted requests."""
    out = workdir / f"{app_kind}-{variant}-{calls}.callgrind"
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "INFERWATCH_COLLECTOR_AUTOSTART": "false",
        "PYTHONPATH": os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent),
    }
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, __file__, "--child", app_kind, variant, str(calls),
        str(workdir / "monitor.duckdb"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    total = total_instructions(out)
    if total is None:
        raise SystemExit(f"callgrind gave no total for {variant}: {done.stderr[-2000:]}")
    return total, json.loads(done.stdout.strip().splitlines()[-1]) if calls else [0, 0, 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", choices=("model", "light"), default="model")
    parser.add_argument("--calls", type=int, default=1000, help="requests counted per variant")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 requests")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.calls = 100
    if args.child:
        app_kind, variant, calls, db = args.child
        child(app_kind, variant, int(calls), db)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    per_request: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="inferwatch-instructions-") as tmp:
        for variant in _VARIANTS:
            full, collections = count(args.app, variant, args.calls, Path(tmp))
            empty, _ = count(args.app, variant, 0, Path(tmp))
            per_request[variant] = (full - empty) / args.calls
            print(
                f"{variant:12s} {per_request[variant]:12,.0f} instructions per request; "
                f"garbage collections of generation 0 / 1 / 2: {' / '.join(map(str, collections))}"
            )
    bare = per_request["bare"]
    peer = per_request["prometheus"] - bare
    figures = [
        Figure(
            f"instructions added per request, sample_rate {variant[-3:]}",
            per_request[variant] - bare,
            peer=peer,
            spec=",.0f",
        )
        for variant in ("monitor-0.0", "monitor-1.0")
    ]
    print()
    print(f"{args.app} app, {args.calls:,} requests through ASGI; bare: {bare:,.0f} per request")
    print()
    print(figures_table(figures, peer="prometheus-fastapi-instrumentator"))
    print()
    floor = per_request["floor"] - bare
    print(f"the floor (times each request, hands the timings over in batches): {floor:+,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
