"""How many feature rows per second the writer thread lands in DuckDB, on one core.

Captured exchanges (``inferwatch.middleware.payload.exchange.Capture``, bodies as chunk lists, as
the middleware hands them over) of ``{"instances": [...]}`` requests with 10-feature records and
their ``{"predictions": [...]}`` responses are put into a real ``middleware.Engine``'s queue, and
the writer thread parses, columnizes and inserts them into a DuckDB file. The whole process is
pinned to one core, so the writer, DuckDB's own threads and the producer share it.

Figures:

- throughput: instance rows (one per record of 10 features) and long-form rows (one per stored
  value: 10 inputs and 1 prediction per instance) per second, from the start of the writer's
  first batch to the end of its last, for 1, 10 and 100 records per request;
- the same at smaller writer batches (how many captures the writer finds queued each time it
  looks), because under live traffic the writer finds a few captures, not 2,000;
- where the writer's time goes: parsing, columnizing, the DuckDB insert;
- what happens when the writer is outrun: a small queue, a faster producer, and
  stored + dropped == sampled.

Measured with this script and not kept in the writer: the payload parser's clean-value check as
C-level calls (1.1 µs against the loop's 0.43 per 10-value record); a fast path for batches of
alike flat records (slower at 4 records); feature rows without their own ``ts`` and
``request_id``, joined inside the insert (22.5 against 22.3 µs per capture: the commit is the
cost); columns built per column instead of per value (no faster); Arrow dictionary arrays
instead of NumPy object arrays (212 against 188 ms for 220,000 values, not worth pyarrow).

    python benchmarks/ingest.py            # full run, about a minute or two
    python benchmarks/ingest.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.machine import machine_info, machine_markdown
from _lib.pinning import pin_to_core
from _lib.records import make_bodies, make_prediction_bodies
from _lib.report import (
    Figure,
    add_output_args,
    command_line,
    emit,
    figures_table,
    markdown_table,
    met,
    table,
    verdict,
)
from _lib.rounds import median
from _lib.servers import workdir as make_workdir
from _lib.store import count_db

import inferwatch.middleware.store.columns as columns_module
import inferwatch.middleware.store.database as store_module
import inferwatch.middleware.store.writer as writer_module
from inferwatch import Engine, Settings
from inferwatch.middleware.payload.exchange import Capture

FEATURES = 10
TARGET_ROWS_PER_S = 100_000
POOL = 256  # distinct bodies per shape


def make_captures(count: int, per_request: int, chunk: int = 16_384) -> list[Capture]:
    """``count`` captured exchanges of ``per_request`` records; bodies split in ``chunk`` pieces."""
    requests = make_bodies(POOL, per_request)
    responses = make_prediction_bodies(POOL, per_request)
    now = time.time()
    captures = []
    for i in range(count):
        req, resp = requests[i % POOL], responses[i % POOL]
        captures.append(
            Capture(
                ts=now + i * 1e-4,
                request_id=uuid.uuid4().hex,
                method="POST",
                path="/predict",
                route="/predict",
                status=200,
                latency_s=0.004,
                ttfb_s=0.0038,
                request_body=tuple(req[j : j + chunk] for j in range(0, len(req), chunk)),
                request_bytes=len(req),
                request_truncated=False,
                request_content_type="application/json",
                response_body=(resp,),
                response_bytes=len(resp),
                response_truncated=False,
                response_content_type="application/json",
                error=None,
            )
        )
    return captures


class Timers:
    """CPU time (every thread of the process) spent in a few writer functions, patched for the
    run and restored. CPU rather than wall time, so that other load on the core and the WAL's
    fsync waits are not counted; each timed call costs about a microsecond more."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        totals, calls = self.totals, self.calls
        totals.setdefault(label, 0.0)
        calls.setdefault(label, 0)
        clock = time.process_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label] += clock() - start
                calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


