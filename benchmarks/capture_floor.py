"""The least a capture can cost on the model's core: a floor under the throughput targets.

Measured in the same minutes on one pinned core, in interleaved rounds:

- ``bare``: the middleware benchmark's FastAPI app (``middleware_overhead.create_app``), CPU
  per request, driven in-process through ASGI in a child process;
- ``request path``: what a layer that sees the bodies adds to an app that only echoes a fixed
  response, in blocks alternating with the app alone: ``MonitorMiddleware`` at ``sample_rate``
  0.0 (timing, the sampling decision, the body tee, the efficiency metrics, the engine's idle
  threads; no writer work), and a minimal tee (both bodies into a deque, nothing
  else); the floor takes the cheaper;
- ``orjson``: ``orjson.loads`` of one captured request and response (4 records of 10 features,
  4 predictions), the least any parse can cost;
- ``DuckDB``: storing that capture's 44 values in the narrowest long-form table there could be
  (``ts, row_index, column_id, num``: no request id, no strings) and its ``requests`` row, from
  NumPy columns in batches of ``--batch`` captures, committed to a file.

Everything else the writer does (flattening, type codes, column ids, string values, request
ids) counts as free here. So ``bare / (bare + path + rate * (orjson + DuckDB))`` is an upper
bound on the throughput share of any design whose writer runs on the model's core, at each
sample rate, to set beside the throughput targets (0.95 at 1.0, 0.98 at 0.1). The same floor per
10-feature row, at 100 records per request, bounds the writer's rows per CPU-second (target
100,000).

Measured with this script and not kept in the request path: folding the efficiency totals in
batches (0.6 µs saved per request, 0.75 µs spent folding), and ``MonitorMiddleware.__call__``
returning its inner coroutine instead of awaiting it (no difference).

    python benchmarks/capture_floor.py [--rounds 5] [--core 0] [--requests 5000] [--batch 2048]
    python benchmarks/capture_floor.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.asgi import asgi_request, lifespan
from _lib.machine import machine_info, machine_markdown
from _lib.pinning import pin_to_core
from _lib.records import make_bodies, make_prediction_bodies
from _lib.report import Figure, command_line, figures_table, markdown_table
from _lib.rounds import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferwatch.middleware.store.schema import STATEMENTS  # noqa: E402

FEATURES = 10
TARGETS = {1.0: 0.95, 0.1: 0.98}
ROWS_TARGET = 100_000
PATH_TARGET_US = 5.0  # the worker's CPU added per request at sample_rate 0.0


def parse_us(records: int, repeats: int = 2_000) -> float:
    """CPU µs of ``orjson.loads`` for one request body of ``records`` records and its response."""
    bodies = make_bodies(64, records)
    answers = make_prediction_bodies(64, records)
    loads = orjson.loads
    start = time.process_time()
    for i in range(repeats):
        loads(bodies[i % 64])
        loads(answers[i % 64])
    return (time.process_time() - start) / repeats * 1e6


def _requests_columns(count: int, start: int) -> dict[str, np.ndarray]:
    ts = np.datetime64("2026-01-01T00:00:00", "us") + np.arange(start, start + count)
    text = np.array(["x"] * count, dtype=object)
    return {
        "ts": ts,
        "request_id": np.array([f"{start + i:016x}" for i in range(count)], dtype=object),
        "method": text,
        "route": text,
        "status": np.full(count, 200, np.int16),
        "latency_ms": np.full(count, 3.0),
        "ttfb_ms": np.full(count, 2.0),
        "request_bytes": np.full(count, 900, np.int64),
        "response_bytes": np.full(count, 40, np.int64),
        "error": np.full(count, None, dtype=object),
        "input_status": text,
        "output_status": text,
        "input_rows": np.full(count, 4, np.int32),
        "output_rows": np.full(count, 4, np.int32),
        "model": np.full(count, None, dtype=object),
    }


class TeeMiddleware:
    """A minimal pure-ASGI layer: wraps receive and send, keeps both bodies in a
    deque, and nothing else (no timing, no sampling, no request id)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.kept: deque[tuple[bytes, bytes]] = deque(maxlen=10_000)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        response: list[bytes] = []

        async def tee_receive() -> dict[str, Any]:
            message = await receive()
            request.append(message.get("body", b""))
            return message

        async def tee_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                response.append(message.get("body", b""))
            await send(message)

        await self.app(scope, tee_receive, tee_send)
        self.kept.append((b"".join(request), b"".join(response)))


