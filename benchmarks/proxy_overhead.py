"""What the sidecar costs in front of a model server, against going direct and against nginx.

One model server runs for the whole benchmark, pinned to ``--upstream-core``: by default a FastAPI
app (POST /predict, ``{"instances": [4 records of 10 features]}``, pydantic validation); with
``--upstream mlserver``, MLServer serving a scikit-learn logistic regression trained on generated
data, from a venv of its own (``--mlserver-python``, default ``.venv-mlserver/bin/python``), with
V2 requests of ``--rows`` (10) rows of 10 FP64 features. Each variant puts a
proxy in front of it, pinned to ``--proxy-core``, and wrk (one thread, pinned to ``--wrk-core``)
loads the proxy:

- ``direct``: wrk talks to the model server itself;
- ``sidecar-1.0`` / ``sidecar-0.1``: ``inferwatch sidecar`` at that sample rate, real DuckDB file;
- ``collector-1.0`` / ``collector-0.1``: the same with ``--sidecar-collector true``: the engine in
  a collector process beside the proxy (its CPU reported apart from the proxy's);
- ``nginx``: Debian's nginx, one worker, ``proxy_pass`` to a keepalive upstream block.

``--candidates`` measures the upstream clients the sidecar could be built on instead, each in
the same minimal streaming ASGI proxy without monitoring: ``lean`` (the sidecar's own pool),
``aiohttp``, ``httpx`` (one shared AsyncClient, defaults) and ``httpx-tuned`` (a pool of 16,
since httpcore polls every pooled socket on each request; retries off; sniffio made importable so
that httpcore stops searching sys.path for it on every request). It also runs ``floor``
(``_lib/floor_proxy.py``): the least a proxy in Python does per request (uvloop and httptools, one
upstream connection per client, heads rebuilt, no pool, timeouts or monitoring), the floor under
any sidecar built in Python; ``--variants floor,...`` sets it beside the sidecar.

Variants run interleaved for ``--rounds`` rounds; medians are reported. The upstream's and the
proxy's cores are swapped every other round (``--no-swap-cores`` keeps them): on this kind of
host the two cores' speeds drift apart and back within seconds (``benchmarks/core_speed.py``
shows it), and behind nginx the upstream's core sets the pace, behind the sidecar the proxy's,
so a stretch in which one core runs slower would otherwise favour one variant for that whole
stretch. Each run is a warm-up,
a measured run at ``--connections`` (throughput: every variant runs flat out, so its p50 there is
mostly queueing, ``connections`` / throughput), then a light run at one connection, then a paced
run: ``--paced-connections`` connections that each wait between requests, so that about
``--paced-rate`` requests a second arrive, a load every variant carries (latency added by the
proxy under concurrency, without its own queue). After each sidecar run the sidecar gets
SIGTERM and its DuckDB file is counted. Each run also reports the model server's CPU per
request, which shows where the limit sits: behind nginx the model server's core is the one
saturated, behind the sidecar the proxy's core is.
Where the sidecar hands its captures to a collector process of its own, that process's CPU is
reported beside the proxy's, and the store is counted once it has exited. The collector runs on the
proxy's core, where the sidecar starts it, or with ``--collector-on upstream`` on the model
server's: on the proxy's core its work at ``sample_rate`` 1.0 shares the core and its caches with
the proxy. A table sets each sidecar variant against the targets (p50 added at one connection, p99
added and throughput against direct at ``--connections``, proxy CPU per request against nginx's),
nginx beside it.

Measured with this script and not kept in the sidecar (each against the code without it, in
the same minutes): a GIL switch interval of 0.5 ms instead of 5 ms (no gain); a DuckDB
``checkpoint_threshold`` of 64 or 128 MB instead of 16 (within noise); transactions spanning
several writer batches (a quarter less insert time, but files 1.4 to 2 times as large and
captures visible seconds later, for about 6 of 113 to 212 µs per request).

    python benchmarks/proxy_overhead.py                     # 3 rounds x 15 s per variant
    python benchmarks/proxy_overhead.py --candidates        # the upstream client comparison
    python benchmarks/proxy_overhead.py --quick             # a smoke run
    python benchmarks/proxy_overhead.py --upstream mlserver --connections 16 --paced 0 --rounds 5
    python benchmarks/proxy_overhead.py --variants sidecar-1.0,nginx --rounds 8 --duration 10 \
        --light 0 --paced 0                                 # throughput pairs only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.load import WrkResult, write_lua
from _lib.load import wrk as run_wrk
from _lib.machine import machine_info, machine_markdown, missing_tools
from _lib.pinning import pin_threads, taskset
from _lib.procfs import busy_seconds, cpu_seconds, process_tree, rss_total_mib
from _lib.records import PredictRequest, PredictResponse, Record, make_bodies
from _lib.report import (
    Figure,
    add_run_args,
    cell,
    command_line,
    emit,
    figures_table,
    table,
    verdict,
)
from _lib.rounds import interleaved, median, medians_by
from _lib.servers import free_port, kill, start, stop, uvicorn_command, wait_for_http
from _lib.servers import workdir as make_workdir
from _lib.store import accounted, collector_done, count_db, find_collector

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
MAIN_VARIANTS = ("direct", "collector-1.0", "collector-0.1", "sidecar-1.0", "nginx")
CANDIDATES = ("direct", "nginx", "floor", "lean", "aiohttp", "httpx", "httpx-tuned")

# --------------------------------------------------------------------------- servers (factories)


def create_upstream() -> Any:
    """The model server: FastAPI with pydantic validation, as most model apps are."""
    import math

    from fastapi import FastAPI

    app = FastAPI()

    def score(r: Record) -> float:
        z = -1.2 + 0.015 * (r.age - 45) - 0.25 * math.log1p(max(r.income, 0.0) / 10_000)
        z += -0.004 * r.tenure_months - 0.003 * (r.credit_score - 650) + 1.1 * r.utilization
        return round(1.0 / (1.0 + math.exp(-z)), 6)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> PredictResponse:
        return PredictResponse(predictions=[score(r) for r in request.instances])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


MLSERVER_MODEL = "churn"
# Run by the MLServer venv's Python, so that the model is pickled by the scikit-learn it serves.
_TRAIN = """
import sys
import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(7)
X = rng.normal(size=(5000, 10))
y = (X @ rng.normal(size=10) + rng.normal(scale=0.5, size=5000) > 0).astype(int)
model = LogisticRegression().fit(X, y)
joblib.dump(model, sys.argv[1])
"""


def mlserver_command(args: argparse.Namespace, port: int, workdir: Path) -> list[str]:
    """Train a scikit-learn model on generated data and lay out an MLServer folder serving it
    on ``port`` (one process, no metrics server, no access log); returns the command."""
    root = workdir / "mlserver"
    model_dir = root / "models" / MLSERVER_MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    python = Path(args.mlserver_python)
    subprocess.run([str(python), "-c", _TRAIN, str(model_dir / "model.joblib")], check=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "parallel_workers": 0,
        "metrics_endpoint": None,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    model = {
        "name": MLSERVER_MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model), encoding="utf-8")
    mlserver = python.parent / "mlserver"
    return taskset(args.upstream_core, [str(mlserver), "start", str(root)])


def v2_bodies(count: int, rows: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct V2 inference requests of ``rows`` rows of 10 FP64 features each."""
    rng = random.Random(seed)
    return [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "predict",
                        "shape": [rows, 10],
                        "datatype": "FP64",
                        "data": [round(rng.gauss(0, 1), 4) for _ in range(rows * 10)],
                    }
                ]
            }
        ).encode()
        for _ in range(count)
    ]


