"""How fast each of two cores runs the same work, side by side, over time.

One process per core runs a fixed pure-Python loop again and again and notes how long each pass
took. Both run at once, so the mean pass times of one window compare the cores over the same
seconds. On a quiet
machine the ratio stays near 1; on a shared virtual machine it can drift far from 1 and back
within seconds, which is why ``proxy_overhead.py`` swaps its cores every other round and reports
the median of many rounds.

    python benchmarks/core_speed.py                  # 60 s on cores 0 and 1, 2 s windows
    python benchmarks/core_speed.py --cores 0,1 --seconds 120 --window 5
    python benchmarks/core_speed.py --quick          # smoke run: 6 s
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.machine import machine_info, machine_markdown
from _lib.report import command_line, markdown_table
from _lib.rounds import median

_LOOP = 1_000_000  # additions per pass: about 50 ms on the machine this was written on


def _spin(core: int, seconds: float, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {core})
    passes: list[tuple[float, float]] = []  # (end time, seconds the pass took)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        total = 0
        for i in range(_LOOP):
            total += i
        ended = time.monotonic()
        passes.append((ended, ended - started))
    out.put((core, passes))


def _window_means(passes: list[tuple[float, float]], start: float, window: float) -> list[float]:
    """Mean pass time in each window of ``window`` seconds from ``start``."""
    sums: dict[int, list[float]] = {}
    for end, took in passes:
        sums.setdefault(int((end - start) // window), []).append(took)
    last = max(sums, default=-1)
    return [sum(sums[i]) / len(sums[i]) if i in sums else float("nan") for i in range(last + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", default="0,1", help="the two cores to compare")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=2.0, help="seconds per reported ratio")
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 6.0)
    first, second = (int(c) for c in args.cores.split(","))
    queue: mp.Queue = mp.Queue()
    start = time.monotonic()
    workers = [mp.Process(target=_spin, args=(c, args.seconds, queue)) for c in (first, second)]
    for worker in workers:
        worker.start()
    results = dict(queue.get() for _ in workers)
    for worker in workers:
        worker.join()
    a = _window_means(results[first], start, args.window)
    b = _window_means(results[second], start, args.window)
    # Above 1: the second core ran the loop faster than the first in that window.
    ratios = [x / y for x, y in zip(a, b, strict=False) if x == x and y == y]
    if not ratios:
        parser.error("no window had passes on both cores; give more --seconds")
    apart = sum(1 for r in ratios if abs(r - 1) > 0.1) / len(ratios)
    rows = [
        [f"{i * args.window:g}", f"{x * 1000:.1f}", f"{y * 1000:.1f}", f"{x / y:.2f}"]
        for i, (x, y) in enumerate(zip(a, b, strict=False))
        if x == x and y == y
    ]
    command = command_line("core_speed.py", argv)
    print(f"Command: `{command}`\n\n## Machine\n\n{machine_markdown(machine_info())}\n")
    print(
        f"Speed of core {second} against core {first} (pass time on {first} / on {second}) in "
        f"{len(ratios)} windows of {args.window:g} s: min {min(ratios):.2f}, median "
        f"{median(ratios):.2f}, max {max(ratios):.2f}; {apart:.0%} of windows more than 10% "
        "apart.\n"
    )
    print(
        markdown_table(["from s", f"core {first} ms/pass", f"core {second} ms/pass", "ratio"], rows)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
