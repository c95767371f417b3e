"""What MonitorMiddleware costs a real model endpoint, measured with wrk against uvicorn.

One FastAPI model app (POST /predict with ``{"instances": [4 records of 10 features]}``, pydantic
validation, a small logistic model) is served by uvicorn in four variants:

- ``bare``: the app alone;
- ``monitor-1.0``: with ``MonitorMiddleware(sample_rate=1.0)`` writing to a real DuckDB file;
- ``monitor-0.1``: the same at ``sample_rate=0.1``;
- ``prometheus``: with prometheus-fastapi-instrumentator, as its README says:
  ``Instrumentator().instrument(app).expose(app)``.

The server is pinned to one core and wrk to another. Whatever writes the captures (a writer
thread in the server, or the collector process the worker starts, which inherits its core)
shares the server's core: that is the cost on a one-core pod; ``collector_overhead.py`` measures
the collector on a core of its own. Variants run interleaved, ``--rounds`` times, and the median
of each figure is reported. After each monitored run the server gets SIGTERM, its collector (if
any) exits, and the DuckDB file is opened to check that every sampled request was stored or
counted as dropped. The in-process section counts the CPU of the child process only: with a
collector, the writing happens outside it.

    python benchmarks/middleware_overhead.py                 # 3 rounds of 15 s per variant
    python benchmarks/middleware_overhead.py --quick         # a smoke run of a few seconds

The server side of this file is ``create_app``, which uvicorn loads with ``--factory``; the
variant comes from the BENCH_VARIANT environment variable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.apps import PEER, instrument
from _lib.asgi import asgi_request, find_engine, lifespan, run_async, run_child, say
from _lib.load import WrkResult, write_lua, wrk
from _lib.machine import machine_info, machine_markdown, missing_tools, wrk_version
from _lib.pinning import taskset
from _lib.procfs import core_times, rss_mib, thread_cpu
from _lib.records import PredictRequest, PredictResponse, churn_probability, make_bodies
from _lib.report import (
    Figure,
    add_run_args,
    command_line,
    emit,
    figures_table,
    markdown_table,
    table,
    verdict,
)
from _lib.rounds import interleaved, median, medians_by
from _lib.servers import free_port, get_json, kill, start, stop, uvicorn_command, wait_for_port
from _lib.servers import workdir as make_workdir
from _lib.store import COLLECTOR_ENV, accounted, collector_done, complete, count_db, find_collector

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent

VARIANTS = ("bare", "monitor-1.0", "monitor-0.1", "prometheus")
# Not run by default: sample_rate 0 isolates the request path (timing, request IDs, queueing
# nothing) from the writer's work.
OPTIONAL_VARIANTS = ("monitor-0.0",)
SAMPLE_RATES = {"monitor-1.0": 1.0, "monitor-0.1": 0.1, "monitor-0.0": 0.0}
TARGETS = {"monitor-1.0": 0.95, "monitor-0.1": 0.98}  # share of bare throughput
P99_ADDED_TARGET_MS = 1.0  # at sample_rate 1.0
BATCH = 4  # records per request
BODIES = 64  # distinct request bodies wrk cycles through


# --------------------------------------------------------------------------- the model app


def create_app(engine_here: bool = False) -> Any:
    """The benchmark's model app in the variant BENCH_VARIANT names (uvicorn ``--factory``);
    with ``engine_here`` a monitored variant runs its engine in this process."""
    from fastapi import FastAPI

    variant = os.environ.get("BENCH_VARIANT", "bare")
    if variant not in VARIANTS + OPTIONAL_VARIANTS:
        raise SystemExit(f"unknown BENCH_VARIANT {variant!r}; choose one of {VARIANTS}")
    app = FastAPI(title="churn model")

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> PredictResponse:
        return PredictResponse(
            predictions=[churn_probability(r.__dict__) for r in request.instances]
        )

    return instrument(app, variant, os.environ.get("BENCH_DB", ""), SAMPLE_RATES, engine_here)


# --------------------------------------------------------------------------- in-process CPU cost


async def _drive_in_process(app: Any, requests: int, warm: int) -> dict[str, Any]:
    """Lifespan startup, ``warm`` + ``requests`` POSTs straight through ASGI, then shutdown."""
    bodies = make_bodies(BODIES, BATCH)
    statuses: dict[int, int] = {}

    async def one(body: bytes) -> None:
        status = await asgi_request(app, "POST", "/predict", body)
        statuses[status] = statuses.get(status, 0) + 1

    async with lifespan(app):
        for i in range(warm):
            await one(bodies[i % BODIES])
        engine = find_engine(app)
        if engine is not None:
            engine.flush(60)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(requests):
            await one(bodies[i % BODIES])
        if engine is not None:  # the writer's work for these requests counts too
            engine.flush(600)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        capture = engine.capture_health() if engine is not None else {}
    return {
        "cpu_us": cpu / requests * 1e6,
        "wall_us": wall / requests * 1e6,
        "statuses": statuses,
        "sampled": capture.get("sampled"),
        "stored": capture.get("stored"),
        "dropped": capture.get("dropped"),
    }


def in_process_child(requests: int, warm: int) -> None:
    """Run by the driver under taskset: one variant (BENCH_VARIANT), JSON on stdout."""
    say("INPROC_JSON", run_async(_drive_in_process(create_app(), requests, warm)))


def run_in_process(
    args: argparse.Namespace, variant: str, rnd: int, workdir: Path
) -> dict[str, Any]:
    db = workdir / f"inproc-{variant}-round{rnd}.duckdb"
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    env = {**os.environ, **COLLECTOR_ENV, "BENCH_VARIANT": variant, "BENCH_DB": str(db)}
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--in-process-child", str(args.in_process), "--in-process-warm", "500",
    ]  # fmt: skip
    try:
        result = run_child(taskset(args.server_core, cmd), "INPROC_JSON", env)
    finally:
        collector_done(find_collector(db, set()))  # one the child started: not into the next
    return {"variant": variant, "round": rnd, **result}


def in_process_report(results: list[dict[str, Any]], requests: int) -> str:
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    bare = median([r["cpu_us"] for r in by_variant["bare"]])
    rows = []
    for variant, rs in by_variant.items():
        cpu = median([r["cpu_us"] for r in rs])
        rows.append(
            [
                variant,
                " / ".join(f"{r['cpu_us']:.0f}" for r in rs),
                f"{cpu:.0f}",
                "" if variant == "bare" else f"{cpu - bare:+.0f}",
                f"{bare / cpu:.3f}",
                f"{rs[-1]['sampled']}/{rs[-1]['stored']}/{rs[-1]['dropped']}"
                if rs[-1]["sampled"] is not None
                else "",
            ]
        )
    head = (
        f"In-process ASGI, no network: {requests:,} POST /predict per run driven straight into the "
        "app on the server core, CPU time of the whole process (event loop, writer and DuckDB "
        "threads) until the writer has stored them, per request; interleaved rounds:"
    )
    table = markdown_table(
        [
            "variant",
            "CPU µs/request per round",
            "median",
            "added µs/request",
            "throughput share of bare (CPU)",
            "last round sampled/stored/dropped",
        ],
        rows,
    )
    return head + "\n\n" + table


# --------------------------------------------------------------------------- the driver


def run_wrk(
    args: argparse.Namespace, url: str, lua: Path, seconds: float, connections: int
) -> WrkResult:
    return wrk(url, lua, seconds, connections, str(args.wrk_core))


@dataclass
class Run:
    variant: str
    round: int
    main: WrkResult
    light: WrkResult | None
    warm_requests: int
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    loop_cpu_us: float  # event-loop (main) thread CPU per request during the main run
    other_cpu_us: float  # every other thread (writer, DuckDB) per request during the main run
    server_core_share: float  # server CPU seconds / wall seconds of the server's core
    foreign_core_share: float  # the rest of that core's busy time: other processes, interrupts
    cpu_rps: float  # requests per server CPU second: throughput had the server had the core alone
    capture: dict[str, Any] = field(default_factory=dict)
    stored_in_db: dict[str, int] = field(default_factory=dict)
    shutdown_s: float = 0.0
    server_log: str = ""

    @property
    def rows_complete(self) -> bool | None:
        return complete(self.stored_in_db, BATCH) if self.capture else None

    @property
    def accounted(self) -> bool | None:
        return accounted(self.capture, self.stored_in_db.get("requests", -1))


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    return uvicorn_command("middleware_overhead:create_app", port, args.server_core, BENCH_DIR)


def run_variant(args: argparse.Namespace, variant: str, rnd: int, workdir: Path, lua: Path) -> Run:
    port = free_port()
    db = workdir / f"{variant}-round{rnd}.duckdb"
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    env = {
        **COLLECTOR_ENV,
        "BENCH_VARIANT": variant,
        "BENCH_DB": str(db),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = workdir / f"{variant}-round{rnd}.log"
    proc = start(server_command(args, port), log_path, env, cwd=REPO)
    try:
        wait_for_port(port, proc)
        url = f"http://127.0.0.1:{port}/predict"
        warm = run_wrk(args, url, lua, args.warmup, args.connections)
        if warm.status_errors:
            raise RuntimeError(f"{variant}: the app gave {warm.status_errors} non-2xx answers")
        cpu_before = thread_cpu(proc.pid)
        core_before = core_times(args.server_core)
        rss_start, _ = rss_mib(proc.pid)
        main = run_wrk(args, url, lua, args.duration, args.connections)
        cpu_after = thread_cpu(proc.pid)
        core_after = core_times(args.server_core)
        light = None
        if args.light_duration > 0:
            light = run_wrk(args, url, lua, args.light_duration, args.light_connections)
        rss_end, rss_peak = rss_mib(proc.pid)
        capture: dict[str, Any] = {}
        collector = None  # the collector process that owns the store, where there is one
        if variant in SAMPLE_RATES:
            capture = get_json(port, "/monitor/health")["capture"]
            collector = find_collector(db, {proc.pid})
        started = time.monotonic()
        stop(proc)
        collector_done(collector)  # it writes what it holds, then lets the store go
        shutdown_s = time.monotonic() - started
    finally:
        kill(proc)
    loop_delta = cpu_after.get(proc.pid, 0.0) - cpu_before.get(proc.pid, 0.0)
    other_delta = sum(
        cpu_after[tid] - cpu_before.get(tid, 0.0) for tid in cpu_after if tid != proc.pid
    )
    requests = max(main.requests, 1)
    core_busy = core_after[0] - core_before[0]
    core_total = max(core_after[1] - core_before[1], 1e-9)
    server_cpu = loop_delta + other_delta
    stored = count_db(db) if variant in SAMPLE_RATES else {}
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    return Run(
        variant=variant,
        round=rnd,
        main=main,
        light=light,
        warm_requests=warm.requests,
        rss_start_mib=rss_start,
        rss_end_mib=rss_end,
        rss_peak_mib=rss_peak,
        loop_cpu_us=loop_delta / requests * 1e6,
        other_cpu_us=other_delta / requests * 1e6,
        server_core_share=server_cpu / core_total,
        foreign_core_share=max(core_busy - server_cpu, 0.0) / core_total,
        cpu_rps=main.requests / server_cpu if server_cpu else 0.0,
        capture=capture,
        stored_in_db=stored,
        shutdown_s=shutdown_s,
        server_log=log_text[-4000:],
    )


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


FIGURES = {
    "rps": lambda r: r.main.rps,
    "p50": lambda r: r.main.p50_ms,
    "p99": lambda r: r.main.p99_ms,
    "loop_cpu": lambda r: r.loop_cpu_us,
    "other_cpu": lambda r: r.other_cpu_us,
    "cpu_rps": lambda r: r.cpu_rps,
    "share": lambda r: r.server_core_share,
    "light_p50": lambda r: r.light and r.light.p50_ms,
    "light_p99": lambda r: r.light and r.light.p99_ms,
    "light_rps": lambda r: r.light and r.light.rps,
}


def targets(med: dict[str, dict[str, float]]) -> list[Figure]:
    """Each target with the monitored figure and prometheus's from the same run."""
    bare, peer = med["bare"], med.get(PEER)
    out = []
    for variant, goal in TARGETS.items():
        if variant in med:
            out.append(
                Figure(
                    f"throughput vs bare, sample_rate {SAMPLE_RATES[variant]}",
                    med[variant]["rps"] / bare["rps"],
                    f"≥ {goal:.2f}",
                    peer and peer["rps"] / bare["rps"],
                    ".3f",
                    lambda x, goal=goal: x >= goal,
                )
            )
    if "monitor-1.0" in med:
        out.append(
            Figure(
                "p99 added, sample_rate 1.0, ms",
                med["monitor-1.0"]["p99"] - bare["p99"],
                f"< {P99_ADDED_TARGET_MS:g}",
                peer and peer["p99"] - bare["p99"],
                "+.2f",
                lambda x: x < P99_ADDED_TARGET_MS,
            )
        )
    return out


