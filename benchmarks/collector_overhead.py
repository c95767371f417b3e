"""What monitoring costs a model server's workers when one collector per pod does the work.

Two FastAPI apps, each served by uvicorn (``--no-access-log``, uvloop and httptools), POST
/predict with ``{"instances": [one record of 10 features]}`` (64 distinct bodies):

- ``light``: one ``async def`` route that reads the JSON body itself and answers a small score:
  little work per request, so whatever the monitor adds shows most;
- ``model``: pydantic request and response models and a sync ``def`` route (run in the thread
  pool), the kind of app users write.

Each app runs in these variants: ``bare``; ``monitor-0.0``, ``monitor-0.1`` and ``monitor-1.0``
(the documented one line, ``app.add_middleware(MonitorMiddleware, db=...)`` at that
``sample_rate``, a real DuckDB file); and ``prometheus`` (prometheus-fastapi-instrumentator,
``Instrumentator().instrument(app).expose(app)``), the peer measured in the same run. Named in
``--variants``, ``floor`` runs too: the least a middleware does to hand each request's timing to
another process (``_lib/floor_middleware.py``), what any monitor written in Python costs.

One worker: uvicorn pinned to ``--worker-core`` (0); wrk and the collector on ``--side-core`` (1).
The collector is found after the warm-up (its pid file beside the store, else a process whose
command line names ``collector`` and the store, else the process holding the store open that is
not a worker) and its threads are moved to the side core. Where the middleware keeps its engine
in the worker (no collector found), its cost is all in the worker's figures.
Four workers (``--workers``; 0 skips): ``uvicorn --workers 4`` on both cores, wrk and the
collector there too, ``bare``, ``monitor-0.1`` and ``prometheus`` (each worker its own registry).

Every (app, workers, variant) runs once per round in a rotating order, ``--rounds`` rounds, and
medians are reported (a figure against bare: the median over the rounds of its ratio, or its
difference, to bare's run in the same round): throughput against bare, p99 added, the worker's
CPU per request (utime + stime from /proc/<pid>/stat of every worker, all threads), the
worker's garbage collections during the measured run (how many of each generation, and the
total and the longest pause of the full, generation-2 ones, which make a FastAPI worker's p99:
a ``gc.callbacks`` hook in every worker, bare or not, writes its counters to a file the script
reads before and after the run), and the collector's CPU per captured request. After each
monitored run the script checks what the store holds: /monitor/health's counters (asked several
times, so that several workers answer), then SIGTERM, the collector's exit, and the DuckDB file
counted: stored + dropped + write errors = sampled, every request 1 instance of 11 values, and
``sampled`` plausible for the rate and wrk's count of responses.

Then, unless ``--in-process 0``, the worker's CPU without network or wrk, where a few µs show:
for each app and variant, one process pinned to the worker's core runs the bare app and the
variant side by side and drives blocks of ``--in-process`` requests straight into each through
ASGI, in turns (``--blocks`` each); the process's CPU (every thread, the sender's included: each
block ends with a 50 ms pause in which the sender hands over what the block left) per request,
and the median of the differences of neighbouring blocks. Where the engine runs in the worker,
each block waits for its writer. The collector runs on the side core.

    python benchmarks/collector_overhead.py                  # 5 rounds of 10 s, about 28 minutes
    python benchmarks/collector_overhead.py --quick          # 1 round of 1 s, under 2 minutes
    python benchmarks/collector_overhead.py --apps model --workers 0 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.apps import instrument
from _lib.asgi import asgi_request, find_engine, lifespan, run_async, run_child, say
from _lib.gcstats import ENV as GC_DIR_ENV
from _lib.gcstats import Collections, between, snapshots
from _lib.load import WrkResult, write_lua, wrk
from _lib.machine import machine_info, machine_markdown, missing_tools, wrk_version
from _lib.pinning import pin_threads, taskset
from _lib.procfs import allowed_cores, process_cpu, process_tree, tree_cpu
from _lib.records import PredictRequest, PredictResponse, churn_probability, make_bodies
from _lib.report import (
    Figure,
    add_run_args,
    cell,
    command_line,
    emit,
    figures_table,
    markdown_table,
    met,
    table,
)
from _lib.rounds import interleaved, median, medians_by
from _lib.servers import (
    free_port,
    get_json,
    kill,
    start,
    stop,
    uvicorn_command,
    wait_for_http,
    wait_for_port,
)
from _lib.servers import workdir as make_workdir
from _lib.store import (
    COLLECTOR_LINGER_S,
    accounted,
    collector_done,
    complete,
    count_db,
    find_collector,
)

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
APPS = ("light", "model")
VARIANTS = ("bare", "monitor-0.0", "monitor-0.1", "monitor-1.0", "prometheus")
CANDIDATES = (*VARIANTS, "floor")  # run when named in --variants
MULTI_VARIANTS = ("bare", "monitor-0.1", "prometheus")
SAMPLE_RATES = {"monitor-0.0": 0.0, "monitor-0.1": 0.1, "monitor-1.0": 1.0}
RECORDS = 1  # records per request
BODIES = 64
# The targets: share of bare throughput, p99 added (ms), worker CPU added (µs per request),
# collector CPU (µs per captured request), share of bare with several workers.
THROUGHPUT_TARGETS = {"monitor-0.1": 0.98, "monitor-1.0": 0.95}
P99_TARGETS_MS = {"monitor-0.1": 1.0, "monitor-1.0": 2.0}
WORKER_CPU_TARGETS_US = {"monitor-0.0": 5.0, "monitor-1.0": 15.0}
COLLECTOR_CPU_TARGET_US = 40.0
MULTI_TARGET = 0.95


# --------------------------------------------------------------------------- the apps


def create_app(kind: str | None = None, variant: str | None = None, db: str | None = None) -> Any:
    """The app ``kind`` in ``variant``, by default BENCH_APP's in BENCH_VARIANT's writing to
    BENCH_DB (as uvicorn ``--factory`` calls it)."""
    from fastapi import FastAPI

    kind = kind or os.environ.get("BENCH_APP", "model")
    variant = variant or os.environ.get("BENCH_VARIANT", "bare")
    if kind not in APPS or variant not in CANDIDATES:
        raise SystemExit(f"unknown BENCH_APP {kind!r} or BENCH_VARIANT {variant!r}")
    app = FastAPI(title=f"{kind} app")
    if kind == "model":

        @app.post("/predict", response_model=PredictResponse)
        def predict(request: PredictRequest) -> PredictResponse:
            return PredictResponse(
                predictions=[churn_probability(r.__dict__) for r in request.instances]
            )

    else:

        @app.post("/predict")
        async def predict_light(request: Request) -> Response:
            records = json.loads(await request.body())["instances"]
            body = json.dumps({"predictions": [churn_probability(r) for r in records]})
            return Response(body, media_type="application/json")

    return instrument(app, variant, db or os.environ.get("BENCH_DB", ""), SAMPLE_RATES)


# --------------------------------------------------------------------------- in-process blocks


async def _alternate(
    kind: str, variant: str, db: str, blocks: int, per_block: int, side_core: int
) -> dict[str, Any]:
    """Blocks of ``per_block`` requests through the bare app and through ``variant``, in turns,
    straight into ASGI; the CPU of this whole process (every thread) per request in each block."""
    import asyncio

    bare, other = create_app(kind, "bare"), create_app(kind, variant, db)
    bodies = make_bodies(BODIES, RECORDS)

    async def block(app: Any, count: int, start: int) -> None:
        for i in range(count):
            status = await asgi_request(app, "POST", "/predict", bodies[(start + i) % BODIES])
            if status != 200:
                raise RuntimeError(f"{kind} {variant}: status {status}")

    collector = None
    async with lifespan(bare), lifespan(other):
        await block(bare, 300, 0)
        await block(other, 300, 0)
        engine = find_engine(other)  # a writer in this process, if any
        if variant in SAMPLE_RATES and engine is None:
            deadline = time.monotonic() + 15
            while collector is None and time.monotonic() < deadline:
                collector = find_collector(Path(db), {os.getpid()})
                await asyncio.sleep(0.05)
            for pid in process_tree(collector) if collector else []:
                pin_threads(pid, {side_core})
        if engine is not None:
            engine.flush(60)
        cpu: dict[str, list[float]] = {"bare": [], variant: []}
        collector_before = tree_cpu(collector)
        for b in range(blocks):
            turns = [("bare", bare), (variant, other)]
            for name, app in turns if b % 2 == 0 else turns[::-1]:
                started = time.process_time()
                await block(app, per_block, b * per_block)
                if name != "bare" and engine is not None:
                    engine.flush(60)  # the writer's work for this block counts in it
                # The sender hands over every few ms: what it sends for this block counts here.
                await asyncio.sleep(0.05)
                cpu[name].append((time.process_time() - started) / per_block * 1e6)
        collector_cpu = tree_cpu(collector) - collector_before
    collector_done(collector)
    pairs = [v - b for v, b in zip(cpu[variant], cpu["bare"], strict=True)]
    requests = blocks * per_block
    rate = SAMPLE_RATES.get(variant)
    return {
        "app": kind,
        "variant": variant,
        "bare_us": median(cpu["bare"]),
        "variant_us": median(cpu[variant]),
        "added_us": median(pairs),
        "added_per_block": pairs,
        "in_worker": engine is not None,
        "collector_pid": collector,
        "collector_us": collector_cpu / requests * 1e6 if collector else math.nan,
        "collector_per_capture_us": collector_cpu / (requests * rate) * 1e6
        if collector and rate
        else math.nan,
    }


def in_process_child(args: argparse.Namespace) -> None:
    """Run by the driver under taskset: one (app, variant) against bare, JSON on stdout."""
    db = str(args.workdir / f"inproc-{args.child_app}-{args.child_variant}.duckdb")
    app, variant = args.child_app, args.child_variant
    say(
        "INPROC_JSON",
        run_async(_alternate(app, variant, db, args.blocks, args.in_process, args.side_core)),
    )


def run_in_process(args: argparse.Namespace, app: str, variant: str) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--in-process-child", "--child-app", app, "--child-variant", variant,
        "--in-process", str(args.in_process), "--blocks", str(args.blocks),
        "--side-core", str(args.side_core), "--workdir", str(args.workdir),
    ]  # fmt: skip
    env = {
        **os.environ, "INFERWATCH_COLLECTOR_LINGER": f"{args.linger:g}s",
        "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO),
    }  # fmt: skip
    return run_child(taskset(args.worker_core, cmd), "INPROC_JSON", env)


def in_process_report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = []
    for r in results:
        goal = WORKER_CPU_TARGETS_US.get(r["variant"])
        rows.append(
            [
                r["app"],
                r["variant"],
                f"{r['bare_us']:.1f}",
                f"{r['variant_us']:.1f}",
                f"{r['added_us']:+.1f}",
                " / ".join(f"{x:+.0f}" for x in r["added_per_block"]),
                f"≤ {goal:g}" if goal else "",
                met(r["added_us"] <= goal) if goal else "",
                "in the worker" if r["in_worker"] else cell(r["collector_us"], ".1f"),
                cell(r["collector_per_capture_us"], ".1f"),
            ]
        )
    head = (
        f"In-process, no network: blocks of {args.in_process:,} POST /predict straight into "
        "the ASGI app, the bare app's and the variant's in turns in one process pinned to core "
        f"{args.worker_core} ({args.blocks} blocks each), the process's CPU (every thread) per "
        "request; added is the median of the differences of neighbouring blocks. The collector "
        f"runs on core {args.side_core}."
    )
    summary = markdown_table(
        [
            "app", "variant", "bare µs/req", "variant µs/req", "worker CPU added µs/req",
            "added, each pair of blocks", "target", "met", "collector µs/req",
            "collector µs/captured",
        ],
        rows,
    )  # fmt: skip
    return head + "\n\n" + summary


# --------------------------------------------------------------------------- processes


def worker_pids(server: int, workers: int, skip: set[int]) -> list[int]:
    """The processes that serve requests: uvicorn itself with one worker, else its spawned
    children (not multiprocessing's resource tracker, not the collector)."""
    import psutil

    if workers == 1:
        return [server]
    found = []
    for child in psutil.Process(server).children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if child.pid not in skip and "spawn_main" in cmdline:
            found.append(child.pid)
    return found


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    app: str
    workers: int
    variant: str
    round: int
    main: WrkResult
    responses: int  # wrk's responses over the warm-up and the measured run
    worker_cpu_us: float  # every worker's CPU per request during the measured run
    gc: Collections = field(default_factory=Collections)  # every worker's, the measured run
    collector_pid: int | None = None
    collector_cores: str = ""  # the cores its threads may run on during the measured run
    collector_cpu_us: float = math.nan  # the collector's CPU per request
    collector_cpu_per_capture_us: float = math.nan  # ... per request it captured
    captured: int = 0  # requests sampled during the measured run
    capture: dict[str, Any] = field(default_factory=dict)
    health_sampled: list[int] = field(default_factory=list)  # answers of several workers
    health_requests: list[int] = field(default_factory=list)  # their requests.count
    stored: dict[str, int] = field(default_factory=dict)
    collector_exited: bool | None = None
    lock_errors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.app} {self.workers}w {self.variant}"


