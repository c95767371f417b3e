"""What scraping /metrics every second and sampling resources every second cost the model.

The model app is ``middleware_overhead.py``'s (POST /predict, 4 records of 10 features, pydantic,
a small logistic model) with ``MonitorMiddleware(sample_rate=0.0)``, so capture writes do not
drown the signal. uvicorn runs it under ``taskset -c 0`` and wrk loads it from ``taskset -c 1``.
Two variants, interleaved for ``--rounds`` rounds with the order rotating:

- ``quiet``: ``INFERWATCH_RESOURCE_INTERVAL=1h`` and nobody scraping;
- ``scraped``: ``INFERWATCH_RESOURCE_INTERVAL=1s`` and a scraper process, pinned to wrk's core,
  doing ``GET /monitor/metrics`` once a second on a keep-alive connection (as Prometheus does).

Per run: req/s from wrk, and the server's CPU per request from ``/proc/<pid>/stat``
(utime + stime of the whole process) over the measured run. The cost is the median's difference.

Then, in a child pinned to the server core (no network): the CPU time of one
``generate_latest(registry)`` on a started engine whose request ring holds N requests over a few
routes and status classes, of one ``ResourceSampler().sample()``, and of one whole resource tick
(``engine._tick()``: the sample, the health status and the efficiency and resource rows, which the
engine hands to the writer every 5 s: measured as 10 ticks and one flush, divided by 10). Their sum
per second over one second of a core is a noise-free bound on the cost.

    python benchmarks/scrape_cost.py                # 4 rounds x 15 s per variant
    python benchmarks/scrape_cost.py --quick        # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.asgi import asgi_request, find_engine, lifespan, run_async, run_child, say
from _lib.load import write_lua
from _lib.machine import machine_info, machine_markdown, missing_tools, wrk_version
from _lib.pinning import taskset
from _lib.procfs import process_cpu
from _lib.records import make_bodies
from _lib.report import (
    Figure,
    add_run_args,
    cell,
    command_line,
    emit,
    figures_table,
    markdown_table,
    table,
)
from _lib.rounds import interleaved, median, medians_by
from _lib.servers import free_port, kill, start, stop, wait_for_port
from _lib.servers import workdir as make_workdir
from _lib.store import collector_done, find_collector
from middleware_overhead import (
    BATCH,
    BODIES,
    REPO,
    run_wrk,
    server_command,
)

VARIANTS = ("quiet", "scraped")
INTERVALS = {"quiet": "1h", "scraped": "1s"}
TARGET_PCT = 1.0
TICKS = 10  # the rows of 10 one-second ticks reach DuckDB in one flush, as they do when running


# --------------------------------------------------------------------------- the scraper


def scraper_child(port: int, path: str, every: float) -> None:
    """GET ``path`` every ``every`` seconds until SIGTERM; prints a JSON summary."""
    import http.client

    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = failed = size = 0
    wall: list[float] = []
    due = time.monotonic()
    while not stop:
        started = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                ok += 1
                size = len(body)
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        wall.append(time.perf_counter() - started)
        due += every
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    wall.sort()
    say(
        "SCRAPE_JSON",
        {
            "ok": ok,
            "failed": failed,
            "bytes": size,
            "p50_ms": wall[len(wall) // 2] * 1000 if wall else None,
            "max_ms": wall[-1] * 1000 if wall else None,
        },
    )


# --------------------------------------------------------------------------- one wrk run


def count_rows(db: Path, table: str) -> int | None:
    import duckdb

    try:
        con = duckdb.connect(str(db), read_only=True)
    except Exception:
        return None
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    except Exception:
        return None
    finally:
        con.close()


def run_variant(
    args: argparse.Namespace, variant: str, rnd: int, workdir: Path, lua: Path
) -> dict[str, Any]:
    port = free_port()
    db = workdir / f"{variant}-round{rnd}.duckdb"
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    env = {
        "BENCH_VARIANT": "monitor-0.0",
        "BENCH_DB": str(db),
        "INFERWATCH_RESOURCE_INTERVAL": INTERVALS[variant],
        "PYTHONUNBUFFERED": "1",
    }
    log_path = workdir / f"{variant}-round{rnd}.log"
    proc = start(server_command(args, port), log_path, env, REPO)
    scraper: subprocess.Popen[str] | None = None
    scrape: dict[str, Any] = {}
    try:
        wait_for_port(port, proc)
        url = f"http://127.0.0.1:{port}/predict"
        warm = run_wrk(args, url, lua, args.warmup, args.connections)
        if warm.status_errors or warm.errors:
            raise RuntimeError(f"{variant}: warm-up had errors")
        if variant == "scraped":
            cmd = [sys.executable, str(Path(__file__).resolve()), "--scraper-child", str(port)]
            scraper = subprocess.Popen(
                taskset(args.wrk_core, cmd), stdout=subprocess.PIPE, text=True
            )
        cpu_before = process_cpu(proc.pid)
        main = run_wrk(args, url, lua, args.duration, args.connections)
        cpu_after = process_cpu(proc.pid)
        if scraper is not None:
            scraper.send_signal(signal.SIGTERM)
            out, _ = scraper.communicate(timeout=30)
            line = next((ln for ln in out.splitlines() if ln.startswith("SCRAPE_JSON ")), None)
            scrape = json.loads(line[len("SCRAPE_JSON ") :]) if line else {"ok": 0, "failed": -1}
        collector = find_collector(db, {proc.pid})
        stop(proc)
        collector_done(collector)  # it writes what it holds, then lets the store go
    finally:
        kill(proc)
        if scraper is not None and scraper.poll() is None:
            scraper.kill()
            scraper.wait()
    cpu = cpu_after - cpu_before
    return {
        "variant": variant,
        "round": rnd,
        "rps": main.rps,
        "requests": main.requests,
        "errors": main.errors + main.status_errors,
        "p99_ms": main.p99_ms,
        "cpu_s": cpu,
        "cpu_us": cpu / max(main.requests, 1) * 1e6,
        "ring_at_end": warm.requests + main.requests,
        "scrape": scrape,
        "resource_rows": count_rows(db, "resources"),
        "log_tail": log_path.read_text(encoding="utf-8", errors="replace")[-2000:],
    }


# --------------------------------------------------------------------------- in-process CPU


def _cpu_per_call(fn: Any, calls: int, clock: Any) -> float:
    """Median CPU seconds of one call, over ``calls`` calls (after one warm call)."""
    fn()
    times = []
    for _ in range(calls):
        before = clock()
        fn()
        times.append(clock() - before)
    return median(times)


async def _in_process(fills: list[int], calls: int, rate: float) -> dict[str, Any]:

    from middleware_overhead import create_app
    from prometheus_client import generate_latest

    from inferwatch.middleware.engine.metrics import build_registry
    from inferwatch.middleware.serving.resources import ResourceSampler

    # The scrape and the tick run where the engine runs (the collector): here, to be timed.
    app = create_app(engine_here=True)

    @app.get("/info")
    async def info() -> dict[str, str]:
        return {"model": "churn", "version": "1"}

    async with lifespan(app):

        async def one(method: str, path: str, body: bytes) -> None:
            await asgi_request(app, method, path, body)

        # Real requests over three routes and three status classes, so labels exist.
        bodies = make_bodies(BODIES, BATCH)
        for i in range(400):
            await one("POST", "/predict", bodies[i % BODIES])
        for _ in range(50):
            await one("POST", "/predict", b'{"instances": []}')  # 422
            await one("GET", "/info", b"")
            await one("GET", "/nowhere", b"")  # 404
        engine = find_engine(app)
        if engine is None:
            raise RuntimeError("no MonitorMiddleware engine in the app")
        registry = build_registry(engine)
        tracker = engine.efficiency
        rng = random.Random(3)
        results: dict[str, Any] = {"ring_size": tracker._ring.maxlen, "fills": []}
        sampler = ResourceSampler()
        time.sleep(0.2)
        results["sample_ms"] = _cpu_per_call(sampler.sample, calls, time.thread_time) * 1e3
        for fill in fills:
            # Top the ring up to ``fill`` requests inside the health window, as the request path
            # records them (observe), with a realistic mix of routes, statuses and latencies.
            while len(tracker._ring) < fill:
                roll = rng.random()
                route, method, status = (
                    ("/predict", "POST", 200) if roll < 0.97
                    else ("/predict", "POST", 422) if roll < 0.985
                    else ("/info", "GET", 200)
                )  # fmt: skip
                latency = rng.lognormvariate(-6.5, 0.4)
                tracker.observe(method, route, status, latency, latency * 0.98)
            # Spread the ring over time as a server at ``rate`` req/s fills it, so that a tick's
            # one-second slice holds ``rate`` requests (observe stamps them all "now").
            now = time.monotonic()
            ring = list(tracker._ring)
            tracker._ring.clear()
            for i, item in enumerate(ring):
                tracker._ring.append((now - (len(ring) - i) / rate, *item[1:]))
            size = len(tracker._ring)
            scrape = _cpu_per_call(lambda: generate_latest(registry), calls, time.thread_time)
            body = generate_latest(registry)

            def tick() -> None:
                for _ in range(TICKS):
                    engine._last_tick = time.monotonic() - 1.0
                    engine._tick()
                engine.flush(60)

            tick_cpu = _cpu_per_call(tick, max(3, calls // TICKS), time.process_time) / TICKS
            results["fills"].append(
                {
                    "ring": size,
                    "scrape_ms": scrape * 1e3,
                    "tick_ms": tick_cpu * 1e3,
                    "metrics_bytes": len(body),
                    "metrics_lines": body.count(b"\n"),
                }
            )
    return results


def in_process_child(fills: list[int], calls: int, rate: float) -> None:
    say("INPROC_JSON", run_async(_in_process(fills, calls, rate)))


def run_in_process(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = workdir / "inproc.duckdb"
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_VARIANT": "monitor-0.0",
        "BENCH_DB": str(db),
        "INFERWATCH_RESOURCE_INTERVAL": "1h",
    }
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--in-process-child", args.fills, "--calls", str(args.calls), "--rate", str(args.rate),
    ]  # fmt: skip
    return run_child(taskset(args.server_core, cmd), "INPROC_JSON", env)


# --------------------------------------------------------------------------- the report


def report(args: argparse.Namespace, runs: list[dict[str, Any]], inproc: dict | None) -> str:
    out = wrk_report(args, runs) if runs else []
    if inproc:
        out += inproc_report(args, inproc)
    out += ["", "The target:", "", figures_table(targets(runs, inproc), peer="peer (none run)")]
    return "\n".join(out)


def targets(runs: list[dict[str, Any]], inproc: dict | None) -> list[Figure]:
    """The cost against the target: in-process at the fullest ring, and from wrk's runs."""
    out = []
    if inproc and inproc["fills"]:
        f = inproc["fills"][-1]
        out.append(
            Figure(
                f"scrape + resource tick per 1 s of a core, {f['ring']:,} requests in ring, %",
                (f["scrape_ms"] + f["tick_ms"]) / 1000 * 100,
                f"< {TARGET_PCT:g}",
                spec=".2f",
                ok=lambda x: x < TARGET_PCT,
            )
        )
    if runs:
        med = medians_by(runs, lambda r: r["variant"], {"cpu_us": lambda r: r["cpu_us"]})
        quiet, scraped = med["quiet"]["cpu_us"], med["scraped"]["cpu_us"]
        out.append(
            Figure(
                "server CPU per request, scraped vs quiet (medians; noisy), %",
                (scraped - quiet) / quiet * 100,
                f"< {TARGET_PCT:g}",
                spec="+.2f",
                ok=lambda x: x < TARGET_PCT,
            )
        )
    return out


