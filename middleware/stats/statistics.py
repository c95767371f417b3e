"""Distances between two binned distributions, and the score that sampling noise alone reaches.

Pure numpy/scipy: every function takes aligned bin counts (the baseline's first, the window's
second) and never sees raw rows. docs/drift.md explains the choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "JS_SMALL_SAMPLE_MARGIN",
    "METHODS",
    "NOISE_QUANTILE",
    "PSI_EPSILON",
    "js_distance",
    "js_noise_threshold",
    "noise_threshold",
    "psi",
    "psi_noise_threshold",
    "wasserstein_binned",
    "wasserstein_noise_threshold",
]

METHODS = ("jensenshannon", "psi", "wasserstein")
"""Distribution distances a feature can be checked with (``"method"`` in the baseline)."""

DEFAULT_THRESHOLDS: dict[str, float] = {"jensenshannon": 0.1, "psi": 0.2, "wasserstein": 0.1}
"""The floor of each method's threshold; the noise threshold raises it for small windows."""

NOISE_QUANTILE = 0.9999
"""Per-feature false alarm rate of 1e-4 from sampling noise: 500 unchanged features raise a
spurious alarm in about one check in twenty, 30 features in about one in 300."""

JS_SMALL_SAMPLE_MARGIN = 1.12
"""Factor on the chi-square JS noise figure: over 48 random histograms (2 to 52 bins, windows
of 60 to 3,000 rows), the simulated 99.99th percentile exceeded it by at most 11%."""

PSI_EPSILON = 1e-4
"""Share that empty bins are raised to before PSI takes logarithms (Evidently uses the same)."""

_LN2 = math.log(2.0)
_MC_DRAWS = 1000
_MC_DRAWS_WASSERSTEIN = 4000
_MC_SEED = 20240617

ArrayLike = Sequence[float] | np.ndarray


def _shares(counts: ArrayLike) -> np.ndarray:
    values = np.asarray(counts, dtype=float)
    total = values.sum()
    if not total > 0:
        return np.zeros_like(values)
    return values / total