def server_command(args: argparse.Namespace, port: int, workers: int) -> list[str]:
    cores = str(args.worker_core) if workers == 1 else f"{args.worker_core},{args.side_core}"
    return uvicorn_command("collector_overhead:create_app", port, cores, BENCH_DIR, workers)


def check(run: Run, rate: float, connections: int, runs_of_wrk: int) -> None:
    """What the store holds against what was sampled; problems go to ``run.problems``."""
    cap, db = run.capture, run.stored
    sampled = cap.get("sampled", -1)
    if not accounted(cap, db.get("requests", -1)):
        run.problems.append(f"stored {db.get('requests')} + dropped/errors != sampled {sampled}")
    if not complete(db, RECORDS):
        run.problems.append(f"stored requests not all {RECORDS} x 11 values: {db}")
    n = run.responses
    # wrk stops with requests in flight, which the server still answers (and captures).
    slack = connections * runs_of_wrk
    if rate == 1.0 and not n <= sampled <= n + slack:
        run.problems.append(f"sampled {sampled} for {n} responses at sample_rate 1.0")
    if rate == 0.0 and sampled != 0:
        run.problems.append(f"sampled {sampled} at sample_rate 0.0")
    if 0.0 < rate < 1.0:
        spread = 6 * math.sqrt(n * rate * (1 - rate)) + rate * slack
        if abs(sampled - rate * n) > spread:
            run.problems.append(f"sampled {sampled} of {n} at sample_rate {rate}")
    if len(set(run.health_sampled)) > 1:
        run.problems.append(f"workers disagree on sampled: {sorted(set(run.health_sampled))}")
    if len(set(run.health_requests)) > 1:
        run.problems.append(f"workers disagree on requests: {sorted(set(run.health_requests))}")
    counted = run.health_requests[-1] if run.health_requests else n
    # /health keeps the last 100,000 requests: beyond that it cannot count them all.
    if counted < 100_000 and not n <= counted <= n + slack:
        run.problems.append(f"/monitor/health counts {counted} requests for {n} responses")
    if run.collector_exited is False:
        run.problems.append("the collector did not exit after the last worker (SIGTERM sent)")
    if run.lock_errors:
        run.problems.append(f"{run.lock_errors} lock errors in the server log")