_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def create_candidate() -> Any:
    """A minimal streaming ASGI proxy over the client BENCH_CANDIDATE names."""
    kind = os.environ["BENCH_CANDIDATE"]
    upstream = os.environ["BENCH_UPSTREAM"]
    if kind == "lean":
        from inferwatch.sidecar._proxy import Proxy
        from inferwatch.sidecar._upstream import Upstream, UpstreamPool

        return Proxy(UpstreamPool(Upstream.parse(upstream)))
    if kind == "httpx-tuned":
        import types

        sys.modules.setdefault(
            "sniffio", types.SimpleNamespace(current_async_library=lambda: "asyncio")
        )  # type: ignore[arg-type]
    state: dict[str, Any] = {}

    async def body(receive: Any) -> Any:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            yield message.get("body", b"")

    def forwarded(scope: dict[str, Any]) -> tuple[list[tuple[str, str]], bool]:
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        length = next((v for k, v in headers if k == "content-length"), None)
        kept = [(k, v) for k, v in headers if k not in _HOP]
        if length is not None:
            kept.append(("content-length", length))
        return kept, length is not None or any(k == "transfer-encoding" for k, _ in headers)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["raw_path"].decode() + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        headers, has_body = forwarded(scope)
        if kind == "aiohttp":
            import aiohttp

            if "session" not in state:
                state["session"] = aiohttp.ClientSession(
                    upstream,
                    connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=4),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                )
            async with state["session"].request(
                scope["method"],
                path,
                headers=headers,
                allow_redirects=False,
                data=body(receive) if has_body else None,
            ) as response:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": [
                            (k.lower(), v)
                            for k, v in response.raw_headers
                            if k.lower().decode() not in _HOP
                        ],
                    }
                )
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        import httpx

        if "client" not in state:
            # httpcore polls every pooled socket on each request: fewer connections, fewer polls.
            limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
            transport = httpx.AsyncHTTPTransport(retries=0, limits=limits)
            state["client"] = (
                httpx.AsyncClient(base_url=upstream, transport=transport, trust_env=False)
                if kind == "httpx-tuned"
                else httpx.AsyncClient(base_url=upstream)
            )
        client = state["client"]
        request = client.build_request(
            scope["method"], path, headers=headers, content=body(receive) if has_body else None
        )
        response = await client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.lower(), v)
                        for k, v in response.headers.raw
                        if k.lower().decode() not in _HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    return app