class BatchClock:
    """Start of the writer's first batch and end of its last, from a wrapper on ``_write``."""

    def __init__(self, writer: Any) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_first: float | None = None
        self.cpu_last: float | None = None
        self.batches = 0
        self.busy = 0.0
        self.busy_cpu = 0.0
        original = writer._write

        def timed(batch: list[Capture]) -> None:
            start, cpu_start = time.perf_counter(), time.process_time()
            if self.first is None:
                self.first, self.cpu_first = start, cpu_start
            try:
                original(batch)
            finally:
                self.last, self.cpu_last = time.perf_counter(), time.process_time()
                self.busy += self.last - start
                self.busy_cpu += self.cpu_last - cpu_start
                self.batches += 1

        writer._write = timed  # an instance attribute: this engine only


def set_batch_captures(value: int | None) -> int | None:
    """Set the writer's most captures per batch (a module constant); return the old value."""
    old = getattr(writer_module, "_BATCH_CAPTURES", None)
    if value is not None and old is not None:
        writer_module._BATCH_CAPTURES = value
    return old


def ingest_once(
    workdir: Path,
    per_request: int,
    instances: int,
    *,
    batch_captures: int | None = None,
    timers: bool = False,
) -> dict[str, Any]:
    """Pre-fill an engine's queue with captures, start its writer, time it to the last row."""
    count = max(1, instances // per_request)
    captures = make_captures(count, per_request)
    tag = f"{per_request}-{batch_captures or 'default'}-{uuid.uuid4().hex[:6]}"
    db = workdir / f"ingest-{tag}.duckdb"
    engine = Engine(
        Settings.load({"db": str(db), "queue_size": count + 1, "flush_interval": "50ms"})
    )
    for capture in captures:
        engine.queue.put(capture)
    del captures
    clock = BatchClock(engine.writer)
    timing = Timers()
    if timers:
        timing.wrap(columns_module, "parse_request", "parse request")
        timing.wrap(columns_module, "parse_response", "parse response")
        timing.wrap(engine.writer._columnizer, "columns", "columnize (incl. parse)")
        timing.wrap(store_module.Store, "insert", "DuckDB insert")
    old_batch = set_batch_captures(batch_captures)
    try:
        engine.start()
        flushed = engine.flush(timeout=1_800)
        engine.stop()
    finally:
        set_batch_captures(old_batch)
        timing.restore()
    elapsed = (clock.last or 0) - (clock.first or 0)
    # Process CPU (every thread: the writer, DuckDB's threads, the main thread idling in flush):
    # unlike wall time it does not count what other processes on the core took.
    cpu = (clock.cpu_last or 0) - (clock.cpu_first or 0)
    counters = engine.counters.snapshot()
    on_disk = count_db(db)
    for path in (db, Path(str(db) + ".wal")):
        path.unlink(missing_ok=True)
    rows = on_disk["input_rows"]
    result = {
        "per_request": per_request,
        "captures": count,
        "batch_captures": batch_captures or old_batch,
        "batches": clock.batches,
        "flushed": flushed,
        "seconds": elapsed,
        "writer_busy_s": clock.busy,
        "writer_busy_cpu_s": clock.busy_cpu,
        "cpu_seconds": cpu,
        "instance_rows_per_cpu_s": rows / cpu if cpu else 0.0,
        "instance_rows_per_s": rows / elapsed if elapsed else 0.0,
        "long_rows_per_s": on_disk["feature_values"] / elapsed if elapsed else 0.0,
        "requests_per_s": on_disk["requests"] / elapsed if elapsed else 0.0,
        "counters": counters,
        "on_disk": on_disk,
        "complete": on_disk["requests"] == count
        and rows == count * per_request
        and counters["stored"] == count
        and counters["rows_stored"] == on_disk["feature_values"],
    }
    if timers:
        result["timers"] = dict(timing.totals)
        result["timer_calls"] = dict(timing.calls)
    return result


def profile_writer(workdir: Path, per_request: int, instances: int, top: int) -> str:
    """cProfile of the writer's batch work, run on this thread so that cProfile sees it."""
    count = max(1, instances // per_request)
    captures = make_captures(count, per_request)
    db = workdir / f"profile-{per_request}-{uuid.uuid4().hex[:6]}.duckdb"
    engine = Engine(Settings.load({"db": str(db), "queue_size": count + 1}))
    for capture in captures:
        engine.queue.put(capture)
    del captures
    writer = engine.writer
    writer._open_store()
    batch_size = getattr(writer_module, "_BATCH_CAPTURES", 2_000)
    profiler = cProfile.Profile()
    profiler.enable()
    while True:
        batch = engine.queue.take(batch_size)
        if not batch:
            break
        writer._write(batch)
    profiler.disable()
    if writer.store is not None:
        writer.store.close()
    for path in (db, Path(str(db) + ".wal")):
        path.unlink(missing_ok=True)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def drop_run(
    workdir: Path, per_request: int, captures: int, queue_size: int, rate: float | None
) -> dict[str, Any]:
    """A producer faster than the writer, into a small queue: what is dropped is counted."""
    pool = make_captures(min(captures, 4_096), per_request)
    db = workdir / f"drop-{uuid.uuid4().hex[:6]}.duckdb"
    engine = Engine(
        Settings.load({"db": str(db), "queue_size": queue_size, "flush_interval": "50ms"})
    )
    engine.start()
    started = time.perf_counter()
    put = engine.queue.put
    if rate is None:  # as fast as the main thread can
        for i in range(captures):
            put(pool[i % len(pool)])
    else:  # paced: bursts every millisecond at ``rate`` captures per second
        interval = 0.001
        per_tick = max(1, round(rate * interval))
        sent = 0
        next_tick = started
        while sent < captures:
            for _ in range(min(per_tick, captures - sent)):
                put(pool[sent % len(pool)])
                sent += 1
            next_tick += interval
            pause = next_tick - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    produced_s = time.perf_counter() - started
    engine.flush(timeout=120)
    engine.stop()
    counters = engine.counters.snapshot()
    on_disk = count_db(db)
    for path in (db, Path(str(db) + ".wal")):
        path.unlink(missing_ok=True)
    return {
        "producer": "unpaced" if rate is None else f"{rate:,.0f}/s",
        "queue_size": queue_size,
        "put": captures,
        "produced_s": produced_s,
        "sampled": counters["sampled"],
        "stored": counters["stored"],
        "dropped": counters["dropped"],
        "write_errors": counters["write_errors"],
        "stored_in_db": on_disk["requests"],
        "accounted": counters["stored"] + counters["dropped"] + counters["write_errors"]
        == counters["sampled"]
        == captures,
        "db_matches": on_disk["requests"] == counters["stored"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=300_000,
        help="instance rows (10 features each) per measured run",
    )
    parser.add_argument(
        "--per-request", default="1,10,100", help="records per request, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (median taken)")
    parser.add_argument(
        "--batch-sweep",
        default="1,8,64,512",
        help="writer batch sizes (captures) to try with 4-record requests; empty skips it",
    )
    parser.add_argument("--core", type=int, default=0, help="the one core to run on")
    parser.add_argument("--workdir", help="where the DuckDB files go (default: a temp dir)")
    parser.add_argument(
        "--profile-top",
        type=int,
        default=25,
        help="functions listed from cProfile (0 skips profiling)",
    )
    add_output_args(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.batch_sweep, args.profile_top = 20_000, 1, "1,64", 15
    pinned = pin_to_core(args.core)
    workdir = make_workdir(args.workdir, "inferwatch-ingest-")
    command = command_line("ingest.py", argv)
    sizes = [int(v) for v in args.per_request.split(",") if v.strip()]
    log = sys.stderr

    # Warm up imports, orjson and DuckDB once, unmeasured.
    ingest_once(workdir, 10, 2_000)

    throughput: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for rep in range(args.repeats):
        for size in sizes:
            res = ingest_once(workdir, size, args.rows)
            throughput[size].append(res)
            print(
                f"repeat {rep + 1} {size:>3}/request: {res['instance_rows_per_s']:>10,.0f} rows/s "
                f"{res['long_rows_per_s']:>11,.0f} values/s  complete={res['complete']}",
                file=log,
                flush=True,
            )

    sweep: list[dict[str, Any]] = []
    for batch in [int(v) for v in args.batch_sweep.split(",") if v.strip()]:
        rows = min(args.rows, max(20_000, batch * 4 * 200))
        res = ingest_once(workdir, 4, rows, batch_captures=batch)
        sweep.append(res)
        print(
            f"batch {batch:>5} captures: {res['instance_rows_per_s']:>10,.0f} rows/s "
            f"{res['requests_per_s']:>9,.0f} requests/s",
            file=log,
            flush=True,
        )

    breakdown: dict[int, dict[str, Any]] = {}
    for size in sizes:
        breakdown[size] = ingest_once(workdir, size, args.rows, timers=True)

    profiles: dict[int, str] = {}
    if args.profile_top:
        for size in (10,) if 10 in sizes else sizes[:1]:
            profiles[size] = profile_writer(
                workdir, size, min(args.rows, 100_000), args.profile_top
            )

    drops = [
        drop_run(workdir, 10, 50_000, 256, None),
    ]
    capacity = median([r["requests_per_s"] for r in throughput.get(10, [])]) if 10 in sizes else 0
    if capacity:
        drops.append(drop_run(workdir, 10, int(capacity * 2 * 3), 256, capacity * 2))

    info = machine_info()
    info["pinned to core"] = str(args.core) if pinned else "no (could not pin)"
    text = report(args, command, info, throughput, sweep, breakdown, profiles, drops)
    payload = {
        "machine": info,
        "args": vars(args),
        "throughput": throughput,
        "batch_sweep": sweep,
        "breakdown": breakdown,
        "drops": drops,
    }
    emit(text, args.markdown, args.json_out, payload)
    ok = all(r["complete"] for rs in throughput.values() for r in rs) and all(
        d["accounted"] and d["db_matches"] for d in drops
    )
    return 0 if ok else 1


def report(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    throughput: dict[int, list[dict[str, Any]]],
    sweep: list[dict[str, Any]],
    breakdown: dict[int, dict[str, Any]],
    profiles: dict[int, str],
    drops: list[dict[str, Any]],
) -> str:
    out = ["## Machine", "", machine_markdown(info), "", "## Results", "", f"Command: `{command}`"]
    out += [
        "",
        f"Throughput, pre-filled queue, default writer batches, median of {args.repeats} "
        f"({args.rows:,} instance rows of {FEATURES} features per run; one long-form row per "
        f"stored value = {FEATURES} inputs + 1 prediction per instance):",
        "",
    ]
    keys = ("seconds", "requests_per_s", "instance_rows_per_s", "long_rows_per_s")
    keys += ("instance_rows_per_cpu_s",)
    rows = [
        {
            "size": size,
            "captures": runs[0]["captures"],
            "complete": all(r["complete"] for r in runs),
            **{key: median([r[key] for r in runs]) for key in keys},
        }
        for size, runs in throughput.items()
    ]
    columns = {
        "records/request": lambda m: m["size"],
        "captures": lambda m: f"{m['captures']:,}",
        "seconds": lambda m: f"{m['seconds']:.2f}",
        "requests/s": lambda m: f"{m['requests_per_s']:,.0f}",
        "instance rows/s": lambda m: f"{m['instance_rows_per_s']:,.0f}",
        "long-form rows/s": lambda m: f"{m['long_rows_per_s']:,.0f}",
        "instance rows per CPU-s": lambda m: f"{m['instance_rows_per_cpu_s']:,.0f}",
        "vs 100k target": lambda m: f"{m['instance_rows_per_s'] / TARGET_ROWS_PER_S:.2f}",
        "target met": lambda m: met(m["instance_rows_per_s"] >= TARGET_ROWS_PER_S),
        "all rows on disk": lambda m: verdict(m["complete"]),
    }
    out.append(table(rows, columns))
    if sweep:
        out += [
            "",
            "Writer batch size (captures the writer takes at once; 4-record requests, one run "
            "each). Under live traffic the writer takes whatever is queued, often a handful:",
            "",
        ]
        per_batch = lambda r, key: r[key] / max(r["batches"], 1) * 1000  # noqa: E731
        columns = {
            "captures per batch": lambda r: r["batch_captures"],
            "batches": lambda r: f"{r['batches']:,}",
            "requests/s": lambda r: f"{r['requests_per_s']:,.0f}",
            "instance rows/s": lambda r: f"{r['instance_rows_per_s']:,.0f}",
            "ms per batch (wall)": lambda r: f"{per_batch(r, 'writer_busy_s'):.2f}",
            "ms per batch (CPU)": lambda r: f"{per_batch(r, 'writer_busy_cpu_s'):.2f}",
            "CPU µs per request": lambda r: (
                f"{r['writer_busy_cpu_s'] / max(r['captures'], 1) * 1e6:.1f}"
            ),
        }
        out.append(table(sweep, columns))
    out += [
        "",
        "Where the writer's CPU time goes (process CPU timers around the writer's functions, "
        "per instance row; shares of the writer's CPU time in batches):",
        "",
    ]
    brows = []
    for size, res in breakdown.items():
        t = res["timers"]
        parse = t["parse request"] + t["parse response"]
        columnize = t["columnize (incl. parse)"] - parse
        insert = t["DuckDB insert"]
        busy = res["writer_busy_cpu_s"]
        other = busy - t["columnize (incl. parse)"] - insert
        rows_n = res["on_disk"]["input_rows"]
        brows.append(
            [
                size,
                f"{res['instance_rows_per_s']:,.0f}",
                f"{busy / rows_n * 1e6:.1f}",
                *(
                    f"{v / rows_n * 1e6:.1f} µs ({v / busy:.0%})"
                    for v in (parse, columnize, insert, other)
                ),
            ]
        )
    out.append(
        markdown_table(
            [
                "records/request",
                "rows/s (timed run, wall)",
                "writer CPU µs/row",
                "parse (orjson + shapes)",
                "columnize (rows → NumPy columns)",
                "DuckDB insert",
                "rest of _write",
            ],
            brows,
        )
    )
    for size, text in profiles.items():
        lines = [ln for ln in text.splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
        out += [
            "",
            f"cProfile of the writer's batches ({size} records per request, on the main thread), "
            "by own time:",
            "",
            "```",
            *lines[start : start + args.profile_top + 1],
            "```",
        ]
    out += ["", "Writer outrun (10-record requests, queue_size 256):", ""]
    columns = {
        "producer": lambda d: d["producer"],
        "put": lambda d: f"{d['put']:,}",
        "produced in s": lambda d: f"{d['produced_s']:.2f}",
        "sampled": lambda d: f"{d['sampled']:,}",
        "stored": lambda d: f"{d['stored']:,}",
        "dropped": lambda d: f"{d['dropped']:,}",
        "write errors": lambda d: d["write_errors"],
        "stored in DB": lambda d: f"{d['stored_in_db']:,}",
        "stored + dropped = sampled": lambda d: verdict(d["accounted"]),
        "DB = stored": lambda d: verdict(d["db_matches"]),
    }
    out.append(table(drops, columns))
    figures = [
        Figure(
            f"{FEATURES}-feature rows per CPU-second on one core, {size} records/request",
            median([r["instance_rows_per_cpu_s"] for r in runs]),
            f"≥ {TARGET_ROWS_PER_S:,}",
            spec=",.0f",
            ok=lambda x: x >= TARGET_ROWS_PER_S,
        )
        for size, runs in throughput.items()
    ]
    out += ["", "The target:", "", figures_table(figures, peer="peer (none run)")]
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