def wrk_report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> list[str]:
    figures = {
        "rps": lambda r: r["rps"],
        "cpu_us": lambda r: r["cpu_us"],
        "p99": lambda r: r["p99_ms"],
    }
    med = medians_by(runs, lambda r: r["variant"], figures)
    quiet, scraped = med["quiet"], med["scraped"]
    rps_cost = (quiet["rps"] - scraped["rps"]) / quiet["rps"] * 100
    cpu_cost = (scraped["cpu_us"] - quiet["cpu_us"]) / quiet["cpu_us"] * 100
    out = [
        f"Median of {args.rounds} interleaved rounds (order rotates), {args.duration:g} s each "
        f"after {args.warmup:g} s of warm-up, wrk -t1 -c{args.connections}; "
        "MonitorMiddleware(sample_rate=0.0):",
        "",
        markdown_table(
            ["variant", "req/s", "server CPU µs/request", "p99 ms"],
            [
                [
                    "A quiet: resource_interval 1h, no scraper",
                    f"{quiet['rps']:,.0f}",
                    f"{quiet['cpu_us']:.1f}",
                    f"{quiet['p99']:.2f}",
                ],
                [
                    "B scraped: resource_interval 1s, GET /monitor/metrics every 1 s",
                    f"{scraped['rps']:,.0f}",
                    f"{scraped['cpu_us']:.1f}",
                    f"{scraped['p99']:.2f}",
                ],
                [
                    "cost of B (median vs median)",
                    f"{rps_cost:+.2f} % of throughput",
                    f"{cpu_cost:+.2f} % CPU per request",
                    "",
                ],
            ],
        ),
        "",
        "Every run:",
        "",
        table(
            runs,
            {
                "round": lambda r: r["round"],
                "variant": lambda r: r["variant"],
                "req/s": lambda r: f"{r['rps']:,.0f}",
                "CPU µs/req": lambda r: f"{r['cpu_us']:.1f}",
                "server CPU s": lambda r: f"{r['cpu_s']:.2f}",
                "requests since start": lambda r: f"{r['ring_at_end']:,}",
                "scrapes ok/failed": lambda r: (
                    f"{r['scrape'].get('ok', '')}/{r['scrape'].get('failed', '')}"
                    if r["scrape"]
                    else ""
                ),
                "/metrics bytes": lambda r: r["scrape"].get("bytes", ""),
                "scrape wall p50 ms": lambda r: (
                    cell(r["scrape"].get("p50_ms"), ".1f") if r["scrape"] else ""
                ),
                "resource rows in DuckDB": lambda r: r["resource_rows"],
                "wrk errors": lambda r: r["errors"],
            },
        ),
    ]
    return out


