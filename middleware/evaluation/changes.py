"""Locating a rise in a model's error stream: a vectorised Page-Hinkley test.

The stream is one value per labelled prediction in prediction-time order: 1.0 for a wrong class
and 0.0 for a right one, or the absolute error of a regression. docs/evaluation.md explains why
Page-Hinkley, how the threshold follows from the stream's length, and how the change is located.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_FALSE_ALARM",
    "Change",
    "page_hinkley",
    "ph_threshold",
    "rank_scores",
]

DEFAULT_DELTA = 0.05
"""Rises smaller than this many standard deviations of the stream are tolerated."""

DEFAULT_FALSE_ALARM = 0.01
"""Chance of an alarm on a stream of unchanged quality, whatever its length."""

_MIN_THRESHOLD = 5.0
_SAMPLE = 20_000


@dataclass(frozen=True, slots=True)
class Change:
    """Where the error stream's mean rose.

    ``row`` is the estimated first row of the new concept (0-based), ``detected_row`` the row at
    which the test raised its alarm (``row <= detected_row``), ``before`` and ``after`` the
    stream's mean before ``row`` and from ``row`` to the end.
    """

    row: int
    detected_row: int
    before: float
    after: float
    statistic: float
    threshold: float


def ph_threshold(
    z: np.ndarray, rows: int, delta: float = DEFAULT_DELTA, false_alarm: float = DEFAULT_FALSE_ALARM
) -> float:
    """Alarm threshold giving about ``false_alarm`` over ``rows`` values distributed like ``z``.

    The one-sided CUSUM of increments ``y = z - mean - delta`` has an average run length of
    about ``exp(theta * h) / (theta * delta)`` for threshold ``h``, where ``theta > 0`` solves
    ``E[exp(theta * y)] = 1`` (Siegmund, 1985; ``theta = 2 * delta`` for Gaussian ``z``). Taking
    ``theta`` from the values themselves keeps skewed streams (rare errors) as calm as symmetric
    ones. Asking for a run length of ``rows / false_alarm`` and solving gives ``h``.
    """
    theta = _exponent(z, delta)
    if theta is None:
        return math.inf
    wanted = theta * delta * max(rows, 1) / false_alarm
    return max(_MIN_THRESHOLD, math.log(max(wanted, 1.0)) / theta)


def _exponent(z: np.ndarray, delta: float) -> float | None:
    # SciPy's optimize and stats load here, not at import: they add 50 MB to every process.
    from scipy.optimize import brentq
    from scipy.special import logsumexp

    y = z - z.mean() - delta
    if not y.max() > 0:
        return None
    log_n = math.log(y.size)

    def cgf(t: float) -> float:
        return float(logsumexp(t * y)) - log_n

    high = 1.0
    while cgf(high) < 0:
        high *= 2.0
    return float(brentq(cgf, 1e-9, high, xtol=1e-6))


def page_hinkley(
    values: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    threshold: float | None = None,
    false_alarm: float = DEFAULT_FALSE_ALARM,
) -> Change | None:
    """The first rise in the mean of ``values`` (time-ordered), or None when there is none.

    ``values`` are scaled by their standard deviation, so ``delta`` and ``threshold`` are in
    standard deviations and one setting fits error rates and absolute errors alike. With no
    ``threshold`` it comes from :func:`ph_threshold` for the stream's length and shape.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        return None
    scale = float(x.std())
    if not scale > 0 or not math.isfinite(scale):
        return None
    z = x / scale
    if threshold is None:
        # The exponent comes from a strided sample: exact enough and quick on millions of rows.
        limit = ph_threshold(z[:: max(1, n // _SAMPLE)], n, delta, false_alarm)
    else:
        limit = threshold
    if not math.isfinite(limit):
        return None
    running_mean = np.cumsum(z) / np.arange(1, n + 1)
    # m_t = sum_{i<=t} (z_i - mean_i - delta); the alarm is m_t - min_{s<=t} m_s > threshold.
    m = np.cumsum(z - running_mean - delta)
    lowest = np.minimum.accumulate(m)
    over = np.flatnonzero(m - lowest > limit)
    if over.size == 0:
        return None
    detected = int(over[0])
    start = _change_point(x[: detected + 1])
    before = float(x[:start].mean()) if start > 0 else float("nan")
    return Change(
        row=start,
        detected_row=detected,
        before=before,
        after=float(x[start:].mean()),
        statistic=float(m[detected] - lowest[detected]),
        threshold=float(limit),
    )


def _change_point(x: np.ndarray) -> int:
    """The first row after a single rise in the mean of ``x``, by maximum likelihood.

    Page-Hinkley's own estimate (where its sum was lowest) lands hundreds of rows early when the
    rise is small, because its drift term keeps lowering the sum before the change. Splitting the
    stretch up to the alarm where the two means differ most, weighted by the sizes of the two
    parts (the likelihood ratio of a Gaussian mean shift), is sharper.
    """
    n = x.size
    if n < 2:
        return n - 1
    k = np.arange(1, n)
    below = np.cumsum(x)[:-1] - k * x.mean()  # negative where the first k rows are lower
    score = np.where(below < 0, below * below / (k * (n - k)), 0.0)
    return int(np.argmax(score)) + 1 if score.max() > 0 else n - 1


def rank_scores(values: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``values`` scaled to (0, 1]: a heavy-tailed error stream made well-behaved.

    Absolute regression errors have outliers that a sum of raw values mistakes for a change;
    their ranks do not, and a rise in the errors is still a rise in the ranks.
    """
    from scipy.stats import rankdata

    x = np.asarray(values, dtype=np.float64)
    return rankdata(x, method="average") / max(x.size, 1)