def run_one(
    args: argparse.Namespace, app: str, workers: int, variant: str, rnd: int, lua: Path
) -> Run:

    port = free_port()
    db = args.workdir / f"{app}-{workers}w-{variant}-r{rnd}.duckdb"
    for stale in db.parent.glob(db.name + "*"):
        stale.unlink()
    env = {
        "BENCH_APP": app, "BENCH_VARIANT": variant, "BENCH_DB": str(db),
        "PYTHONUNBUFFERED": "1", "INFERWATCH_COLLECTOR_LINGER": f"{args.linger:g}s",
        # The inferwatch that PYTHONPATH names (another checkout, say), else this one.
        "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO),
    }  # fmt: skip
    log_path = args.workdir / f"{app}-{workers}w-{variant}-r{rnd}.log"
    gc_dir = args.workdir / f"{app}-{workers}w-{variant}-r{rnd}.gc"
    env[GC_DIR_ENV] = str(gc_dir)  # every worker counts its collections there, one file each
    monitored = variant in SAMPLE_RATES
    connections = args.connections if workers == 1 else args.multi_connections
    wrk_cores = str(args.side_core) if workers == 1 else f"{args.worker_core},{args.side_core}"
    url = f"http://127.0.0.1:{port}/predict"
    proc = start(server_command(args, port, workers), log_path, env, args.workdir, session=True)
    collector: int | None = None
    try:
        wait_for_port(port, proc)
        warm = wrk(url, lua, args.warmup, connections, wrk_cores)
        if monitored:
            # a collector may still be starting after the warm-up
            wait_for_http(port, "/monitor/readyz", proc, 30.0, ok=201)
        serving = {proc.pid, *worker_pids(proc.pid, workers, set())}
        deadline = time.monotonic() + 1.0
        while monitored and collector is None and time.monotonic() < deadline:
            collector = find_collector(db, serving)
            if collector is None:
                time.sleep(0.1)
        workers_now = worker_pids(proc.pid, workers, {collector} if collector else set())
        if collector is not None and workers == 1:
            for pid in process_tree(collector):
                pin_threads(pid, {args.side_core})
        collector_cores = allowed_cores(collector)
        before = get_json(port, "/monitor/health")["capture"] if monitored else {}
        gc_before = snapshots(gc_dir, workers_now)
        worker_before = sum(process_cpu(p) for p in workers_now)
        collector_before = tree_cpu(collector)
        main = wrk(url, lua, args.duration, connections, wrk_cores)
        worker_cpu = sum(process_cpu(p) for p in workers_now) - worker_before
        gc = between(gc_before, snapshots(gc_dir, workers_now))
        run = Run(
            app=app, workers=workers, variant=variant, round=rnd, main=main,
            responses=warm.requests + main.requests,
            worker_cpu_us=worker_cpu / max(main.requests, 1) * 1e6, gc=gc,
            collector_pid=collector, collector_cores=collector_cores,
        )  # fmt: skip
        if main.errors or main.status_errors:
            run.problems.append(f"wrk: {main.errors} errors, {main.status_errors} non-2xx")
        if monitored:
            # /health answers once what was sent before it is counted (or, in-process, at once)
            health = [get_json(port, "/monitor/health?window=1h") for _ in range(args.asks)]
            run.capture = health[-1]["capture"]
            run.health_sampled = [h["capture"]["sampled"] for h in health]
            run.health_requests = [h["requests"]["count"] for h in health]
            run.captured = run.capture["sampled"] - before["sampled"]
            if collector is not None:
                spent = tree_cpu(collector) - collector_before
                run.collector_cpu_us = spent / max(main.requests, 1) * 1e6
                run.collector_cpu_per_capture_us = (
                    spent / run.captured * 1e6 if run.captured else math.nan
                )
        stop(proc)
        run.collector_exited = collector_done(collector, args.linger)
    finally:
        # The server runs in a session of its own: its workers go with it; the collector, which
        # may have left that session, goes by its pid.
        kill(proc, collector)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    run.lock_errors = text.count("Could not set lock")
    if monitored:
        run.stored = count_db(db)
        check(run, SAMPLE_RATES[variant], connections, 2)
    if "Traceback" in text:
        run.problems.append(f"a traceback in {log_path.name}")
    return run