def inproc_report(args: argparse.Namespace, inproc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if True:
        sample = inproc["sample_ms"]
        rows = []
        for f in inproc["fills"]:
            bound = (f["scrape_ms"] + sample) / 1000 * 100
            bound_tick = (f["scrape_ms"] + f["tick_ms"]) / 1000 * 100
            rows.append(
                [
                    f"{f['ring']:,}",
                    f"{f['scrape_ms']:.2f}",
                    f"{sample:.2f}",
                    f"{f['tick_ms']:.2f}",
                    f"{f['metrics_bytes']:,} / {f['metrics_lines']}",
                    f"{bound:.2f} %",
                    f"{bound_tick:.2f} %",
                    "yes" if bound_tick < TARGET_PCT else "**no**",
                ]
            )
        out += [
            "",
            f"In process, pinned to the server core, median CPU of {args.calls} calls each "
            f"(ring: the request ring /metrics summarizes for the health status; it holds at "
            f"most {inproc['ring_size']:,} requests of the 300 s health window; spread at "
            f"{args.rate:,.0f} req/s, so one tick's 1 s slice holds {args.rate:,.0f}):",
            "",
            markdown_table(
                [
                    "requests in ring",
                    "generate_latest ms CPU",
                    "ResourceSampler().sample() ms CPU",
                    "whole resource tick ms CPU (sample, status, rows to DuckDB)",
                    "/metrics bytes / lines",
                    "bound: (scrape + sample) per 1 s of a core",
                    "bound: (scrape + whole tick) per 1 s of a core",
                    f"< {TARGET_PCT:g} %",
                ],
                rows,
            ),
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # A 20 s warm-up at ~5,000 req/s fills the 100,000-request ring that each scrape
    # summarizes, as any server above 333 req/s has it in steady state.
    add_run_args(parser, 4, 15.0, 32, warmup=20.0, quick="1 round of 3 s, small fills")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--wrk-core", type=int, default=1)
    parser.add_argument(
        "--fills",
        default="2000,30000,100000",
        help="comma-separated request-ring sizes for the in-process scrape cost",
    )
    parser.add_argument("--calls", type=int, default=30, help="in-process calls per figure")
    parser.add_argument(
        "--rate", type=float, default=5000.0, help="req/s the in-process ring is spread over"
    )
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--scraper-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-process-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scraper_child:
        scraper_child(args.scraper_child, "/monitor/metrics", 1.0)
        return 0
    if args.in_process_child:
        in_process_child([int(v) for v in args.in_process_child.split(",")], args.calls, args.rate)
        return 0
    if args.quick:
        args.duration, args.rounds, args.warmup = 3.0, 1, 1.0
        args.fills, args.calls = "2000,20000", 5
    if missing := missing_tools(("wrk", "taskset")):
        parser.error(missing)
    workdir = make_workdir(args.workdir, "inferwatch-scrape-")
    lua = workdir / "post.lua"
    write_lua(lua, make_bodies(BODIES, BATCH))
    command = command_line("scrape_cost.py", argv)
    runs: list[dict[str, Any]] = []
    if not args.in_process_only:
        for rnd, variant in interleaved(VARIANTS, args.rounds):
            run = run_variant(args, variant, rnd, workdir, lua)
            runs.append(run)
            print(
                f"round {rnd} {variant:8s} {run['rps']:8.0f} req/s  {run['cpu_us']:7.1f} CPU µs/req"
                f"  scrapes {run['scrape'] or '-'}  resource rows {run['resource_rows']}",
                file=sys.stderr,
                flush=True,
            )
            for line in run["log_tail"].splitlines():
                if any(word in line for word in ("Traceback", "ERROR", "Error")):
                    print(f"  server log: {line}", file=sys.stderr)
    inproc = run_in_process(args, workdir)
    print(f"in-process: {inproc}", file=sys.stderr, flush=True)
    info = machine_info()
    info["wrk"] = wrk_version() or "not installed"
    text = f"Command: `{command}`\n\n## Machine\n\n" + machine_markdown(info) + "\n\n## Results\n\n"
    text += report(args, runs, inproc)
    emit(text, args.markdown, args.json_out, {"machine": info, "runs": runs, "in_process": inproc})
    bad = [r for r in runs if r["errors"] or (r["scrape"] and r["scrape"].get("failed"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
