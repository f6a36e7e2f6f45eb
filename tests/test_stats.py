"""The statistics behind every verdict, each checked against something outside the code under test: scipy's own
tests and intervals, hand computations, and simulations with a planted truth."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from aioli_repro import stats


def test_paired_ci_equals_scipys_one_sample_interval():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 12):
        d = rng.normal(0.3, 1.2, size=n)
        mean, lo, hi = stats.paired_ci(d)
        ref = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
        assert mean == pytest.approx(d.mean()) and lo == pytest.approx(ref.low) and hi == pytest.approx(ref.high)
        assert stats.t_pvalue(d) == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert math.isnan(stats.paired_ci([3.0])[1]) and math.isnan(stats.t_pvalue([1.0, 1.0]))


def test_power_and_detectable_difference_match_a_simulated_t_test():
    # Simulate the paired t-test at the claimed detectable difference: it must reject about 80% of the time.
    rng = np.random.default_rng(1)
    for n, sd in ((3, 1.0), (5, 2.5)):
        mdd = stats.min_detectable_difference(sd, n)
        d = rng.normal(mdd, sd, size=(20000, n))
        p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
        assert (p < 0.05).mean() == pytest.approx(0.80, abs=0.012)
        assert stats.t_test_power(mdd, sd, n) == pytest.approx(0.80, abs=1e-6)
    # At 3 seeds the normal approximation (z_.975 + z_.8)·sd/√n = 1.62 sd understates the exact 3.26 sd by half.
    assert stats.min_detectable_difference(1.0, 3) == pytest.approx(3.26, abs=0.02)
    # With many seeds the t-test becomes the z-test: (1.96 + 0.8416)/√n.
    assert stats.min_detectable_difference(1.0, 400) == pytest.approx((1.959964 + 0.841621) / 20, rel=5e-3)
    assert math.isnan(stats.min_detectable_difference(1.0, 1))


def test_seeds_needed_is_the_first_n_with_enough_power():
    for sd, effect in ((1.0, 1.0), (2.0, 0.7), (0.5, 1.5)):
        n = int(stats.seeds_needed(sd, effect))
        assert stats.t_test_power(effect, sd, n) >= 0.8 > stats.t_test_power(effect, sd, n - 1) if n > 2 else True
    assert stats.seeds_needed(1.0, 0.0) == math.inf and math.isnan(stats.seeds_needed(float("nan"), 1.0))


def test_holm_by_hand():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06, kept monotone), 0.5 (x1 = 0.5)
    got = stats.holm([0.03, 0.01, 0.5, 0.02])
    assert got.tolist() == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert np.isnan(stats.holm([np.nan, 0.2])[0]) and stats.holm([np.nan, 0.2])[1] == pytest.approx(0.2)
    assert stats.holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # 0.8 x 2 capped at 1; then monotone: 0.9 -> 1


def test_sign_test_by_hand():
    pos, n, p = stats.sign_test([1, 2, 3, 4, 5, -1, 0])
    assert (pos, n) == (5, 6)
    assert p == pytest.approx(2 * (math.comb(6, 5) + math.comb(6, 6)) / 2**6)  # two-sided exact binomial


def test_stratified_ci_by_hand_and_its_coverage_under_unequal_noise():
    # Two strata: a = [1, 3] (mean 2, var 2), b = [0, 4, 8] (mean 4, var 16).
    got = stats.stratified_ci([1, 3, 0, 4, 8], ["a", "a", "b", "b", "b"])
    k = np.array([2 / 2, 16 / 3])
    se = math.sqrt(k.sum()) / 2
    df = k.sum() ** 2 / (k[0] ** 2 / 1 + k[1] ** 2 / 2)
    half = sps.t.ppf(0.975, df) * se
    assert got["mean"] == pytest.approx(3.0) and got["se"] == pytest.approx(se) and got["df"] == pytest.approx(df)
    assert (got["low"], got["high"]) == pytest.approx((3 - half, 3 + half))
    assert math.isnan(stats.stratified_ci([1, 2, 3], ["a", "a", "b"])["low"])  # one value in b: undefined
    # Planted truth: six strata, 3 seeds each, very unequal noise, true pooled mean 0.4 -> about 95% coverage.
    rng = np.random.default_rng(2)
    sds = np.array([0.2, 0.5, 1.0, 2.0, 0.3, 1.5])
    means = np.array([0.0, 0.4, 0.8, 0.2, 0.6, 0.4])
    hits = 0
    for _ in range(2000):
        v = rng.normal(means[:, None], sds[:, None], size=(6, 3))
        r = stats.stratified_ci(v.ravel(), np.repeat(np.arange(6), 3))
        hits += r["low"] <= means.mean() <= r["high"]
    assert 0.93 <= hits / 2000 <= 0.985


def test_reliability_recovers_a_planted_signal_share():
    rng = np.random.default_rng(3)
    units, seeds = 400, 3
    true = rng.normal(0, 1.0, size=units)  # between-unit variance 1
    noisy = true[:, None] + rng.normal(0, 1.5, size=(units, seeds))  # seed noise var 2.25, of a mean 0.75
    got = stats.reliability(noisy.ravel(), np.repeat(np.arange(units), seeds), np.tile(np.arange(seeds), units))
    assert got["noise_var"] == pytest.approx(0.75, rel=0.1)
    assert got["reliability"] == pytest.approx(1 / 1.75, abs=0.06)
    pure = rng.normal(0, 1.0, size=(units, seeds))  # no signal at all
    assert abs(stats.reliability(pure.ravel(), np.repeat(np.arange(units), seeds),
                                 np.tile(np.arange(seeds), units))["reliability"]) < 0.2