# --------------------------------------------------------------------------- the report


FIGURES = {
    "rps": lambda r: r.main.rps,
    "p50": lambda r: r.main.p50_ms,
    "p99": lambda r: r.main.p99_ms,
    "worker": lambda r: r.worker_cpu_us,
    # None where a run has no counters (or lost its pauses), so that it leaves the median alone
    "gc0": lambda r: known(r.gc.gen0),
    "gc1": lambda r: known(r.gc.gen1),
    "gc2": lambda r: known(r.gc.gen2),
    "gc2_ms": lambda r: known(r.gc.gen2_ms),
    "gc2_max_ms": lambda r: known(r.gc.gen2_max_ms),
    "collector": lambda r: r.collector_cpu_us if r.collector_pid else None,
    "per_capture": lambda r: (
        r.collector_cpu_per_capture_us if r.collector_pid and r.captured else None
    ),
    "found": lambda r: 1.0 if r.collector_pid else 0.0,
    "ok": lambda r: 0.0 if r.problems else 1.0,
}


def known(value: float) -> float | None:
    return None if math.isnan(value) else value


GC_HEADERS = ("GC gen 0 / 1 / 2", "gen-2 pauses ms", "longest gen-2 ms")
GC_FIGURES = ("gc0", "gc1", "gc2", "gc2_ms", "gc2_max_ms")  # their medians, in gc_cells' order