# --------------------------------------------------------------------------- measuring


def wrk(
    args: argparse.Namespace, url: str, lua: Path, seconds: float, connections: int
) -> WrkResult:
    return run_wrk(url, lua, seconds, connections, str(args.wrk_core))


def round_cores(args: argparse.Namespace, rnd: int) -> argparse.Namespace:
    """``args`` with the upstream's and the proxy's cores swapped in even rounds when asked."""
    if not args.swap_cores or rnd % 2 or args.upstream_core == args.proxy_core:
        return args
    swap = {args.upstream_core: args.proxy_core, args.proxy_core: args.upstream_core}
    return argparse.Namespace(
        **{
            **vars(args),
            "upstream_core": swap[args.upstream_core],
            "proxy_core": swap[args.proxy_core],
            "wrk_core": swap.get(args.wrk_core, args.wrk_core),
        }
    )


NGINX_CONF = """\
worker_processes 1;
daemon off;
%(user)s
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(dir)s/client; proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi; uwsgi_temp_path %(dir)s/uwsgi; scgi_temp_path %(dir)s/scgi;
  upstream model { server 127.0.0.1:%(upstream)d; keepalive 64; }
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }
}
"""


def is_sidecar(variant: str) -> bool:
    """``sidecar-<rate>``: the engine in the proxy's process; ``collector-<rate>``: beside it."""
    return variant.startswith(("sidecar-", "collector-"))


def python_server(args: argparse.Namespace, factory: str, port: int, core: int) -> list[str]:
    return uvicorn_command(factory, port, core, BENCH_DIR, workers=None, lifespan="off")