def js_distance(baseline_counts: ArrayLike, window_counts: ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two aligned histograms.

    Equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)``; 0.0 when either side is
    empty, since an empty side carries no evidence of change.
    """
    p, q = _shares(baseline_counts), _shares(window_counts)
    if not p.any() or not q.any():
        return 0.0
    m = (p + q) / 2.0
    from scipy.special import rel_entr  # imported when first used: it adds 0.4 s to start-up

    divergence = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / (2.0 * _LN2)
    return float(math.sqrt(max(divergence, 0.0)))


def psi(baseline_counts: ArrayLike, window_counts: ArrayLike, eps: float = PSI_EPSILON) -> float:
    """Population stability index, sum of (q - p) * ln(q / p), shares clipped below at ``eps``."""
    p, q = _shares(baseline_counts), _shares(window_counts)
    if not p.any() or not q.any():
        return 0.0
    both_empty = (p == 0) & (q == 0)
    p, q = np.clip(p[~both_empty], eps, None), np.clip(q[~both_empty], eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def wasserstein_binned(
    baseline_counts: ArrayLike,
    window_counts: ArrayLike,
    centers: ArrayLike,
    scale: float,
) -> float:
    """First Wasserstein distance between two histograms on the same ``centers``, over ``scale``.

    Unnormalized (``scale=1``) it equals ``scipy.stats.wasserstein_distance(centers, centers,
    p, q)``; inferwatch divides by the baseline's standard deviation, as Evidently does, so that
    0.1 means "the mass moved a tenth of a standard deviation on average".
    """
    x = np.asarray(centers, dtype=float)
    p, q = _shares(baseline_counts), _shares(window_counts)
    if not p.any() or not q.any() or x.size < 2:
        return 0.0
    order = np.argsort(x, kind="stable")
    x, p, q = x[order], p[order], q[order]
    cdf_gap = np.abs(np.cumsum(p) - np.cumsum(q))[:-1]
    distance = float(np.sum(cdf_gap * np.diff(x)))
    return distance / scale if scale > 0 else distance


def _effective_inverse_n(n: int, baseline_n: int | None) -> float:
    """1/n_eff for comparing two independent samples of sizes n and baseline_n."""
    inverse = 1.0 / max(n, 1)
    if baseline_n:
        inverse += 1.0 / baseline_n
    return inverse


@lru_cache(maxsize=256)
def _chi2_quantile(dof: float, quantile: float) -> float:
    # scipy.special's inverse survival function: scipy.stats would add 50 MB to the process
    from scipy.special import chdtri

    return float(chdtri(dof, 1.0 - quantile))


def _dof(baseline_counts: ArrayLike) -> int:
    return max(int(np.count_nonzero(np.asarray(baseline_counts, dtype=float))) - 1, 1)


def _n_bucket(n: int) -> int:
    """n rounded down to two significant binary digits: a smaller n only raises a threshold."""
    if n < 4:
        return max(n, 1)
    high = 1 << (n.bit_length() - 1)
    return high | (high >> 1) if n >= (high | (high >> 1)) else high


def _shares_key(baseline_counts: ArrayLike) -> tuple[float, ...]:
    """The baseline's non-zero shares, sorted and rounded to 1/4 of a binary order of magnitude.

    JS and PSI noise do not depend on the order of bins, and barely on small changes of the
    shares, so that quantile-binned numeric features (all shares near 1/bins) share one entry.
    """
    p = _shares(baseline_counts)
    p = p[p > 0]
    rounded = np.exp2(np.round(np.log2(p) * 4.0) / 4.0)
    return tuple(sorted((rounded / rounded.sum()).round(9).tolist(), reverse=True))


def _js_divergences(base: np.ndarray, window: np.ndarray) -> np.ndarray:
    m = (base + window) / 2.0
    from scipy.special import rel_entr

    total = rel_entr(base, m).sum(axis=-1) + rel_entr(window, m).sum(axis=-1)
    return np.maximum(total / (2.0 * _LN2), 0.0)


def _psi_values(base: np.ndarray, window: np.ndarray) -> np.ndarray:
    b, w = np.clip(base, PSI_EPSILON, None), np.clip(window, PSI_EPSILON, None)
    return np.sum((w - b) * np.log(w / b), axis=-1)


def _multinomial(rng: np.random.Generator, n: int, p: np.ndarray, draws: int) -> np.ndarray:
    """``draws`` multinomial shares, one binomial per bin across all draws at once (numpy's own
    multinomial loops over draws, ten times slower for the thousand draws used here)."""
    counts = np.empty((draws, p.size))
    left = np.full(draws, n, dtype=np.int64)
    mass = 1.0
    for i, share in enumerate(p):
        counts[:, i] = rng.binomial(left, min(share / mass, 1.0)) if mass > 0 else 0
        left -= counts[:, i].astype(np.int64)
        mass -= share
    return counts / n


def _draw(p: np.ndarray, n: int, baseline_n: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_MC_SEED)
    window = _multinomial(rng, n, p, draws)
    base = _multinomial(rng, baseline_n, p, draws) if baseline_n else p
    return np.broadcast_to(base, window.shape), window


@lru_cache(maxsize=4096)
def _fitted_noise(method: str, key: tuple[float, ...], n: int, baseline_n: int, q: float) -> float:
    """Quantile of a scaled chi-square fitted to simulated scores by their mean and variance.

    The moments of 1,000 draws are stable where the 99.99th percentile of 1,000 draws is not;
    matching them (Satterthwaite) captures the heavier tail of small expected counts.
    """
    base, window = _draw(np.asarray(key), n, baseline_n, _MC_DRAWS)
    score = _js_divergences if method == "jensenshannon" else _psi_values
    values = score(base, window)
    mean, var = float(values.mean()), float(values.var())
    if not mean > 0 or not var > 0:
        return 0.0
    scale, dof = var / (2.0 * mean), 2.0 * mean * mean / var
    return scale * _chi2_quantile(dof, q)


def js_noise_threshold(
    baseline_counts: ArrayLike,
    n: int,
    baseline_n: int | None = None,
    quantile: float = NOISE_QUANTILE,
) -> float:
    """The JS distance that sampling noise alone exceeds with probability ``1 - quantile``.

    For shares q close to p, JS divergence in nats is sum((q - p)^2 / p) / 8, and n times that
    sum is chi-square with k - 1 degrees of freedom (k = bins the baseline uses); two
    independent samples (window of n rows, baseline of ``baseline_n``) add their variances.
    Small windows have a heavier tail than that approximation: ``JS_SMALL_SAMPLE_MARGIN``
    covers the most seen in simulation (docs/drift.md).
    """
    divergence_bits = (
        _chi2_quantile(_dof(baseline_counts), quantile)
        * _effective_inverse_n(n, baseline_n)
        / (8.0 * _LN2)
    )
    return min(JS_SMALL_SAMPLE_MARGIN * math.sqrt(divergence_bits), 1.0)


def psi_noise_threshold(
    baseline_counts: ArrayLike,
    n: int,
    baseline_n: int | None = None,
    quantile: float = NOISE_QUANTILE,
) -> float:
    """The PSI that sampling noise alone exceeds with probability ``1 - quantile``.

    PSI is the symmetric Kullback-Leibler divergence, about sum((q - p)^2 / p) for close shares:
    chi-square with k - 1 degrees of freedom over the effective sample size, or the fitted
    simulation where that is larger (the epsilon clipping makes sparse bins heavy-tailed).
    """
    analytic = _chi2_quantile(_dof(baseline_counts), quantile) * _effective_inverse_n(n, baseline_n)
    key = _shares_key(baseline_counts)
    if len(key) < 2:
        return analytic
    fitted = _fitted_noise(
        "psi", key, _n_bucket(max(n, 1)), _n_bucket(baseline_n) if baseline_n else 0, quantile
    )
    return max(analytic, fitted)


@lru_cache(maxsize=1024)
def _wasserstein_noise(
    shares: tuple[float, ...], centers: tuple[float, ...], n: int, baseline_n: int, q: float
) -> float:
    base, window = _draw(np.asarray(shares), n, baseline_n, _MC_DRAWS_WASSERSTEIN)
    gaps = np.abs(np.cumsum(window, axis=1) - np.cumsum(base, axis=1))[:, :-1]
    return float(np.quantile(gaps @ np.diff(np.asarray(centers)), q))


def wasserstein_noise_threshold(
    baseline_counts: ArrayLike,
    centers: ArrayLike,
    scale: float,
    n: int,
    baseline_n: int | None = None,
    quantile: float = 0.999,
) -> float:
    """The normalized Wasserstein distance that sampling noise alone exceeds (Monte Carlo).

    Wasserstein depends on where the bins lie, so it has no chi-square shortcut: this is the
    empirical quantile of 4,000 simulated windows (and baselines) drawn from the baseline's
    histogram with a fixed seed, cached per histogram and bucket of n. 4,000 draws resolve the
    99.9th percentile, not the 99.99th that the JS and PSI thresholds use.
    """
    x = np.asarray(centers, dtype=float)
    p = _shares(baseline_counts)
    if not p.any() or x.size < 2:
        return 0.0
    order = np.argsort(x, kind="stable")
    raw = _wasserstein_noise(
        tuple(np.round(p[order], 6) / np.round(p[order], 6).sum()),
        tuple(x[order]),
        _n_bucket(max(n, 1)),
        _n_bucket(baseline_n) if baseline_n else 0,
        quantile,
    )
    return raw / scale if scale > 0 else raw


def noise_threshold(
    method: str,
    baseline_counts: ArrayLike,
    n: int,
    baseline_n: int | None = None,
    *,
    centers: ArrayLike | None = None,
    scale: float = 1.0,
) -> float:
    """The score of ``method`` that sampling noise alone gives a window of ``n`` rows."""
    if method == "jensenshannon":
        return js_noise_threshold(baseline_counts, n, baseline_n)
    if method == "psi":
        return psi_noise_threshold(baseline_counts, n, baseline_n)
    if method == "wasserstein":
        if centers is None:
            return 0.0
        return wasserstein_noise_threshold(baseline_counts, centers, scale, n, baseline_n)
    raise ValueError(f"unknown drift method {method!r}")