def gc_cells(gen0: float, gen1: float, gen2: float, total_ms: float, max_ms: float) -> list[str]:
    """The cells of GC_HEADERS: collections of each generation (a median may end in .5), the
    generation-2 pauses' total and the longest; dashes where the run kept no counters."""
    counts = " / ".join(cell(n, ",.0f" if n % 1 == 0 else ",.1f") for n in (gen0, gen1, gen2))
    return [counts if not math.isnan(gen2) else "—", cell(total_ms, ".1f"), cell(max_ms, ".1f")]


def medians(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Per run key, the median of each figure; ``found`` and ``ok`` as shares of the runs."""
    med = medians_by(runs, lambda r: r.key, FIGURES)
    bare_in = {(r.app, r.workers, r.round): r for r in runs if r.variant == "bare"}
    for key, m in med.items():
        rs = [r for r in runs if r.key == key]
        m["found"] = sum(1 for r in rs if r.collector_pid) / len(rs)
        m["ok"] = sum(1 for r in rs if not r.problems) / len(rs)
        # Against bare's run of the same round: the machine's speed drifts between rounds more
        # than a monitor costs, and a pair's two runs are seconds apart.
        pairs = [(r, bare_in.get((r.app, r.workers, r.round))) for r in rs]
        pairs = [(r, b) for r, b in pairs if b is not None]
        m["vs_bare"] = median([r.main.rps / b.main.rps for r, b in pairs])
        m["p99_added"] = median([r.main.p99_ms - b.main.p99_ms for r, b in pairs])
        m["worker_added"] = median([r.worker_cpu_us - b.worker_cpu_us for r, b in pairs])
    return med


def app_report(app: str, med: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    bare = med.get(f"{app} 1w bare")
    if bare is None:
        return ""
    rows = []
    for variant in CANDIDATES:
        m = med.get(f"{app} 1w {variant}")
        if m is None:
            continue
        extra = variant != "bare"
        rows.append(
            [
                variant,
                f"{m['rps']:,.0f}",
                f"{m['vs_bare']:.3f}",
                f"{m['p50']:.2f}",
                f"{m['p99']:.2f}",
                f"{m['p99_added']:+.2f}" if extra else "",
                f"{m['worker']:.1f}",
                f"{m['worker_added']:+.1f}" if extra else "",
                *gc_cells(*(m[k] for k in GC_FIGURES)),
                cell(m["collector"], ".1f") if variant in SAMPLE_RATES else "",
                cell(m["per_capture"], ".1f") if variant in SAMPLE_RATES else "",
                (f"{m['ok']:.0%}" if variant in SAMPLE_RATES else ""),
            ]
        )
    summary = markdown_table(
        [
            "variant", "req/s", "vs bare", "p50 ms", "p99 ms", "p99 added ms",
            "worker CPU µs/req", "added", *GC_HEADERS, "collector CPU µs/req",
            "collector µs/captured req",
            "runs whose store checked out",
        ],
        rows,
    )  # fmt: skip
    peer = med.get(f"{app} 1w prometheus")
    targets: list[Figure] = []

    def row(name: str, target: str, ours: float, theirs: float | None, spec: str, ok: Any):
        targets.append(Figure(name, ours, target, theirs, spec, note=ok))

    for variant, rate in SAMPLE_RATES.items():
        m = med.get(f"{app} 1w {variant}")
        if m is None:
            continue
        share = m["vs_bare"]
        goal = THROUGHPUT_TARGETS.get(variant)
        row(
            f"throughput vs bare, sample_rate {rate}",
            f"≥ {goal}" if goal else "—",
            share,
            peer["vs_bare"] if peer else None,
            ".3f",
            met(share >= goal) if goal else "",
        )
    for variant, goal in P99_TARGETS_MS.items():
        m = med.get(f"{app} 1w {variant}")
        if m is not None:
            added = m["p99_added"]
            row(
                f"p99 added, sample_rate {SAMPLE_RATES[variant]}, ms",
                f"≤ {goal:g}",
                added,
                peer["p99_added"] if peer else None,
                "+.2f",
                met(added <= goal),
            )
    for variant, rate in SAMPLE_RATES.items():
        m = med.get(f"{app} 1w {variant}")
        if m is not None:
            added = m["worker_added"]
            goal = WORKER_CPU_TARGETS_US.get(variant)
            row(
                f"worker CPU added per request, sample_rate {rate}, µs",
                f"≤ {goal:g}" if goal else "—",
                added,
                peer["worker_added"] if peer else None,
                "+.1f",
                met(added <= goal) if goal else "",
            )
    for variant in ("monitor-0.1", "monitor-1.0"):
        m = med.get(f"{app} 1w {variant}")
        if m is not None:
            value = m["per_capture"]
            row(
                f"collector CPU per captured request, sample_rate {SAMPLE_RATES[variant]}, µs",
                f"≤ {COLLECTOR_CPU_TARGET_US:g}",
                value,
                None,
                ".1f",
                "no collector process found"
                if math.isnan(value)
                else met(value <= COLLECTOR_CPU_TARGET_US),
            )
    idle = med.get(f"{app} 1w monitor-0.0")
    m = med.get(f"{app} 1w monitor-0.1")
    if idle is not None and m is not None and not math.isnan(m["collector"]):
        # Every request's timing reaches the collector at any rate; this is a capture's own cost.
        row(
            "collector CPU per capture, less its per-request work at 0.0, sample_rate 0.1, µs",
            "—",
            (m["collector"] - idle["collector"]) / SAMPLE_RATES["monitor-0.1"],
            None,
            ".1f",
            "",
        )
    multi = {v: med.get(f"{app} {args.workers}w {v}") for v in MULTI_VARIANTS}
    if multi["bare"] and multi["monitor-0.1"]:
        share = multi["monitor-0.1"]["vs_bare"]
        peer_share = multi["prometheus"]["vs_bare"] if multi["prometheus"] else None
        row(
            f"{args.workers} workers on 2 cores, throughput vs bare {args.workers} workers, "
            "sample_rate 0.1",
            f"≥ {MULTI_TARGET}",
            share,
            peer_share,
            ".3f",
            met(share >= MULTI_TARGET),
        )
    multi_rows = [{"variant": v, **m} for v, m in multi.items() if m and multi["bare"]]
    gc_cell = lambda m, i: gc_cells(*(m[k] for k in GC_FIGURES))[i]  # noqa: E731
    monitored = lambda m, text: text if m["variant"] in SAMPLE_RATES else ""  # noqa: E731
    out = [
        f"### {app} app, one worker on core {args.worker_core}; wrk -c{args.connections} and the "
        f"collector on core {args.side_core}",
        "",
        summary,
        "",
        f"### {app} app: the targets, and prometheus-fastapi-instrumentator in the same run",
        "",
        figures_table(targets, peer="prometheus (peer)"),
    ]
    if multi_rows:
        out += [
            "",
            f"### {app} app, {args.workers} workers on cores {args.worker_core} and "
            f"{args.side_core}, wrk -c{args.multi_connections} there too",
            "",
            table(
                multi_rows,
                {
                    "variant": lambda m: m["variant"],
                    "req/s": lambda m: f"{m['rps']:,.0f}",
                    "vs bare": lambda m: f"{m['vs_bare']:.3f}",
                    "p99 ms": lambda m: f"{m['p99']:.2f}",
                    "CPU µs/req, all workers": lambda m: f"{m['worker']:.1f}",
                    "GC gen 0 / 1 / 2, all workers": lambda m: gc_cell(m, 0),
                    "gen-2 pauses ms, all workers": lambda m: gc_cell(m, 1),
                    "longest gen-2 ms": lambda m: gc_cell(m, 2),
                    "collector µs/captured req": lambda m: monitored(
                        m, cell(m["per_capture"], ".1f")
                    ),
                    "runs whose store checked out": lambda m: monitored(m, f"{m['ok']:.0%}"),
                },
            ),
        ]
    return "\n".join(out)


def runs_table(runs: list[Run]) -> str:
    return table(
        runs,
        {
            "round": lambda r: r.round,
            "run": lambda r: r.key,
            "req/s": lambda r: f"{r.main.rps:,.0f}",
            "p99 ms": lambda r: f"{r.main.p99_ms:.2f}",
            "worker CPU µs/req": lambda r: f"{r.worker_cpu_us:.1f}",
            **{
                name: (lambda r, i=i: gc_cells(*astuple(r.gc))[i])
                for i, name in enumerate(GC_HEADERS)
            },
            "collector pid on cores": lambda r: (
                f"{r.collector_pid} on {r.collector_cores}" if r.collector_pid else ""
            ),
            "collector µs/captured": lambda r: (
                cell(r.collector_cpu_per_capture_us, ".1f") if r.collector_pid else ""
            ),
            "responses": lambda r: r.responses,
            "sampled": lambda r: r.capture.get("sampled", ""),
            "stored (DB)": lambda r: r.stored.get("requests", ""),
            "dropped": lambda r: r.capture.get("dropped", ""),
            "checks": lambda r: "; ".join(r.problems) or ("ok" if r.capture else ""),
        },
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"from {', '.join(CANDIDATES)}; bare always runs",
    )
    quick = "1 round of 1 s, 1 s warm-up; several workers and in-process blocks (3 of 200) "
    add_run_args(parser, 5, 10.0, 16, quick=quick + "with the last app only")
    parser.add_argument("--workers", type=int, default=4, help="the multi-worker runs; 0 skips")
    parser.add_argument("--multi-connections", type=int, default=32)
    parser.add_argument("--worker-core", type=int, default=0)
    parser.add_argument("--side-core", type=int, default=1, help="wrk's and the collector's")
    parser.add_argument(
        "--linger",
        type=float,
        default=COLLECTOR_LINGER_S,
        help="the collector's collector_linger: seconds it waits once the last worker is gone",
    )
    parser.add_argument("--asks", type=int, default=4, help="/monitor/health asks after a run")
    parser.add_argument(
        "--in-process",
        type=int,
        default=2000,
        help="requests per in-process block (no network), 0 skips that section",
    )
    parser.add_argument("--blocks", type=int, default=10, help="in-process blocks per side")
    parser.add_argument("--in-process-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-app", help=argparse.SUPPRESS)
    parser.add_argument("--child-variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process_child:
        args.workdir = Path(args.workdir)
        in_process_child(args)
        return 0
    if args.quick:
        args.rounds, args.duration, args.warmup, args.linger, args.asks = 1, 1.0, 1.0, 0.5, 2
        args.in_process, args.blocks = min(args.in_process, 200), min(args.blocks, 3)
    apps = [a for a in args.apps.split(",") if a]
    variants = ["bare", *(v for v in args.variants.split(",") if v and v != "bare")]
    if set(apps) - set(APPS) or set(variants) - set(CANDIDATES):
        parser.error(f"--apps from {APPS}, --variants from {CANDIDATES}")
    if missing := missing_tools(("wrk", "taskset")):
        parser.error(missing)
    args.workdir = make_workdir(args.workdir, "inferwatch-collector-")
    lua = args.workdir / "post.lua"
    write_lua(lua, make_bodies(BODIES, RECORDS))
    combos = [f"{app}|1|{v}" for app in apps for v in variants]
    if args.workers > 1:
        multi_apps = apps[-1:] if args.quick else apps  # quick: the last app only
        combos += [f"{app}|{args.workers}|{v}" for app in multi_apps for v in MULTI_VARIANTS]
    print(f"work dir {args.workdir}", file=sys.stderr)
    runs: list[Run] = []
    started = time.monotonic()
    for rnd, combo in interleaved(combos, args.rounds):
        app, workers, variant = combo.split("|")
        run = run_one(args, app, int(workers), variant, rnd, lua)
        runs.append(run)
        print(
            f"round {rnd} {run.key:26s} {run.main.rps:7,.0f} req/s  p99 {run.main.p99_ms:6.2f} ms"
            f"  worker {run.worker_cpu_us:6.1f} µs/req"
            f"  GC {' / '.join(gc_cells(*astuple(run.gc)))} ms"
            + (
                f"  collector {run.collector_cpu_us:.1f} µs/req, "
                f"{cell(run.collector_cpu_per_capture_us, '.1f')} µs/captured"
                if run.collector_pid
                else ""
            )
            + (f"  sampled {run.capture.get('sampled')} stored {run.stored.get('requests')}"
               if run.capture else "")
            + (f"  PROBLEMS: {'; '.join(run.problems)}" if run.problems else ""),
            file=sys.stderr,
            flush=True,
        )  # fmt: skip
    in_process: list[dict[str, Any]] = []
    if args.in_process:
        for app in apps[-1:] if args.quick else apps:  # quick: the last app only
            for variant in variants[1:]:
                result = run_in_process(args, app, variant)
                in_process.append(result)
                print(
                    f"in-process {app} {variant:12s} worker CPU {result['bare_us']:.1f} → "
                    f"{result['variant_us']:.1f} µs/req, added {result['added_us']:+.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"measured in {time.monotonic() - started:.0f} s", file=sys.stderr)
    med = medians(runs)
    info = machine_info()
    info["wrk"] = wrk_version() or "not installed"
    parts = [
        f"Command: `{command_line('collector_overhead.py', argv)}`",
        "",
        "## Machine",
        "",
        machine_markdown(info),
        "",
        f"## Results: medians of {args.rounds} round(s) of {args.duration:g} s",
        "",
        *(app_report(app, med, args) + "\n" for app in apps),
        *(
            ["### The worker's CPU in-process", "", in_process_report(in_process, args), ""]
            if in_process
            else []
        ),
        "### Every run",
        "",
        runs_table(runs),
    ]
    text = "\n".join(parts)
    payload = {
        "machine": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [asdict(r) for r in runs],
        "in_process": in_process,
    }
    emit(text, args.markdown, args.json_out, payload)
    return 1 if any(r.problems for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