def proxy_command(
    args: argparse.Namespace, variant: str, port: int, admin: int, upstream: int, workdir: Path
) -> tuple[list[str], dict[str, str]]:
    url = f"http://127.0.0.1:{upstream}"
    if is_sidecar(variant):
        db = workdir / f"{variant}-{port}.duckdb"
        cmd = [
            sys.executable,
            "-m",
            "inferwatch",
            "sidecar",
            "--upstream",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-host",
            "127.0.0.1",
            "--admin-port",
            str(admin),
            "--db",
            str(db),
            "--sample-rate",
            variant.split("-", 1)[1],
            "--upstream-health-path",
            args.health_path,
            "--sidecar-collector",
            "true" if variant.startswith("collector-") else "false",
        ]
        return taskset(args.proxy_core, cmd), {"BENCH_DB": str(db)}
    if variant == "floor":
        floor = BENCH_DIR / "_lib" / "floor_proxy.py"
        return taskset(args.proxy_core, [sys.executable, str(floor), str(port), url]), {}
    if variant == "nginx":
        conf_dir = workdir / f"nginx-{port}"
        conf_dir.mkdir()
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = NGINX_CONF % {"dir": conf_dir, "upstream": upstream, "port": port, "user": user}
        (conf_dir / "nginx.conf").write_text(conf, encoding="utf-8")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return taskset(
            args.proxy_core, [nginx, "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")]
        ), {}
    return python_server(args, "proxy_overhead:create_candidate", port, args.proxy_core), {
        "BENCH_CANDIDATE": variant,
        "BENCH_UPSTREAM": url,
    }


@dataclass
class Run:
    variant: str
    round: int
    main: WrkResult
    light: WrkResult | None
    paced: WrkResult | None
    proxy_cpu_us: float  # proxy CPU per request during the measured run (all its processes)
    proxy_cores: float  # proxy CPU seconds per wall second during the measured run
    proxy_rss_mib: float
    upstream_cpu_us: float  # the model server's CPU per request during the measured run
    foreign_cores: float  # busy cores (of the pinned ones) not explained by upstream, proxy, wrk
    capture: dict[str, Any]
    upstream_core: int
    proxy_core: int
    stored: int | None
    collector_cpu_us: float = math.nan  # a separate collector's CPU per request, if there is one
    rows_complete: bool | None = None  # every parsed request holds its rows, 11 values each

    @property
    def accounted(self) -> bool | None:
        return accounted(self.capture, self.stored)


