"""The statistics layer: distances agree with scipy, and the noise threshold holds its rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import chi2, wasserstein_distance

from inferwatch.middleware.stats.statistics import (
    JS_SMALL_SAMPLE_MARGIN,
    js_distance,
    js_noise_threshold,
    noise_threshold,
    psi,
    psi_noise_threshold,
    wasserstein_binned,
    wasserstein_noise_threshold,
)

RNG = np.random.default_rng(7)


def _histograms(bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two histograms of real-valued data on the same quantile bins, and the bin centers."""
    base = RNG.normal(size=5_000)
    moved = RNG.normal(0.3, 1.2, size=3_000)
    edges = np.quantile(base, np.linspace(0, 1, bins + 1))
    p, _ = np.histogram(np.clip(base, edges[0], edges[-1]), edges)
    q, _ = np.histogram(np.clip(moved, edges[0], edges[-1]), edges)
    return p, q, (edges[:-1] + edges[1:]) / 2


@pytest.mark.parametrize("bins", [2, 5, 20, 50])
def test_js_distance_equals_scipy(bins: int) -> None:
    p, q, _ = _histograms(bins)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-7)


def test_js_distance_handles_empty_bins_and_sides() -> None:
    p, q = [10, 0, 5, 0], [0, 7, 5, 0]
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([0, 0], [1, 2]) == 0.0


@pytest.mark.parametrize("bins", [2, 10, 20])
def test_wasserstein_equals_scipy_on_bin_centers(bins: int) -> None:
    p, q, centers = _histograms(bins)
    expected = wasserstein_distance(centers, centers, u_weights=p, v_weights=q)
    assert wasserstein_binned(p, q, centers, 1.0) == pytest.approx(expected, rel=1e-10)
    assert wasserstein_binned(p, q, centers, 2.5) == pytest.approx(expected / 2.5, rel=1e-10)


def test_wasserstein_with_unsorted_centers_matches_scipy() -> None:
    centers = np.array([3.0, -1.0, 10.0, 0.5])
    p, q = np.array([1, 2, 3, 4]), np.array([4, 0, 1, 5])
    expected = wasserstein_distance(centers, centers, u_weights=p, v_weights=q)
    assert wasserstein_binned(p, q, centers, 1.0) == pytest.approx(expected, rel=1e-12)


def test_psi_is_the_symmetric_divergence_with_clipped_shares() -> None:
    p, q = np.array([50, 30, 20, 0]), np.array([40, 30, 20, 10])
    ps, qs = np.clip(p / p.sum(), 1e-4, None), np.clip(q / q.sum(), 1e-4, None)
    assert psi(p, q) == pytest.approx(float(np.sum((qs - ps) * np.log(qs / ps))))
    assert psi(p, p) == pytest.approx(0.0)
    assert psi([5, 0], [5, 0]) == 0.0  # bins empty on both sides add nothing


def test_noise_threshold_shrinks_with_window_size_and_has_the_chi_square_form() -> None:
    counts = np.full(20, 1_000)
    sizes = [200, 1_000, 10_000, 100_000]
    values = [js_noise_threshold(counts, n, 20_000) for n in sizes]
    assert values == sorted(values, reverse=True)
    # the chi-square form, sqrt(chi2_19(0.9999) (1/n + 1/N) / 8 ln 2), with its small-sample margin
    plain = math.sqrt(chi2.ppf(0.9999, 19) * (1 / 100_000 + 1 / 20_000) / (8 * math.log(2)))
    expected = JS_SMALL_SAMPLE_MARGIN * plain
    assert values[-1] == pytest.approx(expected, rel=0.01)


def _simulated_js(p: np.ndarray, n: int, baseline_n: int, draws: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    w = rng.multinomial(n, p, size=draws) / n
    b = rng.multinomial(baseline_n, p, size=draws) / baseline_n
    m = (w + b) / 2
    divergence = (rel_entr(w, m).sum(1) + rel_entr(b, m).sum(1)) / (2 * math.log(2))
    return np.sqrt(np.maximum(divergence, 0))


@pytest.mark.parametrize(
    "shares",
    [
        np.full(20, 0.05),
        np.array([0.85, 0.05, 0.03, 0.02, 0.02, 0.01, 0.01, 0.005, 0.005]),
        np.r_[0.98, np.full(20, 0.001)],
    ],
    ids=["quantile-bins", "skewed", "rare-categories"],
)
@pytest.mark.parametrize(("n", "baseline_n"), [(200, 100_000), (300, 400), (1_000, 1_000)])
def test_noise_threshold_holds_its_false_alarm_rate(
    shares: np.ndarray, n: int, baseline_n: int
) -> None:
    """Unchanged windows exceed the threshold about 1 in 10,000 times, at most 1 in 2,000."""
    scores = _simulated_js(shares, n, baseline_n, 20_000)
    threshold = js_noise_threshold(shares * baseline_n, n, baseline_n)
    assert np.mean(scores > threshold) <= 5e-4


def test_psi_and_wasserstein_noise_thresholds_hold_their_rates() -> None:
    p = np.full(10, 0.1)
    rng = np.random.default_rng(3)
    w = rng.multinomial(300, p, size=20_000) / 300
    b = rng.multinomial(5_000, p, size=20_000) / 5_000
    wc, bc = np.clip(w, 1e-4, None), np.clip(b, 1e-4, None)
    psis = np.sum((wc - bc) * np.log(wc / bc), axis=1)
    assert np.mean(psis > psi_noise_threshold(p * 5_000, 300, 5_000)) <= 5e-4
    centers = np.arange(10.0)
    gaps = np.abs(np.cumsum(w, 1) - np.cumsum(b, 1))[:, :-1].sum(1)
    limit = wasserstein_noise_threshold(p * 5_000, centers, 1.0, 300, 5_000)
    assert np.mean(gaps > limit) <= 3e-3  # its 99.9th percentile, from a bucket of smaller n


def test_noise_threshold_dispatches_by_method() -> None:
    counts = np.full(10, 100)
    assert noise_threshold("jensenshannon", counts, 500, 1_000) == js_noise_threshold(
        counts, 500, 1_000
    )
    assert noise_threshold("psi", counts, 500, 1_000) == psi_noise_threshold(counts, 500, 1_000)
    assert noise_threshold("wasserstein", counts, 500, 1_000, centers=np.arange(10.0)) > 0
    with pytest.raises(ValueError, match="unknown drift method"):
        noise_threshold("ks", counts, 500)