async def _path_rounds(blocks: int, requests: int, workdir: Path) -> dict[str, list[float]]:
    """Per block: CPU µs per request that each layer adds to an echo app, against the app alone
    in the blocks on either side of it."""
    from inferwatch import MonitorMiddleware

    request = make_bodies(1, 4)[0]
    answer = make_prediction_bodies(1, 4)[0]
    headers = [(b"content-type", b"application/json")]

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # as a server's app: answer startup and shutdown
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    layers = {
        "path": MonitorMiddleware(echo, db=str(workdir / "path.duckdb"), sample_rate=0.0),
        "tee": TeeMiddleware(echo),
    }

    async def block(app: Any) -> float:
        start = time.process_time()
        for _ in range(requests):
            await asgi_request(app, "POST", "/predict", request)
        return (time.process_time() - start) / requests * 1e6

    added: dict[str, list[float]] = {name: [] for name in layers}
    async with lifespan(layers["path"]):
        for app in (echo, *layers.values()):  # warm-up
            await block(app)
        for _ in range(blocks):
            for name, app in layers.items():
                before, cost, after = await block(echo), await block(app), await block(echo)
                added[name].append(cost - (before + after) / 2)
    return added


def path_us(blocks: int, requests: int, workdir: Path) -> dict[str, float]:
    """Median CPU µs per request added by MonitorMiddleware at sample_rate 0.0 and by the
    minimal tee (see the module's docstring)."""
    found = asyncio.run(_path_rounds(blocks, requests, workdir))
    return {name: median(values) for name, values in found.items()}