def rows_complete(db: Path, rows: int) -> bool:
    """Every request with a body parsed into ``rows`` instances of 10 inputs and 1 prediction,
    but those whose client left before the answer (499: wrk's connections in flight when it
    stops), which have no prediction; at most one request without a body (the readiness probe
    sent through the proxy)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        requests, ok, ok_rows, gone = con.execute(
            "SELECT count(*), count(*) FILTER (input_status = 'ok'), "
            "coalesce(sum(input_rows) FILTER (input_status = 'ok'), 0), "
            "count(*) FILTER (input_status = 'ok' AND status = 499) FROM requests"
        ).fetchone()
        values = con.execute(
            "SELECT count(*) FROM features JOIN requests USING (request_id) "
            "WHERE input_status = 'ok'"
        ).fetchone()[0]
    finally:
        con.close()
    return requests - ok <= 1 and ok_rows == ok * rows and values == (ok * 11 - gone) * rows


def run_variant(
    args: argparse.Namespace,
    variant: str,
    rnd: int,
    upstream: int,
    upstream_pid: int,
    workdir: Path,
    lua: Path,
) -> Run:
    import httpx

    collector: int | None = None  # a collector process beside the sidecar, where it has one
    if variant == "direct":
        port, proc, env = upstream, None, {}
    else:
        port, admin = free_port(), free_port()
        cmd, env = proxy_command(args, variant, port, admin, upstream, workdir)
        proc = start(cmd, workdir / f"{variant}-{rnd}.log", env, REPO)
    try:
        if proc is not None:
            wait_for_http(port, args.health_path, proc)
        url = f"http://127.0.0.1:{port}{args.predict_path}"
        wrk(args, url, lua, args.warmup, args.connections)
        pids = process_tree(proc.pid) if proc is not None else []
        if is_sidecar(variant):
            # The collector a sidecar started is its child: its CPU is reported on its own.
            collector = find_collector(Path(env["BENCH_DB"]), {proc.pid})
        collectors = process_tree(collector) if collector is not None else []
        if args.collector_on == "upstream":
            for pid in collectors:  # threads it starts later inherit the core
                pin_threads(pid, {args.upstream_core})
        pids = [pid for pid in pids if pid not in collectors]
        upstream_pids = process_tree(upstream_pid)
        cores = tuple({args.upstream_core, args.proxy_core, args.wrk_core})
        ours = [*pids, *upstream_pids, *collectors]
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        upstream_before, collector_before = cpu_seconds(upstream_pids), cpu_seconds(collectors)
        ours_before, busy_before = cpu_seconds(ours), busy_seconds(cores)
        main = wrk(args, url, lua, args.duration, args.connections)
        cpu = cpu_seconds(pids) - cpu_before
        wall = time.monotonic() - started
        upstream_cpu = cpu_seconds(upstream_pids) - upstream_before
        collector_cpu = cpu_seconds(collectors) - collector_before
        # wrk's own CPU is not visible from here; it is small and counted as foreign.
        foreign = (busy_seconds(cores) - busy_before - (cpu_seconds(ours) - ours_before)) / wall
        rss = rss_total_mib(pids)
        light = wrk(args, url, lua, args.light, 1) if args.light > 0 else None
        paced = None
        if args.paced > 0:
            paced = wrk(args, url, lua.with_name("paced.lua"), args.paced, args.paced_connections)
        capture: dict[str, Any] = {}
        stored, complete = None, None
        if is_sidecar(variant):
            capture = httpx.get(f"http://127.0.0.1:{admin}/health", timeout=10).json()["capture"]
            stop(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"{variant} exited with {proc.returncode}")
            collector_done(collector)  # it writes what it holds, then lets the store go
            stored = count_db(Path(env["BENCH_DB"]))["requests"]
            complete = rows_complete(
                Path(env["BENCH_DB"]), args.rows if args.upstream == "mlserver" else 4
            )
    finally:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stop(proc, timeout=30)
        kill(proc, collector)
    return Run(
        variant=variant,
        round=rnd,
        main=main,
        light=light,
        paced=paced,
        proxy_cpu_us=cpu / max(main.requests, 1) * 1e6,
        proxy_cores=cpu / wall if wall else 0.0,
        proxy_rss_mib=rss,
        upstream_cpu_us=upstream_cpu / max(main.requests, 1) * 1e6,
        collector_cpu_us=collector_cpu / max(main.requests, 1) * 1e6 if collectors else math.nan,
        foreign_cores=max(foreign, 0.0),
        capture=capture,
        stored=stored,
        rows_complete=complete,
        upstream_core=args.upstream_core,
        proxy_core=args.proxy_core,
    )


def targets_table(
    args: argparse.Namespace,
    variants: tuple[str, ...],
    runs: list[Run],
    med: dict[str, dict[str, float]],
) -> str:
    """Each sidecar variant's figures against the targets, nginx's beside them."""
    direct = med["direct"]
    direct_by_round = {r.round: r.main.rps for r in runs if r.variant == "direct"}

    def share(v: str) -> float:
        # per round: the runs of a round are a minute apart, the host's speed drifts more
        ratios = [r.main.rps / direct_by_round[r.round] for r in runs if r.variant == v]
        return median(ratios)

    nginx = med.get("nginx")
    figures, leads = [], []
    for v in (v for v in variants if is_sidecar(v)):
        m = med[v]
        figures += [
            Figure(
                "p50 added at 1 connection, ms",
                m["light_p50"] - direct["light_p50"],
                "≤ 0.1",
                nginx and nginx["light_p50"] - direct["light_p50"],
                "+.3f",
                lambda x: x <= 0.1,
            ),
            Figure(
                f"p99 added at {args.connections} connections, ms",
                m["p99"] - direct["p99"],
                "≤ 1",
                nginx and nginx["p99"] - direct["p99"],
                "+.2f",
                lambda x: x <= 1.0,
            ),
            Figure(
                f"throughput vs direct at {args.connections} connections (median of rounds)",
                share(v),
                "≥ 0.98",
                nginx and share("nginx"),
                ".3f",
                lambda x: x >= 0.98,
            ),
            Figure(
                "proxy-process CPU per request vs nginx's",
                m["cpu_us"] / nginx["cpu_us"] if nginx else math.nan,
                "≤ 2x",
                1.0 if nginx else None,
                ".2f",
                lambda x: x <= 2.0,
            ),
        ]
        leads += [[v]] * 4
    if not figures:
        return ""
    cpu = f" (nginx: {nginx['cpu_us']:.0f} µs of CPU per request)" if nginx else ""
    table = figures_table(figures, "sidecar", "nginx", ["variant"], leads)
    return f"Targets, with nginx's figure from the same run{cpu}:\n\n" + table


FIGURES = {
    "rps": lambda r: r.main.rps,
    "p50": lambda r: r.main.p50_ms,
    "p99": lambda r: r.main.p99_ms,
    "light_p50": lambda r: r.light and r.light.p50_ms,
    "light_p99": lambda r: r.light and r.light.p99_ms,
    "paced_rps": lambda r: r.paced and r.paced.rps,
    "paced_p50": lambda r: r.paced and r.paced.p50_ms,
    "paced_p99": lambda r: r.paced and r.paced.p99_ms,
    "cpu_us": lambda r: r.proxy_cpu_us,
    "cores": lambda r: r.proxy_cores,
    "rss": lambda r: r.proxy_rss_mib,
    "upstream_us": lambda r: r.upstream_cpu_us,
    "collector_us": lambda r: r.collector_cpu_us if r.collector_cpu_us >= 0 else None,
}


def report(args: argparse.Namespace, variants: tuple[str, ...], runs: list[Run]) -> str:
    med = medians_by(runs, lambda r: r.variant, FIGURES)
    direct = med["direct"]
    # The host's speed drifts between rounds: a ratio of two runs of one round (a minute or two
    # apart) is steadier than the ratio of medians taken over the whole benchmark.
    nginx_by_round = {r.round: r.main.rps for r in runs if r.variant == "nginx"}
    # (req/s, nginx's req/s in the same round) for each round of each variant
    against = {
        v: [
            (r.main.rps, nginx_by_round[r.round])
            for r in runs
            if r.variant == v and r.round in nginx_by_round
        ]
        for v in variants
    }
    paired = {v: [rps / nginx for rps, nginx in pairs] for v, pairs in against.items()}
    # Pooled: the variant's req/s summed over those rounds against nginx's sum.
    pooled = {
        v: sum(rps for rps, _ in pairs) / sum(nginx for _, nginx in pairs)
        if pairs
        else float("nan")
        for v, pairs in against.items()
    }
    d = direct
    proxy = lambda v, text: text if v != "direct" else ""  # noqa: E731
    summary = table(
        [{"variant": v, **m} for v, m in med.items()],
        {
            "variant": lambda m: m["variant"],
            "req/s": lambda m: f"{m['rps']:,.0f}",
            "vs direct": lambda m: f"{m['rps'] / d['rps']:.3f}",
            "vs nginx (median of rounds)": lambda m: cell(median(paired[m["variant"]]), ".3f"),
            "vs nginx (rounds pooled)": lambda m: cell(pooled[m["variant"]], ".3f"),
            "vs nginx, each round": lambda m: " / ".join(f"{x:.2f}" for x in paired[m["variant"]]),
            "p50 ms": lambda m: f"{m['p50']:.2f}",
            "p99 ms": lambda m: f"{m['p99']:.2f}",
            "p50 added ms": lambda m: proxy(m["variant"], f"{m['p50'] - d['p50']:+.2f}"),
            "c1 p50 ms": lambda m: cell(m["light_p50"], ".3f"),
            "c1 p50 added ms": lambda m: proxy(
                m["variant"], cell(m["light_p50"] - d["light_p50"], "+.3f")
            ),
            "paced req/s": lambda m: cell(m["paced_rps"], ",.0f"),
            "paced p50 ms": lambda m: cell(m["paced_p50"], ".3f"),
            "paced p99 ms": lambda m: cell(m["paced_p99"], ".3f"),
            "paced p50 added ms": lambda m: proxy(
                m["variant"], cell(m["paced_p50"] - d["paced_p50"], "+.3f")
            ),
            "proxy CPU µs/req": lambda m: proxy(m["variant"], f"{m['cpu_us']:.0f}"),
            "upstream CPU µs/req": lambda m: f"{m['upstream_us']:.0f}",
            "proxy cores used": lambda m: proxy(m["variant"], f"{m['cores']:.2f}"),
            "proxy RSS MiB": lambda m: proxy(m["variant"], f"{m['rss']:.0f}"),
            "collector CPU µs/req (a process of its own)": lambda m: cell(m["collector_us"], ".0f"),
        },
    )
    every = table(
        runs,
        {
            "round": lambda r: r.round,
            "variant": lambda r: r.variant,
            "cores (upstream / proxy)": lambda r: f"{r.upstream_core} / {r.proxy_core}",
            "req/s": lambda r: f"{r.main.rps:,.0f}",
            "p50 ms": lambda r: f"{r.main.p50_ms:.2f}",
            "p99 ms": lambda r: f"{r.main.p99_ms:.2f}",
            "errors": lambda r: sum(w.failed for w in (r.main, r.light, r.paced) if w),
            "sampled": lambda r: r.capture.get("sampled", ""),
            "stored": lambda r: "" if r.stored is None else r.stored,
            "dropped": lambda r: r.capture.get("dropped", ""),
            "stored+dropped = sampled": lambda r: verdict(r.accounted),
            "rows complete": lambda r: verdict(r.rows_complete),
            "proxy CPU µs/req": lambda r: proxy(r.variant, f"{r.proxy_cpu_us:.0f}"),
            "upstream CPU µs/req": lambda r: f"{r.upstream_cpu_us:.0f}",
            "other load on the pinned cores": lambda r: f"{r.foreign_cores:.2f}",
        },
    )
    head = (
        f"Median of {args.rounds} round(s); {args.duration:g} s at wrk -t1 -c{args.connections}, "
        f"then {args.light:g} s at -c1, then {args.paced:g} s paced at about "
        f"{args.paced_rate:,} req/s over {args.paced_connections} connections. "
        f"Cores: upstream {args.upstream_core}, proxy "
        f"{args.proxy_core}, wrk {args.wrk_core}"
        + (", the upstream's and the proxy's swapped in even rounds." if args.swap_cores else ".")
        + " Pooled is the sum of a variant's req/s over the rounds against nginx's sum."
    )
    tail = ["", targets_table(args, variants, runs, med), "", "Every run:", "", every]
    return "\n".join([head, "", summary, *tail])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(parser, 3, 15.0, 32, quick="1 round of 3 s, 1 s warm-up")
    parser.add_argument("--light", type=float, default=5.0, help="seconds at one connection")
    parser.add_argument("--paced", type=float, default=5.0, help="seconds of the paced run")
    parser.add_argument("--paced-rate", type=int, default=2_000, help="paced run's req/s")
    parser.add_argument("--paced-connections", type=int, default=8)
    parser.add_argument("--upstream-core", type=int, default=0)
    parser.add_argument("--proxy-core", type=int, default=1)
    parser.add_argument("--wrk-core", type=int, default=1)
    parser.add_argument(
        "--collector-on",
        choices=("proxy", "upstream"),
        default="proxy",
        help="the core of a sidecar's collector: the proxy's, where the sidecar starts it, or the "
        "model server's (moved there after the warm-up)",
    )
    parser.add_argument(
        "--swap-cores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="swap the upstream's and the proxy's (and wrk's) cores every other round",
    )
    parser.add_argument("--candidates", action="store_true", help="compare upstream clients")
    parser.add_argument(
        "--upstream",
        choices=("fastapi", "mlserver"),
        default="fastapi",
        help="the model server: the FastAPI app above, or MLServer with a scikit-learn model",
    )
    parser.add_argument(
        "--mlserver-python",
        default=str(REPO / ".venv-mlserver" / "bin" / "python"),
        help="a Python with mlserver and mlserver-sklearn installed",
    )
    parser.add_argument("--rows", type=int, default=10, help="rows per V2 request (MLServer)")
    parser.add_argument(
        "--variants", help="comma-separated variants, e.g. lean,sidecar-0.0 (direct always runs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
        args.light, args.paced = min(args.light, 2.0), min(args.paced, 2.0)
    if args.upstream == "mlserver":
        args.predict_path = f"/v2/models/{MLSERVER_MODEL}/infer"
        args.health_path = "/v2/health/ready"
        if not Path(args.mlserver_python).exists():
            parser.error(
                f"{args.mlserver_python} not found: python -m venv .venv-mlserver && "
                ".venv-mlserver/bin/pip install mlserver mlserver-sklearn"
            )
    else:
        args.predict_path, args.health_path = "/predict", "/health"
    variants = CANDIDATES if args.candidates else MAIN_VARIANTS
    if args.variants:
        # Any mix of the variants above, plus sidecar-<rate> or collector-<rate> for other rates.
        chosen = ["direct", *(v.strip() for v in args.variants.split(",") if v.strip())]
        known = set(MAIN_VARIANTS) | set(CANDIDATES)
        bad = [v for v in chosen if v not in known and not is_sidecar(v)]
        if bad:
            parser.error(f"unknown variant {bad[0]!r}")
        variants = tuple(dict.fromkeys(chosen))
    if missing := missing_tools(("wrk", "taskset", *(("nginx",) if "nginx" in variants else ()))):
        parser.error(missing)
    workdir = make_workdir(args.workdir, "inferwatch-proxy-")
    lua = workdir / "post.lua"
    bodies = v2_bodies(64, args.rows) if args.upstream == "mlserver" else make_bodies(64, 4)
    write_lua(lua, bodies)
    # Each connection waits this long after each response: about paced_rate req/s in all.
    pause_ms = max(round(args.paced_connections / max(args.paced_rate, 1) * 1000), 1)
    write_lua(lua.with_name("paced.lua"), bodies, pause_ms)

    upstream = free_port()
    if args.upstream == "mlserver":
        up_cmd = mlserver_command(args, upstream, workdir)
    else:
        up_cmd = python_server(args, "proxy_overhead:create_upstream", upstream, args.upstream_core)
    up = start(up_cmd, workdir / "upstream.log", cwd=REPO)
    runs: list[Run] = []
    try:
        wait_for_http(upstream, args.health_path, up, timeout=120)
        pinned = 0
        for rnd, variant in interleaved(variants, args.rounds):
            cores = round_cores(args, rnd)
            if rnd != pinned:
                for pid in process_tree(up.pid):
                    pin_threads(pid, {cores.upstream_core})
                pinned = rnd
            run = run_variant(cores, variant, rnd, upstream, up.pid, workdir, lua)
            runs.append(run)
            light = f"  c1 p50 {run.light.p50_ms:.3f} ms" if run.light else ""
            print(
                f"round {rnd} {variant:12s} {run.main.rps:8.0f} req/s  p50 "
                f"{run.main.p50_ms:6.2f} ms  p99 {run.main.p99_ms:6.2f} ms{light}  proxy "
                f"{run.proxy_cpu_us:.0f} µs/req  upstream {run.upstream_cpu_us:.0f} µs/req  "
                f"other load {run.foreign_cores:.2f} cores  (upstream on {run.upstream_core}, "
                f"proxy on {run.proxy_core})",
                file=sys.stderr,
                flush=True,
            )
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stop(up, timeout=30)
        kill(up)
    command = command_line("proxy_overhead.py", argv)
    info = machine_info(extra=("aiohttp", "httpx", "httpcore"))
    nginx_version = subprocess.run(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-v"],
        capture_output=True,
        text=True,
        check=False,
    ).stderr.strip()
    info["nginx"] = nginx_version.split("/", 1)[-1] if nginx_version else "not installed"
    text = (
        f"Command: `{command.strip()}`\n\n## Machine\n\n{machine_markdown(info)}\n\n"
        f"## Results\n\n{report(args, variants, runs)}"
    )
    payload = {"machine": info, "args": vars(args), "runs": [asdict(r) for r in runs]}
    emit(text, args.markdown, args.json_out, payload)
    bad = [r for r in runs if r.main.failed or False in (r.accounted, r.rows_complete)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