def report(args: argparse.Namespace, runs: list[Run], command: str) -> str:
    med = medians_by(runs, lambda r: r.variant, FIGURES)
    rows = [{"variant": v, **med[v]} for v in VARIANTS if v in med]
    bare = med["bare"]
    added = lambda m, key, spec: "" if m["variant"] == "bare" else format(m[key] - bare[key], spec)  # noqa: E731
    summary = table(
        rows,
        {
            "variant": lambda m: m["variant"],
            "req/s": lambda m: fmt(m["rps"], 0),
            "vs bare": lambda m: f"{m['rps'] / bare['rps']:.3f}",
            "p50 ms": lambda m: fmt(m["p50"]),
            "p99 ms": lambda m: fmt(m["p99"]),
            "p99 added ms": lambda m: added(m, "p99", "+.2f"),
            "loop CPU µs/req": lambda m: fmt(m["loop_cpu"], 0),
            "other threads CPU µs/req": lambda m: fmt(m["other_cpu"], 0),
            "req per server CPU-s": lambda m: fmt(m["cpu_rps"], 0),
            "CPU-s vs bare": lambda m: f"{m['cpu_rps'] / bare['cpu_rps']:.3f}",
            "server's share of its core": lambda m: f"{m['share']:.2f}",
        },
    )
    out = [
        f"Command: `{command}`",
        "",
        f"Median of {args.rounds} round(s), {args.duration:g} s each, "
        f"wrk -t1 -c{args.connections}:",
        "",
        summary,
        "",
        "The targets, and prometheus-fastapi-instrumentator in the same run:",
        "",
        figures_table(targets(med), peer="prometheus (peer)"),
    ]
    if args.light_duration > 0:
        light = {
            "variant": lambda m: m["variant"],
            "req/s": lambda m: fmt(m["light_rps"], 0),
            "p50 ms": lambda m: fmt(m["light_p50"], 3),
            "p99 ms": lambda m: fmt(m["light_p99"], 3),
            "p99 added ms": lambda m: added(m, "light_p99", "+.3f"),
        }
        out += [
            "",
            f"Light load (wrk -t1 -c{args.light_connections}, {args.light_duration:g} s, "
            "after the main run on the same server): latency without queueing",
            "",
            table(rows, light),
        ]
    every = {
        "round": lambda r: r.round,
        "variant": lambda r: r.variant,
        "req/s": lambda r: fmt(r.main.rps, 0),
        "p50 ms": lambda r: fmt(r.main.p50_ms),
        "p99 ms": lambda r: fmt(r.main.p99_ms),
        "wrk errors": lambda r: r.main.failed,
        "wrk responses": lambda r: r.warm_requests + r.main.requests
        + (r.light.requests if r.light else 0),
        "sampled": lambda r: r.capture.get("sampled", ""),
        "stored (DB)": lambda r: r.stored_in_db.get("requests", ""),
        "dropped": lambda r: r.capture.get("dropped", ""),
        "write errors": lambda r: r.capture.get("write_errors", ""),
        "queue at end": lambda r: r.capture.get("queue_depth", ""),
        "stored+dropped = sampled": lambda r: verdict(r.accounted),
        f"{BATCH} x 11 values per stored request": lambda r: verdict(r.rows_complete),
        "RSS MiB": lambda r: f"{r.rss_start_mib:.0f} → {r.rss_end_mib:.0f}",
        "SIGTERM→exit s": lambda r: f"{r.shutdown_s:.2f}",
        "server core share": lambda r: f"{r.server_core_share:.2f}",
        "other load on that core": lambda r: f"{r.foreign_core_share:.2f}",
    }  # fmt: skip
    out += ["", "Every run (round order rotates):", "", table(runs, every)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    global VARIANTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(parser, 3, 15.0, 32, quick="smoke run: 1 round, 3 s, 1 s warm-up, 2 s light load")
    parser.add_argument(
        "--light-duration",
        type=float,
        default=5.0,
        help="seconds of the light-load latency run (0 skips it)",
    )
    parser.add_argument("--light-connections", type=int, default=1)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--wrk-core", type=int, default=1)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, from " + ",".join(VARIANTS + OPTIONAL_VARIANTS),
    )
    parser.add_argument(
        "--in-process",
        type=int,
        default=5000,
        help="requests per in-process ASGI run (no network), 0 skips that section",
    )
    parser.add_argument("--in-process-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-process-warm", type=int, default=500, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process_child:
        in_process_child(args.in_process_child, args.in_process_warm)
        return 0
    if args.quick:
        args.duration, args.rounds, args.warmup, args.light_duration = 3.0, 1, 1.0, 2.0
        args.in_process = min(args.in_process, 1000)
    chosen = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    known = VARIANTS + OPTIONAL_VARIANTS
    if set(chosen) - set(known) or "bare" not in chosen:
        parser.error(f"--variants must name bare and only {known}")
    VARIANTS = tuple(v for v in known if v in chosen)
    if missing := missing_tools(("wrk", "taskset")):
        parser.error(missing)
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 usable cores; server and wrk will share one", file=sys.stderr)

    workdir = make_workdir(args.workdir, "inferwatch-overhead-")
    lua = workdir / "post.lua"
    write_lua(lua, make_bodies(BODIES, BATCH))
    command = command_line("middleware_overhead.py", argv)
    print(f"work dir {workdir}; server: {' '.join(server_command(args, 0))}", file=sys.stderr)

    runs: list[Run] = []
    for rnd, variant in interleaved(VARIANTS, args.rounds):
        run = run_variant(args, variant, rnd, workdir, lua)
        runs.append(run)
        cap = run.capture
        print(
            f"round {rnd} {variant:12s} {run.main.rps:8.0f} req/s  p50 {run.main.p50_ms:6.2f} ms  "
            f"p99 {run.main.p99_ms:6.2f} ms"
            + (
                f"  sampled {cap['sampled']} stored {run.stored_in_db['requests']} "
                f"dropped {cap['dropped']} ok={run.accounted}"
                if cap
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )
        for line in run.server_log.splitlines():
            if any(word in line for word in ("Traceback", "ERROR", "WARNING", "Error")):
                print(f"  server log: {line}", file=sys.stderr)

    in_process: list[dict[str, Any]] = []
    if args.in_process:
        for rnd, variant in interleaved(VARIANTS, args.rounds):
            res = run_in_process(args, variant, rnd, workdir)
            in_process.append(res)
            print(
                f"in-process round {rnd} {variant:12s} {res['cpu_us']:7.1f} CPU µs/request",
                file=sys.stderr,
                flush=True,
            )

    info = machine_info()
    info["wrk"] = wrk_version() or "not installed"
    text = "## Machine\n\n" + machine_markdown(info) + "\n\n## Results\n\n"
    text += report(args, runs, command)
    if in_process:
        text += "\n\n" + in_process_report(in_process, args.in_process)
    payload = {
        "machine": info,
        "args": vars(args),
        "runs": [
            {**asdict(r), "accounted": r.accounted, "server_log": r.server_log[-1000:]}
            for r in runs
        ],
        "in_process": in_process,
    }
    emit(text, args.markdown, args.json_out, payload)
    failed = [
        r
        for r in runs
        if r.accounted is False or r.rows_complete is False or r.main.status_errors or r.main.errors
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