def insert_us(records: int, workdir: Path, batch: int, batches: int = 4) -> float:
    """CPU µs per capture of storing its values (``records`` x 11) and its request row."""
    path = workdir / f"floor-{records}.duckdb"
    for stale in (path, Path(f"{path}.wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    for statement in STATEMENTS:
        con.execute(statement)
    con.execute(
        "CREATE TABLE narrow (ts TIMESTAMP NOT NULL, row_index INTEGER NOT NULL, "
        "column_id INTEGER NOT NULL, num DOUBLE)"
    )
    per_capture = records * (FEATURES + 1)
    rng = np.random.default_rng(records)
    values = batch * per_capture
    spent = 0.0
    for b in range(batches + 1):  # the first batch warms up and is not counted
        requests = _requests_columns(batch, b * batch)
        narrow = {
            "ts": np.repeat(requests["ts"], per_capture),
            "row_index": np.tile(
                np.repeat(np.arange(records, dtype=np.int32), FEATURES + 1), batch
            ),
            "column_id": np.tile(np.arange(FEATURES + 1, dtype=np.int32) * 8, batch * records),
            "num": rng.normal(size=values),
        }
        start = time.process_time()
        con.execute("BEGIN TRANSACTION")
        con.register("request_batch", requests)
        con.execute("INSERT INTO requests SELECT * FROM request_batch")
        con.register("narrow_batch", narrow)
        con.execute("INSERT INTO narrow SELECT * FROM narrow_batch")
        con.execute("COMMIT")
        con.unregister("request_batch")
        con.unregister("narrow_batch")
        if b:
            spent += time.process_time() - start
    con.close()
    return spent / (batches * batch) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--core", type=int, default=0, help="the one core everything runs on")
    parser.add_argument("--requests", type=int, default=5_000, help="per in-process run")
    parser.add_argument("--batch", type=int, default=2_048, help="captures per DuckDB insert")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, small runs")
    args = parser.parse_args(argv)
    blocks, per_block = 5, 2_000
    if args.quick:
        args.rounds, args.requests, args.batch = 1, min(args.requests, 1_000), min(args.batch, 256)
        blocks, per_block = 3, 500
    import middleware_overhead as overhead

    pinned = pin_to_core(args.core)
    driver = argparse.Namespace(server_core=args.core, in_process=args.requests)
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="inferwatch-floor-") as tmp:
        workdir = Path(tmp)
        for rnd in range(args.rounds):
            run = overhead.run_in_process(driver, "bare", rnd, workdir)
            figures.setdefault("bare", []).append(run["cpu_us"])
            for name, value in path_us(blocks, per_block, workdir).items():
                figures.setdefault(name, []).append(value)
            figures.setdefault("orjson", []).append(parse_us(4))
            figures.setdefault("duckdb", []).append(insert_us(4, workdir, args.batch))
            figures.setdefault("orjson-100", []).append(parse_us(100, 200) / 100)
            figures.setdefault("duckdb-100", []).append(insert_us(100, workdir, 200) / 100)
            print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figures.items()))
    mid = {k: median(v) for k, v in figures.items()}
    # the floor takes the cheaper of the two: no layer that sees the bodies costs less than that
    path = min(mid["path"], mid["tee"])
    capture = mid["orjson"] + mid["duckdb"]
    # the shares come from each round's own figures: the machine's speed drifts between rounds
    shares = {
        rate: [
            b / (b + min(p, t) + rate * (o + d))
            for b, p, t, o, d in zip(
                *(figures[k] for k in ("bare", "path", "tee", "orjson", "duckdb")), strict=True
            )
        ]
        for rate in TARGETS
    }
    command = command_line("capture_floor.py", argv)
    parts = [
        "# The capture floor",
        "",
        machine_markdown(machine_info()),
        "",
        f"Pinned to core {args.core}." if pinned else "Not pinned (no sched_setaffinity).",
        "",
        f"Command: `{command.strip()}`; medians of {args.rounds} interleaved rounds, CPU µs.",
        "",
        markdown_table(
            ["figure", "per round", "median"],
            [
                [name, " / ".join(f"{v:.2f}" for v in figures[key]), f"{mid[key]:.2f}"]
                for name, key in (
                    ("bare app, per request", "bare"),
                    ("request path (middleware at sample_rate 0.0), per request", "path"),
                    ("minimal tee layer (bodies into a deque), per request", "tee"),
                    ("orjson, one 4-record capture", "orjson"),
                    ("DuckDB floor, one 4-record capture (44 values)", "duckdb"),
                    ("orjson, per row at 100 records per request", "orjson-100"),
                    ("DuckDB floor, per row at 100 records per request", "duckdb-100"),
                )
            ],
        ),
        "",
        f"Request path (the cheaper of the two layers): {path:.1f} µs per request; capture "
        f"floor: {capture:.1f} µs per capture ({args.batch:,} captures per insert).",
        "",
        markdown_table(
            [
                "sample_rate",
                "floor µs per request",
                "best share of bare, per round",
                "median",
                "target",
                "reachable in-process",
            ],
            [
                [
                    f"{rate}",
                    f"{path + rate * capture:.1f}",
                    " / ".join(f"{v:.3f}" for v in shares[rate]),
                    f"{median(shares[rate]):.3f}",
                    f"{target}",
                    "**no**, in no round"
                    if max(shares[rate]) < target
                    else "only if all but orjson and DuckDB were free",
                ]
                for rate, target in TARGETS.items()
            ],
        ),
        "",
    ]
    row_floor = mid["orjson-100"] + mid["duckdb-100"]
    parts.append(
        f"Writer floor at 100 records per request: {row_floor:.2f} µs per 10-feature row, at most "
        f"{1e6 / row_floor:,.0f} rows per CPU-second (target {ROWS_TARGET:,}): "
        f"{1e6 / row_floor / ROWS_TARGET:.1f}x the target."
    )
    figures_run = [
        Figure(
            "request path added per request, µs (peer: a minimal tee of both bodies)",
            mid["path"],
            f"≤ {PATH_TARGET_US:g}",
            mid["tee"],
            ".2f",
            lambda x: x <= PATH_TARGET_US,
        ),
        *(
            Figure(
                f"best throughput share of bare in-process, sample_rate {rate}",
                median(shares[rate]),
                f"≥ {target}",
                spec=".3f",
                ok=lambda x, target=target: x >= target,
            )
            for rate, target in TARGETS.items()
        ),
        Figure(
            "writer floor, 10-feature rows per CPU-second at 100 records per request",
            1e6 / row_floor,
            f"≥ {ROWS_TARGET:,}",
            spec=",.0f",
            ok=lambda x: x >= ROWS_TARGET,
        ),
    ]
    parts += ["", "The targets:", "", figures_table(figures_run, peer="minimal tee")]
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
