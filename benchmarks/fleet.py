"""``inferwatch check --fleet`` over 1,000 replicas x 24 hours of summaries, in a local folder.

    .venv/bin/python benchmarks/fleet.py [--replicas 1000] [--hours 24] [--rate 100]
        [--drifted 20] [--repeats 3] [--folder /tmp/inferwatch-fleet-bench]

It writes what 1,000 collectors ship in a day (docs/fleet.md): per replica and closed hour one
Parquet file of hour totals, for a baseline of 20 numeric and 5 categorical features, with
counts drawn from the baseline's own shares at ``--rate`` rows per second (``--drifted``
replicas get their numeric features shifted). The files are generated once and kept in
``--folder`` (delete it to draw them again). Then it runs the real command, ``python -m inferwatch
check --fleet FOLDER --window 24h``, in a child process ``--repeats`` times and prints its wall
time (interpreter start and imports included) and CPU time beside the target of 10 s; on a
shared machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 10.0


def build_baseline(folder: Path) -> Path:
    """A baseline of 20 numeric and 5 categorical features, built from generated training rows."""
    from inferwatch.middleware.baseline.build import build_baseline as build

    rng = np.random.default_rng(0)
    lines = [",".join([f"n{i}" for i in range(20)] + [f"c{i}" for i in range(5)])]
    for _ in range(20_000):
        numbers = rng.normal(50, 10, 20).round(3)
        labels = rng.choice(list("abcde"), 5)
        lines.append(",".join([*map(str, numbers), *labels]))
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    out = folder / "baseline.json"
    build(str(folder / "train.csv"), out=str(out))
    return out


def write_fleet(folder: Path, baseline_path: Path, args: argparse.Namespace, end: datetime) -> int:
    """One file per replica and hour in the fleet layout; the number written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from inferwatch.middleware.baseline.build import load_baseline
    from inferwatch.middleware.fleet.layout import file_path
    from inferwatch.middleware.summaries.spec import summary_spec

    baseline = load_baseline(str(baseline_path))
    digest = summary_spec(baseline).digest
    features = list(baseline.features.values())
    rows = args.rate * 3600
    keys: list[tuple[str, str, str, str]] = [
        ("input", "", "rows", ""),
        ("request", "", "requests", ""),
    ]
    shares: list[np.ndarray] = []
    for f in features:
        keys.append(("input", f.name, "type", f.dtype))
        if f.kind == "numeric":
            keys += [("input", f.name, "bin", str(code)) for code in range(len(f.counts))]
        else:
            keys += [("input", f.name, "category", value) for value in f.values]
        counts = np.asarray(f.counts, dtype=float)
        shares.append(counts / counts.sum())
    role, name, what, key = (pa.array(column) for column in zip(*keys, strict=True))
    written = 0
    rng = np.random.default_rng(1)
    for hour_index in range(args.hours):
        hour = end - timedelta(hours=args.hours - hour_index)
        for replica in range(args.replicas):
            n = [rows, rows // 5]
            for f, share in zip(features, shares, strict=True):
                drawn = rng.multinomial(rows, share)
                if replica < args.drifted and f.kind == "numeric":
                    drawn = np.roll(drawn, 3)  # a shift of three bins
                n += [rows, *drawn.tolist()]
            table = pa.table(
                {
                    "minute": pa.array([hour] * len(keys), pa.timestamp("us")),
                    "step_s": pa.array([3600] * len(keys), pa.int32()),
                    "baseline": pa.array([digest] * len(keys)),
                    "role": role,
                    "name": name,
                    "what": what,
                    "key": key,
                    "n": pa.array(n, pa.int64()),
                    "total": pa.nulls(len(keys), pa.float64()),
                    "squares": pa.nulls(len(keys), pa.float64()),
                    "low": pa.nulls(len(keys), pa.float64()),
                    "high": pa.nulls(len(keys), pa.float64()),
                }
            )
            path = folder / "fleet" / file_path("summaries", "", hour, f"replica-{replica:04d}")
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, compression="zstd")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--rate", type=int, default=100, help="rows per second per replica")
    parser.add_argument("--drifted", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/inferwatch-fleet-bench"))
    args = parser.parse_args()
    marker = args.folder / "written.json"
    wanted = {k: getattr(args, k) for k in ("replicas", "hours", "rate", "drifted")}
    if marker.exists() and json.loads(marker.read_text())["args"] == wanted:
        end = datetime.fromisoformat(json.loads(marker.read_text())["end"])
        baseline_path = args.folder / "baseline.json"
        print(f"reusing the fleet in {args.folder}")
    else:
        args.folder.mkdir(parents=True, exist_ok=True)
        baseline_path = build_baseline(args.folder)
        end = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
        started = time.perf_counter()
        count = write_fleet(args.folder, baseline_path, args, end)
        print(f"wrote {count:,} files in {time.perf_counter() - started:.1f} s")
        marker.write_text(json.dumps({"args": wanted, "end": end.isoformat()}))
    command = [
        sys.executable, "-m", "inferwatch", "check", "--fleet", str(args.folder / "fleet"),
        "--baseline", str(baseline_path), "--window", f"{args.hours}h", "--until",
        end.isoformat(), "--format", "json", "--min-rows", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times, cpu, report = [], [], {}
    for _ in range(args.repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode not in (0, 1):
            sys.exit(done.stderr.decode())
        report = json.loads(done.stdout)
    fleet, median = report["fleet"], statistics.median(times)
    print(
        f"check --fleet, {fleet['replicas']:,} replicas x {args.hours} h ({fleet['files']:,} "
        f"files, {report['window']['rows']:,} rows summarized): median {median:.2f} s, "
        f"best {min(times):.2f} s (reading and merging {fleet['read_s']:.2f} s), CPU "
        f"{statistics.median(cpu):.2f} s; target < {TARGET_S:.0f} s"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"status {report['status']}, drifted: {', '.join(report['drifted_features']) or 'none'}")


if __name__ == "__main__":
    main()
