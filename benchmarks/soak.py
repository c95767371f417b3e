"""Soak: the highest rate the machine gives through the sidecar, for a long time, and what holds.

A small KServe V1 model server (``POST /v1/models/churn:predict``, ``{"instances": [4 records of
10 features]}``, a logistic model) runs under uvicorn; ``inferwatch sidecar`` runs in front of it
with ``--sample-rate 1.0``, ``--check-interval 10s`` and a baseline built by ``inferwatch baseline
build`` from 20,000 reference rows of the same distribution. A load generator drives the proxy
port closed-loop over ``--connections`` keep-alive connections (the highest rate the machine
sustains: it sends as fast as answers come back), or paced with ``--rate N``. Every
``--sample-every`` seconds it records the sidecar's RSS and CPU time, ``/health`` capture
counters, requests sent and answered, the model server's count and the skew checks run. At the
end it waits for the writer, sends SIGTERM, opens the DuckDB file and checks:

- every request answered (no socket error, no non-2xx, answered = sent) and served once by the
  model;
- stored rows in DuckDB = sampled - dropped, every stored request whole (4 instances x 11 values),
  drops counted;
- checks ran about every 10 s (reports >= duration / 10 - 2);
- RSS flat after warm-up: growth from ``--warmup`` to the end under ``--rss-growth`` percent,
  with the least-squares slope over the second half reported.

It prints a summary, writes every sample and verdict as JSON, and exits 1 when a verdict fails.
The harness is ``tests/reliability/_soak.py``; ``tests/reliability/test_load.py`` runs it for
2 minutes in CI. The store's size cap is raised (``--max-db-bytes 16GiB``) so that eviction does
not remove rows the comparison counts; pass ``--flag=--max-db-bytes=2GiB`` to soak the default.

    python benchmarks/soak.py --duration 30m --json soak.json     # the benchmark
    python benchmarks/soak.py --quick                             # a smoke run: 1 minute
    python benchmarks/soak.py --duration 10m --rate 1000 --load wrk
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _lib.report import command_line  # noqa: E402
from _lib.servers import workdir as make_workdir  # noqa: E402

from inferwatch.middleware.settings import parse_duration  # noqa: E402
from tests.reliability._soak import SoakConfig, run_soak, summary_text, verdicts  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", default="30m", help="How long the load runs (30m, 90s).")
    parser.add_argument(
        "--rate",
        default="auto",
        help="auto: closed loop, the highest rate the machine gives; or requests per second.",
    )
    parser.add_argument("--connections", type=int, default=32, help="Keep-alive connections.")
    parser.add_argument(
        "--load",
        choices=("python", "wrk"),
        default="python",
        help="python: the harness's asyncio client, which counts every request and lets the "
        "last ones finish; wrk: lighter on CPU, but it does not count requests cut at the end.",
    )
    parser.add_argument("--batch", type=int, default=4, help="Records per request.")
    parser.add_argument("--check-interval", default="10s", help="The sidecar's check_interval.")
    parser.add_argument("--window", default="1h", help="The sidecar's window for each check.")
    parser.add_argument("--warmup", default="2m", help="RSS growth is measured from here on.")
    parser.add_argument("--rss-growth", type=float, default=5.0, help="Bound, percent.")
    parser.add_argument("--sample-every", type=float, default=5.0, help="Seconds between samples.")
    parser.add_argument(
        "--flag",
        action="append",
        default=[],
        help="An extra sidecar flag, as --flag=--queue-size=20000 (repeatable).",
    )
    parser.add_argument("--workdir", default=None, help="Folder kept for the DuckDB file, logs.")
    parser.add_argument("--json", default=None, help="Write the result here.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 1 minute, 20 s warm-up.")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = "1m", "20s"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = parse_duration(args.duration)
    rate = None if args.rate == "auto" else float(args.rate)
    flags: list[str] = []
    for flag in args.flag:
        flags.extend(flag.split("=", 1))
    if not any(f == "--max-db-bytes" for f in flags):
        flags += ["--max-db-bytes", "16GiB"]
    workdir = make_workdir(args.workdir, "inferwatch-soak-")
    config = SoakConfig(
        duration_s=duration,
        rate=rate,
        connections=args.connections,
        load=args.load,
        batch=args.batch,
        check_interval=args.check_interval,
        window=args.window,
        sample_every_s=args.sample_every,
        warmup_s=parse_duration(args.warmup),
        extra_flags=flags,
        workdir=workdir,
    )
    started = time.monotonic()
    print(f"soak: {duration:.0f} s, workdir {workdir}, load average {os.getloadavg()}", flush=True)
    result = run_soak(config, say=lambda line: print(line, flush=True))
    result["verdicts"] = verdicts(result, rss_growth_pct=args.rss_growth)
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["load_average_at_end"] = os.getloadavg()
    result["command"] = command_line("soak.py", argv)
    print()
    print(summary_text(result))
    out = Path(args.json) if args.json else workdir / "soak.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nresults: {out}")
    return 0 if all(v["ok"] for v in result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
