"""Draws docs/img/outliers.svg from a real model (no plotting library needed).

    PYTHONPATH=. .venv/bin/python docs/img/outliers_svg.py

Left: the baseline's held-out scores and those of rows whose correlation is reversed, with the
outlier threshold. Right: the multivariate band against the window size, with the mean score of
50 windows without drift and 50 with the reversed correlation at each size.
"""

from __future__ import annotations

import math
import tempfile
from html import escape
from pathlib import Path

import duckdb
import numpy as np

from inferwatch.middleware.baseline.build import build_baseline, load_baseline
from inferwatch.middleware.drift.multivariate import multivariate_drift
from inferwatch.middleware.stats.outliers import OutlierModel

OUT = Path(__file__).resolve().parent / "outliers.svg"
W, H, PAD = 420, 300, 48


def rows(n: int, seed: int, rho: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(n)
    plan = np.where(x > 0.5, "gold", np.where(rng.random(n) < 0.5, "basic", "plus"))
    return {"x": x, "y": y, "plan": plan.astype(object)}


def scores(model: OutlierModel, data: dict[str, np.ndarray]) -> np.ndarray:
    numbers = np.column_stack([data["x"], data["y"]])
    return model.score(numbers, model.codes([[p] for p in data["plan"].tolist()]))


def text(x: float, y: float, s: str, anchor: str = "middle", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">'
        f"{escape(s)}</text>"
    )


def histogram_panel(model: OutlierModel) -> str:
    usual, flipped = scores(model, rows(20_000, 1, 0.8)), scores(model, rows(20_000, 2, -0.8))
    edges = np.linspace(0, 12, 49)
    parts = [text(W / 2, 18, "Row scores: training vs reversed correlation", size=12)]
    a, _ = np.histogram(usual, edges)
    b, _ = np.histogram(flipped, edges)
    top = max(a.max(), b.max())
    sx = (W - 2 * PAD) / (edges[-1] - edges[0])
    for counts, colour in ((a, "#4c78a8"), (b, "#e45756")):
        middles = PAD + (edges[:-1] + edges[1:]) / 2 * sx
        heights = H - PAD - counts / top * (H - 2 * PAD)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(middles, heights, strict=True))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
    t = PAD + model.threshold * sx
    parts.append(f'<line x1="{t:.1f}" y1="{PAD}" x2="{t:.1f}" y2="{H - PAD}" stroke="#333" '
                 'stroke-dasharray="4 3"/>')  # fmt: skip
    parts.append(text(t + 4, PAD + 10, f"threshold {model.threshold:.2f} (99.5%)", "start", 10))
    parts.append(text(W - PAD, PAD + 28, "training-like rows", "end", 10).replace(
        "<text", '<text fill="#4c78a8"'))  # fmt: skip
    parts.append(text(W - PAD, PAD + 42, "x-y correlation reversed", "end", 10).replace(
        "<text", '<text fill="#e45756"'))  # fmt: skip
    parts += _axes(0, 12, "Mahalanobis distance")
    return "".join(parts)


def band_panel(model: OutlierModel) -> str:
    sizes = np.geomspace(100, 30_000, 60)
    parts = [text(W / 2, 18, "Window mean score and its band (alpha 0.1%)", size=12)]
    verdicts = [multivariate_drift(model, int(n), model.score_mean) for n in sizes]
    lo, hi = 1.5, 3.5

    def sx(n: float) -> float:
        return PAD + (math.log10(n) - 2) / (math.log10(30_000) - 2) * (W - 2 * PAD)

    def sy(v: float) -> float:
        return H - PAD - (min(max(v, lo), hi) - lo) / (hi - lo) * (H - 2 * PAD)

    for key in ("lower", "upper"):
        points = " ".join(
            f"{sx(n):.1f},{sy(v[key]):.1f}" for n, v in zip(sizes, verdicts, strict=True)
        )
        parts.append(f'<polyline fill="none" stroke="#333" points="{points}"/>')
    for size, seed in ((200, 10), (2_000, 11), (20_000, 12)):
        for rho, colour in ((0.8, "#4c78a8"), (0.2, "#e45756")):
            data = rows(50 * size, seed, rho)
            means = np.minimum(scores(model, data), model.clip).reshape(50, size).mean(axis=1)
            for m in means:
                parts.append(f'<circle cx="{sx(size):.1f}" cy="{sy(m):.1f}" r="2" fill="{colour}" '
                             'fill-opacity="0.5"/>')  # fmt: skip
    parts.append(
        text(W - PAD, PAD + 10, "no drift", "end", 10).replace("<text", '<text fill="#4c78a8"')
    )
    parts.append(text(W - PAD, PAD + 24, "correlation 0.8 → 0.2", "end", 10).replace(
        "<text", '<text fill="#e45756"'))  # fmt: skip
    for v in (2.0, 2.5, 3.0):
        parts.append(text(PAD - 6, sy(v) + 4, f"{v:g}", "end", 10))
    parts.append(text(sx(200), H - PAD + 14, "200", size=10))
    parts.append(text(sx(2_000), H - PAD + 14, "2,000", size=10))
    parts.append(text(sx(20_000), H - PAD + 14, "20,000", size=10))
    parts.append(text(W / 2, H - 10, "rows in the window", size=11))
    parts.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>')
    return "".join(parts)


def _axes(lo: float, hi: float, label: str) -> list[str]:
    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>']
    for v in np.linspace(lo, hi, 5):
        x = PAD + (v - lo) / (hi - lo) * (W - 2 * PAD)
        parts.append(text(x, H - PAD + 14, f"{v:g}", size=10))
    parts.append(text(W / 2, H - 10, label))
    return parts


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        con = duckdb.connect()
        con.register("t", rows(50_000, 0, 0.8))
        con.execute(f"COPY t TO '{folder}/train.parquet' (FORMAT parquet)")
        build_baseline(f"{folder}/train.parquet", out=f"{folder}/b.json")
        model = load_baseline(f"{folder}/b.json").outliers
    assert model is not None
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        f"<g>{histogram_panel(model)}</g>"
        f'<g transform="translate({W},0)">{band_panel(model)}</g></svg>\n'
    )
    OUT.write_text(svg)


if __name__ == "__main__":
    main()
